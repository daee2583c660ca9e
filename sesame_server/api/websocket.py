"""WebSocket endpoints on the HTTP port: Flask routes the upgrade request (so the guards,
the dialect's errors and the request log apply as to any request), `websockets` does the
handshake and the framing, and the connection then runs on its own thread, not a waitress
worker (see takeover.py and ARCHITECTURE.md, "WebSockets")."""

from __future__ import annotations

import logging
import threading
from typing import Callable

from flask import Response, request
from websockets.datastructures import Headers
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.sync.connection import Connection

from sesame_server.api.errors import APIError
from sesame_server.realtime.sockets import OpenSockets
from sesame_server.runtime import request_id, runtime
from sesame_server.takeover import TAKE_SOCKET, ConnectionGone

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 256 * 1024  # one client message; past it websockets closes with 1009
PING_SECONDS = 20.0  # keepalive pings; a peer silent past PING_SECONDS more is gone
CLOSE_SECONDS = 5.0

Session = Callable[[Connection], None]


def upgrade(session: Session, name: str, *, pending: bool = False) -> Response:
    """Accept this request as a WebSocket and run `session(connection)` on a new thread.

    `pending`: the key is still to come (in the first message), so the socket waits in the
    MAX_PENDING_WEBSOCKETS pool until the session admits it (OpenSockets.admit).
    The route is registered with websocket=True: werkzeug sends plain requests to the 426 of
    api/__init__.py. Raises APIError (in the caller's dialect, before anything is taken)
    when the handshake is invalid, the server cannot upgrade, or too many sockets are open."""
    take_socket = request.environ.get(TAKE_SOCKET)
    if take_socket is None:
        raise APIError(501, "WebSocket endpoints need the server `sesame-tts serve` runs; this WSGI server "
                            "cannot hand a connection over.", code="websocket_unavailable")
    # waitress already parsed the request: one protocol object answers it (accept: key, version,
    # 101), and the connection gets a second one that starts OPEN, reading frames.
    handshake_protocol = ServerProtocol()
    handshake = handshake_protocol.accept(Request(path=request.full_path,
                                                  headers=Headers(list(request.headers.items()))))
    if handshake.status_code != 101:
        raise APIError(400, f"Invalid WebSocket handshake: {handshake_protocol.handshake_exc}",
                       code="invalid_handshake")
    sockets = runtime().sockets
    if not sockets.limit:
        raise APIError(503, "WebSockets are turned off on this server (MAX_WEBSOCKETS=0).",
                       code="websocket_unavailable")
    if not sockets.reserve(pending):
        if pending and not sockets.pending_limit:
            raise APIError(401, "Send the API key as the xi-api-key header or the authorization query parameter: "
                                "this server takes none in the first message (MAX_PENDING_WEBSOCKETS=0).",
                           code="invalid_api_key")
        if pending:
            raise APIError(503, f"{sockets.pending_limit} WebSocket connections are waiting for their API key "
                                "(MAX_PENDING_WEBSOCKETS); send the key as the xi-api-key header, or try again "
                                "later.", code="system_busy", headers={"Retry-After": "1"})
        raise APIError(503, f"{sockets.limit} WebSocket connections are open (MAX_WEBSOCKETS); try again later.",
                       code="system_busy", headers={"Retry-After": "1"})
    connection = None
    try:
        raw = take_socket()
        handshake.headers["x-request-id"] = handshake.headers["request-id"] = request_id()
        handshake_protocol.send_response(handshake)
        raw.sendall(b"".join(handshake_protocol.data_to_send()))
        protocol = ServerProtocol(state=State.OPEN, max_size=MAX_MESSAGE_BYTES)
        connection = Connection(raw, protocol, ping_interval=PING_SECONDS, ping_timeout=PING_SECONDS,
                                close_timeout=CLOSE_SECONDS)
    except (ConnectionGone, OSError) as exc:
        log.info("WebSocket %s: the client left during the handshake (%s)", name, exc)
    except BaseException:
        sockets.opened(None, pending)  # the slot goes back, whatever happened
        raise
    if not sockets.opened(connection, pending):
        if connection is not None:  # the server began shutting down during the handshake
            connection.close(1001, "server shutting down")
        return Response(status=101)
    threading.Thread(target=_run, args=(session, connection, sockets, name), name=f"ws-{name}",
                     daemon=True).start()
    return Response(status=101)


def _run(session: Session, connection: Connection, sockets: OpenSockets, name: str) -> None:
    try:
        connection.start_keepalive()
        session(connection)
    except Exception:  # noqa: BLE001 - one socket's failure is never the server's
        log.exception("WebSocket %s failed", name)
        connection.close(1011, "internal error; see the server log")
    finally:
        connection.close()
        sockets.closed(connection)
