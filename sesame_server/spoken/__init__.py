"""The text front end: what a reply says, as it should be spoken (English).

    spoken = normalize("**Total:** $12.50 (see https://example.com)")
    spoken.text   -> "Total: twelve dollars and fifty cents (see example dot com)"
    spoken.spans  -> per character, where it came from in the source

markdown.py reads the markup, rules.py the words (numbers, money, dates, URLs, emoji...),
numbers.py says numbers, text.py keeps the character mapping.
"""

from __future__ import annotations

import re
from functools import partial

from sesame_server.spoken.markdown import Reader
from sesame_server.spoken.rules import speak
from sesame_server.spoken.text import Builder, Spoken

__all__ = ["Spoken", "normalize", "unchanged"]


# Anything markdown could make something of; text without it skips the parser (the common
# case for a sentence streamed alone) and is read paragraph by paragraph the same way. A
# line's indent is whitespace but newlines: `^\s*` would rescan every blank line after each.
_MARKDOWN = re.compile(r"[*_`#>|\[\]!<~&\\]|^[^\S\n]*(?:[-+=]|\d+[.)])(?:\s|$)|^ {4}", re.M)
_PARAGRAPH = re.compile(r"\n[ \t]*\n")


def normalize(text: str, *, read_code: bool = False, describe_emoji: bool = False) -> Spoken:
    """`text` as it should be spoken; never raises on any input, never empty for text that
    says something (it falls back to the text itself)."""
    builder = Builder(text)
    say = partial(speak, describe_emoji=describe_emoji)
    if _MARKDOWN.search(text):
        Reader(builder, say, read_code=read_code).read()
    else:
        at = 0
        for paragraph in [*_PARAGRAPH.finditer(text), None]:
            end = paragraph.start() if paragraph else len(text)
            if text[at:end].strip():
                say(builder, at, end)
                builder.end_sentence(end)
            at = paragraph.end() if paragraph else end
    spoken = builder.build()
    if not spoken.text.strip() and text.strip() and any(char.isalnum() for char in text):
        return unchanged(text)
    return spoken


def unchanged(text: str) -> Spoken:
    """No normalization (apply_text_normalization: off): the text byte for byte."""
    return Spoken(text, text)
