"""The open WebSocket connections of one server."""

from __future__ import annotations

import threading

from websockets.sync.connection import Connection


class OpenSockets:
    """The open WebSocket connections: a cap checked before the upgrade, and close_all()
    for shutdown (1001 going away)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._open: set[Connection] = set()
        self._reserved = 0
        self._closing = False

    def __len__(self) -> int:
        with self._lock:
            return len(self._open) + self._reserved

    def reserve(self) -> bool:
        with self._lock:
            if len(self._open) + self._reserved >= self.limit:
                return False
            self._reserved += 1
            return True

    def opened(self, connection: Connection | None) -> bool:
        """Count a reserved slot as open; False when close_all() already ran (the caller
        closes the connection itself: shutting down raced its handshake)."""
        with self._lock:
            self._reserved -= 1
            if connection is None or self._closing:
                return False
            self._open.add(connection)
            return True

    def closed(self, connection: Connection) -> None:
        with self._lock:
            self._open.discard(connection)

    def close_all(self, code: int = 1001, reason: str = "server shutting down") -> None:
        with self._lock:
            self._closing = True
            connections = list(self._open)
        for connection in connections:
            connection.close(code, reason)
