"""The depth decoder as a captured graph (backends/csm_torch/depth_graph.py), on the tiny
random CSM. A CUDA graph needs a GPU; here a stand-in capture replays the same steps into
the same static buffers, so everything around the capture runs for real: the inputs copied
in, one graph per sampling rule, the codes cloned out (not overwritten by the next frame),
the check against the eager steps and the fall-back when a capture fails or disagrees. The
sampler the graph relies on (uniforms drawn before the steps) is checked on its own."""

from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sesame_server.backends.csm.sampling_params import SamplingParams  # noqa: E402
from sesame_server.backends.csm_torch.depth_graph import DepthGraphs, Replay  # noqa: E402
from sesame_server.backends.csm_torch.frame_loop import TorchFrameLoop  # noqa: E402
from sesame_server.backends.csm_torch.sampling import request_sampling, sample  # noqa: E402
from tests.test_csm_torch_parity import GREEDY, builder, mlx_model, torch_model  # noqa: E402,F401

SENTENCE = "Graphs replay the same steps."


class EagerReplay(Replay):
    """What a CUDA graph does on replay, on a CPU: the same steps, into the captured output."""

    def __init__(self, steps, codes):
        self.steps, self.codes = steps, codes

    def replay(self) -> None:
        self.codes.copy_(self.steps())


def eager_capture(steps, pool):
    codes = steps().clone()
    return EagerReplay(steps, codes), codes


def _codes(model, builder, params_seed, capture=None, overlap=False, frames=8):
    """Codes of `frames` frames; with `capture`, through DepthGraphs using it."""
    loop = TorchFrameLoop(model, valid_ids=64, max_len=256, overlap=overlap, graphs=False)
    if capture is not None:
        loop.graphs = DepthGraphs(loop, capture=capture)
    params, generator = params_seed
    out = [host for _, host, _ in loop.generate(loop.prefill(builder.text(SENTENCE, 0)), params, generator, frames)]
    return np.stack(out), loop


@pytest.mark.parametrize("temperature", [0.0, 1.5])
@pytest.mark.parametrize("overlap", [False, True])
def test_replayed_frames_give_the_eager_codes(torch_model, builder, temperature, overlap):
    """Same seed, same codes, every frame from the graph (the lagged read-back included:
    a frame's codes survive the next frame's replay)."""
    eager, _ = _codes(torch_model, builder, request_sampling(temperature, 11, torch.device("cpu")), overlap=overlap)
    graphed, loop = _codes(torch_model, builder, request_sampling(temperature, 11, torch.device("cpu")),
                           capture=eager_capture, overlap=overlap)
    np.testing.assert_array_equal(graphed, eager)
    assert loop.graphs.replays >= len(graphed)
    assert list(loop.graphs._captured) == [(temperature == 0.0, 50)]  # one graph for the rule


def test_a_capture_that_fails_runs_eagerly(torch_model, builder, caplog):
    def broken(steps, pool):
        raise RuntimeError("operation not permitted when stream is capturing")

    eager, _ = _codes(torch_model, builder, (GREEDY, None))
    with caplog.at_level(logging.WARNING):
        graphed, loop = _codes(torch_model, builder, (GREEDY, None), capture=broken)
    np.testing.assert_array_equal(graphed, eager)
    assert loop.graphs.replays == 0 and "running it eagerly" in caplog.text


def test_a_graph_that_disagrees_is_dropped(torch_model, builder, caplog):
    def wrong(steps, pool):
        codes = steps().clone()

        class Zeros(Replay):
            def replay(self):
                codes.zero_()
        return Zeros(), codes

    eager, _ = _codes(torch_model, builder, (GREEDY, None))
    with caplog.at_level(logging.WARNING):
        graphed, loop = _codes(torch_model, builder, (GREEDY, None), capture=wrong)
    np.testing.assert_array_equal(graphed, eager)
    assert loop.graphs.replays == 0 and "disagrees" in caplog.text


def test_no_graphs_on_a_cpu_by_default(torch_model):
    assert TorchFrameLoop(torch_model, valid_ids=64, max_len=16).graphs is None


def test_the_sampler_picks_by_inverse_cdf():
    """Probabilities 0.5, 0.3, 0.2: a uniform below 0.5 picks the first, below 0.8 the second."""
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3, 1e-9]]))
    params = SamplingParams(temperature=1.0, top_k=3)
    picks = [int(sample(logits, params, 4, torch.tensor(u))) for u in (0.0, 0.49, 0.51, 0.79, 0.81, 0.999999)]
    assert picks == [1, 1, 2, 2, 0, 0]
    many = sample(logits.expand(20000, 4), params, 4, torch.rand(20000, generator=torch.Generator().manual_seed(1)))
    shares = np.bincount(many[:, 0].numpy(), minlength=4) / 20000
    np.testing.assert_allclose(shares, [0.2, 0.5, 0.3, 0.0], atol=0.02)
