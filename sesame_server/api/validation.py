"""JSON bodies and query strings through a pydantic schema, failures as one APIError.

The same models validate requests and describe them (model_json_schema), so the API's
documentation cannot drift from what the routes accept.
"""

from __future__ import annotations

from typing import Any, Mapping, TypeVar

from flask import request
from pydantic import BaseModel, ValidationError

from sesame_server.api.errors import APIError

Model = TypeVar("Model", bound=BaseModel)


def json_body() -> dict:
    """The request's JSON object; APIError(400, invalid_json) for anything else."""
    body = request.get_json(silent=True, force=True)
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.", code="invalid_json", param="body",
                       details=[{"loc": ["body"], "msg": "Input should be a valid JSON object", "type": "json_invalid"}])
    return body


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
