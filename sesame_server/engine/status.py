"""What the engine tells the request side: its published status, and why it refused a job."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping


class QueueFull(RuntimeError):
    """More jobs are waiting than MAX_QUEUE_DEPTH allows."""

    def __init__(self, depth: int, retry_after: int):
        self.depth = depth
        self.retry_after = retry_after
        super().__init__(f"The server is busy: {depth} requests are already waiting. Retry in about {retry_after} s.")


class EngineStopped(RuntimeError):
    """The engine is shutting down and takes no new work."""


class ModelUnavailable(RuntimeError):
    """The model failed to load; the message says why and what to do."""


@dataclass(frozen=True)
class EngineStatus:
    """What the inference thread last published: safe to read from any thread."""

    state: str = "starting"  # starting | loading | ready | unloaded | error | stopped
    backend: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # Backend.status()
    requests_served: int = 0
    interruptions: int = 0
    avg_generation_seconds: float | None = None
    load_error: str | None = None  # advice for the operator when state == "error"


class BusyTime:
    """Seconds the inference thread spent generating, for a Prometheus counter whose rate()
    is the node's utilisation (0 to 1).

    The inference thread only swaps one tuple per job (no lock on its side); a scrape adds
    the running job's part, so a long generation shows up while it runs, not when it ends.
    A scrape racing a job's end may read a hair past the final figure: readers keep the
    highest value they returned, so the counter never goes back."""

    def __init__(self) -> None:
        self._published: tuple[float, float | None] = (0.0, None)  # finished jobs' seconds, current start
        self._highest = 0.0
        self._readers = threading.Lock()  # scrapes only, never the inference thread

    def start(self, at: float) -> None:
        self._published = (self._published[0], at)

    def stop(self, at: float) -> None:
        total, started = self._published
        if started is not None:
            self._published = (total + max(0.0, at - started), None)

    def seconds(self) -> float:
        now = time.monotonic()
        total, started = self._published
        value = total if started is None else total + max(0.0, now - started)
        with self._readers:
            self._highest = max(self._highest, value)
            return self._highest
