"""What a node takes from TURN_STORE: only turns its model can read, only its own caller's,
and never more than one short deadline per call, whatever the store answers.

A hostile store is a small socket server speaking Redis' protocol (it answers every command
with one canned reply, or trickles its replies a byte at a time); corrupted turns are
written into a real Debian redis-server behind two real nodes."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from typing import Iterator

import numpy as np
import pytest
import redis
import requests

from sesame_server.backends.csm import CsmBackend
from sesame_server.context import turn_store
from sesame_server.context.turn_store import TurnStore
from tests.cluster_nodes import Node
from tests.csm_tiny import tiny_settings
from tests.live import live_server
from tests.test_turn_store import needs_redis, redis_server, spoken_turn

TRICKLE = 0.2  # seconds between two bytes of a trickled reply
TRICKLED = b"+" + b"O" * 99 + b"\r\n"  # 101 bytes: some 20 s when trickled, each byte well within TIMEOUT


class HostileStore:
    """Answers every Redis command with `reply`; `trickle` sends it one byte per TRICKLE s."""

    def __init__(self) -> None:
        self.reply, self.trickle = b"+OK\r\n", False
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"
        self.closed = threading.Event()
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        reader = connection.makefile("rb")
        try:
            while not self.closed.is_set():
                header = reader.readline()  # *<count>, then $<length> and the bytes of each argument
                if not header.startswith(b"*"):
                    return
                for _ in range(int(header[1:])):
                    reader.read(int(reader.readline()[1:]) + 2)
                if not self.trickle:
                    connection.sendall(self.reply)
                    continue
                for byte in TRICKLED:
                    if self.closed.wait(TRICKLE):
                        return
                    connection.sendall(bytes([byte]))
        except (OSError, ValueError):
            return

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def hostile():
    store = HostileStore()
    yield store
    store.close()


def _within(seconds: float, call):
    """call()'s result (or its exception), asserting it came back within `seconds` (else it is left running)."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append((call(), None))
        except Exception as exc:  # noqa: BLE001 - re-raised below, on the test's thread
            outcome.append((None, exc))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert outcome, f"no answer within {seconds} s"
    result, error = outcome[0]
    if error is not None:
        raise error
    return result


@pytest.mark.parametrize("reply", [b"+OK\r\n", b":1\r\n", b"*-1\r\n", b"$-1\r\n", b"-ERR no\r\n", b"*1\r\n:7\r\n"])
def test_any_reply_the_store_gives_is_an_answer_or_a_miss_never_an_exception(hostile, reply):
    hostile.reply = reply
    errors: list[str] = []
    store = TurnStore(hostile.url, max_turns=10, session_gap=60, on_error=errors.append)
    store_calls = [lambda: store.recent("session:s", within=60), lambda: store.lookup("session:s", "ref"),
                   lambda: store.find_text("session:s", "Hello."),
                   lambda: store.save(turn_store.StoredTurn("session:s", spoken_turn("r-1"), time.time()))]
    for call in store_calls:
        store._down_until = 0.0  # each call meets the store, not the back-off after the last one
        assert _within(5, call) in ([], None, False)
    assert errors  # counted (sesame_tts_turn_store_errors_total)


def test_a_store_that_trickles_its_reply_costs_one_deadline_then_backs_off(hostile):
    hostile.trickle = True
    errors: list[str] = []
    store = TurnStore(hostile.url, max_turns=10, session_gap=60, on_error=errors.append)
    started = time.monotonic()
    assert _within(len(TRICKLED) * TRICKLE / 4, lambda: store.recent("session:s", within=60)) == []
    first = time.monotonic() - started
    assert errors == ["read"]
    started = time.monotonic()
    assert store.lookup("session:s", "ref") is None  # backing off: not even tried
    assert time.monotonic() - started < first / 4 and errors == ["read", "read"]


def test_a_csm_server_on_a_hostile_store_answers_every_request(hostile, tmp_path, monkeypatch):
    monkeypatch.setattr(turn_store, "BACKOFF", 0.0)  # every request below meets the store itself
    settings = tiny_settings(tmp_path, turn_store=hostile.url)
    with live_server(settings, backend=CsmBackend(settings, max_frames_per_sentence=2)) as server:
        for index, (reply, trickle) in enumerate([(b"+OK\r\n", False), (b":1\r\n", False), (b"*-1\r\n", False),
                                                  (b"+OK\r\n", True)]):
            hostile.reply, hostile.trickle = reply, trickle
            response = requests.post(f"{server.url}/v1/audio/speech", headers={"X-Session-Id": f"s-{index}"},
                                     json={"model": "tts-1", "voice": "alloy", "input": "Hello.",
                                           "response_format": "wav"}, timeout=len(TRICKLED) * TRICKLE / 2)
            assert response.status_code == 200 and response.headers["X-Context-Turns"] == "0", (reply, response.text)


# -- corrupted turns in a real store, read by a real node ------------------------------------------


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory) -> Iterator[tuple[str, Node, Node]]:
    tmp = tmp_path_factory.mktemp("nodes")
    (tmp / "redis").mkdir()
    with redis_server(tmp / "redis") as (url, _):
        nodes = [Node(name, tmp, TURN_STORE=url) for name in ("node-a", "node-b")]
        try:
            for node in nodes:
                node.wait_ready()
            yield url, nodes[0], nodes[1]
        finally:
            for node in nodes:
                node.stop()


def _speak(node: Node, session: str, *, key: str = "alice") -> requests.Response:
    return requests.post(f"{node.url}/v1/audio/speech", timeout=60,
                         headers={"X-Session-Id": session, "Authorization": f"Bearer {key}"},
                         json={"model": "tts-1", "voice": "alloy", "input": "Hello there.", "response_format": "wav"})


def _stored(url: str, request_id: str) -> dict[bytes, bytes]:
    client, deadline = redis.Redis.from_url(url), time.monotonic() + 10
    while not (fields := client.hgetall(f"sesame-tts:turn:{request_id}")):  # written behind the response
        assert time.monotonic() < deadline, "the turn never reached the store"
        time.sleep(0.02)
    return fields


def _assert_alive(node: Node) -> None:
    assert node.process.poll() is None, f"{node.name} died (exit {node.process.returncode})"
    assert requests.get(f"{node.url}/health", timeout=10).status_code == 200


@needs_redis
@pytest.mark.parametrize("damage", ["codes past every table", "codes past the model's bins",
                                    "one codebook of three frames"])
def test_a_corrupted_stored_turn_is_ignored_by_the_node_restoring_it(two_nodes, damage):
    url, node_a, node_b = two_nodes
    session = f"damaged-{damage}"
    first = _speak(node_a, session)
    assert first.status_code == 200
    fields = _stored(url, first.headers["x-request-id"])
    meta = json.loads(fields[b"meta"])
    segments = [key for key in fields if key.startswith(b"segment:")]
    if damage == "codes past every table":  # the audit's SIGSEGV: an embedding row 10^9
        changed = {key: np.full(len(fields[key]) // 4, 10**9, np.int32).tobytes() for key in segments}
    elif damage == "codes past the model's bins":  # the tiny Mimi has 64: within CSM's vocab, never a sound
        changed = {key: np.full(len(fields[key]) // 4, 64, np.int32).tobytes() for key in segments}
    else:  # the audit's 500 on every request of the session
        meta["segments"] = [[text, dtype, [1, 3]] for text, dtype, _ in meta["segments"]]
        changed = {key: struct.pack("<3i", 1, 2, 3) for key in segments}
    redis.Redis.from_url(url).hset(f"sesame-tts:turn:{first.headers['x-request-id']}",
                                   mapping={**changed, b"meta": json.dumps(meta)})

    moved = _speak(node_b, session)
    _assert_alive(node_b)
    assert moved.status_code == 200, moved.text
    assert moved.headers["X-Context-Turns"] == "0"  # the damaged turn was not used
    assert int(_speak(node_a, session).headers["X-Context-Turns"]) >= 1  # node A still has its own copy


@needs_redis
def test_another_caller_sending_the_same_session_id_starts_fresh_on_every_node(two_nodes):
    url, node_a, node_b = two_nodes
    session = "shared-id"
    alice = _speak(node_a, session, key="alice")
    assert alice.headers["X-Context-Turns"] == "0"
    _stored(url, alice.headers["x-request-id"])
    for node, caller in ((node_b, "mallory"), (node_a, "eve")):  # node B would restore alice's turns from the store
        other = _speak(node, session, key=caller)
        assert other.status_code == 200 and other.headers["X-Context-Turns"] == "0", node.name
    assert int(_speak(node_b, session, key="alice").headers["X-Context-Turns"]) >= 1  # hers, through the store
