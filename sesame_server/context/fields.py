"""The conversation-memory fields both dialects accept, as one schema (validation + OpenAPI).

`context: [{"text", "audio_ref"?, "speaker"?}]` and `audio_ref` are ours; `previous_text`,
`next_text`, `previous_request_ids` and `next_request_ids` are ElevenLabs'.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr

MAX_CONTEXT_ITEMS = 20
MAX_REF_LENGTH = 128
MAX_REQUEST_IDS = 3
# Every string field has a limit. Text that is spoken or conditions speech (a request's text,
# a context turn's, previous_text, next_text) is held to MAX_INPUT_LENGTH where the settings
# are known; names (voice, model, language, format ids) to MAX_NAME_LENGTH here.
MAX_NAME_LENGTH = 128

# Unicode's control characters (Cc) but tab, LF and CR, and surrogates (Cs: only ever lone in a str).
_UNSPEAKABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def speakable(text: str) -> str:
    """No control characters but tab and newlines, no lone surrogates: they break text
    front-ends (phonemizers, tokenizers), log files and terminals, and no voice says them."""
    found = _UNSPEAKABLE.search(text)
    if found:
        char = found.group()
        kind = "a lone surrogate" if "\ud800" <= char <= "\udfff" else "a control character"
        raise ValueError(f"contains {kind} (U+{ord(char):04X}) at position {found.start()}")
    return text


# Every string field the API accepts: strict (no coercion) and speakable.
Text = Annotated[StrictStr, AfterValidator(speakable)]
AudioRef = Annotated[Text, Field(max_length=MAX_REF_LENGTH)]
Name = Annotated[Text, Field(max_length=MAX_NAME_LENGTH)]  # an id or name: a voice, a model, a language


class ContextItem(BaseModel):
    """One prior turn: what was said, and (audio_ref) which remembered generation said it."""

    model_config = ConfigDict(strict=True, extra="ignore")

    text: Text = ""
    audio_ref: AudioRef | None = None
    speaker: Annotated[StrictInt, Field(ge=0, le=9)] | None = Field(
        None, description="0 is the voice itself; default 0 for a remembered turn, 1 for text-only")


class ContextFields(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    context: Annotated[list[ContextItem], Field(max_length=MAX_CONTEXT_ITEMS)] | None = Field(
        None, description="Prior turns that condition this one (oldest first).")
    audio_ref: AudioRef | None = Field(None, description="The client's own name for this turn, to reference later.")
    previous_text: Text | None = Field(None, description="At most MAX_INPUT_LENGTH characters.")
    next_text: Text | None = Field(None, description="Accepted (at most MAX_INPUT_LENGTH characters); "
                                                     "no local model conditions on it.")
    previous_request_ids: Annotated[list[AudioRef], Field(max_length=MAX_REQUEST_IDS)] | None = None
    next_request_ids: Annotated[list[AudioRef], Field(max_length=MAX_REQUEST_IDS)] | None = Field(
        None, description="Accepted; no local model conditions on it.")
