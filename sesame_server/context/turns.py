"""Conversation memory: completed turns (speaker, text, Mimi codes), per client session.

Codes, never waveforms: CSM conditions on codes, and re-encoding audio would cost a Mimi
encode per turn. Each session keeps its most recent turns within CONTEXT_MAX_TURNS and
CONTEXT_MAX_SECONDS; the whole cache also has a memory cap and a session cap, evicting the
least recently used session first. A turn is only ever handed back to the session (owner)
that produced it.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field

from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Turn:
    request_id: str
    owner: str  # who may reference it: (X-Session-Id, caller), else (API key, client address)
    voice: str
    text: str
    speaker: int = 0
    codes: np.ndarray | None = None  # [codebooks, frames]; None for text-only turns
    seconds: float = 0.0
    audio_ref: str | None = None
    # (sentence, codes) as generated, when the turn spans several sentences: replaying
    # them as separate segments reproduces exactly what the model saw while speaking.
    segments: tuple[tuple[str, np.ndarray], ...] = ()

    @property
    def parts(self) -> tuple[tuple[str, np.ndarray | None], ...]:
        return self.segments or ((self.text, self.codes),)

    @property
    def nbytes(self) -> int:
        arrays = [codes for _, codes in self.segments] + [self.codes]
        return sum(a.nbytes for a in arrays if a is not None) + len(self.text) * 4 + 256


@dataclass
class _Session:
    turns: collections.OrderedDict = field(default_factory=collections.OrderedDict)  # request_id -> Turn
    last_at: float = 0.0


class TurnCache:
    def __init__(self, *, max_turns: int = 10, max_seconds: float = 60.0, max_bytes: int = 64 << 20,
                 max_sessions: int = 256, clock: Callable[[], float] = time.monotonic):
        self.max_turns = max_turns
        self.max_seconds = max_seconds
        self.max_bytes = max_bytes
        self.max_sessions = max_sessions
        self.clock = clock  # session gaps are measured on it (tests move a fake one)
        self._sessions: collections.OrderedDict[str, _Session] = collections.OrderedDict()
        self._refs: dict[tuple[str, str], str] = {}  # (owner, audio_ref) -> request_id
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    # -- writing ---------------------------------------------------------------------------
    def add(self, session: str, turn: Turn) -> None:
        """Store a completed (or interrupted-with-audio) turn as the newest of `session`."""
        with self._lock:
            self._insert(session, turn)

    def restore(self, session: str, turns: list[Turn], *, age: float = 0.0) -> None:
        """Put back a session's turns fetched from elsewhere (the shared turn store), oldest
        first, in place of what this cache held for it; `age`: seconds since the newest was
        spoken, so the session gap still counts from then."""
        with self._lock:
            stale = self._sessions.pop(session, None)
            for old in stale.turns.values() if stale else ():
                self._forget(old)
            for turn in turns:
                self._insert(session, turn)
            state = self._sessions.get(session)
            if state is not None:
                state.last_at = self.clock() - age

    def _insert(self, session: str, turn: Turn) -> None:
        """add() under the lock."""
        state = self._sessions.pop(session, None) or _Session()
        self._sessions[session] = state  # most recently used last
        replaced = state.turns.pop(turn.request_id, None)
        if replaced is not None:  # the same turn again (restored): counted once
            self._forget(replaced)
        state.turns[turn.request_id] = turn
        state.last_at = self.clock()
        self._bytes += turn.nbytes
        if turn.audio_ref:
            self._refs[(turn.owner, turn.audio_ref)] = turn.request_id
        self._trim_session(state)
        while len(self._sessions) > self.max_sessions or (self._bytes > self.max_bytes and len(self._sessions) > 1):
            _, oldest = self._sessions.popitem(last=False)
            for old in oldest.turns.values():
                self._forget(old)
        while self._bytes > self.max_bytes and len(state.turns) > 1:
            self._forget(state.turns.popitem(last=False)[1])

    def _trim_session(self, state: _Session) -> None:
        while len(state.turns) > self.max_turns or (
                len(state.turns) > 1 and sum(t.seconds for t in state.turns.values()) > self.max_seconds):
            self._forget(state.turns.popitem(last=False)[1])

    def _forget(self, turn: Turn) -> None:
        self._bytes -= turn.nbytes
        if turn.audio_ref and self._refs.get((turn.owner, turn.audio_ref)) == turn.request_id:
            del self._refs[(turn.owner, turn.audio_ref)]

    # -- reading ---------------------------------------------------------------------------
    def recent(self, session: str, *, within: float, now: float | None = None) -> list[Turn]:
        """The session's turns, oldest first, if its last turn is at most `within` seconds old."""
        now = self.clock() if now is None else now
        with self._lock:
            state = self._sessions.get(session)
            if state is None or now - state.last_at > within:
                return []
            return list(state.turns.values())

    def lookup(self, owner: str, ref: str) -> Turn | None:
        """A turn by request id or audio_ref, only if `owner` produced it."""
        with self._lock:
            request_id = self._refs.get((owner, ref), ref)
            for state in self._sessions.values():
                turn = state.turns.get(request_id)
                if turn is not None and turn.owner == owner:
                    self.hits += 1
                    return turn
            self.misses += 1
            return None

    def find_text(self, owner: str, *texts: str) -> Turn | None:
        """The newest turn of `owner` that spoke exactly one of `texts` (ElevenLabs
        previous_text: as the client sent it, or as it was spoken)."""
        wanted = {" ".join(text.split()) for text in texts}
        with self._lock:
            for state in reversed(self._sessions.values()):
                for turn in reversed(state.turns.values()):
                    if turn.owner == owner and " ".join(turn.text.split()) in wanted:
                        self.hits += 1
                        return turn
            self.misses += 1
            return None

    def close(self) -> None:
        """At shutdown: nothing to hand over here (turn_store.SharedTurnCache writes what is pending)."""

    def __len__(self) -> int:
        with self._lock:
            return sum(len(state.turns) for state in self._sessions.values())

    @property
    def nbytes(self) -> int:
        return self._bytes
