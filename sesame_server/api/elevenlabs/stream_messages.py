"""The ElevenLabs WebSocket stream-input messages (../shared/API_NOTES.md §3), both ways.

In: one JSON object per text frame: `text` (a space opens, "" ends the single-context
socket, a flush with empty text ends a context's input), `flush`, `try_trigger_generation`,
`voice_settings` / `generation_config` / `xi_api_key` on a context's first message,
`context_id`, `close_context`, `close_socket`, `keep_alive` (multi-context).
Out: `{"audio", "isFinal", "normalizedAlignment", "alignment"}` per chunk, `{"isFinal": true}`
at a context's end, `contextId` on every reply of the multi-context socket, and errors as
ElevenLabs sends them: `{"message", "error", "code"}` (code: the close code that follows,
or would, e.g. 1008).
"""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from sesame_server.api.elevenlabs.schema import VoiceSettings
from sesame_server.api.errors import APIError
from sesame_server.api.validation import parse_json
from sesame_server.context.fields import Text
from sesame_server.engine.alignment import Alignment
from sesame_server.realtime.text_buffer import MAX_SCHEDULE, MIN_SCHEDULE

MAX_CONTEXT_ID_LENGTH = 128
POLICY, TOO_BIG, INTERNAL, TRY_AGAIN = 1008, 1009, 1011, 1013  # WebSocket close codes


class ProtocolError(ValueError):
    """A message the socket cannot go on after (ElevenLabs closes with `close_code`)."""

    def __init__(self, message: str, error: str = "invalid_input_message", close_code: int = POLICY,
                 context_id: str | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.close_code = close_code
        self.context_id = context_id


class GenerationConfig(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    chunk_length_schedule: Annotated[
        list[Annotated[StrictInt, Field(ge=MIN_SCHEDULE, le=MAX_SCHEDULE)]], Field(min_length=1, max_length=10)
    ] | None = None


class ClientMessage(BaseModel):
    """Any message a client sends; unknown keys are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", title="ElevenLabs stream-input message")

    text: Text | None = None
    context_id: Annotated[Text, Field(min_length=1, max_length=MAX_CONTEXT_ID_LENGTH)] | None = None
    flush: StrictBool | None = None
    try_trigger_generation: StrictBool | None = None
    voice_settings: VoiceSettings | None = None
    generation_config: GenerationConfig | None = None
    xi_api_key: Text | None = None
    authorization: Text | None = None
    close_context: StrictBool | None = None
    close_socket: StrictBool | None = None
    keep_alive: StrictBool | None = None
    pronunciation_dictionary_locators: list[Any] | None = None

    @property
    def ends_input(self) -> bool:
        """A flush that carries no text: the client says the context's input is complete
        (LiveKit sends {"text": "", "flush": true}, Pipecat {"flush": true}, then close_context)."""
        return bool(self.flush) and not self.text


def parse(frame: str | bytes) -> ClientMessage:
    if isinstance(frame, bytes):
        raise ProtocolError("Binary frames are not part of this protocol: send JSON text frames.")
    try:
        data = parse_json(frame, "message", 400)  # nesting depth checked before json.loads
    except APIError:
        raise ProtocolError("Could not parse input message, make sure it is a json and follows the schema "
                            "outlined in protocol.") from None
    if not isinstance(data, dict):
        raise ProtocolError("Each message must be a JSON object.")
    try:
        return ClientMessage.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        raise ProtocolError(f"Invalid message: {where}: {first['msg']}") from None


def audio_message(audio: bytes, alignment: Alignment, context_id: str | None) -> str:
    chars = _chars(alignment) if alignment else None
    body: dict[str, Any] = {"audio": base64.b64encode(audio).decode("ascii") if audio else None,
                            "isFinal": None, "normalizedAlignment": chars, "alignment": chars}
    return _dump(body, context_id)


def final_message(context_id: str | None) -> str:
    return _dump({"isFinal": True}, context_id)


def error_message(message: str, error: str, code: int, context_id: str | None = None) -> str:
    return _dump({"message": message, "error": error, "code": code}, context_id)


def _chars(alignment: Alignment) -> dict[str, list]:
    starts = [round(t * 1000) for t in alignment.character_start_times_seconds]
    ends = [round(t * 1000) for t in alignment.character_end_times_seconds]
    return {"chars": alignment.characters, "charStartTimesMs": starts,
            "charDurationsMs": [max(0, end - start) for start, end in zip(starts, ends)]}


def _dump(body: dict[str, Any], context_id: str | None) -> str:
    if context_id is not None:
        body["contextId"] = context_id
    return json.dumps(body, separators=(",", ":"))
