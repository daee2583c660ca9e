"""Markdown, as an agent writes it, read aloud: parsed by pulldown-cmark (CommonMark with
GitHub's tables, strikethrough and task lists, through `pyromark`), never by regexes.
Headers, list items and table rows become sentences; emphasis marks vanish; a link is its
text; inline code is read; a fenced code block is announced, not read (or read, when
asked); HTML tags are dropped (the text between them is read); an image says its alt text.

The parser gives every piece of text its exact source range, so every word keeps its span.
It is native code: a 4 KB reply parses in well under a millisecond (markdown-it-py took
4-7 ms here, most of the time budget of the whole front end)."""

from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy
import pyromark

from sesame_server.spoken.text import Builder

CODE_PLACEHOLDER = "Code block omitted."
_OPTIONS = pyromark.Options.ENABLE_TABLES | pyromark.Options.ENABLE_STRIKETHROUGH | pyromark.Options.ENABLE_TASKLISTS
# Blocks whose start and end close a sentence ("## Totals" -> "Totals.").
_BLOCKS = frozenset({"Paragraph", "Heading", "BlockQuote", "List", "Item", "Table", "TableHead", "TableRow",
                     "HtmlBlock", "CodeBlock", "FootnoteDefinition", "DefinitionList"})
_SURROGATE = re.compile("[\ud800-\udfff]")
_INLINE = frozenset({"Emphasis", "Strong", "Strikethrough", "Link", "Superscript", "Subscript"})
# HTML's markup, between the text that is read. An unterminated comment hides the rest (as in
# a browser) and a tag holds no "<": each failed try would rescan to the end ("<!--" * 1000).
_TAG = re.compile(r"<!--.*?(?:-->|\Z)|<[^<>]*>", re.S)

Speak = Callable[[Builder, int, int], None]  # rules.speak with its options bound


class Reader:
    def __init__(self, builder: Builder, speak: Speak, *, read_code: bool) -> None:
        self.builder = builder
        self.speak = speak
        self.read_code = read_code
        self.source = builder.source
        self._parsed = self.source
        self._run: list[int] = []  # [start, end) of source text not yet spoken (pieces are merged)

    def read(self) -> None:
        # A lone surrogate (JSON allows "\ud800") cannot go to the parser as UTF-8: it reads a
        # same-length stand-in, so offsets still match the source.
        parsed = self._parsed = _SURROGATE.sub("\ufffd", self.source)
        char_at = _char_offsets(parsed)
        self._in_code = False  # inside a code block that is announced, not read
        self._previous = None
        run = self._run
        for event, where in pyromark.events_with_range(parsed, options=_OPTIONS):
            start, end = char_at[where["start"]], char_at[where["end"]]
            content = event.get("Text") if type(event) is dict else None
            if content is None:
                if run:
                    self._flush()
                if _inline_markup(event):
                    continue
                self._event(event, start, end)
            elif self._in_code:
                continue
            elif parsed[start:end] != content:  # an entity or escape: spoken as parsed
                self._flush()
                self._said(content, start, end)
            elif run and run[1] == start:
                run[1] = end  # the parser cuts text at every character that might be markup
            else:
                self._flush()
                run[:] = [start, end]
        self._flush()

    def _event(self, event: str | dict, start: int, end: int) -> None:
        builder = self.builder
        if isinstance(event, str):  # SoftBreak, HardBreak, Rule
            if event == "Rule":
                builder.end_sentence(start)
            else:
                builder.space(start)
            self._previous = event
            return
        kind, value = next(iter(event.items()))
        name = value if isinstance(value, str) else next(iter(value), None) if isinstance(value, dict) else None
        if kind == "Start":
            if name == "TableCell" and self._previous == "TableCell":
                builder.say(", ", start, start)  # cells of a row: read as a list
            elif name in _BLOCKS:
                builder.end_sentence(start)
            if name == "CodeBlock" and not self.read_code:
                builder.say(CODE_PLACEHOLDER, start, end)
                self._in_code = True
        elif kind == "End":
            if name == "CodeBlock":
                self._in_code = False
            if name in _BLOCKS:
                builder.end_sentence(end)
            kind = name
        elif kind == "Code":  # inline code: read
            found = self._parsed.find(value, start, end)
            if found < 0:
                self._said(value, start, end)
            else:
                self.speak(builder, found, found + len(value))
        elif kind in ("Html", "InlineHtml"):
            self._html(value, start, end)
        self._previous = kind  # TaskListMarker, FootnoteReference, math: not said

    def _flush(self) -> None:
        if self._run:
            self.speak(self.builder, *self._run)
            self._run.clear()

    def _said(self, content: str, start: int, end: int) -> None:
        """Text the parser changed, spoken as parsed and mapped to where it was written."""
        scratch = Builder(content)
        self.speak(scratch, 0, len(content))
        self.builder.say(scratch.build().text, start, end)

    def _html(self, content: str, start: int, end: int) -> None:
        if self._parsed[start:end] != content:
            return
        at = start
        for tag in _TAG.finditer(self.source, start, end):
            if self.source[at:tag.start()].strip():
                self.speak(self.builder, at, tag.start())
            self.builder.space(tag.start())
            at = tag.end()
        if self.source[at:end].strip():
            self.speak(self.builder, at, end)


def _inline_markup(event: str | dict) -> bool:
    """Emphasis, strong, strikethrough, link: their marks are not said, their text is."""
    if type(event) is not dict:
        return False
    value = event.get("Start") or event.get("End")
    return value is not None and (value if isinstance(value, str) else next(iter(value), None)) in _INLINE


def _char_offsets(source: str) -> Sequence[int]:
    """UTF-8 byte offset (the parser's) -> character offset (Python's), as a table."""
    if source.isascii():
        return range(len(source) + 1)
    encoded = numpy.frombuffer(source.encode(), dtype=numpy.uint8)
    starts = (encoded & 0xC0) != 0x80  # the first byte of each character
    return numpy.concatenate(([0], numpy.cumsum(starts))).tolist()
