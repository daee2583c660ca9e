"""Split input text at sentence boundaries, so long input is generated piece by piece."""

from __future__ import annotations

import re

# A sentence ends at . ! ? … (optionally followed by closing quotes/brackets) and whitespace.
# Abbreviations like "Dr." or "e.g." are kept attached to what follows.
_END = re.compile(r"""[.!?…]+["'”’)\]]*(?=\s)""")
_ABBREVIATIONS = {
    "mr.", "mrs.", "ms.", "dr.", "prof.", "sr.", "jr.", "st.", "vs.", "etc.", "e.g.", "i.e.",
    "inc.", "ltd.", "co.", "no.", "approx.", "fig.", "mt.",
}


MAX_SENTENCE_CHARS = 400


def sentence_ends(text: str) -> list[int]:
    """Where each complete sentence of `text` ends (index after its punctuation). A sentence
    is complete once whitespace follows its end: text arriving word by word is cut only
    where the next word has started."""
    ends = []
    start = 0
    for match in _END.finditer(text):
        last_word = text[start:match.end()].split()[-1].lower() if text[start:match.end()].split() else ""
        if last_word in _ABBREVIATIONS or re.fullmatch(r"(?:[a-z]\.)+", last_word):
            continue
        ends.append(match.end())
        start = match.end()
    return ends


def split_sentences(text: str, max_chars: int = MAX_SENTENCE_CHARS) -> list[str]:
    """Sentences of `text` in order; none longer than `max_chars` (split at commas/spaces)."""
    text = " ".join(text.split())
    if not text:
        return []
    sentences: list[str] = []
    start = 0
    for end in sentence_ends(text):
        sentences.append(text[start:end].strip())
        start = end
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return [piece for sentence in sentences for piece in _cap_length(sentence, max_chars)]


def _cap_length(sentence: str, max_chars: int) -> list[str]:
    pieces: list[str] = []
    while len(sentence) > max_chars:
        cut = max(sentence.rfind(", ", 0, max_chars), sentence.rfind("; ", 0, max_chars))
        cut = cut + 1 if cut > 0 else sentence.rfind(" ", 0, max_chars)
        if cut <= 0:
            cut = max_chars
        pieces.append(sentence[:cut].strip())
        sentence = sentence[cut:].strip()
    if sentence:
        pieces.append(sentence)
    return pieces
