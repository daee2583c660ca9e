"""Backend selection: BACKEND=auto|csm|piper."""

from __future__ import annotations

import logging
import platform

from sesame_server.backends.base import Backend, BackendError, Voice
from sesame_server.config import Settings
from sesame_server.failures import missing_dependency

log = logging.getLogger(__name__)

__all__ = ["Backend", "BackendError", "Voice", "create_backend"]


def _csm_available(settings: Settings) -> tuple[bool, str]:
    try:
        from sesame_server.backends.csm import csm_available
    except ImportError as exc:
        return False, missing_dependency(exc, "the CSM voice")
    return csm_available(settings)


def create_backend(settings: Settings) -> Backend:
    """The backend BACKEND names; `auto` prefers csm where MLX and weights are usable."""
    choice = settings.backend
    if settings.random_weights and choice == "auto":
        choice = "csm"
    if choice == "auto":
        ok, reason = _csm_available(settings)
        apple_silicon = platform.system() == "Darwin" and platform.machine() == "arm64"
        if ok and (apple_silicon or settings.model_path is not None):
            choice = "csm"
            log.info("Backend auto → csm: %s", reason)
        else:
            choice = "piper"
            why = reason if not ok else "not Apple Silicon (CSM on a CPU is far slower than real time)"
            log.info("Backend auto → piper (embedded voice): csm not used because %s", why)
    if choice == "csm":
        ok, reason = _csm_available(settings)
        if not ok:
            raise BackendError(f"BACKEND=csm but CSM cannot run: {reason}")
        from sesame_server.backends.csm import CsmBackend

        return CsmBackend(settings)
    from sesame_server.backends.piper import PiperBackend, piper_available

    ok, reason = piper_available()
    if not ok:
        raise BackendError(f"The embedded voice cannot run: {reason}")
    return PiperBackend()
