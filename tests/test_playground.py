"""GET /: the playground page, and its own script driven under Node against the real server."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest
import requests

from tests.fakes import wait_until

HARNESS = Path(__file__).with_name("playground_harness.js")
SCRIPT = resources.files("sesame_server.api").joinpath("playground.js")


def test_page_is_served_and_loads_nothing_from_elsewhere(piper_server):
    response = requests.get(f"{piper_server.url}/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "connect-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert response.headers["x-frame-options"] == "DENY"
    assert not re.search(r"<script>|<style>|\son[a-z]+=|style=", response.text), "inline code or style: CSP blocks it"
    assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", response.text), "external resource in the page"
    script = requests.get(f"{piper_server.url}/playground.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "/v1/audio/speech" in script.text
    assert requests.get(f"{piper_server.url}/playground.css").headers["content-type"].startswith("text/css")


def run_page(server, action: str) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    done = subprocess.run([node, str(HARNESS), str(SCRIPT), server.url, action], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_page_lists_the_voices_and_streams_speech(piper_server):
    result = run_page(piper_server, "speak")
    assert result["voices"] == ["joe"] and result["selected"] == "joe"
    assert result["banner"] is None and result["backend"] == "piper backend"
    # piper: no cloning, no conversation memory; said on the page, not hidden
    assert result["cloneDisabled"] and "needs the CSM backend" in result["cloneNote"]
    assert result["conversationDisabled"]
    turn = result["turns"][0]
    job = piper_server.job(turn["requestId"])
    assert turn["seconds"] == pytest.approx(job.audio_seconds, abs=0.01)  # every sample was scheduled
    assert turn["blocks"] > 1 and turn["rms"] > 0.01
    assert re.match(r"first audio after \d+ ms", turn["stats"])
    assert turn["download"], "no WAV to download"
    assert turn["spoken"] is None  # plain text: nothing to show


def test_page_speaks_a_dialogue(piper_server):
    before = set(piper_server.jobs)
    result = run_page(piper_server, "dialogue")
    assert result["helpShown"]
    turn = result["turns"][0]
    assert turn["path"] == "/v1/text-to-dialogue/stream?output_format=pcm_24000"
    assert [line["text"] for line in turn["body"]["inputs"]] == ["Hello there, how are you?",
                                                                "Very well, thank you.", "And you?"]
    assert [line["voice_id"] for line in turn["body"]["inputs"]] == ["joe", result["voice2"], "joe"]
    wait_until(lambda: len(set(piper_server.jobs) - before) == 3)
    seconds = sum(piper_server.jobs[r].audio_seconds for r in set(piper_server.jobs) - before)
    assert turn["seconds"] == pytest.approx(seconds, abs=0.01) and turn["rms"] > 0.01


def test_page_keeps_a_conversation_on_csm(tmp_path):
    from sesame_server.backends.csm import CsmBackend
    from tests.csm_tiny import tiny_settings
    from tests.live import live_server

    settings = tiny_settings(tmp_path, model_path=None, random_weights="tiny")
    with live_server(settings, backend=CsmBackend(settings, max_frames_per_sentence=4)) as server:
        result = run_page(server, "speak-twice")
    assert "RANDOM WEIGHTS" in result["banner"] and not result["cloneDisabled"]
    assert not result["conversationDisabled"] and result["backend"] == "csm backend"
    first, second = result["turns"]
    assert first["session"] and first["session"] == second["session"]
    assert "context turns: 0" in first["stats"] and "context turns: 1" in second["stats"]
