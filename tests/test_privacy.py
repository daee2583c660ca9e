"""Nothing written outside CACHE_DIR: the server run with a fresh HOME and TMPDIR leaves both
empty (no telemetry ids, no compiled-kernel caches, no spooled request bodies)."""

from __future__ import annotations

import json
import os

import pytest
import requests

from tests.live import cli_server


def seed_kernel_cache(tmp) -> None:
    """MLX's compiled CPU kernels from earlier tests (content-addressed): compiling them all
    again in a fresh folder takes minutes on this machine and proves nothing more."""
    import shutil
    import tempfile
    from pathlib import Path

    compiled = Path(tempfile.gettempdir()) / "mlx"
    if compiled.is_dir():
        shutil.copytree(compiled, tmp / "mlx", dirs_exist_ok=True)


def everything_under(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("backend_args", [["--backend", "piper"], ["--random-weights", "--flavor", "tiny"]],
                         ids=["piper", "csm"])
def test_home_and_tmpdir_stay_empty(tmp_path, backend_args):
    home, tmpdir, cache = tmp_path / "home", tmp_path / "tmp", tmp_path / "cache"
    for folder in (home, tmpdir):
        folder.mkdir()
    seed_kernel_cache(cache / "tmp")
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "TMPDIR": str(tmpdir), "CACHE_DIR": str(cache),
           "PYTHONUNBUFFERED": "1"}
    with cli_server(["--env-file", str(tmp_path / "none"), "serve", *backend_args], env) as url:
        voice = requests.get(f"{url}/v1/audio/voices").json()["voices"][0]["id"]
        for response_format in ("mp3", "opus", "wav") if "piper" in backend_args else ("wav",):
            response = requests.post(f"{url}/v1/audio/speech", json={
                "model": "tts-1", "voice": voice, "input": "Hi.", "response_format": response_format})
            assert response.status_code == 200 and response.content
        # A body big enough for waitress to spool it to a temporary file (over 512 KB).
        padded = json.dumps({"model": "tts-1", "voice": voice, "input": "Padded.", "ignored": "x" * 800_000})
        response = requests.post(f"{url}/v1/audio/speech", data=padded, headers={"Content-Type": "application/json"})
        assert response.status_code == 200
    assert everything_under(home) == []
    assert everything_under(tmpdir) == []
    assert (cache / "tmp").is_dir()  # where they went instead
