"""From a queued job to bytes on the wire: shared by every dialect."""

from __future__ import annotations

import base64
import itertools
import json
import logging
import time
from typing import Callable, Iterator

import numpy as np
from flask import request as http_request

from sesame_server.api.errors import APIError
from sesame_server.audio.formats import OutputFormat
from sesame_server.audio.pipeline import AudioPipeline
from sesame_server.backends.base import BackendError
from sesame_server.context.conversation import plan_context
from sesame_server.engine.engine import Engine, EngineStopped, QueueFull
from sesame_server.engine.job import Job
from sesame_server.engine.request import SpeechRequest
from sesame_server.logs import note_request
from sesame_server.metrics import metrics
from sesame_server.runtime import runtime

log = logging.getLogger(__name__)

NOTHING_TO_SAY_SECONDS = 0.1


def start_job(engine: Engine, speech: SpeechRequest) -> tuple[Job, Iterator[np.ndarray]]:
    """Queue the request and wait for its first PCM block.

    Waiting here, before any header is sent, lets a failure that happens before audio
    (queue full, model failed to load) still become a proper error response.
    """
    try:
        job = engine.submit(speech)
        runtime().characters_served += len(speech.text)
        note_request(job=job, voice=speech.voice, input_length=len(speech.text))
    except QueueFull as exc:
        raise APIError(429, str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
    except EngineStopped as exc:
        raise APIError(503, str(exc)) from None
    client_gone: Callable[[], bool] = http_request.environ.get("waitress.client_disconnected", lambda: False)
    blocks = job.blocks(client_gone)
    try:
        first = next(blocks)
    except StopIteration:
        # Nothing to say (e.g. the input is only punctuation): a short silence, so the
        # client still gets a valid, non-empty file; OpenClaw treats an empty body as an error.
        return job, iter([np.zeros(int(job.sample_rate * NOTHING_TO_SAY_SECONDS) or 1, np.float32)])
    except BackendError as exc:
        raise APIError(503, f"Speech generation is unavailable: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - never a traceback to the client
        log.exception("Generation failed before the first audio (request %s)", speech.request_id)
        raise APIError(500, f"Speech generation failed: {exc.__class__.__name__}") from None
    return job, itertools.chain([first], blocks)


def context_headers(job: Job) -> dict[str, str]:
    """Conversation memory at work: prior turns that conditioned the audio, tokens prefilled.

    Read after start_job(): the first audio block exists, so the prefill is done."""
    return {"X-Context-Turns": str(job.context_turns or 0), "X-Prefill-Tokens": str(job.first_prefill_tokens or 0)}


def speech_context(body: dict, voice: str, *, invalid_status: int):
    """The request's conversation context (explicit fields, or its implicit session)."""
    rt = runtime()
    return plan_context(rt.turns, rt.settings, body, voice, invalid_status=invalid_status,
                        observe_lookup=metrics().observe_context_lookup)


def encoded_chunks(
    job: Job,
    blocks: Iterator[np.ndarray],
    pipeline: AudioPipeline,
    chunk_size: int,
) -> Iterator[bytes]:
    """Encoded audio as soon as the encoder has it, in pieces of at most chunk_size bytes.

    Call from the view (it reads the app's metrics now; the generator runs later, outside
    the app context).
    """
    observe_encode = metrics().observe_encode
    return _encode(job, blocks, pipeline, chunk_size, observe_encode)


def _encode(job, blocks, pipeline, chunk_size, observe_encode) -> Iterator[bytes]:
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
    except Exception:  # noqa: BLE001 - headers are gone; end the stream, keep the server
        log.exception("Streaming failed mid-response (request %s)", job.request.request_id)
    finally:
        job.cancel.set()  # no-op once finished; stops generation when the client left
        pipeline.close()
        observe_encode(pipeline.fmt.name, encoding)


def _split(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def sse_events(chunks: Iterator[bytes], usage: Callable[[], dict]) -> Iterator[bytes]:
    """OpenAI's speech SSE: one delta event per audio chunk, then one done event."""
    try:
        for chunk in chunks:
            event = {"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode("ascii")}
            yield f"data: {json.dumps(event, separators=(',', ':'))}\n\n".encode()
        done = {"type": "speech.audio.done", "usage": usage()}
        yield f"data: {json.dumps(done, separators=(',', ':'))}\n\n".encode()
    finally:
        close = getattr(chunks, "close", None)
        if close:
            close()


def pipeline_for(engine: Engine, fmt: OutputFormat, speed: float, *, streaming: bool) -> AudioPipeline:
    backend = engine.backend
    return AudioPipeline(backend.sample_rate, fmt, speed=1.0 if backend.native_speed else speed, streaming=streaming)
