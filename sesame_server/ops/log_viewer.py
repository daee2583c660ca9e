"""`sesame-tts service logs`: the tail of server.log as human lines (or raw), optionally followed."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from sesame_server.ops.logs import LOG_FILE_NAME, escape_control, format_human
from sesame_server.ops.service_units import SERVICE_LOG_NAME


def show_logs(args: argparse.Namespace, settings: Any) -> int:
    """Print the last --lines of server.log (or service.log with --console); -f keeps following."""
    cache_dir = Path(settings.cache_dir).expanduser()
    path = cache_dir / (SERVICE_LOG_NAME if args.console else LOG_FILE_NAME)
    if not path.exists():
        print(f"No log yet at {path}.", file=sys.stderr)
        return 1
    raw = args.json or args.console

    def emit(line: str) -> None:
        line = line.rstrip("\n")
        if not raw:
            try:
                line = format_human(json.loads(line))
            except (ValueError, AttributeError):
                line = escape_control(line)  # not one of ours: printed, on one line
        print(line, flush=True)

    for line in tail_lines(path, args.lines):
        emit(line)
    if args.follow:
        try:
            for line in follow(path):
                emit(line)
        except KeyboardInterrupt:
            pass
    return 0


def tail_lines(path: Path, count: int) -> list[str]:
    """The last `count` lines of a file, reading it from the end (logs can be large)."""
    if count <= 0:
        return []
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        end = handle.tell()
        block = 64 * 1024
        data = b""
        position = end
        while position > 0 and data.count(b"\n") <= count:
            position = max(0, position - block)
            handle.seek(position)
            data = handle.read(end - position)
    # Split at "\n" only: str.splitlines() also breaks at U+2028, NEL and other characters a
    # JSON line may hold as they are (a client's text), and would print the pieces raw.
    lines = data.decode("utf-8", errors="replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines[-count:]


def follow(path: Path, interval: float = 0.5) -> Iterator[str]:
    """New lines as they are written; survives rotation (the file is replaced)."""
    handle = open(path, "r", encoding="utf-8", errors="replace", newline="\n")
    handle.seek(0, os.SEEK_END)
    inode = os.fstat(handle.fileno()).st_ino
    try:
        while True:
            line = handle.readline()
            if line:
                yield line
                continue
            time.sleep(interval)
            try:
                if os.stat(path).st_ino != inode:  # rotated: read the new file from the start
                    handle.close()
                    handle = open(path, "r", encoding="utf-8", errors="replace", newline="\n")
                    inode = os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                pass
    finally:
        handle.close()
