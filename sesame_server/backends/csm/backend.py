"""CsmBackend: Sesame CSM-1B behind the Backend protocol (orchestration only, no framework).

All methods run on the engine's single inference thread; load() builds the runtime there:
CsmRuntime (MLX: model, Mimi, frame loop, MLX streams) for `csm`, csm_torch's TorchRuntime
for `csm-torch`. A runtime offers the same few operations (sampling, prefill, frames,
voice prompts and prefixes, Mimi), so conversation memory, windows, voices and streaming
are this one file for both. Per request:

  [voice prompt + end frame]  cached backbone KV (prefilled once per voice)
  [context turns][previous_text]   prefilled with the first sentence
  [sentence 1] -> frames ... [end frame][sentence 2] -> frames ...   one running context

Frames stream out one by one after the first block (chunker.py), decoded by Mimi on a second
MLX stream while the next frame computes. What the KV cache keeps between turns is
window.py's policy; what a request reports is telemetry.py's GenerationRecord."""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import TYPE_CHECKING, Generator


from sesame_server.audio.units import SAMPLE_RATE
from sesame_server.backends.base import BackendInfo, Block, Generation, Voice
from sesame_server.config import Settings
from sesame_server.engine.request import ReferenceVoice, SpeechRequest

from . import window
from .chunker import Chunker
from .telemetry import Counters, GenerationRecord, csm_status
from .voice_prompts import BUILTIN_VOICES, VoicePrompt

if TYPE_CHECKING:  # MLX is imported on load, on the inference thread
    from .prompt import TokenFrames
    from .runtime import CsmRuntime

log = logging.getLogger(__name__)


class CsmBackend:
    # A voice is a prompt segment, so any reference recording clones; prior turns' codes
    # condition the next one (conversation memory).
    info = BackendInfo(name="csm", sample_rate=SAMPLE_RATE, can_clone=True, uses_context=True)
    summary = "CSM"  # how the log names it

    def __init__(self, settings: Settings, *, max_frames_per_sentence: int | None = None, max_len: int | None = None):
        self.settings = settings
        self.max_frames_per_sentence = max_frames_per_sentence  # None: from the text length
        self.max_len = max_len  # backbone window in positions; None: the model's (2048)
        self.split_timings = False  # the bench: wait for the prefill to time it apart from the first frame
        self.counters = Counters()
        self._runtime: CsmRuntime | None = None
        self._tail: window.Tail | None = None  # what the KV cache holds for the next turn
        self._device: str | None = None
        self._mimi_encodes_before_load = 0

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def runtime(self) -> "CsmRuntime | None":
        """The loaded model and its primitives (the bench's yardsticks); None before load()."""
        return self._runtime

    def load(self) -> None:
        if self._runtime is not None:
            return
        self._runtime = self._runtime_type()(self.settings, self.max_len)
        self._device = self._runtime.device_name

    def warmup(self) -> None:
        """A short generation: compiles the depth decoder, caches the default voice's prefix."""
        self.load()
        voice = self.settings.default_voice if self.settings.default_voice in BUILTIN_VOICES else "conversational_a"
        started = time.perf_counter()
        saved, self.max_frames_per_sentence = self.max_frames_per_sentence, 2
        try:
            for _ in self.stream(SpeechRequest(text="Hello.", voice=voice, request_id="warmup", seed=0),
                                 threading.Event()):
                pass
        finally:
            self.max_frames_per_sentence = saved
        log.info("%s warm-up done in %.1f s", self.summary, time.perf_counter() - started)

    def unload(self) -> None:
        if self._runtime is None:
            return
        runtime = self._runtime
        self._mimi_encodes_before_load += runtime.voices.encodes
        self._runtime = self._tail = None
        gc.collect()
        log.info("%s unloaded (%s)", self.summary, type(runtime).release())

    def thread_exit(self) -> None:
        """The inference thread is ending: unload, and drop what the framework keeps per thread."""
        self.unload()
        self._runtime_type().thread_exit()

    def _runtime_type(self) -> type:
        """The runtime class (imported on the inference thread: MLX is heavy)."""
        from .runtime import CsmRuntime

        return CsmRuntime

    # -- catalogue & status -------------------------------------------------------------

    def voices(self) -> list[Voice]:
        return list(BUILTIN_VOICES.values())

    def prepare_voice(self, reference: ReferenceVoice) -> None:
        """A new cloned voice, encoded and prefilled now: refused at upload if it cannot work."""
        self.load()
        self._tail = None  # the cache is about to hold this voice alone
        self._runtime.prepare_voice(reference)

    def forget_voice(self, voice_id: str) -> None:
        if self._tail is not None and self._tail.voice_id == voice_id:
            self._tail = None  # its KV state was made from the deleted recording
        if self._runtime is not None:
            self._runtime.forget_voice(voice_id)

    @property
    def mimi_encodes(self) -> int:
        """Voice prompts Mimi-encoded since the backend was made (across reloads)."""
        return self._mimi_encodes_before_load + (self._runtime.voices.encodes if self._runtime else 0)

    def status(self) -> dict:
        return csm_status(self.settings, self._runtime, device=self._device, mimi_encodes=self.mimi_encodes,
                          counters=self.counters,
                          memory=self._runtime.memory() if self._runtime else (None, None))

    # -- generation -----------------------------------------------------------------------

    def stream(self, request: SpeechRequest, cancel: threading.Event) -> Generator[Block, None, Generation]:
        from .prompt import TokenFrames, context_segments

        self.load()
        rt = self._runtime
        loop, builder = rt.loop, rt.builder
        record = GenerationRecord(builder.codebooks)
        use = rt.use_cache()
        tail, self._tail = self._tail, None  # whatever happens now, the cache moves on
        params, rng = rt.sampling(request.temperature, request.seed)
        chunker = Chunker(request.first_chunk_frames or self.settings.stream_buffer_frames)
        voice = rt.voice_prompt(request.voice, request.reference)
        history = context_segments(builder, request, voice.speaker)  # keys say what the cache holds
        sentences = [s for s in request.sentences if s.strip()]
        texts = [builder.text(sentence, voice.speaker) for sentence in sentences]
        if not texts:
            return record.result()
        record.text_tokens = sum(len(text) for text in texts)
        pending, in_cache = self._start(tail, use, voice, history, len(texts[0]), record)
        rt.codec.reset()  # no Mimi state may leak from the previous utterance
        for index, (sentence, text) in enumerate(zip(sentences, texts)):
            max_frames = window.frame_budget(len(text), self.max_frames_per_sentence,
                                                self.settings.max_sentence_seconds)
            pending = TokenFrames.concat([pending, text], builder.width)
            if not window.fits(loop.cache.offset, len(pending), max_frames, loop.max_len):
                pending, max_frames = self._relay(voice, history, text, max_frames, record)
                in_cache = [k for k, _ in history]
                record.context_turns = window.count_turns(in_cache, excluding=request.request_id)
            prefill_started = time.perf_counter()
            # Waiting for the prefill splits time to first audio into its parts (the bench),
            # but costs the overlap of prefill with building the first frame's work.
            split = index == 0 and self.split_timings
            last_h = rt.prefill(pending, wait=split)
            if split:
                record.timings["voice"] = prefill_started - record.started
                record.timings["prefill"] = time.perf_counter() - prefill_started
            frames = rt.frames(last_h, params, rng, max_frames, cancel)
            self._count_prefill(record, len(pending))
            record.begin_sentence(sentence)
            frame_started = time.perf_counter()
            for host, pcm in frames:
                record.first("first_frame", frame_started)
                record.frame(host)
                self.counters.frames_generated += 1
                decode_started = time.perf_counter()
                pcm = chunker.push(rt.pcm_array(pcm))
                record.first("first_decode", decode_started)
                if pcm is not None:
                    yield record.block(pcm)
                if cancel.is_set():
                    break
            if loop.state.cancelled or cancel.is_set():
                return record.result()  # a cut-off turn leaves no state to continue
            codes = record.complete_sentence()
            own = window.segment_key(request.request_id, sentence, voice.speaker, codes)
            history.append((own, TokenFrames.concat([text, builder.audio(codes)], builder.width)))
            in_cache.append(own)
            pending = loop.closing_frames(builder.width)  # close sentence k before k+1
        rest = chunker.flush()
        if rest is not None:
            yield record.block(rest)
        # The cache now holds this whole turn: the next turn of the conversation starts here.
        self._tail = window.Tail(voice.voice_id, tuple(in_cache), use, loop.cache.offset, pending)
        record.timings["total"] = time.perf_counter() - record.started
        return record.result()

    def _start(self, tail: window.Tail | None, use: int, voice: VoicePrompt, history: list, first_text: int,
               record: GenerationRecord) -> tuple[TokenFrames, list[window.SegmentKey]]:
        """Continue the cached conversation, or start from the voice prefix with the context
        to prefill: (frames to prefill before the first sentence, keys then in the cache)."""
        from .prompt import TokenFrames

        rt = self._runtime
        keys = [k for k, _ in history]
        verdict = window.continuation(
            tail, voice_id=voice.voice_id, keys=keys, user=use, offset=rt.loop.cache.offset, window=rt.loop.max_len,
            first_text=first_text, max_frames=window.frame_budget(first_text, self.max_frames_per_sentence,
                                           self.settings.max_sentence_seconds))
        if verdict is window.Continuation.CONTINUE:
            self.counters.context_kv_hits += 1
            pending, in_cache = tail.closing, list(tail.keys)
        else:
            self.counters.context_kv_misses += verdict is window.Continuation.MISS
            _, prefilled = rt.voice_prefix(voice)
            self.counters.voice_cache_hits += prefilled == 0
            self._count_prefill(record, prefilled)
            pending, in_cache = TokenFrames.concat([f for _, f in history], rt.builder.width), keys
        record.context_turns = window.count_turns(in_cache)
        return pending, in_cache

    def _relay(self, voice: VoicePrompt, history: list, text: TokenFrames, max_frames: int,
               record: GenerationRecord) -> tuple[TokenFrames, int]:
        """The window is full: restart from the voice prefix with what window.relay keeps of
        `history` (left holding it). Returns (frames to prefill, max frames)."""
        from .prompt import TokenFrames

        rt = self._runtime
        prefix, prefilled = rt.voice_prefix(voice)  # cached by this very request
        plan = window.relay([len(f) for _, f in history], voice_tokens=prefix.length, text_tokens=len(text),
                            max_frames=max_frames, window=rt.loop.max_len)
        del history[:plan.dropped]
        self.counters.window_relays += 1
        self._count_prefill(record, prefilled)
        log.debug("Context window full: kept %d segments, up to %d frames", len(history), plan.max_frames)
        return TokenFrames.concat([*(f for _, f in history), text], rt.builder.width), plan.max_frames

    def _count_prefill(self, record: GenerationRecord, tokens: int) -> None:
        record.prefilled(tokens)
        self.counters.prefill_tokens_total += tokens
