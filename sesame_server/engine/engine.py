"""The engine: one inference thread that owns the backend, fed by a priority queue.

Load, warm-up, generation, voice eviction and unload all run on that thread (MLX must not
be driven from two threads). Request threads submit jobs, read their result queues and read
the EngineStatus the thread publishes; they never touch the backend.
"""

from __future__ import annotations

import collections
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable

from sesame_server.backends.base import Backend, Generation, VoiceUnavailable
from sesame_server.engine.job import END, MAX_UNREAD_SECONDS, Job, SlowReader
from sesame_server.engine.request import ReferenceVoice, SpeechRequest
from sesame_server.engine.status import BusyTime, EngineStatus, EngineStopped, ModelUnavailable, QueueFull

__all__ = ["Engine", "EngineStatus", "EngineStopped", "ModelUnavailable", "QueueFull"]

log = logging.getLogger(__name__)

_CONTROL = float("-inf")  # queue priority of control items: before any job
# Jobs are served by deadline: a streaming job's is when it arrived, a buffered job's this
# much later. Streaming goes first, yet a buffered job waits behind later streaming ones for
# at most this long: steady streaming load cannot starve it.
BUFFERED_HANDICAP_SECONDS = 3.0
_STOP = "stop"


@dataclass(frozen=True)
class _Control:
    """Work for the inference thread that is not a job (prepare or evict a voice, wake up, stop)."""

    action: Callable[[], Any] | str | None
    needs_model: bool = False
    reply: "_Reply | None" = None


@dataclass
class _Reply:
    done: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    error: BaseException | None = None


class Engine:
    def __init__(
        self,
        backend: Backend,
        *,
        max_queue_depth: int = 3,
        warmup: bool = True,
        idle_unload_minutes: float = 0.0,
        slow_reader_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        advise: Callable[[BaseException], str] = lambda exc: f"{type(exc).__name__}: {exc}",
    ):
        self.backend = backend
        self.info = backend.info
        self.max_queue_depth = max_queue_depth
        self.warmup = warmup
        self.idle_unload_seconds = idle_unload_minutes * 60.0
        # Longest the thread waits for a reader holding MAX_UNREAD_SECONDS unread (everyone waits).
        self.slow_reader_seconds = slow_reader_seconds
        self.clock = clock  # idle unload reads it: tests advance a fake clock, then poke()
        self.advise = advise  # a load failure -> what the operator should do (ops.advice)
        self.status = EngineStatus()
        self.current: Job | None = None
        self.busy = BusyTime()  # generating seconds, read by /metrics (autoscaling on utilisation)
        self.on_job_done: list[Callable[[Job], None]] = []  # observers: context memory, tests
        self._state = "starting"
        self._load_error: str | None = None  # advice, while the last load failed
        self._served = 0
        self._interruptions = 0
        self._recent_seconds: collections.deque[float] = collections.deque(maxlen=20)
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._waiting: set[Job] = set()
        self._lock = threading.Lock()
        self._control_sequence = 0
        self._last_activity = clock()
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> str:
        return self._state

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
        current = self.current
        if current is not None:
            current.cancel.set()
        self._control(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)
        self._publish("stopped")

    def wait_ready(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._state in ("starting", "loading"):
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return self._state in ("ready", "unloaded")

    # -- request side ----------------------------------------------------------------
    def submit(self, request: SpeechRequest) -> Job:
        """Queue a job; raises QueueFull when MAX_QUEUE_DEPTH live jobs already wait."""
        if self._state == "stopped":
            raise EngineStopped("The server is shutting down.")
        job = Job(request=request, info=self.info)
        with self._lock:
            depth = self._prune()
            if depth >= self.max_queue_depth:
                raise QueueFull(depth, self.retry_after(depth))
            self._waiting.add(job)
        deadline = self.clock() + (0.0 if request.stream else BUFFERED_HANDICAP_SECONDS)
        self._queue.put((deadline, job.sequence, job))
        return job

    def forget_voice(self, voice_id: str) -> None:
        """Evict a deleted voice's cached state, on the inference thread (before the next job)."""
        self._control(lambda: self.backend.forget_voice(voice_id))

    def prepare_voice(self, reference: ReferenceVoice, timeout: float) -> None:
        """Have the backend prepare a new cloned voice (before the next job); re-raises its
        VoiceUnavailable. TimeoutError when the thread stayed busy for `timeout` s."""
        reply = _Reply()
        self._control(lambda: self.backend.prepare_voice(reference), needs_model=True, reply=reply)
        if not reply.done.wait(timeout):
            raise TimeoutError(f"the model stayed busy for {timeout:.0f} s")
        if reply.error is not None:
            raise reply.error

    def poke(self) -> None:
        """Wake the inference thread so it re-checks the idle timer (tests with a fake clock)."""
        self._control(None)

    def retry_after(self, depth: int | None = None) -> int:
        """Seconds until a slot frees up, estimated from recent generation times."""
        depth = self.queue_depth if depth is None else depth
        typical = self.status.avg_generation_seconds or 2.0
        return max(1, math.ceil(typical * (depth + 1)))

    @property
    def queue_depth(self) -> int:
        with self._lock:
            return self._prune()

    def _prune(self) -> int:
        """Drop waiting jobs whose client already left (they hold no slot); lock held."""
        self._waiting = {job for job in self._waiting if not job.cancel.is_set()}
        return len(self._waiting)

    def _control(self, action, *, needs_model: bool = False, reply: _Reply | None = None) -> None:
        with self._lock:
            self._control_sequence += 1
            sequence = self._control_sequence
        self._queue.put((_CONTROL, sequence, _Control(action, needs_model, reply)))

    # -- inference thread --------------------------------------------------------------
    def _run(self) -> None:
        self._load()
        while True:
            timeout = min(self.idle_unload_seconds, 1.0) if self.idle_unload_seconds else None
            try:
                _, _, item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = _Control(None)
            if isinstance(item, _Control):
                if item.action == _STOP:
                    break
                if callable(item.action):
                    self._run_control(item)
                self._maybe_unload()
                continue
            with self._lock:
                self._waiting.discard(item)
            self._serve(item)
        try:
            self.backend.thread_exit()  # csm: MLX streams belong to this thread
        except Exception:  # noqa: BLE001 - shutting down anyway
            log.exception("Backend unload failed during shutdown")

    def _run_control(self, control: _Control) -> None:
        reply = control.reply or _Reply()
        try:
            if control.needs_model and self._state in ("unloaded", "error"):
                self._load()
            if control.needs_model and self._state == "error":
                raise ModelUnavailable(self._load_error or "The model is not loaded.")
            reply.value = control.action()
        except Exception as exc:  # noqa: BLE001 - goes back to the caller; never stops the thread
            reply.error = exc
            if control.reply is None:
                log.exception("Engine control action failed")
        finally:
            self._last_activity = self.clock()
            self._publish()
            reply.done.set()

    def _load(self) -> None:
        self._publish("loading")
        started = time.monotonic()
        try:
            self.backend.load()
            if self.warmup:
                self.backend.warmup()
        except Exception as exc:  # noqa: BLE001 - reported through /health and every job
            self._load_error = self.advise(exc)
            # Our own advice, several lines: the console keeps its line breaks (ops.logs.MULTILINE_ATTR).
            log.error("Loading the %s backend failed:\n%s", self.info.name, self._load_error, exc_info=exc,
                      extra={"_sesame_multiline": True})
            self._publish("error")
            return
        self._load_error = None
        self._last_activity = self.clock()
        log.info("%s backend ready in %.1f s", self.info.name, time.monotonic() - started)
        self._publish("ready")

    def _maybe_unload(self) -> None:
        idle = self.clock() - self._last_activity
        if self._state == "ready" and self.idle_unload_seconds and idle >= self.idle_unload_seconds:
            log.info("Idle for %.0f min: unloading the model", idle / 60)
            self.backend.unload()
            self._publish("unloaded")

    def _serve(self, job: Job) -> None:
        if job.cancel.is_set():  # the client left while it waited
            self._finish(job)
            return
        if self._state in ("unloaded", "error"):
            self._load()  # transparent reload; a failed load is retried per job
        if self._state == "error":
            job.error = ModelUnavailable(self._load_error or "The model is not loaded.")
            job.results.put(job.error)
            self._finish(job)
            return
        self.current = job
        job.started_at = time.monotonic()
        self.busy.start(job.started_at)
        try:
            job.generation = self._generate(job)
        except Exception as exc:  # noqa: BLE001 - travels to the request thread
            from sesame_server.ops.advice import is_out_of_memory, out_of_memory

            if isinstance(exc, VoiceUnavailable):  # one voice's material (deleted meanwhile): the client's
                log.info("Request %s: %s", job.request.request_id, exc)
            else:
                log.exception("Generation failed for request %s", job.request.request_id)
            if is_out_of_memory(exc):
                log.error(out_of_memory(exc))
            job.error = exc
            job.results.put(exc)
        finally:
            self.busy.stop(time.monotonic())
            self.current = None
            self._last_activity = self.clock()
            self._finish(job)

    def _generate(self, job: Job) -> Generation:
        stream = self.backend.stream(job.request, job.cancel)
        while True:
            try:
                block = next(stream)
            except StopIteration as stop:
                return stop.value or Generation()
            if job.first_audio_at is None:
                job.first_audio_at = time.monotonic()
                # Before the block goes out: the response headers are built from these.
                job.prefill_tokens, job.context_turns = block.prefill_tokens, block.context_turns
            if job.cancel.is_set():
                continue  # the backend returns within a frame; nobody reads these blocks
            if not job.deliver(block.pcm, self.slow_reader_seconds):
                self._cut(job)
                continue
            job.samples += len(block.pcm)

    def _cut(self, job: Job) -> None:
        """The reader left MAX_UNREAD_SECONDS unread for slow_reader_seconds: stop (the
        backend returns within a frame) and tell the reader its audio is incomplete."""
        log.info("Request %s: the client left %g s of audio unread for %g s; generation cut at frame %d",
                 job.request.request_id, MAX_UNREAD_SECONDS, self.slow_reader_seconds, job.frames)
        job.error = SlowReader(f"The client did not read the audio for {self.slow_reader_seconds:g} s; "
                               "generation was stopped.")
        job.cancel.set()
        job.results.put(job.error)

    def _finish(self, job: Job) -> None:
        job.finished_at = time.monotonic()
        job.interrupted = job.cancel.is_set() and job.error is None
        if job.generation is not None and job.generation.context_turns is not None:
            job.context_turns = job.generation.context_turns  # a window re-lay may have changed it
        if job.started_at is not None:
            self._served += 1
            if job.interrupted:
                self._interruptions += 1
                log.info("Generation interrupted at frame %d of ~%d (request %s)",
                         job.frames, job.expected_frames, job.request.request_id)
            elif job.error is None:
                self._recent_seconds.append(job.finished_at - job.started_at)
        # Observers (context memory) run before the client sees the end, so a client's
        # next request already finds this turn remembered.
        for observer in self.on_job_done:
            try:
                observer(job)
            except Exception:  # noqa: BLE001 - an observer must never break serving
                log.exception("on_job_done observer failed")
        if job.started_at is not None:
            self._publish()
        job.results.put(END)
        job.done.set()

    def _publish(self, state: str | None = None) -> None:
        """Publish a fresh EngineStatus (inference thread; stop() after the thread ended)."""
        if state is not None:
            self._state = state
        try:
            backend = dict(self.backend.status()) if self._state != "stopped" else dict(self.status.backend)
        except Exception:  # noqa: BLE001 - a status must never break serving
            log.exception("Backend status failed")
            backend = {}
        recent = list(self._recent_seconds)
        self.status = EngineStatus(
            state=self._state,
            backend=MappingProxyType(backend),
            requests_served=self._served,
            interruptions=self._interruptions,
            avg_generation_seconds=sum(recent) / len(recent) if recent else None,
            load_error=self._load_error if self._state == "error" else None,
        )
