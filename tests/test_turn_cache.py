"""Conversation memory's turn cache: bounds, eviction, isolation (pure logic, no model)."""

from __future__ import annotations

import numpy as np

from sesame_server.context.turns import Turn, TurnCache
from tests.fakes import FakeClock


def turn(rid: str, owner: str = "alice", seconds: float = 2.0, frames: int = 25, audio_ref: str | None = None) -> Turn:
    codes = np.zeros((32, frames), dtype=np.int32)
    return Turn(request_id=rid, owner=owner, voice="v", text=f"turn {rid}", codes=codes, seconds=seconds,
                audio_ref=audio_ref)


def test_keeps_the_newest_turns_by_count():
    cache = TurnCache(max_turns=3, max_seconds=1000)
    for n in range(5):
        cache.add("s", turn(f"r{n}"))
    assert [t.request_id for t in cache.recent("s", within=60)] == ["r2", "r3", "r4"]


def test_keeps_the_newest_turns_by_seconds():
    cache = TurnCache(max_turns=100, max_seconds=10)
    for n in range(5):
        cache.add("s", turn(f"r{n}", seconds=4))
    assert [t.request_id for t in cache.recent("s", within=60)] == ["r3", "r4"]


def test_gap_starts_a_new_conversation():
    clock = FakeClock()
    cache = TurnCache(clock=clock)
    cache.add("s", turn("r0"))
    clock.advance(30)
    assert cache.recent("s", within=60)
    clock.advance(31)
    assert cache.recent("s", within=60) == []


def test_sessions_and_owners_are_isolated():
    cache = TurnCache()
    cache.add("alice|v", turn("a1", owner="alice", audio_ref="turn_001"))
    cache.add("bob|v", turn("b1", owner="bob", audio_ref="turn_001"))
    assert [t.request_id for t in cache.recent("alice|v", within=60)] == ["a1"]
    assert cache.lookup("alice", "a1").request_id == "a1"
    assert cache.lookup("bob", "a1") is None  # bob cannot use alice's request id
    assert cache.lookup("alice", "turn_001").request_id == "a1"  # same audio_ref, each owner its own
    assert cache.lookup("bob", "turn_001").request_id == "b1"
    assert cache.misses == 1 and cache.hits == 3


def test_memory_stays_bounded_over_500_turns():
    cache = TurnCache(max_turns=10, max_seconds=60, max_bytes=2 << 20, max_sessions=20)
    one = turn("x").nbytes
    for n in range(500):
        cache.add(f"session{n % 37}", turn(f"r{n}", owner=f"o{n % 37}", frames=200))
        assert cache.nbytes <= max(2 << 20, one * 10)
    sessions = cache._sessions.values()  # noqa: SLF001 - checking the accounting itself
    assert cache.nbytes == sum(t.nbytes for state in sessions for t in state.turns.values())
    assert len(sessions) <= 20


def test_evicted_audio_refs_are_forgotten():
    cache = TurnCache(max_turns=1)
    cache.add("s", turn("r0", audio_ref="first"))
    cache.add("s", turn("r1", audio_ref="second"))
    assert cache.lookup("alice", "first") is None
    assert cache.lookup("alice", "second").request_id == "r1"
