"""One ElevenLabs stream-input socket: its contexts, the order they speak in, how they end.

Two threads per socket. The reader (the connection's session thread) parses messages,
buffers text per context and queues pieces; the speaker thread takes pieces in order of
arrival, across contexts, and streams their audio. So a close_context, a dropped socket or
a new context is seen while audio is being generated.

How a context ends (LiveKit and Pipecat both send close_context, at the end of a reply
and when the user barges in):
  - after a flush with no text (the client's "that was all"): the pieces already queued
    are spoken, then `isFinal`;
  - otherwise (text was still arriving, or the context was already ending): it is an
    interruption. The piece being generated stops within one frame, nothing queued for it
    is spoken, no audio for it is sent after the `isFinal` that answers at once; other
    contexts carry on.
The single-context socket (`stream-input`) ends with {"text": ""}: everything is spoken,
`isFinal`, close 1000. A dropped socket interrupts everything.
"""

from __future__ import annotations

import hmac
import logging
import queue
import threading
import time

from websockets.exceptions import ConnectionClosed
from websockets.sync.connection import Connection

from sesame_server.api.elevenlabs import stream_messages as wire
from sesame_server.api.elevenlabs.stream_context import Context, Piece, StreamOptions, WaitingText
from sesame_server.api.elevenlabs.stream_messages import ClientMessage, ProtocolError
from sesame_server.realtime.speaker import SpeakFailed
from sesame_server.realtime.text_buffer import DEFAULT_SCHEDULE, TextBuffer

log = logging.getLogger(__name__)

MAX_CONTEXTS = 5  # per socket, as ElevenLabs
TICK_SECONDS = 0.5  # how often the reader looks at the inactivity timers
_FINISH, _TURN_END, _CLOSE_SOCKET, _STOP = object(), object(), object(), object()


class StreamSession:
    def __init__(self, connection: Connection, options: StreamOptions) -> None:
        self.connection = connection
        self.options = options
        self.contexts: dict[str | None, Context] = {}
        self._lock = threading.RLock()  # contexts, their flags and every send
        self._work: queue.Queue = queue.Queue()
        self._key_checked = options.key is None
        self._closing = False
        self._last_message = time.monotonic()
        self._heard = False  # any message yet: a socket that sends none is closed (first_message_timeout)
        self._waiting = WaitingText(options.limits)  # text not spoken yet, against the caps
        # A send blocked this long (the client stopped reading) fails and the socket is
        # closed: the audio waiting for a client is what the kernel buffers hold, no more.
        connection.socket.settimeout(options.limits.send_timeout)

    # -- the reader -----------------------------------------------------------------------
    def run(self) -> None:
        speaker_thread = threading.Thread(target=self._speak_loop, name="ws-speaker", daemon=True)
        speaker_thread.start()
        try:
            while True:
                try:
                    frame = self.connection.recv(timeout=TICK_SECONDS)
                except TimeoutError:
                    self._check_inactivity()
                    continue
                self._last_message, self._heard = time.monotonic(), True
                if not self._closing:
                    self._handle(wire.parse(frame))
        except ProtocolError as exc:
            self._refuse(exc)
        except ConnectionClosed:
            pass
        finally:
            self._end_all()
            self._work.put((None, _STOP))
            speaker_thread.join()

    def _handle(self, message: ClientMessage) -> None:
        if not self._key_checked:
            self._check_key(message)
        if message.close_socket:
            self._close_socket()
            return
        key = message.context_id if self.options.multi else None
        context = self.contexts.get(key)
        if message.close_context:
            if context is not None:
                self._close_context(context)
            return
        lines = message.lines
        if context is None:
            if self.options.multi and not lines and not message.flush and not message.voices:
                return  # a keep-alive for the socket, or for a context already gone
            context = self._open(key, message)
        context.last_activity = time.monotonic()
        if not self.options.multi and not self.options.wire.dialogue and message.text == "":
            self._end_single(context)  # {"text": ""}: end of input on the single-context socket
            return
        for text, voice_id, new_turn in lines:
            if text.strip():
                context.input_ended = False
            if new_turn or (voice_id is not None and voice_id != context.voice_id):
                self._queue_texts(context, context.buffer.flush())  # the previous voice's
                context.voice_id = voice_id
            with self._lock:
                self._waiting.admit(context, self.contexts.values(), len(text))
            self._queue_texts(context, context.buffer.add(text))
        if message.flush:
            self._queue_texts(context, context.buffer.flush())
            context.input_ended = context.input_ended or message.ends_input
            if self.options.wire.dialogue and not self.options.multi:
                self._queue(context, _TURN_END)  # dialogue stream-input: each flushed turn decodes alone
        elif message.try_trigger_generation:
            self._queue_texts(context, context.buffer.trigger())

    def _queue_texts(self, context: Context, texts: list[str]) -> None:
        for text in texts:
            self._queue(context, self._piece(context, text))

    def _piece(self, context: Context, text: str) -> Piece:
        voice_id = context.voice_id
        if voice_id is None or self.options.line_voice is None:
            return Piece(text)
        if voice_id not in context.voicings:
            context.voicings[voice_id] = self.options.line_voice(context.speaker.voicing, voice_id)
        return Piece(text, context.voicings[voice_id])

    def _check_key(self, message: ClientMessage) -> None:
        given = message.xi_api_key or (message.authorization or "").removeprefix("Bearer ").strip()
        if not given or not hmac.compare_digest(given.encode(), (self.options.key or "").encode()):
            raise ProtocolError("Invalid or missing API key: send it as the xi-api-key header or as xi_api_key "
                                "in the first message.", "invalid_api_key")
        if self.options.admit is not None:
            self.options.admit()  # from the pool of sockets awaiting their key to a real slot
        self._key_checked = True

    def _open(self, key: str | None, message: ClientMessage) -> Context:
        open_contexts = sum(1 for c in self.contexts.values() if not c.closed)
        if open_contexts >= MAX_CONTEXTS:
            raise ProtocolError(f"Maximum simultaneous contexts per WebSocket connection exceeded ({MAX_CONTEXTS}). "
                                "Please close an existing context before opening a new one.",
                                "max_active_conversations", context_id=key)
        schedule = DEFAULT_SCHEDULE
        if message.generation_config and message.generation_config.chunk_length_schedule:
            schedule = tuple(message.generation_config.chunk_length_schedule)
        voicing = self.options.voicing(key, message)
        buffer = TextBuffer(schedule, auto_mode=self.options.auto_mode, max_piece=self.options.limits.max_piece_chars)
        context = Context(key, self.options.speaker(voicing, key), buffer)
        with self._lock:
            self.contexts[key] = context
        return context

    def _queue(self, context: Context, piece: object) -> None:
        if piece is None:
            return
        with self._lock:
            if context.closed:
                return
            if isinstance(piece, Piece):
                context.queued += 1
                self._waiting.queued(context, piece.text)
        self._work.put((context, piece))

    def _close_context(self, context: Context) -> None:
        if context.input_ended and not context.ending:
            self._drain(context)
        else:
            self._interrupt(context, "closed by the client")

    def _end_single(self, context: Context) -> None:
        self._drain(context)
        self._close_socket()

    def _close_socket(self) -> None:
        """close_socket: every context's input is complete; speak what is queued, then close 1000."""
        self._closing = True
        for context in list(self.contexts.values()):
            self._drain(context)
        self._work.put((None, _CLOSE_SOCKET))

    def _drain(self, context: Context) -> None:
        """No more input for `context`: what it buffered is spoken, then isFinal."""
        if context.ending:
            return
        context.ending = True
        self._queue_texts(context, context.buffer.flush())
        self._queue(context, _FINISH)

    def _interrupt(self, context: Context, why: str) -> None:
        context.speaker.stop()  # the engine stops within one frame
        with self._lock:
            if context.closed:
                return
            context.closed = True
            self.contexts.pop(context.id, None)
            was_speaking = context.queued > 0
            self._send(self.options.wire.final(self._reply_id(context)))
        if was_speaking:
            log.info("Context %s %s mid-generation: stopped, its queued text dropped", context.id, why)
        self._work.put((context, _FINISH))  # the speaker thread releases its encoder

    def _check_inactivity(self) -> None:
        now = time.monotonic()
        if not self._heard and now - self._last_message > self.options.first_message_timeout:
            raise self.options.silent()
        limit = self.options.inactivity_timeout
        for context in list(self.contexts.values()):
            idle = context.queued == 0 and not context.ending
            if idle and now - context.last_activity > limit:
                if not self.options.multi:
                    raise ProtocolError(f"Have not received a new text input within the timeout of {limit:g} "
                                        "seconds. Streaming input terminated. Please make sure to either feed "
                                        "the input in the timely manner, or to send the end of input text "
                                        "(empty string \"\") when done.", "input_timeout_exceeded")
                self._interrupt(context, "timed out")
        if self.options.multi and not self.contexts and now - self._last_message > limit:
            raise ProtocolError(f"No message for {limit:g} seconds and no open context: connection closed.",
                                "input_timeout_exceeded")

    def _refuse(self, exc: ProtocolError) -> None:
        log.info("WebSocket %s refused a message: %s (%s)", self.options.route, exc, exc.error)
        with self._lock:
            for context in self.contexts.values():
                context.closed = True
            try:
                self._send(self.options.wire.error(str(exc), exc.error, exc.close_code, exc.context_id))
            except ConnectionClosed:
                return
        self.connection.close(exc.close_code, exc.error)

    def _end_all(self) -> None:
        for context in list(self.contexts.values()):
            context.speaker.stop()
            with self._lock:
                context.closed = True
                self.contexts.pop(context.id, None)
            self._work.put((context, _FINISH))

    # -- the speaker ------------------------------------------------------------------------
    def _speak_loop(self) -> None:
        while True:
            context, piece = self._work.get()
            if piece is _STOP:
                return
            try:
                if piece is _CLOSE_SOCKET:
                    self.connection.close(1000)
                elif piece is _FINISH:
                    self._finish(context)
                elif piece is _TURN_END:
                    self._turn_end(context)
                else:
                    self._speak(context, piece)
            except ConnectionClosed as exc:
                if isinstance(exc.__cause__, TimeoutError):
                    log.info("WebSocket %s: the client read nothing for %g s; connection closed",
                             self.options.route, self.options.limits.send_timeout)
                self._mark_all_closed()
            except Exception:  # noqa: BLE001 - one socket's failure is never the server's
                log.exception("WebSocket %s: speaking failed", self.options.route)
                self._mark_all_closed()
                self.connection.close(wire.INTERNAL, "internal error; see the server log")

    def _mark_all_closed(self) -> None:
        with self._lock:
            for context in self.contexts.values():
                context.closed = True

    def _speak(self, context: Context, piece: Piece) -> None:
        chunks = context.speaker.speak(piece.text, piece.voicing)
        try:
            for chunk in chunks:
                with self._lock:
                    if context.closed:
                        return
                    self._send(self.options.wire.audio(chunk.audio, chunk.alignment, chunk.source_alignment,
                                                      self._reply_id(context)))
                context.last_activity = time.monotonic()
        except SpeakFailed as exc:
            self._failed(context, exc)
        finally:
            chunks.close()  # an interrupted piece: cancels its job
            with self._lock:
                context.queued -= 1
                self._waiting.spoken(context, piece.text)

    def _finish(self, context: Context) -> None:
        with self._lock:
            if not context.closed:
                self._end_stream(context, context.speaker.finish(), self.options.wire.final(self._reply_id(context)))
                context.closed = True
                self.contexts.pop(context.id, None)
        context.speaker.close()

    def _turn_end(self, context: Context) -> None:
        with self._lock:
            if not context.closed:
                self._end_stream(context, context.speaker.restart(), self.options.wire.turn_end())

    def _end_stream(self, context: Context, tail: bytes, marker: str) -> None:
        """The encoder's last bytes (if any), then the message saying the audio is complete."""
        if tail:
            self._send(self.options.wire.audio(tail, None, None, self._reply_id(context)))
        self._send(marker)

    def _failed(self, context: Context, exc: SpeakFailed) -> None:
        code = {"too_many_concurrent_requests": wire.TRY_AGAIN, "client_too_slow": wire.POLICY}.get(exc.code,
                                                                                                  wire.INTERNAL)
        with self._lock:
            if context.closed:
                return
            context.closed = True
            self.contexts.pop(context.id, None)
            self._send(self.options.wire.error(str(exc), exc.code, code, self._reply_id(context)))
        context.speaker.stop()
        if exc.fatal or not self.options.multi:
            self.connection.close(code, exc.code)

    # -- wire -------------------------------------------------------------------------------
    def _reply_id(self, context: Context) -> str | None:
        return context.id if self.options.multi else None

    def _send(self, message: str) -> None:
        self.connection.send(message)
