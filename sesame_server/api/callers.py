"""Who sent this HTTP request, as conversation memory sees it."""

from __future__ import annotations

from flask import request

from sesame_server.api.guard import given_key
from sesame_server.context.conversation import Caller

SESSION_HEADER = "X-Session-Id"


def caller() -> Caller:
    """The key as the key check reads it (xi-api-key, Bearer or HTTP Basic's password), so a
    caller is the same whichever way it sends the key."""
    return Caller(session_id=request.headers.get(SESSION_HEADER, ""), api_key=given_key(),
                  address=request.remote_addr or "")
