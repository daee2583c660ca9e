"""What CsmBackend reports: one Generation per request, counters and MLX memory for status().

Per-request figures travel in the returned Generation (never as `last_*` attributes, which
the next request would overwrite); counters only grow and are read through status().
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from sesame_server.backends.base import Block, Generation
from sesame_server.config import Settings

from .random_weights import RANDOM_WEIGHTS_WARNING

if TYPE_CHECKING:
    from .runtime import CsmRuntime


@dataclass
class Counters:
    """Since the backend was made; status() reports them."""

    voice_cache_hits: int = 0  # requests that started from a cached voice prefix
    context_kv_hits: int = 0  # requests that continued the cached conversation state
    context_kv_misses: int = 0  # requests with context that had to prefill it
    window_relays: int = 0  # sentences that found the window full and re-laid the context
    frames_generated: int = 0
    prefill_tokens_total: int = 0  # backbone tokens prefilled (voice prompts included)

    def as_status(self) -> dict[str, int]:
        return asdict(self)


@dataclass(eq=False)
class _Sentence:
    text: str
    frames: list[np.ndarray] = field(default_factory=list)  # codes [codebooks] per frame
    complete: bool = False


class GenerationRecord:
    """One request as it runs; result() is the Generation its stream returns."""

    def __init__(self, codebooks: int):
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}  # seconds since `started` or since a phase began
        self.prefill_tokens = 0  # backbone tokens prefilled before the first audio
        self.audio_started = False
        self.context_turns = 0
        self.text_tokens = 0
        self.frames = 0
        self._codebooks = codebooks
        self._sentences: list[_Sentence] = []

    def first(self, phase: str, since: float) -> None:
        """Time `phase` from `since`, its first occurrence only."""
        self.timings.setdefault(phase, time.perf_counter() - since)

    def begin_sentence(self, text: str) -> None:
        self._sentences.append(_Sentence(text))

    def frame(self, codes: np.ndarray) -> None:
        self._sentences[-1].frames.append(codes)
        self.frames += 1

    def prefilled(self, tokens: int) -> None:
        if not self.audio_started:  # later prefills (sentence 2 on) do not delay the first audio
            self.prefill_tokens += tokens

    def block(self, pcm: np.ndarray) -> Block:
        """The next block out; the first carries what conditioned the request (headers)."""
        if self.audio_started:
            return Block(pcm)
        self.audio_started = True
        self.first("first_audio", self.started)
        return Block(pcm, prefill_tokens=self.prefill_tokens, context_turns=self.context_turns)

    def complete_sentence(self) -> np.ndarray:
        """Marks the current sentence spoken in full; returns its codes [codebooks, frames]."""
        sentence = self._sentences[-1]
        sentence.complete = True
        return self._codes(sentence)

    def result(self) -> Generation:
        """Segments as spoken: a cut-off sentence keeps the audio it has."""
        segments = tuple((s.text, self._codes(s)) for s in self._sentences if s.complete or s.frames)
        return Generation(
            segments=segments,
            prefill_tokens=self.prefill_tokens,
            context_turns=self.context_turns,
            text_tokens=self.text_tokens,
            frames=self.frames,
            timings=dict(self.timings),
        )

    def _codes(self, sentence: _Sentence) -> np.ndarray:
        if not sentence.frames:
            return np.zeros((self._codebooks, 0), np.int32)
        return np.stack(sentence.frames, axis=1)


def csm_status(settings: Settings, runtime: "CsmRuntime | None", *, device: str | None, mimi_encodes: int,
               counters: Counters, memory: tuple[int | None, int | None]) -> dict:
    """CsmBackend.status(): the engine publishes it for /health and /metrics."""
    memory, peak = memory
    if runtime is not None:
        model_id = runtime.assets.model_id
    elif settings.random_weights:
        model_id = f"random-weights:{settings.random_weights}"
    else:
        model_id = str(settings.model_path or settings.model_id)
    status = {
        "loaded": runtime is not None,
        "model_id": model_id,
        "memory_bytes": memory,
        "peak_memory_bytes": peak,
        "random_weights": settings.random_weights,
        "quantize": settings.quantize,
        "dtype": runtime.dtype if runtime else None,
        "device": device,
        "mimi_encodes": mimi_encodes,
        "voices_prefilled": runtime.voices_prefilled() if runtime else [],
        **counters.as_status(),
    }
    if settings.random_weights:
        status["warning"] = RANDOM_WEIGHTS_WARNING % settings.random_weights
    return status
