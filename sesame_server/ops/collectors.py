"""Gauges computed at scrape time: the engine's published status and this process's memory.

A scrape runs on an HTTP thread, so the engine collector reads only what is safe from any
thread: the EngineStatus snapshot the inference thread publishes, the lock-protected queue
depth, whether a job is current and its busy seconds (engine.status.BusyTime). It never
calls the backend (MLX state belongs to the inference thread). Memory comes from
ops.memory, in bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from sesame_server import __version__
from sesame_server.ops import memory

if TYPE_CHECKING:
    from sesame_server.engine.engine import Engine

NAMESPACE = "sesame_tts"
ENGINE_STATES = ("starting", "loading", "ready", "unloaded", "error", "stopped")


class EngineCollector(Collector):
    """Queue depth, engine state and model figures of one engine."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def collect(self) -> Iterable[Metric]:
        engine = self.engine
        status = engine.status  # one snapshot: state and backend figures agree
        ns = NAMESPACE
        yield GaugeMetricFamily(f"{ns}_queue_depth", "Jobs waiting for the inference thread.",
                                value=engine.queue_depth)
        yield GaugeMetricFamily(f"{ns}_generating", "1 while the inference thread is generating a job.",
                                value=1 if engine.current is not None else 0)
        # A counter, not a gauge of "busy now": rate() over any window is the utilisation
        # (0 to 1) an autoscaler wants, whatever the scrape interval.
        yield CounterMetricFamily(f"{ns}_busy_seconds", "Seconds the inference thread spent generating; "
                                  "rate() is its utilisation, 0 to 1.", value=engine.busy.seconds())
        state = GaugeMetricFamily(f"{ns}_engine_state", "1 for the engine's current state.", labels=["state"])
        for name in ENGINE_STATES:
            state.add_metric([name], 1 if status.state == name else 0)
        yield state
        backend = status.backend
        yield GaugeMetricFamily(f"{ns}_model_loaded", "1 when the model is loaded in memory, 0 when unloaded.",
                                value=1 if backend.get("loaded") else 0)
        memory_bytes = backend.get("memory_bytes")
        if isinstance(memory_bytes, (int, float)) and not isinstance(memory_bytes, bool):
            yield GaugeMetricFamily(f"{ns}_model_memory_bytes", "Memory the backend reports for the model.",
                                    value=memory_bytes)
        info = InfoMetricFamily(f"{ns}_build", "Server version, backend and model.")
        info.add_metric([], {"version": __version__, "backend": str(engine.info.name),
                             "model": str(backend.get("model_id") or "")})
        yield info


class CountCollector(Collector):
    """One gauge read at scrape time from a thread-safe count (e.g. open WebSockets)."""

    def __init__(self, name: str, documentation: str, count: Callable[[], int]):
        self.name, self.documentation, self.count = f"{NAMESPACE}_{name}", documentation, count

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(self.name, self.documentation, value=self.count())


class PeakMemoryCollector(Collector):
    """Highest resident memory of this process since it started."""

    def collect(self) -> Iterable[Metric]:
        peak = memory.peak_rss_bytes()
        if peak is not None:
            yield GaugeMetricFamily(f"{NAMESPACE}_process_peak_resident_memory_bytes",
                                    "Highest resident memory of this process since it started.", value=peak)


class ProcessMemoryCollector(Collector):
    """process_resident/virtual_memory_bytes where prometheus_client's ProcessCollector has
    no /proc to read (macOS); the names match, so dashboards work on both."""

    def collect(self) -> Iterable[Metric]:
        rss, virtual = memory.rss_bytes(), memory.virtual_bytes()
        if rss is not None:
            yield GaugeMetricFamily("process_resident_memory_bytes", "Resident memory size in bytes.", value=rss)
        if virtual is not None:
            yield GaugeMetricFamily("process_virtual_memory_bytes", "Virtual memory size in bytes.", value=virtual)
