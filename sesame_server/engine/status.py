"""What the engine tells the request side: its published status, and why it refused a job."""

from __future__ import annotations

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
