"""Files read back from disk that other processes write (a shared VOICES_DIR): read as a
stranger's. Opened without blocking and checked with fstat, so a FIFO or a device in a
file's place is refused at once instead of hanging the thread; read only up to a limit, so
a file that claims or grows to gigabytes costs nothing."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class UnsafeFile(ValueError):
    """A stored file we will not read (what it is, how big); the message names the file, never
    its path, so it may reach /health and error bodies."""


def read_stored(path: Path, max_bytes: int) -> bytes:
    """The whole of a regular file of at most `max_bytes`; UnsafeFile or OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFile(f"{path.name} is not a regular file")
        if info.st_size > max_bytes:
            raise UnsafeFile(f"{path.name} is larger than {max_bytes // 1024} KiB")
        chunks, total = [], 0
        while chunk := os.read(fd, max_bytes + 1 - total):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:  # grew since fstat: refused, not cut
                raise UnsafeFile(f"{path.name} is larger than {max_bytes // 1024} KiB")
        return b"".join(chunks)
    finally:
        os.close(fd)
