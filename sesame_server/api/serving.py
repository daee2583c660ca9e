"""From a SpeechRequest to audio bytes on the wire, shared by every dialect.

synthesize() queues the job and waits for its first audio before any header is sent, so
a failure before audio is still an error response. After that, `Synthesis.chunks`
re-raises a generation failure as GenerationFailed; each way of sending turns it into
something the client can detect:
  buffered()  a 5xx in the dialect's shape (nothing partial is returned or cached)
  streamed()  raw audio: the connection is cut without the final chunk (truncated body)
  SSE/NDJSON  an error event, in the dialect's wire module
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from typing import Callable, Generator, Iterator

import numpy as np
from flask import request

from sesame_server.api.errors import APIError
from sesame_server.audio.formats import OutputFormat
from sesame_server.audio.pipeline import AudioPipeline
from sesame_server.backends.base import BackendError, VoiceUnavailable
from sesame_server.engine.engine import EngineStopped, ModelUnavailable, QueueFull
from sesame_server.engine.job import Job
from sesame_server.engine.request import SpeechRequest
from sesame_server.ops.request_log import note_request
from sesame_server.runtime import runtime

log = logging.getLogger(__name__)

NOTHING_TO_SAY_SECONDS = 0.1


class GenerationFailed(Exception):
    """Generation (or encoding) failed after the response started."""

    def __init__(self, request_id: str, seconds: float, cause: BaseException):
        super().__init__(f"Speech generation failed after {seconds:.2f} s of audio ({cause.__class__.__name__}); "
                         f"see the server log for request {request_id}.")
        self.cause = cause

    def as_api_error(self) -> APIError:
        return _failure(self.cause, str(self))


class StreamAborted(RuntimeError):
    """Raised into the WSGI server so it cuts the connection: the client sees a truncated body."""


@dataclass
class Synthesis:
    """One response's audio on its way out: the job, its encoder, the encoded chunks."""

    job: Job
    pipeline: AudioPipeline
    chunks: Generator[bytes, None, None]  # re-raises GenerationFailed

    @property
    def headers(self) -> dict[str, str]:
        """What conditioned the audio (conversation memory); final once the first block exists."""
        return {"X-Context-Turns": str(self.job.context_turns or 0),
                "X-Prefill-Tokens": str(self.job.prefill_tokens or 0)}


def synthesize(speech: SpeechRequest, fmt: OutputFormat, *, streaming: bool) -> Synthesis:
    """Queue `speech` and wait for its first audio; raises APIError (429/5xx) before any byte."""
    rt = runtime()
    try:
        job = rt.engine.submit(speech)
    except QueueFull as exc:
        raise APIError(429, str(exc), code="too_many_concurrent_requests",
                       headers={"Retry-After": str(exc.retry_after)}) from None
    except EngineStopped as exc:
        raise APIError(503, str(exc), code="system_busy") from None
    rt.characters_served += len(speech.text)
    note_request(job=job, voice=speech.voice, input_length=len(speech.text), format=fmt.name, streamed=streaming)
    client_gone: Callable[[], bool] = request.environ.get("waitress.client_disconnected", lambda: False)
    blocks = job.blocks(client_gone)
    try:
        first = next(blocks)
    except StopIteration:
        # Nothing to say (e.g. the input is only punctuation): a short silence, so the
        # client still gets a valid, non-empty file; OpenClaw treats an empty body as an error.
        first = np.zeros(int(job.info.sample_rate * NOTHING_TO_SAY_SECONDS) or 1, np.float32)
    except Exception as exc:  # noqa: BLE001 - never a traceback to the client
        if not isinstance(exc, (BackendError, ModelUnavailable)):
            log.error("Generation failed before the first audio (request %s)", speech.request_id)
        raise _failure(exc, f"Speech generation failed: {exc.__class__.__name__}; see the server log.") from None
    info = job.info
    pipeline = AudioPipeline(info.sample_rate, fmt, speed=1.0 if info.native_speed else speech.speed,
                             streaming=streaming)
    chunk_size = rt.settings.stream_chunk_size if streaming else 0
    chunks = _encode(job, itertools.chain([first], blocks), pipeline, chunk_size, rt.metrics.observe_encode)
    return Synthesis(job, pipeline, chunks)


def buffered(synthesis: Synthesis) -> bytes:
    """The whole file; a failure at any point is an APIError (5xx), never a short 200."""
    try:
        return b"".join(synthesis.chunks)
    except GenerationFailed as failed:
        raise failed.as_api_error() from None


def streamed(synthesis: Synthesis) -> Iterator[bytes]:
    """Raw audio as it is encoded; a failure cuts the connection (no final chunk)."""
    try:
        yield from synthesis.chunks
    except GenerationFailed as failed:
        raise StreamAborted(str(failed)) from None
    finally:
        synthesis.chunks.close()


def _failure(exc: BaseException, message: str) -> APIError:
    if isinstance(exc, VoiceUnavailable):  # one voice's material, not the server
        return APIError(400, f"{exc} Delete the voice and add it again.", code="voice_unusable", param="voice")
    if isinstance(exc, ModelUnavailable):
        return APIError(503, f"Speech generation is unavailable: {exc}", code="model_unavailable")
    if isinstance(exc, BackendError):
        return APIError(503, f"Speech generation is unavailable: {exc}", code="backend_error")
    return APIError(500, message, code="generation_failed")


def _encode(job: Job, blocks: Iterator[np.ndarray], pipeline: AudioPipeline, chunk_size: int,
            observe_encode: Callable[[str, float], None]) -> Generator[bytes, None, None]:
    encoding = 0.0
    try:
        for block in blocks:
            started = time.perf_counter()
            data = pipeline.feed(block)
            encoding += time.perf_counter() - started
            yield from _split(data, chunk_size)
        started = time.perf_counter()
        data = pipeline.finish()
        encoding += time.perf_counter() - started
        yield from _split(data, chunk_size)
    except Exception as exc:  # noqa: BLE001 - becomes what the way of sending makes of it
        log.error("Generation failed mid-response (request %s): %s", job.request.request_id, exc)
        raise GenerationFailed(job.request.request_id, pipeline.seconds_out, exc) from exc
    finally:
        job.cancel.set()  # no-op once finished; stops generation when the client left
        pipeline.close()
        observe_encode(pipeline.fmt.name, encoding)


def _split(data: bytes, size: int) -> Iterator[bytes]:
    if not size or len(data) <= size:
        if data:
            yield data
        return
    for start in range(0, len(data), size):
        yield data[start:start + size]
