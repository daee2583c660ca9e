"""The engine: one inference thread that owns the backend, fed by a priority queue.

Load, warm-up, generation and unload all run on that thread (MLX must not be driven from
two threads). Request threads only submit jobs and read their result queues.
"""

from __future__ import annotations

import collections
import logging
import math
import queue
import threading
import time
from typing import Callable

from sesame_server.backends.base import Backend
from sesame_server.engine.job import END, Job
from sesame_server.engine.request import SpeechRequest

log = logging.getLogger(__name__)

_STOP = object()
_WARMUP_TEXT = "Warming up."


class QueueFull(RuntimeError):
    """More jobs are waiting than MAX_QUEUE_DEPTH allows."""

    def __init__(self, depth: int, retry_after: int):
        self.depth = depth
        self.retry_after = retry_after
        super().__init__(f"The server is busy: {depth} requests are already waiting. Retry in about {retry_after} s.")


class EngineStopped(RuntimeError):
    """The engine is shutting down and takes no new work."""


class Engine:
    def __init__(
        self,
        backend: Backend,
        *,
        max_queue_depth: int = 3,
        warmup: bool = True,
        idle_unload_minutes: float = 0.0,
    ):
        self.backend = backend
        self.max_queue_depth = max_queue_depth
        self.warmup = warmup
        self.idle_unload_seconds = idle_unload_minutes * 60.0
        self.state = "starting"  # starting | loading | ready | unloaded | error | stopped
        self.load_error: BaseException | None = None
        self.started_at = time.time()
        self.requests_served = 0
        self.interruptions = 0
        self.current: Job | None = None
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._waiting: set[Job] = set()
        self._lock = threading.Lock()
        self._recent_seconds: collections.deque[float] = collections.deque(maxlen=20)
        self._last_activity = time.monotonic()
        self._thread: threading.Thread | None = None
        self.on_job_done: list[Callable[[Job], None]] = []  # observers: logs, metrics, context

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> "Engine":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            waiting = list(self._waiting)
            self._waiting.clear()
        for job in waiting:
            job.cancel.set()
        if self.current is not None:
            self.current.cancel.set()
        self._queue.put((-1, -1, _STOP))
        if self._thread is not None:
            self._thread.join(timeout)
        self.state = "stopped"

    def wait_ready(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.state in ("starting", "loading"):
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return self.state in ("ready", "unloaded")

    # -- request side ----------------------------------------------------------------
    def submit(self, request: SpeechRequest) -> Job:
        """Queue a job; raises QueueFull when MAX_QUEUE_DEPTH jobs already wait."""
        if self.state == "stopped":
            raise EngineStopped("The server is shutting down.")
        job = Job(request=request, frame_seconds=self.backend.frame_seconds)
        with self._lock:
            depth = len(self._waiting)
            if depth >= self.max_queue_depth:
                raise QueueFull(depth, self.retry_after(depth))
            self._waiting.add(job)
        self._queue.put((job.priority, job.sequence, job))
        return job

    def retry_after(self, depth: int | None = None) -> int:
        """Seconds until a slot frees up, estimated from recent generation times."""
        depth = self.queue_depth if depth is None else depth
        typical = self.avg_generation_seconds or 2.0
        return max(1, math.ceil(typical * (depth + 1)))

    @property
    def queue_depth(self) -> int:
        with self._lock:
            self._waiting = {job for job in self._waiting if not job.cancel.is_set()}
            return len(self._waiting)

    @property
    def avg_generation_seconds(self) -> float | None:
        recent = list(self._recent_seconds)
        return sum(recent) / len(recent) if recent else None

    def status(self) -> dict:
        avg = self.avg_generation_seconds
        return {
            "state": self.state,
            "queue_depth": self.queue_depth,
            "requests_served": self.requests_served,
            "interruptions": self.interruptions,
            "avg_generation_time_ms": None if avg is None else round(avg * 1000, 1),
            "uptime_seconds": round(time.time() - self.started_at, 1),
        }

    # -- inference thread --------------------------------------------------------------
    def _run(self) -> None:
        self._load()
        while True:
            timeout = self.idle_unload_seconds or None
            try:
                _, _, job = self._queue.get(timeout=timeout)
            except queue.Empty:
                self._maybe_unload()
                continue
            if job is _STOP:
                break
            with self._lock:
                self._waiting.discard(job)
            if job.cancel.is_set():  # the client left while it waited
                job.finished_at = time.monotonic()
                job.interrupted = True
                job.results.put(END)
                self._notify(job)
                continue
            self._serve(job)
        try:
            # A backend may hold per-thread resources (csm: MLX streams) to release here.
            getattr(self.backend, "thread_exit", self.backend.unload)()
        except Exception:  # noqa: BLE001 - shutting down anyway
            log.exception("Backend unload failed during shutdown")

    def _load(self) -> None:
        self.state = "loading"
        started = time.monotonic()
        try:
            self.backend.load()
            if self.warmup:
                self._warm_up()
        except Exception as exc:  # noqa: BLE001 - reported through /health and every job
            from sesame_server.failures import describe_startup_failure

            self.load_error = exc
            self.state = "error"
            log.error("Loading the %s backend failed:\n%s", self.backend.name,
                      describe_startup_failure(exc, getattr(self.backend, "settings", None)), exc_info=exc)
            return
        self.state = "ready"
        self._last_activity = time.monotonic()
        log.info("%s backend ready in %.1f s", self.backend.name, time.monotonic() - started)

    def _warm_up(self) -> None:
        warmup = getattr(self.backend, "warmup", None)
        if callable(warmup):
            warmup()
            return
        voice = self.backend.voices()[0].id
        request = SpeechRequest(text=_WARMUP_TEXT, sentences=(_WARMUP_TEXT,), voice=voice, request_id="warmup")
        for _ in self.backend.stream(request, threading.Event()):
            pass

    def _maybe_unload(self) -> None:
        idle = time.monotonic() - self._last_activity
        if self.state == "ready" and self.idle_unload_seconds and idle >= self.idle_unload_seconds:
            log.info("Idle for %.0f min: unloading the model", idle / 60)
            self.backend.unload()
            self.state = "unloaded"

    def _serve(self, job: Job) -> None:
        if self.state in ("unloaded", "error"):
            self._load()  # transparent reload; a failed load is retried per job
        if self.state == "error":
            job.finished_at = time.monotonic()
            job.results.put(self.load_error or RuntimeError("model not loaded"))
            return
        self.current = job
        job.started_at = time.monotonic()
        job.sample_rate = self.backend.sample_rate
        try:
            for block in self.backend.stream(job.request, job.cancel):
                if job.first_audio_at is None:
                    job.first_audio_at = time.monotonic()
                    # Before the block goes out: the response headers are built from these.
                    job.first_prefill_tokens = getattr(self.backend, "last_prefill_tokens", None)
                    job.context_turns = getattr(self.backend, "last_context_turns", None)
                job.samples += len(block)
                job.results.put(block)
                if job.cancel.is_set():
                    break
        except Exception as exc:  # noqa: BLE001 - travels to the request thread
            from sesame_server.failures import is_out_of_memory, out_of_memory

            log.exception("Generation failed for request %s", job.request.request_id)
            if is_out_of_memory(exc):
                log.error(out_of_memory(exc))
            job.results.put(exc)
        finally:
            if job.first_audio_at is not None:  # a window re-lay may have changed it since
                job.context_turns = getattr(self.backend, "last_context_turns", None)
            job.segments = tuple(getattr(self.backend, "last_segments", None) or ())
            job.finished_at = time.monotonic()
            job.interrupted = job.cancel.is_set()
            self.current = None
            self._last_activity = time.monotonic()
            # Observers (context memory, metrics) run before the client sees the end, so a
            # client's next request already finds this turn remembered.
            self._record(job)
            job.results.put(END)

    def _record(self, job: Job) -> None:
        self.requests_served += 1
        if job.interrupted:
            self.interruptions += 1
            log.info(
                "Generation interrupted at frame %d of ~%d (request %s)",
                job.frames, job.expected_frames, job.request.request_id,
            )
        elif job.started_at is not None:
            self._recent_seconds.append(job.finished_at - job.started_at)
        self._notify(job)

    def _notify(self, job: Job) -> None:
        for observer in self.on_job_done:
            try:
                observer(job)
            except Exception:  # noqa: BLE001 - an observer must never break serving
                log.exception("on_job_done observer failed")
