"""mlx-audio's own frame loop, as `Model.generate` runs it: the yardstick for parity and speed.

Per frame: `SesameModel.generate_frame` (a new depth-decoder cache each frame, the Python
graph built step by step) followed by the `mx.all(sample == 0)` host sync. The whole prompt
is prefilled in the first call, as mlx-audio does for every request.
"""

from __future__ import annotations

import time
from typing import Callable

import mlx.core as mx
import numpy as np

from .prompt import TokenFrames


def reference_frames(model, prompt: TokenFrames, sampler: Callable, max_frames: int, timings: list | None = None):
    """Codes [codebooks, frames] from mlx-audio's loop on `model` (its caches are reset)."""
    model.setup_caches(1) if not model.caches_are_enabled() else model.reset_caches()
    tokens = mx.array(prompt.tokens)[None]
    mask = mx.array(prompt.mask)[None]
    positions = mx.arange(0, len(prompt), dtype=mx.int32)[None]
    frames = []
    for _ in range(max_frames):
        started = time.perf_counter()
        sample = model.generate_frame(tokens, mask, positions, sampler)
        if mx.all(sample == 0):  # the per-frame host sync of mlx-audio's loop
            break
        frames.append(np.array(sample)[0])
        if timings is not None:
            timings.append(time.perf_counter() - started)
        tokens = mx.expand_dims(mx.concat([sample, mx.zeros((1, 1), mx.int32)], axis=1), axis=1)
        mask = mx.expand_dims(
            mx.concat([mx.ones_like(sample).astype(mx.bool_), mx.zeros((1, 1), mx.bool_)], axis=1), axis=1
        )
        positions = positions[:, -1:] + 1
    model.reset_caches()
    if not frames:
        return np.zeros((model.args.audio_num_codebooks, 0), np.int32)
    return np.stack(frames, axis=1)
