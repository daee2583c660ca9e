"""Stored voices: written atomically, a full disk is a 507 that leaves nothing behind, a
broken stored voice is reported (log, /health) and refused by name, never silently dropped."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from tests.conftest import piper_settings
from tests.fakes import FakeBackend
from tests.live import live_server
from tests.test_cloning_api import wav


def add(server, name: str = "Mine") -> requests.Response:
    return requests.post(f"{server.url}/v1/voices/add", data={"name": name},
                         files=[("files", ("ref.wav", wav(2.0)))])


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MiB tmpfs as CACHE_DIR (root can mount one; CI runs as root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave_bytes: int) -> None:
    free = shutil.disk_usage(disk).free
    with open(disk / "filler", "wb") as out:
        out.write(b"\0" * max(0, free - leave_bytes))


def test_a_full_disk_is_a_507_and_leaves_no_half_voice(tiny_disk):
    backend = FakeBackend(frames=2, can_clone=True)
    with live_server(piper_settings(tiny_disk, warmup_on_start=False), backend=backend) as server:
        (tiny_disk / "voices").mkdir(exist_ok=True)
        fill(tiny_disk, leave_bytes=40 * 1024)  # room for part of the 96 KB reference, not all of it
        response = add(server)
        assert response.status_code == 507, response.text
        detail = response.json()["detail"]
        assert detail["status"] == "insufficient_storage" and "no space left" in detail["message"].lower()
        assert "MB free" in detail["message"] and response.headers["x-should-retry"] == "false"
        assert str(tiny_disk) not in detail["message"]  # no server path in an error body
        assert list((tiny_disk / "voices").iterdir()) == []  # no staging folder, no voice without voice.json
        assert backend.prepared == []

        # A preview that cannot be cached is still served.
        (tiny_disk / "filler").unlink()
        fill(tiny_disk, leave_bytes=0)
        preview = requests.get(f"{server.url}/v1/voices/fake_voice/preview")
        assert preview.status_code == 200 and preview.headers["content-type"] == "audio/mpeg" and preview.content
        assert not (tiny_disk / "previews" / "fake" / "fake_voice.mp3").exists()

        (tiny_disk / "filler").unlink()  # room again: the same upload works
        assert add(server).status_code == 200


def test_voices_are_renamed_into_place_whole(tmp_path):
    backend = FakeBackend(frames=2, can_clone=True)
    with live_server(piper_settings(tmp_path, warmup_on_start=False), backend=backend) as server:
        voice_id = add(server).json()["voice_id"]
    folder = tmp_path / "voices" / voice_id
    assert sorted(p.name for p in folder.iterdir()) == ["reference.wav", "voice.json"]
    assert json.loads((folder / "voice.json").read_text())["voice_id"] == voice_id
    assert [p.name for p in (tmp_path / "voices").iterdir()] == [voice_id]  # no staging left


def test_broken_stored_voices_are_reported_and_refused_by_name(tmp_path, caplog):
    backend = FakeBackend(frames=2, can_clone=True)
    settings = piper_settings(tmp_path, warmup_on_start=False)
    with live_server(settings, backend=backend) as server:
        ids = [add(server, f"Voice {n}").json()["voice_id"] for n in range(3)]
    good, bad_json, bad_wav = ids
    (tmp_path / "voices" / bad_json / "voice.json").write_text("{ not json")
    (tmp_path / "voices" / bad_wav / "reference.wav").write_bytes(b"RIFF garbage")
    (tmp_path / "voices" / ".incoming-crashed").mkdir()  # a crash mid-upload, an hour ago
    os.utime(tmp_path / "voices" / ".incoming-crashed", (0, os.path.getmtime(tmp_path) - 3600))
    (tmp_path / "voices" / ".incoming-in-progress").mkdir()  # another node's upload (a shared VOICES_DIR)

    caplog.set_level(logging.WARNING)
    with live_server(settings, backend=FakeBackend(frames=2, can_clone=True)) as server:
        warned = " ".join(r.getMessage() for r in caplog.records if "cannot be used" in r.getMessage())
        assert bad_json in warned and bad_wav in warned and good not in warned
        health = requests.get(f"{server.url}/health").json()
        reasons = {v["voice_id"]: v["reason"] for v in health["voices_unreadable"]}
        assert set(reasons) == {bad_json, bad_wav}
        assert "voice.json is not valid JSON" in reasons[bad_json]
        assert "Error opening" in reasons[bad_wav] or "reference.wav" in reasons[bad_wav]
        assert good in health["voices"]
        for voice_id in (bad_json, bad_wav):
            response = requests.post(f"{server.url}/v1/text-to-speech/{voice_id}", json={"text": "Hi."})
            detail = response.json()["detail"]
            assert response.status_code == 400 and detail["status"] == "voice_unusable" and voice_id in detail["message"]
            response = requests.post(f"{server.url}/v1/audio/speech", json={"input": "Hi.", "voice": voice_id})
            assert response.status_code == 400 and response.json()["error"]["code"] == "voice_unusable"
        assert requests.delete(f"{server.url}/v1/voices/{bad_json}").json() == {"status": "ok"}
        assert bad_json not in [v["voice_id"] for v in requests.get(f"{server.url}/health").json()["voices_unreadable"]]
    assert not (tmp_path / "voices" / ".incoming-crashed").exists()
    assert (tmp_path / "voices" / ".incoming-in-progress").exists()  # young: not ours to remove


def test_a_reference_gone_after_startup_is_a_4xx_naming_the_voice(tmp_path):
    backend = FakeBackend(frames=2, can_clone=True)
    with live_server(piper_settings(tmp_path, warmup_on_start=False), backend=backend) as server:
        voice_id = add(server).json()["voice_id"]
        (tmp_path / "voices" / voice_id / "reference.wav").unlink()
        response = requests.post(f"{server.url}/v1/text-to-speech/{voice_id}", json={"text": "Hi."})
        detail = response.json()["detail"]
        assert response.status_code == 400 and detail["status"] == "voice_unusable" and voice_id in detail["message"]
        assert requests.get(f"{server.url}/health").json()["status"] == "ok"
