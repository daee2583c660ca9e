"""Three servers behind Debian's nginx on loopback ports, with etc/nginx/sesame-tts.conf as
shipped (only the listen port and the node addresses changed): conversations stay on their
node, a dead node's sessions move on, a full node spills to the others, and a draining node
finishes its stream. The nodes run the tiny random CSM, so conversation memory is live.
Skipped, saying so, where nginx is not installed (.ci/run installs it)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from sesame_server.bench_cluster import free_port, load, nginx_binary, render_nginx
from tests.cluster_nodes import Node, reference_wav

ROOT = Path(__file__).resolve().parent.parent

needs_nginx = pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed (Debian: apt-get install nginx)")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    # One VOICES_DIR for all three (a shared volume in production), a CACHE_DIR each.
    nodes = [Node(f"node-{index}", tmp, VOICES_DIR=str(tmp / "voices")) for index in (1, 2, 3)]
    port = free_port()
    conf = render_nginx(tmp, [node.port for node in nodes], port)  # the shipped file, addresses changed
    nginx = subprocess.Popen([nginx_binary(), "-c", str(conf), "-p", str(tmp)], stderr=subprocess.PIPE, text=True)
    try:
        for node in nodes:
            node.wait_ready()
        yield f"http://127.0.0.1:{port}", {node.name: node for node in nodes}
    finally:
        nginx.terminate()
        nginx.wait(10)
        for node in nodes:
            node.stop()


def _speak(base: str, session: str, text: str = "Hello there.", **extra) -> requests.Response:
    return requests.post(f"{base}/v1/audio/speech", headers={"X-Session-Id": session}, timeout=120,
                         json={"model": "tts-1", "voice": "alloy", "input": text, "response_format": "wav", **extra})


@needs_nginx
def test_a_session_stays_on_its_node_and_its_second_turn_remembers_the_first(cluster):
    base, _ = cluster
    where = {}
    for index in range(12):  # until the sessions have spread over two nodes at least
        session = f"session-{index}"
        first = _speak(base, session, "Hello there.")
        second = _speak(base, session, "And how are you?")
        assert first.status_code == second.status_code == 200, second.text
        assert first.headers["X-Served-By"] == second.headers["X-Served-By"]
        assert int(second.headers["X-Context-Turns"]) >= 1  # conditioned on turn one, on that node
        where[session] = first.headers["X-Served-By"]
        if index >= 3 and len(set(where.values())) >= 2:
            break
    assert len(set(where.values())) >= 2  # sessions spread over the nodes
    for session, node in list(where.items())[:4]:
        assert _speak(base, session, "Still me.").headers["X-Served-By"] == node


@needs_nginx
def test_a_voice_cloned_through_the_balancer_is_usable_from_every_node(cluster):
    base, nodes = cluster
    created = requests.post(f"{base}/v1/voices/add", data={"name": "Everywhere"}, timeout=120,
                            files=[("files", ("me.wav", reference_wav(1.5), "audio/wav"))])
    assert created.status_code == 200, created.text
    voice_id = created.json()["voice_id"]
    folder = Path(nodes["node-1"].env["VOICES_DIR"]) / voice_id
    codes = list(folder.glob("codes-*.npz"))
    assert len(codes) == 1  # encoded once at upload, kept next to the voice
    before = codes[0].stat()
    for node in nodes.values():  # straight to each node, not through nginx
        response = requests.post(f"{node.url}/v1/audio/speech", timeout=120, json={
            "model": "tts-1", "voice": voice_id, "input": "Mine everywhere.", "response_format": "wav"})
        assert response.status_code == 200, f"{node.name}: {response.text}"  # an unknown voice would be a 400
        assert response.headers["X-Served-By"] == node.name
    # The other nodes read those codes: none encoded the voice again and rewrote them.
    after = codes[0].stat()
    assert list(folder.glob("codes-*.npz")) == codes
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@needs_nginx
def test_a_full_node_spills_to_the_others_and_no_request_is_lost(cluster):
    """Six at once for one session: its node takes what its queue holds (MAX_QUEUE_DEPTH=2)
    and answers the rest 429; nginx gives those to the next nodes, none is lost."""
    base, _ = cluster
    results = []

    def one(index: int) -> None:
        results.append(_speak(base, "one-busy-session", f"Request number {index}."))

    threads = [threading.Thread(target=one, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert [r.status_code for r in results] == [200] * 6  # nginx retried every 429 elsewhere
    assert len({r.headers["X-Served-By"] for r in results}) >= 2


@needs_nginx
def test_the_cluster_bench_load_is_answered_with_audio(cluster):
    """`sesame-tts bench --cluster`'s mixed load (both dialects, buffered and streamed) through
    the balancer: nothing fails, and what it counts are whole responses."""
    base, _ = cluster
    voice = requests.get(f"{base}/v1/voices", timeout=10).json()["voices"][0]["voice_id"]
    row = load(base, clients=3, seconds=3.0, voice=voice)
    assert row["failed"] == 0 and row["completed"] >= 3 and row["requests_per_minute"] > 0


@needs_nginx
def test_a_draining_node_finishes_its_stream_and_its_sessions_move_on(cluster):
    base, nodes = cluster
    session = "drained-session"
    owner = nodes[_speak(base, session).headers["X-Served-By"]]
    text = " ".join(["This sentence keeps the stream going."] * 24)
    with requests.post(f"{base}/v1/audio/speech", stream=True, timeout=120, headers={"X-Session-Id": session},
                       json={"model": "tts-1", "voice": "alloy", "input": text, "response_format": "pcm"}) as response:
        assert response.headers["X-Served-By"] == owner.name
        chunks = response.iter_content(1920)
        received = len(next(chunks))
        owner.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while requests.get(f"{owner.url}/ready", timeout=5).status_code != 503:
            assert time.monotonic() < deadline
        moved = _speak(base, session, "Where am I now?")
        assert moved.status_code == 200 and moved.headers["X-Served-By"] != owner.name
        assert moved.headers["X-Context-Turns"] == "0"  # another node: it starts cold and says so
        received += sum(len(chunk) for chunk in chunks)
    frames = int(response.headers.get("X-Frames", 0) or 0)
    assert received > 0 and received % 2 == 0 and (frames == 0 or received == frames * 3840)
    assert owner.process.wait(60) == 0  # exited once its stream was done


@needs_nginx
def test_a_dead_nodes_sessions_are_served_by_another(cluster):
    base, nodes = cluster
    alive = [node for node in nodes.values() if node.process.poll() is None]
    victim = alive[0]
    victim.process.kill()
    victim.process.wait()
    for index in range(6):
        response = _speak(base, f"after-death-{index}")
        assert response.status_code == 200 and response.headers["X-Served-By"] != victim.name


@pytest.mark.skipif(shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists(),
                    reason="haproxy is not installed (Debian: apt-get install haproxy)")
def test_the_shipped_haproxy_config_is_valid(tmp_path):
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    done = subprocess.run([haproxy, "-c", "-f", str(ROOT / "etc" / "haproxy" / "sesame-tts.cfg")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
