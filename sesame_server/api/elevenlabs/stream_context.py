"""What a stream-input socket is made of: its options (from the route), its contexts, the
pieces of text queued for speaking."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from sesame_server.api.elevenlabs import stream_messages as wire
from sesame_server.api.elevenlabs.stream_messages import ClientMessage, ProtocolError, Wire
from sesame_server.config import Settings
from sesame_server.realtime.speaker import Speaker, Voicing
from sesame_server.realtime.text_buffer import TextBuffer


@dataclass(frozen=True)
class Piece:
    text: str
    voicing: Voicing | None = None  # None: the context's own voice


@dataclass(frozen=True)
class StreamLimits:
    """What one socket may make the server hold (Settings: MAX_INPUT_LENGTH, WS_MAX_*_CHARS,
    SLOW_READER_SECONDS)."""

    max_piece_chars: int = Settings.max_input_length  # one job's text
    max_context_chars: int = Settings.ws_max_context_chars  # text buffered and queued, not yet spoken
    max_socket_chars: int = Settings.ws_max_socket_chars  # the same, all contexts together
    send_timeout: float = Settings.slow_reader_seconds  # one send to a client that does not read

    @classmethod
    def of(cls, settings: Settings) -> "StreamLimits":
        return cls(settings.max_input_length, settings.ws_max_context_chars, settings.ws_max_socket_chars,
                   settings.slow_reader_seconds)


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
    first_message_timeout: float = 10.0  # a socket that sends nothing at all is closed after this...
    silent: Callable[[], ProtocolError] = lambda: ProtocolError("No message: connection closed.",
                                                                "input_timeout_exceeded")  # ...with this error
    admit: Callable[[], None] | None = None  # the key was shown: take a real slot (raises ProtocolError when full)
    limits: StreamLimits = StreamLimits()


@dataclass(eq=False)
class Context:
    id: str | None
    speaker: Speaker
    buffer: TextBuffer
    input_ended: bool = False  # a flush with no text came: the client's "that was all"
    ending: bool = False  # gracefully closing: isFinal after the queued pieces
    closed: bool = False  # isFinal sent (or the socket is gone): nothing more is sent for it
    queued: int = 0  # pieces queued or being spoken
    queued_chars: int = 0  # their text
    last_activity: float = field(default_factory=time.monotonic)
    voice_id: str | None = None  # dialogue: whose line the buffered text is (None: the context's voice)
    voicings: dict[str, Voicing] = field(default_factory=dict)


class WaitingText:
    """The text a socket holds that is not spoken yet (its contexts' buffers and queued
    pieces), against WS_MAX_CONTEXT_CHARS and WS_MAX_SOCKET_CHARS. The session's lock is held."""

    def __init__(self, limits: StreamLimits) -> None:
        self.limits = limits
        self._queued = 0  # text of the pieces queued or being spoken, every context

    def admit(self, context: Context, contexts: Iterable[Context], size: int) -> None:
        """Raises ProtocolError when `size` more characters for `context` pass a cap."""
        in_context = len(context.buffer.pending) + context.queued_chars + size
        in_socket = self._queued + sum(len(c.buffer.pending) for c in contexts) + size
        for waiting, limit, where in ((in_context, self.limits.max_context_chars, "this context"),
                                      (in_socket, self.limits.max_socket_chars, "this connection")):
            if waiting > limit:
                raise ProtocolError(f"Text waiting to be spoken in {where} would reach {waiting} characters; the "
                                    f"maximum is {limit}. Send more once its audio has arrived.",
                                    "max_character_limit_exceeded", context_id=context.id)

    def queued(self, context: Context, text: str) -> None:
        context.queued_chars += len(text)
        self._queued += len(text)

    def spoken(self, context: Context, text: str) -> None:
        context.queued_chars -= len(text)
        self._queued -= len(text)
