"""The backbone's preallocated KV cache, with voice-prefix snapshots.

`PrefixKVCache` holds the whole 2048-token window in one buffer per layer and can snapshot
and restore a prefix: the voice prompt is prefilled once per voice and every request starts
from a copy of its keys/values instead of re-running the backbone over it. It exposes what
mlx-audio's attention and `create_attention_mask` use: `offset`,
`update_and_fetch(keys, values)` and `make_mask(...)`.

(The depth decoder's per-frame buffers live in frame_loop.py: fixed-size, allocated once.)
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
from mlx_audio.lm.models.cache import create_attention_mask


class _PreallocatedKV:
    def __init__(self, max_len: int):
        self.max_len = max_len
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self.offset = 0

    def update_and_fetch(self, keys: mx.array, values: mx.array):
        if self.keys is None:
            batch, heads, _, head_dim = keys.shape
            self.keys = mx.zeros((batch, heads, self.max_len, head_dim), keys.dtype)
            self.values = mx.zeros((batch, heads, self.max_len, values.shape[3]), values.dtype)
        start, self.offset = self.offset, self.offset + keys.shape[2]
        if self.offset > self.max_len:
            raise ValueError(f"KV cache overflow: {self.offset} > {self.max_len} positions")
        self.keys[..., start:self.offset, :] = keys
        self.values[..., start:self.offset, :] = values
        return self.keys[..., : self.offset, :], self.values[..., : self.offset, :]

    def make_mask(self, n: int, return_array: bool = False, window_size: int | None = None):
        return create_attention_mask(n, offset=self.offset, return_array=return_array, window_size=window_size)


@dataclass(frozen=True)
class KVSnapshot:
    """Keys/values of a prefix (one pair per layer) and its length in tokens."""

    layers: tuple[tuple[mx.array, mx.array], ...]
    length: int

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self.layers)


class PrefixKVCache(_PreallocatedKV):
    def snapshot(self) -> tuple[mx.array, mx.array]:
        return self.keys[..., : self.offset, :], self.values[..., : self.offset, :]

    def restore(self, keys: mx.array, values: mx.array) -> None:
        if self.keys is None:
            batch, heads, _, head_dim = keys.shape
            self.keys = mx.zeros((batch, heads, self.max_len, head_dim), keys.dtype)
            self.values = mx.zeros((batch, heads, self.max_len, values.shape[3]), values.dtype)
        self.offset = keys.shape[2]
        self.keys[..., : self.offset, :] = keys
        self.values[..., : self.offset, :] = values


class BackboneCache:
    """One PrefixKVCache per backbone layer, with whole-model snapshot/restore."""

    def __init__(self, num_layers: int, max_len: int):
        self.layers = [PrefixKVCache(max_len) for _ in range(num_layers)]
        self.max_len = max_len

    @property
    def offset(self) -> int:
        return self.layers[0].offset

    def snapshot(self) -> KVSnapshot:
        pairs = tuple(layer.snapshot() for layer in self.layers)
        # Compact copies: a view would keep the whole 2048-position buffer alive per voice.
        zero = mx.zeros((), pairs[0][0].dtype)
        pairs = tuple((k + zero, v + zero) for k, v in pairs)
        mx.eval(pairs)
        return KVSnapshot(layers=pairs, length=self.offset)

    def restore(self, snapshot: KVSnapshot | None) -> None:
        if snapshot is None:
            self.reset()
            return
        for layer, (keys, values) in zip(self.layers, snapshot.layers):
            layer.restore(keys, values)

    def reset(self) -> None:
        for layer in self.layers:
            layer.offset = 0

