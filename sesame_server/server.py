"""Serving the app with waitress."""

from __future__ import annotations

import errno
import logging
import socket

from flask import Flask
from waitress.server import BaseWSGIServer, create_server

from sesame_server.config import Settings, is_loopback
from sesame_server.takeover import TakeoverChannel

log = logging.getLogger(__name__)


class PortInUse(OSError):
    pass


# Waitress reads a whole body before the app sees it; past this it answers 413 itself. The
# app's own limits (MAX_BODY_BYTES, voice uploads) are lower and answer in the caller's dialect.
MAX_REQUEST_BYTES = 80 * 1024 * 1024


def make_server(app: Flask, host: str, port: int, threads: int, max_request_bytes: int = MAX_REQUEST_BYTES):
    """A waitress server; port 0 picks a free one (see .effective_port)."""
    try:
        server = create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            max_request_body_size=max_request_bytes,
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
    # WebSocket routes may take their connection (takeover.py); one listener per bound address.
    for listener in [server, *getattr(server, "map", {}).values()]:
        if isinstance(listener, BaseWSGIServer):
            listener.channel_class = TakeoverChannel
    return server


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
