"""Draining: what a node does between SIGTERM and exit, so a rolling restart loses nothing.

SIGTERM starts it (cli.py). From then on `/ready` answers 503 (a balancer stops sending),
new API requests and WebSocket upgrades get 503 + Retry-After in their dialect (a balancer
with `proxy_next_upstream http_503` retries them on another node), and the requests already
in flight, streams included, run to their end. The process exits when nothing is in flight
and no WebSocket is open, or after DRAIN_SECONDS, whichever comes first.

`InFlight` counts HTTP requests from the moment the WSGI server hands them over until their
response iterable is closed (the last byte sent, or the client gone); probes do not count.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from werkzeug.wsgi import ClosingIterator

log = logging.getLogger(__name__)

PROBES = frozenset({"/health", "/ready", "/metrics"})  # never hold a drain open
RETRY_AFTER_SECONDS = 2  # what a refused client is told: another node is up by then


class Drain:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._in_flight = 0
        self.started_at: float | None = None

    @property
    def draining(self) -> bool:
        return self.started_at is not None

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def begin(self) -> None:
        with self._lock:
            if self.started_at is None:
                self.started_at = time.monotonic()
                log.info("Draining: refusing new requests, finishing %d in flight", self._in_flight)

    def enter(self) -> None:
        with self._lock:
            self._in_flight += 1

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._lock.notify_all()

    def wait(self, seconds: float, busy: Callable[[], int] = lambda: 0) -> bool:
        """Until nothing is in flight and `busy()` (open WebSockets) is 0, or `seconds` pass.
        True when it emptied."""
        deadline = time.monotonic() + seconds
        with self._lock:
            while self._in_flight > 0 or busy() > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("Drain timed out after %.0f s with %d requests in flight, %d WebSockets open",
                                seconds, self._in_flight, busy())
                    return False
                self._lock.wait(min(left, 0.1))  # WebSockets close without notifying: poll them
        return True


class InFlight:
    """WSGI middleware: counts the requests a Drain waits for."""

    def __init__(self, app, drain: Drain):
        self.app = app
        self.drain = drain

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") in PROBES:
            return self.app(environ, start_response)
        self.drain.enter()
        try:
            result = self.app(environ, start_response)
        except BaseException:
            self.drain.leave()
            raise
        return ClosingIterator(result, [self.drain.leave])
