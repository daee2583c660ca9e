"""CsmTorchBackend: the same orchestration as the MLX backend (backends/csm/backend.py), on
the PyTorch runtime."""

from __future__ import annotations

from sesame_server.audio.units import SAMPLE_RATE
from sesame_server.backends.base import BackendInfo
from sesame_server.backends.csm.backend import CsmBackend


class CsmTorchBackend(CsmBackend):
    info = BackendInfo(name="csm-torch", sample_rate=SAMPLE_RATE, can_clone=True, uses_context=True)
    summary = "CSM (torch)"

    def _runtime_type(self) -> type:
        from .runtime import TorchRuntime

        return TorchRuntime
