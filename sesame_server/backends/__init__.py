"""Speech backends behind one contract (base.py), chosen through the registry (registry.py)."""

from sesame_server.backends.base import Backend, BackendError, BackendInfo, Block, Generation, Voice

__all__ = ["Backend", "BackendError", "BackendInfo", "Block", "Generation", "Voice"]
