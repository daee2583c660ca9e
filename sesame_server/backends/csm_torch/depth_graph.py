"""The depth decoder's 31 steps per frame captured as one CUDA graph per sampling rule.

Each frame runs ~32 small forward passes through the depth decoder; launched one kernel at
a time from Python they cost more in launch overhead than in arithmetic on a GPU. Their
shapes are the same every frame (fixed K/V buffers, one token per step), and sampling draws
its uniforms before the steps (sampling.py), so the whole frame is captured once and
replayed: copy the backbone's last hidden state, the frame's uniforms and the temperature
into static buffers, replay, clone the codes out.

A captured graph is checked once against the eager steps on the same inputs; a graph that
cannot be captured or disagrees is dropped with a log line and the frame runs eagerly, so a
driver or PyTorch quirk costs speed, never correctness.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch

from .sampling import SamplingParams

log = logging.getLogger(__name__)


class Replay:
    """A captured piece of device work: `replay()` runs it again on the same buffers."""

    def replay(self) -> None:
        raise NotImplementedError


class CudaReplay(Replay):
    def __init__(self, graph: torch.cuda.CUDAGraph):
        self.graph = graph

    def replay(self) -> None:
        self.graph.replay()


def cuda_capture(steps: Callable[[], torch.Tensor], pool) -> tuple[Replay, torch.Tensor]:
    """Warm `steps` up on a side stream (as PyTorch asks before a capture), then capture it."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            steps()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        codes = steps()
    return CudaReplay(graph), codes


@dataclass
class _Captured:
    replay: Replay
    hidden: torch.Tensor  # [1, D]: the backbone's last hidden state
    uniforms: torch.Tensor  # [codebooks]
    temperature: torch.Tensor  # []
    codes: torch.Tensor  # [1, codebooks]: written by every replay


class DepthGraphs:
    """One captured frame per (greedy, top_k); `run()` returns None where there is none."""

    def __init__(self, loop, capture: Callable | None = None):
        self.loop = loop  # the TorchFrameLoop whose buffers and weights the graphs use
        self._capture_fn = capture or cuda_capture
        self._pool = torch.cuda.graph_pool_handle() if capture is None else None
        self._captured: dict[tuple[bool, int], _Captured | None] = {}
        self.replays = 0

    def run(self, last_h: torch.Tensor, params: SamplingParams, uniforms: torch.Tensor) -> torch.Tensor | None:
        key = (params.greedy, params.top_k)
        if key not in self._captured:
            self._captured[key] = self._capture(params, last_h, uniforms)
        captured = self._captured[key]
        if captured is None:
            return None
        captured.hidden.copy_(last_h)
        captured.uniforms.copy_(uniforms)
        captured.temperature.fill_(max(float(params.temperature), 1e-6))
        captured.replay.replay()
        self.replays += 1
        # A copy: the next replay overwrites the buffer while this frame's codes are still
        # being fed back, read back and decoded.
        return captured.codes.clone()

    def _capture(self, params: SamplingParams, last_h: torch.Tensor, uniforms: torch.Tensor) -> _Captured | None:
        hidden, drawn = last_h.detach().clone(), uniforms.detach().clone()
        temperature = torch.full((), max(float(params.temperature), 1e-6), device=last_h.device)

        def steps() -> torch.Tensor:
            return self.loop.depth_steps(hidden, params, drawn, temperature)

        try:
            replay, codes = self._capture_fn(steps, self._pool)
            replay.replay()
            expected = self.loop.depth_steps(hidden, params, drawn, temperature)
            if not torch.equal(codes, expected):
                log.warning("The captured depth decoder disagrees with the eager one (sampling %s, top-k %d): "
                            "running it eagerly", "greedy" if params.greedy else "random", params.top_k)
                return None
        except Exception as exc:  # a driver, allocator or op that cannot be captured: stay eager
            log.warning("Could not capture the depth decoder as a CUDA graph (%s): running it eagerly", exc)
            return None
        log.info("Depth decoder captured as a CUDA graph (sampling %s, top-k %d)",
                 "greedy" if params.greedy else "random", params.top_k)
        return _Captured(replay, hidden, drawn, temperature, codes)
