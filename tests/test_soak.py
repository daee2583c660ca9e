"""sesame-tts soak: a small soak against a real Piper server, what counts as garbled, the
loopback-only rule (checked before anything is sent), and the malloc tuning it measures."""

from __future__ import annotations

import argparse
import base64
import json
import platform
import socket
import subprocess
import sys

import pytest

from sesame_server.audio.units import SAMPLE_RATE
from sesame_server.config import Settings
from sesame_server.ops import soak
from sesame_server.ops.malloc import tune_malloc


def soak_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    soak.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_a_small_soak_loses_nothing(tmp_path, capsys):
    path = tmp_path / "soak.json"
    soak.run(soak_args("--requests", "60", "--warmup", "10", "--burst-every", "20", "--seed", "7",
                       "--timeout", "120", "--json", str(path)), Settings())
    report = json.loads(path.read_text())
    outcomes = report["outcomes"]
    assert report["requests"] == 60
    assert (outcomes["lost"], outcomes["garbled"], outcomes["5xx"]) == (0, 0, 0), report["problems"]
    assert outcomes["ok"] > 0 and outcomes["hung_up"] > 0
    # RSS is too noisy for a run this short; threads and fds are not.
    assert report["end"]["threads"] <= report["warm"]["threads"]
    assert report["end"]["fds"] <= report["warm"]["fds"] + soak.FD_SLACK
    assert report["idle_seconds"] is not None
    assert report["server_exit"] == 0
    assert "lost 0, garbled 0, 5xx 0" in capsys.readouterr().out


def _sse(*events: dict) -> bytes:
    return b"".join(f"data: {json.dumps(event)}\n\n".encode() for event in events)


SPEECH = {"input": "Hi."}
PCM = b"\x00\x01" * 2400  # 0.1 s
DELTA = {"type": "speech.audio.delta", "audio": base64.b64encode(PCM).decode()}


@pytest.mark.parametrize("case, content_type, body", [
    (soak.Case("/v1/audio/speech", SPEECH, "audio", "pcm", SAMPLE_RATE), "audio/mpeg", PCM),  # wrong type
    (soak.Case("/v1/audio/speech", SPEECH, "audio", "pcm", SAMPLE_RATE), "audio/pcm", PCM[:-1]),  # half a sample
    (soak.Case("/v1/audio/speech", SPEECH, "audio", "mp3", SAMPLE_RATE), "audio/mpeg", b"\xff\xfb" + b"\x00" * 900),
    (soak.Case("/v1/audio/speech", SPEECH, "audio", "pcm", SAMPLE_RATE), "audio/pcm", b""),
    (soak.Case("/v1/audio/speech", SPEECH, "sse", "pcm", SAMPLE_RATE), "text/event-stream", _sse(DELTA)),  # no done
    (soak.Case("/v1/audio/speech", SPEECH, "sse", "pcm", SAMPLE_RATE), "text/event-stream",
     _sse(DELTA, {"type": "error"}, {"type": "speech.audio.done"})),
    (soak.Case("/v1/text-to-speech/v/stream/with-timestamps", {"text": "Hi."}, "ndjson", "pcm", SAMPLE_RATE),
     "application/x-ndjson", b'{"audio_base64": "AAA="}\n{"detail": {"status": "internal_error"}}\n'),
])
def test_a_broken_response_is_garbled(case, content_type, body):
    assert soak.check(case, content_type, body) is not None


def test_a_whole_response_passes():
    case = soak.Case("/v1/audio/speech", SPEECH, "sse", "pcm", SAMPLE_RATE)
    assert soak.check(case, "text/event-stream", _sse(DELTA, {"type": "speech.audio.done", "usage": {}})) is None


@pytest.mark.parametrize("url", ["http://127.0.0.1:8880", "http://127.9.8.7", "http://[::1]:8880",
                                 "http://localhost:8880/"])
def test_loopback_urls_are_accepted(url):
    assert soak.is_loopback_url(url)


@pytest.mark.parametrize("url", ["http://10.0.0.5:8880", "http://192.168.1.20:8880", "http://example.com",
                                 "http://0.0.0.0:8880", "http://[2001:db8::1]:8880", "http://127.0.0.1.nip.io",
                                 "http://localhost.example.com", "https://203.0.113.9", "ftp://127.0.0.1"])
def test_anything_else_is_refused_before_a_byte_is_sent(url, monkeypatch, capsys):
    def no_network(*args, **kwargs):
        raise AssertionError("the soak reached for the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(subprocess, "Popen", no_network)
    assert soak.run(soak_args("--url", url, "--requests", "5"), Settings()) == 2
    assert "only ever target loopback" in capsys.readouterr().err


def test_the_malloc_tuning_the_soak_measures_applies_on_glibc_only():
    assert tune_malloc() is (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc")
