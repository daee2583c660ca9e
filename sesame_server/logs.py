"""Logging setup (human-readable on a terminal)."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    if any(getattr(h, "_sesame", False) for h in root.handlers):
        root.setLevel(level)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    handler._sesame = True  # noqa: SLF001 - marks our handler so setup is idempotent
    root.addHandler(handler)
    root.setLevel(level)
