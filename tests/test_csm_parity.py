"""Our frame loop against mlx-audio's reference loop on the same tiny weights and prompt."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from sesame_server.backends.csm.frame_loop import FrameLoop
from sesame_server.backends.csm.sampling import SamplingParams
from tests.csm_tiny import codes, loaded_backend, make_request, speak

FRAMES = 12


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    yield from loaded_backend(tmp_path_factory, FRAMES)


@pytest.mark.parametrize("voice", ["conversational_a", "conversational_b"])
def test_greedy_codes_match_mlx_audio_reference_with_voice_cache_on(backend, voice):
    request = make_request("Hello there, friend.", voice=voice, temperature=0.0)
    speak(backend, request)  # cold: prefills and caches the voice
    _, warm = speak(backend, request)  # warm: starts from the cached voice prefix
    assert warm.prefill_tokens == warm.text_tokens
    expected = backend.runtime.reference_codes(voice, "Hello there, friend.", FRAMES, SamplingParams(0.0, 50))
    assert expected.shape == (32, FRAMES)
    np.testing.assert_array_equal(codes(warm), expected)


def test_greedy_is_deterministic_and_sampling_is_seeded(backend):
    greedy = make_request("Seeds and more seeds.", temperature=0.0)
    _, first = speak(backend, greedy)
    _, again = speak(backend, greedy)
    np.testing.assert_array_equal(codes(again), codes(first))

    sampled = make_request("Seeds and more seeds.", seed=7)
    blocks_a, a = speak(backend, sampled)
    blocks_b, b = speak(backend, sampled)
    np.testing.assert_array_equal(codes(b), codes(a))
    np.testing.assert_array_equal(np.concatenate(blocks_a), np.concatenate(blocks_b))
    _, other = speak(backend, make_request("Seeds and more seeds.", seed=8))
    assert not np.array_equal(codes(other), codes(a))


def test_codes_stay_within_mimi_bins(backend):
    _, generation = speak(backend, make_request("Any id past the bins would break Mimi.", seed=3, temperature=1.5))
    runtime = backend.runtime
    assert codes(generation).max() < runtime.loop.valid_ids < runtime.model.args.audio_vocab_size
    # Sampling over every id (no top-k), hot: still never an id past Mimi's bins.
    loop = FrameLoop(runtime.model, valid_ids=runtime.loop.valid_ids, max_len=128)
    last_h = loop.prefill(runtime.builder.text("Hot and wide.", 0))
    frames = [host for _, host, _ in loop.generate(last_h, SamplingParams(3.0, 0), mx.random.key(3), 8)]
    assert frames and max(int(f.max()) for f in frames) < runtime.loop.valid_ids
