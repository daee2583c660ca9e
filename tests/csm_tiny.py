"""Shared tiny-CSM fixtures: a random tiny CSM + Mimi + tokenizer + voice prompts on disk.

`tiny_model_dir()` builds the directory once per test process (a few seconds) with
`tests.csm_fixtures.write_model_dir(path, "tiny")`; the backend loads it through the real
loading code as MODEL_PATH:

    from tests.csm_tiny import tiny_model_dir, tiny_settings
    backend = CsmBackend(tiny_settings(tmp_path))   # MODEL_PATH=tiny dir, CACHE_DIR=tmp_path
    blocks, generation = speak(backend, make_request("Hello."))
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np

from sesame_server.backends.base import Generation
from sesame_server.config import Settings
from sesame_server.engine.request import ContextTurn, SpeechRequest

SAMPLES_PER_FRAME = 1920


@lru_cache(maxsize=None)
def tiny_model_dir() -> Path:
    from tests.csm_fixtures import write_model_dir

    root = Path(tempfile.mkdtemp(prefix="csm-tiny-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return write_model_dir(root / "model", "tiny")


@lru_cache(maxsize=None)
def tiny_torch_model_dir() -> Path:
    """The same tiny model in transformers' layout (`sesame-tts convert --to transformers`),
    for the csm-torch backend: both backends then hold identical weights."""
    from sesame_server.backends.csm_torch.convert_dir import to_transformers

    root = Path(tempfile.mkdtemp(prefix="csm-tiny-torch-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return to_transformers(tiny_model_dir(), root / "model", Settings())


def tiny_settings(cache_dir: Path, **changes) -> Settings:
    """Settings for the csm backend on the tiny model (offline; warm-up off)."""
    return Settings(
        backend="csm", model_path=tiny_model_dir(), cache_dir=Path(cache_dir), warmup_on_start=False,
    ).replace(**changes)


BACKENDS = ["csm", "csm-torch"]  # tests that hold for both CSM runtimes take this as a parameter


def tiny_settings_for(name: str, cache_dir: Path, **changes) -> Settings:
    """tiny_settings for the backend `name`: csm-torch reads the tiny model's transformers twin
    (skipped where torch is not installed)."""
    if name == "csm-torch":
        import pytest

        pytest.importorskip("torch")
        changes.setdefault("model_path", tiny_torch_model_dir())
    return tiny_settings(cache_dir, backend=name, **changes)


def backend_for(name: str, settings: Settings, **options):
    """A CsmBackend (MLX) or CsmTorchBackend on `settings`."""
    if name == "csm-torch":
        from sesame_server.backends.csm_torch.backend import CsmTorchBackend

        return CsmTorchBackend(settings, **options)
    from sesame_server.backends.csm import CsmBackend

    return CsmBackend(settings, **options)


def loaded_backend(tmp_path_factory, frames: int, *, warmup: bool = False, name: str = "csm", **options) -> Iterator:
    """A loaded tiny CSM backend (`name`: csm or csm-torch) for a test module: `yield from` it
    in a module fixture."""
    settings = tiny_settings_for(name, tmp_path_factory.mktemp("cache"))
    backend = backend_for(name, settings, max_frames_per_sentence=frames, **options)
    backend.load()
    if warmup:
        backend.warmup()
    yield backend
    backend.unload()


def make_request(text: str = "Hello there.", *, voice: str = "conversational_b", seed: int | None = 1,
                 context: tuple[ContextTurn, ...] = (), request_id: str = "test", **fields) -> SpeechRequest:
    return SpeechRequest(text=text, voice=voice, request_id=request_id, seed=seed, context=context, **fields)


def speak(backend, request: SpeechRequest, cancel: threading.Event | None = None, *,
          cancel_after: int | None = None) -> tuple[list[np.ndarray], Generation]:
    """Run a stream to its end: (PCM blocks, the Generation it returned). With `cancel_after`,
    the client "hangs up" (cancel is set) once that many blocks arrived."""
    cancel = cancel or threading.Event()
    stream = backend.stream(request, cancel)
    blocks = []
    while True:
        try:
            blocks.append(next(stream).pcm)
        except StopIteration as stop:
            return blocks, stop.value
        if len(blocks) == cancel_after:
            cancel.set()


def collect(backend, request: SpeechRequest, cancel: threading.Event | None = None) -> list[np.ndarray]:
    return speak(backend, request, cancel)[0]


def codes(generation: Generation) -> np.ndarray:
    """Every code the generation spoke, [codebooks, frames]."""
    return np.concatenate([c for _, c in generation.segments], axis=1)
