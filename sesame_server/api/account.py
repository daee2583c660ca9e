"""Account and catalogue stubs clients check: /v1/models (both dialects), /v1/user, subscription.

Local means unlimited: every limit is huge, every counter honest where we have one.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from sesame_server.api.errors import APIError, elevenlabs_error, openai_error
from sesame_server.api.openai import openai_models
from sesame_server.runtime import runtime

bp = Blueprint("account", __name__, url_prefix="/v1")

UNLIMITED = 999_999_999
_CREATED_AT = 1_735_689_600  # 2025-01-01: a fixed "account creation" time
# Model ids clients are configured with; all are served by the local model.
_ELEVENLABS_ALIASES = ("eleven_multilingual_v2", "eleven_flash_v2_5", "eleven_turbo_v2_5", "eleven_v3")


def is_elevenlabs_client() -> bool:
    """ElevenLabs SDKs and clients mark themselves; OpenAI's never send these."""
    headers = request.headers
    agent = headers.get("User-Agent", "").lower()
    return ("xi-api-key" in headers or headers.get("X-Fern-SDK-Name", "").lower().startswith("elevenlabs")
            or "elevenlabs" in agent)


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


@bp.get("/models")
def list_models() -> Response:
    # One path, two shapes: openai-python crashes on a bare array, elevenlabs-js on the object.
    if not is_elevenlabs_client():
        return jsonify(openai_models())
    backend = runtime().engine.backend.name
    models = [_elevenlabs_model("csm-1b", "Sesame CSM-1B", f"Local text to speech ({backend} backend).")]
    models += [_elevenlabs_model(alias, alias, "Alias: served by the local model.") for alias in _ELEVENLABS_ALIASES]
    return jsonify(models)


def _subscription(*, with_invoices: bool) -> dict:
    rt = runtime()
    cloned = sum(1 for voice in rt.catalogue if voice.category == "cloned")
    body = {
        "tier": "local",
        "character_count": rt.characters_served,
        "character_limit": UNLIMITED,
        "max_credit_limit_extension": 0,  # required by elevenlabs-js
        "max_character_limit_extension": 0,  # its deprecated name, for older clients
        "can_extend_character_limit": False,
        "allowed_to_extend_character_limit": False,
        "next_character_count_reset_unix": None,
        "voice_slots_used": cloned,
        "professional_voice_slots_used": 0,
        "professional_voice_slots_used_in_workspace": 0,
        "voice_limit": 1000,
        "voice_add_edit_counter": cloned,
        "professional_voice_limit": 0,
        "can_extend_voice_limit": False,
        "can_use_instant_voice_cloning": bool(getattr(rt.engine.backend, "can_clone", False)),
        "can_use_professional_voice_cloning": False,
        "currency": "usd",
        "current_overage": {"amount": "0", "currency": "usd"},
        "status": "active",
        "billing_period": "monthly_period",
        "character_refresh_period": "monthly_period",
    }
    if with_invoices:
        body.update({"open_invoices": [], "has_open_invoices": False, "pending_change": None,
                     "next_invoice": None})
    return body


@bp.get("/user/subscription")
def subscription() -> Response:
    return jsonify(_subscription(with_invoices=True))


@bp.get("/user")
def user() -> Response:
    return jsonify({
        "user_id": "local",
        "workspace_id": "local",
        "subscription": _subscription(with_invoices=False),
        "is_new_user": False,
        "xi_api_key": None,
        "can_use_delayed_payment_methods": False,
        "is_onboarding_completed": True,
        "is_onboarding_checklist_completed": True,
        "first_name": "Local",
        "is_api_key_hashed": False,
        "created_at": _CREATED_AT,
        "seat_type": "workspace_admin",
    })


@bp.errorhandler(APIError)
def _error(error: APIError) -> Response:
    # /v1/models serves both SDKs: each gets errors in its own shape (as with its body).
    if request.path.rstrip("/") == "/v1/models" and not is_elevenlabs_client():
        return openai_error(error)
    return elevenlabs_error(error)
