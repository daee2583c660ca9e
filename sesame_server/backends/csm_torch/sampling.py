"""Token sampling on torch: temperature + top-k over the valid Mimi bins, by inverse CDF on
uniforms drawn from an explicit `torch.Generator` (a seeded request is reproducible whatever
else the process samples). The rule is the MLX backend's (backends/csm/sampling.py).

The uniforms for a whole frame are drawn before its depth-decoder steps run, so the steps
themselves hold no random-number generator: that is what lets them be captured as one CUDA
graph (depth_graph.py) and replayed with fresh uniforms each frame."""

from __future__ import annotations

import secrets

import torch

from sesame_server.backends.csm.sampling_params import DEFAULT_TEMPERATURE, SamplingParams

__all__ = ["SamplingParams", "draw", "request_sampling", "sample"]


def request_sampling(temperature: float | None, seed: int | None,
                     device: torch.device) -> tuple[SamplingParams, torch.Generator]:
    """A request's sampling rule and generator (a fresh random seed when it gave none)."""
    params = SamplingParams(temperature=DEFAULT_TEMPERATURE if temperature is None else float(temperature))
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed if seed is not None else secrets.randbits(31)))
    return params, generator


def draw(count: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """`count` uniforms in [0, 1) for one frame's codebooks, float32 on `device`."""
    return torch.rand(count, generator=generator, device=device, dtype=torch.float32)


def sample(logits: torch.Tensor, params: SamplingParams, valid_ids: int, uniform: torch.Tensor,
           temperature: torch.Tensor | float | None = None) -> torch.Tensor:
    """One id per row of `logits` ([B, vocab]) -> [B, 1] int64, among ids below `valid_ids`
    (the real model has 2051 audio ids for 2048 Mimi bins). `uniform`: [B] or a scalar in
    [0, 1); `temperature` overrides params.temperature (a tensor, in a captured graph)."""
    logits = logits[:, :valid_ids].float()
    if params.greedy:
        return torch.argmax(logits, dim=-1, keepdim=True)
    scaled = logits / (params.temperature if temperature is None else temperature)
    values, candidates = torch.topk(scaled, params.top_k, dim=-1)  # top_k == valid_ids: all, sorted
    cumulative = torch.cumsum(torch.softmax(values, dim=-1), dim=-1)
    # The first candidate whose cumulative probability passes the uniform (rounding may
    # leave the last sum a hair under 1: clamp into range).
    index = (cumulative < uniform.reshape(-1, 1)).sum(dim=-1, keepdim=True).clamp_(max=params.top_k - 1)
    return torch.gather(candidates, -1, index)
