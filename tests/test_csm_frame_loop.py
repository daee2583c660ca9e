"""The frame loop itself: both dispatch orders agree; end-of-speech and window bookkeeping."""

from __future__ import annotations

import threading

import mlx.core as mx
import numpy as np
import pytest

from sesame_server.backends.csm.frame_loop import FrameLoop
from sesame_server.backends.csm.loading import load_csm, load_tokenizer
from sesame_server.backends.csm.prompt import PromptBuilder
from sesame_server.backends.csm.sampling import SamplingParams
from tests.csm_tiny import tiny_model_dir

GREEDY = SamplingParams(0.0, 50)


@pytest.fixture(scope="module")
def model():
    return load_csm(tiny_model_dir())[0]


@pytest.fixture(scope="module")
def builder():
    return PromptBuilder(load_tokenizer(tiny_model_dir() / "tokenizer"), 32)


def _run(loop, builder, frames=6, cancel=None):
    loop.cache.reset()
    last_h = loop.prefill(builder.text("Hello frame loop.", 0))
    return [host for _, host, _ in loop.generate(last_h, GREEDY, mx.random.key(0), frames, cancel)]


def test_overlapped_and_synchronous_dispatch_give_the_same_codes(model, builder):
    sync = _run(FrameLoop(model, 64, overlap=False), builder)
    overlapped = _run(FrameLoop(model, 64, overlap=True), builder)
    eager = _run(FrameLoop(model, 64, overlap=False, compiled=False), builder)
    np.testing.assert_array_equal(np.stack(sync), np.stack(overlapped))
    np.testing.assert_array_equal(np.stack(sync), np.stack(eager))


@pytest.mark.parametrize("overlap", [False, True])
def test_max_frames_leaves_the_last_frame_and_end_frame_to_feed(model, builder, overlap):
    loop = FrameLoop(model, 64, overlap=overlap)
    frames = _run(loop, builder, frames=4)
    assert len(frames) == 4 and not loop.state.ended_with_eos
    closing = loop.closing_frames(33)
    np.testing.assert_array_equal(closing.tokens[0, :32], frames[-1])
    assert not closing.tokens[1].any() and closing.mask[:, :32].all() and not closing.mask[:, 32].any()
    offset = loop.cache.offset
    loop.prefill(closing)
    assert loop.cache.offset == offset + 2


@pytest.mark.parametrize("overlap", [False, True])
def test_all_zero_frame_ends_speech(model, builder, overlap):
    from mlx.utils import tree_flatten, tree_unflatten

    loop = FrameLoop(model, 64, overlap=overlap)
    saved = dict(tree_flatten(model.parameters()))
    try:
        # Flat logits everywhere: greedy picks id 0 in every codebook, i.e. end of speech.
        model.codebook0_head.weight = mx.zeros_like(model.codebook0_head.weight)
        model.decoder.norm.weight = mx.zeros_like(model.decoder.norm.weight)
        loop.cache.reset()
        last_h = loop.prefill(builder.text("Stop.", 0))
        start = loop.cache.offset
        frames = list(loop.generate(last_h, GREEDY, mx.random.key(0), 5))
        assert frames == [] and loop.state.ended_with_eos
        # Overlapped: the queued next frame already fed the end frame to the backbone.
        assert len(loop.closing_frames(33)) == (0 if overlap else 1)
        assert loop.cache.offset == start + (1 if overlap else 0)
    finally:
        model.update(tree_unflatten(list(saved.items())))


def test_cancel_is_checked_every_frame(model, builder):
    loop = FrameLoop(model, 64)
    cancel = threading.Event()
    loop.cache.reset()
    last_h = loop.prefill(builder.text("Cancel.", 0))
    seen = 0
    for _ in loop.generate(last_h, GREEDY, mx.random.key(0), 50, cancel):
        seen += 1
        if seen == 2:
            cancel.set()
    assert seen == 2 and loop.state.cancelled
