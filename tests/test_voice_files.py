"""A voice.json is never trusted (another node wrote it; the share may hang): a bad one costs
only its own voice, which is reported unreadable, and no request waits on VOICES_DIR past a
deadline (a FIFO standing in for a hung share never blocks anything)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import requests

from sesame_server.backends.base import Voice
from sesame_server.voices.catalogue import VoiceCatalogue
from sesame_server.voices.custom import CustomVoiceStore
from sesame_server.voices.shared import SharedVoices
from tests.conftest import piper_settings
from tests.fakes import FakeBackend
from tests.live import live_server

HANG_GUARD = 20.0  # seconds: only so that a test that would hang fails instead


def tone(seconds: float = 1.0) -> np.ndarray:
    return (0.3 * np.sin(np.arange(int(24000 * seconds)) / 5)).astype(np.float32)


def _rewrite(folder: Path, change) -> None:
    path = folder / "voice.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def _fifo(folder: Path) -> None:
    (folder / "voice.json").unlink()
    os.mkfifo(folder / "voice.json")


def _link_out(folder: Path) -> None:  # a whole, valid voice.json, but outside VOICES_DIR
    outside = folder.parent.parent / f"outside-{folder.name}.json"
    shutil.copy(folder / "voice.json", outside)
    (folder / "voice.json").unlink()
    (folder / "voice.json").symlink_to(outside)


def _too_large(folder: Path) -> None:  # valid JSON, 2 MB of it
    _rewrite(folder, lambda v: {**v, "description": "x" * 2_000_000})


DAMAGE = {
    "labels a string": lambda folder: _rewrite(folder, lambda v: {**v, "labels": "abc"}),
    "created_at a word": lambda folder: _rewrite(folder, lambda v: {**v, "created_at_unix": "yesterday"}),
    "name a number": lambda folder: _rewrite(folder, lambda v: {**v, "name": 5}),
    "labels nested": lambda folder: _rewrite(folder, lambda v: {**v, "labels": {"a": {"b": "c"}}}),
    "seconds a list": lambda folder: _rewrite(folder, lambda v: {**v, "seconds": [1]}),
    "a list, not an object": lambda folder: _rewrite(folder, lambda v: [v]),
    "too large": _too_large,
    "a FIFO": _fifo,
    "a link out of VOICES_DIR": _link_out,
}


@contextmanager
def fifo_rescue(root: Path):
    """Opens for writing (then closes) any FIFO under `root` that a reader blocks on, once
    HANG_GUARD seconds passed: a test of code that blocks on one then fails instead of hanging.
    `rescued` says whether it had to."""
    stop = threading.Event()
    rescued: list[Path] = []

    def watch() -> None:
        if stop.wait(HANG_GUARD):
            return
        while not stop.wait(0.1):
            for path in root.rglob("voice.json"):
                try:
                    if not stat.S_ISFIFO(os.stat(path).st_mode):
                        continue
                    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # only succeeds with a reader waiting
                except OSError as exc:
                    if exc.errno not in (errno.ENXIO, errno.ENOENT):
                        raise
                    continue
                rescued.append(path)
                os.close(fd)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield rescued
    finally:
        stop.set()
        thread.join()


def store_voices(root: Path, count: int) -> list[str]:
    """Voices written as any node writes them (the first stays good; the others get damaged)."""
    store = CustomVoiceStore(root)
    return [store.add(f"Voice {n}", tone()).voice_id for n in range(count)]


def written_elsewhere(root: Path, damage) -> str:
    """A voice another node stores while this one runs (atomically: staging, then rename)."""
    staging = root.parent / f"staging-{time.monotonic_ns()}"
    voice_id = CustomVoiceStore(staging).add("Elsewhere", tone()).voice_id
    damage(staging / voice_id)
    os.rename(staging / voice_id, root / voice_id)
    return voice_id


def assert_refused_by_name(url: str, voice_id: str, root: Path) -> None:
    eleven = requests.post(f"{url}/v1/text-to-speech/{voice_id}", json={"text": "Hi."}, timeout=HANG_GUARD)
    detail = eleven.json()["detail"]
    assert eleven.status_code == 400 and detail["status"] == "voice_unusable" and voice_id in detail["message"]
    openai = requests.post(f"{url}/v1/audio/speech", json={"input": "Hi.", "voice": voice_id}, timeout=HANG_GUARD)
    assert openai.status_code == 400 and openai.json()["error"]["code"] == "voice_unusable"
    assert str(root) not in eleven.text + openai.text  # no server path in an error body


def assert_speaks(url: str, voice_id: str) -> None:
    speech = requests.post(f"{url}/v1/text-to-speech/{voice_id}", json={"text": "Hi."}, timeout=HANG_GUARD)
    assert speech.status_code == 200 and speech.content


def test_each_bad_voice_json_at_startup_costs_only_its_voice(tmp_path, caplog):
    good, *bad = store_voices(tmp_path / "voices", 1 + len(DAMAGE))
    for voice_id, damage in zip(bad, DAMAGE.values()):
        damage(tmp_path / "voices" / voice_id)
    with fifo_rescue(tmp_path) as rescued:
        with live_server(piper_settings(tmp_path, warmup_on_start=False), backend=FakeBackend(frames=2, can_clone=True)) as server:
            health = requests.get(f"{server.url}/health", timeout=HANG_GUARD)
            assert health.status_code == 200
            reasons = {v["voice_id"]: v["reason"] for v in health.json()["voices_unreadable"]}
            assert set(reasons) == set(bad)
            assert not any(str(tmp_path) in reason for reason in reasons.values())
            assert good in health.json()["voices"]
            assert_speaks(server.url, good)
            for voice_id in bad:
                assert_refused_by_name(server.url, voice_id, tmp_path)
    assert rescued == []  # nothing ever blocked on the FIFO
    warned = " ".join(r.getMessage() for r in caplog.records if "cannot be used" in r.getMessage())
    assert all(voice_id in warned for voice_id in bad)


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("running")
    [good] = store_voices(tmp / "voices", 1)
    settings = piper_settings(tmp, warmup_on_start=False, voices_rescan_seconds=0.2)
    with live_server(settings, backend=FakeBackend(frames=2, can_clone=True)) as server:
        server.good, server.root = good, tmp / "voices"
        yield server


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_bad_voice_json_written_by_another_node_costs_only_its_voice(running, kind):
    with fifo_rescue(running.root.parent) as rescued:
        listed = written_elsewhere(running.root, DAMAGE[kind])  # found by the listing
        time.sleep(0.3)
        health = requests.get(f"{running.url}/health", timeout=HANG_GUARD)
        assert health.status_code == 200
        assert listed in {v["voice_id"] for v in health.json()["voices_unreadable"]}
        assert_speaks(running.url, running.good)
        assert_refused_by_name(running.url, listed, running.root)
        named = written_elsewhere(running.root, DAMAGE[kind])  # named by a request before any listing
        assert_refused_by_name(running.url, named, running.root)
        assert requests.get(f"{running.url}/ready", timeout=HANG_GUARD).status_code == 200
        assert requests.delete(f"{running.url}/v1/voices/{named}", timeout=HANG_GUARD).json() == {"status": "ok"}
    assert rescued == []


def test_a_fifo_on_the_share_never_holds_a_request(running):
    with fifo_rescue(running.root.parent) as rescued:
        voice_id = written_elsewhere(running.root, _fifo)
        unknown = "Zz" + voice_id[2:]  # id-shaped, not stored: looked for on disk
        time.sleep(0.3)  # the listing is due: the next request re-lists, finding the FIFO
        for _ in range(3):
            assert requests.get(f"{running.url}/health", timeout=HANG_GUARD).status_code == 200
            assert requests.get(f"{running.url}/ready", timeout=HANG_GUARD).status_code == 200
            answer = requests.post(f"{running.url}/v1/audio/speech", json={"input": "Hi.", "voice": unknown},
                                   timeout=HANG_GUARD)
            assert answer.status_code == 400 and answer.json()["error"]["code"] == "voice_not_found"
    assert rescued == []


# -- a share that does not answer: requests go on with what this node knows -----------------

class HungShare(CustomVoiceStore):
    """VOICES_DIR on a share that stops answering: every listing, stat and read waits for `answer`."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.answer = threading.Event()
        self.hung = False

    def _wait(self) -> None:
        if self.hung:
            assert self.answer.wait(HANG_GUARD), "the share was never released"

    def on_disk(self) -> set[str]:
        self._wait()
        return super().on_disk()

    def exists(self, voice_id: str) -> bool:
        self._wait()
        return super().exists(voice_id)

    def find(self, voice_id: str):
        self._wait()
        return super().find(voice_id)


def test_a_hung_share_makes_a_voice_unknown_for_now_not_a_hung_request(tmp_path):
    store = HungShare(tmp_path)
    known = store.add("Known", tone()).voice_id
    catalogue = VoiceCatalogue([Voice(id="builtin", name="Built in")], "builtin")
    clock = [1000.0]
    shared = SharedVoices(store, catalogue, rescan_seconds=5.0, forget=lambda voice_id: None,
                          clock=lambda: clock[0], wait_seconds=0.05)
    shared.load()
    later = CustomVoiceStore(tmp_path).add("Later", tone()).voice_id  # another node's, not known yet
    store.hung = True
    try:
        assert catalogue.get(later) is None  # a miss: unknown for now
        assert catalogue.get(known) is not None  # cannot tell whether it is still there: kept
        clock[0] += 5.0
        assert {voice.id for voice in catalogue} == {"builtin", known}  # the listing is late: what we know
        assert not store.answer.is_set()  # all of it answered while the share hung
    finally:
        store.answer.set()
    deadline = time.monotonic() + HANG_GUARD
    while catalogue.get_known(later) is None:  # the late look-up lands once the share answers
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert catalogue.get(later).name == "Later"
