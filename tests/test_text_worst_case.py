"""No text costs the front end more than a small constant times prose of the same length.

The worst inputs are generated, not picked: every character a rule of spoken/rules.py, the
markdown reader or the sentence splitter reacts to, alone and next to each short filler,
repeated to MAX_INPUT_LENGTH; then the shapes the audit found (runs of dots, "a/", "1-",
"1."), URLs without end, emoji runs, nested markdown, acronyms. Each is timed through what
a request's text goes through (spoken_text, then the sentences of SpeechRequest) and
through the sentence splitter alone (what the WebSocket text buffer calls), as a ratio to
prose timed in the same test: a quadratic pattern is hundreds of times prose at 4 096
characters, linear code at most ~16x (a rewrite at every other character). A case over the
bound is timed again, three times, before it fails (a shared machine is noisy)."""

from __future__ import annotations

import gc
import time

import pytest
import requests

from sesame_server.config import Settings
from sesame_server.engine.text import split_sentences
from sesame_server.spoken.policy import spoken_text
from tests.fakes import FakeBackend

LENGTH = Settings().max_input_length
MAX_RATIO = 25  # linear code stays within ~16x prose here; the quadratic cases were 40-1,600x
PROSE = "The quick brown fox jumps over the lazy dog while the rain keeps falling on the quiet town. "

# What rules.py's _TRIGGER, markdown's _MARKDOWN and the splitter's _END look for, one character each.
TRIGGERS = list("0$€£¥@#/~*_`:;+(=×÷<>≤≥≈±≠%.!?…\"')]”’[|&\\-,\n") + ["😀", "\u2764\ufe0f", "é"]
FILLERS = ["", "a", "1", ".", " ", "-", "/"]
SHAPES = [
    "www.", "http://", "https://a", "https://a.", "a.com/", "a.com.", "a@", "a@b.", "a.b@", "1@",
    "e.g. ", "i.e.", "Dr. ", "A. ", "A.", "a.b.", "1.1.", "v1.", "1,000,", "1,", "1:1", "1/1/", "1/", "1-1",
    "$1", "$1,", "1%", "1st", "1e", "1 km", "1 s", "1K", "Jan 1 ", "Jan", "12:00 pm ", "+1 ", "(1",
    "API ", "US ", "NASA ", "#a", "@a", "#1", ":)", ";-", "**a", "*a_", "_a*", "__", "[a](", "](", "![a](",
    "`a", "```", "~~", "- ", "* ", "1. ", "> ", "| ", "|-", "<a>", "<!--", "&amp;", "&#", "\\*", "    ",
    "# ", "\n\n", "-\n", "👍🏽", "🇺🇸", "👨\u200d👩\u200d👧", "a\u200d",
]


def worst_cases() -> list[str]:
    """Every trigger alone and with each filler before and after it, and every shape, as
    one run of the full length."""
    patterns = {c + f for c in TRIGGERS for f in FILLERS} | {f + c for c in TRIGGERS for f in FILLERS}
    patterns |= set(SHAPES)
    runs = [(pattern * (LENGTH // len(pattern) + 1))[:LENGTH] for pattern in sorted(patterns)]
    runs += [  # a run that ends differently from how it goes on
        "https://" + "a." * (LENGTH // 2), "www." + "." * LENGTH, "a@" + "b-" * (LENGTH // 2),
        "1" * LENGTH + "th", "9" * (LENGTH - 1) + ".", "." * (LENGTH - 1) + " ", "x" + "1" * LENGTH,
        "x" + "1" * (LENGTH - 2) + "%", "$" + "1" * LENGTH, "#" + "1" * LENGTH, "-" + "1" * LENGTH,
    ]
    return [run[:LENGTH] for run in runs]


def _front_end(text: str) -> None:
    """A request's text: spoken as the server speaks it, then cut into the model's sentences."""
    split_sentences(spoken_text(text, Settings()).text)


def _seconds(work, text: str, rounds: int = 1) -> float:
    """CPU seconds of this thread (the best of `rounds`): other processes on a shared
    machine slow the wall clock, not this."""
    best = float("inf")
    for _ in range(rounds):
        started = time.thread_time()
        work(text)
        best = min(best, time.thread_time() - started)
    return best


@pytest.mark.parametrize("work", [_front_end, split_sentences], ids=["spoken_text+sentences", "sentences"])
def test_no_input_costs_more_than_a_constant_times_prose(work):
    prose = (PROSE * (LENGTH // len(PROSE) + 1))[:LENGTH]
    work("The API " + prose)  # imports, compiled patterns, the acronyms' word list: not counted
    baseline = _seconds(work, prose, rounds=7)
    slow = []
    gc.disable()  # a collection in the middle of one case is not that case's cost
    try:
        for text in worst_cases():
            if _seconds(work, text) > MAX_RATIO * baseline:
                # Confirmed or not: the lowest of three ratios, each of the best of five runs.
                ratio = min(_seconds(work, text, rounds=5) / _seconds(work, prose, rounds=5) for _ in range(3))
                if ratio > MAX_RATIO:
                    slow.append(f"{ratio:6.0f}x  {text[:24]!r}...")
            if len(slow) == 10:
                break  # enough to show; the rest would only make a failing run slow
    finally:
        gc.enable()
    slow.sort(reverse=True)
    assert not slow, f"prose takes {baseline * 1e3:.2f} ms; these take more than {MAX_RATIO}x:\n" + "\n".join(slow)


@pytest.fixture(scope="module")
def context_server(tmp_path_factory):
    """A server whose backend conditions on context, so previous_text is spoken to be found."""
    from dataclasses import replace

    from tests.live import live_server

    backend = FakeBackend(frames=1)
    backend.info = replace(backend.info, uses_context=True)
    settings = Settings(cache_dir=tmp_path_factory.mktemp("cache"), warmup_on_start=True)
    with live_server(settings, backend=backend) as server:
        server.voice = backend.voices()[0].id
        yield server


def test_a_previous_text_at_the_limit_costs_no_more_than_prose(context_server):
    """The worst previous_text allowed costs a request about what prose of the same length
    does (a quadratic one was 50x: 0.38 s for "a/" * 2048)."""
    url = f"{context_server.url}/v1/text-to-speech/{context_server.voice}?output_format=pcm_24000"

    def cost(previous_text: str) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            response = requests.post(url, json={"text": "Hi.", "previous_text": previous_text})
            assert response.status_code == 200, response.text
            best = min(best, time.perf_counter() - started)
        return best

    prose = (PROSE * (LENGTH // len(PROSE) + 1))[:LENGTH]
    cost(prose)
    baseline = cost(prose)
    for pattern in ("a/", "1-", "1.", "a@", "≥1", "é-", "1", ". "):
        worst = (pattern * LENGTH)[:LENGTH]
        assert cost(worst) < 10 * baseline, pattern


@pytest.mark.parametrize("field", ["previous_text", "next_text"])
def test_context_text_over_the_input_limit_is_refused_in_each_dialect(context_server, field):
    long = "x" * (LENGTH + 1)
    eleven = requests.post(f"{context_server.url}/v1/text-to-speech/{context_server.voice}",
                           json={"text": "Hi.", field: long})
    assert eleven.status_code == 422
    assert eleven.json()["detail"][0]["loc"] == ["body", field] and str(LENGTH) in eleven.json()["detail"][0]["msg"]
    openai = requests.post(f"{context_server.url}/v1/audio/speech", json={"input": "Hi.", field: long})
    assert openai.status_code == 400 and openai.json()["error"]["param"] == field
    at_the_limit = requests.post(f"{context_server.url}/v1/audio/speech", json={"input": "Hi.", field: long[1:]})
    assert at_the_limit.status_code == 200


@pytest.mark.parametrize("field", ["model", "voice"])
def test_an_overlong_name_is_refused_in_the_openai_shape(context_server, field):
    body = {"input": "Hi.", field: "v" * 129}
    response = requests.post(f"{context_server.url}/v1/audio/speech", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == field, response.text


@pytest.mark.parametrize("field", ["model_id", "language_code", "output_format"])
def test_an_overlong_name_is_refused_in_the_elevenlabs_shape(context_server, field):
    response = requests.post(f"{context_server.url}/v1/text-to-speech/{context_server.voice}",
                             json={"text": "Hi.", field: "v" * 129})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", field], response.text


# Spoken text, or text that conditions speech: held to MAX_INPUT_LENGTH by the route.
SPOKEN_FIELDS = {"input", "text", "previous_text", "next_text"}


def test_every_string_a_client_sends_has_a_limit():
    """Every string in every body, query and message model of the API has a maxLength (so
    the OpenAPI document says it too), or is spoken text the route holds to MAX_INPUT_LENGTH."""
    import importlib
    import inspect
    import pkgutil

    from pydantic import BaseModel

    import sesame_server.api
    import sesame_server.context.fields

    modules = [sesame_server.context.fields] + [
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(sesame_server.api.__path__, "sesame_server.api.")]
    models = {obj for module in modules for obj in vars(module).values()
              if inspect.isclass(obj) and issubclass(obj, BaseModel) and obj.__module__ == module.__name__}
    assert len(models) >= 10
    unbounded = []
    for model in models:
        _unbounded_strings(model.model_json_schema(), model.__name__, unbounded)
    assert not unbounded, f"string fields without a limit: {sorted(set(unbounded))}"


def _unbounded_strings(node, where: str, found: list[str]) -> None:
    if isinstance(node, list):
        for item in node:
            _unbounded_strings(item, where, found)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "string" and not {"maxLength", "enum", "const"} & node.keys():
        if where.rsplit(".", 1)[-1] not in SPOKEN_FIELDS:
            found.append(where)
    for key, value in node.items():
        if key == "properties":
            for name, schema in value.items():
                _unbounded_strings(schema, f"{where}.{name}", found)
        elif key == "$defs":
            for name, schema in value.items():
                _unbounded_strings(schema, name, found)
        elif isinstance(value, (dict, list)):
            _unbounded_strings(value, where, found)
