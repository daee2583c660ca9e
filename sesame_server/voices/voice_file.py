"""A stored voice's files, read from a folder other nodes write (VOICES_DIR may be shared):
never trusted.

- Where: a file must resolve inside VOICES_DIR (a symlink out of it is refused) and be a
  regular file. voice.json is read by engine.stored.read_stored (non-blocking, fstat), so a
  FIFO or a device in its place is refused at once instead of blocking the reader.
- How much: voice.json is at most MAX_VOICE_FILE_BYTES, known from fstat before any read.
- What: the VoiceFile schema, every field's type strict and its length bounded by what an
  upload may hold (api/elevenlabs/cloning.py), so a node that wrote junk costs only that voice.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sesame_server.engine.stored import UnsafeFile, read_stored

VOICE_FILE = "voice.json"
REFERENCE_FILE = "reference.wav"
MAX_VOICE_FILE_BYTES = 64 * 1024  # a voice.json we write is under 16 KB (all of an upload's fields at their limits)

LabelKey = Annotated[str, Field(max_length=100)]
LabelValue = Annotated[str, Field(max_length=200)]


class VoiceFile(BaseModel):
    """voice.json as add() writes it (the limits are the upload's, api/elevenlabs/cloning.py)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    voice_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9]{10,40}$")]
    name: Annotated[str, Field(min_length=1, max_length=100)]
    transcript: Annotated[str, Field(max_length=2000)] = ""
    description: Annotated[str, Field(max_length=1000)] = ""
    labels: Annotated[dict[LabelKey, LabelValue], Field(max_length=50)] = {}
    created_at_unix: Annotated[int, Field(ge=0)] = 0
    seconds: Annotated[float, Field(ge=0, le=3600)] = 0.0


def read_voice_file(folder: Path, root: Path) -> VoiceFile:
    """voice.json of the voice in `folder` (under VOICES_DIR `root`), checked; UnsafeFile,
    ValidationError (both ValueErrors) or OSError when it cannot be used."""
    path = folder / VOICE_FILE
    _check_inside(path, root)
    data = read_stored(path, MAX_VOICE_FILE_BYTES)
    return VoiceFile.model_validate_json(data)


def check_reference(folder: Path, root: Path) -> Path:
    """The voice's recording, if it is a regular file inside VOICES_DIR (a FIFO there would
    block the audio library's open); UnsafeFile or OSError otherwise."""
    path = folder / REFERENCE_FILE
    _check_inside(path, root)
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise UnsafeFile(f"{REFERENCE_FILE} is not a regular file")
    return path


def schema_errors(exc: ValidationError) -> str:
    """A ValidationError as a short reason: which fields, what is wrong (never their values)."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False)[:3]:
        where = ".".join(str(part) for part in error["loc"]) or "the file"
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _check_inside(path: Path, root: Path) -> None:
    real, home = os.path.realpath(path), os.path.realpath(root)
    if os.path.commonpath([real, home]) != home:
        raise UnsafeFile(f"{path.name} links outside VOICES_DIR")
