"""The one memory probe: this process's resident memory, its peak, and the machine's.

Every figure is in bytes (int), or None where the platform cannot tell. /health, the
metrics collectors and the out-of-memory advice all read memory here, so they agree.
"""

from __future__ import annotations

import resource
import sys

import psutil

# Each probe makes a fresh psutil.Process() (cheap): one made at import would go on
# measuring the parent in a forked child.


def rss_bytes() -> int | None:
    """Resident memory of this process now."""
    try:
        return int(psutil.Process().memory_info().rss)
    except (psutil.Error, OSError):
        return None


def virtual_bytes() -> int | None:
    """Virtual memory size of this process now."""
    try:
        return int(psutil.Process().memory_info().vms)
    except (psutil.Error, OSError):
        return None


def peak_rss_bytes() -> int | None:
    """Highest resident memory of this process since it started.

    psutil has no peak on Linux or macOS, so this is getrusage's ru_maxrss, whose unit
    differs: bytes on macOS, KiB on Linux.
    """
    try:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (OSError, ValueError):
        return rss_bytes()
    peak_bytes = peak if sys.platform == "darwin" else peak * 1024
    now = rss_bytes()
    return max(peak_bytes, now) if now is not None else peak_bytes


def system_memory() -> tuple[int | None, int | None]:
    """(total, available) bytes of the machine; "available" counts reclaimable caches."""
    try:
        memory = psutil.virtual_memory()
    except (psutil.Error, OSError):
        return None, None
    return int(memory.total), int(memory.available)


def format_bytes(nbytes: int) -> str:
    """Memory as people read it (binary units, as the OS's memory figures are)."""
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"
