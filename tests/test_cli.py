"""The CLI as a new user meets it: what `serve` prints, how it stops, exit codes (0 ok,
2 usage or bad configuration, 1 runtime failure), `say` and `voices` output."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import requests

from tests.test_config_cli import run_cli


def _env(tmp_path, **extra) -> dict:
    return {**os.environ, "CACHE_DIR": str(tmp_path), "WARMUP_ON_START": "false", "BACKEND": "piper", **extra}


def test_serve_prints_where_it_listens_even_to_a_pipe_and_ctrl_c_stops_it_cleanly(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "sesame_server", "--env-file", "/dev/null", "serve", "--port",
                               str(port)], env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        lines = [server.stdout.readline() for _ in range(5)]
        url = f"http://127.0.0.1:{port}"
        assert lines[0].startswith("Sesame TTS ") and "piper backend" in lines[0] and "default voice joe" in lines[0]
        assert f"listening on  {url}" in lines[1] and f"{url}/v1" in lines[1]
        assert f"playground    {url}/" in lines[2] and f"{url}/health" in lines[3]
        assert lines[4].strip() == "Press Ctrl+C to stop."
        deadline = time.monotonic() + 60
        while requests.get(f"{url}/ready", timeout=5).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=30)
        assert server.returncode == 0, err[-2000:]
        assert "stopped (Ctrl+C)" in out and "Traceback" not in err
    finally:
        if server.poll() is None:
            server.kill()


def test_say_refuses_what_it_cannot_do_with_exit_2(tmp_path):
    empty = run_cli("--env-file", "/dev/null", "say", "  ", "-o", str(tmp_path / "x.mp3"), env=_env(tmp_path))
    assert empty.returncode == 2 and "nothing to say" in empty.stderr
    assert not (tmp_path / "x.mp3").exists()
    unknown = run_cli("--env-file", "/dev/null", "say", "Hi", "-o", str(tmp_path / "x.xyz"), env=_env(tmp_path))
    assert unknown.returncode == 2
    assert "mp3, opus, aac, flac, wav, pcm" in unknown.stderr and "mp3_44100_128" in unknown.stderr
    voice = run_cli("--env-file", "/dev/null", "say", "Hi", "-o", str(tmp_path / "x.mp3"), "--voice", "nobody",
                    env=_env(tmp_path))
    assert voice.returncode == 2 and "Available voices: joe" in voice.stderr


def test_voices_lists_ids_elevenlabs_ids_and_nothing_else(tmp_path):
    listing = run_cli("--env-file", "/dev/null", "voices", env=_env(tmp_path))
    assert listing.returncode == 0
    assert "joe" in listing.stdout and "JoeEmbeddedPiper" in listing.stdout and "ElevenLabs id" in listing.stdout
    assert "INFO" not in listing.stdout + listing.stderr


def test_every_command_and_option_says_what_it_is_for():
    import argparse

    from sesame_server.cli import _parser

    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    described = {choice.dest: choice.help for choice in commands._choices_actions}
    for name, sub in commands.choices.items():
        assert described.get(name), f"`{name}` has no help"
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction) and not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"`{name} {'/'.join(action.option_strings) or action.dest}` has no help"
