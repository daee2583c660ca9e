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
from sesame_server.context.fields import Name, Text
from sesame_server.engine.alignment import Alignment
from sesame_server.realtime.text_buffer import MAX_SCHEDULE, MIN_SCHEDULE

MAX_CONTEXT_ID_LENGTH = 128
MAX_KEY_LENGTH = 1024  # an API key, or "Bearer <key>"
POLICY, INTERNAL, TRY_AGAIN = 1008, 1011, 1013  # close codes we send (websockets itself sends 1009)


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


class DialogueLine(BaseModel):
    """text-to-dialogue: a piece of text and who says it."""

    model_config = ConfigDict(strict=True, extra="ignore")

    text: Text
    voice_id: Annotated[Text, Field(min_length=1, max_length=MAX_CONTEXT_ID_LENGTH)]
    new_turn: StrictBool | None = None


class ClientMessage(BaseModel):
    """Any message a client sends; unknown keys are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", title="ElevenLabs stream-input message")

    text: Text | None = None
    inputs: Annotated[list[DialogueLine], Field(max_length=100)] | None = None  # text-to-dialogue
    voices: Annotated[list[Name], Field(max_length=10)] | None = None  # text-to-dialogue registration
    context_id: Annotated[Text, Field(min_length=1, max_length=MAX_CONTEXT_ID_LENGTH)] | None = None
    flush: StrictBool | None = None
    try_trigger_generation: StrictBool | None = None
    voice_settings: VoiceSettings | None = None
    generation_config: GenerationConfig | None = None
    xi_api_key: Annotated[Text, Field(max_length=MAX_KEY_LENGTH)] | None = None
    authorization: Annotated[Text, Field(max_length=MAX_KEY_LENGTH)] | None = None
    close_context: StrictBool | None = None
    close_socket: StrictBool | None = None
    keep_alive: StrictBool | None = None
    pronunciation_dictionary_locators: list[Any] | None = None

    @property
    def ends_input(self) -> bool:
        """A flush that carries no text: the client says the context's input is complete
        (LiveKit sends {"text": "", "flush": true}, Pipecat {"flush": true}, then close_context)."""
        return bool(self.flush) and not self.text and not any(line.text for line in self.inputs or ())

    @property
    def lines(self) -> list[tuple[str, str | None, bool]]:
        """(text, voice id or None for the context's voice, starts a new turn) of this message."""
        if self.inputs is not None:
            return [(line.text, line.voice_id, bool(line.new_turn)) for line in self.inputs]
        return [(self.text, None, False)] if self.text else []


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


class Wire:
    """How replies are spelled: text to speech (camelCase, `contextId`) or text to dialogue
    (snake_case, `context_id`, `is_final_audio_for_turn` after each turn)."""

    def __init__(self, *, dialogue: bool) -> None:
        self.dialogue = dialogue
        self._final = "is_final" if dialogue else "isFinal"
        self._context = "context_id" if dialogue else "contextId"
        self._times = ("char_start_times_ms", "char_durations_ms") if dialogue else ("charStartTimesMs",
                                                                                     "charDurationsMs")

    def audio(self, audio: bytes, said: Alignment | None, sent: Alignment | None, context_id: str | None) -> str:
        """`said`: the spoken characters this audio covers; `sent`: the same of the text as sent."""
        spoken = self._chars(said) if said else None
        original = self._chars(sent) if sent else None
        body: dict[str, Any] = {"audio": base64.b64encode(audio).decode("ascii") if audio else None}
        if self.dialogue:
            body.update({"alignment": original, "is_final": False})
        else:
            body.update({"isFinal": None, "normalizedAlignment": spoken, "alignment": original})
        return self._dump(body, context_id)

    def final(self, context_id: str | None) -> str:
        return self._dump({self._final: True}, context_id)

    def turn_end(self) -> str:
        return self._dump({"is_final_audio_for_turn": True}, None)

    def error(self, message: str, error: str, code: int, context_id: str | None = None) -> str:
        return self._dump({"message": message, "error": error, "code": code}, context_id)

    def _chars(self, alignment: Alignment) -> dict[str, list]:
        starts = [round(t * 1000) for t in alignment.character_start_times_seconds]
        ends = [round(t * 1000) for t in alignment.character_end_times_seconds]
        durations = [max(0, end - start) for start, end in zip(starts, ends)]
        return {"chars": alignment.characters, self._times[0]: starts, self._times[1]: durations}

    def _dump(self, body: dict[str, Any], context_id: str | None) -> str:
        if context_id is not None:
            body[self._context] = context_id
        return json.dumps(body, separators=(",", ":"))


TTS_WIRE, DIALOGUE_WIRE = Wire(dialogue=False), Wire(dialogue=True)
