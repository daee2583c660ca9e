"""GET /openapi.json: a valid OpenAPI 3.1 document of every route, built from the models the
routes validate with; then schemathesis against the live server (the real Piper voice): no
5xx, and every 4xx in its dialect's error shape."""

from __future__ import annotations

import copy
import re
import tempfile
from pathlib import Path

import jsonschema_rs
import pytest
import requests
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.adapter.validators import validate_v3

from sesame_server.api import docs
from sesame_server.api.dialect import is_elevenlabs_client
from sesame_server.api.elevenlabs.schema import TextToSpeechBody, TextToSpeechQuery
from sesame_server.api.openai.schema import SpeechBody
from sesame_server.api.openapi import REF, document_json
from sesame_server.app import create_app, init_app
from sesame_server.audio.formats import ELEVENLABS_FORMATS, ELEVENLABS_STREAM_FORMATS, OPENAI_FORMATS, openai_format
from sesame_server.config import Settings
from tests.conftest import piper_settings
from tests.fakes import FakeBackend
from tests.live import live_server

KEY = "test-key"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ELEVENLABS_CLIENTS = ({"xi-api-key": "any"}, {"User-Agent": "elevenlabs-python/2.0"})


def with_docs(app: Flask) -> Flask:
    """Serve /openapi.json on `app` unless the speech blueprint already does (then behind its
    guards; until it does, the test mounts it on the app itself, outside them)."""
    if not any(rule.rule == "/openapi.json" for rule in app.url_map.iter_rules()):
        app.register_blueprint(docs.bp)
    return app


def outside_the_guards(app: Flask, path: str) -> bool:
    return any(rule.rule == path and rule.endpoint.startswith(f"{docs.bp.name}.") for rule in app.url_map.iter_rules())


def fake_app(tmp_path, **changes) -> Flask:
    settings = Settings(cache_dir=tmp_path, warmup_on_start=False).replace(**changes)
    return with_docs(create_app(settings, backend=FakeBackend(), start=False))


def fetch(app: Flask, **headers) -> dict:
    response = app.test_client().get("/openapi.json", headers=headers)
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


def operations(doc: dict) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item}


def routes(app: Flask) -> set[tuple[str, str]]:
    """What the app serves, read from its url_map (static files aside)."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint != "static":
            path = re.sub(r"<(?:[^<>:]+:)?([^<>:]+)>", r"{\1}", rule.rule)
            found |= {(method, path) for method in rule.methods if method in METHODS}
    return found


def operation(doc: dict, method: str, path: str) -> dict:
    return doc["paths"][path][method.lower()]


def expected_error_schema(op: dict, status: int, headers) -> str:
    """The operation's dialect (/v1/models: the client's); operator routes answer as OpenAI."""
    tags = op["tags"]
    elevenlabs = is_elevenlabs_client(headers) if len(tags) > 1 else tags == ["elevenlabs"]
    if not elevenlabs:
        return "OpenAIError"
    return "ElevenLabsValidationError" if status == 422 else "ElevenLabsError"


def assert_dialect_shape(doc: dict, op: dict, status: int, headers, body) -> None:
    name = expected_error_schema(op, status, headers)
    validator = jsonschema_rs.validator_for(doc["components"]["schemas"][name])
    assert validator.is_valid(body), f"{status} for {op['operationId']} is not an {name}: {body!r}"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return fake_app(tmp_path_factory.mktemp("openapi"))


@pytest.fixture(scope="module")
def doc(app):
    return fetch(app)


# --- the document ------------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1(doc):
    assert doc["openapi"].startswith("3.1.")
    validate_v3(doc)  # the OpenAPI 3.1 meta-schema schemathesis ships (jsonschema_rs)
    for name, schema in doc["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name  # JSON Schema 2020-12
    loaded = [result.ok() for result in schemathesis.openapi.from_dict(copy.deepcopy(doc)).get_all_operations()]
    assert {(op.method.upper(), op.path) for op in loaded} == operations(doc)


def test_it_covers_every_route_the_app_serves(app, doc):
    assert operations(doc) == routes(app)
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_an_embedding_app_gets_only_its_routes(tmp_path):
    host = Flask("host")
    init_app(host, Settings(cache_dir=tmp_path), backend=FakeBackend(), start=False)  # no operator routes
    doc = fetch(with_docs(host))
    assert operations(doc) == routes(host)
    assert ("GET", "/health") not in operations(doc)


def test_it_is_built_once_per_app(app):
    client = app.test_client()
    assert client.get("/openapi.json").data == client.get("/openapi.json").data
    assert document_json(app) is document_json(app)


def test_request_bodies_are_the_pydantic_models(doc):
    schemas = doc["components"]["schemas"]
    bodies = [(SpeechBody, "/v1/audio/speech")] + [(TextToSpeechBody, path) for path in doc["paths"]
                                                    if path.startswith("/v1/text-to-speech/")
                                                    and "post" in doc["paths"][path]]
    assert len(bodies) == 5
    for model, path in bodies:
        schema = model.model_json_schema(ref_template=REF)
        for name, definition in schema.pop("$defs", {}).items():
            assert schemas[name] == definition
        assert schemas[model.__name__] == schema
        body = operation(doc, "POST", path)["requestBody"]["content"]["application/json"]
        assert body["schema"] == {"$ref": REF.format(model=model.__name__)}
        model.model_validate(body["example"])  # the example is a request the route accepts


def _keywords(node) -> set[str]:
    if isinstance(node, list):
        return set().union(*map(_keywords, node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = set(node) - {"properties", "$defs"}
    for key, value in node.items():
        found |= set().union(*map(_keywords, value.values())) if key in ("properties", "$defs") else _keywords(value)
    return found


def test_the_models_bounds_are_json_schema_keywords(doc):
    assert not _keywords(doc["components"]["schemas"]) & {"ge", "le", "gt", "lt"}


def test_queries_and_enumerations_come_from_the_code(doc):
    speech = doc["components"]["schemas"]["SpeechBody"]["properties"]
    assert [m["enum"] for m in speech["response_format"]["anyOf"] if "enum" in m] == [list(OPENAI_FORMATS)]
    ok = operation(doc, "POST", "/v1/audio/speech")["responses"]["200"]["content"]
    assert set(ok) == {openai_format(name).content_type for name in OPENAI_FORMATS} | {"text/event-stream"}
    for path, formats in [("/v1/text-to-speech/{voice_id}", ELEVENLABS_FORMATS),
                          ("/v1/text-to-speech/{voice_id}/with-timestamps", ELEVENLABS_FORMATS),
                          ("/v1/text-to-speech/{voice_id}/stream", ELEVENLABS_STREAM_FORMATS),
                          ("/v1/text-to-speech/{voice_id}/stream/with-timestamps", ELEVENLABS_STREAM_FORMATS)]:
        query = {p["name"]: p for p in operation(doc, "POST", path)["parameters"] if p["in"] == "query"}
        assert set(query) == set(TextToSpeechQuery.model_fields)
        assert query["output_format"]["schema"]["enum"] == list(formats)
        assert not any(p["required"] for p in query.values())


def test_errors_are_documented_in_each_dialect(doc):
    assert {"OpenAIError", "ElevenLabsError", "ElevenLabsValidationError"} <= set(doc["components"]["schemas"])
    speech = operation(doc, "POST", "/v1/audio/speech")["responses"]
    assert speech["400"]["content"]["application/json"]["schema"] == {"$ref": REF.format(model="OpenAIError")}
    assert "Retry-After" in speech["429"]["headers"]
    tts = operation(doc, "POST", "/v1/text-to-speech/{voice_id}")["responses"]
    assert tts["422"]["content"]["application/json"]["schema"] == {
        "$ref": REF.format(model="ElevenLabsValidationError")}
    assert "401" not in speech and "security" not in operation(doc, "POST", "/v1/audio/speech")  # no key set


def test_with_a_key_every_guarded_operation_says_so_and_answers_401_without_it(tmp_path):
    app = fake_app(tmp_path, api_key=KEY)
    doc = fetch(app, Authorization=f"Bearer {KEY}")
    assert set(doc["components"]["securitySchemes"]) == {"xi-api-key", "bearer"}
    client = app.test_client()
    for path, item in doc["paths"].items():
        if outside_the_guards(app, path):
            continue
        concrete = path.replace("{name}", "playground.js").replace("{voice_id}", "nobody").replace("{model_id}", "m")
        for method, op in item.items():
            response = client.open(concrete, method=method.upper())
            if "security" in op:
                assert "401" in op["responses"] and response.status_code == 401, (method, path, response.status_code)
                assert_dialect_shape(doc, op, 401, {}, response.get_json())
            else:
                assert response.status_code != 401, (method, path)


@pytest.mark.parametrize("headers", [{}, *ELEVENLABS_CLIENTS])
def test_models_answers_in_the_clients_dialect(app, doc, headers):
    body = app.test_client().get("/v1/models", headers=headers).get_json()
    assert isinstance(body, list) == is_elevenlabs_client(headers)


@pytest.mark.parametrize("headers", ELEVENLABS_CLIENTS)
def test_models_errors_follow_the_clients_dialect(app, doc, headers):
    response = app.test_client().post("/v1/models", headers=headers)
    assert response.status_code == 405
    assert_dialect_shape(doc, operation(doc, "GET", "/v1/models"), 405, headers, response.get_json())


# --- schemathesis against the live server ------------------------------------------------------

MAX_EXAMPLES = 25  # per operation in the fuzzing phase; coverage (negative cases only) is finite
SEED = 20260101
MAX_INPUT_LENGTH = 120  # short texts keep each real synthesis short; longer ones are refused (checked too)


def piper_document() -> dict:
    """The document of a Piper app like the live server's (nothing started)."""
    with tempfile.TemporaryDirectory(prefix="openapi-") as tmp:
        return fetch(with_docs(create_app(piper_settings(Path(tmp), max_input_length=MAX_INPUT_LENGTH), start=False)))


FUZZED_DOC = piper_document()
fuzzed = schemathesis.openapi.from_dict(copy.deepcopy(FUZZED_DOC), config=schemathesis.Config.from_dict({
    "seed": SEED,
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
    # Coverage's positive cases would synthesize hundreds of texts: its negative ones (wrong types,
    # missing fields, boundaries, unexpected methods) are what it adds here.
    "phases": {"examples": {"enabled": True}, "fuzzing": {"enabled": True},
               "coverage": {"enabled": True, "generation": {"mode": "negative"}}, "stateful": {"enabled": False}},
}))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with live_server(piper_settings(tmp_path_factory.mktemp("fuzz"), max_input_length=MAX_INPUT_LENGTH)) as server:
        with_docs(server.app)  # before its first request
        yield server


def test_the_live_server_serves_the_fuzzed_document(live):
    response = requests.get(f"{live.url}/openapi.json", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == FUZZED_DOC


def errors_in_dialect_shape(ctx, response, case):
    """Every 4xx is JSON in the error shape of the operation's dialect."""
    if 400 <= response.status_code < 500:
        content_type = response.headers.get("content-type", [""])[0]
        assert content_type.startswith("application/json"), f"{response.status_code} answered as {content_type!r}"
        op = operation(FUZZED_DOC, case.operation.method, case.operation.path)
        assert_dialect_shape(FUZZED_DOC, op, response.status_code, response.request.headers, response.json())


@fuzzed.parametrize()
@settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_fuzz(case, live):
    response = case.call(base_url=live.url, timeout=60)
    case.validate_response(response, checks=[not_a_server_error, errors_in_dialect_shape])


def test_a_nan_speed_is_refused(live):
    response = requests.post(f"{live.url}/v1/text-to-speech/JoeEmbeddedPiper",
                             data=b'{"text": "Hi.", "voice_settings": {"speed": NaN}}',
                             headers={"Content-Type": "application/json"}, timeout=60)
    assert 400 <= response.status_code < 500, response.text
