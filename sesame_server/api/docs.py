"""GET /openapi.json: the OpenAPI 3.1 document of both dialects (built once per app)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from sesame_server.api.openapi import document_json

bp = Blueprint("docs", __name__)


@bp.get("/openapi.json")
def openapi_document() -> Response:
    return Response(document_json(current_app._get_current_object()), content_type="application/json",
                    headers={"Cache-Control": "no-cache"})
