"""Conversation memory inside the csm backend: continuing the cached KV state of the last turn.

The window policy itself (suffixes, room, re-lay) is tested on lengths and keys in
test_csm_window.py; here it runs through the real frame loop.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from sesame_server.engine.request import ContextTurn
from tests.csm_tiny import BACKENDS, codes, loaded_backend, make_request, speak

FRAMES = 8
SMALL_WINDOW = 120  # positions: the tiny voice prompt (~32) and four short turns (~18 each)


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request, tmp_path_factory):
    yield from loaded_backend(tmp_path_factory, FRAMES, name=request.param)


def as_context(request_id: str, segments) -> tuple[ContextTurn, ...]:
    """What the context cache hands back for a remembered turn: one segment per sentence."""
    return tuple(ContextTurn(text=text, speaker=0, codes=codes, turn_id=request_id) for text, codes in segments)


@pytest.mark.parametrize("first_turn", ["Hello there.", "Hello there. How are you today?"])
def test_next_turn_continues_the_cache_and_matches_a_full_prefill(backend, first_turn):
    turn1 = make_request(first_turn, temperature=0.0, request_id="turn-1")
    _, first = speak(backend, turn1)
    assert [text for text, _ in first.segments] == list(turn1.sentences)
    context = as_context("turn-1", first.segments)
    turn2 = make_request("And what happened next?", temperature=0.0, request_id="turn-2", context=context)

    hits = backend.counters.context_kv_hits
    blocks, continued = speak(backend, turn2)
    assert backend.counters.context_kv_hits == hits + 1
    assert continued.context_turns == 1
    # Only the new text, plus at most turn 1's last frame and end frame not yet fed.
    assert continued.text_tokens <= continued.prefill_tokens <= continued.text_tokens + 2
    assert continued.frames == FRAMES and len(blocks) == FRAMES

    speak(backend, make_request("Something else entirely.", request_id="other"))  # the cache moves on
    _, full = speak(backend, turn2)  # same request, now a full prefill of its context
    assert backend.counters.context_kv_hits == hits + 1
    assert full.prefill_tokens > continued.prefill_tokens + sum(c.shape[1] for _, c in first.segments)
    np.testing.assert_array_equal(codes(full), codes(continued))


def test_a_turn_in_another_voice_or_context_is_not_continued(backend):
    _, first = speak(backend, make_request("First.", temperature=0.0, request_id="a1"))
    context = as_context("a1", first.segments)
    hits = backend.counters.context_kv_hits
    speak(backend, make_request("Second.", voice="conversational_a", context=context, request_id="a2"))
    assert backend.counters.context_kv_hits == hits  # a different voice: the cache holds the wrong prompt

    _, third = speak(backend, make_request("Third.", temperature=0.0, request_id="b1"))
    wrong = (ContextTurn(text="not what was said", codes=codes(third), turn_id="zzz"),)
    speak(backend, make_request("Fourth.", context=wrong, request_id="b2"))
    assert backend.counters.context_kv_hits == hits


def test_a_long_conversation_keeps_continuing_until_the_window_fills(backend):
    """Each turn continues the last; the session's oldest turns may drop out of its context."""
    _, generation = speak(backend, make_request("Turn zero.", request_id="t0"))
    remembered = [("t0", generation.segments)]
    hits = backend.counters.context_kv_hits
    for n in range(1, 6):
        context = tuple(c for rid, seg in remembered[-3:] for c in as_context(rid, seg))  # keeps 3 turns
        _, generation = speak(backend, make_request(f"Turn number {n}.", request_id=f"t{n}", context=context))
        remembered.append((f"t{n}", generation.segments))
    assert backend.counters.context_kv_hits == hits + 5
    assert generation.context_turns == 5  # the cache still holds every earlier turn


def test_cancelled_turn_keeps_the_audio_generated_and_is_not_continued(backend):
    _, cut = speak(backend, make_request("A sentence that gets cut off. And another.", request_id="c1"),
                   cancel_after=3)
    assert len(cut.segments) == 1 and 3 <= cut.segments[0][1].shape[1] < FRAMES
    assert cut.segments[0][0] == "A sentence that gets cut off." and cut.frames == cut.segments[0][1].shape[1]
    hits = backend.counters.context_kv_hits
    _, after = speak(backend, make_request("After the cut.", context=as_context("c1", cut.segments), request_id="c2"))
    assert backend.counters.context_kv_hits == hits  # a cut-off generation leaves no reusable state
    assert after.context_turns == 1


def test_first_block_says_what_conditioned_the_request(backend):
    _, first = speak(backend, make_request("Hello again.", request_id="h1"))
    request = make_request("Tell me more.", request_id="h2", context=as_context("h1", first.segments))
    stream = backend.stream(request, threading.Event())
    head = next(stream)
    rest = list(stream)
    assert head.context_turns == 1 and head.prefill_tokens is not None
    assert all(block.prefill_tokens is None and block.context_turns is None for block in rest)


def test_a_full_window_falls_back_to_re_laying_the_remembered_turns(tmp_path):
    """End to end: turns continue while they fit, then a re-lay through the real loop."""
    from sesame_server.backends.csm import CsmBackend
    from tests.csm_tiny import tiny_settings

    frames = 6
    backend = CsmBackend(tiny_settings(tmp_path), max_frames_per_sentence=frames, max_len=SMALL_WINDOW)
    remembered = []
    for n in range(5):  # turns 1-3 continue the cache; turn 4 finds it full
        context = tuple(c for rid, seg in remembered for c in as_context(rid, seg))
        _, generation = speak(backend, make_request(f"Turn {n}.", request_id=f"w{n}", context=context))
        remembered.append((f"w{n}", generation.segments))
        assert generation.frames == frames  # every turn spoke in full
    counters = backend.counters
    assert counters.context_kv_hits >= 1 and counters.context_kv_misses >= 1  # continued, then not
    assert counters.window_relays >= 1  # the remembered turns were re-laid after the voice prefix
    assert 1 <= generation.context_turns < 4  # the newest turns that fit half the window
    backend.unload()

