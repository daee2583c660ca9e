"""JSON bodies and query strings through a pydantic schema, failures as one APIError.

The same models validate requests and describe them (model_json_schema), so the API's
documentation cannot drift from what the routes accept.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping, TypeVar

import numpy as np
from flask import request
from pydantic import BaseModel, ValidationError

from sesame_server.api.errors import APIError

Model = TypeVar("Model", bound=BaseModel)


MAX_JSON_DEPTH = 32  # our bodies nest 3 deep; the json module would recurse ~1000 deep
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # unrolled loop: linear and fast
_OPEN, _CLOSE = np.zeros(256, np.int8), np.zeros(256, np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_CLOSE[[ord("]"), ord("}")]] = 1


def json_body(status: int = 400) -> dict:
    """The request's JSON object. Only application/json is read (415 otherwise: a cross-site
    page cannot send it without a CORS preflight); the size was bounded before reading."""
    if not request.is_json:
        raise APIError(415, f"Send the body as application/json (got {request.mimetype or 'no Content-Type'}).",
                       code="unsupported_media_type", param="Content-Type")
    body = parse_json(request.get_data(cache=True), "body", status)
    if not isinstance(body, dict):
        raise _invalid_json("The request body must be a JSON object.", "body", status)
    return body


def parse_json(data: bytes | str, where: str, status: int):
    """json.loads, with the nesting depth checked first (deep nesting is a RecursionError)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    depth = json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise _invalid_json(f"{where} nests {depth} levels deep; at most {MAX_JSON_DEPTH} are accepted.", where, status)
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        raise _invalid_json(f"{where} is not valid JSON.", where, status) from None


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")  # Python's json takes NaN/Infinity; JSON does not


def json_depth(raw: bytes) -> int:
    """Deepest [ / { nesting of a JSON text, strings skipped (linear, vectorised)."""
    skeleton = np.frombuffer(_STRING.sub(b"", raw), np.uint8)
    if not len(skeleton):
        return 0
    return int(np.cumsum(_OPEN[skeleton] - _CLOSE[skeleton], dtype=np.int64).max(initial=0))


def _invalid_json(message: str, where: str, status: int) -> APIError:
    return APIError(status, message, code="invalid_json", param=where,
                    details=[{"loc": [where], "msg": message, "type": "json_invalid"}])


def validate(model: type[Model], data: Mapping[str, Any], where: str = "body", status: int = 422) -> Model:
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise validation_error(exc, where, status) from None


def validation_error(exc: ValidationError, where: str, status: int) -> APIError:
    details = [{"loc": [where, *err["loc"]], "msg": err["msg"], "type": err["type"]} for err in exc.errors()]
    first = exc.errors()[0]
    param = _param(first["loc"])
    kind = first["type"]
    if kind == "missing":
        code, message = "missing_required_parameter", f"Missing required parameter: '{param}'."
    elif kind.endswith(("_type", "_parsing")) or kind in ("is_instance_of", "model_attributes_type"):
        code, message = "invalid_type", f"Invalid type for '{param}': {first['msg']}."
    else:
        code, message = "invalid_value", f"Invalid value for '{param}': {first['msg']}."
    return APIError(status, message, code=code, param=param, details=details)


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _param(loc: tuple) -> str:
    """('voice_settings', 'stability') -> 'voice_settings.stability'; list indexes as [i]."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _TYPE_TAGS or part[:1].isupper() or "[" in part:
            continue  # the union member (a type name) pydantic adds to a loc
        else:
            out += f".{part}" if out else str(part)
    return out
