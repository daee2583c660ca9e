"""Conversation memory shared by several servers: every turn also kept in Redis (TURN_STORE).

The local TurnCache stays the hot path. Each turn added is also written to Redis by a thread
of its own (never the inference thread, which runs remember_turns before the client sees
the end), and a local miss reads Redis: a session whose node went away continues on the next
one, from the same codes. Redis down or slow never fails or delays a request beyond one short
timeout: the failure is logged (at most every LOG_EVERY seconds), counted, the store is left
alone for BACKOFF seconds, and the request goes on cold.

Keys (prefix KEY): `turn:<request id>` a hash (`meta` JSON; `codes`, `segment:<i>` raw
bytes), `session:<session>` the session's newest request ids (at most CONTEXT_MAX_TURNS,
expiring with its gap), `ref:`/`text:<digest>` the owner's audio_ref / spoken text → request
id. A turn is handed back only to the owner stored with it, as in TurnCache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, TypeVar
from urllib.parse import urlsplit

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sesame_server.config import Settings
from sesame_server.context.turns import Turn, TurnCache

log = logging.getLogger(__name__)
T = TypeVar("T")

KEY = "sesame-tts:"
TIMEOUT = 0.25  # seconds per connect and per reply: a LAN round trip is well under 1 ms
BACKOFF = 5.0  # after a failure, seconds without trying (each try would cost a request TIMEOUT)
LOG_EVERY = 30.0
TURN_TTL = 3600.0  # explicit references (previous_request_ids, audio_ref) reach past the session gap
PENDING = 256  # turns waiting to be written; beyond, new ones are dropped (counted)


@dataclass(frozen=True)
class StoredTurn:
    session: str
    turn: Turn
    at: float  # wall clock when it was spoken: nodes share no monotonic clock


class TurnStore:
    """Turns in Redis; every call answers (None, [] or False) rather than raise."""

    def __init__(self, url: str, *, max_turns: int, session_gap: float,
                 on_error: Callable[[str], None] = lambda operation: None, timeout: float = TIMEOUT):
        self.where = _without_password(url)
        self.max_turns = max(1, max_turns)
        self.session_ttl = max(1, math.ceil(session_gap)) + 5  # recent() checks the gap itself
        self.turn_ttl = max(math.ceil(TURN_TTL), self.session_ttl)
        self.on_error = on_error
        # No retries: a retry would only double the wait of a request that goes on without it.
        self.redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                          retry=Retry(NoBackoff(), 0))
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._next_log = 0.0
        self._unreported = 0
        self._down = False

    # -- writing ---------------------------------------------------------------------------
    def save(self, stored: StoredTurn) -> bool:
        """Write one turn (and its session's and owner's indexes) in one round trip."""
        turn = stored.turn
        turn_key, session_key = f"{KEY}turn:{turn.request_id}", f"{KEY}session:{stored.session}"

        def write() -> bool:
            pipe = self.redis.pipeline()  # MULTI: a reader never sees half a turn
            pipe.hset(turn_key, mapping=_encode(stored))
            pipe.expire(turn_key, self.turn_ttl)
            pipe.rpush(session_key, turn.request_id)
            pipe.ltrim(session_key, -self.max_turns, -1)
            pipe.expire(session_key, self.session_ttl)
            if turn.audio_ref:
                pipe.set(_ref_key(turn.owner, turn.audio_ref), turn.request_id, ex=self.turn_ttl)
            pipe.set(_text_key(turn.owner, turn.text), turn.request_id, ex=self.turn_ttl)
            pipe.execute()
            return True

        return self._guarded("write", write, False)

    def ping(self) -> bool:
        return self._guarded("write", lambda: bool(self.redis.ping()), False)

    # -- reading ---------------------------------------------------------------------------
    def recent(self, session: str, *, within: float) -> list[StoredTurn]:
        """The session's stored turns, oldest first, if its newest is at most `within` s old."""

        def read() -> list[StoredTurn]:
            ids = self.redis.lrange(f"{KEY}session:{session}", 0, -1)
            found = [t for t in self._turns(ids) if t.session == session]
            if not found or time.time() - found[-1].at > within:
                return []
            return found

        return self._guarded("read", read, [])

    def lookup(self, owner: str, ref: str) -> StoredTurn | None:
        """A turn by request id or audio_ref, only if `owner` produced it."""

        def read() -> StoredTurn | None:
            request_id = self.redis.get(_ref_key(owner, ref))
            found = self._turns([request_id or ref.encode()])
            return found[0] if found and found[0].turn.owner == owner else None

        return self._guarded("read", read, None)

    def find_text(self, owner: str, *texts: str) -> StoredTurn | None:
        """The newest turn of `owner` that spoke one of `texts` (whitespace aside)."""

        def read() -> StoredTurn | None:
            ids = [i for i in self.redis.mget([_text_key(owner, text) for text in texts]) if i]
            found = [t for t in self._turns(ids) if t.turn.owner == owner]
            return max(found, key=lambda t: t.at) if found else None

        return self._guarded("read", read, None)

    def _turns(self, ids: list[bytes]) -> list[StoredTurn]:
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for request_id in ids:
            pipe.hgetall(KEY.encode() + b"turn:" + request_id)
        turns = [_decode(fields) for fields in pipe.execute() if fields]  # expired ones are gone
        return [t for t in turns if t is not None]

    # -- failures --------------------------------------------------------------------------
    def _guarded(self, operation: str, call: Callable[[], T], default: T) -> T:
        if time.monotonic() < self._down_until:
            self._failed(operation, None)
            return default
        try:
            result = call()
        except (redis.RedisError, OSError) as exc:
            self._down_until = time.monotonic() + BACKOFF
            self._failed(operation, exc)
            return default
        if self._down:
            self._down = False
            log.warning("Turn store %s is reachable again: conversation memory is shared", self.where)
        return result

    def behind(self) -> None:
        """A turn not even queued for writing: the store takes them slower than they come."""
        self._failed("write", None, "falls behind: a turn went unshared")

    def _failed(self, operation: str, exc: Exception | None, what: str = "is unreachable (not retried yet)") -> None:
        self.on_error(operation)
        now = time.monotonic()
        with self._lock:
            self._down = self._down or exc is not None
            self._unreported += 1
            if now < self._next_log:
                return
            self._next_log, count, self._unreported = now + LOG_EVERY, self._unreported, 0
        what = f"is unreachable ({type(exc).__name__}: {exc})" if exc else what
        more = f"; {count} reads and writes missed it since the last report" if count > 1 else ""
        log.warning("Turn store %s %s: conversation memory is this node's own, requests go on without it%s",
                    self.where, what, more)


class SharedTurnCache(TurnCache):
    """A TurnCache whose turns are also kept in a TurnStore and read back on a local miss."""

    def __init__(self, store: TurnStore, *, on_restore: Callable[[int], None] = lambda count: None, **limits):
        super().__init__(**limits)
        self.store = store
        self.on_restore = on_restore
        self._pending: queue.Queue[StoredTurn | None] = queue.Queue(PENDING)
        self._writer = threading.Thread(target=self._write_all, name="turn-store", daemon=True)
        self._writer.start()

    def add(self, session: str, turn: Turn) -> None:
        super().add(session, turn)
        try:
            self._pending.put_nowait(StoredTurn(session, turn, time.time()))
        except queue.Full:  # Redis slower than the turns come: the newest go unshared
            self.store.behind()

    def recent(self, session: str, *, within: float, now: float | None = None) -> list[Turn]:
        turns = super().recent(session, within=within, now=now)
        if turns:
            return turns
        stored = self.store.recent(session, within=within)
        if not stored:
            return []
        self.restore(session, [s.turn for s in stored], age=max(0.0, time.time() - stored[-1].at))
        self.on_restore(len(stored))
        return super().recent(session, within=within, now=now) or [s.turn for s in stored]

    def lookup(self, owner: str, ref: str) -> Turn | None:
        return super().lookup(owner, ref) or self._kept(self.store.lookup(owner, ref))

    def find_text(self, owner: str, *texts: str) -> Turn | None:
        return super().find_text(owner, *texts) or self._kept(self.store.find_text(owner, *texts))

    def _kept(self, stored: StoredTurn | None) -> Turn | None:
        """A referenced turn from the store, kept here in a session of its own: put back into
        its own session it would come after newer turns there and move that session's gap."""
        if stored is None:
            return None
        super().add(f"restored|{stored.turn.owner}", stored.turn)  # TurnCache.add: not written back
        self.on_restore(1)
        return stored.turn

    def close(self, timeout: float = 2.0) -> None:
        """Write what is pending (for at most `timeout` s), then stop the writer."""
        try:
            self._pending.put(None, timeout=timeout)
        except queue.Full:
            return
        self._writer.join(timeout)

    def _write_all(self) -> None:
        if self.store.ping():
            log.info("Conversation memory is shared through %s", self.store.where)
        while (stored := self._pending.get()) is not None:
            self.store.save(stored)


def turn_cache(settings: Settings, *, on_error: Callable[[str], None] = lambda operation: None,
               on_restore: Callable[[int], None] = lambda count: None) -> TurnCache:
    """The node's turn cache: shared through TURN_STORE when it is set, else its own."""
    limits = dict(max_turns=settings.context_max_turns, max_seconds=settings.context_max_seconds)
    if not settings.turn_store:
        return TurnCache(**limits)
    store = TurnStore(settings.turn_store, max_turns=settings.context_max_turns,
                      session_gap=settings.context_session_gap_seconds, on_error=on_error)
    return SharedTurnCache(store, on_restore=on_restore, **limits)


def _encode(stored: StoredTurn) -> dict[str, bytes | str]:
    turn = stored.turn
    fields: dict[str, bytes | str] = {}
    segments = []
    for index, (text, codes) in enumerate(turn.segments):
        codes = np.ascontiguousarray(codes)
        segments.append([text, codes.dtype.str, list(codes.shape)])
        fields[f"segment:{index}"] = codes.tobytes()
    codes = None
    if turn.codes is not None:
        array = np.ascontiguousarray(turn.codes)
        codes = [array.dtype.str, list(array.shape)]
        fields["codes"] = array.tobytes()
    fields["meta"] = json.dumps({
        "session": stored.session, "at": stored.at, "request_id": turn.request_id, "owner": turn.owner,
        "voice": turn.voice, "text": turn.text, "speaker": turn.speaker, "seconds": turn.seconds,
        "audio_ref": turn.audio_ref, "codes": codes, "segments": segments,
    })
    return fields


def _decode(fields: dict[bytes, bytes]) -> StoredTurn | None:
    try:
        meta = json.loads(fields[b"meta"])
        codes = _array(fields[b"codes"], *meta["codes"]) if meta["codes"] else None
        segments = tuple((text, _array(fields[f"segment:{index}".encode()], dtype, shape))
                         for index, (text, dtype, shape) in enumerate(meta["segments"]))
        turn = Turn(request_id=meta["request_id"], owner=meta["owner"], voice=meta["voice"], text=meta["text"],
                    speaker=int(meta["speaker"]), codes=codes, seconds=float(meta["seconds"]),
                    audio_ref=meta["audio_ref"], segments=segments)
        return StoredTurn(session=meta["session"], turn=turn, at=float(meta["at"]))
    except (KeyError, ValueError, TypeError) as exc:  # another version's record, or damaged
        log.warning("Ignored an unreadable stored turn (%s: %s)", type(exc).__name__, exc)
        return None


def _array(raw: bytes, dtype: str, shape: list[int]) -> np.ndarray:
    kind = np.dtype(dtype)
    if kind.kind not in "iu":
        raise ValueError(f"codes of dtype {dtype}")
    return np.frombuffer(raw, dtype=kind).reshape(shape).copy()  # writable, like generated codes


def _ref_key(owner: str, ref: str) -> str:
    return f"{KEY}ref:{_digest(owner, ref)}"


def _text_key(owner: str, text: str) -> str:
    return f"{KEY}text:{_digest(owner, ' '.join(text.split()))}"  # TurnCache.find_text's comparison


def _digest(owner: str, value: str) -> str:
    return hashlib.sha256(f"{owner}\0{value}".encode()).hexdigest()[:32]


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}{port}").geturl()
