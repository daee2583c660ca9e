"""A Job: one SpeechRequest on its way through the queue, and the PCM blocks it produces."""

from __future__ import annotations

import itertools
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from sesame_server.engine.request import SpeechRequest

STREAMING, BUFFERED = 0, 1  # PriorityQueue order: lower first
_sequence = itertools.count()

# Speaking rate used to guess how long an utterance will be (for "frame N of ~M" logs).
_CHARS_PER_SECOND = 15.0


class _End:
    """Sentinel on a job's result queue: generation is over (finished or stopped)."""


END = _End()


class JobCancelled(Exception):
    """The job was cancelled before it produced anything."""


@dataclass(eq=False)  # identity semantics: jobs live in sets
class Job:
    request: SpeechRequest
    cancel: threading.Event = field(default_factory=threading.Event)
    results: "queue.Queue[np.ndarray | _End | BaseException]" = field(default_factory=queue.Queue)
    sequence: int = field(default_factory=lambda: next(_sequence))
    submitted_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    first_audio_at: float | None = None
    finished_at: float | None = None
    samples: int = 0  # PCM samples generated so far
    sample_rate: int = 0
    frame_seconds: float = 0.08
    interrupted: bool = False
    # Filled in by backends that report them (csm): what conditioned the generation, and
    # its audio as (sentence, Mimi codes [codebooks, frames]) pairs for the context cache.
    first_prefill_tokens: int | None = None  # before the first audio (what time-to-first-audio paid for)
    context_turns: int | None = None
    segments: tuple = ()

    @property
    def priority(self) -> int:
        return STREAMING if self.request.stream else BUFFERED

    @property
    def frames(self) -> int:
        if not self.sample_rate:
            return 0
        return int(round(self.samples / (self.sample_rate * self.frame_seconds)))

    @property
    def expected_frames(self) -> int:
        seconds = len(self.request.text) / _CHARS_PER_SECOND / max(self.request.speed, 0.25)
        return max(1, int(seconds / self.frame_seconds))

    @property
    def audio_seconds(self) -> float:
        return self.samples / self.sample_rate if self.sample_rate else 0.0

    @property
    def queue_wait(self) -> float | None:
        return None if self.started_at is None else self.started_at - self.submitted_at

    @property
    def done(self) -> bool:
        return self.finished_at is not None

    def blocks(self, client_gone: Callable[[], bool] = lambda: False, poll: float = 0.05) -> Iterator[np.ndarray]:
        """PCM blocks as the inference thread produces them; re-raises its exceptions.

        Closing this generator (client gone, response closed) cancels the job: that is
        the one road every kind of abort takes.
        """
        try:
            while True:
                try:
                    item = self.results.get(timeout=poll)
                except queue.Empty:
                    if client_gone():
                        return
                    continue
                if item is END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.cancel.set()
