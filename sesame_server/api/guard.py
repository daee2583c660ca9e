"""What every request must pass before any work: the Host it names, the page it comes from,
the key it carries, the size and type of its body.

A server on loopback with no key is only safe if a web page in the user's browser cannot
use it: a forged Host (DNS rebinding) is refused, a cross-site page (Origin, or
Sec-Fetch-Site for requests without one) is refused unless CORS_ORIGINS lists it, and JSON
routes take only application/json, so no "simple" cross-site form post can reach them.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import socket
from functools import lru_cache

from flask import Response, request

from sesame_server.api.errors import APIError
from sesame_server.config import Settings, is_loopback
from sesame_server.connections import REFUSED, Refusal

LOOPBACK_NAMES = ("localhost", "localhost.localdomain")
UPLOAD_ROUTES = frozenset({"add_voice"})  # multipart: their own, larger limit
MAX_UPLOAD_REQUEST_BYTES = 64 * 1024 * 1024  # all files and fields of one voice upload
# The request line and headers together: far above what any client sends (browsers cap a
# site's cookies near 4 KB each), a quarter of waitress's default. Enforced by connections.py.
MAX_HEADER_BYTES = 64 * 1024
CORS_HEADERS = "Authorization, Content-Type, xi-api-key, X-Session-Id"
EXPOSED_HEADERS = ("x-request-id, request-id, X-Context-Turns, X-Prefill-Tokens, character-cost, "
                   "x-character-count, history-item-id, Retry-After")


def check_request_shape() -> None:
    """What the connection refused before the app saw the request (connections.py): headers
    too large or malformed. Nothing else in such a request can be read, so this comes first."""
    refusal: Refusal | None = request.environ.get(REFUSED)
    if refusal is None or refusal.status == 413:  # a body too large: the key comes first (limit_body)
        return
    if refusal.status == 431:
        raise APIError(431, f"The request's line and headers are over {MAX_HEADER_BYTES} bytes together.",
                       code="headers_too_large")
    raise APIError(refusal.status, f"Malformed HTTP request: {refusal.reason}.",
                   code="not_implemented" if refusal.status == 501 else "malformed_request")


def check_host(settings: Settings) -> None:
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    name = host.strip("[]").lower().rstrip(".")
    if name in allowed_hosts(settings) or _is_ip(name):
        return  # an IP literal cannot be a rebinding attack: the page's origin is then us
    raise APIError(403, f"Host '{host}' is not served here (DNS rebinding protection). If clients reach this "
                        "server by that name, add it to ALLOWED_HOSTS.", code="host_not_allowed")


@lru_cache(maxsize=8)
def allowed_hosts(settings: Settings) -> frozenset[str]:
    names = set(LOOPBACK_NAMES) | set(settings.allowed_hosts)
    if settings.public_url:
        names.add(settings.public_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]").lower())
    if not is_loopback(settings.host):
        # Bound beyond loopback: the names this machine answers to on the LAN.
        machine = socket.gethostname().lower()
        names |= {machine, f"{machine.split('.')[0]}.local", settings.host.lower()}
    return frozenset(names)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.split("%")[0])
    except ValueError:
        return False
    return True


def own_origin(origin: str) -> bool:
    """The page was served by this server (same host and port, any scheme: a TLS proxy may sit in front)."""
    return origin.split("://", 1)[-1].lower() == request.host.lower()


def check_origin(settings: Settings) -> str | None:
    """The allowed cross-origin Origin of this request (for CORS headers), None if same-origin."""
    origin = request.headers.get("Origin", "").rstrip("/").lower()
    if origin and origin != "null":
        if own_origin(origin):
            return None
        if origin in settings.cors_origins:
            return origin
        raise APIError(403, f"Requests from web pages at {origin} are refused. To allow that site, add it to "
                            "CORS_ORIGINS.", code="origin_not_allowed")
    if origin == "null" or request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        # Sandboxed frames send "null"; <img>/<script> tags send no Origin but say cross-site.
        raise APIError(403, "Requests from other web sites are refused.", code="origin_not_allowed")
    return None


def preflight(origin: str | None) -> Response | None:
    """The answer to a CORS preflight from an allowed origin (no key: browsers never send one)."""
    if request.method != "OPTIONS" or origin is None or "Access-Control-Request-Method" not in request.headers:
        return None
    response = Response(status=204)
    response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
    response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
    response.headers["Access-Control-Max-Age"] = "600"
    return response


def cors_headers(response: Response, origin: str | None) -> Response:
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        response.vary.add("Origin")
    return response


def given_key() -> str:
    """The key as xi-api-key, Authorization: Bearer, or HTTP Basic's password (browsers: the playground)."""
    given = request.headers.get("xi-api-key", "")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if not given and scheme.lower() == "bearer":
        given = token.strip()
    elif not given and scheme.lower() == "basic":
        try:
            given = base64.b64decode(token.strip(), validate=True).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            given = ""
    return given


def check_key(settings: Settings, *, browser_page: bool) -> None:
    expected = settings.api_key
    if not expected:
        return
    given = given_key()
    if given and hmac.compare_digest(given.encode(), expected.encode()):
        return
    # A browser asks its user for the key (any user name, the key as password) on a Basic challenge.
    challenge = 'Basic realm="sesame-tts: any user name, API_KEY as password"' if browser_page else "Bearer"
    raise APIError(401, "Invalid or missing API key: send it as 'xi-api-key' or 'Authorization: Bearer'.",
                   code="invalid_api_key", headers={"WWW-Authenticate": challenge})


def body_limit(settings: Settings, endpoint: str) -> int:
    """The most bytes a body may have on the route `endpoint` (its name without blueprints)."""
    return MAX_UPLOAD_REQUEST_BYTES if endpoint in UPLOAD_ROUTES else settings.max_body_bytes


def limit_body(settings: Settings, endpoint: str) -> None:
    """Refuse an oversized body before reading it; cap what a chunked body may grow to."""
    limit = body_limit(settings, endpoint)
    request.max_content_length = limit  # werkzeug: 413 as soon as a chunked body passes it
    what = "voice uploads" if endpoint in UPLOAD_ROUTES else "MAX_BODY_BYTES"
    refusal: Refusal | None = request.environ.get(REFUSED)
    if refusal is not None and refusal.status == 413:  # the connection stopped reading it there
        raise APIError(413, f"The request body is over the limit of {limit} bytes ({what}).",
                       code="payload_too_large")
    if request.content_length is not None and request.content_length > limit:
        raise APIError(413, f"The request body is {request.content_length} bytes; the limit is {limit} "
                            f"({what}).", code="payload_too_large")
