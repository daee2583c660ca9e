"""sesame-tts: serve | say | voices | download | service | bench."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from sesame_server import __version__, cli_say
from sesame_server.backends import registry
from sesame_server.cli_say import Failure, Usage, make_backend
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
    # say/voices print what the user asked for; INFO lines would only bury it.
    quiet = args.command in ("say", "voices") and settings.log_level.upper() == "INFO"
    setup_logging("WARNING" if quiet else settings.log_level, log_file=log_file)
    try:
        return args.run(args, settings)
    except KeyboardInterrupt:
        return 130
    except Usage as exc:
        print(f"sesame-tts: {exc}", file=sys.stderr)
        return 2
    except Failure as exc:
        print(f"sesame-tts: {exc}", file=sys.stderr)
        return 1


_PRIVATE_COMMANDS = ("serve", "say", "bench", "download", "soak")  # load models or serve: files under CACHE_DIR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sesame-tts", description="Local OpenAI/ElevenLabs-compatible TTS server.")
    parser.add_argument("--version", action="version", version=f"sesame-tts {__version__}")
    parser.add_argument("--env-file", default=".env", help="dotenv file to read (default: ./.env if present)")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the server: OpenAI + ElevenLabs APIs (HTTP, WebSocket), the playground at /")
    serve.add_argument("--host", help="interface to listen on (HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (PORT; default 8880)")
    _backend_options(serve)
    serve.set_defaults(run=_serve)

    say = sub.add_parser("say", help="synthesize text to a file without a server")
    say.add_argument("text", help="what to say")
    say.add_argument("-o", "--output", required=True, help="output file, e.g. out.mp3")
    say.add_argument("--voice", help="a voice id (`sesame-tts voices` lists them; default DEFAULT_VOICE)")
    say.add_argument("--format", help="mp3 opus aac flac wav pcm, or an ElevenLabs output_format (default: from -o)")
    say.add_argument("--speed", type=float, default=1.0, help="0.25-4.0 (default 1.0)")
    _backend_options(say)
    say.set_defaults(run=cli_say.say)

    voices = sub.add_parser("voices", help="list the voices, with their ElevenLabs ids and OpenAI names")
    _backend_options(voices)
    voices.set_defaults(run=cli_say.voices)

    download = sub.add_parser("download", help="fetch the CSM weights, Mimi, tokenizer and voice prompts ahead of time "
                                               "(BACKEND=csm-torch: the transformers-layout model)")
    download.set_defaults(run=_download)

    convert = sub.add_parser("convert", help="convert a CSM model directory between the MLX layout (csm) and "
                                             "transformers' layout (csm-torch)")
    convert.add_argument("source", help="the model directory to read")
    convert.add_argument("target", help="a new directory to write (written whole, or not at all)")
    convert.add_argument("--to", required=True, choices=("transformers", "mlx"), help="the layout to write")
    convert.set_defaults(run=_convert)

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
    from sesame_server import bench_cluster, bench_http, bench_text, bench_transport

    bench_cluster.add_arguments(bench)
    bench_transport.add_arguments(bench)
    bench_http.add_arguments(bench)
    bench_text.add_arguments(bench)
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


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from sesame_server.ops.malloc import tune_malloc

    tune_malloc()  # before any worker thread: memory stays flat under hang-ups (see ops/malloc.py)
    from sesame_server.app import create_app
    from sesame_server.runtime import EXTENSION
    from sesame_server.server import PortInUse, make_server, warn_if_exposed

    warn_if_exposed(settings)
    app = create_app(settings, backend=make_backend(settings), start=False)
    rt = app.extensions[EXTENSION]
    try:  # the port first: a busy one is said before minutes of model loading
        server = make_server(app, settings.host, settings.port, settings.threads)
    except PortInUse as exc:
        rt.close()
        raise Failure(str(exc)) from None
    rt.listening_on(settings.host, server.effective_port)
    rt.engine.start()
    _banner(rt)

    why = ["Ctrl+C"]

    def shutdown(signum, frame):  # noqa: ARG001
        # The first SIGTERM drains (ops/drain.py): in-flight requests finish, new ones get
        # 503; when it is done (or DRAIN_SECONDS pass) the drainer signals again. The second
        # unwinds server.run() on the main thread; closing waitress from another thread makes
        # its select() fail and the process exit non-zero (launchd would restart it).
        why[0] = "SIGTERM"
        if rt.drain.draining or settings.drain_seconds <= 0:
            raise SystemExit(0)
        rt.drain.begin()
        threading.Thread(target=_drain_then_stop, args=(rt, settings.drain_seconds), name="drain",
                         daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    try:
        server.run()  # returns on Ctrl+C and on SIGTERM: waitress catches both
    finally:
        rt.close()  # WebSockets get 1001 (going away), then the engine stops
    print(f"sesame-tts: stopped ({why[0]}).", flush=True)
    return 0


def _banner(rt) -> None:
    """What a user needs to start using the server, on stdout (a terminal or a service log)."""
    url = rt.public_url
    info = rt.engine.info
    print(f"Sesame TTS {__version__}: {info.name} backend, default voice {rt.catalogue.default.id}\n"
          f"  listening on  {url}  (OpenAI base URL {url}/v1; ElevenLabs base URL {url})\n"
          f"  playground    {url}/\n"
          f"  health        {url}/health  (\"ok\" once the model is loaded; {url}/ready for a load balancer)\n"
          "Press Ctrl+C to stop.", flush=True)


def _drain_then_stop(rt, seconds: float) -> None:
    """Wait for what is in flight (and open WebSockets), then SIGTERM again: the handler stops."""
    import os

    rt.drain.wait(seconds, busy=lambda: len(rt.sockets))
    os.kill(os.getpid(), signal.SIGTERM)


def _csm(what: str, name: str = "csm"):
    """A CSM plugin (sesame-tts download / bench / convert), or a message saying what to install."""
    try:
        return registry.plugin(name)
    except ImportError as exc:
        from sesame_server.ops.advice import missing_dependency

        raise Failure(missing_dependency(exc, what)) from None


def _download(args: argparse.Namespace, settings: Settings) -> int:
    """Everything CSM needs, into the Hugging Face cache (or checked in MODEL_PATH)."""
    from sesame_server.backends import BackendError

    torch_backend = settings.backend == "csm-torch"
    csm = _csm("sesame-tts download", "csm-torch" if torch_backend else "csm")
    try:
        paths = csm.download(settings)
    except (BackendError, ImportError) as exc:
        raise Failure(str(exc)) from None
    for what, path in paths.items():
        print(f"  {what:<28} {path}")
    where = "BACKEND=auto picks it where CUDA is available" if torch_backend else "BACKEND=auto picks it on Apple Silicon"
    print(f"CSM is ready: `sesame-tts serve` uses it ({where}).")
    return 0


def _convert(args: argparse.Namespace, settings: Settings) -> int:
    from sesame_server.backends import BackendError

    plugin = _csm("sesame-tts convert", "csm-torch")
    try:
        written = plugin.convert_model(args.source, args.target, args.to, settings)
    except ImportError as exc:
        from sesame_server.ops.advice import missing_dependency

        raise Failure(missing_dependency(exc, "sesame-tts convert")) from None
    except (BackendError, OSError) as exc:
        raise Failure(f"convert failed: {exc}") from None
    backend = "csm-torch" if args.to == "transformers" else "csm"
    print(f"Wrote {written} ({args.to} layout): BACKEND={backend} MODEL_PATH={written} sesame-tts serve")
    return 0


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    if args.text_bench:
        from sesame_server import bench_text

        bench_text.run(args)
        return 0
    if args.cluster is not None:
        from sesame_server import bench_cluster

        bench_cluster.run(args, settings)
        return 0
    if args.transport or args.http is not None:
        from sesame_server import bench_http, bench_transport
        from sesame_server.ops.malloc import tune_malloc

        tune_malloc()  # as `serve` does
        (bench_transport if args.transport else bench_http).run(args, settings)
        return 0
    _csm("sesame-tts bench", getattr(args, "backend", None) or "csm").bench(args, settings)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
