"""Settings and the command line, as a user meets them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sesame_server.config import SettingsError, load_settings
from tests.audio_check import decode


def test_defaults_are_local_and_safe():
    settings = load_settings({}, env_file=None)
    assert (settings.host, settings.port, settings.backend) == ("127.0.0.1", 8880, "auto")
    assert settings.max_input_length == 4096 and settings.max_queue_depth == 3
    assert settings.stream_buffer_frames == 1 and settings.context_enabled


@pytest.mark.parametrize("key, value", [
    ("PORT", "eighty"), ("PORT", "70000"), ("BACKEND", "cuda"), ("MAX_QUEUE_DEPTH", "-1"),
    ("CONTEXT_ENABLED", "maybe"), ("DEFAULT_FORMAT", "ogg"), ("QUANTIZE", "3"), ("LOG_LEVEL", "loud"),
    ("VOICE_TEXT_NORMALIZATION", "joe=maybe"), ("VOICES_RESCAN_SECONDS", "-1"), ("TURN_STORE", "http://redis"),
])
def test_bad_values_name_the_key(key, value):
    with pytest.raises(SettingsError, match=key):
        load_settings({key: value}, env_file=None)


def test_env_file_is_read_and_environment_wins(tmp_path, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=9999\nDEFAULT_VOICE=joe  # inline comment\nMAX_QUEUE_DEPTH=7\n")
    monkeypatch.setenv("MAX_QUEUE_DEPTH", "5")
    monkeypatch.delenv("PORT", raising=False)
    monkeypatch.delenv("DEFAULT_VOICE", raising=False)
    settings = load_settings(env_file=env_file)
    assert (settings.port, settings.default_voice, settings.max_queue_depth) == (9999, "joe", 5)


def run_cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "sesame_server", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_bad_configuration_stops_the_command_with_the_key(tmp_path):
    import os

    result = run_cli("voices", env={**os.environ, "PORT": "abc"})
    assert result.returncode == 2
    assert "PORT" in result.stderr and "Traceback" not in result.stderr


def test_say_writes_a_playable_file(tmp_path):
    import os

    out = tmp_path / "hello.mp3"
    result = run_cli("say", "Hello from the command line.", "-o", str(out), "--backend", "piper", "--speed", "1.25",
                     env={**os.environ, "CACHE_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    decoded = decode(out.read_bytes(), "mp3")
    assert decoded.sample_rate == 24000 and decoded.seconds > 1.0 and decoded.rms > 0.01


def test_port_in_use_names_the_port_and_a_free_one(tmp_path):
    import os
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("serve", "--backend", "piper", "--port", str(port),
                         env={**os.environ, "CACHE_DIR": str(tmp_path), "WARMUP_ON_START": "false"})
    assert result.returncode == 1
    assert f"Port {port}" in result.stderr and "Try PORT=" in result.stderr
    assert "Traceback" not in result.stderr
