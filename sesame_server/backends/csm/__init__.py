"""The csm backend: Sesame CSM-1B on MLX, and its plugin functions (see backends/registry.py).

Modules, one job each:
  backend.py        CsmBackend: the Backend protocol, orchestrating the pieces below
  runtime.py        the loaded model on its MLX streams; voice prefixes; the bench's yardsticks
  window.py         the conversation window policy (pure: lengths and keys)
  chunker.py        the first audio block, then frame by frame
  telemetry.py      the Generation a request returns; counters and memory for status()
  hub.py            cache-first hub downloads with clear errors
  loading.py        CSM / tokenizer / Mimi from local directories or the hub; quantization
  mimi_io.py        Mimi configs as JSON; MLX-layout Mimi directories
  random_config.py  tiny/small/full random model shapes
  random_weights.py random models built in memory (--random-weights, the bench)
  voice_prompts.py  built-in voices; prompts Mimi-encoded once, codes cached on disk
  prompt.py         text and codes -> backbone token frames
  kv_cache.py       preallocated backbone cache with voice-prefix snapshots
  sampling.py       temperature + top-k with explicit PRNG keys
  frame_loop.py     prefill + compiled depth decoder + pipelined frame loop
  codec.py          Mimi streaming decode / prompt encode
  reference.py      mlx-audio's own frame loop (parity and speed yardstick)
  benchmark.py      `sesame-tts bench`
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
from pathlib import Path

from sesame_server.config import Settings

from .backend import CsmBackend

__all__ = ["CsmBackend", "add_bench_arguments", "available", "bench", "create", "download"]


def available(settings: Settings, *, auto: bool = False) -> tuple[bool, str]:
    """Whether CSM can run here without downloading anything; cheap, never touches the network.

    With `auto`, also whether it suits this machine: Apple Silicon (on a CPU CSM is far slower
    than real time), unless MODEL_PATH or random weights say the user wants it anyway."""
    try:
        import mlx.core  # noqa: F401
    except Exception as exc:  # ImportError, or a broken native library
        return False, f"MLX is not usable here ({exc})"
    if importlib.util.find_spec("mlx_audio") is None:
        return False, "mlx-audio is not installed (pip install -e '.[csm]')"
    if settings.random_weights:
        return True, f"random weights requested (flavor {settings.random_weights}): nothing to download"
    from .loading import local_status

    apple_silicon = platform.system() == "Darwin" and platform.machine() == "arm64"
    if auto and not apple_silicon and settings.model_path is None:
        # Said before anything about weights: `auto` would not use them here anyway.
        return False, "not Apple Silicon (CSM on a CPU is far slower than real time; BACKEND=csm forces it)"
    return local_status(settings)


def create(settings: Settings) -> CsmBackend:
    return CsmBackend(settings)


def download(settings: Settings) -> dict[str, Path]:
    """Fetch the model, tokenizer, Mimi and voice prompts ahead of time (`sesame-tts download`)."""
    from .loading import download_all

    return download_all(settings)


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    from .benchmark import add_arguments

    add_arguments(parser)


def bench(args: argparse.Namespace, settings: Settings) -> dict:
    """`sesame-tts bench`: our frame loop against mlx-audio's reference loop (benchmark.py)."""
    from .benchmark import run

    return run(args, settings)
