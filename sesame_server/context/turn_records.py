"""A turn as TURN_STORE keeps it in Redis, and read back without trusting it.

A Redis hash per turn: `meta` (JSON) and the codes as raw bytes with their dtype and shape.
The store is shared with other nodes, other versions and whoever else can write to it, so a
record is used only whole and valid: the metadata against a strict schema, every codes
array as any model's codes (engine.codes; the backend checks its own codebooks and bins
again before use). Anything else is ignored, with a log line, as if it had expired.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from sesame_server.context.turns import Turn
from sesame_server.engine.codes import InvalidCodes, checked_codes

log = logging.getLogger(__name__)

KEY = "sesame-tts:"


@dataclass(frozen=True)
class StoredTurn:
    session: str
    turn: Turn
    at: float  # wall clock when it was spoken: nodes share no monotonic clock


Finite = Annotated[float, Field(allow_inf_nan=False, ge=0)]
Size = Annotated[StrictInt, Field(ge=0)]
Shape = tuple[Size, Size]  # [codebooks, frames]


class _Meta(BaseModel):
    """The `meta` field as encode() writes it."""

    model_config = ConfigDict(strict=True, extra="ignore")

    session: StrictStr
    at: Finite
    request_id: StrictStr
    owner: StrictStr
    voice: StrictStr
    text: StrictStr
    speaker: Annotated[StrictInt, Field(ge=0, le=9)]  # the speakers a request may name (context.fields)
    seconds: Finite
    audio_ref: StrictStr | None
    codes: tuple[StrictStr, Shape] | None  # (dtype, shape) of the `codes` field
    segments: list[tuple[StrictStr, StrictStr, Shape]]  # (sentence, dtype, shape) of each `segment:<i>`


def encode(stored: StoredTurn) -> dict[str, bytes | str]:
    turn = stored.turn
    fields: dict[str, bytes | str] = {}
    segments = []
    for index, (text, codes) in enumerate(turn.segments):
        codes = np.ascontiguousarray(codes)
        segments.append([text, codes.dtype.str, list(codes.shape)])
        fields[f"segment:{index}"] = codes.tobytes()
    codes = None
    if turn.codes is not None:
        array = np.ascontiguousarray(turn.codes)
        codes = [array.dtype.str, list(array.shape)]
        fields["codes"] = array.tobytes()
    fields["meta"] = json.dumps({
        "session": stored.session, "at": stored.at, "request_id": turn.request_id, "owner": turn.owner,
        "voice": turn.voice, "text": turn.text, "speaker": turn.speaker, "seconds": turn.seconds,
        "audio_ref": turn.audio_ref, "codes": codes, "segments": segments,
    })
    return fields


def decode(fields: object) -> StoredTurn | None:
    """The turn a hash holds, or None (logged) for anything but a whole, valid record."""
    try:
        if not isinstance(fields, dict):
            raise TypeError(f"a {type(fields).__name__} where a hash was expected")
        meta = _Meta.model_validate_json(fields[b"meta"])
        codes = _codes(fields[b"codes"], *meta.codes) if meta.codes else None
        segments = tuple((text, _codes(fields[f"segment:{index}".encode()], dtype, shape))
                         for index, (text, dtype, shape) in enumerate(meta.segments))
        turn = Turn(request_id=meta.request_id, owner=meta.owner, voice=meta.voice, text=meta.text,
                    speaker=meta.speaker, codes=codes, seconds=meta.seconds, audio_ref=meta.audio_ref,
                    segments=segments)
        return StoredTurn(session=meta.session, turn=turn, at=meta.at)
    except (KeyError, TypeError, ValueError) as exc:  # another version's record, damaged, or not ours
        # (pydantic's ValidationError and InvalidCodes are ValueErrors)
        log.warning("Ignored a stored turn that cannot be used (%s: %s)", type(exc).__name__,
                    " ".join(str(exc).split())[:300])
        return None


def _codes(raw: object, dtype: str, shape: tuple[int, int]) -> np.ndarray:
    kind = np.dtype(dtype)
    if kind.kind not in "iu" or not isinstance(raw, bytes):
        raise InvalidCodes(f"codes of dtype {dtype}")
    array = np.frombuffer(raw, dtype=kind).reshape(shape)  # ValueError when the bytes are not that shape
    return checked_codes(array).copy()  # writable, like generated codes


def ref_key(owner: str, ref: str) -> str:
    return f"{KEY}ref:{_digest(owner, ref)}"


def text_key(owner: str, text: str) -> str:
    return f"{KEY}text:{_digest(owner, ' '.join(text.split()))}"  # TurnCache.find_text's comparison


def _digest(owner: str, value: str) -> str:
    return hashlib.sha256(f"{owner}\0{value}".encode()).hexdigest()[:32]


def without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}{port}").geturl()
