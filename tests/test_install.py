"""bin/install.sh for real: a copy of this checkout, a fresh venv, the embedded voice, a healthy server.

Slow (it creates a virtualenv and installs the dependencies: ~10-60 s with warm caches) but part
of the default run, because CI must prove a clean checkout installs and serves. Select or skip
it with `-m install` / `-m "not install"`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.install

ROOT = Path(__file__).resolve().parent.parent
# What a clean checkout does not have (git ls-files would miss files not committed yet).
NOT_IN_A_CHECKOUT = shutil.ignore_patterns(".git", ".venv", "venv", "__pycache__", "*.egg-info", ".pytest_cache",
                                           ".env", "build", "dist", "*.pyc")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_install(repo: Path, env: dict, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "bin/install.sh", *args], cwd=repo, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def alive(pid: int) -> bool:
    """Running (an exited process nobody reaped yet, a zombie, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def test_install_script_reaches_a_healthy_server(tmp_path):
    repo = tmp_path / "checkout"
    shutil.copytree(ROOT, repo, ignore=NOT_IN_A_CHECKOUT)
    cache = tmp_path / "cache"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "HOST", "VIRTUAL_ENV", "PYTHONPATH")}
    env["CACHE_DIR"] = str(cache)
    pid_file = cache / "server.pid"
    pids: list[int] = []
    try:
        # --no-service: never touch a login service the developer may have installed for real.
        first = run_install(repo, env, "--yes", "--embedded", "--no-service", "--port", str(port))
        output = first.stdout + first.stderr
        assert first.returncode == 0, output
        assert first.stdout.rstrip().splitlines()[-1] == f"Sesame TTS running at http://localhost:{port}", output
        pids.append(int(pid_file.read_text()))
        health = requests.get(f"http://127.0.0.1:{port}/health", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert health.json()["backend"] == "piper"
        dotenv = (repo / ".env").read_text()
        assert f"PORT={port}\n" in dotenv and "BACKEND=piper\n" in dotenv

        # Idempotent: a second run reuses everything and restarts the server it started.
        second = run_install(repo, env, "--yes", "--no-service", "--port", str(port), timeout=300)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "Dependencies are up to date" in second.stdout and "Keeping your .env" in second.stdout
        assert second.stdout.rstrip().endswith(f"Sesame TTS running at http://localhost:{port}")
        pids.append(int(pid_file.read_text()))
        assert not alive(pids[0]), "the first server should have been replaced"
        assert requests.get(f"http://127.0.0.1:{port}/health", timeout=10).json()["status"] == "ok"
    finally:
        stop = run_install(repo, env, "--stop", timeout=60)
        for pid in pids:  # belt and braces: never leave a server behind
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    deadline = time.monotonic() + 10
    while pids and alive(pids[-1]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_file.exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
