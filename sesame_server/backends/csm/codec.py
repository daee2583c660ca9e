"""Mimi: encode voice prompts to codes, decode generated codes to 24 kHz PCM frame by frame."""

from __future__ import annotations

import mlx.core as mx
import numpy as np


class MimiCodec:
    def __init__(self, mimi, codebooks: int):
        from mlx_audio.codec.models.mimi import MimiStreamingDecoder

        self.mimi = mimi
        self.codebooks = codebooks
        self.bins = int(mimi.cfg.quantizer_bins)
        self._decoder = MimiStreamingDecoder(mimi)

    def reset(self) -> None:
        """Forget the previous utterance (conv state and transformer KV cache)."""
        self._decoder.reset()

    def decode_frame(self, codes: mx.array) -> mx.array:
        """codes [1, codebooks] -> 1920 float32 samples (lazy; evaluate on the caller's stream)."""
        pcm = self.mimi.decode_step(codes[:, :, None])
        # Real Mimi weights are bfloat16; audio leaves the backend as float32.
        return pcm.reshape(-1).astype(mx.float32)

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """float32 mono 24 kHz -> codes [codebooks, frames] int32."""
        codes = self.mimi.encode(mx.array(audio, dtype=mx.float32)[None, None, :])
        return np.array(codes[0, : self.codebooks]).astype(np.int32)
