"""The sampling rule every CSM frame loop follows (MLX or PyTorch): temperature + top-k."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TEMPERATURE = 0.9
DEFAULT_TOP_K = 50


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = DEFAULT_TEMPERATURE
    top_k: int = DEFAULT_TOP_K

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0 or self.top_k == 1

    def resolved(self, valid_ids: int) -> "SamplingParams":
        """top_k clamped to the ids that may be emitted (0 or None means all of them)."""
        top_k = self.top_k if self.top_k and self.top_k > 0 else valid_ids
        return SamplingParams(temperature=float(self.temperature), top_k=min(int(top_k), valid_ids))
