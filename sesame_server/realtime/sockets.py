"""The open WebSocket connections of one server."""

from __future__ import annotations

import threading

from websockets.sync.connection import Connection


class OpenSockets:
    """The open WebSocket connections: two pools of slots checked before the upgrade, and
    close_all() for shutdown (1001 going away).

    `limit` (MAX_WEBSOCKETS) counts the sockets that showed the key, or needed none;
    `pending_limit` (MAX_PENDING_WEBSOCKETS) the ones whose key is still to come in their
    first message. A pending socket moves to the real pool when it shows its key
    (`admit`), so sockets that never do cannot hold the slots of clients that have it."""

    def __init__(self, limit: int, pending_limit: int = 0) -> None:
        self.limit = limit
        self.pending_limit = pending_limit
        self._lock = threading.Lock()
        self._open: set[Connection] = set()
        self._pending: set[Connection] = set()
        self._reserved = 0  # handshakes in progress, by pool
        self._reserved_pending = 0
        self._closing = False

    def __len__(self) -> int:
        with self._lock:
            return len(self._open) + self._reserved + len(self._pending) + self._reserved_pending

    def reserve(self, pending: bool = False) -> bool:
        """A slot in the pending pool or the real one; False when that pool is full."""
        with self._lock:
            if pending:
                if len(self._pending) + self._reserved_pending >= self.pending_limit:
                    return False
                self._reserved_pending += 1
            else:
                if len(self._open) + self._reserved >= self.limit:
                    return False
                self._reserved += 1
            return True

    def opened(self, connection: Connection | None, pending: bool = False) -> bool:
        """Count a reserved slot as open; False when close_all() already ran (the caller
        closes the connection itself: shutting down raced its handshake)."""
        with self._lock:
            if pending:
                self._reserved_pending -= 1
            else:
                self._reserved -= 1
            if connection is None or self._closing:
                return False
            (self._pending if pending else self._open).add(connection)
            return True

    def admit(self, connection: Connection) -> bool:
        """A pending socket showed its key: it takes a real slot; False when none is free."""
        with self._lock:
            if connection not in self._pending:
                return connection in self._open
            if len(self._open) + self._reserved >= self.limit:
                return False
            self._pending.discard(connection)
            self._open.add(connection)
            return True

    def closed(self, connection: Connection) -> None:
        with self._lock:
            self._open.discard(connection)
            self._pending.discard(connection)

    def close_all(self, code: int = 1001, reason: str = "server shutting down") -> None:
        with self._lock:
            self._closing = True
            connections = [*self._open, *self._pending]
        for connection in connections:
            connection.close(code, reason)
