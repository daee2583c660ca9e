"""What a stream-input socket is made of: its options (from the route), its contexts, the
pieces of text queued for speaking."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from sesame_server.api.elevenlabs import stream_messages as wire
from sesame_server.api.elevenlabs.stream_messages import ClientMessage, Wire
from sesame_server.realtime.speaker import Speaker, Voicing
from sesame_server.realtime.text_buffer import TextBuffer


@dataclass(frozen=True)
class Piece:
    text: str
    voicing: Voicing | None = None  # None: the context's own voice


@dataclass
class StreamOptions:
    multi: bool
    route: str
    auto_mode: bool
    inactivity_timeout: float
    key: str | None  # the API key still to be shown in the first message; None: nothing to check
    voicing: Callable[[str | None, ClientMessage], Voicing]  # a context's voicing, from its first message
    speaker: Callable[[Voicing, str | None], Speaker]  # a context's speaker (logs and metrics each piece)
    wire: Wire = wire.TTS_WIRE
    line_voice: Callable[[Voicing, str], Voicing] | None = None  # dialogue: a line's voice id -> its voicing


@dataclass(eq=False)
class Context:
    id: str | None
    speaker: Speaker
    buffer: TextBuffer
    input_ended: bool = False  # a flush with no text came: the client's "that was all"
    ending: bool = False  # gracefully closing: isFinal after the queued pieces
    closed: bool = False  # isFinal sent (or the socket is gone): nothing more is sent for it
    queued: int = 0  # pieces queued or being spoken
    last_activity: float = field(default_factory=time.monotonic)
    voice_id: str | None = None  # dialogue: whose line the buffered text is (None: the context's voice)
    voicings: dict[str, Voicing] = field(default_factory=dict)
