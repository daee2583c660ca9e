"""Conversation memory shared by several servers: every turn also kept in Redis (TURN_STORE).

The local TurnCache stays the hot path. Each turn added is also written to Redis by a thread
of its own (never the inference thread, which runs remember_turns before the client sees
the end), and a local miss reads Redis: a session whose node went away continues on the next
one, from the same codes. Redis down, slow or answering nonsense never fails or delays a
request beyond one short deadline: the failure is logged (at most every LOG_EVERY seconds),
counted, the store is left alone for BACKOFF seconds, and the request goes on cold.

Keys (prefix KEY): `turn:<request id>` a hash (turn_records.py), `session:<session>` the
session's newest request ids (at most CONTEXT_MAX_TURNS, expiring with its gap), `ref:`/
`text:<digest>` the owner's audio_ref / spoken text -> request id. A turn is handed back
only to the owner stored with it, as in TurnCache, and only if it is whole and valid.

The calls run on redis-py's asyncio client, on an event loop of the store's own: a read
timeout bounds one read, not a reply trickled a byte at a time, and only cancellation
bounds a whole call (connect, send, every read) by DEADLINE.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from typing import Any, Callable, Coroutine, TypeVar

import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from sesame_server.config import Settings
from sesame_server.context.turn_records import KEY, StoredTurn, decode, encode, ref_key, text_key, without_password
from sesame_server.context.turns import Turn, TurnCache

log = logging.getLogger(__name__)
T = TypeVar("T")

TIMEOUT = 0.25  # seconds per connect and per reply: a LAN round trip is well under 1 ms
DEADLINE = 0.5  # seconds for a whole call, however the store answers (what a request may wait)
BACKOFF = 5.0  # after a failure, seconds without trying (each try would cost a request DEADLINE)
LOG_EVERY = 30.0
TURN_TTL = 3600.0  # explicit references (previous_request_ids, audio_ref) reach past the session gap
PENDING = 256  # turns waiting to be written; beyond, new ones are dropped (counted)


class UnexpectedReply(TypeError):
    """The store answered something no Redis answers to that command."""


class TurnStore:
    """Turns in Redis; every call answers (None, [] or False) rather than raise, within DEADLINE."""

    def __init__(self, url: str, *, max_turns: int, session_gap: float,
                 on_error: Callable[[str], None] = lambda operation: None, timeout: float = TIMEOUT,
                 deadline: float = DEADLINE):
        self.where = without_password(url)
        self.max_turns = max(1, max_turns)
        self.session_ttl = max(1, math.ceil(session_gap)) + 5  # recent() checks the gap itself
        self.turn_ttl = max(math.ceil(TURN_TTL), self.session_ttl)
        self.on_error = on_error
        self.deadline = max(deadline, timeout)
        # No retries: a retry would only double the wait of a request that goes on without it.
        self.redis = redis.asyncio.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                                  retry=Retry(NoBackoff(), 0))
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="turn-store-io", daemon=True).start()
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

        async def write() -> bool:
            async with self.redis.pipeline() as pipe:  # MULTI: a reader never sees half a turn
                pipe.hset(turn_key, mapping=encode(stored))
                pipe.expire(turn_key, self.turn_ttl)
                pipe.rpush(session_key, turn.request_id)
                pipe.ltrim(session_key, -self.max_turns, -1)
                pipe.expire(session_key, self.session_ttl)
                if turn.audio_ref:
                    pipe.set(ref_key(turn.owner, turn.audio_ref), turn.request_id, ex=self.turn_ttl)
                pipe.set(text_key(turn.owner, turn.text), turn.request_id, ex=self.turn_ttl)
                await pipe.execute()
            return True

        return self._guarded("write", write, False)

    def ping(self) -> bool:
        async def ping() -> bool:
            return await self.redis.ping() is True

        return self._guarded("write", ping, False)

    # -- reading ---------------------------------------------------------------------------
    def recent(self, session: str, *, within: float) -> list[StoredTurn]:
        """The session's stored turns, oldest first, if its newest is at most `within` s old."""

        async def read() -> list[StoredTurn]:
            ids = _expect(await self.redis.lrange(f"{KEY}session:{session}", 0, -1), list)
            found = [t for t in await self._turns(ids) if t.session == session]
            if not found or time.time() - found[-1].at > within:
                return []
            return found

        return self._guarded("read", read, [])

    def lookup(self, owner: str, ref: str) -> StoredTurn | None:
        """A turn by request id or audio_ref, only if `owner` produced it."""

        async def read() -> StoredTurn | None:
            request_id = _expect(await self.redis.get(ref_key(owner, ref)), (bytes, type(None)))
            found = await self._turns([request_id or ref.encode()])
            return found[0] if found and found[0].turn.owner == owner else None

        return self._guarded("read", read, None)

    def find_text(self, owner: str, *texts: str) -> StoredTurn | None:
        """The newest turn of `owner` that spoke one of `texts` (whitespace aside)."""

        async def read() -> StoredTurn | None:
            ids = [i for i in _expect(await self.redis.mget([text_key(owner, text) for text in texts]), list) if i]
            found = [t for t in await self._turns(ids) if t.turn.owner == owner]
            return max(found, key=lambda t: t.at) if found else None

        return self._guarded("read", read, None)

    async def _turns(self, ids: list) -> list[StoredTurn]:
        if not all(isinstance(request_id, bytes) for request_id in ids):
            raise UnexpectedReply("request ids that are not strings")
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for request_id in ids:
            pipe.hgetall(KEY.encode() + b"turn:" + request_id)
        replies = _expect(await pipe.execute(), list)
        turns = [decode(fields) for fields in replies if fields]  # expired ones are gone; bad ones ignored
        return [t for t in turns if t is not None]

    # -- failures --------------------------------------------------------------------------
    def _guarded(self, operation: str, call: Callable[[], Coroutine[Any, Any, T]], default: T) -> T:
        if time.monotonic() < self._down_until:
            self._failed(operation, None)
            return default
        future = asyncio.run_coroutine_threadsafe(self._within_deadline(call), self._loop)
        try:
            result = future.result(self.deadline + 1.0)  # the loop keeps the deadline; this, if the loop cannot
        except Exception as exc:  # noqa: BLE001 - whatever the store did (refused, slow, odd replies): a miss
            future.cancel()
            self._down_until = time.monotonic() + BACKOFF
            self._failed(operation, exc)
            return default
        if self._down:
            self._down = False
            log.warning("Turn store %s is reachable again: conversation memory is shared", self.where)
        return result

    async def _within_deadline(self, call: Callable[[], Coroutine[Any, Any, T]]) -> T:
        try:
            return await asyncio.wait_for(call(), self.deadline)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no whole answer within {self.deadline:g} s") from None

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
        if exc is not None:
            unreachable = isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError))
            trouble = "is unreachable" if unreachable else "failed"
            what = f"{trouble} ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
        more = f"; {count} reads and writes missed it since the last report" if count > 1 else ""
        log.warning("Turn store %s %s: conversation memory is this node's own, requests go on without it%s",
                    self.where, what, more)


def _expect(reply: object, kind: type | tuple[type, ...]) -> Any:
    """`reply` if it is what Redis answers to the command; else UnexpectedReply (a miss)."""
    if not isinstance(reply, kind):
        raise UnexpectedReply(f"the store answered a {type(reply).__name__}")
    return reply


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
