"""Token sampling on torch: temperature + top-k over the valid Mimi bins, from an explicit
`torch.Generator` (a seeded request is reproducible whatever else the process samples).
The rule is the MLX backend's (backends/csm/sampling.py: SamplingParams)."""

from __future__ import annotations

import secrets

import torch

from sesame_server.backends.csm.sampling_params import DEFAULT_TEMPERATURE, SamplingParams

__all__ = ["SamplingParams", "request_sampling", "sample"]


def request_sampling(temperature: float | None, seed: int | None,
                     device: torch.device) -> tuple[SamplingParams, torch.Generator]:
    """A request's sampling rule and generator (a fresh random seed when it gave none)."""
    params = SamplingParams(temperature=DEFAULT_TEMPERATURE if temperature is None else float(temperature))
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed if seed is not None else secrets.randbits(31)))
    return params, generator


def sample(logits: torch.Tensor, params: SamplingParams, valid_ids: int,
           generator: torch.Generator | None) -> torch.Tensor:
    """One id per row of `logits` ([B, vocab]) -> [B, 1] int64, among ids below `valid_ids`
    (the real model has 2051 audio ids for 2048 Mimi bins)."""
    logits = logits[:, :valid_ids].float()
    if params.greedy:
        return torch.argmax(logits, dim=-1, keepdim=True)
    scaled = logits / params.temperature
    if params.top_k < valid_ids:
        values, candidates = torch.topk(scaled, params.top_k, dim=-1)
        choice = torch.multinomial(torch.softmax(values, dim=-1), 1, generator=generator)
        return torch.gather(candidates, -1, choice)
    return torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=generator)
