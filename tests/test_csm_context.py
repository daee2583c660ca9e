"""Conversation memory inside the csm backend: continuing the cached KV state of the last turn."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from sesame_server.engine.request import ContextTurn
from tests.csm_tiny import collect, make_request, loaded_backend

FRAMES = 8


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    yield from loaded_backend(tmp_path_factory, FRAMES)


def as_context(request_id: str, segments) -> tuple[ContextTurn, ...]:
    """What the context cache hands back for a remembered turn: one segment per sentence."""
    return tuple(ContextTurn(text=text, speaker=0, codes=codes, turn_id=request_id) for text, codes in segments)


@pytest.mark.parametrize("first_turn", ["Hello there.", "Hello there. How are you today?"])
def test_next_turn_continues_the_cache_and_matches_a_full_prefill(backend, first_turn):
    turn1 = make_request(first_turn, temperature=0.0, request_id="turn-1")
    collect(backend, turn1)
    segments = backend.last_segments
    assert [text for text, _ in segments] == list(turn1.sentences)
    context = as_context("turn-1", segments)
    turn2 = make_request("And what happened next?", temperature=0.0, request_id="turn-2", context=context)

    hits = backend.context_kv_hits
    collect(backend, turn2)
    assert backend.context_kv_hits == hits + 1
    assert backend.last_context_turns == 1
    continued, continued_prefill = backend.last_codes.copy(), backend.last_prefill_tokens
    # Only the new text, plus at most turn 1's last frame and end frame not yet fed.
    assert backend.last_request_text_tokens <= continued_prefill <= backend.last_request_text_tokens + 2

    collect(backend, make_request("Something else entirely.", request_id="other"))  # the cache moves on
    collect(backend, turn2)  # same request, now a full prefill of its context
    assert backend.context_kv_hits == hits + 1
    full_prefill = backend.last_prefill_tokens
    assert full_prefill > continued_prefill + sum(codes.shape[1] for _, codes in segments)
    np.testing.assert_array_equal(backend.last_codes, continued)


def test_a_turn_in_another_voice_or_context_is_not_continued(backend):
    collect(backend, make_request("First.", temperature=0.0, request_id="a1"))
    context = as_context("a1", backend.last_segments)
    hits = backend.context_kv_hits
    collect(backend, make_request("Second.", voice="conversational_a", context=context, request_id="a2"))
    assert backend.context_kv_hits == hits  # a different voice: the cache holds the wrong prompt

    collect(backend, make_request("Third.", temperature=0.0, request_id="b1"))
    wrong = (ContextTurn(text="not what was said", codes=backend.last_codes, turn_id="zzz"),)
    collect(backend, make_request("Fourth.", context=wrong, request_id="b2"))
    assert backend.context_kv_hits == hits


def test_a_long_conversation_keeps_continuing_until_the_window_fills(backend):
    """Each turn continues the last; the session's oldest turns may drop out of its context."""
    collect(backend, make_request("Turn zero.", request_id="t0"))
    remembered = [("t0", backend.last_segments)]
    hits = backend.context_kv_hits
    for n in range(1, 6):
        context = tuple(c for rid, seg in remembered[-3:] for c in as_context(rid, seg))  # keeps 3 turns
        collect(backend, make_request(f"Turn number {n}.", request_id=f"t{n}", context=context))
        remembered.append((f"t{n}", backend.last_segments))
    assert backend.context_kv_hits == hits + 5
    assert backend.last_context_turns == 5  # the cache still holds every earlier turn


def test_cancelled_turn_keeps_the_audio_generated_and_is_not_continued(backend):
    cancel = threading.Event()
    blocks = []
    for block in backend.stream(make_request("A sentence that gets cut off. And another.", request_id="c1"), cancel):
        blocks.append(block)
        if len(blocks) == 3:
            cancel.set()
    segments = backend.last_segments
    assert len(segments) == 1 and 3 <= segments[0][1].shape[1] < FRAMES
    hits = backend.context_kv_hits
    collect(backend, make_request("After the cut.", context=as_context("c1", segments), request_id="c2"))
    assert backend.context_kv_hits == hits  # a cut-off generation leaves no reusable state
    assert backend.last_context_turns == 1


def test_a_full_window_falls_back_to_re_laying_the_remembered_turns(tmp_path):
    from sesame_server.backends.csm import CsmBackend
    from sesame_server.backends.csm.frame_loop import FrameLoop
    from tests.csm_tiny import tiny_settings

    backend = CsmBackend(tiny_settings(tmp_path), max_frames_per_sentence=40)
    backend.load()
    backend._loop = FrameLoop(backend.model, valid_ids=backend.valid_ids, max_len=400)  # a small window
    remembered = []
    for n in range(8):  # each turn adds ~57 positions: the window fills at the 7th
        context = tuple(c for rid, seg in remembered for c in as_context(rid, seg))
        collect(backend, make_request(f"Turn number {n}.", request_id=f"w{n}", context=context))
        remembered.append((f"w{n}", backend.last_segments))
        assert backend.frames_generated == 40  # every turn spoke in full
    assert backend.context_kv_hits >= 1 and backend.context_kv_misses >= 1  # continued, then re-laid
    assert 1 <= backend.last_context_turns < 7  # the newest turns that fit half the window
    backend.unload()
