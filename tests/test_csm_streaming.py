"""Streaming on the tiny CSM: first audio after one frame, then frame by frame; cancellation."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.csm_tiny import BACKENDS, SAMPLES_PER_FRAME, codes, collect, loaded_backend, make_request, speak

FRAMES = 8


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request, tmp_path_factory):
    yield from loaded_backend(tmp_path_factory, FRAMES, warmup=True, name=request.param)


def test_first_block_after_one_frame_then_frame_by_frame(backend):
    before = backend.counters.frames_generated
    stream = backend.stream(make_request("Stream me, please."), threading.Event())
    first = next(stream)
    assert first.pcm.dtype == np.float32 and first.pcm.ndim == 1
    assert len(first.pcm) == SAMPLES_PER_FRAME
    assert backend.counters.frames_generated == before + 1
    assert first.prefill_tokens > 0 and first.context_turns == 0  # the first block says what conditioned it
    second = next(stream)
    assert len(second.pcm) == SAMPLES_PER_FRAME and backend.counters.frames_generated == before + 2
    rest = []
    while True:
        try:
            rest.append(next(stream).pcm)
        except StopIteration as stop:
            generation = stop.value
            break
    assert [len(b) for b in rest] == [SAMPLES_PER_FRAME] * (FRAMES - 2)
    audio = np.concatenate([first.pcm, second.pcm, *rest])
    assert np.isfinite(audio).all() and np.sqrt(np.mean(audio ** 2)) > 1e-3  # noise, not silence
    assert generation.frames == FRAMES and generation.prefill_tokens == first.prefill_tokens
    assert 0 < generation.timings["first_audio"] <= generation.timings["total"]


def test_first_chunk_frames_buffers_the_start_only(backend):
    blocks = collect(backend, make_request("Buffer three frames.", first_chunk_frames=3))
    assert [len(b) for b in blocks] == [3 * SAMPLES_PER_FRAME] + [SAMPLES_PER_FRAME] * (FRAMES - 3)


def test_cancel_stops_within_one_frame(backend):
    before = backend.counters.frames_generated
    blocks, generation = speak(backend, make_request("Cancel me halfway through."), cancel_after=2)
    assert len(blocks) <= 3  # at most one block after the cancel
    assert backend.counters.frames_generated - before <= 3
    assert generation.frames <= 3 and codes(generation).shape[1] == generation.frames  # what was spoken
    assert "total" not in generation.timings


def test_cancel_before_the_first_frame_yields_nothing(backend):
    cancel = threading.Event()
    cancel.set()
    blocks, generation = speak(backend, make_request("Never mind."), cancel)
    assert blocks == [] and generation.frames == 0


def test_request_after_a_cancelled_stream_is_unaffected(backend):
    request = make_request("The same words, the same seed.", seed=11)
    blocks, generation = speak(backend, request)
    reference, reference_codes = np.concatenate(blocks), codes(generation)

    cancel = threading.Event()
    streamed = backend.stream(make_request("Something else entirely, cut short.", voice="conversational_a"), cancel)
    next(streamed), next(streamed), next(streamed)
    cancel.set()
    list(streamed)

    blocks, generation = speak(backend, request)
    np.testing.assert_array_equal(codes(generation), reference_codes)
    np.testing.assert_array_equal(np.concatenate(blocks), reference)  # Mimi's streaming state was reset too


def test_sentences_continue_one_context(backend):
    request = make_request("First sentence here. And a second one.", seed=2)
    assert len(request.sentences) == 2
    prefilled = backend.counters.prefill_tokens_total
    blocks, generation = speak(backend, request)
    assert len(blocks) == 2 * FRAMES
    assert codes(generation).shape == (32, 2 * FRAMES)
    assert [text for text, _ in generation.segments] == list(request.sentences)
    # Sentence two prefilled only its own text plus the frames closing sentence one
    # (the last generated frame and the end frame): no cold restart.
    assert backend.counters.prefill_tokens_total - prefilled == generation.text_tokens + 2
