"""The backends this server knows (selection.py turns BACKEND into one of them).

Each entry names a plugin module that provides:
  available(settings, *, auto) -> (bool, reason)  cheap, never touches the network; with
                                                   `auto`, also whether it suits this machine
  create(settings) -> Backend
Config validation (BACKEND) and the CLI's --backend choices come from REGISTRY.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class BackendEntry:
    name: str
    module: str  # import path of the plugin module
    summary: str


# In order of preference for BACKEND=auto.
REGISTRY: dict[str, BackendEntry] = {
    "csm": BackendEntry("csm", "sesame_server.backends.csm", "Sesame CSM-1B on MLX (Apple Silicon)"),
    "csm-torch": BackendEntry("csm-torch", "sesame_server.backends.csm_torch",
                              "Sesame CSM-1B on PyTorch (NVIDIA CUDA; CPU for tests and tools)"),
    "piper": BackendEntry("piper", "sesame_server.backends.piper", "the embedded Piper voice (any CPU)"),
}
BACKEND_CHOICES: tuple[str, ...] = ("auto", *REGISTRY)


def plugin(name: str) -> ModuleType:
    """A backend's plugin module (imported on first use: MLX is heavy)."""
    return importlib.import_module(REGISTRY[name].module)
