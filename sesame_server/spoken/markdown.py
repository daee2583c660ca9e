"""Markdown, as an agent writes it, read aloud: parsed by markdown-it-py (CommonMark and
tables), never by regexes. Headers, list items and table rows become sentences; emphasis
marks vanish; a link is its text; inline code is read; a fenced code block is announced,
not read (or read, when asked); HTML and images' markup are dropped (an image says its alt
text). Text is located in the source left to right, so every word keeps its source span."""

from __future__ import annotations

from typing import Callable

from markdown_it import MarkdownIt
from markdown_it.token import Token

from sesame_server.spoken.text import Builder

CODE_PLACEHOLDER = "Code block omitted."
_PARSER = MarkdownIt("commonmark", {"html": True}).enable("table").disable(["html_block"])

Speak = Callable[[Builder, int, int], None]  # rules.speak with its options bound


class Reader:
    def __init__(self, builder: Builder, speak: Speak, *, read_code: bool) -> None:
        self.builder = builder
        self.speak = speak
        self.read_code = read_code
        self.source = builder.source
        lines = self.source.split("\n")
        self._line_starts = [0]
        for line in lines:
            self._line_starts.append(self._line_starts[-1] + len(line) + 1)
        self.cursor = 0

    def read(self) -> None:
        tokens = _PARSER.parse(self.source)
        for index, token in enumerate(tokens):
            self._block(token, tokens[index - 1] if index else None)

    def _span(self, token: Token) -> tuple[int, int]:
        if token.map is None:
            return self.cursor, self.cursor
        start, end = token.map
        return self._line_starts[start], min(self._line_starts[min(end, len(self._line_starts) - 1)] - 1,
                                             len(self.source))

    def _block(self, token: Token, previous: Token | None) -> None:
        builder = self.builder
        if token.type == "inline":
            self._inline(token)
        elif token.type in ("th_open", "td_open"):
            if previous is not None and previous.type in ("th_close", "td_close"):
                builder.say(", ", self.cursor, self.cursor)  # cells of a row: read as a list
        elif token.type in ("heading_close", "tr_close") or (token.type == "paragraph_close" and token.hidden):
            builder.end_sentence(self.cursor)  # a header, a table row, a list item's text
        elif token.type in ("paragraph_close", "blockquote_close", "list_item_close"):
            builder.end_sentence(self.cursor)
        elif token.type in ("fence", "code_block"):
            start, end = self._span(token)
            if self.read_code:
                found = self.source.find(token.content, start)
                if found >= 0:
                    self.speak(builder, found, found + len(token.content))
                else:
                    builder.say(token.content, start, end)
            else:
                builder.say(CODE_PLACEHOLDER, start, end)
            builder.end_sentence(end)
            self.cursor = max(self.cursor, end)

    def _inline(self, token: Token) -> None:
        builder = self.builder
        for child in token.children or ():
            if child.type == "text" and child.content:
                self._text(child.content, self._span(token))
            elif child.type == "code_inline":
                self._text(child.content, self._span(token))
            elif child.type == "image":
                self._text(child.content, self._span(token))  # its alt text
            elif child.type in ("softbreak", "hardbreak"):
                builder.space(self.cursor)

    def _text(self, content: str, block: tuple[int, int]) -> None:
        """Words found in the source (kept with their spans), else said over the block."""
        found = self.source.find(content, self.cursor)
        if found >= 0:
            self.speak(self.builder, found, found + len(content))
            self.cursor = found + len(content)
            return
        # Text the parser changed (entities, escapes): spoken as parsed, mapped to its block.
        scratch = Builder(content)
        self.speak(scratch, 0, len(content))
        self.builder.say(scratch.build().text, *block)
