"""sesame-tts: serve | say | voices | download | service | bench."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from sesame_server import __version__
from sesame_server.backends import registry
from sesame_server.config import Settings, SettingsError, check_exposure, load_settings

log = logging.getLogger("sesame_server")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        settings = _settings(args)
    except SettingsError as exc:
        print(f"sesame-tts: {exc}", file=sys.stderr)
        return 2
    from sesame_server.ops.logs import LOG_FILE_NAME, setup_logging
    from sesame_server.ops.privacy import keep_files_under

    if args.command in _PRIVATE_COMMANDS:
        keep_files_under(settings.cache_dir)

    log_file = settings.cache_dir / LOG_FILE_NAME if args.command == "serve" else None
    setup_logging(settings.log_level, log_file=log_file)
    try:
        return args.run(args, settings)
    except KeyboardInterrupt:
        return 130
    except _Failure as exc:
        print(f"sesame-tts: {exc}", file=sys.stderr)
        return 1


_PRIVATE_COMMANDS = ("serve", "say", "bench", "download", "soak")  # load models or serve: files under CACHE_DIR


class _Failure(Exception):
    """A failure with a message for the user (no traceback)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sesame-tts", description="Local OpenAI/ElevenLabs-compatible TTS server.")
    parser.add_argument("--version", action="version", version=f"sesame-tts {__version__}")
    parser.add_argument("--env-file", default=".env", help="dotenv file to read (default: ./.env if present)")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", help="interface to listen on (HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (PORT; default 8880)")
    _backend_options(serve)
    serve.set_defaults(run=_serve)

    say = sub.add_parser("say", help="synthesize text to a file without a server")
    say.add_argument("text")
    say.add_argument("-o", "--output", required=True, help="output file, e.g. out.mp3")
    say.add_argument("--voice")
    say.add_argument("--format", help="mp3 opus aac flac wav pcm, or an ElevenLabs output_format (default: from -o)")
    say.add_argument("--speed", type=float, default=1.0)
    _backend_options(say)
    say.set_defaults(run=_say)

    voices = sub.add_parser("voices", help="list the voices")
    _backend_options(voices)
    voices.set_defaults(run=_voices)

    download = sub.add_parser("download", help="fetch the CSM weights, Mimi, tokenizer and voice prompts ahead of time")
    download.set_defaults(run=_download)

    from sesame_server.ops import service_manager

    svc = sub.add_parser("service", help="login service (launchd / systemd --user): install | uninstall | status | logs")
    service_manager.add_arguments(svc)
    svc.set_defaults(run=service_manager.run)

    from sesame_server.ops import soak

    soak_parser = sub.add_parser("soak", help="bounded load test of a loopback server: hang-ups, bursts, memory")
    soak.add_arguments(soak_parser)
    soak_parser.set_defaults(run=soak.run)

    bench = sub.add_parser("bench", help="benchmark the CSM frame loop against mlx-audio's reference loop "
                                         "(--transport: WebSocket vs HTTP time to first audio)")
    from sesame_server import bench_transport

    bench_transport.add_arguments(bench)
    try:
        registry.plugin("csm").add_bench_arguments(bench)
    except ImportError:
        pass  # `bench` then explains what to install
    bench.set_defaults(run=_bench)
    return parser


def _backend_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=registry.BACKEND_CHOICES, help="BACKEND (default auto)")
    parser.add_argument("--random-weights", action="store_true",
                        help="serve CSM on random weights (noise; for demos, tooling and benchmarks)")
    parser.add_argument("--flavor", choices=("tiny", "small", "full"), default=None,
                        help="size of the random weights (default tiny)")


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(env_file=args.env_file)
    changes = {}
    if getattr(args, "host", None):
        changes["host"] = args.host
    if getattr(args, "port", None) is not None:
        changes["port"] = args.port
    if getattr(args, "backend", None):
        changes["backend"] = args.backend
    if getattr(args, "random_weights", False) or getattr(args, "flavor", None):
        changes["random_weights"] = getattr(args, "flavor", None) or settings.random_weights or "tiny"
    return check_exposure(settings.replace(**changes)) if changes else settings


def _make_backend(settings: Settings):
    from sesame_server.backends import BackendError
    from sesame_server.backends.selection import create_backend

    try:
        return create_backend(settings)
    except BackendError as exc:
        raise _Failure(str(exc)) from None


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from sesame_server.ops.malloc import tune_malloc

    tune_malloc()  # before any worker thread: memory stays flat under hang-ups (see ops/malloc.py)
    from sesame_server.app import create_app
    from sesame_server.runtime import EXTENSION
    from sesame_server.server import PortInUse, make_server, warn_if_exposed

    warn_if_exposed(settings)
    app = create_app(settings, backend=_make_backend(settings))
    rt = app.extensions[EXTENSION]
    engine = rt.engine
    try:
        server = make_server(app, settings.host, settings.port, settings.threads)
    except PortInUse as exc:
        engine.stop()
        raise _Failure(str(exc)) from None
    app.extensions[EXTENSION].listening_on(settings.host, server.effective_port)
    log.info("Sesame TTS (%s backend) listening on http://%s:%s", engine.info.name, settings.host,
             server.effective_port)

    def shutdown(signum, frame):  # noqa: ARG001
        # Unwinds server.run() on the main thread; closing waitress from another thread
        # makes its select() fail and the process exit non-zero (launchd would restart it).
        log.info("Shutting down")
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, shutdown)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        rt.close()  # WebSockets get 1001 (going away), then the engine stops
    return 0


def _say(args: argparse.Namespace, settings: Settings) -> int:
    from sesame_server.audio.formats import UnsupportedFormat, elevenlabs_format, openai_format
    from sesame_server.audio.pipeline import AudioPipeline
    from sesame_server.audio.units import MAX_SPEED, MIN_SPEED
    from sesame_server.engine.engine import Engine
    from sesame_server.engine.request import SpeechRequest
    from sesame_server.runtime import new_request_id
    from sesame_server.voices.catalogue import VoiceCatalogue, VoiceNotFound

    name = args.format or Path(args.output).suffix.lstrip(".").lower() or settings.default_format
    try:
        fmt = openai_format(name)
    except UnsupportedFormat:
        try:
            fmt = elevenlabs_format(name)
        except UnsupportedFormat as exc:
            raise _Failure(str(exc)) from None
    if not MIN_SPEED <= args.speed <= MAX_SPEED:
        raise _Failure(f"--speed must be between {MIN_SPEED} and {MAX_SPEED}")
    backend = _make_backend(settings)
    catalogue = VoiceCatalogue(backend.voices(), settings.default_voice)
    try:
        voice = catalogue.resolve(args.voice) if args.voice else catalogue.default
    except VoiceNotFound as exc:
        raise _Failure(str(exc)) from None
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
        raise _Failure(f"synthesis failed: {exc}") from None
    finally:
        pipeline.close()
        engine.stop()
    print(f"Wrote {job.audio_seconds:.2f} s of {fmt.name} audio ({voice.id}) to {args.output}")
    return 0


def _voices(args: argparse.Namespace, settings: Settings) -> int:
    from sesame_server.voices.catalogue import OPENAI_VOICES, VoiceCatalogue

    backend = _make_backend(settings)
    catalogue = VoiceCatalogue(backend.voices(), settings.default_voice)
    print(f"Voices of the {backend.info.name} backend:")
    for voice in catalogue:
        default = "  (default)" if voice.id == catalogue.default.id else ""
        print(f"  {voice.id:<20} {voice.name}{default}")
    print("OpenAI voice names map to: " + ", ".join(f"{n}→{catalogue.resolve(n).id}" for n in sorted(OPENAI_VOICES)))
    return 0


def _csm(what: str):
    """The csm plugin (sesame-tts download / bench), or a message saying what to install."""
    try:
        return registry.plugin("csm")
    except ImportError as exc:
        from sesame_server.ops.advice import missing_dependency

        raise _Failure(missing_dependency(exc, what)) from None


def _download(args: argparse.Namespace, settings: Settings) -> int:
    """Everything CSM needs, into the Hugging Face cache (or checked in MODEL_PATH)."""
    from sesame_server.backends import BackendError

    csm = _csm("sesame-tts download")
    try:
        paths = csm.download(settings)
    except (BackendError, ImportError) as exc:
        raise _Failure(str(exc)) from None
    for what, path in paths.items():
        print(f"  {what:<28} {path}")
    print("CSM is ready: `sesame-tts serve` uses it (BACKEND=auto picks it on Apple Silicon).")
    return 0


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    if args.transport:
        from sesame_server import bench_transport
        from sesame_server.ops.malloc import tune_malloc

        tune_malloc()  # as `serve` does
        bench_transport.run(args, settings)
        return 0
    _csm("sesame-tts bench").bench(args, settings)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
