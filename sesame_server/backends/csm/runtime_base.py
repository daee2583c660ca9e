"""What every CSM runtime (MLX's CsmRuntime, csm_torch's TorchRuntime) does the same way:
voice prompts, the voice prefixes' KV snapshots (least recently used dropped), the cache's
use counter. A runtime provides `loop`, `builder`, `voices`, `_prefixes`, `_cache_uses` and
two hooks: `_on_device()` (a context: MLX's generation stream) and `_settle(x)` (wait for
a lazy result)."""

from __future__ import annotations

import contextlib
import logging

from sesame_server.backends.base import VoiceUnavailable
from sesame_server.engine.request import ReferenceVoice

from .prompt import TokenFrames
from .voice_prompts import VoicePrompt, reference_prompt_source

log = logging.getLogger(__name__)

MAX_PREFIXES = 16  # voice-prefix KV snapshots kept (~13 MB each at full size in bf16)


class PrefixRuntime:
    def _on_device(self):
        return contextlib.nullcontext()

    def _settle(self, value) -> None:
        """Wait for a lazily computed value (MLX); eager frameworks have nothing to do."""

    def use_cache(self) -> int:
        """Number this use of the backbone KV cache: a Tail left by an older use is stale."""
        self._cache_uses += 1
        return self._cache_uses

    # -- voices ---------------------------------------------------------------------------

    def voice_prompt(self, voice_id: str, reference: ReferenceVoice | None = None) -> VoicePrompt:
        """A built-in voice's prompt, or a cloned voice's made from its reference recording."""
        # A prompt in memory first: a cloned voice's source reads its whole recording (for the
        # cache key), which is only needed to encode or find its codes, once per voice.
        prompt = self.voices.cached(voice_id)
        if prompt is not None:
            return prompt
        with self._on_device():
            return self.voices.get(voice_id, None if reference is None else reference_prompt_source(reference))

    def voice_prefix(self, voice: VoicePrompt):
        """Leave the cache holding exactly the voice segment: (its KV snapshot, tokens
        prefilled for it now, 0 when it was cached)."""
        with self._on_device():
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
            self._settle(self.loop.prefill(frames))
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


    def reference_prompt(self, voice_id: str, sentence: str) -> TokenFrames:
        """[voice segment + end frame][sentence] as one TokenFrames: what a cold request
        prefills (the bench's reference loops start from it)."""
        voice = self.voice_prompt(voice_id)
        parts = [self.builder.segment(voice.text, voice.speaker, voice.codes), self.builder.text(sentence, voice.speaker)]
        return TokenFrames.concat(parts, self.builder.width)
