"""The OpenAPI 3.1 document of both dialects, built from what the routes validate with.

Request bodies and queries are the pydantic models' own JSON schemas (their `$defs` become
`components/schemas`); output formats and voice names come from the code; path parameters
from the app's url_map. The table of routes is openapi_routes.py. Only the routes this app
serves are described (a host that embeds the API without the operator routes gets none of
them), and the document is built once per app.
"""

from __future__ import annotations

import json
import re
from http import HTTPStatus

from flask import Flask
from pydantic import BaseModel
from werkzeug.routing import Rule
from werkzeug.routing.converters import AnyConverter

from sesame_server import __version__
from sesame_server.api.openapi_routes import (ELEVENLABS, OPENAI, PATH_PARAMETER_DESCRIPTIONS, ROUTES, SYSTEM,
                                              Route)
from sesame_server.runtime import EXTENSION, Runtime
from sesame_server.voices.catalogue import OPENAI_VOICES, elevenlabs_id

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{model}"
_CACHE = "sesame_tts_openapi"
_AUTOMATIC = frozenset({"HEAD", "OPTIONS"})
_RULE_ARGUMENT = re.compile(r"<(?:[^<>:]+:)?([^<>:]+)>")

# The wire shapes of api/openai/wire.py and api/elevenlabs/wire.py.
ERROR_SCHEMAS = {
    "OpenAIError": {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["message", "type", "param", "code"],
            "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                           "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}},
    },
    "ElevenLabsError": {
        "type": "object", "required": ["detail"],
        "properties": {"detail": {
            "type": "object", "required": ["status", "message"],
            "properties": {"status": {"type": "string"}, "message": {"type": "string"}}}},
    },
    "ElevenLabsValidationError": {
        "type": "object", "required": ["detail"],
        "properties": {"detail": {
            "type": "array", "minItems": 1,
            "items": {"type": "object", "required": ["loc", "msg", "type"],
                      "properties": {"loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                                     "msg": {"type": "string"}, "type": {"type": "string"}}}}},
    },
}
SECURITY_SCHEMES = {
    "xi-api-key": {"type": "apiKey", "in": "header", "name": "xi-api-key", "description": "API_KEY"},
    "bearer": {"type": "http", "scheme": "bearer", "description": "API_KEY as the bearer token"},
}
_NOTES = {
    401: "Missing or wrong API key (API_KEY is set).",
    403: "Refused by the request guards: a Host this server does not serve, or a cross-site page.",
    413: "The body is larger than the limit.",
    415: "The body is not application/json.",
    429: "The queue is full: retry after Retry-After seconds.",
    500: "Generation failed.",
    503: "Busy, or the model is unavailable (WebSockets: MAX_WEBSOCKETS are open, or MAX_PENDING_WEBSOCKETS sockets still to show their key).",
    426: "A WebSocket endpoint asked without Upgrade: websocket.",
    501: "WebSockets need the server `sesame-tts serve` runs (this WSGI server cannot hand connections over).",
}


def document_json(app: Flask) -> bytes:
    """The document, serialized once per app."""
    cached = app.extensions.get(_CACHE)
    if cached is None:
        cached = app.extensions[_CACHE] = json.dumps(build(app), separators=(",", ":")).encode()
    return cached


def build(app: Flask) -> dict:
    rt: Runtime = app.extensions[EXTENSION]
    keyed = bool(rt.settings.api_key)
    served = served_routes(app)
    schemas = dict(ERROR_SCHEMAS)
    voice_ids = [elevenlabs_id(voice) for voice in rt.catalogue]
    paths: dict[str, dict] = {}
    for route in ROUTES:
        rule = served.get((route.method, route.path))
        if rule is not None:
            paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, rule, schemas, keyed,
                                                                                voice_ids)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "sesame-tts-server",
            "version": __version__,
            "description": (
                "Local text to speech in two dialects: OpenAI's (tag `openai`, errors as `OpenAIError`) and "
                "ElevenLabs' (tag `elevenlabs`, errors as `ElevenLabsError`, validation failures as "
                "`ElevenLabsValidationError`). Operator routes (tag `system`) answer errors in OpenAI's shape. "
                f"OpenAI voice names ({', '.join(OPENAI_VOICES)}) map to the closest local voice."
                + (" Operations with a security requirement want the API key (xi-api-key or Authorization: "
                   "Bearer)." if keyed else " No API key is configured.")),
        },
        "tags": [{"name": OPENAI, "description": "OpenAI's speech API"},
                 {"name": ELEVENLABS, "description": "ElevenLabs' text to speech, voices and account"},
                 {"name": SYSTEM, "description": "Operator routes"}],
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
    }


def openapi_path(rule: str) -> str:
    """/v1/voices/<voice_id> -> /v1/voices/{voice_id}"""
    return _RULE_ARGUMENT.sub(r"{\1}", rule)


def served_routes(app: Flask) -> dict[tuple[str, str], Rule]:
    """(method, OpenAPI path) -> rule, for every route of the app but its static files."""
    served = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue
        for method in sorted(set(rule.methods or ()) - _AUTOMATIC):
            served[(method, openapi_path(rule.rule))] = rule
    return served


def model_schema(model: type[BaseModel], schemas: dict) -> dict:
    """The model's JSON schema; its $defs go to components/schemas (one name, one schema)."""
    schema = model.model_json_schema(ref_template=REF)
    for name, definition in schema.pop("$defs", {}).items():
        _add(schemas, name, definition)
    return schema


def _add(schemas: dict, name: str, schema: dict) -> None:
    if schemas.setdefault(name, schema) != schema:
        raise ValueError(f"two different schemas are both named {name!r}")


def _ref(model: type[BaseModel], schemas: dict) -> dict:
    _add(schemas, model.__name__, model_schema(model, schemas))
    return {"$ref": REF.format(model=model.__name__)}


def _operation(route: Route, rule: Rule, schemas: dict, keyed: bool, voice_ids: list[str]) -> dict:
    parameters = [_path_parameter(name, rule, voice_ids) for name in _RULE_ARGUMENT.findall(rule.rule)]
    if route.query is not None:
        parameters += query_parameters(route.query, schemas, route.formats)
    parameters += [dict(parameter) for parameter in route.parameters]
    operation: dict = {"operationId": route.operation_id, "tags": list(route.tags), "summary": route.summary}
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        media = {"schema": _ref(route.body, schemas)}
        if route.example is not None:
            media["example"] = dict(route.example)
        operation["requestBody"] = {"required": True, "content": {"application/json": media}}
    elif route.form is not None:
        operation["requestBody"] = {"required": True, "content": {"multipart/form-data": {
            "schema": route.form, "encoding": {"files": {"contentType": "audio/*, application/octet-stream"}}}}}
    guarded = keyed and not route.open
    if guarded:
        operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
    operation["responses"] = _responses(route, guarded)
    return operation


def _path_parameter(name: str, rule: Rule, voice_ids: list[str]) -> dict:
    converter = rule._converters.get(name)  # the converter's own pattern: what the route matches
    if isinstance(converter, AnyConverter):
        schema: dict = {"type": "string", "enum": sorted(converter.items)}
    else:
        schema = {"type": "string", "pattern": f"^{converter.regex}$" if converter is not None else "^[^/]+$"}
    if name == "voice_id" and voice_ids:
        schema["examples"] = voice_ids
    parameter = {"name": name, "in": "path", "required": True, "schema": schema}
    if name in PATH_PARAMETER_DESCRIPTIONS:
        parameter["description"] = PATH_PARAMETER_DESCRIPTIONS[name]
    return parameter


def query_parameters(model: type[BaseModel], schemas: dict, formats: tuple[str, ...] = ()) -> list[dict]:
    """One query parameter per field of `model` (optional ones without their null branch);
    output_format lists the values the route accepts."""
    schema = model_schema(model, schemas)
    required = set(schema.get("required", ()))
    parameters = []
    for name, field in schema["properties"].items():
        field = dict(field)
        description = field.pop("description", None)
        field.pop("title", None)
        if field.get("default", 0) is None:
            del field["default"]
        field = _without_null(field)
        if name == "output_format" and formats:
            field["enum"] = list(formats)
        parameter = {"name": name, "in": "query", "required": name in required, "schema": field}
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def _without_null(schema: dict) -> dict:
    """A query parameter is absent, never null: drop the null branch of an Optional."""
    members = [member for member in schema.get("anyOf", ()) if member != {"type": "null"}]
    if "anyOf" not in schema or len(members) == len(schema["anyOf"]):
        return schema
    rest = {key: value for key, value in schema.items() if key != "anyOf"}
    return {**rest, **members[0]} if len(members) == 1 else {**rest, "anyOf": members}


def _responses(route: Route, guarded: bool) -> dict:
    dialect = route.tags[0] if len(route.tags) == 1 else None
    responses: dict = {"200": {"description": "OK", "content": dict(route.ok)}}
    if route.websocket:
        responses = {"101": {"description": "Switching Protocols: the WebSocket is open (messages: README, "
                                            "Realtime voice agents)."}}
    for status, description in route.also.items():
        responses[str(status)] = {"description": description, "content": dict(route.ok)}
    statuses = {403, *route.errors}
    if route.body is not None:
        statuses |= {413, 415}
    if route.form is not None:
        statuses.add(413)
    if route.synthesizes:
        statuses |= {429, 500, 503}
    if guarded:
        statuses.add(401)
    for status in statuses:
        responses[str(status)] = error_response(status, dialect)
    return {**dict(sorted(responses.items())), "default": error_response(None, dialect)}


def error_response(status: int | None, dialect: str | None) -> dict:
    """An error in `dialect`'s shape (None: either, as the client's headers decide)."""
    if dialect == ELEVENLABS:
        name = "ElevenLabsValidationError" if status == 422 else "ElevenLabsError"
        schema = {"$ref": REF.format(model=name)} if status is not None else {"oneOf": [
            {"$ref": REF.format(model="ElevenLabsError")}, {"$ref": REF.format(model="ElevenLabsValidationError")}]}
    elif dialect is None:
        schema = {"oneOf": [{"$ref": REF.format(model=name)} for name in ERROR_SCHEMAS]}
    else:
        schema = {"$ref": REF.format(model="OpenAIError")}
    if status is None:
        description = "Any other error, in this dialect's shape."
    else:
        description = _NOTES.get(status, HTTPStatus(status).phrase)
    response: dict = {"description": description, "content": {"application/json": {"schema": schema}}}
    if status == 429:
        response["headers"] = {"Retry-After": {"description": "Seconds to wait before retrying.",
                                               "schema": {"type": "integer", "minimum": 0}}}
    return response
