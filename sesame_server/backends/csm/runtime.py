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

from sesame_server.backends.base import BackendError
from sesame_server.config import Settings

from .codec import MimiCodec
from .frame_loop import FrameLoop
from .kv_cache import KVSnapshot
from .loading import CsmAssets, load_assets, mimi_source
from .prompt import PromptBuilder, TokenFrames
from .random_weights import RANDOM_WEIGHTS_WARNING, build_assets
from .reference import reference_frames
from .runtime_base import PrefixRuntime
from .sampling import SamplingParams, reference_sampler, request_sampling
from .voice_prompts import VoicePromptStore, file_prompt_source

log = logging.getLogger(__name__)

class KeyChain:
    """A request's PRNG key, split once per sentence."""

    def __init__(self, key: mx.array):
        self.key = key

    def next(self) -> mx.array:
        self.key, sub = mx.random.split(self.key)
        return sub


class CsmRuntime(PrefixRuntime):
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
                assets.tokenizer, codebooks, bool(assets.config.get("speaker_prefix_space", False)),
                bins=self.codec.bins,
            )
            # Which Mimi made the codes (cached on a disk other nodes may share): its source, not only MIMI_ID.
            codec_id = f"{mimi_source(settings, assets.model_dir)}|{self.codec.bins}"
            self.voices = VoicePromptStore(locate, self.codec.encode, codebooks, cache_dir, codec_id,
                                           bins=self.codec.bins)
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

    @property
    def device_name(self) -> str:
        return self.device.name

    def _on_device(self):
        return mx.stream(self.gen_stream)

    def _settle(self, value) -> None:
        mx.eval(value)

    # -- what CsmBackend.stream runs (the same on every framework's runtime) -----------------

    def sampling(self, temperature: float | None, seed: int | None) -> tuple[SamplingParams, "KeyChain"]:
        params, key = request_sampling(temperature, seed)
        return params, KeyChain(key)

    def prefill(self, frames: TokenFrames, *, wait: bool = False) -> mx.array:
        with mx.stream(self.gen_stream):
            last_h = self.loop.prefill(frames)
            if wait:
                mx.eval(last_h)
        return last_h

    def frames(self, last_h: mx.array, params: SamplingParams, keys: "KeyChain", max_frames: int, cancel):
        """(codes on the host, lazy PCM) per frame; Mimi decodes on its own stream."""
        with mx.stream(self.gen_stream):
            frames = self.loop.generate(last_h, params, keys.next(), max_frames, cancel, decode=self.decode)
        while True:
            with mx.stream(self.gen_stream):
                item = next(frames, None)
            if item is None:
                return
            yield item[1], item[2]

    @staticmethod
    def pcm_array(pcm: mx.array) -> np.ndarray:
        return np.array(pcm)

    @staticmethod
    def release() -> str:
        """After a runtime is dropped: give memory back; says what is left."""
        mx.clear_cache()
        return f"MLX active memory now {mx.get_active_memory() / 1e9:.2f} GB"

    @staticmethod
    def thread_exit() -> None:
        """MLX's own cleanup of a thread's streams runs after the thread's Python state is gone
        and can take the GIL while Python finalizes, aborting the process (exit 134): drop
        this thread's streams (its default stream included) now."""
        mx.clear_streams()

    def memory(self) -> tuple[int | None, int | None]:
        """(active, peak) MLX memory in bytes."""
        return int(mx.get_active_memory()), int(mx.get_peak_memory())

    def decode(self, codes: mx.array) -> mx.array:
        """One frame's PCM, built on the decode stream."""
        with mx.stream(self.decode_stream):
            return self.codec.decode_frame(codes)

    # -- the bench's yardsticks --------------------------------------------------------------

    REFERENCE = "mlx-audio"  # whose loop reference_codes runs

    @property
    def config(self) -> dict:
        return self.assets.config

    def reset_peak_memory(self) -> None:
        mx.reset_peak_memory()

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
