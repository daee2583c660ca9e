"""The HTTP connections waitress holds for us: how long a request may take to arrive, how many
connections one address may hold, and the requests the connection refuses, handed to the app
so the client gets its dialect's error body (waitress itself answers plain text).

Timeouts, checked on waitress's event-loop thread every time it polls (at least once a
second):
  - headers: a request's line and headers must arrive within HEADER_TIMEOUT_SECONDS of its
    first byte (of the connection's opening, for the first request), however slowly they
    trickle: waitress's own timeout only counts silence, so a byte now and then held a slot
    forever (slowloris);
  - idle: between requests, or a body or reply that stopped moving, IDLE_TIMEOUT_SECONDS
    (waitress's channel_timeout: the same rule, checked every 30 s);
  - never while a reply is being produced: a stream may speak for an hour.
Refusals: headers over MAX_HEADER_BYTES, a body over its route's limit (declared, or chunked
and growing past it: refused at that byte, never buffered), a malformed request. The request
goes to the app without its body (and, when its headers were the problem, without them), with
a `Refusal` in the environ (REFUSED); api/guard.py answers it; the connection then closes,
reading what the client still sends for a moment first (a close with unread bytes resets the
connection, and the client could lose the answer: nginx's lingering close).

This reaches into waitress's channel and parser (`readable`, `received`, `handle_close`, the
parser's fields), which are not public API: waitress is pinned (requirements.lock) and
tests/test_connections.py and tests/test_security.py exercise every path.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

from waitress.parser import HTTPRequestParser

from sesame_server.takeover import TakeoverChannel, TakeoverTask

log = logging.getLogger(__name__)

REFUSED = "sesame_tts.refused"  # environ key: the Refusal of a request the connection refused
_REQUEST_LINE_BYTES = 8192  # kept to name the route of a request whose headers were refused
LINGER_SECONDS = 2.0


@dataclass(frozen=True)
class Refusal:
    status: int  # 400, 413, 431 or 501
    reason: str  # waitress's words, for a malformed request


BodyLimit = Callable[[str, str], int]  # (method, path) -> the most bytes that route's body may have


@dataclass
class ConnectionLimits:
    """One server's connection rules, shared by its listeners (the event-loop thread and
    closing channels use it, hence the lock)."""

    header_timeout: float
    idle_timeout: float
    per_client: int  # 0: no limit
    body_limit: BodyLimit
    _open: Counter = field(default_factory=Counter)
    _warned: set = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, client: str) -> bool:
        with self._lock:
            if self.per_client and self._open[client] >= self.per_client:
                if client not in self._warned:  # once while that address stays at its limit
                    self._warned.add(client)
                    log.warning("Refusing connections from %s: it holds %d (MAX_CONNECTIONS_PER_CLIENT)",
                                client, self._open[client])
                return False
            self._open[client] += 1
            return True

    def release(self, client: str) -> None:
        with self._lock:
            self._open[client] -= 1
            if self._open[client] <= 0:
                del self._open[client]
            self._warned.discard(client)


class GuardedParser(HTTPRequestParser):
    """waitress's parser, whose refusals become a `refusal` the app answers."""

    refusal: Refusal | None = None

    def __init__(self, adj, body_limit: BodyLimit):
        super().__init__(adj)
        self._body_limit = body_limit
        self._limit: int | None = None
        self._request_line = b""

    def received(self, data: bytes) -> int:
        in_head = self.body_rcv is None
        if in_head and b"\n" not in self._request_line:
            self._request_line = (self._request_line + data)[:_REQUEST_LINE_BYTES]
        consumed = super().received(data)
        if self.error is not None:
            # Headers too large or malformed: keep only the request line (the route, so the
            # dialect); a body error (chunked framing, waitress's own size limit) keeps them.
            headers_lost = in_head and self.error.code != 413
            self._refuse(Refusal(self.error.code, self.error.body), keep_headers=not headers_lost)
        elif self.headers_finished and self.refusal is None and self._body_size() and \
                self._body_size() > self._route_limit():
            self._refuse(Refusal(413, "body too large"), keep_headers=True)
        if self.refusal is not None:
            return len(data)  # what follows is not another request: the connection closes
        return consumed

    def _route_limit(self) -> int:
        if self._limit is None:
            self._limit = self._body_limit(self.command, self.path)
        return self._limit

    def _body_size(self) -> int:
        if self.chunked:
            return len(self.body_rcv) if self.body_rcv is not None else 0
        return self.content_length

    def _refuse(self, refusal: Refusal, *, keep_headers: bool) -> None:
        self.close()  # the body buffer (maybe a temporary file)
        self.body_rcv = None  # the app reads an empty body
        self.error = None
        self.refusal = refusal
        self.completed = True
        self.expect_continue = False  # no "100 Continue" for a body we will not read
        if not keep_headers:
            self.headers = {}
            line = self._request_line.split(b"\n", 1)[0].rstrip(b"\r")
            try:
                self.parse_header(line + b"\r\n")
            except Exception:  # noqa: BLE001 - the request line itself is garbage: any route will do
                self.headers = {}
                self.parse_header(b"GET / HTTP/1.0\r\n")
            self.body_rcv = None


class GuardedTask(TakeoverTask):
    def get_environment(self) -> dict:
        environ = super().get_environment()
        if self.request.refusal is not None:
            environ[REFUSED] = self.request.refusal
        return environ

    def build_response_header(self) -> bytes:
        if self.request.refusal is not None:
            self.set_close_on_finish()  # the rest of the request may still be on its way
        return super().build_response_header()


class GuardedChannel(TakeoverChannel):
    task_class = GuardedTask

    def __init__(self, server, sock, addr, adj, map=None, *, limits: ConnectionLimits):
        self.limits = limits
        self.parser_class = partial(GuardedParser, body_limit=limits.body_limit)
        self._client = addr[0] if isinstance(addr, tuple) and addr else "local"
        self._admitted = self._refusing = self._lingering = False
        self._head_started = 0.0
        self._served = False  # a request reached the app: between requests, the idle timeout applies
        self._linger_until = 0.0
        super().__init__(server, sock, addr, adj, map)
        self._admitted = limits.admit(self._client)
        if not self._admitted:
            self.handle_close()

    def received(self, data: bytes) -> bool:
        if self._refusing:
            return False  # the tail of a refused request: read and dropped
        before = self.request
        now = time.time()
        taken = super().received(data)
        if self.request is not None and self.request is not before:
            self._head_started = now  # a new request's first byte
        if self.requests and self.requests[-1].refusal is not None:
            self._refusing = True
        return taken

    def readable(self) -> bool:
        now = time.time()
        if self._lingering:
            if now > self._linger_until:
                self.will_close = True  # writable() then, and handle_write closes it
                return False
            return True
        if self._overdue(now):
            self.will_close = True  # as waitress's maintenance() closes an idle channel
            return False
        return super().readable()

    def _overdue(self, now: float) -> bool:
        if self.requests or self.will_close or self.close_when_flushed:
            return False  # a reply in progress, or closing anyway
        request = self.request
        if request is not None and not request.headers_finished:
            return now - self._head_started > self.limits.header_timeout
        if request is None and not self._served:
            return now - self.creation_time > self.limits.header_timeout
        return now - self.last_activity > self.limits.idle_timeout

    def service(self) -> None:
        self._served = True
        super().service()

    def handle_close(self) -> None:
        if self._refusing and not self._lingering and self.connected:
            self._lingering = True
            self._linger_until = time.time() + LINGER_SECONDS
            self.will_close = False
            try:
                self.socket.shutdown(socket.SHUT_WR)  # our answer is complete; the client may still send
                return
            except OSError:
                pass
        super().handle_close()

    def del_channel(self, map=None) -> None:
        if self._admitted:
            self._admitted = False
            self.limits.release(self._client)
        super().del_channel(map)


def channel_factory(limits: ConnectionLimits) -> Callable[..., GuardedChannel]:
    """What a waitress listener calls for each accepted connection."""
    return partial(GuardedChannel, limits=limits)
