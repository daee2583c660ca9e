"""Three servers behind Debian's nginx on loopback ports, with etc/nginx/sesame-tts.conf as
shipped (only the listen port and the node addresses changed): conversations stay on their
node, a dead node's sessions move on, a full node spills to the others, and a draining node
finishes its stream. The nodes run the tiny random CSM, so conversation memory is live.
Skipped, saying so, where nginx is not installed (.ci/run installs it)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.csm_tiny import tiny_model_dir
from tests.live import wait_ready

ROOT = Path(__file__).resolve().parent.parent
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (Debian: apt-get install nginx)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Node:
    def __init__(self, name: str, tmp: Path):
        self.name, self.port = name, _free_port()
        env = {**os.environ, "BACKEND": "csm", "MODEL_PATH": str(tiny_model_dir()), "CACHE_DIR": str(tmp / name),
               "WARMUP_ON_START": "false", "NODE_NAME": name, "MAX_QUEUE_DEPTH": "2", "DRAIN_SECONDS": "60",
               "PROXY_HOPS": "1", "LOG_LEVEL": "WARNING",
               "MAX_SENTENCE_SECONDS": "0.8"}  # random weights never end a sentence: ten frames each
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sesame_server", "--env-file", "/dev/null", "serve", "--port", str(self.port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        wait_ready(self.url, self.process)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    nodes = [Node(f"node-{index}", tmp) for index in (1, 2, 3)]
    shipped = (ROOT / "etc" / "nginx" / "sesame-tts.conf").read_text()
    port = _free_port()
    servers = "\n".join(f"    server 127.0.0.1:{node.port} max_fails=0;" for node in nodes)
    conf = re.sub(r"(?m)^    server 10\.0\.0\.\d+:8880.*\n(?:    server 10\.0\.0\.\d+:8880.*\n)*", servers + "\n", shipped)
    conf = conf.replace("listen 8880;", f"listen 127.0.0.1:{port};")
    assert conf.count("server 127.0.0.1:") == 3 and f"listen 127.0.0.1:{port};" in conf
    (tmp / "sesame-tts.conf").write_text(conf)
    (tmp / "nginx.conf").write_text(
        f"daemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log warn;\n"
        f"events {{ worker_connections 256; }}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {tmp}/body;\n  proxy_temp_path {tmp}/proxy;\n"
        f"  fastcgi_temp_path {tmp}/fcgi;\n  uwsgi_temp_path {tmp}/uwsgi;\n  scgi_temp_path {tmp}/scgi;\n"
        f"  include {tmp}/sesame-tts.conf;\n}}\n")
    nginx = subprocess.Popen([NGINX, "-c", str(tmp / "nginx.conf"), "-p", str(tmp)], stderr=subprocess.PIPE, text=True)
    try:
        for node in nodes:
            node.wait_ready()
        yield f"http://127.0.0.1:{port}", {node.name: node for node in nodes}
    finally:
        nginx.terminate()
        nginx.wait(10)
        for node in nodes:
            if node.process.poll() is None:
                node.process.kill()
                node.process.wait()


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
