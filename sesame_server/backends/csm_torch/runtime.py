"""The loaded CSM on PyTorch: what CsmTorchBackend.load() builds (the counterpart of the MLX
backend's CsmRuntime, same operations for CsmBackend.stream). Inference-thread only."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

import numpy as np
import torch

from sesame_server.backends.base import BackendError
from sesame_server.backends.csm.prompt import PromptBuilder, TokenFrames
from sesame_server.backends.csm.random_weights import RANDOM_WEIGHTS_WARNING
from sesame_server.backends.csm.runtime_base import PrefixRuntime
from sesame_server.backends.csm.voice_prompts import VoicePromptStore, file_prompt_source
from sesame_server.config import Settings

from .codec import TorchMimiCodec
from .frame_loop import TorchFrameLoop
from .kv_cache import KVSnapshot
from .loading import TorchAssets, load_assets, pick_device, random_assets
from .sampling import SamplingParams, request_sampling

log = logging.getLogger(__name__)


class TorchYardsticks:
    """The bench's like-for-like measures on a TorchRuntime (mixed into it below)."""

    REFERENCE = "transformers generate()"  # whose loop reference_codes runs

    @torch.inference_mode()
    def reference_codes(self, voice_id: str, sentence: str, frames: int, params: SamplingParams = SamplingParams(),
                        seed: int = 0, timings: list[float] | None = None) -> np.ndarray:
        """transformers' own `generate()` on the same weights, prompt and sampling rule: codes
        [codebooks, frames]; `timings` gets seconds per frame (the first includes the prefill)."""
        prompt = self.reference_prompt(voice_id, sentence)
        embeds = self.loop.embed(prompt)[None]
        stamps: list[float] = []

        class Clock:  # transformers calls put() once per generated frame
            def put(self, _):
                stamps.append(time.perf_counter())

            def end(self):
                pass

        sampling = {"do_sample": not params.greedy}
        if not params.greedy:
            sampling.update(temperature=params.temperature, top_k=params.top_k)
        depth = {f"depth_decoder_{key}": value for key, value in sampling.items()}
        torch.manual_seed(seed)
        started = time.perf_counter()
        out = self.model.generate(inputs_embeds=embeds, max_new_tokens=frames, streamer=Clock(), **sampling, **depth)
        codes = out if isinstance(out, torch.Tensor) else out.sequences
        if timings is not None:
            stamps = [started, *stamps[-codes.shape[1]:]]
            timings.extend(b - a for a, b in zip(stamps, stamps[1:]))
        return codes[0].cpu().numpy().T.astype(np.int32)

    def codes_only_intervals(self, voice_id: str, sentence: str, frames: int, seed: int = 1) -> list[float]:
        """Our frame loop from the cached voice prefix, codes only (no Mimi). Seconds between frames."""
        voice = self.voice_prompt(voice_id)
        self.use_cache()  # it overwrites what a conversation left in the cache
        self.voice_prefix(voice)
        params, generator = request_sampling(None, seed, self.device)
        last_h = self.loop.prefill(self.builder.text(sentence, voice.speaker))
        stamps = [time.perf_counter() for _ in self.loop.generate(last_h, params, generator, frames)]
        return [b - a for a, b in zip(stamps, stamps[1:])]

    def decode_seconds(self, codes: np.ndarray) -> list[float]:
        """Mimi's streaming decode of each frame of `codes` [codebooks, frames], alone."""
        self.codec.reset()
        times = []
        for index in range(codes.shape[1]):
            frame = torch.as_tensor(codes[:, index][None], device=self.device, dtype=torch.long)
            started = time.perf_counter()
            self.pcm_array(frame)
            times.append(time.perf_counter() - started)
        self.codec.reset()
        return times

    def reset_peak_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    @property
    def config(self) -> dict:
        return {key: value for key, value in self.model.config.to_dict().items() if key != "codec_config"}


class TorchRuntime(TorchYardsticks, PrefixRuntime):
    def __init__(self, settings: Settings, window: int | None = None):
        started = time.perf_counter()
        self.device = pick_device()
        if settings.random_weights:
            log.warning(RANDOM_WEIGHTS_WARNING, settings.random_weights)
            assets, locate = random_assets(settings.random_weights, self.device)
            cache_dir = None  # random prompts are not worth caching on disk
        else:
            assets = load_assets(settings, self.device)
            locate = file_prompt_source(assets.model_dir, settings.hf_token)
            cache_dir = settings.cache_dir
        model = assets.model
        codebooks = int(model.config.num_codebooks)
        mimi = model.codec_model
        if codebooks > int(mimi.config.num_quantizers):
            raise BackendError(f"CSM wants {codebooks} codebooks but Mimi has {mimi.config.num_quantizers}")
        self.codec = TorchMimiCodec(mimi, codebooks)
        self.loop = TorchFrameLoop(model, valid_ids=self.codec.bins, max_len=window)
        self.builder = PromptBuilder(assets.tokenizer, codebooks, bins=self.codec.bins)
        # Codes depend on the Mimi weights: the cache key says which (torch and MLX never share).
        self.voices = VoicePromptStore(locate, self.codec.encode, codebooks, cache_dir,
                                       f"torch|{assets.model_id}|{self.codec.bins}", bins=self.codec.bins)
        self.assets: TorchAssets = assets
        self._prefixes: OrderedDict[str, KVSnapshot] = OrderedDict()  # least recently used first
        self._cache_uses = 0
        log.info("CSM (torch) loaded in %.1f s (%s, %s, device=%s%s)", time.perf_counter() - started,
                 assets.model_id, self.dtype, self.device_name,
                 ", depth decoder as CUDA graphs" if self.loop.graphs else "")

    @property
    def model(self):
        """transformers' CsmForConditionalGeneration."""
        return self.assets.model

    @property
    def dtype(self) -> str:
        return str(self.loop.dtype).removeprefix("torch.")

    @property
    def device_name(self) -> str:
        if self.device.type == "cuda":
            return f"cuda ({torch.cuda.get_device_name(self.device)})"
        return self.device.type

    # -- what CsmBackend.stream runs -----------------------------------------------------

    def sampling(self, temperature: float | None, seed: int | None) -> tuple[SamplingParams, torch.Generator]:
        return request_sampling(temperature, seed, self.device)

    def prefill(self, frames: TokenFrames, *, wait: bool = False) -> torch.Tensor:
        last_h = self.loop.prefill(frames)
        if wait and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return last_h

    def frames(self, last_h: torch.Tensor, params: SamplingParams, generator: torch.Generator, max_frames: int,
               cancel):
        """(codes on the host, the same codes on the device) per frame; pcm_array decodes them."""
        for codes, host, _ in self.loop.generate(last_h, params, generator, max_frames, cancel):
            yield host, codes

    def pcm_array(self, codes: torch.Tensor) -> np.ndarray:
        """One frame's audio: Mimi decodes it here, so the bench times decoding on its own."""
        return self.codec.decode_frame(codes).float().cpu().numpy()

    @staticmethod
    def release() -> str:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            return f"CUDA memory allocated now {torch.cuda.memory_allocated() / 1e9:.2f} GB"
        return "CPU memory returned to the allocator"

    @staticmethod
    def thread_exit() -> None:
        """Nothing is kept per thread by torch."""

    def memory(self) -> tuple[int | None, int | None]:
        """(allocated, peak) bytes: CUDA's allocator on a GPU; on a CPU what the model holds
        (weights, KV cache, voice prefixes), peak then being the same figure."""
        if self.device.type == "cuda":
            return int(torch.cuda.memory_allocated(self.device)), int(torch.cuda.max_memory_allocated(self.device))
        tensors = [*self.model.parameters(), *self.model.buffers(), self.loop.cache.keys, self.loop.cache.values]
        held = sum(t.numel() * t.element_size() for t in tensors)
        held += sum(snapshot.nbytes for snapshot in self._prefixes.values())
        return held, held

