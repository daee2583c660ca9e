"""What a frame loop (MLX or PyTorch) leaves behind for the next segment of the same context."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .prompt import TokenFrames


@dataclass
class LoopState:
    frames: list[np.ndarray] = field(default_factory=list)  # codes [codebooks] per frame
    ended_with_eos: bool = False
    cancelled: bool = False
    unfed: list[np.ndarray] = field(default_factory=list)  # frames not yet in the KV cache

    def closing_frames(self, width: int) -> TokenFrames:
        """Token frames that close the last generated segment (pending audio + end frame)."""
        tokens = np.zeros((len(self.unfed), width), np.int32)
        mask = np.zeros((len(self.unfed), width), bool)
        for row, codes in enumerate(self.unfed):
            tokens[row, :-1] = codes
            mask[row, :-1] = True
        return TokenFrames(tokens, mask)
