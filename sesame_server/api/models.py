"""GET /v1/models: one path, two shapes (openai-python crashes on a bare array, elevenlabs-js
on the object); the dialect decided from the client's headers answers."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from sesame_server.api import dialect
from sesame_server.api.openai.schema import MODEL_IDS
from sesame_server.runtime import runtime

bp = Blueprint("models", __name__, url_prefix="/v1")

# Model ids ElevenLabs clients are configured with; all are served by the local model.
ELEVENLABS_ALIASES = ("eleven_multilingual_v2", "eleven_flash_v2_5", "eleven_turbo_v2_5", "eleven_v3")


@bp.get("/models")
def list_models() -> Response:
    rt = runtime()
    if dialect.current() == dialect.OPENAI:
        created = int(rt.started_at)
        return jsonify({"object": "list",
                        "data": [{"id": model_id, "object": "model", "created": created, "owned_by": "sesame-tts"}
                                 for model_id in MODEL_IDS]})
    backend = rt.engine.info.name
    models = [_elevenlabs_model("csm-1b", "Sesame CSM-1B", f"Local text to speech ({backend} backend).")]
    models += [_elevenlabs_model(alias, alias, "Alias: served by the local model.") for alias in ELEVENLABS_ALIASES]
    return jsonify(models)


def _elevenlabs_model(model_id: str, name: str, description: str) -> dict:
    limit = runtime().settings.max_input_length
    return {
        "model_id": model_id,
        "name": name,
        "can_be_finetuned": False,
        "can_do_text_to_speech": True,
        "can_do_voice_conversion": False,
        "can_use_style": False,
        "can_use_speaker_boost": False,
        "serves_pro_voices": False,
        "token_cost_factor": 1.0,
        "description": description,
        "requires_alpha_access": False,
        "max_characters_request_free_user": limit,
        "max_characters_request_subscribed_user": limit,
        "maximum_text_length_per_request": limit,
        "languages": [{"language_id": "en", "name": "English"}],
        "model_rates": {"character_cost_multiplier": 1.0},
        "concurrency_group": "standard",
    }
