"""BACKEND=auto|<name> turned into a backend: the first in REGISTRY that suits this machine."""

from __future__ import annotations

import logging

from sesame_server.backends.base import Backend, BackendError
from sesame_server.backends.registry import REGISTRY, plugin
from sesame_server.config import Settings

log = logging.getLogger(__name__)


def _available(name: str, settings: Settings, *, auto: bool) -> tuple[bool, str]:
    try:
        return plugin(name).available(settings, auto=auto)
    except ImportError as exc:
        from sesame_server.ops.advice import missing_dependency

        return False, missing_dependency(exc, REGISTRY[name].summary)


def create_backend(settings: Settings) -> Backend:
    """The backend BACKEND names; `auto` takes the first in REGISTRY that suits this machine."""
    choice = settings.backend
    if settings.random_weights and choice == "auto":
        choice = "csm"  # random weights only exist for csm
    if choice == "auto":
        reasons = []
        for name in REGISTRY:
            ok, reason = _available(name, settings, auto=True)
            if ok:
                log.info("Backend auto → %s: %s", name, reason)
                choice = name
                break
            reasons.append(f"{name}: {reason}")
        else:
            raise BackendError("No backend can run here: " + "; ".join(reasons))
        if reasons:
            log.info("Backends passed over: %s", "; ".join(reasons))
    ok, reason = _available(choice, settings, auto=False)
    if not ok:
        raise BackendError(f"BACKEND={choice} cannot run: {reason}")
    return plugin(choice).create(settings)
