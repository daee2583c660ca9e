"""Who sent this HTTP request, as conversation memory sees it."""

from __future__ import annotations

from flask import request

from sesame_server.context.conversation import Caller

SESSION_HEADER = "X-Session-Id"


def caller() -> Caller:
    key = request.headers.get("xi-api-key") or request.headers.get("Authorization", "").removeprefix("Bearer ")
    return Caller(session_id=request.headers.get(SESSION_HEADER, ""), api_key=key, address=request.remote_addr or "")
