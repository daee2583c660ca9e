"""Fake backends for isolating thread logic (the engine, the queue, cancellation)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from sesame_server.backends.base import BackendInfo, Block, Generation, Voice, VoiceUnavailable


class FakeBackend:
    """Yields 80 ms frames of a tone; `gate` (if set) must be released once per frame.

    `fail_at=N` raises after N frames for requests whose id starts with "bad" (or every
    request with `fail_all`). Records the threads that called status(): only the inference
    thread may.
    """

    def __init__(self, frames: int = 5, gated: bool = False, fail_load: bool = False, fail_at: int | None = None,
                 fail_all: bool = False, can_clone: bool = False):
        self.info = BackendInfo(name="fake", sample_rate=24000, can_clone=can_clone)
        self.frames = frames
        self.gate = threading.Semaphore(0) if gated else None
        self.fail_load = fail_load
        self.fail_at = fail_at
        self.fail_all = fail_all
        self.loads = 0
        self.unloads = 0
        self.warmups = 0
        self.loaded = False
        self.served: list[str] = []  # request ids, in the order generation started
        self.requests: list = []  # the SpeechRequests, in that order
        self.forgotten: list[str] = []
        self.prepared: list[str] = []
        self.frames_after_cancel: dict[str, int] = {}
        self.status_threads: set[str] = set()
        self.started = threading.Event()

    def load(self) -> None:
        self.loads += 1
        if self.fail_load:
            raise RuntimeError("weights missing")
        self.loaded = True

    def warmup(self) -> None:
        self.warmups += 1
        for _ in self.stream(_Warmup(), threading.Event()):
            pass

    def voices(self) -> list[Voice]:
        return [Voice(id="fake_voice", name="Fake")]

    def stream(self, request, cancel):
        self.served.append(request.request_id)
        self.requests.append(request)
        self.started.set()
        reference = getattr(request, "reference", None)
        if reference is not None and not Path(reference.audio_path).is_file():
            raise VoiceUnavailable(reference.voice_id, "its reference recording is missing")  # no path: as csm's
        t = np.arange(int(self.info.sample_rate * self.info.frame_seconds)) / self.info.sample_rate
        tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
        after_cancel = 0
        produced = 0
        for index in range(self.frames):
            if cancel.is_set():
                break
            if self.gate is not None:
                while not self.gate.acquire(timeout=0.01):
                    if cancel.is_set():
                        break
            if cancel.is_set():
                after_cancel += 1  # a frame we would have produced after the cancel
                break
            if self.fail_at == index and (self.fail_all or request.request_id.startswith("bad")):
                raise ValueError("boom")
            produced += 1
            yield Block(tone, prefill_tokens=7 if index == 0 else None, context_turns=0 if index == 0 else None)
        self.frames_after_cancel[request.request_id] = after_cancel - 1 if after_cancel else 0
        return Generation(frames=produced, prefill_tokens=7, context_turns=0)

    def prepare_voice(self, reference) -> None:
        self.prepared.append(reference.voice_id)
        if "unusable" in reference.transcript:
            raise VoiceUnavailable(reference.voice_id, "the fake backend refuses it")

    def forget_voice(self, voice_id: str) -> None:
        self.forgotten.append(voice_id)

    def status(self) -> dict:
        self.status_threads.add(threading.current_thread().name)
        return {"loaded": self.loaded, "memory_bytes": None, "model_id": "fake"}

    def unload(self) -> None:
        self.unloads += 1
        self.loaded = False

    def thread_exit(self) -> None:
        self.unload()


class _Warmup:
    request_id = "warmup"


class FakeClock:
    """A monotonic clock tests move by hand (engine idle timer, conversation gaps)."""

    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)
