"""The backbone's static KV cache on torch, with voice-prefix snapshots.

One preallocated buffer per layer for the whole window (fixed shapes: what CUDA graphs and
torch.compile want), written in place; a voice prefix is prefilled once and every request
starts from a copy of its keys/values (0 voice-prompt tokens re-prefilled when warm).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KVSnapshot:
    """Keys/values of a prefix ([layers, 1, kv_heads, length, head_dim] each) and its length."""

    keys: torch.Tensor
    values: torch.Tensor
    length: int

    @property
    def nbytes(self) -> int:
        return self.keys.numel() * self.keys.element_size() * 2


class BackboneCache:
    def __init__(self, layers: int, kv_heads: int, head_dim: int, max_len: int, dtype: torch.dtype,
                 device: torch.device):
        shape = (layers, 1, kv_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.offset = 0

    def write(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """New keys/values ([1, kv_heads, T, head_dim]) at the current offset; returns the
        layer's keys/values up to and including them. The offset moves in `advance`."""
        end = self.offset + keys.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} > {self.max_len} positions")
        self.keys[layer, :, :, self.offset:end] = keys
        self.values[layer, :, :, self.offset:end] = values
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, tokens: int) -> None:
        self.offset += tokens

    def snapshot(self) -> KVSnapshot:
        """A compact copy of what the cache holds (a view would keep the whole window alive)."""
        return KVSnapshot(self.keys[..., :self.offset, :].clone(), self.values[..., :self.offset, :].clone(),
                          self.offset)

    def restore(self, snapshot: KVSnapshot | None) -> None:
        if snapshot is None:
            self.reset()
            return
        self.keys[..., :snapshot.length, :] = snapshot.keys
        self.values[..., :snapshot.length, :] = snapshot.values
        self.offset = snapshot.length

    def reset(self) -> None:
        self.offset = 0
