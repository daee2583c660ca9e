"""A Job: one SpeechRequest on its way through the queue, its PCM blocks and its one result."""

from __future__ import annotations

import itertools
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from sesame_server.audio.units import MIN_SPEED
from sesame_server.backends.base import BackendInfo, Generation
from sesame_server.engine.request import SpeechRequest

_sequence = itertools.count()

# Speaking rate used to guess how long an utterance will be (for "frame N of ~M" logs).
_CHARS_PER_SECOND = 15.0
# Audio a job may hold that its reader has not taken yet (24 kHz float32: ~2.9 MB). Past it
# the inference thread waits for the reader (Job.deliver): memory stays bounded whatever
# the client does, and a reader that keeps up never notices.
MAX_UNREAD_SECONDS = 30.0


class SlowReader(Exception):
    """The client left a job's audio unread too long: generation was cut (not a failure of
    the model; the reader that comes back learns its audio is incomplete)."""


class _End:
    """Sentinel on a job's result queue: generation is over (finished or stopped)."""


END = _End()


@dataclass(eq=False)  # identity semantics: jobs live in sets
class Job:
    request: SpeechRequest
    info: BackendInfo  # of the backend that serves it: rate and frame length of its blocks
    cancel: threading.Event = field(default_factory=threading.Event)
    results: "queue.Queue[np.ndarray | _End | BaseException]" = field(default_factory=queue.Queue)
    unread_samples: int = 0  # PCM samples on `results` not taken by the reader yet
    done: threading.Event = field(default_factory=threading.Event)  # set once every field is final
    sequence: int = field(default_factory=lambda: next(_sequence))
    submitted_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    first_audio_at: float | None = None
    finished_at: float | None = None
    samples: int = 0  # PCM samples generated so far
    interrupted: bool = False
    error: BaseException | None = None  # why generation failed, if it did
    # What conditioned the first audio (backends that report it: csm), for response headers.
    prefill_tokens: int | None = None
    context_turns: int | None = None
    generation: Generation | None = None  # the backend's result, once finished
    _taken: threading.Condition = field(default_factory=threading.Condition, repr=False)

    @property
    def frames(self) -> int:
        return int(round(self.samples / (self.info.sample_rate * self.info.frame_seconds)))

    @property
    def expected_frames(self) -> int:
        seconds = len(self.request.text) / _CHARS_PER_SECOND / max(self.request.speed, MIN_SPEED)
        return max(1, int(seconds / self.info.frame_seconds))

    @property
    def audio_seconds(self) -> float:
        return self.samples / self.info.sample_rate

    @property
    def queue_wait(self) -> float | None:
        return None if self.started_at is None else self.started_at - self.submitted_at

    @property
    def segments(self) -> tuple:
        return self.generation.segments if self.generation is not None else ()

    def deliver(self, pcm: np.ndarray, timeout: float) -> bool:
        """Inference thread: hand a block to the reader, first waiting while
        MAX_UNREAD_SECONDS of audio are still unread. False when the reader took nothing
        for `timeout` s (nothing was handed); True at once when the job is cancelled."""
        limit = int(MAX_UNREAD_SECONDS * self.info.sample_rate)
        deadline = time.monotonic() + timeout
        with self._taken:
            while self.unread_samples >= limit and not self.cancel.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._taken.wait(min(left, 0.05))  # a cancel sets an Event, not this condition
            self.unread_samples += len(pcm)
        self.results.put(pcm)
        return True

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
                with self._taken:
                    self.unread_samples -= len(item)
                    self._taken.notify()
                yield item
        finally:
            self.cancel.set()
