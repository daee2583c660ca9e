"""Cloned voices on disk: VOICES_DIR/<voice_id>/{voice.json, reference.wav} (VOICES_DIR
defaults to CACHE_DIR/voices and may be shared by several nodes: voices/shared.py).

The directory name is an id we generate, never anything the uploader sent, so no name or
filename can escape the voices directory. A voice is written into a hidden staging folder,
fsynced, then renamed into place: a crash or a full disk leaves no half-written voice, and
the staging folder is removed. A stored voice that cannot be read is reported (log, /health),
never silently dropped; its files are never trusted (voices/voice_file.py: schema, size,
regular files inside VOICES_DIR). The backend may keep what it derives from a voice (CSM: its
Mimi codes) in the voice's folder, so it goes with the voice.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import secrets
import shutil
import string
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile
from pydantic import ValidationError

from sesame_server.audio.units import SAMPLE_RATE  # CSM/Mimi's rate: stored ready to encode
from sesame_server.backends.base import Voice
from sesame_server.engine.request import ReferenceVoice
from sesame_server.voices.voice_file import REFERENCE_FILE, check_reference, read_voice_file, schema_errors

log = logging.getLogger(__name__)

_ID_ALPHABET = string.ascii_letters + string.digits
_STAGING_PREFIX = ".incoming-"
# A staging folder this old is a crash's leftover; a younger one may be another node's upload.
STALE_STAGING_SECONDS = 600.0
_NOT_VOICES = {"lost+found"}  # a volume's own folder (ext4 on a PersistentVolumeClaim)


class StorageFull(OSError):
    """The disk under CACHE_DIR is full; the message says how much is free."""

    def __init__(self, root: Path):
        free = _free_mb(root)
        # The message is the 507's body: it names the setting, not the server's path.
        super().__init__(errno.ENOSPC, f"No space left on device under CACHE_DIR ({free} MB free); "
                                       "free some space and try again.")
        self.root = root


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


@dataclass(frozen=True)
class Unreadable:
    """A stored voice that cannot be used, and why (shown in /health)."""

    path: str
    reason: str


class CustomVoiceStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self._lock = threading.Lock()
        # Voices read (or written) by this node: a voice.json is never changed once stored, so a
        # request for a voice reads nothing from the share (it may hang; voices/shared.py).
        self._read_voices: dict[str, CustomVoice] = {}

    def scan(self) -> tuple[list[CustomVoice], list[Unreadable]]:
        """Every stored voice, oldest first, and those that cannot be read. Clears staging
        folders a crash left behind."""
        if not self.root.is_dir():
            return [], []
        voices, unreadable = [], []
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith(_STAGING_PREFIX):
                _remove_if_stale(folder)
                continue
            found = self.find(folder.name) if folder.is_dir() and folder.name not in _NOT_VOICES else None
            if isinstance(found, CustomVoice):
                voices.append(found)
            elif found is not None:
                unreadable.append(found)
        return sorted(voices, key=lambda v: v.created_at_unix), unreadable

    def on_disk(self) -> set[str]:
        """The voice ids stored now: one directory listing, no file read (the cheap rescan)."""
        try:
            with os.scandir(self.root) as entries:
                return {entry.name for entry in entries if not entry.name.startswith(_STAGING_PREFIX)
                        and entry.name not in _NOT_VOICES and entry.is_dir()}
        except FileNotFoundError:
            return set()

    def exists(self, voice_id: str) -> bool:
        return (self.root / voice_id).is_dir()

    def find(self, voice_id: str) -> CustomVoice | Unreadable | None:
        """One stored voice, read and checked (as at startup); None when there is no such folder."""
        folder = self.root / voice_id
        if "/" in voice_id or voice_id in ("", ".", "..") or not folder.is_dir():
            return None
        try:
            voice = self._read(folder, check_audio=True)
        except FileNotFoundError as exc:
            if not folder.is_dir():
                return None  # deleted while we read it (by another node)
            return self._unreadable(folder, exc)
        except (OSError, ValueError, TypeError, RuntimeError) as exc:
            return self._unreadable(folder, exc)
        self._read_voices[voice_id] = voice
        return voice

    def _unreadable(self, folder: Path, exc: BaseException) -> Unreadable:
        log.warning("Stored voice %s cannot be used and is skipped: %s", folder, _reason(exc))
        return Unreadable(str(folder), _reason(exc))

    def get(self, voice_id: str) -> CustomVoice | None:
        if not is_voice_id(voice_id) or not (self.root / voice_id).is_dir():
            return None
        try:
            return self._read(self.root / voice_id)
        except (OSError, ValueError, TypeError):
            return None

    def reference(self, voice_id: str) -> ReferenceVoice | None:
        """The recording a cloned voice is made from; None for built-in voices."""
        voice = self._read_voices.get(voice_id) or self.get(voice_id)
        if voice is None:
            return None
        return ReferenceVoice(voice_id=voice_id, audio_path=str(self.root / voice_id / REFERENCE_FILE),
                              transcript=voice.transcript)

    def forget(self, voice_id: str) -> None:
        """A voice gone from disk (deleted by another node): no longer served from memory."""
        self._read_voices.pop(voice_id, None)

    def add(self, name: str, audio: np.ndarray, *, transcript: str = "", description: str = "",
            labels: dict | None = None) -> CustomVoice:
        """Store 24 kHz mono float32 `audio` as a new voice, atomically. StorageFull when the disk is."""
        voice = CustomVoice(
            voice_id="".join(secrets.choice(_ID_ALPHABET) for _ in range(20)),
            name=name, transcript=transcript, description=description, labels=dict(labels or {}),
            created_at_unix=int(time.time()), seconds=round(len(audio) / SAMPLE_RATE, 3),
        )
        staging = self.root / f"{_STAGING_PREFIX}{voice.voice_id}"
        with self._lock:
            try:
                staging.mkdir(parents=True)
                wav = io.BytesIO()  # encoded in memory: a full disk is then one clean OSError
                soundfile.write(wav, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
                with open(staging / "reference.wav", "wb") as out:
                    out.write(wav.getvalue())
                    _sync(out)
                with open(staging / "voice.json", "w", encoding="utf-8") as out:
                    out.write(json.dumps(asdict(voice), indent=2))
                    _sync(out)
                os.rename(staging, self.root / voice.voice_id)
                _sync_dir(self.root)
                self._read_voices[voice.voice_id] = voice
            except Exception as exc:
                shutil.rmtree(staging, ignore_errors=True)
                if _is_disk_full(exc):
                    raise StorageFull(self.root) from exc
                raise
        return voice

    def delete(self, voice_id: str) -> bool:
        if not is_voice_id(voice_id) or not (self.root / voice_id).is_dir():
            return False
        self.forget(voice_id)
        with self._lock:
            # Renamed away first: the voice disappears at once, even if removing its files fails
            # (a name of its own: another node may be deleting the same voice right now).
            doomed = self.root / f"{_STAGING_PREFIX}deleted-{voice_id}-{secrets.token_hex(4)}"
            try:
                os.rename(self.root / voice_id, doomed)
            except FileNotFoundError:
                return False  # another node deleted it first
            shutil.rmtree(doomed, ignore_errors=True)
        return True

    def _read(self, folder: Path, *, check_audio: bool = False) -> CustomVoice:
        voice = CustomVoice(**read_voice_file(folder, self.root).model_dump())
        if voice.voice_id != folder.name:
            raise ValueError(f"voice.json names voice {voice.voice_id!r}, not {folder.name!r}")
        if check_audio:
            info = soundfile.info(str(check_reference(folder, self.root)))
            if info.frames == 0:
                raise ValueError(f"{REFERENCE_FILE} holds no audio")
        return voice


def _remove_if_stale(folder: Path) -> None:
    try:
        age = time.time() - folder.stat().st_mtime
    except OSError:
        return
    if age > STALE_STAGING_SECONDS:
        shutil.rmtree(folder, ignore_errors=True)


def _sync(handle) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _sync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # not every platform can open a directory
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_disk_full(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _free_mb(root: Path) -> int:
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free // (1024 * 1024)
    except OSError:
        return 0


def _reason(exc: BaseException) -> str:
    """Why a stored voice cannot be used, for /health and the 400 naming it: no server path."""
    if isinstance(exc, FileNotFoundError):
        return f"{Path(exc.filename or '?').name} is missing"
    if isinstance(exc, ValidationError):
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            return f"voice.json is not valid JSON ({schema_errors(exc)})"
        return f"voice.json does not hold a voice ({schema_errors(exc)})"
    if isinstance(exc, soundfile.LibsndfileError):
        return f"{REFERENCE_FILE} cannot be read as audio ({exc.error_string})"
    if isinstance(exc, OSError):
        name = Path(exc.filename).name if exc.filename else "its folder"
        return f"{name} cannot be read ({exc.strerror or exc.__class__.__name__})"
    return f"{exc.__class__.__name__}: {exc}"


def is_voice_id(voice_id: str) -> bool:
    """Shaped like the ids add() makes (what a request may name and we look for on disk)."""
    return 10 <= len(voice_id) <= 40 and all(c in _ID_ALPHABET for c in voice_id)
