"""When streamed text becomes a piece to speak (realtime/text_buffer.py): pure, fast."""

from __future__ import annotations

import pytest

from sesame_server.realtime.text_buffer import TextBuffer

REPLY = "Sure, I can help with that. The weather today is clear and bright. Anything else?"


def feed(buffer: TextBuffer, tokens: list[str]) -> list[tuple[int, str]]:
    """(index of the token that released it, piece)."""
    return [(index, piece) for index, token in enumerate(tokens) for piece in buffer.add(token)]


def llm_tokens(text: str) -> list[str]:
    words = text.split(" ")
    return [words[0]] + [" " + word for word in words[1:]]  # how LLMs stream: the space leads


@pytest.mark.parametrize("auto_mode", [True, False])
def test_a_sentence_is_released_once_the_next_word_starts(auto_mode):
    """Without auto mode a sentence is complete when the next word starts; with it (the
    client sends whole sentences), when a message ends one."""
    buffer = TextBuffer(auto_mode=auto_mode)
    tokens = llm_tokens(REPLY)
    released = feed(buffer, tokens)
    first, second = (" that.", " bright.") if auto_mode else (" The", " Anything")
    assert released[:2] == [(tokens.index(first), "Sure, I can help with that."),
                            (tokens.index(second), "The weather today is clear and bright.")]
    if auto_mode:
        assert released[2:] == [(len(tokens) - 1, "Anything else?")]
    else:
        assert buffer.flush() == ["Anything else?"]
    assert buffer.flush() == []


def test_schedule_cuts_long_unpunctuated_text_at_a_word_boundary():
    buffer = TextBuffer((50, 60))
    text = "this reply has no punctuation at all and goes on and on for quite a while longer than fifty"
    pieces = [piece for _, piece in feed(buffer, list(text))]  # one character at a time
    assert pieces and all(len(p) <= 50 for p in pieces[:1])
    joined = " ".join(pieces + buffer.flush()).split()
    assert joined == text.split()  # nothing lost, no word split


def test_auto_mode_ignores_the_schedule_but_never_waits_forever():
    buffer = TextBuffer((50,), auto_mode=True)
    assert buffer.add("word " * 20) == []
    pieces = buffer.add("word " * 100)
    assert pieces and all(len(piece) <= 400 for piece in pieces)


def test_clause_breaks_are_preferred_cuts():
    buffer = TextBuffer((50,))
    pieces = buffer.add("When the weather is fine and the sky is blue, we walk along the river ")
    assert pieces == ["When the weather is fine and the sky is blue,"]


def test_abbreviations_do_not_end_a_sentence_and_trigger_keeps_the_word_being_typed():
    buffer = TextBuffer(auto_mode=True)
    assert buffer.add("Ask Dr. Smith about it ") == []
    assert buffer.add("tomor") == []
    assert buffer.trigger() == ["Ask Dr. Smith about it"]
    assert buffer.pending == "tomor"
    assert buffer.add("row. Then") == ["tomorrow."]


def test_auto_mode_takes_a_message_that_ends_a_sentence_as_complete():
    """Pipecat (auto_mode) sends each sentence as one message, with no space after it."""
    buffer = TextBuffer(auto_mode=True)
    assert buffer.add("Hello there, my friend.") == ["Hello there, my friend."]
    assert buffer.add("How are you doing today?") == ["How are you doing today?"]
    assert buffer.add("Dr.") == []  # an abbreviation ends no sentence
    assert buffer.add(" Smith will see you.") == ["Dr. Smith will see you."]


def test_a_capital_after_a_sentence_end_starts_a_new_word():
    buffer = TextBuffer()
    assert buffer.add("It costs 3") == [] and buffer.add(".") == [] and buffer.add("14 dollars") == []
    assert buffer.add(".") == [] and buffer.add("Really") == ["It costs 3.14 dollars."]
    assert buffer.flush() == ["Really"]


# -- bounded pieces and bounded work (issue #22) ------------------------------------------------
SENTENCE = "the quick brown fox jumps over the lazy dog again. "  # 51 characters


def test_complete_sentences_are_released_in_pieces_of_at_most_max_piece():
    buffer = TextBuffer(max_piece=100)
    text = SENTENCE * 12
    pieces = buffer.add(text)
    assert len(pieces) == 12 and all(len(piece) <= 100 for piece in pieces)  # two would be 101
    assert all(piece.endswith(".") for piece in pieces)  # cut at sentence ends
    assert " ".join(pieces).split() == text.split()


def test_flush_and_trigger_cut_long_text_at_words_then_hard_cut_a_giant_word():
    buffer = TextBuffer((500,), max_piece=100)
    words = "lorem ipsum dolor sit amet " * 10  # no sentence end, 270 characters
    pieces = buffer.add(words) + buffer.flush()
    assert pieces and all(len(piece) <= 100 for piece in pieces)
    assert " ".join(pieces).split() == words.split()  # nothing lost, no word split
    giant = buffer.add("x" * 250) + buffer.flush()
    assert [len(piece) for piece in giant] == [100, 100, 50]
    buffer.add("some words then " + "y" * 150)
    assert all(len(piece) <= 100 for piece in buffer.trigger() + buffer.flush())


def test_a_giant_word_streamed_in_tiny_messages_never_waits_past_max_piece():
    buffer = TextBuffer(max_piece=100)
    pieces = [piece for _ in range(300) for piece in buffer.add("ab")]
    assert pieces and all(len(piece) == 100 for piece in pieces)
    assert len(buffer.pending) <= 100


def _characters_scanned(monkeypatch, messages: list[str], **options) -> int:
    """Characters handed to sentence_ends while `messages` are added one by one."""
    from sesame_server.realtime import text_buffer

    scanned = [0]
    real = text_buffer.sentence_ends

    def counting(text: str) -> list[int]:
        scanned[0] += len(text)
        return real(text)

    monkeypatch.setattr(text_buffer, "sentence_ends", counting)
    buffer = TextBuffer(**options)
    for message in messages:
        buffer.add(message)
    return scanned[0]


@pytest.mark.parametrize("message, options", [
    ("ab", {}),  # one long word: nothing is ever released
    ("a.", {"auto_mode": True}),  # auto mode asks at every message whether it ends a sentence
])
def test_each_message_scans_only_the_new_text(monkeypatch, message, options):
    """Four times the messages may cost about four times the scanning, not sixteen (a buffer
    rescanned whole at each message is quadratic across messages)."""
    options = {"max_piece": 1_000_000, **options}
    short = _characters_scanned(monkeypatch, [message] * 500, **options)
    long = _characters_scanned(monkeypatch, [message] * 2000, **options)
    assert long / short < 6, (short, long)
