"""What the routes share: settings, the engine, voices, conversation memory, metrics."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from flask import current_app, g

from sesame_server.config import Settings
from sesame_server.context.turns import TurnCache
from sesame_server.engine.engine import Engine
from sesame_server.ops.metrics import Metrics
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

    def close(self) -> None:
        """Stop the inference thread (for hosts that embed the API and shut down)."""
        self.engine.stop()


def runtime() -> Runtime:
    return current_app.extensions[EXTENSION]


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id() -> str:
    """This request's id (sent back as x-request-id / request-id)."""
    if "request_id" not in g:
        g.request_id = new_request_id()
    return g.request_id
