"""Work on VOICES_DIR off the request threads, with a deadline for whoever waits on it.

A share (NFS, a PersistentVolumeClaim) can stop answering: a listing, a stat or a read then
blocks its thread for as long as the share is away. So every such call runs on one thread of
its own, started when there is work and gone when there is none; a request waits for its
answer at most `wait_seconds` and then goes on with what the node knows (the voice is unknown
for now). The same question asked while it is pending joins it, and at most MAX_PENDING
questions wait at once: a hung share costs a few threads' worth of nothing, not every waitress
worker.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, TimeoutError as FutureTimeout
from typing import Callable, TypeVar

log = logging.getLogger(__name__)

MAX_PENDING = 64  # distinct questions queued for the share; past it, no answer at once
T = TypeVar("T")


class NoAnswer(Exception):
    """The share did not answer within the deadline (or too much already waits on it)."""


class ShareQueue:
    def __init__(self, wait_seconds: float, name: str = "voices-dir"):
        self.wait_seconds = wait_seconds
        self._name = name
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[Callable[[], object], Future]] = {}
        self._order: list[str] = []
        self._worker: threading.Thread | None = None

    def ask(self, key: str, work: Callable[[], T], wait: float | None = None) -> T:
        """`work()`'s result, run on the share's thread; NoAnswer past the deadline (the work
        still runs and lands later). The same `key` while pending waits for the same run."""
        future = self._submit(key, work)
        if future is None:
            raise NoAnswer(f"{len(self._pending)} questions to VOICES_DIR are waiting already")
        try:
            return future.result(timeout=self.wait_seconds if wait is None else wait)
        except FutureTimeout:
            raise NoAnswer(f"VOICES_DIR did not answer within {self.wait_seconds:g} s") from None

    def _submit(self, key: str, work: Callable[[], object]) -> Future | None:
        with self._lock:
            if key in self._pending:
                return self._pending[key][1]
            if len(self._pending) >= MAX_PENDING:
                return None
            future: Future = Future()
            self._pending[key] = (work, future)
            self._order.append(key)
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._worker.start()
            return future

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._order:
                    self._worker = None  # nothing to do: the thread goes, the next question starts one
                    return
                key = self._order[0]
                work, future = self._pending[key]
            try:
                future.set_result(work())
            except Exception as exc:  # noqa: BLE001 - goes to whoever waits; logged if nobody does
                log.warning("Reading VOICES_DIR failed: %s: %s", exc.__class__.__name__, exc)
                future.set_exception(exc)
            finally:
                with self._lock:
                    self._order.pop(0)
                    self._pending.pop(key, None)
