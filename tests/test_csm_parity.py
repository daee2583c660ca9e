"""Our frame loop against mlx-audio's reference loop on the same tiny weights and prompt."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from sesame_server.backends.csm.reference import reference_frames
from sesame_server.backends.csm.sampling import SamplingParams, reference_sampler
from tests.csm_tiny import collect, make_request, loaded_backend

FRAMES = 12


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    yield from loaded_backend(tmp_path_factory, FRAMES)


def _reference(backend, voice: str, sentence: str) -> np.ndarray:
    prompt = backend.reference_prompt(voice, sentence)
    sampler = reference_sampler(SamplingParams(0.0, 50), backend.valid_ids, mx.random.key(0))
    return reference_frames(backend.model, prompt, sampler, FRAMES)


@pytest.mark.parametrize("voice", ["conversational_a", "conversational_b"])
def test_greedy_codes_match_mlx_audio_reference_with_voice_cache_on(backend, voice):
    request = make_request("Hello there, friend.", voice=voice, temperature=0.0)
    collect(backend, request)  # cold: prefills and caches the voice
    collect(backend, request)  # warm: starts from the cached voice prefix
    assert backend.last_prefill_tokens == backend.last_request_text_tokens
    expected = _reference(backend, voice, "Hello there, friend.")
    assert expected.shape == (32, FRAMES)
    np.testing.assert_array_equal(backend.last_codes, expected)


def test_greedy_is_deterministic_and_sampling_is_seeded(backend):
    greedy = make_request("Seeds and more seeds.", temperature=0.0)
    collect(backend, greedy)
    first = backend.last_codes.copy()
    collect(backend, greedy)
    np.testing.assert_array_equal(backend.last_codes, first)

    sampled = make_request("Seeds and more seeds.", seed=7)
    audio_a = np.concatenate(collect(backend, sampled))
    codes_a = backend.last_codes.copy()
    audio_b = np.concatenate(collect(backend, sampled))
    np.testing.assert_array_equal(backend.last_codes, codes_a)
    np.testing.assert_array_equal(audio_a, audio_b)
    collect(backend, make_request("Seeds and more seeds.", seed=8))
    assert not np.array_equal(backend.last_codes, codes_a)


def test_codes_stay_within_mimi_bins(backend):
    collect(backend, make_request("Any id past the bins would break Mimi.", seed=3, temperature=1.5, top_k=0))
    assert backend.last_codes.max() < backend.valid_ids
    assert backend.valid_ids < backend.model.args.audio_vocab_size
