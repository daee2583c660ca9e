"""One context of a stream-input socket: its pieces spoken in order, as ONE audio stream.

Every piece is a job in the same engine queue as an HTTP request (same priority, limits,
cancellation, metrics and request log). The pieces of a context are one conversation
session: with CSM each piece is conditioned on the ones before (the conversation-memory
path), so a reply sent in ten pieces continues one utterance instead of ten cold starts.
Their audio goes through one AudioPipeline, so an mp3 or opus context is one valid
stream, not a concatenation of files.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator

from sesame_server.audio.formats import OutputFormat
from sesame_server.audio.pipeline import AudioPipeline
from sesame_server.backends.base import BackendError, VoiceUnavailable
from sesame_server.context.conversation import Caller, plan_context
from sesame_server.context.fields import ContextFields
from sesame_server.engine.alignment import Alignment, CharacterTimeline
from sesame_server.engine.engine import EngineStopped, ModelUnavailable, QueueFull
from sesame_server.engine.job import Job, SlowReader
from sesame_server.engine.request import ReferenceVoice, SpeechRequest
from sesame_server.realtime.text_buffer import bounded_pieces
from sesame_server.runtime import Runtime, new_request_id
from sesame_server.spoken.alignment import SourceTimeline
from sesame_server.spoken.policy import spoken_text

log = logging.getLogger(__name__)


class SpeakFailed(Exception):
    """A piece could not be spoken; `code` names why (ElevenLabs' error codes)."""

    def __init__(self, message: str, code: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.fatal = fatal  # the server cannot speak at all (stopped, model unavailable)


@dataclass(frozen=True)
class Voicing:
    """What every piece of one context shares."""

    voice: str
    fmt: OutputFormat
    caller: Caller  # its session_id names the context: pieces continue each other
    speed: float = 1.0
    temperature: float | None = None
    seed: int | None = None
    reference: ReferenceVoice | None = None
    first_chunk_frames: int | None = None
    normalization: str | None = None  # ElevenLabs' apply_text_normalization (None: the server's)


@dataclass
class AudioChunk:
    audio: bytes
    alignment: Alignment  # spoken characters this audio covers, times from the chunk's own start
    source_alignment: Alignment  # the same audio's characters of the text as sent


@dataclass
class Speaker:
    rt: Runtime
    voicing: Voicing
    on_job: Callable[[Job], None]  # each finished piece's job (log line, metrics)
    cancel: threading.Event = field(default_factory=threading.Event)
    jobs: list[Job] = field(default_factory=list)  # every piece's job, in order
    current: Job | None = None

    def __post_init__(self) -> None:
        self._pipeline = self._new_pipeline()
        self._sent_seconds = 0.0  # audio seconds already sent in earlier chunks

    def _new_pipeline(self) -> AudioPipeline:
        info = self.rt.engine.info
        return AudioPipeline(info.sample_rate, self.voicing.fmt, streaming=True,
                             speed=1.0 if info.native_speed else self.voicing.speed)

    def speak(self, text: str, voice: Voicing | None = None) -> Iterator[AudioChunk]:
        """The audio of one piece, chunk by chunk; stops within one frame of `cancel`.
        `voice`: another voice for this piece (a dialogue line), in the same conversation.
        A piece longer than MAX_INPUT_LENGTH is spoken as several jobs (no job holds the
        engine longer than an HTTP request may).

        Raises SpeakFailed before or during the piece."""
        for part in bounded_pieces(text, self.rt.settings.max_input_length):
            yield from self._speak_part(part, voice)

    def _speak_part(self, text: str, voice: Voicing | None) -> Iterator[AudioChunk]:
        if self.cancel.is_set():
            return
        voicing = voice or self.voicing
        spoken = spoken_text(text, self.rt.settings, voicing.normalization, self.rt.catalogue.get(voicing.voice))
        job = self._submit(spoken.text, voicing)
        self.current = job
        base = self._pipeline.seconds_out
        timeline, source = CharacterTimeline(spoken.text, self.voicing.speed), SourceTimeline(spoken)
        try:
            for block in job.blocks(self.cancel.is_set):
                audio = self._pipeline.feed(block)
                if audio:
                    said = timeline.advance(self._pipeline.seconds_out - base)
                    yield self._chunk(audio, said, source.advance(said), base)
            if not self.cancel.is_set():
                end = self._pipeline.seconds_out - base
                rest = timeline.finish(end)
                sent = source.advance(rest).extend(source.finish(end))
                if rest or sent:
                    yield self._chunk(b"", rest, sent, base)
        except Exception as exc:  # noqa: BLE001 - the session reports it in its dialect
            raise _failure(exc, job.request.request_id) from exc
        finally:
            job.cancel.set()  # no-op once finished; stops the engine when the context closed
            self.current = None
            self.on_job(job)

    def finish(self) -> bytes:
        """The tail of the context's stream (encoder flush) once its last piece is spoken."""
        return self._pipeline.finish()

    def restart(self) -> bytes:
        """End this stream (its tail is returned) and start a new one: a turn's audio that
        must decode on its own (dialogue stream-input), the conversation going on."""
        tail = self._pipeline.finish()
        self._pipeline.close()
        self._pipeline = self._new_pipeline()
        self._sent_seconds = 0.0
        return tail

    def stop(self) -> None:
        """Interrupt: the piece being generated stops within one frame, none follows."""
        self.cancel.set()
        job = self.current
        if job is not None:
            job.cancel.set()

    def close(self) -> None:
        self.stop()
        self._pipeline.close()

    def _submit(self, text: str, voicing: Voicing) -> Job:
        rt = self.rt
        plan = plan_context(rt.turns, rt.settings, ContextFields(), voicing.voice, self.voicing.caller,
                            rt.metrics.observe_context_lookup)
        speech = SpeechRequest(
            text=text, voice=voicing.voice, request_id=new_request_id(), speed=voicing.speed, stream=True,
            seed=voicing.seed, temperature=voicing.temperature, first_chunk_frames=voicing.first_chunk_frames,
            reference=voicing.reference, context=plan.context, conversation=plan.conversation,
        )
        try:
            job = rt.engine.submit(speech)
        except QueueFull as exc:
            raise SpeakFailed(str(exc), "too_many_concurrent_requests") from None
        except EngineStopped as exc:
            raise SpeakFailed(str(exc), "system_busy", fatal=True) from None
        rt.characters_served += len(text)
        self.jobs.append(job)
        return job

    @property
    def context_turns(self) -> list[int]:
        """Per piece: the prior turns that conditioned it (known from its first audio on)."""
        return [job.context_turns or 0 for job in self.jobs]

    def _chunk(self, audio: bytes, said: Alignment, sent: Alignment, piece_start: float) -> AudioChunk:
        start = self._sent_seconds  # in the context's stream; the timelines count from its piece
        self._sent_seconds = self._pipeline.seconds_out
        offset = start - piece_start
        return AudioChunk(audio, _shifted(said, offset), _shifted(sent, offset))


def _shifted(alignment: Alignment, start: float) -> Alignment:
    """Times from the chunk's start (ElevenLabs restarts them at 0 in every message)."""
    return Alignment(alignment.characters,
                     [max(0.0, t - start) for t in alignment.character_start_times_seconds],
                     [max(0.0, t - start) for t in alignment.character_end_times_seconds])


def _failure(exc: BaseException, request_id: str) -> SpeakFailed:
    if isinstance(exc, SpeakFailed):
        return exc
    if isinstance(exc, SlowReader):
        return SpeakFailed(str(exc), "client_too_slow")
    if isinstance(exc, VoiceUnavailable):
        return SpeakFailed(f"{exc} Delete the voice and add it again.", "voice_unusable")
    if isinstance(exc, (ModelUnavailable, BackendError)):
        return SpeakFailed(f"Speech generation is unavailable: {exc}", "model_unavailable", fatal=True)
    log.error("Generation failed mid-stream (request %s): %s", request_id, exc)
    return SpeakFailed(f"Speech generation failed ({exc.__class__.__name__}); see the server log for "
                       f"request {request_id}.", "generation_failed")
