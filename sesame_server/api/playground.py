"""GET /: a page to try the voices in a browser (streams PCM from /v1/audio/speech).

It loads nothing from elsewhere; the Content-Security-Policy says so to the browser too.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from flask import Blueprint, Response

bp = Blueprint("playground", __name__)

_POLICY = ("default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
           "media-src 'self' blob:; connect-src 'self'; img-src 'self' data:")


@lru_cache(maxsize=1)
def _page() -> bytes:
    return resources.files(__package__).joinpath("playground.html").read_bytes()


@bp.get("/")
def playground() -> Response:
    return Response(_page(), content_type="text/html; charset=utf-8",
                    headers={"Content-Security-Policy": _POLICY, "Cache-Control": "no-cache"})
