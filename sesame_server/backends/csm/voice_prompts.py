"""Built-in voices and their prompts: Mimi-encoded once, codes cached in memory and on disk.

A voice is a short recording plus its transcript, put in front of every request as the
first segment of the context. Encoding that recording with Mimi is the expensive part, so
its codes are stored on disk (with the transcript) and a voice is never encoded twice: not
per request, not after a restart. A built-in voice's codes go under CACHE_DIR/csm/voice_codes/;
a cloned voice's next to its recording (VOICES_DIR/<id>/codes-<digest>.npz), so every node
sharing VOICES_DIR reuses the codes the first one made. The digest names the audio and the
Mimi weights that encoded it. A cache file is written under a temporary name, fsynced and
renamed (two nodes encoding at once: the last rename wins, both files are whole); one that
cannot be read is a miss, encoded again and rewritten. On a shared folder a cache file is
another process's writing: it is read only if it is a plain file of a sane size whose codes
this model can read (engine.codes), never a FIFO, a pickle or a zip bomb.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import secrets
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from sesame_server.audio.units import SAMPLE_RATE
from sesame_server.backends.base import BackendError, Voice, VoiceUnavailable
from sesame_server.engine.codes import checked_codes
from sesame_server.engine.request import ReferenceVoice
from sesame_server.engine.stored import read_stored

from . import hub

log = logging.getLogger(__name__)

MAX_CACHE_BYTES = 4 << 20  # a codes file: 30 s of a voice's codes take some 50 KB

BUILTIN_VOICES: dict[str, Voice] = {
    "conversational_a": Voice(
        id="conversational_a",
        name="Ava (Conversational Female)",
        labels={"gender": "female", "use_case": "conversational", "age": "young"},
        description="Sesame's conversational_a prompt: a relaxed, chatty female voice.",
    ),
    "conversational_b": Voice(
        id="conversational_b",
        name="Max (Conversational Male)",
        labels={"gender": "male", "use_case": "conversational", "age": "young"},
        description="Sesame's conversational_b prompt: a relaxed, chatty male voice.",
    ),
}

# Transcripts as published with the prompts; used when prompts/<voice>.txt is absent.
PROMPT_TEXT = {
    "conversational_a": (
        "like revising for an exam I'd have to try and like keep up the momentum because I'd "
        "start really early I'd be like okay I'm gonna start revising now and then like "
        "you're revising for ages and then I just like start losing steam I didn't do that "
        "for the exam we had recently to be fair that was a more of a last minute scenario "
        "but like yeah I'm trying to like yeah I noticed this yesterday that like Mondays I "
        "sort of start the day with this not like a panic but like a"
    ),
    "conversational_b": (
        "like a super Mario level. Like it's very like high detail. And like, once you get "
        "into the park, it just like, everything looks like a computer game and they have all "
        "these, like, you know, if, if there's like a, you know, like in a Mario game, they "
        "will have like a question block. And if you like, you know, punch it, a coin will "
        "come out. So like everyone, when they come into the park, they get like this little "
        "bracelet and then you can go punching question blocks around."
    ),
}


@dataclass(frozen=True)
class VoicePrompt:
    """A voice as CSM hears it: the first segment of every request's context.

    (The engine's ReferenceVoice is what a cloned voice is made from; this is the result.)"""

    voice_id: str
    text: str
    speaker: int
    codes: np.ndarray  # [codebooks, frames] int32


@dataclass(frozen=True)
class PromptAudio:
    """Where a prompt comes from: a stable identity (for the cache key) and lazy audio."""

    key: str
    text: str
    load: Callable[[], tuple[np.ndarray, str]]  # (float32 mono audio at 24 kHz, transcript)
    home: Path | None = None  # where its codes are kept: a cloned voice's own folder


def prompt_files(voice_id: str, model_dir: Path | None, token: str | None) -> tuple[Path, str]:
    """The prompt's wav and transcript: <model dir>/prompts/ first, else the sesame/csm-1b repo."""
    if voice_id not in BUILTIN_VOICES:
        raise BackendError(f"unknown csm voice {voice_id!r}")
    if model_dir is not None and (model_dir / "prompts" / f"{voice_id}.wav").is_file():
        wav = model_dir / "prompts" / f"{voice_id}.wav"
        txt = wav.with_suffix(".txt")
        return wav, txt.read_text().strip() if txt.is_file() else PROMPT_TEXT[voice_id]
    wav = hub.file(hub.VOICE_REPO, f"prompts/{voice_id}.wav", token, f"the {voice_id} voice prompt")
    try:
        text = hub.file(hub.VOICE_REPO, f"prompts/{voice_id}.txt", token, "its transcript").read_text().strip()
    except Exception:  # the transcript is optional; we ship it
        text = PROMPT_TEXT[voice_id]
    return wav, text


def file_prompt_source(model_dir: Path | None, token: str | None) -> Callable[[str], PromptAudio]:
    """Prompts from files. Hub prompts are keyed by name so a cached voice needs no network."""

    def locate(voice_id: str) -> PromptAudio:
        local = model_dir is not None and (model_dir / "prompts" / f"{voice_id}.wav").is_file()
        if local:
            wav, text = prompt_files(voice_id, model_dir, token)
            digest = hashlib.sha256(wav.read_bytes()).hexdigest()[:16]
            return PromptAudio(f"file:{digest}", text, lambda: (read_audio(wav), text))

        def load() -> tuple[np.ndarray, str]:
            wav, text = prompt_files(voice_id, None, token)
            return read_audio(wav), text

        return PromptAudio(f"hub:{hub.VOICE_REPO}:{voice_id}", PROMPT_TEXT[voice_id], load)

    return locate


def reference_prompt_source(reference: ReferenceVoice) -> PromptAudio:
    """A cloned voice's reference recording; keyed by content so a re-upload re-encodes."""
    wav, text = Path(reference.audio_path), reference.transcript
    # The reasons reach the client (a 400): they name the voice, never a server path.
    try:
        digest = hashlib.sha256(wav.read_bytes()).hexdigest()[:16]
    except OSError as exc:
        why = ("it was deleted" if not wav.parent.exists()  # while this request was on its way
               else f"its reference recording is missing ({exc.strerror or exc.__class__.__name__})")
        raise VoiceUnavailable(reference.voice_id, why) from None

    def load() -> tuple[np.ndarray, str]:
        try:
            return read_audio(wav), text
        except Exception as exc:  # noqa: BLE001 - libsndfile says why in its own exception type
            why = getattr(exc, "error_string", None) or getattr(exc, "strerror", None) or exc.__class__.__name__
            raise VoiceUnavailable(reference.voice_id, f"its reference recording is unreadable ({why})") from None

    return PromptAudio(f"clone:{reference.voice_id}:{digest}", text, load, home=wav.parent)


def read_audio(path: Path | bytes) -> np.ndarray:
    import soundfile

    source = io.BytesIO(path) if isinstance(path, bytes) else str(path)
    audio, rate = soundfile.read(source, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        from mlx_audio.utils import resample_audio

        audio = np.asarray(resample_audio(audio, rate, SAMPLE_RATE), dtype=np.float32)
    return audio


class VoicePromptStore:
    """Voice id -> VoicePrompt, encoding each prompt with Mimi at most once."""

    def __init__(
        self,
        locate: Callable[[str], PromptAudio],
        encode: Callable[[np.ndarray], np.ndarray],
        codebooks: int,
        cache_dir: Path | None,
        codec_id: str,
        *,
        bins: int | None = None,
    ):
        self._locate = locate
        self._encode = encode
        self._codebooks = codebooks
        self._bins = bins  # Mimi's: a cached code at or past it is not this model's
        self._cache_dir = cache_dir
        self._codec_id = codec_id
        self._prompts: dict[str, VoicePrompt] = {}
        self.encodes = 0

    def get(self, voice_id: str, source: PromptAudio | None = None) -> VoicePrompt:
        """A built-in voice by id, or any voice whose audio `source` names (cloned voices)."""
        prompt = self._prompts.get(voice_id)
        if prompt is None:
            prompt = self._load(voice_id, source)
            self._prompts[voice_id] = prompt
        return prompt

    def cached(self, voice_id: str) -> VoicePrompt | None:
        """The prompt already in memory, if any: no disk is read for it."""
        return self._prompts.get(voice_id)

    def forget(self, voice_id: str) -> None:
        """Drop a deleted voice's codes from memory (on disk they went with its folder)."""
        self._prompts.pop(voice_id, None)

    def _load(self, voice_id: str, source: PromptAudio | None) -> VoicePrompt:
        if source is None:
            if voice_id not in BUILTIN_VOICES:
                raise BackendError(f"unknown csm voice {voice_id!r}")
            source = self._locate(voice_id)
        path = self._cache_path(voice_id, source)
        cached = None if path is None else self._read_cache(path)
        if cached is not None:
            return VoicePrompt(voice_id, cached[1], 0, cached[0])
        audio, text = source.load()
        log.info("Encoding the %s voice prompt with Mimi (%.1f s of audio, once)", voice_id, len(audio) / SAMPLE_RATE)
        codes = np.asarray(self._encode(audio), dtype=np.int32)[: self._codebooks]
        self.encodes += 1
        if codes.shape[0] != self._codebooks:
            raise BackendError(f"Mimi gave {codes.shape[0]} codebooks, CSM needs {self._codebooks}")
        if path is not None:  # a cloned voice's folder is never re-created: it may just have been deleted
            write_codes(path, codes, text, make_dir=source.home is None)
        return VoicePrompt(voice_id, text, 0, codes)

    def _read_cache(self, path: Path) -> tuple[np.ndarray, str] | None:
        """(codes, transcript) from a cache file; None for a missing, partial or foreign one."""
        try:
            codes, text = read_codes(path)
            checked_codes(codes, codebooks=self._codebooks, bins=self._bins, min_frames=1)
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - damaged or foreign (zip, npy, codes, io): encoded again
            log.warning("Ignoring voice cache %s: %s", path, exc)
            return None
        log.debug("Voice codes read from %s", path)
        return codes.astype(np.int32), text

    def _cache_path(self, voice_id: str, source: PromptAudio) -> Path | None:
        if self._cache_dir is None:
            return None  # random weights: codes not worth keeping, and never next to a shared voice
        digest = hashlib.sha256(f"{source.key}|{self._codec_id}|{self._codebooks}".encode()).hexdigest()[:16]
        if source.home is not None:
            return source.home / f"codes-{digest}.npz"
        return self._cache_dir / "csm" / "voice_codes" / f"{voice_id}-{digest}.npz"


def read_codes(path: Path) -> tuple[np.ndarray, str]:
    """(codes, transcript) as write_codes stored them; raises for anything else. Opened
    without blocking, so a FIFO in its place is refused rather than waited on."""
    with zipfile.ZipFile(io.BytesIO(read_stored(path, MAX_CACHE_BYTES))) as archive:
        return _npy(archive, "codes.npy"), str(_npy(archive, "text.npy"))


def _npy(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    """One array of an npz, its header checked against the member's size before numpy
    allocates what the header claims (a few bytes of zip may inflate to gigabytes)."""
    member = archive.getinfo(name)
    if member.file_size > MAX_CACHE_BYTES:
        raise ValueError(f"{name} inflates to {member.file_size} bytes")
    with archive.open(member) as npy:
        version = np.lib.format.read_magic(npy)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(npy)
    if dtype.hasobject or math.prod(shape) * dtype.itemsize > member.file_size:
        raise ValueError(f"{name} claims {shape} of {dtype} in {member.file_size} bytes")
    with archive.open(member) as npy:
        return np.lib.format.read_array(npy, allow_pickle=False)


def write_codes(path: Path, codes: np.ndarray, text: str, *, make_dir: bool = False) -> bool:
    """Write a cache file whole or not at all: a temporary name of this writer's own in the
    same directory, fsync, os.replace. False (logged) when it cannot be written: a read-only
    share, a full disk, the voice deleted meanwhile; the codes still serve from memory."""
    tmp = path.parent / f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        if make_dir:
            path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as out:
            np.savez(out, codes=codes, text=np.array(text))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        return True
    except OSError as exc:
        log.warning("Could not keep the voice codes at %s: %s", path, exc)
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return False
