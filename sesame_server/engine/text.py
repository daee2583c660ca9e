"""Split input text at sentence boundaries, so long input is generated piece by piece."""

from __future__ import annotations

import re

# A sentence ends at . ! ? … (optionally followed by closing quotes/brackets) and whitespace.
# Abbreviations like "Dr." or "e.g." are kept attached to what follows. A match starts only
# where a run of end marks starts: tried inside a run of 30,000 dots, each position would
# rescan the rest of the run (quadratic), and a later start cannot end anywhere an earlier
# one could not. Atomic: what follows the closers is whitespace or nothing matches.
_END = re.compile(r"""(?<![.!?…])(?>[.!?…]+["'”’)\]]*)(?=\s)""")
_INITIALS = re.compile(r"(?:[a-z]\.)+")
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
    for match in _END.finditer(text):
        if _abbreviation(_last_word(text, ends[-1] if ends else 0, match.start(), match.end())):
            continue
        ends.append(match.end())
    return ends


def _last_word(text: str, start: int, first: int, end: int) -> str:
    """The word a match at text[first:end] ends (from the whitespace before it, not before
    `start`): only as far back as that word, so a sentence of a thousand abbreviations
    costs what its length does."""
    while first > start and not text[first - 1].isspace():
        first -= 1
    return text[first:end]


def _abbreviation(word: str) -> bool:
    word = word.lower()
    return word in _ABBREVIATIONS or _INITIALS.fullmatch(word) is not None


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
    """`sentence` (single-spaced, stripped) in pieces of at most `max_chars`, cut by offset:
    slicing off the rest at every cut would copy a long text once per piece."""
    pieces: list[str] = []
    at = 0
    while len(sentence) - at > max_chars:
        limit = at + max_chars
        cut = max(sentence.rfind(", ", at, limit), sentence.rfind("; ", at, limit))
        cut = cut + 1 if cut > at else sentence.rfind(" ", at, limit)
        if cut <= at:
            cut = limit
        pieces.append(sentence[at:cut].strip())
        at = cut + (sentence[cut:cut + 1] == " ")
    if sentence[at:]:
        pieces.append(sentence[at:])
    return pieces
