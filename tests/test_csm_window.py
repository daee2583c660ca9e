"""The conversation window policy on lengths and keys alone (no MLX, no tokenizer)."""

from __future__ import annotations

import numpy as np
import pytest

from sesame_server.backends.base import BackendError
from sesame_server.backends.csm.window import (
    Continuation, Tail, continuation, count_turns, fits, frame_budget, relay, segment_key,
)

WINDOW = 2048


def turn(turn_id: str, *sentences: str) -> list:
    """The segment keys of a generated turn: one per sentence, each with its own codes."""
    return [segment_key(turn_id, text, 0, np.full((32, 4), n)) for n, text in enumerate(sentences)]


T1 = turn("t1", "Hello there.", "How are you?")
T2 = turn("t2", "Fine, thanks.")
T3 = turn("t3", "Good to hear.")


def tail(keys=(*T1, *T2, *T3), voice_id="v", user=1, offset=600, closing=2) -> Tail:
    return Tail(voice_id, tuple(keys), user, offset, range(closing))


def check(t: Tail | None, keys, *, voice_id="v", user=2, offset=600, first_text=10, max_frames=100,
          window=WINDOW) -> Continuation:
    return continuation(t, voice_id=voice_id, keys=list(keys), user=user, offset=offset, window=window,
                        first_text=first_text, max_frames=max_frames)


# -- continuing the cached conversation -------------------------------------------------------


@pytest.mark.parametrize("keys", [[*T1, *T2, *T3], [*T2, *T3], T3])
def test_continues_when_the_context_is_a_suffix_of_the_cache(keys):
    """The session may have dropped its oldest turns: they stay in the cache until it fills."""
    assert check(tail(), keys) is Continuation.CONTINUE


def test_nothing_to_continue_without_context_or_a_tail():
    assert check(None, T3) is Continuation.NONE
    assert check(tail(), []) is Continuation.NONE


@pytest.mark.parametrize("change", [
    {"voice_id": "other"},  # the cache holds another voice's prompt
    {"user": 3},  # something used the cache since (another stream, the bench's loop)
    {"offset": 601},  # the cache length moved: its contents are not what the tail says
])
def test_other_voice_stream_or_offset_is_not_continued(change):
    assert check(tail(), T3, **change) is Continuation.NONE


@pytest.mark.parametrize("keys", [
    [*T1, *T2],  # not the newest turns: T3 follows them in the cache
    [segment_key("t3", "Good to hear.", 0, np.full((32, 4), 9))],  # same words, other audio
    [segment_key("t3", "Good to hear.", 1, np.full((32, 4), 0))],  # same words, other speaker
    [*turn("t0", "Before."), *T1, *T2, *T3],  # longer than what the cache holds
])
def test_a_context_that_is_not_a_suffix_misses(keys):
    assert check(tail(), keys) is Continuation.MISS


def test_not_enough_room_for_the_first_sentence_misses():
    # offset 600 + closing 2 + text 10 + frames + end frame
    assert check(tail(), T3, max_frames=WINDOW - 613) is Continuation.CONTINUE
    assert check(tail(), T3, max_frames=WINDOW - 612) is Continuation.MISS


def test_fits_counts_the_end_frame():
    assert fits(100, 10, 37, 148)
    assert not fits(100, 10, 38, 148)


def test_frame_budget_is_fixed_or_grows_with_the_text_up_to_90_seconds():
    assert frame_budget(10, fixed=3) == 3 and frame_budget(10, fixed=0) == 1
    assert frame_budget(1) == 37 and frame_budget(10) == 145
    assert frame_budget(10_000) == 1125  # 90 s of 80 ms frames


# -- re-laying a full window ----------------------------------------------------------------


def test_relay_drops_the_oldest_segments_first():
    plan = relay([300, 200, 100], voice_tokens=100, text_tokens=20, max_frames=200, window=800)
    # 600 of context + 100 + 20 + 200 + 1 > 800: drop 300, then 300 <= half the window
    assert plan.dropped == 1 and plan.max_frames == 200


def test_relay_keeps_at_most_half_the_window_of_context():
    """Otherwise a re-lay would buy room for one sentence and recur at every next one."""
    plan = relay([100] * 12, voice_tokens=50, text_tokens=10, max_frames=20, window=WINDOW)
    assert 12 - plan.dropped == 10  # 1000 <= 1024 < 1100


def test_relay_may_drop_every_segment_but_never_the_voice():
    plan = relay([500, 500], voice_tokens=900, text_tokens=20, max_frames=100, window=1024)
    assert plan.dropped == 2 and plan.max_frames == 100


def test_relay_shortens_the_sentence_when_only_the_voice_and_text_fit():
    plan = relay([50], voice_tokens=900, text_tokens=20, max_frames=500, window=1024)
    assert plan.dropped == 1 and plan.max_frames == 1024 - 900 - 20 - 1


def test_relay_fails_when_the_sentence_cannot_fit_next_to_the_voice():
    with pytest.raises(BackendError, match="window"):
        relay([10], voice_tokens=1000, text_tokens=24, max_frames=50, window=1024)


def test_relay_with_no_context_keeps_nothing_to_drop():
    plan = relay([], voice_tokens=100, text_tokens=10, max_frames=50, window=1024)
    assert plan.dropped == 0 and plan.max_frames == 50


# -- counting turns ---------------------------------------------------------------------------


def test_a_multi_sentence_turn_counts_once():
    assert count_turns(T1) == 1
    assert count_turns([*T1, *T2, *T3]) == 3


def test_text_only_segments_count_one_each():
    previous = segment_key(None, "Earlier words.", 0)
    user_side = segment_key(None, "What did you say?", 1)
    assert count_turns([user_side, *T2, previous]) == 3


def test_the_request_s_own_sentences_can_be_left_out():
    own = turn("me", "First.", "Second.")
    assert count_turns([*T2, *own], excluding="me") == 1
    assert count_turns([], excluding="me") == 0
