"""Streaming on the tiny CSM: first audio after one frame, then frame by frame; cancellation."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.csm_tiny import SAMPLES_PER_FRAME, collect, make_request, loaded_backend

FRAMES = 8


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    yield from loaded_backend(tmp_path_factory, FRAMES, warmup=True)


def test_first_block_after_one_frame_then_frame_by_frame(backend):
    blocks = backend.stream(make_request("Stream me, please."), threading.Event())
    first = next(blocks)
    assert first.dtype == np.float32 and first.ndim == 1
    assert len(first) == SAMPLES_PER_FRAME
    assert backend.frames_generated == 1
    second = next(blocks)
    assert len(second) == SAMPLES_PER_FRAME and backend.frames_generated == 2
    rest = list(blocks)
    assert [len(b) for b in rest] == [SAMPLES_PER_FRAME] * (FRAMES - 2)
    audio = np.concatenate([first, second, *rest])
    assert np.isfinite(audio).all() and np.sqrt(np.mean(audio ** 2)) > 1e-3  # noise, not silence
    assert backend.last_timings["first_audio"] > 0


def test_first_chunk_frames_buffers_the_start_only(backend):
    blocks = collect(backend, make_request("Buffer three frames.", first_chunk_frames=3))
    assert [len(b) for b in blocks] == [3 * SAMPLES_PER_FRAME] + [SAMPLES_PER_FRAME] * (FRAMES - 3)


def test_cancel_stops_within_one_frame(backend):
    cancel = threading.Event()
    blocks = backend.stream(make_request("Cancel me halfway through."), cancel)
    next(blocks), next(blocks)
    cancel.set()
    remaining = list(blocks)
    assert len(remaining) <= 1
    assert backend.frames_generated <= 3


def test_cancel_before_the_first_frame_yields_nothing(backend):
    cancel = threading.Event()
    cancel.set()
    assert collect(backend, make_request("Never mind."), cancel) == []


def test_request_after_a_cancelled_stream_is_unaffected(backend):
    request = make_request("The same words, the same seed.", seed=11)
    reference = np.concatenate(collect(backend, request))
    reference_codes = backend.last_codes.copy()

    cancel = threading.Event()
    streamed = backend.stream(make_request("Something else entirely, cut short.", voice="conversational_a"), cancel)
    next(streamed), next(streamed), next(streamed)
    cancel.set()
    list(streamed)

    again = np.concatenate(collect(backend, request))
    np.testing.assert_array_equal(backend.last_codes, reference_codes)
    np.testing.assert_array_equal(again, reference)  # Mimi's streaming state was reset too


def test_sentences_continue_one_context(backend):
    request = make_request("First sentence here. And a second one.", seed=2)
    assert len(request.sentences) == 2
    blocks = collect(backend, request)
    assert len(blocks) == 2 * FRAMES
    assert backend.last_codes.shape == (32, 2 * FRAMES)
    # Sentence two prefilled only its own text plus the frames closing sentence one
    # (the last generated frame and the end frame): no cold restart.
    assert backend.last_prefill_tokens == backend.last_request_text_tokens + 2
