"""Serving the app with waitress."""

from __future__ import annotations

import errno
import logging
import resource
import socket

from flask import Flask
from waitress.server import BaseWSGIServer, create_server
from werkzeug.exceptions import HTTPException

from sesame_server.api.guard import MAX_HEADER_BYTES, MAX_UPLOAD_REQUEST_BYTES, body_limit
from sesame_server.config import Settings, is_loopback
from sesame_server.connections import BodyLimit, ConnectionLimits, channel_factory
from sesame_server.runtime import EXTENSION

log = logging.getLogger(__name__)


_OTHER_FILES = 256  # descriptors besides connections: model weights, logs, WebSockets, temporary files


class PortInUse(OSError):
    pass


def make_server(app: Flask, host: str, port: int, threads: int, settings: Settings | None = None):
    """A waitress server; port 0 picks a free one (see .effective_port). Its connection
    limits come from `settings` (default: the app's own, `create_app`'s runtime)."""
    settings = settings or app.extensions[EXTENSION].settings
    limits = ConnectionLimits(header_timeout=settings.header_timeout_seconds,
                              idle_timeout=settings.idle_timeout_seconds,
                              per_client=settings.max_connections_per_client, body_limit=route_body_limit(app, settings))
    try:
        server = create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            connection_limit=usable_connections(settings.connection_limit),
            channel_timeout=settings.idle_timeout_seconds,
            # connections.py refuses first and lets the app answer in the caller's dialect;
            # waitress's own limits (plain-text answers, turned into the same refusals) are the backstop.
            max_request_header_size=MAX_HEADER_BYTES,
            max_request_body_size=max(settings.max_body_bytes, MAX_UPLOAD_REQUEST_BYTES) + 1,
            asyncore_use_poll=True,  # select() fails on descriptors past 1024: CONNECTION_LIMIT may be more
            # Lets waitress notice a client that hung up while we generate
            # (environ["waitress.client_disconnected"]), so generation stops.
            channel_request_lookahead=1,
            ident="sesame-tts",
            clear_untrusted_proxy_headers=True,
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"Port {port} on {host} is already in use (another sesame-tts?). "
                f"Try PORT={next_free_port(host, port)} or stop the other process."
            ) from None
        raise
    # Our channel: timeouts, per-client limit, refusals the app answers (connections.py), and
    # WebSocket routes may take their connection (takeover.py); one listener per bound address.
    for listener in [server, *getattr(server, "map", {}).values()]:
        if isinstance(listener, BaseWSGIServer):
            listener.channel_class = channel_factory(limits)
    return server


def route_body_limit(app: Flask, settings: Settings) -> BodyLimit:
    """The body limit of the route a request goes to (guard.body_limit), known from its
    method and path before any of the body is read."""
    routes = app.url_map.bind("localhost")  # used on waitress's event-loop thread only

    def limit(method: str, path: str) -> int:
        try:
            endpoint, _ = routes.match(path, method=method)
        except HTTPException:  # no such route (or a redirect): the app answers without reading it
            return settings.max_body_bytes
        return body_limit(settings, endpoint.rsplit(".", 1)[-1])

    return limit


def usable_connections(wanted: int) -> int:
    """`wanted`, or fewer when the process may not open that many files: each connection is a
    file descriptor, besides the model's files, logs and WebSockets. Raises the soft limit
    (ulimit -n) up to the hard one first, as servers do."""
    needed = wanted + _OTHER_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (OSError, ValueError):  # macOS caps below RLIM_INFINITY (OPEN_MAX)
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        usable = max(8, soft - _OTHER_FILES)
        log.warning("CONNECTION_LIMIT=%d needs %d open files but this process may open %d (ulimit -n): "
                    "serving at most %d connections", wanted, needed, soft, usable)
        return usable
    return wanted


def next_free_port(host: str, port: int) -> int:
    for candidate in range(port + 1, min(port + 100, 65535)):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            try:
                probe.bind((host, candidate))
                return candidate
            except OSError:
                continue
    return 0


def warn_if_exposed(settings: Settings) -> None:
    if not is_loopback(settings.host) and not settings.api_key:
        log.warning(
            "Listening on %s with no API_KEY (ALLOW_REMOTE_WITHOUT_KEY=true): anyone who can reach this "
            "machine can use the server.", settings.host,
        )
