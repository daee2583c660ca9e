"""`sesame-tts bench --cluster N`: requests per minute through Debian's nginx with the shipped
etc/nginx/sesame-tts.conf, in front of 1 node and then N nodes on this machine, under the
same mixed load (short and long replies, buffered and streamed, both dialects; each client
its own conversation). The nodes are real `sesame-tts serve` processes with this process's
environment (BACKEND, MODEL_PATH, RANDOM_WEIGHTS...), each with its own CACHE_DIR."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import requests

CONFIG = Path(__file__).resolve().parent.parent / "etc" / "nginx" / "sesame-tts.conf"
LOAD = [  # (route, body, streamed): what agents send, round-robin per client
    ("/v1/audio/speech", {"model": "tts-1", "voice": "alloy", "input": "Sure, I turned off the kitchen lights.",
                          "response_format": "mp3"}, False),
    ("/v1/text-to-speech/{voice}/stream", {"text": "Your next meeting is at 3:30 pm with the design team; "
                                           "I moved the dentist to Friday."}, True),
    ("/v1/audio/speech", {"model": "tts-1", "voice": "alloy", "response_format": "wav", "stream_format": "audio",
                          "input": "Here is a summary of today's news. Markets rose two percent, the storm moved "
                                   "east overnight, and the city council approved the new bike lanes."}, True),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster", type=int, metavar="N", default=None,
                        help="requests per minute through nginx for 1 node vs N local nodes (needs nginx)")
    parser.add_argument("--cluster-clients", type=int, default=6, help="--cluster: concurrent clients (default 6)")
    parser.add_argument("--cluster-seconds", type=float, default=60.0,
                        help="--cluster: seconds of load per figure (default 60)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def nginx_binary() -> str | None:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def render_nginx(folder: Path, ports: list[int], listen: int) -> Path:
    """The shipped config with only the node addresses and the listen port changed, inside an
    nginx.conf that keeps every file nginx writes under `folder`."""
    shipped = CONFIG.read_text()
    servers = "".join(f"    server 127.0.0.1:{port} max_fails=0;\n" for port in ports)
    conf = re.sub(r"(?m)^    server 10\.0\.0\.\d+:8880.*\n(?:    server 10\.0\.0\.\d+:8880.*\n)*", servers, shipped)
    conf = conf.replace("listen 8880;", f"listen 127.0.0.1:{listen};")
    if conf.count("server 127.0.0.1:") != len(ports) or f"listen 127.0.0.1:{listen};" not in conf:
        raise RuntimeError(f"{CONFIG} no longer has the upstream/listen lines this bench rewrites")
    (folder / "sesame-tts.conf").write_text(conf)
    main = folder / "nginx.conf"
    main.write_text(
        f"daemon off;\nworker_processes 1;\npid {folder}/nginx.pid;\nerror_log {folder}/error.log warn;\n"
        f"events {{ worker_connections 512; }}\n"
        # Uploads (voice clones) stay in memory: nginx's workers (user nobody) may not write here.
        f"http {{\n  access_log off;\n  client_body_buffer_size 1m;\n  client_body_temp_path {folder}/body;\n"
        f"  proxy_temp_path {folder}/proxy;\n"
        f"  fastcgi_temp_path {folder}/fcgi;\n  uwsgi_temp_path {folder}/uwsgi;\n  scgi_temp_path {folder}/scgi;\n"
        f"  include {folder}/sesame-tts.conf;\n}}\n")
    return main


def start_node(name: str, folder: Path, env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "CACHE_DIR": str(folder / name), "NODE_NAME": name, "PROXY_HOPS": "1",
           "LOG_LEVEL": "WARNING", **env}
    process = subprocess.Popen(
        [sys.executable, "-m", "sesame_server", "--env-file", "/dev/null", "serve", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return process, port


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the node at {url} exited: {process.stderr.read()[-2000:]}")
        try:
            if requests.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except requests.RequestException:  # not up yet, or busy starting (a loaded machine)
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the node at {url} was not ready within {timeout:.0f} s")


@contextmanager
def balanced(nodes: int, folder: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """`nodes` servers behind nginx; yields the balancer's URL."""
    nginx = nginx_binary()
    if nginx is None:
        raise RuntimeError("nginx is not installed (Debian: apt-get install nginx)")
    with ExitStack() as stack:
        started = [start_node(f"node-{index}", folder, env or {}) for index in range(1, nodes + 1)]
        for process, _ in started:
            stack.callback(_stop, process)
        listen = free_port()
        proxy = subprocess.Popen([nginx, "-c", str(render_nginx(folder, [p for _, p in started], listen)),
                                  "-p", str(folder)], stderr=subprocess.PIPE, text=True)
        stack.callback(_stop, proxy)
        for process, port in started:
            wait_ready(f"http://127.0.0.1:{port}", process)
        yield f"http://127.0.0.1:{listen}"


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def load(url: str, clients: int, seconds: float, voice: str) -> dict:
    """`clients` threads sending LOAD round-robin for `seconds`; every response read whole."""
    done, failed, busy = [0], [0], [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(index: int) -> None:
        session = requests.Session()
        turn = index
        while time.monotonic() < stop_at:
            route, body, streamed = LOAD[turn % len(LOAD)]
            turn += 1
            try:
                response = session.post(url + route.format(voice=voice), json=body, stream=streamed, timeout=300,
                                        headers={"X-Session-Id": f"bench-{index}"})
                data = response.content
                outcome = done if response.status_code == 200 and data else busy if response.status_code in (
                    429, 503) else failed
            except requests.RequestException:
                outcome = failed
            with lock:
                outcome[0] += 1
            if outcome is busy:  # as a client should: wait as told (a busy node is not hammered)
                time.sleep(min(2.0, max(0.2, float(response.headers.get("Retry-After") or 0.5))))

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(index,), daemon=True) for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return {"completed": done[0], "failed": failed[0], "refused_busy": busy[0], "seconds": round(elapsed, 1),
            "requests_per_minute": round(done[0] * 60 / elapsed, 1)}


def run(args: argparse.Namespace, settings=None) -> dict:
    nodes = max(2, int(args.cluster))
    env: dict[str, str] = {}  # the nodes take BACKEND and the rest from this environment, as `serve` does
    results: dict = {"clients": args.cluster_clients, "seconds": args.cluster_seconds}
    with tempfile.TemporaryDirectory(prefix="sesame-bench-cluster-") as tmp:
        for count in (1, nodes):
            folder = Path(tmp) / f"n{count}"
            folder.mkdir()
            with balanced(count, folder, env) as url:
                voice = requests.get(f"{url}/v1/voices", timeout=10).json()["voices"][0]["voice_id"]
                results["backend"] = requests.get(f"{url}/health", timeout=10).json().get("backend")
                results[f"{count}_nodes"] = load(url, args.cluster_clients, args.cluster_seconds, voice)
    one, many = results["1_nodes"]["requests_per_minute"], results[f"{nodes}_nodes"]["requests_per_minute"]
    results["ratio"] = round(many / one, 2) if one else None
    for count in (1, nodes):
        row = results[f"{count}_nodes"]
        print(f"{count} node{'s' if count > 1 else ''} behind nginx: {row['requests_per_minute']} requests/min "
              f"({row['completed']} completed, {row['refused_busy']} refused busy, {row['failed']} failed "
              f"in {row['seconds']} s, {args.cluster_clients} clients)")
    print(f"{nodes} nodes / 1 node: {results['ratio']}x ({os.cpu_count()} CPU cores, backend {results['backend']})")
    if getattr(args, "json", None):
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results
