"""The protocol every speech backend implements (csm on MLX, piper on CPU, ...)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Iterator, Protocol, runtime_checkable

import numpy as np

from sesame_server.engine.request import SpeechRequest


@dataclass(frozen=True)
class Voice:
    id: str  # local id, e.g. "conversational_b"
    name: str  # human readable, e.g. "Max (Conversational Male)"
    labels: dict = field(default_factory=dict)  # accent, gender, use_case, ...
    description: str = ""
    category: str = "premade"  # premade | cloned
    elevenlabs_id: str = ""  # 10-40 letters/digits; derived from `id` when empty


class BackendError(RuntimeError):
    """A backend failed in a way the caller should hear about (not a bug)."""


@runtime_checkable
class Backend(Protocol):
    name: str  # "csm" | "piper" | ...
    sample_rate: int  # of the float32 blocks stream() yields
    native_speed: bool  # True when stream() applies request.speed itself
    frame_seconds: float  # duration of one generation step ("frame"), for progress logs

    def load(self) -> None:
        """Load weights. Called on the inference thread only."""

    def voices(self) -> list[Voice]:
        ...

    def stream(self, request: SpeechRequest, cancel: threading.Event) -> Iterator[np.ndarray]:
        """Yield mono float32 PCM blocks in [-1, 1] as they are generated.

        Checks `cancel` between frames and returns promptly once it is set.
        """

    def unload(self) -> None:
        ...

    def status(self) -> dict:
        """Figures for /health: at least {"loaded": bool, "memory_gb": float|None}."""
