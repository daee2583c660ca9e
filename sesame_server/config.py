"""Settings: read once from the environment and an optional .env, then frozen.

Every tunable lives in the table below with its default and why; nothing else in the
package reads os.environ.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from dotenv import dotenv_values
from environs import Env, EnvError
from marshmallow.validate import OneOf, Range

from sesame_server.backends.registry import BACKEND_CHOICES


class SettingsError(ValueError):
    """A setting has a bad value; the message names the key."""


@dataclass(frozen=True)
class Settings:
    # Server. Loopback by default: there is no auth unless API_KEY is set.
    host: str = "127.0.0.1"
    port: int = 8880
    log_level: str = "INFO"
    threads: int = 8  # waitress worker threads: streaming responses each hold one
    max_websockets: int = 16  # open WebSocket connections (each holds its own threads, not a worker)
    # With API_KEY, sockets whose key comes in the first message wait apart from MAX_WEBSOCKETS,
    # so silent keyless sockets cannot lock out clients that have the key.
    max_pending_websockets: int = 8  # sockets still to show their key (a real client shows it at once)
    ws_first_message_seconds: float = 10.0  # how long such a socket may take to send the key
    api_key: str | None = None  # when set, required on every route but /health
    # Browsers: a page on another origin may use the API only if listed here (CORS).
    cors_origins: tuple[str, ...] = ()
    # Host header names served (DNS rebinding defence); IP literals are always served.
    # Empty: loopback names, and this machine's own names when bound beyond loopback.
    allowed_hosts: tuple[str, ...] = ()
    public_url: str | None = None  # how clients reach the server (preview_url); default: the bound address
    allow_remote_without_key: bool = False  # bind beyond loopback with no API_KEY: refused unless true
    max_body_bytes: int = 2 * 1024 * 1024  # JSON request bodies; voice uploads have their own limits
    # Connections (a streaming server holds one per reply in progress; README: "Exposure").
    connection_limit: int = 1000  # open HTTP connections; past it new ones wait in the backlog (needs file descriptors)
    header_timeout_seconds: float = 10.0  # a request's headers must arrive within this of its first byte (slowloris)
    idle_timeout_seconds: int = 75  # a kept-alive connection with no request; above nginx's upstream keepalive (60 s)
    max_connections_per_client: int = 0  # per client address; 0: no limit (behind a proxy every client is the proxy)

    # Model
    backend: str = "auto"  # auto, or a name in backends.registry.REGISTRY
    model_id: str = "mlx-community/csm-1b"
    torch_model_id: str = "sesame/csm-1b"  # csm-torch: transformers' layout (CSM + Mimi + tokenizer)
    model_path: Path | None = None  # a local directory: fully offline
    mimi_id: str = "kyutai/moshiko-pytorch-bf16"
    tokenizer_id: str = "unsloth/Llama-3.2-1B"
    cache_dir: Path = Path("~/.cache/sesame-tts").expanduser()
    hf_token: str | None = None
    quantize: str = "none"  # none | 8 | 4
    random_weights: str | None = None  # tiny | small | full: csm on random weights (noise)

    # Defaults
    default_voice: str = "conversational_b"
    default_format: str = "mp3"  # OpenAI response_format when the body has none
    default_output_format: str = "mp3_44100_128"  # ElevenLabs output_format default
    max_input_length: int = 4096
    # Text front end (sesame_server/spoken): markdown, numbers, URLs, emoji... as spoken.
    text_normalization: str = "auto"  # auto|on: normalize unless a request says off; off: never unless it says on
    voice_text_normalization: tuple[tuple[str, str], ...] = ()  # (voice id, on|off): that voice's default
    code_blocks: str = "skip"  # skip: "Code block omitted."; read: read them
    emoji: str = "drop"  # drop, or describe ("thumbs up")

    # Streaming
    stream_buffer_frames: int = 1  # frames generated before the first audio leaves
    max_sentence_seconds: float = 90.0  # CSM: the longest one sentence may speak (a model that does not stop is cut)
    stream_chunk_size: int = 4096  # bytes per chunk on the wire (at most)
    # WebSockets: text waiting to be spoken (buffered or queued), so one socket cannot queue hours of speech
    ws_max_context_chars: int = 20_000  # per context (~20 min of speech); past it: error, close 1008
    ws_max_socket_chars: int = 60_000  # per socket, all its contexts together
    slow_reader_seconds: float = 10.0  # a client that leaves audio unread this long: its job is cut, its socket closed

    # Conversation memory
    context_enabled: bool = True
    context_max_turns: int = 10
    context_max_seconds: float = 60.0
    context_session_gap_seconds: float = 60.0

    # Running several servers (README: "Running several servers")
    node_name: str | None = None  # X-Served-By; default: the host name
    proxy_hops: int = 0  # proxies in front that set X-Forwarded-For (a balancer: 1); 0 trusts none
    drain_seconds: float = 30.0  # after SIGTERM: finish what is in flight for at most this long, then exit
    # Conversation memory shared by the nodes (redis://host:port/db): a session that changes
    # node continues there. Empty: each node remembers its own sessions only.
    turn_store: str | None = None
    # Cloned voices: default CACHE_DIR/voices; may be one folder every node shares (NFS, a PVC)
    voices_path: Path | None = None  # VOICES_DIR
    voices_rescan_seconds: float = 5.0  # voices added or deleted by other nodes are seen within this

    # Performance
    warmup_on_start: bool = True
    max_queue_depth: int = 3  # jobs waiting beyond this get 429 (at least 1)
    idle_unload_minutes: float = 0.0  # 0 = never unload

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    @property
    def voices_dir(self) -> Path:
        return self.voices_path or self.cache_dir / "voices"


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TURN_STORE_SCHEMES = ("redis://", "rediss://", "unix://")  # what redis-py's from_url reads


def load_settings(environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env") -> Settings:
    """Read Settings from `environ` (default os.environ) and `env_file` if it exists.

    Raises SettingsError naming the key when a value is invalid.
    """
    if environ is None:
        file_values = {}
        if env_file and Path(env_file).is_file():
            file_values = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
        environ = {**file_values, **os.environ}  # the real environment wins over the file
    env = Env(eager=False)
    # environs reads os.environ; point it at the mapping we were given.
    env._environ = dict(environ)  # noqa: SLF001 - no public hook for a custom mapping
    d = Settings()
    values = dict(
        host=env.str("HOST", d.host),
        port=env.int("PORT", d.port, validate=Range(min=0, max=65535)),
        log_level=env.str("LOG_LEVEL", d.log_level, validate=OneOf(_LEVELS + tuple(x.lower() for x in _LEVELS))),
        threads=env.int("THREADS", d.threads, validate=Range(min=1, max=256)),
        max_websockets=env.int("MAX_WEBSOCKETS", d.max_websockets, validate=Range(min=0, max=1024)),
        max_pending_websockets=env.int("MAX_PENDING_WEBSOCKETS", d.max_pending_websockets,
                                       validate=Range(min=0, max=1024)),
        ws_first_message_seconds=env.float("WS_FIRST_MESSAGE_SECONDS", d.ws_first_message_seconds,
                                           validate=Range(min=0.5, max=180)),
        api_key=env.str("API_KEY", None) or None,
        cors_origins=env.list("CORS_ORIGINS", []),
        allowed_hosts=env.list("ALLOWED_HOSTS", []),
        public_url=env.str("PUBLIC_URL", None) or None,
        allow_remote_without_key=env.bool("ALLOW_REMOTE_WITHOUT_KEY", d.allow_remote_without_key),
        max_body_bytes=env.int("MAX_BODY_BYTES", d.max_body_bytes, validate=Range(min=1024, max=1 << 30)),
        connection_limit=env.int("CONNECTION_LIMIT", d.connection_limit, validate=Range(min=8, max=100_000)),
        header_timeout_seconds=env.float("HEADER_TIMEOUT_SECONDS", d.header_timeout_seconds,
                                         validate=Range(min=0.1, max=3600)),
        idle_timeout_seconds=env.int("IDLE_TIMEOUT_SECONDS", d.idle_timeout_seconds, validate=Range(min=1, max=86400)),
        max_connections_per_client=env.int("MAX_CONNECTIONS_PER_CLIENT", d.max_connections_per_client,
                                           validate=Range(min=0, max=100_000)),
        backend=env.str("BACKEND", d.backend, validate=OneOf(BACKEND_CHOICES)),
        model_id=env.str("MODEL_ID", d.model_id),
        torch_model_id=env.str("TORCH_MODEL_ID", d.torch_model_id),
        model_path=env.path("MODEL_PATH", None),
        mimi_id=env.str("MIMI_ID", d.mimi_id),
        tokenizer_id=env.str("TOKENIZER_ID", d.tokenizer_id),
        cache_dir=env.path("CACHE_DIR", str(d.cache_dir)),
        hf_token=env.str("HF_TOKEN", None) or None,
        quantize=env.str("QUANTIZE", d.quantize, validate=OneOf(("none", "8", "4"))),
        random_weights=env.str("RANDOM_WEIGHTS", None, validate=OneOf(("", "tiny", "small", "full"))) or None,
        default_voice=env.str("DEFAULT_VOICE", d.default_voice),
        default_format=env.str("DEFAULT_FORMAT", d.default_format,
                               validate=OneOf(("mp3", "opus", "aac", "flac", "wav", "pcm"))),
        default_output_format=env.str("DEFAULT_OUTPUT_FORMAT", d.default_output_format),
        max_input_length=env.int("MAX_INPUT_LENGTH", d.max_input_length, validate=Range(min=1, max=1_000_000)),
        text_normalization=env.str("TEXT_NORMALIZATION", d.text_normalization, validate=OneOf(("auto", "on", "off"))),
        voice_text_normalization=env.dict("VOICE_TEXT_NORMALIZATION", {}),
        code_blocks=env.str("CODE_BLOCKS", d.code_blocks, validate=OneOf(("skip", "read"))),
        emoji=env.str("EMOJI", d.emoji, validate=OneOf(("drop", "describe"))),
        stream_buffer_frames=env.int("STREAM_BUFFER_FRAMES", d.stream_buffer_frames, validate=Range(min=1, max=100)),
        stream_chunk_size=env.int("STREAM_CHUNK_SIZE", d.stream_chunk_size, validate=Range(min=256, max=1 << 20)),
        ws_max_context_chars=env.int("WS_MAX_CONTEXT_CHARS", d.ws_max_context_chars,
                                     validate=Range(min=1, max=10_000_000)),
        ws_max_socket_chars=env.int("WS_MAX_SOCKET_CHARS", d.ws_max_socket_chars,
                                    validate=Range(min=1, max=10_000_000)),
        slow_reader_seconds=env.float("SLOW_READER_SECONDS", d.slow_reader_seconds, validate=Range(min=0.1, max=600)),
        context_enabled=env.bool("CONTEXT_ENABLED", d.context_enabled),
        context_max_turns=env.int("CONTEXT_MAX_TURNS", d.context_max_turns, validate=Range(min=0, max=1000)),
        context_max_seconds=env.float("CONTEXT_MAX_SECONDS", d.context_max_seconds, validate=Range(min=0)),
        context_session_gap_seconds=env.float("CONTEXT_SESSION_GAP_SECONDS", d.context_session_gap_seconds,
                                              validate=Range(min=0)),
        warmup_on_start=env.bool("WARMUP_ON_START", d.warmup_on_start),
        max_sentence_seconds=env.float("MAX_SENTENCE_SECONDS", d.max_sentence_seconds,
                                       validate=Range(min=0.1, max=600)),
        max_queue_depth=env.int("MAX_QUEUE_DEPTH", d.max_queue_depth, validate=Range(min=1, max=10_000)),
        node_name=env.str("NODE_NAME", None) or None,
        proxy_hops=env.int("PROXY_HOPS", d.proxy_hops, validate=Range(min=0, max=5)),
        drain_seconds=env.float("DRAIN_SECONDS", d.drain_seconds, validate=Range(min=0, max=3600)),
        turn_store=env.str("TURN_STORE", "").strip() or None,
        voices_path=env.str("VOICES_DIR", None) or None,  # empty: the default
        voices_rescan_seconds=env.float("VOICES_RESCAN_SECONDS", d.voices_rescan_seconds,
                                        validate=Range(min=0, max=3600)),
        idle_unload_minutes=env.float("IDLE_UNLOAD_MINUTES", d.idle_unload_minutes, validate=Range(min=0)),
    )
    try:
        env.seal()
    except EnvError as exc:
        # environs lists every bad key; keep its wording, prefix ours.
        raise SettingsError(f"Invalid configuration: {_describe(exc)}") from None
    values["log_level"] = values["log_level"].upper()
    values["voice_text_normalization"] = _voice_modes(values["voice_text_normalization"])
    values["cache_dir"] = Path(values["cache_dir"]).expanduser()
    if values["voices_path"] is not None:
        values["voices_path"] = Path(values["voices_path"]).expanduser()
    if values["model_path"] is not None:
        values["model_path"] = Path(values["model_path"]).expanduser()
    values["cors_origins"] = tuple(origin.strip().rstrip("/").lower() for origin in values["cors_origins"]
                                   if origin.strip())
    values["allowed_hosts"] = tuple(host.strip().lower() for host in values["allowed_hosts"] if host.strip())
    if values["public_url"]:
        values["public_url"] = values["public_url"].rstrip("/")
        if not values["public_url"].startswith(("http://", "https://")):
            raise SettingsError(f"Invalid configuration: PUBLIC_URL must start with http:// or https:// "
                                f"(got {values['public_url']!r})")
    if values["turn_store"] and not values["turn_store"].startswith(TURN_STORE_SCHEMES):
        scheme = values["turn_store"].partition("://")[0] + "://..." if "://" in values["turn_store"] else "no scheme"
        # Not the whole value: a store URL may carry a password.
        raise SettingsError(f"Invalid configuration: TURN_STORE must start with redis://, rediss:// or unix:// "
                            f"(got {scheme})")
    return check_exposure(Settings(**values))


def _voice_modes(modes: dict) -> tuple[tuple[str, str], ...]:
    """VOICE_TEXT_NORMALIZATION=joe=off,conversational_a=on -> (("joe", "off"), ...)."""
    for voice, mode in modes.items():
        if mode not in ("on", "off"):
            raise SettingsError(f"Invalid configuration: VOICE_TEXT_NORMALIZATION: {voice}={mode!r} "
                                "(each voice takes on or off)")
    return tuple((voice.strip(), mode) for voice, mode in modes.items())


def check_exposure(settings: Settings) -> Settings:
    """Refuse to serve beyond loopback with no API key, unless explicitly allowed."""
    if not is_loopback(settings.host) and not settings.api_key and not settings.allow_remote_without_key:
        raise SettingsError(
            f"Invalid configuration: HOST={settings.host} would let anyone who can reach this machine use the "
            "server, and API_KEY is not set. Set API_KEY (clients send it as xi-api-key or Authorization: "
            "Bearer), or HOST=127.0.0.1, or ALLOW_REMOTE_WITHOUT_KEY=true if that is really what you want.")
    return settings


def _describe(exc: EnvError) -> str:
    errors = getattr(exc, "error_messages", None)
    if isinstance(errors, dict):
        return "; ".join(f"{key}: {' '.join(map(str, msgs))}" for key, msgs in errors.items())
    return str(exc)


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1", "[::1]") or host.startswith("127.")
