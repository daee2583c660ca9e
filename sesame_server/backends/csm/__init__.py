"""The csm backend: Sesame CSM-1B on MLX.

Modules, one job each:
  hub.py            cache-first hub downloads with clear errors
  loading.py        CSM / tokenizer / Mimi from local directories or the hub; quantization
  random_weights.py tiny/small/full random models (tests, demos, bench); offline model dirs
  voice_prompts.py  built-in voices; prompts Mimi-encoded once, codes cached on disk
  prompt.py         text and codes -> backbone token frames
  kv_cache.py       preallocated backbone cache with voice-prefix snapshots; depth cache
  sampling.py       temperature + top-k with explicit PRNG keys
  frame_loop.py     prefill + compiled depth decoder + pipelined frame loop
  codec.py          Mimi streaming decode / prompt encode
  backend.py        CsmBackend (the Backend protocol)
"""

from __future__ import annotations

import importlib.util

from sesame_server.config import Settings

from .backend import CsmBackend

__all__ = ["CsmBackend", "csm_available"]


def csm_available(settings: Settings) -> tuple[bool, str]:
    """Whether CSM can run here without downloading anything; cheap, never touches the network."""
    try:
        import mlx.core  # noqa: F401
    except Exception as exc:  # ImportError, or a broken native library
        return False, f"MLX is not usable here ({exc})"
    if importlib.util.find_spec("mlx_audio") is None:
        return False, "mlx-audio is not installed (pip install -e '.[csm]')"
    if settings.random_weights:
        return True, f"random weights requested (flavor {settings.random_weights}): nothing to download"
    from .loading import local_status

    return local_status(settings)
