"""CsmBackend: Sesame CSM-1B on MLX behind the Backend protocol.

All methods run on the engine's single inference thread; MLX streams are created there
(in load()). Per request:

  [voice prompt + end frame]  cached backbone KV (prefilled once per voice)
  [context turns][previous_text]   prefilled with the first sentence
  [sentence 1] -> frames ... [end frame][sentence 2] -> frames ...   one running context

Frames stream out as PCM one by one (after the first `first_chunk_frames`), decoded by
Mimi on a second MLX stream while the next frame computes.
"""

from __future__ import annotations

import gc
import logging
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from sesame_server.backends.base import BackendError, Voice
from sesame_server.config import Settings
from sesame_server.engine.request import SpeechRequest

from .voice_prompts import BUILTIN_VOICES, VoicePrompt

log = logging.getLogger(__name__)

FRAME_SECONDS = 0.08
MAX_PREFIXES = 16  # voice-prefix KV snapshots kept (~13 MB each at full size in bf16)
MAX_SECONDS_PER_SENTENCE = 90.0  # mlx-audio's default cap; a sentence is at most ~400 chars
RANDOM_WEIGHTS_WARNING = (
    "CSM IS RUNNING ON RANDOM WEIGHTS (flavor %s): every voice is NOISE, not speech. "
    "This mode is for demos, tooling and benchmarks only."
)


class CsmBackend:
    name = "csm"
    sample_rate = 24_000
    native_speed = False
    uses_context = True  # conditions on prior turns' codes (conversation memory)
    can_clone = True  # a voice is a prompt segment: any reference recording works
    frame_seconds = FRAME_SECONDS

    def __init__(self, settings: Settings, *, max_frames_per_sentence: int | None = None):
        self.settings = settings
        self.max_frames_per_sentence = max_frames_per_sentence  # None: from the text length
        self.split_timings = False  # the bench turns it on to time prefill apart from the first frame
        self._assets = None
        self._loop = None
        self._codec = None
        self._builder = None
        self._voices = None
        # voice id -> KVSnapshot of its prompt segment, least recently used first
        self._prefixes: OrderedDict[str, object] = OrderedDict()
        self._gen_stream = None
        self._decode_stream = None
        self.device = None
        # Counters (also in status()).
        self.mimi_encodes_before_load = 0
        self.voice_cache_hits = 0
        self.last_prefill_tokens = 0
        self.last_request_text_tokens = 0
        self.frames_generated = 0
        self.last_context_turns = 0
        self.context_kv_hits = 0  # requests that continued the cached conversation state
        self.context_kv_misses = 0  # requests with context that had to prefill it
        self._spoken: list[_Spoken] = []
        self._streams = 0
        self._tail: _Tail | None = None
        self.last_timings: dict[str, float] = {}
        self.loads = 0

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._loop is not None

    def load(self) -> None:
        if self.loaded:
            return
        import mlx.core as mx

        from .codec import MimiCodec
        from .frame_loop import FrameLoop
        from .prompt import PromptBuilder
        from .voice_prompts import VoicePromptStore, file_prompt_source

        started = time.perf_counter()
        # MLX builds for Linux are CPU-only; asking for a GPU stream there kills the thread.
        self.device = mx.gpu if mx.is_available(mx.gpu) else mx.cpu
        mx.set_default_device(self.device)
        self._gen_stream = mx.new_stream(self.device)
        self._decode_stream = mx.new_stream(self.device)
        with mx.stream(self._gen_stream):
            if self.settings.random_weights:
                assets, locate, cache_dir = self._random_assets(self.settings.random_weights)
            else:
                from .loading import load_assets

                assets = load_assets(self.settings)
                locate = file_prompt_source(assets.model_dir, self.settings.hf_token)
                cache_dir = self.settings.cache_dir
            args = assets.model.args
            codebooks = int(args.audio_num_codebooks)
            self._codec = MimiCodec(assets.mimi, codebooks)
            if codebooks > int(assets.mimi.cfg.quantizer_nq):
                raise BackendError(f"CSM wants {codebooks} codebooks but Mimi has {assets.mimi.cfg.quantizer_nq}")
            self._loop = FrameLoop(assets.model, valid_ids=self._codec.bins)
            self._builder = PromptBuilder(
                assets.tokenizer, codebooks, bool(assets.config.get("speaker_prefix_space", False))
            )
            codec_id = f"{self.settings.mimi_id}|{self._codec.bins}"
            self._voices = VoicePromptStore(locate, self._codec.encode, codebooks, cache_dir, codec_id)
        self._assets = assets
        self._prefixes.clear()
        self.loads += 1
        log.info(
            "CSM loaded in %.1f s (%s, %s, quantize=%s, device=%s)",
            time.perf_counter() - started, assets.model_id, self.dtype, self.settings.quantize, self.device.name,
        )

    def _random_assets(self, flavor: str):
        from .random_weights import build_assets

        log.warning(RANDOM_WEIGHTS_WARNING, flavor)
        assets, locate = build_assets(flavor, self.settings.quantize)
        return assets, locate, None  # random prompts are not worth caching on disk

    def warmup(self) -> None:
        """A short generation: compiles the depth decoder, caches the default voice's prefix."""
        self.load()
        voice = self.settings.default_voice if self.settings.default_voice in BUILTIN_VOICES else "conversational_a"
        request = SpeechRequest(text="Hello.", sentences=("Hello.",), voice=voice, request_id="warmup", seed=0)
        started = time.perf_counter()
        saved, self.max_frames_per_sentence = self.max_frames_per_sentence, 2
        try:
            for _ in self.stream(request, threading.Event()):
                pass
        finally:
            self.max_frames_per_sentence = saved
        log.info("CSM warm-up done in %.1f s", time.perf_counter() - started)

    def unload(self) -> None:
        if not self.loaded:
            return
        import mlx.core as mx

        self.mimi_encodes_before_load += self._voices.encodes if self._voices else 0
        self._assets = self._loop = self._codec = self._builder = self._voices = None
        self._prefixes.clear()
        self._tail = None
        gc.collect()
        self._gen_stream = self._decode_stream = None
        mx.clear_cache()
        log.info("CSM unloaded (MLX active memory now %.2f GB)", mx.get_active_memory() / 1e9)

    def thread_exit(self) -> None:
        """The inference thread is ending: unload, and drop the MLX streams it made.

        MLX's own cleanup of a thread's streams runs after the thread's Python state is gone
        and can take the GIL while Python finalizes, aborting the process (exit 134)."""
        import mlx.core as mx

        self.unload()
        mx.clear_streams()  # only this thread's streams (its default stream included)

    # -- catalogue & status -------------------------------------------------------------

    def voices(self) -> list[Voice]:
        return list(BUILTIN_VOICES.values())

    @property
    def mimi_encodes(self) -> int:
        return self.mimi_encodes_before_load + (self._voices.encodes if self._voices else 0)

    @property
    def dtype(self) -> str | None:
        if self._assets is None:
            return None
        return str(self._assets.model.codebook0_head.weight.dtype).removeprefix("mlx.core.")

    @property
    def model(self):
        """The loaded mlx-audio SesameModel (the bench runs the reference loop on it)."""
        return self._assets.model if self._assets else None

    @property
    def model_config(self) -> dict | None:
        return self._assets.config if self._assets else None

    def status(self) -> dict:
        memory = peak = None
        try:
            import mlx.core as mx

            memory = round(mx.get_active_memory() / 1e9, 3)
            peak = round(mx.get_peak_memory() / 1e9, 3)
        except ImportError:
            pass
        status = {
            "loaded": self.loaded,
            "memory_gb": memory,
            "peak_memory_gb": peak,
            "rss_gb": _rss_gb(),
            "random_weights": self.settings.random_weights,
            "model_id": self._assets.model_id if self._assets else (
                f"random-weights:{self.settings.random_weights}" if self.settings.random_weights
                else str(self.settings.model_path or self.settings.model_id)),
            "quantize": self.settings.quantize,
            "dtype": self.dtype,
            "device": getattr(self.device, "name", str(self.device)) if self.device is not None else None,
            "mimi_encodes": self.mimi_encodes,
            "voice_cache_hits": self.voice_cache_hits,
            "voices_prefilled": sorted(self._prefixes),
            "last_prefill_tokens": self.last_prefill_tokens,
            "last_request_text_tokens": self.last_request_text_tokens,
            "frames_generated": self.frames_generated,
            "last_context_turns": self.last_context_turns,
            "context_kv_hits": self.context_kv_hits,
            "context_kv_misses": self.context_kv_misses,
            "last_timings_ms": {k: round(v * 1000, 1) for k, v in self.last_timings.items()},
        }
        if self.settings.random_weights:
            status["warning"] = RANDOM_WEIGHTS_WARNING % self.settings.random_weights
        return status

    # -- generation -----------------------------------------------------------------------

    def voice_prompt(self, voice_id: str, cloned=None) -> VoicePrompt:
        """The prompt of a built-in voice, or of a cloned one (`cloned`: engine VoicePrompt)."""
        from .voice_prompts import cloned_prompt_source

        self.load()
        if cloned is None:
            return self._voices.get(voice_id)
        return self._voices.get(voice_id, cloned_prompt_source(cloned.key, cloned.audio_path, cloned.text))

    def reference_prompt(self, voice_id: str, sentence: str):
        """[voice segment + end frame][sentence] as one TokenFrames: what a cold request prefills."""
        from .prompt import TokenFrames

        voice = self.voice_prompt(voice_id)
        parts = [self._builder.segment(voice.text, voice.speaker, voice.codes), self._builder.text(sentence, voice.speaker)]
        return TokenFrames.concat(parts, self._builder.width)

    @property
    def valid_ids(self) -> int:
        return self._loop.valid_ids

    def stream(self, request: SpeechRequest, cancel: threading.Event) -> Iterator[np.ndarray]:
        import mlx.core as mx

        from .prompt import TokenFrames

        self.load()
        loop, builder = self._loop, self._builder
        started = time.perf_counter()
        self.last_timings = {}
        self.frames_generated = 0
        self._spoken = []
        self._streams += 1
        tail, self._tail = self._tail, None  # whatever happens now, the cache moves on
        params, key = _sampling(request)
        chunker = _Chunker(request.first_chunk_frames or self.settings.stream_buffer_frames)

        with mx.stream(self._gen_stream):
            voice = self.voice_prompt(request.voice, request.voice_prompt)
        # (key, frames) per context segment, oldest first; keys say what the KV cache holds.
        history = [(_turn_key(t.turn_id, t.text, t.speaker, _codes(t.codes)),
                    builder.segment(t.text, t.speaker, _codes(t.codes))) for t in request.context]
        if request.previous_text:
            history.append((_turn_key(None, request.previous_text, voice.speaker),
                            builder.text(request.previous_text, voice.speaker)))
        sentences = [s for s in request.sentences if s.strip()]
        texts = [builder.text(sentence, voice.speaker) for sentence in sentences]
        if not texts:
            return
        resumed = self._resume(tail, voice, [k for k, _ in history], texts[0])
        if resumed is not None:
            pending, in_cache, prefilled = resumed, list(tail.keys), 0
        else:
            with mx.stream(self._gen_stream):
                _, prefilled = self._voice_prefix(voice, restore=True)
            pending = TokenFrames.concat([f for _, f in history], builder.width)  # goes in with sentence 1
            in_cache = [k for k, _ in history]
        self.last_context_turns = _count_turns(in_cache)
        text_tokens = 0
        self._codec.reset()  # no Mimi state may leak from the previous utterance
        for index, (sentence, text) in enumerate(zip(sentences, texts)):
            text_tokens += len(text)
            max_frames = self._max_frames(len(text))
            pending = TokenFrames.concat([pending, text], builder.width)
            if loop.cache.offset + len(pending) + max_frames + 1 > loop.max_len:
                pending, max_frames, extra = self._make_room(voice, history, text, max_frames)
                prefilled += extra
                in_cache = [k for k, _ in history]
                self.last_context_turns = _count_turns([k for k in in_cache if k[0] != request.request_id])
            prefill_started = time.perf_counter()
            with mx.stream(self._gen_stream):
                last_h = loop.prefill(pending)
                if index == 0 and self.split_timings:
                    # Waiting here splits time to first audio into its parts (the bench), but
                    # costs the overlap of prefill with building the first frame's graph.
                    mx.eval(last_h)
                    self.last_timings["voice"] = prefill_started - started
                    self.last_timings["prefill"] = time.perf_counter() - prefill_started
                key, sub = mx.random.split(key)
                frames = loop.generate(last_h, params, sub, max_frames, cancel, decode=self._decode)
            prefilled += len(pending)
            self.last_prefill_tokens = prefilled
            self.last_request_text_tokens = text_tokens
            spoken = _Spoken(sentence)
            self._spoken.append(spoken)
            frame_started = time.perf_counter()
            while True:
                with mx.stream(self._gen_stream):
                    item = next(frames, None)
                if item is None:
                    break
                _, host, pcm = item
                self.last_timings.setdefault("first_frame", time.perf_counter() - frame_started)
                spoken.frames.append(host)
                self.frames_generated += 1
                decode_started = time.perf_counter()
                block = chunker.push(np.array(pcm))
                self.last_timings.setdefault("first_decode", time.perf_counter() - decode_started)
                if block is not None:
                    self.last_timings.setdefault("first_audio", time.perf_counter() - started)
                    yield block
                if cancel.is_set():
                    break
            if loop.state.cancelled or cancel.is_set():
                return
            spoken.complete = True
            codes = spoken.codes(builder)
            own = _turn_key(request.request_id, sentence, voice.speaker, codes)
            history.append((own, TokenFrames.concat([text, builder.audio(codes)], builder.width)))
            in_cache.append(own)
            pending = loop.closing_frames(builder.width)  # close sentence k before k+1
        rest = chunker.flush()
        if rest is not None:
            yield rest
        # The cache now holds this whole turn: the next turn of the conversation starts here.
        self._tail = _Tail(voice.voice_id, tuple(in_cache), self._streams, loop.cache.offset, pending)
        self.last_timings["total"] = time.perf_counter() - started

    @property
    def last_codes(self) -> np.ndarray | None:
        """All codes of the last generation, [codebooks, frames] (None before any)."""
        if self._builder is None or not self._spoken:
            return None
        return _frames_to_codes([frame for spoken in self._spoken for frame in spoken.frames], self._builder)

    @property
    def last_segments(self) -> tuple[tuple[str, np.ndarray], ...]:
        """(sentence, codes) of the last generation as spoken; a cut-off sentence keeps its audio."""
        if self._builder is None:
            return ()
        return tuple((s.sentence, s.codes(self._builder)) for s in self._spoken if s.complete or s.frames)

    def _resume(self, tail: "_Tail | None", voice: VoicePrompt, keys: list, first_text):
        """Closing frames to prefill if the KV cache still holds this request's context, else None.

        It does when the previous generation (nothing ran since) was the last turn of this
        conversation in this voice: the request's context is then a suffix of what the
        cache holds (older turns the session has dropped may stay until the window fills).
        """
        if (tail is None or not keys or tail.stream != self._streams - 1 or tail.voice_id != voice.voice_id
                or tail.offset != self._loop.cache.offset):
            return None
        if len(keys) > len(tail.keys) or list(tail.keys[len(tail.keys) - len(keys):]) != keys:
            self.context_kv_misses += 1
            return None
        room = self._loop.max_len - self._loop.cache.offset - len(tail.closing) - len(first_text) - 1
        if room < self._max_frames(len(first_text)):
            self.context_kv_misses += 1  # window full: re-lay the context from the turns
            return None
        self.context_kv_hits += 1
        return tail.closing

    def _decode(self, codes):
        import mlx.core as mx

        with mx.stream(self._decode_stream):
            return self._codec.decode_frame(codes)

    def _voice_prefix(self, voice: VoicePrompt, restore: bool = False, count: bool = True):
        """The voice segment's KV snapshot (prefilled now if new) and tokens prefilled for it.

        With `restore`, the cache is left holding exactly the voice segment."""
        import mlx.core as mx

        snapshot = self._prefixes.get(voice.voice_id)
        if snapshot is not None:
            self._prefixes.move_to_end(voice.voice_id)
            self.voice_cache_hits += count
            if restore:
                self._loop.cache.restore(snapshot)
            return snapshot, 0
        frames = self._builder.segment(voice.text, voice.speaker, voice.codes)
        if len(frames) + 2 >= self._loop.max_len:
            raise BackendError(f"voice prompt {voice.voice_id} ({len(frames)} tokens) fills the context window")
        self._loop.cache.reset()
        mx.eval(self._loop.prefill(frames))
        snapshot = self._loop.cache.snapshot()
        self._prefixes[voice.voice_id] = snapshot
        while len(self._prefixes) > MAX_PREFIXES:
            self._prefixes.popitem(last=False)
        log.info("Voice %s prefilled once: %d tokens cached", voice.voice_id, len(frames))
        return snapshot, len(frames)

    def _max_frames(self, text_tokens: int) -> int:
        if self.max_frames_per_sentence is not None:
            return max(1, int(self.max_frames_per_sentence))
        # Generous: ~12 frames (~1 s) per text token, the model normally stops much earlier.
        return int(min(MAX_SECONDS_PER_SENTENCE / FRAME_SECONDS, 25 + 12 * text_tokens))

    def _make_room(self, voice: VoicePrompt, history: list, text, max_frames: int):
        """Re-lay the context within the window: drop the oldest segments, never the voice.

        Returns (frames to prefill, max frames, voice tokens prefilled); `history` keeps
        what stays."""
        import mlx.core as mx

        from .prompt import TokenFrames

        loop, width = self._loop, self._builder.width
        with mx.stream(self._gen_stream):
            prefix, prefilled = self._voice_prefix(voice, restore=True, count=False)  # same request
        kept = list(history)

        def too_long() -> bool:
            context = sum(len(f) for _, f in kept)
            # Keep at most half the window of context: the re-lay (a full prefill) then buys
            # room for many sentences instead of recurring at every one of them.
            return context + prefix.length + len(text) + max_frames + 1 > loop.max_len or context > loop.max_len // 2

        while kept and too_long():
            kept.pop(0)
        history[:] = kept
        room = loop.max_len - prefix.length - sum(len(f) for _, f in kept) - len(text) - 1
        if room < 1:
            raise BackendError("the sentence does not fit in CSM's 2048-token window next to the voice prompt")
        max_frames = min(max_frames, room)
        log.debug("Context window full: kept %d segments, up to %d frames", len(kept), max_frames)
        return TokenFrames.concat([*(f for _, f in kept), text], width), max_frames, prefilled


@dataclass(eq=False)
class _Spoken:
    """One sentence as generated so far."""

    sentence: str
    frames: list = field(default_factory=list)  # codes [codebooks] per frame
    complete: bool = False

    def codes(self, builder) -> np.ndarray:
        return _frames_to_codes(self.frames, builder)


@dataclass(frozen=True)
class _Tail:
    """What the backbone KV cache holds after a completed generation."""

    voice_id: str
    keys: tuple  # _turn_key of every segment after the voice prompt, oldest first
    stream: int  # the generation that left it (any later one invalidates it)
    offset: int  # cache length it left (anything else touching the cache changes it)
    closing: object  # TokenFrames still to feed to close the last segment


def _turn_key(turn_id: str | None, text: str, speaker: int, codes: np.ndarray | None = None) -> tuple:
    """A segment's identity: what was said, by whom, and exactly which audio codes."""
    return (turn_id, text, speaker, None if codes is None else (codes.shape, hash(codes.tobytes())))


def _count_turns(keys: list) -> int:
    """Distinct turns among segment keys (a generation spans one segment per sentence)."""
    return len({k[0] for k in keys if k[0]}) + sum(1 for k in keys if not k[0])


class _Chunker:
    """Holds back the first `first_frames` frames of audio, then passes frame by frame."""

    def __init__(self, first_frames: int | None):
        self.first_frames = max(1, int(first_frames or 1))
        self.held: list[np.ndarray] = []
        self.emitted = 0

    def push(self, block: np.ndarray) -> np.ndarray | None:
        if self.emitted == 0 and len(self.held) + 1 < self.first_frames:
            self.held.append(block)
            return None
        if self.held:
            block = np.concatenate([*self.held, block])
            self.held = []
        self.emitted += 1
        return block

    def flush(self) -> np.ndarray | None:
        held, self.held = self.held, []
        return np.concatenate(held) if held else None


def _sampling(request: SpeechRequest):
    import mlx.core as mx

    from .sampling import DEFAULT_TEMPERATURE, DEFAULT_TOP_K, SamplingParams

    params = SamplingParams(
        temperature=DEFAULT_TEMPERATURE if request.temperature is None else float(request.temperature),
        top_k=DEFAULT_TOP_K if request.top_k is None else int(request.top_k),
    )
    seed = request.seed if request.seed is not None else secrets.randbits(31)
    return params, mx.random.key(int(seed))


def _codes(codes) -> np.ndarray | None:
    return None if codes is None else np.asarray(codes)


def _frames_to_codes(frames: list[np.ndarray], builder) -> np.ndarray:
    if not frames:
        return np.zeros((builder.codebooks, 0), np.int32)
    return np.stack(frames, axis=1)


def _rss_gb() -> float | None:
    """Current resident set size (Linux: /proc; elsewhere the peak from getrusage)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        import os

        return round(pages * os.sysconf("SC_PAGE_SIZE") / 1e9, 3)
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(peak / (1e9 if sys.platform == "darwin" else 1e6), 3)
    except Exception:
        return None
