"""Conversation memory across nodes (TURN_STORE): turns kept in a real Debian redis-server on
a loopback port, read back by another node; Redis stopped, paused or killed never fails a
request. Without a store, a session that changes node starts cold and says so. Skipped,
saying so, where redis-server is not installed (.ci/run installs it)."""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import redis
import requests

from sesame_server.config import SettingsError, load_settings
from sesame_server.context import turn_store
from sesame_server.context.conversation import Caller, plan_context
from sesame_server.context.fields import ContextFields
from sesame_server.context.turn_store import SharedTurnCache, TurnStore
from sesame_server.context.turns import Turn, TurnCache
from sesame_server.bench_cluster import free_port
from tests.cluster_nodes import Node

REDIS = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
needs_redis = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed (Debian: apt-get install "
                                                       "redis-server)")


@contextmanager
def redis_server(tmp: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """redis-server on a free loopback port, nothing persisted; its URL and process."""
    port = free_port()
    process = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client, deadline = redis.Redis.from_url(url), time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert process.poll() is None and time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)
        yield url, process
    finally:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def store_url(tmp_path_factory):
    if REDIS is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    with redis_server(tmp_path_factory.mktemp("redis")) as (url, process):
        yield url, process


def node_cache(url: str, **limits) -> SharedTurnCache:
    """One node's turn cache on the shared store, its restores and errors counted."""
    errors: list[str] = []
    restored: list[int] = []
    limits = {"max_turns": 10, "max_seconds": 60.0, **limits}
    store = TurnStore(url, max_turns=limits["max_turns"], session_gap=60, on_error=errors.append)
    cache = SharedTurnCache(store, on_restore=restored.append, **limits)
    cache.errors, cache.restored = errors, restored
    return cache


def spoken_turn(request_id: str, owner: str = "session:s1", text: str = "Hello there. How are you?",
                audio_ref: str | None = None) -> Turn:
    rng = np.random.default_rng(len(request_id))
    segments = tuple((sentence, rng.integers(0, 2048, (32, 6), dtype=np.int32)) for sentence in text.split(". "))
    return Turn(request_id=request_id, owner=owner, voice="conversational_b", text=text, speaker=0,
                seconds=0.96, audio_ref=audio_ref, segments=segments)


def assert_same_turn(got: Turn, expected: Turn) -> None:
    assert (got.request_id, got.owner, got.voice, got.text, got.speaker, got.seconds, got.audio_ref) == (
        expected.request_id, expected.owner, expected.voice, expected.text, expected.speaker, expected.seconds,
        expected.audio_ref)
    assert [text for text, _ in got.parts] == [text for text, _ in expected.parts]
    for (_, a), (_, b) in zip(got.parts, expected.parts):
        assert a.dtype == b.dtype and a.flags.writeable
        np.testing.assert_array_equal(a, b)


@needs_redis
def test_another_node_rebuilds_a_session_from_the_stored_codes(store_url):
    url, _ = store_url
    node_a, node_b = node_cache(url), node_cache(url)
    first, second = spoken_turn("r-1", audio_ref="turn_001"), spoken_turn("r-2", text="Fine, thanks.")
    node_a.add("session:s1", first)
    node_a.add("session:s1", second)
    node_a.close()  # written
    turns = node_b.recent("session:s1", within=60)
    assert [t.request_id for t in turns] == ["r-1", "r-2"]
    assert_same_turn(turns[0], first)
    assert node_b.restored == [2] and len(node_b) == 2
    assert node_b.recent("session:s1", within=60) == turns and node_b.restored == [2]  # now local
    assert node_b.recent("session:other", within=60) == []
    assert not node_a.errors and not node_b.errors
    node_b.close()


@needs_redis
def test_references_resolve_on_another_node_only_for_their_owner(store_url):
    url, _ = store_url
    node_a = node_cache(url)
    node_a.add("session:alice", spoken_turn("a-1", owner="session:alice", audio_ref="turn_001"))
    node_a.add("client:k@10.0.0.1|voice:v", spoken_turn("b-1", owner="client:k@10.0.0.1", text="Bob here."))
    node_a.close()
    node_b = node_cache(url)
    assert node_b.lookup("session:alice", "a-1").request_id == "a-1"
    assert node_b.lookup("session:alice", "turn_001").request_id == "a-1"
    assert node_b.lookup("session:mallory", "a-1") is None  # a request id is no key to someone else's turn
    assert node_b.lookup("session:mallory", "turn_001") is None
    assert node_b.find_text("client:k@10.0.0.1", "  Bob   here. ").request_id == "b-1"
    assert node_b.find_text("session:alice", "Bob here.") is None
    assert node_b.lookup("session:alice", "unknown") is None
    # A referenced turn is kept apart: the session's own order and gap are untouched.
    assert node_b.recent("session:alice", within=60)[-1].request_id == "a-1"
    node_b.close()


@needs_redis
def test_the_store_keeps_max_turns_per_session_and_lets_them_expire(store_url):
    url, _ = store_url
    node_a = node_cache(url, max_turns=3)
    for index in range(5):
        node_a.add("session:long", spoken_turn(f"long-{index}", owner="session:long"))
    node_a.close()
    client = redis.Redis.from_url(url)
    assert client.llen("sesame-tts:session:session:long") == 3
    assert 0 < client.ttl("sesame-tts:session:session:long") <= 65  # the session gap (60 s) and a little
    assert 0 < client.ttl("sesame-tts:turn:long-4") <= 3600
    node_b = node_cache(url, max_turns=3)
    assert [t.request_id for t in node_b.recent("session:long", within=60)] == ["long-2", "long-3", "long-4"]
    time.sleep(0.01)
    assert node_cache(url).recent("session:long", within=0.001) == []  # past the gap: a new conversation


@needs_redis
def test_a_store_that_is_down_or_slow_costs_one_short_timeout_and_a_log_line(store_url, caplog):
    caplog.set_level(logging.WARNING, logger=turn_store.__name__)
    dead = node_cache(f"redis://127.0.0.1:{free_port()}/0")
    dead.add("session:s", spoken_turn("d-1", owner="session:s"))  # local still works
    assert [t.request_id for t in dead.recent("session:s", within=60)] == ["d-1"]
    started = time.monotonic()
    assert dead.recent("session:cold", within=60) == [] and dead.lookup("session:s", "nope") is None
    assert time.monotonic() - started < 0.5
    dead.close()
    assert sorted(dead.errors) == ["read", "read", "write", "write"]  # ping, save, two reads: all counted
    lines = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(lines) == 1 and "requests go on without it" in lines[0]  # once per LOG_EVERY, not per call

    url, process = store_url  # paused: the socket is open, nothing answers
    slow = node_cache(url)
    slow.close()  # its writer has pinged the store: only the read below meets the pause
    process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert slow.recent("session:paused", within=60) == []
        assert time.monotonic() - started < 0.3 + turn_store.TIMEOUT
        assert slow.errors == ["read"]
    finally:
        process.send_signal(signal.SIGCONT)


def test_restoring_a_session_replaces_what_the_node_held_and_counts_each_turn_once():
    cache = TurnCache(max_turns=5)
    cache.add("session:s", spoken_turn("old", owner="session:s"))
    cache.add("session:s", spoken_turn("kept", owner="session:s"))
    restored = [spoken_turn("kept", owner="session:s"), spoken_turn("new", owner="session:s")]
    cache.restore("session:s", restored, age=59.0)
    assert [t.request_id for t in cache.recent("session:s", within=60)] == ["kept", "new"]
    assert cache.recent("session:s", within=58) == []  # the gap counts from when the newest was spoken
    assert cache.nbytes == sum(t.nbytes for t in restored)
    cache.add("session:s", restored[1])  # the same turn again: still counted once
    assert len(cache) == 2 and cache.nbytes == sum(t.nbytes for t in restored)


def test_turn_store_setting_takes_redis_urls_only():
    assert load_settings({}, None).turn_store is None
    assert load_settings({"TURN_STORE": " redis://10.0.0.5:6379/2 "}, None).turn_store == "redis://10.0.0.5:6379/2"
    assert load_settings({"TURN_STORE": "unix:///run/redis.sock"}, None).turn_store == "unix:///run/redis.sock"
    with pytest.raises(SettingsError, match=r"TURN_STORE must start with redis://.*\(got http://\.\.\.\)") as bad:
        load_settings({"TURN_STORE": "http://user:secret@host:6379"}, None)
    assert "secret" not in str(bad.value)
    with pytest.raises(SettingsError, match="TURN_STORE"):
        load_settings({"TURN_STORE": "localhost:6379"}, None)


def test_a_client_that_expected_continuity_and_gets_none_is_told_and_counted(caplog):
    caplog.set_level(logging.INFO, logger="sesame_server.context.conversation")
    settings, cache, cold = load_settings({}, None), TurnCache(), []

    def plan(caller: Caller, **fields) -> int:
        return len(plan_context(cache, settings, ContextFields(**fields), "v", caller,
                                observe_cold_start=cold.append).context)

    assert plan(Caller(session_id="s-1")) == 0 and cold == ["session"]
    assert "Session 's-1' has no stored turns on this node: starting cold" in caplog.text
    assert plan(Caller(api_key="k", address="10.0.0.1")) == 0 and cold == ["session"]  # asked for nothing
    assert plan(Caller(session_id="s-1"), previous_request_ids=["gone"]) == 0 and cold[-1] == "reference"
    mine = plan_context(cache, settings, ContextFields(), "v", Caller(session_id="s-1")).conversation
    cache.add(mine.session, spoken_turn("kept", owner=mine.owner))
    assert plan(Caller(session_id="s-1")) == 2 and len(cold) == 2  # two sentences of one turn
    assert plan(Caller(session_id="s-1"), previous_request_ids=["kept", "gone"]) == 2 and len(cold) == 2


def _speak(node: Node, session: str, text: str) -> requests.Response:
    response = requests.post(f"{node.url}/v1/audio/speech", headers={"X-Session-Id": session}, timeout=60,
                             json={"model": "tts-1", "voice": "alloy", "input": text, "response_format": "wav"})
    assert response.status_code == 200 and len(response.content) > 44, response.text
    return response


def _metric(node: Node, line: str) -> float:
    body = requests.get(f"{node.url}/metrics", timeout=10).text
    return float(next(row.rsplit(" ", 1)[1] for row in body.splitlines() if row.startswith(line)))


@needs_redis
def test_a_session_continues_on_another_node_through_the_store_and_survives_its_loss(tmp_path):
    (tmp_path / "redis").mkdir()
    with redis_server(tmp_path / "redis") as (url, process):
        node_a, node_b = (Node(name, tmp_path, TURN_STORE=url) for name in ("node-a", "node-b"))
        alone = Node("node-alone", tmp_path, TURN_STORE="")  # no store: it only knows its own sessions
        nodes = [node_a, node_b, alone]
        try:
            for node in nodes:
                node.wait_ready()
            first = _speak(node_a, "moving", "Hello there.")
            assert first.headers["X-Context-Turns"] == "0"
            client, deadline = redis.Redis.from_url(url), time.monotonic() + 5
            while not client.exists(f"sesame-tts:turn:{first.headers['x-request-id']}"):  # written behind the response
                assert time.monotonic() < deadline
                time.sleep(0.02)
            moved = _speak(node_b, "moving", "And how are you?")
            assert moved.headers["X-Served-By"] == "node-b" and int(moved.headers["X-Context-Turns"]) >= 1
            assert _metric(node_b, "sesame_tts_turn_store_restored_turns_total") == 1
            assert _metric(node_b, 'sesame_tts_context_cold_starts_total{reason="session"}') == 0

            assert _speak(alone, "moving", "Anyone there?").headers["X-Context-Turns"] == "0"  # cold, and says so
            assert _metric(alone, 'sesame_tts_context_cold_starts_total{reason="session"}') == 1

            process.kill()  # the store is lost mid-conversation: requests go on
            process.wait()
            assert int(_speak(node_b, "moving", "Still here?").headers["X-Context-Turns"]) >= 1  # its own memory
            assert _speak(node_a, "fresh", "A new one.").headers["X-Context-Turns"] == "0"
            assert _metric(node_a, 'sesame_tts_turn_store_errors_total{operation="read"}') >= 1
        finally:
            for node in nodes:
                if node.process.poll() is None:
                    node.process.send_signal(signal.SIGTERM)
            logs = {node.name: node.process.communicate(timeout=60)[1] for node in nodes}
    assert "Turn store redis://127.0.0.1" in logs["node-a"] and "is unreachable" in logs["node-a"], logs["node-a"]
    assert "Turn store" not in logs["node-alone"]


@needs_redis
def test_a_node_shutting_down_hands_its_last_turns_to_the_store(store_url, tmp_path):
    """Runtime.close() (serve's exit, after a drain) writes what is still queued: the session
    a draining node spoke last continues on the next node."""
    from dataclasses import replace as with_backend_info

    from sesame_server.app import create_app
    from sesame_server.config import Settings
    from sesame_server.runtime import EXTENSION
    from tests.fakes import FakeBackend

    url, _ = store_url
    backend = FakeBackend()
    backend.info = with_backend_info(backend.info, uses_context=True)
    app = create_app(Settings(cache_dir=tmp_path, turn_store=url), backend=backend)
    rt = app.extensions[EXTENSION]
    rt.turns.add("session:last", spoken_turn("r-last"))  # queued for the writer thread
    rt.close()
    assert not rt.turns._writer.is_alive()  # it wrote what was queued and stopped
    assert [t.request_id for t in node_cache(url).recent("session:last", within=60)] == ["r-last"]
