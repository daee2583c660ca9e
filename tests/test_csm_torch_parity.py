"""The PyTorch frame loop, checked against transformers' own generate() and against our MLX
loop on the same random weights (issue 14's parity checks 1 and 2), and its own mechanics:
static cache and voice-prefix snapshots, end of speech, cancellation."""

from __future__ import annotations

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sesame_server.backends.csm.loading import load_csm, load_tokenizer  # noqa: E402
from sesame_server.backends.csm.prompt import PromptBuilder, TokenFrames  # noqa: E402
from sesame_server.backends.csm.sampling_params import SamplingParams  # noqa: E402
from sesame_server.backends.csm_torch.convert import halves_to_interleaved, hf_model_from_mlx, hf_to_mlx, \
    interleaved_to_halves, mlx_to_hf  # noqa: E402
from sesame_server.backends.csm_torch.frame_loop import TorchFrameLoop  # noqa: E402
from tests.csm_tiny import tiny_model_dir  # noqa: E402

GREEDY = SamplingParams(0.0, 50)
FRAMES = 20
SENTENCE = "Hello there, how are you doing today?"


@pytest.fixture(scope="module")
def mlx_model():
    return load_csm(tiny_model_dir())


@pytest.fixture(scope="module")
def torch_model(mlx_model):
    model, config = mlx_model
    return hf_model_from_mlx(model, config)


@pytest.fixture(scope="module")
def builder():
    return PromptBuilder(load_tokenizer(tiny_model_dir() / "tokenizer"), 32)


def _torch_codes(model, frames: TokenFrames, valid_ids: int, count: int = FRAMES) -> np.ndarray:
    loop = TorchFrameLoop(model, valid_ids=valid_ids, max_len=256)
    return np.stack([host for _, host, _ in loop.generate(loop.prefill(frames), GREEDY, None, count)])


def test_our_loop_gives_transformers_generate_codes(torch_model, builder):
    """Check 1: greedy, every id allowed (generate() knows no Mimi-bins limit): 20 identical frames."""
    frames = builder.text(SENTENCE, 0)
    ours = _torch_codes(torch_model, frames, valid_ids=torch_model.config.vocab_size)
    ids = torch.as_tensor(frames.tokens[:, -1], dtype=torch.long)[None]
    with torch.inference_mode():
        reference = torch_model.generate(input_ids=ids, max_new_tokens=FRAMES, do_sample=False,
                                         depth_decoder_do_sample=False)
    reference = (reference if isinstance(reference, torch.Tensor) else reference.sequences)[0].numpy()
    assert ours.shape == reference.shape == (FRAMES, 32)
    np.testing.assert_array_equal(ours, reference)


def test_torch_and_mlx_loops_agree_on_the_same_weights(mlx_model, torch_model, builder):
    """Check 2: first-frame backbone logits within 1e-3 (float32), 20 identical greedy frames."""
    import mlx.core as mx

    from sesame_server.backends.csm.frame_loop import FrameLoop

    model, _ = mlx_model
    frames = builder.text(SENTENCE, 1)
    mlx_loop = FrameLoop(model, valid_ids=64, max_len=256)
    mlx_h = mlx_loop.prefill(frames)
    mlx_logits = np.array(model.codebook0_head(mlx_h).astype(mx.float32))
    torch_loop = TorchFrameLoop(torch_model, valid_ids=64, max_len=256)
    with torch.inference_mode():
        torch_logits = torch_model.lm_head(torch_loop.prefill(frames)).numpy()
    np.testing.assert_allclose(torch_logits, mlx_logits, atol=1e-3, rtol=0)
    mlx_codes = np.stack([host for _, host, _ in mlx_loop.generate(mlx_h, GREEDY, mx.random.key(0), FRAMES)])
    np.testing.assert_array_equal(_torch_codes(torch_model, frames, valid_ids=64), mlx_codes)


def test_weights_convert_both_ways_exactly(mlx_model, torch_model):
    from mlx.utils import tree_flatten

    model, _ = mlx_model
    original = {name: torch.from_numpy(np.array(value)) for name, value in tree_flatten(model.parameters())}
    there = mlx_to_hf(original, torch_model.config)
    assert set(there) <= set(torch_model.state_dict())
    back = hf_to_mlx(there, torch_model.config)
    assert set(back) == set(original)
    for name, value in original.items():
        assert torch.equal(back[name], value), name
    weight = torch.arange(4 * 8 * 3.0).reshape(32, 3)
    assert torch.equal(halves_to_interleaved(interleaved_to_halves(weight, 4), 4), weight)
    assert not torch.equal(interleaved_to_halves(weight, 4), weight)


def test_a_voice_prefix_snapshot_replays_exactly(torch_model, builder):
    loop = TorchFrameLoop(torch_model, valid_ids=64, max_len=256)
    voice = builder.segment("A voice prompt.", 0, np.arange(32 * 3).reshape(32, 3) % 64)
    loop.prefill(voice)
    snapshot = loop.cache.snapshot()
    assert snapshot.length == len(voice) == loop.cache.offset
    text = builder.text("Then the reply.", 0)
    first = [h for _, h, _ in loop.generate(loop.prefill(text), GREEDY, None, 4)]
    loop.cache.restore(snapshot)
    assert loop.cache.offset == len(voice)
    again = [h for _, h, _ in loop.generate(loop.prefill(text), GREEDY, None, 4)]
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    # ...and equals a cold prefill of voice + text in one go.
    cold = TorchFrameLoop(torch_model, valid_ids=64, max_len=256)
    whole = [h for _, h, _ in cold.generate(cold.prefill(TokenFrames.concat([voice, text], 33)), GREEDY, None, 4)]
    np.testing.assert_array_equal(np.stack(first), np.stack(whole))


def test_max_frames_leaves_the_last_frame_and_end_frame_to_feed(torch_model, builder):
    loop = TorchFrameLoop(torch_model, valid_ids=64, max_len=256)
    frames = [h for _, h, _ in loop.generate(loop.prefill(builder.text("Four frames.", 0)), GREEDY, None, 4)]
    assert len(frames) == 4 and not loop.state.ended_with_eos
    closing = loop.closing_frames(33)
    np.testing.assert_array_equal(closing.tokens[0, :32], frames[-1])
    assert not closing.tokens[1].any()
    offset = loop.cache.offset
    loop.prefill(closing)
    assert loop.cache.offset == offset + 2


def test_the_lagged_read_back_gives_the_same_codes(torch_model, builder):
    """CUDA's order (frame t+1 queued before frame t is read) changes no code and feeds the
    same frames: the cache ends one frame further on, the closing frames one fewer."""
    text = builder.text(SENTENCE, 0)
    runs = {}
    for overlap in (False, True):
        loop = TorchFrameLoop(torch_model, valid_ids=64, max_len=256, overlap=overlap)
        frames = [h for _, h, _ in loop.generate(loop.prefill(text), GREEDY, None, 6)]
        runs[overlap] = (np.stack(frames), loop.cache.offset, len(loop.closing_frames(33)))
    np.testing.assert_array_equal(runs[True][0], runs[False][0])
    assert runs[True][1] + runs[True][2] == runs[False][1] + runs[False][2]


@pytest.mark.parametrize("overlap", [False, True])
def test_an_all_zero_frame_ends_speech(torch_model, builder, overlap):
    loop = TorchFrameLoop(torch_model, valid_ids=64, max_len=256, overlap=overlap)
    saved = {name: value.clone() for name, value in torch_model.state_dict().items()
             if name in ("lm_head.weight", "depth_decoder.model.norm.weight")}
    try:
        with torch.no_grad():  # flat logits: greedy picks id 0 in every codebook, the end frame
            torch_model.lm_head.weight.zero_()
            torch_model.depth_decoder.model.norm.weight.zero_()
        last_h = loop.prefill(builder.text("Stop.", 0))
        start = loop.cache.offset
        frames = list(loop.generate(last_h, GREEDY, None, 5))
        assert frames == [] and loop.state.ended_with_eos
        # Overlapped, the queued next frame already fed the end frame to the backbone.
        assert len(loop.closing_frames(33)) == (0 if overlap else 1)
        assert loop.cache.offset == start + (1 if overlap else 0)
    finally:
        torch_model.load_state_dict(saved, strict=False)


def test_cancel_is_checked_every_frame(torch_model, builder):
    loop = TorchFrameLoop(torch_model, valid_ids=64, max_len=256)
    cancel = threading.Event()
    seen = 0
    for _ in loop.generate(loop.prefill(builder.text("Cut me off.", 0)), GREEDY, None, 50, cancel):
        seen += 1
        if seen == 3:
            cancel.set()
    assert seen == 3 and loop.state.cancelled


def test_sampling_is_seeded_and_stays_within_the_bins(torch_model, builder):
    from sesame_server.backends.csm_torch.sampling import request_sampling

    def run(seed):
        loop = TorchFrameLoop(torch_model, valid_ids=64, max_len=256)
        params, generator = request_sampling(1.5, seed, torch.device("cpu"))
        last_h = loop.prefill(builder.text("Seeds.", 0))
        return np.stack([h for _, h, _ in loop.generate(last_h, params, generator, 6)])

    first, again, other = run(7), run(7), run(8)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.max() < 64
