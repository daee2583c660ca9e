"""The loaded CSM on its MLX streams: what CsmBackend.load() builds, and the primitives
requests and the bench run on it.

Everything here belongs to the engine's inference thread: MLX streams are thread-local, so
a runtime is made there (load()) and dropped there (unload(), thread_exit()). Generation
runs on `gen_stream`; Mimi decodes on `decode_stream`, overlapping the next frame.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

import mlx.core as mx
import numpy as np

from sesame_server.backends.base import BackendError, VoiceUnavailable
from sesame_server.config import Settings
from sesame_server.engine.request import ReferenceVoice

from .codec import MimiCodec
from .frame_loop import FrameLoop
from .kv_cache import KVSnapshot
from .loading import CsmAssets, load_assets
from .prompt import PromptBuilder, TokenFrames
from .random_weights import RANDOM_WEIGHTS_WARNING, build_assets
from .reference import reference_frames
from .sampling import SamplingParams, reference_sampler
from .voice_prompts import VoicePrompt, VoicePromptStore, file_prompt_source, reference_prompt_source

log = logging.getLogger(__name__)

MAX_PREFIXES = 16  # voice-prefix KV snapshots kept (~13 MB each at full size in bf16)


class CsmRuntime:
    """Model, Mimi, frame loop, prompt builder and voice prompts, with the voice prefixes'
    KV snapshots. `window`: backbone positions (default the model's 2048; smaller in tests)."""

    def __init__(self, settings: Settings, window: int | None = None):
        started = time.perf_counter()
        # MLX builds for Linux are CPU-only; asking for a GPU stream there kills the thread.
        self.device = mx.gpu if mx.is_available(mx.gpu) else mx.cpu
        mx.set_default_device(self.device)
        self.gen_stream = mx.new_stream(self.device)
        self.decode_stream = mx.new_stream(self.device)
        with mx.stream(self.gen_stream):
            if settings.random_weights:
                log.warning(RANDOM_WEIGHTS_WARNING, settings.random_weights)
                assets, locate = build_assets(settings.random_weights, settings.quantize)
                cache_dir = None  # random prompts are not worth caching on disk
            else:
                assets = load_assets(settings)
                locate = file_prompt_source(assets.model_dir, settings.hf_token)
                cache_dir = settings.cache_dir
            codebooks = int(assets.model.args.audio_num_codebooks)
            self.codec = MimiCodec(assets.mimi, codebooks)
            if codebooks > int(assets.mimi.cfg.quantizer_nq):
                raise BackendError(f"CSM wants {codebooks} codebooks but Mimi has {assets.mimi.cfg.quantizer_nq}")
            self.loop = FrameLoop(assets.model, valid_ids=self.codec.bins, max_len=window)
            self.builder = PromptBuilder(
                assets.tokenizer, codebooks, bool(assets.config.get("speaker_prefix_space", False))
            )
            codec_id = f"{settings.mimi_id}|{self.codec.bins}"
            self.voices = VoicePromptStore(locate, self.codec.encode, codebooks, cache_dir, codec_id)
        self.assets: CsmAssets = assets
        self._prefixes: OrderedDict[str, KVSnapshot] = OrderedDict()  # least recently used first
        self._cache_uses = 0
        log.info("CSM loaded in %.1f s (%s, %s, quantize=%s, device=%s)", time.perf_counter() - started,
                 assets.model_id, self.dtype, settings.quantize, self.device.name)

    @property
    def model(self):
        """The mlx-audio SesameModel (the reference loop and tests run on it)."""
        return self.assets.model

    @property
    def dtype(self) -> str:
        return str(self.assets.model.codebook0_head.weight.dtype).removeprefix("mlx.core.")

    def use_cache(self) -> int:
        """Number this use of the backbone KV cache: a Tail left by an older use is stale."""
        self._cache_uses += 1
        return self._cache_uses

    # -- voices ---------------------------------------------------------------------------

    def voice_prompt(self, voice_id: str, reference: ReferenceVoice | None = None) -> VoicePrompt:
        """A built-in voice's prompt, or a cloned voice's made from its reference recording."""
        with mx.stream(self.gen_stream):
            return self.voices.get(voice_id, None if reference is None else reference_prompt_source(reference))

    def voice_prefix(self, voice: VoicePrompt) -> tuple[KVSnapshot, int]:
        """Leave the cache holding exactly the voice segment: (its snapshot, tokens prefilled
        for it now, 0 when it was cached)."""
        with mx.stream(self.gen_stream):
            snapshot = self._prefixes.get(voice.voice_id)
            if snapshot is not None:
                self._prefixes.move_to_end(voice.voice_id)
                self.loop.cache.restore(snapshot)
                return snapshot, 0
            frames = self.builder.segment(voice.text, voice.speaker, voice.codes)
            if len(frames) + 2 >= self.loop.max_len:
                raise VoiceUnavailable(voice.voice_id, f"its prompt ({len(frames)} tokens) fills the model's "
                                                       f"{self.loop.max_len}-token window")
            self.loop.cache.reset()
            mx.eval(self.loop.prefill(frames))
            snapshot = self.loop.cache.snapshot()
        self._prefixes[voice.voice_id] = snapshot
        while len(self._prefixes) > MAX_PREFIXES:
            self._prefixes.popitem(last=False)
        log.info("Voice %s prefilled once: %d tokens cached", voice.voice_id, len(frames))
        return snapshot, len(frames)

    def prepare_voice(self, reference: ReferenceVoice) -> None:
        """Encode a cloned voice's prompt and prefill its KV prefix; VoiceUnavailable if the
        prompt would leave too little of the window for the conversation."""
        voice = self.voice_prompt(reference.voice_id, reference)
        tokens = len(self.builder.segment(voice.text, voice.speaker, voice.codes))
        budget = self.loop.max_len // 2  # the other half is for the conversation and the reply
        if tokens > budget:
            raise VoiceUnavailable(reference.voice_id, f"its transcript and recording take {tokens} of the model's "
                                   f"{self.loop.max_len}-token window; at most {budget} may: shorten the transcript "
                                   "or the recording")
        self.voice_prefix(voice)

    def voices_prefilled(self) -> list[str]:
        return sorted(self._prefixes)

    def forget_voice(self, voice_id: str) -> None:
        """A deleted voice: drop its prompt codes and its KV prefix snapshot."""
        self.voices.forget(voice_id)
        self._prefixes.pop(voice_id, None)

    def forget_voice_prefixes(self) -> None:
        """Drop every voice prefix snapshot: the next request of each voice prefills it cold
        (the bench's cold figures)."""
        self._prefixes.clear()

    def decode(self, codes: mx.array) -> mx.array:
        """One frame's PCM, built on the decode stream."""
        with mx.stream(self.decode_stream):
            return self.codec.decode_frame(codes)

    # -- the bench's yardsticks --------------------------------------------------------------

    def reference_prompt(self, voice_id: str, sentence: str) -> TokenFrames:
        """[voice segment + end frame][sentence] as one TokenFrames: what a cold request prefills."""
        voice = self.voice_prompt(voice_id)
        parts = [self.builder.segment(voice.text, voice.speaker, voice.codes), self.builder.text(sentence, voice.speaker)]
        return TokenFrames.concat(parts, self.builder.width)

    def reference_codes(self, voice_id: str, sentence: str, frames: int, params: SamplingParams = SamplingParams(),
                        seed: int = 0, timings: list[float] | None = None) -> np.ndarray:
        """mlx-audio's own loop on the same weights, prompt and sampling rule: codes
        [codebooks, frames]; `timings` gets seconds per frame (the first includes the prefill)."""
        prompt = self.reference_prompt(voice_id, sentence)
        sampler = reference_sampler(params, self.loop.valid_ids, mx.random.key(seed))
        with mx.stream(self.gen_stream):
            return reference_frames(self.model, prompt, sampler, frames, timings)

    def codes_only_intervals(self, voice_id: str, sentence: str, frames: int, seed: int = 1) -> list[float]:
        """Our frame loop from the cached voice prefix, producing codes only (no Mimi): like
        for like with the reference loop. Seconds between frames."""
        voice = self.voice_prompt(voice_id)
        self.use_cache()  # it overwrites what a conversation left in the cache
        with mx.stream(self.gen_stream):
            self.voice_prefix(voice)
            last_h = self.loop.prefill(self.builder.text(sentence, voice.speaker))
            stamps = [time.perf_counter()
                      for _ in self.loop.generate(last_h, SamplingParams(), mx.random.key(seed), frames)]
        return [b - a for a, b in zip(stamps, stamps[1:])]

    def decode_seconds(self, codes: np.ndarray) -> list[float]:
        """Mimi's streaming decode of each frame of `codes` [codebooks, frames], alone."""
        self.codec.reset()
        times = []
        with mx.stream(self.decode_stream):
            for index in range(codes.shape[1]):
                frame = mx.array(codes[:, index][None])
                started = time.perf_counter()
                mx.eval(self.codec.decode_frame(frame))
                times.append(time.perf_counter() - started)
        self.codec.reset()
        return times
