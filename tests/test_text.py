"""Sentence splitting: long input is generated sentence by sentence, so where it cuts is audible."""

from __future__ import annotations

import pytest

from sesame_server.engine.request import SpeechRequest
from sesame_server.engine.text import split_sentences


@pytest.mark.parametrize("text, sentences", [
    ("Hello there. How are you? Fine!", ["Hello there.", "How are you?", "Fine!"]),
    ("Dr. Smith met Mrs. Jones at St. Mary's. They talked.", ["Dr. Smith met Mrs. Jones at St. Mary's.", "They talked."]),
    ("Bring fruit, e.g. apples. Or i.e. pears.", ["Bring fruit, e.g. apples.", "Or i.e. pears."]),
    ("The U.S. economy grew. Good news.", ["The U.S. economy grew.", "Good news."]),
    ("It costs 3.50 dollars. Version 2.0.1 is out. Pi is 3.14159.",
     ["It costs 3.50 dollars.", "Version 2.0.1 is out.", "Pi is 3.14159."]),
    ('He said "stop." Then nothing.', ['He said "stop."', "Then nothing."]),
    ("Wait... what? Really?!", ["Wait...", "what?", "Really?!"]),
    ("So..... fine?!?! (Yes.) Ok", ["So.....", "fine?!?!", "(Yes.)", "Ok"]),  # a run of marks ends once
    ("See e.g. a. b. c. and i.e. d. Then.", ["See e.g. a. b. c. and i.e. d. Then."]),  # no end at initials
    ("  spaced   out\n\ntext  ", ["spaced out text"]),
    ("No final punctuation", ["No final punctuation"]),
    ("", []),
])
def test_sentences(text, sentences):
    assert split_sentences(text) == sentences


def test_a_very_long_sentence_is_cut_at_commas_then_spaces_and_nothing_is_lost():
    text = "one, two, three, four, five " * 60
    pieces = split_sentences(text, max_chars=100)
    assert all(len(piece) <= 100 for piece in pieces) and len(pieces) > 1
    assert all(piece.endswith(",") for piece in pieces[:-1])  # commas preferred
    assert " ".join(pieces).split() == text.split()
    words = split_sentences("word " * 300, max_chars=400)
    assert [len(p) for p in words] == [399, 399, 399, 299]


def test_a_word_longer_than_the_cap_is_cut_hard():
    assert [len(p) for p in split_sentences("x" * 900, max_chars=400)] == [400, 400, 100]


def test_the_request_derives_its_sentences_in_one_place():
    request = SpeechRequest(text="One. Two.", voice="v", request_id="r")
    assert request.sentences == ("One.", "Two.")
    with pytest.raises(TypeError):
        SpeechRequest(text="One.", voice="v", request_id="r", sentences=("other",))
