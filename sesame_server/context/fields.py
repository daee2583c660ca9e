"""The conversation-memory fields both dialects accept, as one schema (validation + OpenAPI).

`context: [{"text", "audio_ref"?, "speaker"?}]` and `audio_ref` are ours; `previous_text`,
`next_text`, `previous_request_ids` and `next_request_ids` are ElevenLabs'.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

MAX_CONTEXT_ITEMS = 20
MAX_REF_LENGTH = 128
MAX_REQUEST_IDS = 3

AudioRef = Annotated[StrictStr, Field(max_length=MAX_REF_LENGTH)]


class ContextItem(BaseModel):
    """One prior turn: what was said, and (audio_ref) which remembered generation said it."""

    model_config = ConfigDict(strict=True, extra="ignore")

    text: StrictStr = ""
    audio_ref: AudioRef | None = None
    speaker: Annotated[StrictInt, Field(ge=0, le=9)] | None = Field(
        None, description="0 is the voice itself; default 0 for a remembered turn, 1 for text-only")


class ContextFields(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    context: Annotated[list[ContextItem], Field(max_length=MAX_CONTEXT_ITEMS)] | None = Field(
        None, description="Prior turns that condition this one (oldest first).")
    audio_ref: AudioRef | None = Field(None, description="The client's own name for this turn, to reference later.")
    previous_text: StrictStr | None = None
    next_text: StrictStr | None = Field(None, description="Accepted; no local model conditions on it.")
    previous_request_ids: Annotated[list[StrictStr], Field(max_length=MAX_REQUEST_IDS)] | None = None
    next_request_ids: Annotated[list[StrictStr], Field(max_length=MAX_REQUEST_IDS)] | None = Field(
        None, description="Accepted; no local model conditions on it.")
