"""The real voice-agent clients against a live server, with only the base URL changed:
LiveKit Agents' `livekit-plugins-elevenlabs` TTS.stream() and Pipecat's ElevenLabsTTSService,
both on the multi-stream-input WebSocket, fed an LLM's reply word by word.

They live in their own virtualenv (requirements-clients.lock; .ci/run makes .venv-clients),
not in the product's; where it is missing these tests skip and test_stream_input.py's
replays of the same message sequences still run."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.fakes import wait_until

ROOT = Path(__file__).resolve().parent.parent
CLIENTS_PYTHON = Path(os.environ.get("SESAME_CLIENTS_PYTHON", ROOT / ".venv-clients" / "bin" / "python"))
REPLY = "Hello there, my friend. How are you doing today? I hope all is well."


def run_client(name: str, server, *args: str) -> dict:
    if not CLIENTS_PYTHON.exists():
        pytest.skip(f"no agent-clients virtualenv at {CLIENTS_PYTHON} (see requirements-clients.lock)")
    done = subprocess.run([str(CLIENTS_PYTHON), str(ROOT / "tests" / "agent_clients" / f"{name}.py"), server.url,
                           REPLY, *args], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("client, args, rate", [
    ("livekit_tts", (), 22050),  # eleven_turbo_v2_5: /v1/text-to-speech/{voice}/multi-stream-input
    ("livekit_tts", ("eleven_v3", "stream"), 22050),  # /v1/text-to-dialogue/multi-stream-input
    ("livekit_tts", ("eleven_v3", "synthesize"), 22050),  # POST /v1/text-to-dialogue/stream
    ("livekit_tts", ("eleven_turbo_v2_5", "synthesize"), 22050),  # POST /v1/text-to-speech/{voice}/stream
    ("pipecat_tts", (), 24000),  # /v1/text-to-speech/{voice}/multi-stream-input, auto_mode
])
def test_agent_client_speaks(piper_server, client, args, rate):
    before = set(piper_server.jobs)
    result = run_client(client, piper_server, *args)
    wait_until(lambda: set(piper_server.jobs) - before)
    jobs = [piper_server.jobs[r] for r in set(piper_server.jobs) - before]
    assert all(not job.interrupted and job.error is None for job in jobs)
    assert " ".join(job.request.text for job in sorted(jobs, key=lambda j: j.sequence)).split() == REPLY.split()
    assert result["rate"] == rate
    # LiveKit decodes the mp3 itself (encoder padding); Pipecat gets raw PCM
    assert result["seconds"] == pytest.approx(sum(job.audio_seconds for job in jobs), rel=0.08)
    assert result["rms"] > 0.01
