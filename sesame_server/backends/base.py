"""The contract between the engine and a speech backend (csm on MLX, piper on CPU, ...).

Data goes down as a SpeechRequest and comes back up as Blocks of PCM, then one Generation
result. What a backend *is* (rate, frame length, abilities) is one frozen BackendInfo the
layers above read; they never ask a backend anything through getattr.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Generator, Mapping, Protocol, runtime_checkable

import numpy as np

from sesame_server.audio.units import FRAME_SECONDS
from sesame_server.engine.request import ReferenceVoice, SpeechRequest


@dataclass(frozen=True)
class Voice:
    id: str  # local id, e.g. "conversational_b"
    name: str  # human readable, e.g. "Max (Conversational Male)"
    labels: dict = field(default_factory=dict)  # accent, gender, use_case, ...
    description: str = ""
    category: str = "premade"  # premade | cloned
    elevenlabs_id: str = ""  # 10-40 letters/digits; derived from `id` when empty


@dataclass(frozen=True)
class BackendInfo:
    """What a backend is, known before it loads and fixed for its lifetime."""

    name: str  # "csm" | "piper" | ...
    sample_rate: int  # of the PCM blocks stream() yields
    frame_seconds: float = FRAME_SECONDS  # one generation step, the unit of "frame N of ~M"
    native_speed: bool = False  # stream() applies request.speed itself
    can_clone: bool = False  # a voice can be made from reference audio (SpeechRequest.reference)
    uses_context: bool = False  # conditions on prior turns' codes (conversation memory)


@dataclass(frozen=True)
class Block:
    """Mono float32 PCM in [-1, 1] at BackendInfo.sample_rate.

    The first block of a request carries what conditioned it (backends that know: csm), so
    response headers can say so before the audio leaves."""

    pcm: np.ndarray
    prefill_tokens: int | None = None  # backbone tokens prefilled before this first audio
    context_turns: int | None = None  # prior conversation turns in the model's context


@dataclass(frozen=True)
class Generation:
    """The one result of a stream(), finished or interrupted, returned after its last block."""

    # (sentence, Mimi codes [codebooks, frames]) as spoken; a cut-off sentence keeps its audio.
    segments: tuple[tuple[str, np.ndarray], ...] = ()
    prefill_tokens: int | None = None  # before the first audio (what time to first audio paid for)
    context_turns: int | None = None  # prior turns the model heard, after any window re-lay
    text_tokens: int | None = None  # the request's own text tokens
    frames: int = 0  # generation steps run
    timings: Mapping[str, float] = field(default_factory=dict)  # seconds, by phase (csm)


class BackendError(RuntimeError):
    """A backend failed in a way the caller should hear about (not a bug)."""


class VoiceUnavailable(BackendError):
    """A voice's material cannot be used (unreadable reference audio, a prompt too long for
    the model): the client's problem with one voice, not the server's."""

    def __init__(self, voice_id: str, reason: str):
        super().__init__(f"Voice '{voice_id}' cannot be used: {reason}")
        self.voice_id = voice_id
        self.reason = reason


@runtime_checkable
class Backend(Protocol):
    """Every method runs on the engine's inference thread, except info and voices()."""

    info: BackendInfo

    def voices(self) -> list[Voice]:
        """The built-in voices (cheap; callable from any thread, before load)."""

    def load(self) -> None:
        """Load weights; a second call is a no-op."""

    def warmup(self) -> None:
        """One short generation after load, so the first request pays no compile or cache cost."""

    def stream(self, request: SpeechRequest, cancel: threading.Event) -> Generator[Block, None, Generation]:
        """Yield Blocks as they are generated, then return the Generation.

        Checks `cancel` between frames and returns promptly (still with a Generation) once set.
        """

    def prepare_voice(self, reference: ReferenceVoice) -> None:
        """A new cloned voice: do now what its first request would (read, encode, prefill),
        raising VoiceUnavailable with a reason for its uploader if it cannot be used."""

    def forget_voice(self, voice_id: str) -> None:
        """Drop whatever is cached for a deleted voice (prompt codes, KV prefix)."""

    def status(self) -> dict:
        """Figures for /health and /metrics: at least {"loaded": bool, "model_id": str,
        "memory_bytes": int | None}. The engine calls it on the inference thread only and
        publishes the result; nothing else may."""

    def unload(self) -> None:
        """Free the model (idle unload); load() brings it back."""

    def thread_exit(self) -> None:
        """The inference thread is ending: unload and release per-thread resources."""
