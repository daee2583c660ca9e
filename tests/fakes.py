"""Fake backends for isolating thread logic (the engine, the queue, cancellation)."""

from __future__ import annotations

import threading
import time

import numpy as np

from sesame_server.backends.base import Voice


class FakeBackend:
    """Yields 80 ms frames of a tone; `gate` (if set) must be released once per frame."""

    name = "fake"
    sample_rate = 24000
    native_speed = False
    frame_seconds = 0.08

    def __init__(self, frames: int = 5, gated: bool = False, fail_load: bool = False, fail_at: int | None = None):
        self.frames = frames
        self.gate = threading.Semaphore(0) if gated else None
        self.fail_load = fail_load
        self.fail_at = fail_at
        self.loads = 0
        self.unloads = 0
        self.loaded = False
        self.served: list[str] = []  # request ids, in the order generation started
        self.frames_after_cancel: dict[str, int] = {}
        self.started = threading.Event()

    def load(self) -> None:
        self.loads += 1
        if self.fail_load:
            raise RuntimeError("weights missing")
        self.loaded = True

    def voices(self) -> list[Voice]:
        return [Voice(id="fake_voice", name="Fake")]

    def stream(self, request, cancel):
        self.served.append(request.request_id)
        self.started.set()
        t = np.arange(int(self.sample_rate * self.frame_seconds)) / self.sample_rate
        tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
        after_cancel = 0
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
            if self.fail_at == index and request.request_id.startswith("bad"):
                raise ValueError("boom")
            yield tone
        self.frames_after_cancel[request.request_id] = after_cancel - 1 if after_cancel else 0

    def unload(self) -> None:
        self.unloads += 1
        self.loaded = False

    def status(self) -> dict:
        return {"loaded": self.loaded, "memory_gb": None, "model_id": "fake"}


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)
