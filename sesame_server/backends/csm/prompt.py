"""Turn text and Mimi codes into the backbone's token frames.

Every backbone position is one "frame" of `codebooks + 1` ids with a mask: text positions
use only the last column (a text token), audio positions only the first `codebooks`
columns (one Mimi code per codebook). A segment is [speaker-prefixed text][audio][end
frame], the end frame being all-zero codes, exactly as CSM was trained and as mlx-audio
lays out context segments.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sesame_server.engine.codes import InvalidCodes, checked_codes

from .window import SegmentKey, segment_key

if TYPE_CHECKING:
    from sesame_server.engine.request import SpeechRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenFrames:
    tokens: np.ndarray  # [n, codebooks + 1] int32
    mask: np.ndarray  # [n, codebooks + 1] bool

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @staticmethod
    def concat(parts: "list[TokenFrames]", width: int) -> "TokenFrames":
        parts = [p for p in parts if len(p)]
        if not parts:
            return TokenFrames(np.zeros((0, width), np.int32), np.zeros((0, width), bool))
        return TokenFrames(np.concatenate([p.tokens for p in parts]), np.concatenate([p.mask for p in parts]))


class PromptBuilder:
    """Tokenizes segments for one model (its codebook count, Mimi's bins and its tokenizer)."""

    def __init__(self, tokenizer, codebooks: int, speaker_prefix_space: bool = False, *, bins: int | None = None):
        self.tokenizer = tokenizer
        self.codebooks = codebooks
        self.bins = bins  # codes at or past it index past the embedding tables
        self.width = codebooks + 1
        self.speaker_prefix_space = speaker_prefix_space

    def text(self, text: str, speaker: int) -> TokenFrames:
        if self.speaker_prefix_space:
            prompt = f"[{speaker}] {text.lstrip()}"
        else:
            prompt = f"[{speaker}]{text}"
        ids = np.asarray(self.tokenizer.encode(prompt), dtype=np.int32)
        tokens = np.zeros((len(ids), self.width), np.int32)
        mask = np.zeros((len(ids), self.width), bool)
        tokens[:, -1] = ids
        mask[:, -1] = True
        return TokenFrames(tokens, mask)

    def audio(self, codes: np.ndarray, end_frame: bool = True) -> TokenFrames:
        """`codes` [codebooks, frames] -> audio frames (+ the all-zero end frame); InvalidCodes
        for codes this model cannot read."""
        codes = checked_codes(np.asarray(codes), codebooks=self.codebooks, bins=self.bins)
        frames = codes.T.astype(np.int32)
        if end_frame:
            frames = np.concatenate([frames, np.zeros((1, self.codebooks), np.int32)])
        tokens = np.zeros((len(frames), self.width), np.int32)
        mask = np.zeros((len(frames), self.width), bool)
        tokens[:, :-1] = frames
        mask[:, :-1] = True
        return TokenFrames(tokens, mask)

    def segment(self, text: str, speaker: int, codes: np.ndarray | None) -> TokenFrames:
        parts = [self.text(text, speaker)]
        if codes is not None:
            parts.append(self.audio(codes))
        return TokenFrames.concat(parts, self.width)


def context_segments(builder: PromptBuilder, request: "SpeechRequest",
                     speaker: int) -> list[tuple[SegmentKey, TokenFrames]]:
    """A request's context, oldest first: prior turns, then previous_text in the voice's
    `speaker`; each with the key that says whether the KV cache already holds it. A turn
    whose codes this model cannot read (memory restored from a shared store) is left out."""
    segments = []
    for turn in request.context:
        codes = None if turn.codes is None else np.asarray(turn.codes)
        try:
            frames = builder.segment(turn.text, turn.speaker, codes)
        except InvalidCodes as exc:
            log.warning("Left out context turn %r: %s", turn.turn_id, exc)
            continue
        segments.append((segment_key(turn.turn_id, turn.text, turn.speaker, codes), frames))
    if request.previous_text:
        segments.append((segment_key(None, request.previous_text, speaker), builder.text(request.previous_text, speaker)))
    return segments
