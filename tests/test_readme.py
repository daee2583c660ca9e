"""README examples are tests: every fenced block marked `<!-- runnable -->` runs as printed
against a live server (its URL in place of http://127.0.0.1:8880), and every audio file it
writes must decode and not be silent. A README example that breaks fails CI."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.audio_check import decode

README = Path(__file__).resolve().parent.parent / "README.md"
NODE_MODULES = Path(__file__).resolve().parent / "js" / "node_modules"  # bin/test: npm ci --prefix tests/js
_RUNNABLE = re.compile(r"<!-- runnable -->\n```(\w+)\n(.*?)\n```", re.S)
_AUDIO = {".mp3": "mp3", ".wav": "wav", ".opus": "opus", ".flac": "flac", ".aac": "aac"}


def examples() -> list[tuple[str, str, int]]:
    text = README.read_text()
    return [(m.group(1), m.group(2), text[:m.start()].count("\n") + 2) for m in _RUNNABLE.finditer(text)]


def test_the_readme_has_runnable_examples_in_each_language():
    assert {lang for lang, _, _ in examples()} >= {"bash", "python", "js"}
    assert len(examples()) >= 5


@pytest.mark.parametrize("lang, code, line", examples(), ids=[f"README.md:{line}" for _, _, line in examples()])
def test_readme_example_runs_as_printed(piper_server, tmp_path, lang, code, line):
    code = code.replace("http://127.0.0.1:8880", piper_server.url)
    if lang == "js":
        if not (NODE_MODULES.is_dir() and shutil.which("node")):
            pytest.skip("no node, or the SDKs are not installed (npm ci --prefix tests/js; bin/test does it)")
        (tmp_path / "node_modules").symlink_to(NODE_MODULES)  # ESM resolves from the script's folder up
        (tmp_path / "example.mjs").write_text(code)
    command = {"bash": ["bash", "-euo", "pipefail", "-c", code], "python": [sys.executable, "-c", code],
               "js": ["node", "example.mjs"]}[lang]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"README.md:{line} failed:\n{done.stdout[-1500:]}\n{done.stderr[-3000:]}"
    written = [path for path in tmp_path.iterdir() if path.suffix in _AUDIO]
    assert written, f"README.md:{line} wrote no audio file: an example should show its result"
    for path in written:
        decoded = decode(path.read_bytes(), _AUDIO[path.suffix])
        assert decoded.seconds > 0.3 and decoded.rms > 0.01, f"README.md:{line} wrote a bad {path.name}"


_SHIPPED = re.compile(r"<!-- shipped: (\S+) -->\n```\w+\n(.*?)\n```", re.S)


def test_the_configs_in_the_readme_are_the_ones_shipped():
    """README prints the nginx and Kubernetes files as shipped: they must not drift apart."""
    shown = _SHIPPED.findall(README.read_text())
    assert {path for path, _ in shown} >= {"etc/nginx/sesame-tts.conf", "etc/kubernetes/base/deployment.yaml"}
    for path, text in shown:
        assert text == (README.parent / path).read_text().rstrip("\n"), f"README's copy of {path} is out of date"
