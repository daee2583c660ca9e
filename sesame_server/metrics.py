"""Prometheus metrics: one registry per app, exposed at GET /metrics.

Counters and histograms are fed by the request hook (observe_request / observe_record),
the engine (observe_job, from Engine.on_job_done), the audio pipeline (observe_encode) and
the context cache; gauges about the engine and the process are computed at scrape time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import resource
import sys
from typing import Any, Iterable, Mapping

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from sesame_server import __version__

log = logging.getLogger(__name__)

EXTENSION = "sesame_tts_metrics"
NAMESPACE = "sesame_tts"
ENGINE_STATES = ("starting", "loading", "ready", "unloaded", "error", "stopped")

# Buckets sized for speech: first audio is expected in 0.1-0.5 s on Apple Silicon, a
# sentence takes seconds to generate, and encoding one response takes milliseconds.
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
GENERATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
RTF_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
ENCODE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
PREFILL_BUCKETS = (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

bp = Blueprint("metrics", __name__)


class Metrics:
    """Every metric the server exports, registered on its own CollectorRegistry."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ns = NAMESPACE
        self.requests = Counter(
            "requests", "HTTP requests by dialect, route template, audio format, status and streaming.",
            ["dialect", "route", "format", "status", "streamed"], namespace=ns, registry=r)
        self.request_duration = Histogram(
            "request_duration_seconds", "Time from request start until the response was closed.",
            ["dialect", "route"], namespace=ns, buckets=REQUEST_BUCKETS, registry=r)
        self.time_to_first_audio = Histogram(
            "time_to_first_audio_seconds", "From submit to the first PCM block (queue wait included).",
            ["dialect"], namespace=ns, buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram(
            "queue_wait_seconds", "Time a job waited in the queue before generation started.",
            ["dialect"], namespace=ns, buckets=QUEUE_BUCKETS, registry=r)
        self.generation = Histogram(
            "generation_seconds", "Time the inference thread spent generating one job.",
            ["dialect"], namespace=ns, buckets=GENERATION_BUCKETS, registry=r)
        self.real_time_factor = Histogram(
            "generation_real_time_factor",
            "Generation seconds per second of audio for completed jobs (below 1 is faster than real time).",
            ["dialect"], namespace=ns, buckets=RTF_BUCKETS, registry=r)
        self.audio = Counter(
            "generated_audio_seconds", "Seconds of audio generated.", ["dialect"], namespace=ns, registry=r)
        self.cancellations = Counter(
            "cancellations", "Jobs cancelled by the client: while queued or mid-generation (interrupted).",
            ["dialect", "stage"], namespace=ns, registry=r)
        self.encode = Histogram(
            "encode_seconds", "Encoder time spent on one response, by output format.",
            ["format"], namespace=ns, buckets=ENCODE_BUCKETS, registry=r)
        self.prefill_tokens = Histogram(
            "prefill_tokens", "Backbone tokens prefilled before a job's first audio (CSM): its own text when "
            "the voice prompt and conversation were already in the KV cache.",
            ["dialect"], namespace=ns, buckets=PREFILL_BUCKETS, registry=r)
        self.context_cache = Gauge(
            "context_cache_turns", "Conversation turns held in the context cache.", namespace=ns, registry=r)
        self.context_lookups = Counter(
            "context_lookups", "Context cache lookups; hit rate = hit / (hit + miss).",
            ["result"], namespace=ns, registry=r)
        for result in ("hit", "miss"):  # export zeros so the hit-rate query works from the start
            self.context_lookups.labels(result=result)
        r.register(_PeakMemoryCollector())
        if process:
            ProcessCollector(registry=r)  # process_* (RSS, CPU, fds, start time) where /proc exists
            PlatformCollector(registry=r)  # python_info
            if not os.path.isdir("/proc/self"):
                r.register(_MachMemoryCollector())  # macOS: process_resident_memory_bytes via Mach

    # -- requests ------------------------------------------------------------------------
    def observe_request(self, dialect: str, route: str, response_format: str | None, status: int | str,
                        streamed: bool, duration: float | None = None) -> None:
        """One finished HTTP request. `route` must be the route template (request.url_rule.rule),
        never the raw path: voice ids in paths would make unbounded label values."""
        self.requests.labels(dialect=dialect or "none", route=route or "unmatched",
                             format=response_format or "none", status=str(status),
                             streamed=_bool(streamed)).inc()
        if duration is not None:
            self.request_duration.labels(dialect=dialect or "none", route=route or "unmatched").observe(duration)

    def observe_record(self, fields: Mapping[str, Any]) -> None:
        """An observer for logs.init_request_log: the request line's fields → observe_request."""
        duration_ms = fields.get("duration_ms")
        self.observe_request(
            str(fields.get("dialect") or "none"), str(fields.get("route") or "unmatched"),
            fields.get("format"), fields.get("status") or 0, bool(fields.get("streamed")),
            None if duration_ms is None else duration_ms / 1000.0,
        )

    # -- jobs ----------------------------------------------------------------------------
    def observe_job(self, job: Any, dialect: str) -> None:
        """A job the engine finished (or dropped because it was cancelled while queued)."""
        dialect = dialect or "unknown"
        if job.started_at is None:
            if job.cancel.is_set():
                self.cancellations.labels(dialect=dialect, stage="queued").inc()
            return
        self.queue_wait.labels(dialect=dialect).observe(max(0.0, job.started_at - job.submitted_at))
        if job.first_audio_at is not None:
            self.time_to_first_audio.labels(dialect=dialect).observe(max(0.0, job.first_audio_at - job.submitted_at))
            if getattr(job, "first_prefill_tokens", None) is not None:
                self.prefill_tokens.labels(dialect=dialect).observe(job.first_prefill_tokens)
        audio_seconds = job.audio_seconds
        if audio_seconds > 0:
            self.audio.labels(dialect=dialect).inc(audio_seconds)
        if job.finished_at is not None:
            generation = max(0.0, job.finished_at - job.started_at)
            self.generation.labels(dialect=dialect).observe(generation)
            # An interrupted job's ratio includes the frame in flight at cancel time: skip it.
            if audio_seconds > 0 and not job.interrupted:
                self.real_time_factor.labels(dialect=dialect).observe(generation / audio_seconds)
        if job.interrupted:
            self.cancellations.labels(dialect=dialect, stage="generating").inc()

    def observe_engine_job(self, job: Any) -> None:
        """Engine.on_job_done observer: the dialect comes from SpeechRequest.dialect if set."""
        self.observe_job(job, getattr(job.request, "dialect", None) or "unknown")

    # -- audio and context -----------------------------------------------------------------
    def observe_encode(self, response_format: str, seconds: float) -> None:
        self.encode.labels(format=response_format).observe(seconds)

    def set_context_cache(self, size: int) -> None:
        self.context_cache.set(size)

    def observe_context_lookup(self, hit: bool) -> None:
        self.context_lookups.labels(result="hit" if hit else "miss").inc()

    # -- scrape-time gauges ------------------------------------------------------------------
    def watch_engine(self, engine: Any) -> None:
        """Queue depth, engine state and model figures, read from `engine` at each scrape."""
        self.registry.register(_EngineCollector(engine))

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The scrape body and its content type, negotiated like prometheus_client's own app."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def init_metrics(app: Flask, engine: Any | None = None, *, observe_jobs: bool = True) -> Metrics:
    """Create the app's Metrics, store it in app.extensions, register GET /metrics and, given
    an engine, its scrape-time gauges and (observe_jobs) an on_job_done observer."""
    metrics = Metrics()
    app.extensions[EXTENSION] = metrics
    app.register_blueprint(bp)
    if engine is not None:
        metrics.watch_engine(engine)
        if observe_jobs:
            engine.on_job_done.append(metrics.observe_engine_job)
    return metrics


def metrics() -> Metrics:
    """This app's Metrics (inside a request or app context)."""
    return current_app.extensions[EXTENSION]


@bp.get("/metrics")
def scrape() -> Response:
    body, content_type = metrics().exposition(request.headers.get("Accept"))
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


# -- collectors ------------------------------------------------------------------------------
class _EngineCollector(Collector):
    def __init__(self, engine: Any):
        self.engine = engine

    def collect(self) -> Iterable[Metric]:
        engine = self.engine
        ns = NAMESPACE
        yield GaugeMetricFamily(f"{ns}_queue_depth", "Jobs waiting for the inference thread.",
                                value=engine.queue_depth)
        yield GaugeMetricFamily(f"{ns}_generating", "1 while the inference thread is generating a job.",
                                value=1 if engine.current is not None else 0)
        state = GaugeMetricFamily(f"{ns}_engine_state", "1 for the engine's current state.", labels=["state"])
        for name in ENGINE_STATES:
            state.add_metric([name], 1 if engine.state == name else 0)
        yield state
        backend = engine.backend
        try:
            status = backend.status() or {}
        except Exception:  # noqa: BLE001 - a scrape must not fail because a backend is busy
            log.debug("backend.status() failed during a scrape", exc_info=True)
            status = {}
        yield GaugeMetricFamily(f"{ns}_model_loaded", "1 when the model is loaded in memory, 0 when unloaded.",
                                value=1 if status.get("loaded") else 0)
        memory_gb = status.get("memory_gb")
        if isinstance(memory_gb, (int, float)):
            yield GaugeMetricFamily(f"{ns}_model_memory_bytes", "Memory the backend reports for the model.",
                                    value=memory_gb * 1024 ** 3)
        info = InfoMetricFamily(f"{ns}_build", "Server version, backend and model.")
        info.add_metric([], {"version": __version__, "backend": str(getattr(backend, "name", "unknown")),
                             "model": str(status.get("model_id") or "")})
        yield info


class _PeakMemoryCollector(Collector):
    """Peak resident memory: works on Linux and macOS with the standard library alone."""

    def collect(self) -> Iterable[Metric]:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_bytes = peak if sys.platform == "darwin" else peak * 1024  # macOS: bytes, Linux: KiB
        yield GaugeMetricFamily(f"{NAMESPACE}_process_peak_resident_memory_bytes",
                                "Highest resident memory of this process since it started.", value=peak_bytes)


class _MachTaskBasicInfo(ctypes.Structure):
    # <mach/task_info.h> mach_task_basic_info, declared under #pragma pack(4).
    _pack_ = 4
    _fields_ = [
        ("virtual_size", ctypes.c_uint64),
        ("resident_size", ctypes.c_uint64),
        ("resident_size_max", ctypes.c_uint64),
        ("user_time", ctypes.c_int32 * 2),
        ("system_time", ctypes.c_int32 * 2),
        ("policy", ctypes.c_int32),
        ("suspend_count", ctypes.c_int32),
    ]


class _MachMemoryCollector(Collector):
    """process_resident/virtual_memory_bytes on macOS, where ProcessCollector has no /proc."""

    _MACH_TASK_BASIC_INFO = 20

    def __init__(self) -> None:
        self._libc = None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.dylib")
            self._task = ctypes.c_uint32.in_dll(libc, "mach_task_self_")
            libc.task_info.argtypes = [ctypes.c_uint32, ctypes.c_int32, ctypes.c_void_p,
                                       ctypes.POINTER(ctypes.c_uint32)]
            libc.task_info.restype = ctypes.c_int32
            self._libc = libc
        except (OSError, ValueError, AttributeError):
            pass

    def collect(self) -> Iterable[Metric]:
        if self._libc is None:
            return
        info = _MachTaskBasicInfo()
        count = ctypes.c_uint32(ctypes.sizeof(info) // 4)
        rc = self._libc.task_info(self._task.value, self._MACH_TASK_BASIC_INFO, ctypes.byref(info), ctypes.byref(count))
        if rc != 0:
            return
        yield GaugeMetricFamily("process_resident_memory_bytes", "Resident memory size in bytes.",
                                value=info.resident_size)
        yield GaugeMetricFamily("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                                value=info.virtual_size)


def _bool(value: bool) -> str:
    return "true" if value else "false"
