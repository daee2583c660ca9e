"""What the routes share: settings, the engine, voices, conversation memory, metrics."""

from __future__ import annotations

import socket
import time
import uuid
from dataclasses import dataclass, field

from flask import current_app, g

from sesame_server.config import Settings
from sesame_server.context.turns import TurnCache
from sesame_server.engine.engine import Engine
from sesame_server.ops.drain import Drain
from sesame_server.ops.metrics import Metrics
from sesame_server.realtime.sockets import OpenSockets
from sesame_server.voices.catalogue import VoiceCatalogue
from sesame_server.voices.custom import CustomVoiceStore

EXTENSION = "sesame_tts"


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    catalogue: VoiceCatalogue
    custom_voices: CustomVoiceStore
    metrics: Metrics
    turns: TurnCache | None = None  # conversation memory; None when off or the backend ignores context
    started_at: float = field(default_factory=time.time)
    characters_served: int = 0
    public_url: str = ""  # how clients reach us (preview_url): PUBLIC_URL, else the bound address
    sockets: OpenSockets = field(default_factory=lambda: OpenSockets(0))  # set from settings
    drain: Drain = field(default_factory=Drain)  # SIGTERM: finish what is in flight, refuse the rest
    node: str = ""  # X-Served-By: NODE_NAME, else the host name

    def __post_init__(self) -> None:
        self.sockets.limit = self.settings.max_websockets
        self.sockets.pending_limit = self.settings.max_pending_websockets  # keys still to come
        self.node = node_name(self.settings)
        if not self.public_url:
            self.public_url = self.settings.public_url or bound_url(self.settings.host, self.settings.port)

    def listening_on(self, host: str, port: int) -> None:
        """The address the server actually bound (PORT=0 picks one); PUBLIC_URL still wins."""
        if not self.settings.public_url:
            self.public_url = bound_url(host, port)

    def close(self) -> None:
        """Close the WebSockets (1001) and stop the inference thread (for hosts that embed the API and shut down)."""
        self.sockets.close_all()
        self.engine.stop()
        if self.turns is not None:  # TURN_STORE: the last turns reach it, so a session continues elsewhere
            self.turns.close()


def node_name(settings: Settings) -> str:
    """This server's name in X-Served-By, /ready and the metrics: NODE_NAME, else the host name."""
    return settings.node_name or socket.gethostname()


def bound_url(host: str, port: int) -> str:
    """An URL for a bound address, never a request's Host header (which a client chooses)."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # all interfaces: the one every local client can use
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def runtime() -> Runtime:
    return current_app.extensions[EXTENSION]


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id() -> str:
    """This request's id (sent back as x-request-id / request-id)."""
    if "request_id" not in g:
        g.request_id = new_request_id()
    return g.request_id
