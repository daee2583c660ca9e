"""`sesame-tts say` and `sesame-tts voices`: speech and the voice list without a server."""

from __future__ import annotations

import argparse
from pathlib import Path

from sesame_server.config import Settings


class Failure(Exception):
    """A runtime failure with a message for the user (no traceback): exit 1."""


class Usage(Failure):
    """What the user asked for cannot be done as asked: exit 2."""


def make_backend(settings: Settings):
    from sesame_server.backends import BackendError
    from sesame_server.backends.selection import create_backend

    try:
        return create_backend(settings)
    except BackendError as exc:
        raise Failure(str(exc)) from None


def say(args: argparse.Namespace, settings: Settings) -> int:
    from sesame_server.audio.formats import (
        ELEVENLABS_FORMATS, OPENAI_FORMATS, UnsupportedFormat, elevenlabs_format, openai_format,
    )
    from sesame_server.audio.pipeline import AudioPipeline
    from sesame_server.audio.units import MAX_SPEED, MIN_SPEED
    from sesame_server.engine.engine import Engine
    from sesame_server.engine.request import SpeechRequest
    from sesame_server.runtime import new_request_id
    from sesame_server.voices.catalogue import VoiceCatalogue, VoiceNotFound

    if not args.text.strip():
        raise Usage("nothing to say: the text is empty.")
    name = args.format or Path(args.output).suffix.lstrip(".").lower() or settings.default_format
    try:
        fmt = openai_format(name)
    except UnsupportedFormat:
        try:
            fmt = elevenlabs_format(name)
        except UnsupportedFormat:
            raise Usage(f"unknown format {name!r}: use --format (or an -o suffix) {', '.join(OPENAI_FORMATS)}, "
                        f"or an ElevenLabs output_format: {', '.join(ELEVENLABS_FORMATS)}.") from None
    if not MIN_SPEED <= args.speed <= MAX_SPEED:
        raise Usage(f"--speed must be between {MIN_SPEED} and {MAX_SPEED}")
    backend = make_backend(settings)
    catalogue = VoiceCatalogue(backend.voices(), settings.default_voice)
    try:
        voice = catalogue.resolve(args.voice) if args.voice else catalogue.default
    except VoiceNotFound as exc:
        raise Usage(str(exc)) from None
    engine = Engine(backend, warmup=False).start()
    info = backend.info
    pipeline = AudioPipeline(info.sample_rate, fmt, speed=1.0 if info.native_speed else args.speed, streaming=False)
    try:
        job = engine.submit(SpeechRequest(text=args.text, voice=voice.id, request_id=new_request_id(),
                                          speed=args.speed))
        with open(args.output, "wb") as out:
            for block in job.blocks():
                out.write(pipeline.feed(block))
            out.write(pipeline.finish())
    except Exception as exc:  # noqa: BLE001 - a message, not a traceback
        raise Failure(f"synthesis failed: {exc}") from None
    finally:
        pipeline.close()
        engine.stop()
    print(f"Wrote {job.audio_seconds:.2f} s of {fmt.name} audio ({voice.id}) to {args.output}")
    return 0


def voices(args: argparse.Namespace, settings: Settings) -> int:
    from sesame_server.voices.catalogue import OPENAI_VOICES, VoiceCatalogue, elevenlabs_id

    backend = make_backend(settings)
    catalogue = VoiceCatalogue(backend.voices(), settings.default_voice)
    print(f"Voices of the {backend.info.name} backend:")
    print(f"  {'id':<20} {'ElevenLabs id':<20} name")
    for voice in catalogue:
        default = "  (default)" if voice.id == catalogue.default.id else ""
        print(f"  {voice.id:<20} {elevenlabs_id(voice):<20} {voice.name}{default}")
    print("OpenAI voice names map to: " + ", ".join(f"{n}→{catalogue.resolve(n).id}" for n in sorted(OPENAI_VOICES)))
    return 0
