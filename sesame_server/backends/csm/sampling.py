"""Token sampling: temperature + top-k over the valid Mimi bins, with explicit PRNG keys.

Explicit keys (not MLX's global random state) make a seeded request reproducible even
though sampling runs inside compiled graphs and interleaves with other requests' work.
"""

from __future__ import annotations

import secrets

import mlx.core as mx

from .sampling_params import DEFAULT_TEMPERATURE, DEFAULT_TOP_K, SamplingParams

__all__ = ["DEFAULT_TEMPERATURE", "DEFAULT_TOP_K", "SamplingParams", "reference_sampler", "request_sampling", "sample"]


def request_sampling(temperature: float | None, seed: int | None) -> tuple[SamplingParams, mx.array]:
    """A request's sampling rule and PRNG key (from a fresh random seed when it gave none)."""
    params = SamplingParams(temperature=DEFAULT_TEMPERATURE if temperature is None else float(temperature))
    return params, mx.random.key(int(seed if seed is not None else secrets.randbits(31)))


def sample(
    logits: mx.array,
    key: mx.array,
    params: SamplingParams,
    valid_ids: int,
    inv_temperature: mx.array | float | None = None,
) -> mx.array:
    """One id per row of `logits` ([B, vocab]) -> [B, 1] int32.

    Only ids below `valid_ids` are candidates: the real model has 2051 audio ids for 2048
    Mimi bins and an id >= 2048 would index past Mimi's codebook table. `inv_temperature`
    may be an array so compiled callers need not recompile per temperature.
    """
    logits = logits[:, :valid_ids]
    if params.greedy:
        return mx.argmax(logits, axis=-1, keepdims=True).astype(mx.int32)
    if inv_temperature is None:
        inv_temperature = 1.0 / params.temperature
    logits = logits.astype(mx.float32)
    if params.top_k < valid_ids:
        candidates = mx.argpartition(-logits, kth=params.top_k - 1, axis=-1)[:, : params.top_k]
        values = mx.take_along_axis(logits, candidates, axis=-1)
        choice = mx.random.categorical(values * inv_temperature, axis=-1, key=key)
        return mx.take_along_axis(candidates, choice[:, None], axis=-1).astype(mx.int32)
    choice = mx.random.categorical(logits * inv_temperature, axis=-1, key=key)
    return choice[:, None].astype(mx.int32)


def reference_sampler(params: SamplingParams, valid_ids: int, key: mx.array):
    """A `sampler(logits)` callable for mlx-audio's generate_frame with the same rule as ours.

    Used by the bench and the parity tests so both loops sample identically.
    """
    state = {"key": key}

    def sampler(logits: mx.array) -> mx.array:
        state["key"], sub = mx.random.split(state["key"])
        return sample(logits, sub, params, valid_ids)[:, 0]

    return sampler
