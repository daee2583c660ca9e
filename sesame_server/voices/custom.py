"""Cloned voices on disk: CACHE_DIR/voices/<voice_id>/{voice.json, reference.wav}.

The directory name is an id we generate, never anything the uploader sent, so no name or
filename can escape the voices directory.
"""

from __future__ import annotations

import json
import secrets
import shutil
import string
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from sesame_server.audio.units import SAMPLE_RATE  # CSM/Mimi's rate: stored ready to encode
from sesame_server.backends.base import Voice
from sesame_server.engine.request import ReferenceVoice
_ID_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class CustomVoice:
    voice_id: str
    name: str
    transcript: str = ""
    description: str = ""
    labels: dict = field(default_factory=dict)
    created_at_unix: int = 0
    seconds: float = 0.0

    def as_voice(self) -> Voice:
        return Voice(id=self.voice_id, name=self.name, labels=dict(self.labels), description=self.description,
                     category="cloned", elevenlabs_id=self.voice_id)


class CustomVoiceStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self._lock = threading.Lock()

    def list(self) -> list[CustomVoice]:
        if not self.root.is_dir():
            return []
        voices = [self._read(path) for path in sorted(self.root.iterdir()) if (path / "voice.json").is_file()]
        return sorted((v for v in voices if v is not None), key=lambda v: v.created_at_unix)

    def get(self, voice_id: str) -> CustomVoice | None:
        if not _is_id(voice_id):
            return None
        return self._read(self.root / voice_id)

    def reference(self, voice_id: str) -> ReferenceVoice | None:
        """The recording a cloned voice is made from; None for built-in voices."""
        voice = self.get(voice_id)
        if voice is None:
            return None
        return ReferenceVoice(voice_id=voice_id, audio_path=str(self.root / voice_id / "reference.wav"),
                              transcript=voice.transcript)

    def add(self, name: str, audio: np.ndarray, *, transcript: str = "", description: str = "",
            labels: dict | None = None) -> CustomVoice:
        """Store 24 kHz mono float32 `audio` as a new voice."""
        voice = CustomVoice(
            voice_id="".join(secrets.choice(_ID_ALPHABET) for _ in range(20)),
            name=name, transcript=transcript, description=description, labels=dict(labels or {}),
            created_at_unix=int(time.time()), seconds=round(len(audio) / SAMPLE_RATE, 3),
        )
        folder = self.root / voice.voice_id
        with self._lock:
            folder.mkdir(parents=True, exist_ok=False)
            soundfile.write(folder / "reference.wav", audio, SAMPLE_RATE, subtype="PCM_16")
            # Written last: a folder without voice.json is not a voice (e.g. after a crash).
            (folder / "voice.json").write_text(json.dumps(asdict(voice), indent=2))
        return voice

    def delete(self, voice_id: str) -> bool:
        if self.get(voice_id) is None:
            return False
        with self._lock:
            shutil.rmtree(self.root / voice_id, ignore_errors=True)
        return True

    def _read(self, folder: Path) -> CustomVoice | None:
        try:
            return CustomVoice(**json.loads((folder / "voice.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None


def _is_id(voice_id: str) -> bool:
    return 10 <= len(voice_id) <= 40 and all(c in _ID_ALPHABET for c in voice_id)
