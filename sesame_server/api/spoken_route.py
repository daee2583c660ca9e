"""POST /v1/text/normalize: what the voice will say for a text (the playground shows it;
any client can check its replies). Same front end, same settings as the speech routes."""

from __future__ import annotations

from typing import Literal

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel, ConfigDict, Field

from sesame_server.api.errors import APIError
from sesame_server.api.validation import json_body, validate
from sesame_server.context.fields import Name, Text
from sesame_server.runtime import runtime
from sesame_server.spoken.policy import spoken_text
from sesame_server.voices.catalogue import VoiceNotFound, VoiceUnusable

bp = Blueprint("spoken", __name__, url_prefix="/v1/text")


class NormalizeBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", title="Text normalization request")

    text: Text = Field(description="Text as a client would send it to a speech route.")
    apply_text_normalization: Literal["auto", "on", "off"] | None = Field(
        None, description="As ElevenLabs' field; default: TEXT_NORMALIZATION.")
    voice_id: Name | None = Field(None, description="The voice it is for: its own default applies "
                                                   "(a cloned voice's label, VOICE_TEXT_NORMALIZATION).")


@bp.post("/normalize")
def normalize_text() -> Response:
    rt = runtime()
    body = validate(NormalizeBody, json_body(400), status=400)
    if len(body.text) > rt.settings.max_input_length:
        raise APIError(400, f"text is {len(body.text)} characters; the maximum is {rt.settings.max_input_length}.",
                       param="text", code="input_too_long")
    voice = None
    if body.voice_id:  # any name a speech route takes: a local or ElevenLabs id, an OpenAI voice
        try:
            voice = rt.catalogue.resolve(body.voice_id)
        except (VoiceNotFound, VoiceUnusable) as exc:
            raise APIError(400, str(exc), param="voice_id", code="voice_not_found") from None
    spoken = spoken_text(body.text, rt.settings, body.apply_text_normalization, voice)
    return jsonify({"text": body.text, "spoken": spoken.text, "changed": spoken.text != body.text})
