"""Account stubs ElevenLabs clients check: /v1/user, /v1/user/subscription.

Local means unlimited: every limit is huge, every counter honest where we have one.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from sesame_server.runtime import runtime

bp = Blueprint("elevenlabs_account", __name__, url_prefix="/v1")

UNLIMITED = 999_999_999
_CREATED_AT = 1_735_689_600  # 2025-01-01: a fixed "account creation" time


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
        "can_use_instant_voice_cloning": rt.engine.info.can_clone,
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
