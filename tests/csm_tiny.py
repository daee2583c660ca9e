"""Shared tiny-CSM fixtures: a random tiny CSM + Mimi + tokenizer + voice prompts on disk.

`tiny_model_dir()` builds the directory once per test process (a few seconds) with
`sesame_server.backends.csm.random_weights.write_model_dir(path, "tiny")`; the backend loads
it through the real loading code as MODEL_PATH:

    from tests.csm_tiny import tiny_model_dir, tiny_settings
    backend = CsmBackend(tiny_settings(tmp_path))   # MODEL_PATH=tiny dir, CACHE_DIR=tmp_path
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from sesame_server.config import Settings
from sesame_server.engine.request import ContextTurn, SpeechRequest

SAMPLES_PER_FRAME = 1920


@lru_cache(maxsize=None)
def tiny_model_dir() -> Path:
    from sesame_server.backends.csm.random_weights import write_model_dir

    root = Path(tempfile.mkdtemp(prefix="csm-tiny-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return write_model_dir(root / "model", "tiny")


def tiny_settings(cache_dir: Path, **changes) -> Settings:
    """Settings for the csm backend on the tiny model (offline; warm-up off)."""
    return Settings(
        backend="csm", model_path=tiny_model_dir(), cache_dir=Path(cache_dir), warmup_on_start=False,
    ).replace(**changes)


def loaded_backend(tmp_path_factory, frames: int, *, warmup: bool = False) -> Iterator:
    """A loaded tiny CsmBackend for a test module: `yield from` it in a module fixture."""
    from sesame_server.backends.csm import CsmBackend

    backend = CsmBackend(tiny_settings(tmp_path_factory.mktemp("cache")), max_frames_per_sentence=frames)
    backend.load()
    if warmup:
        backend.warmup()
    yield backend
    backend.unload()


def make_request(text: str = "Hello there.", *, voice: str = "conversational_b", seed: int | None = 1,
                 context: tuple[ContextTurn, ...] = (), request_id: str = "test", **fields) -> SpeechRequest:
    from sesame_server.engine.text import split_sentences

    return SpeechRequest(
        text=text, sentences=tuple(split_sentences(text)), voice=voice, request_id=request_id,
        seed=seed, context=context, **fields,
    )


def collect(backend, request: SpeechRequest, cancel: threading.Event | None = None):
    return list(backend.stream(request, cancel or threading.Event()))
