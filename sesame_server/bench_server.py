"""The real server on a free loopback port, in this process, for `sesame-tts bench --transport`
and `--http` (waitress, the configured backend, warmed up before anything is timed)."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from sesame_server.config import Settings


@dataclass
class BenchServer:
    url: str
    runtime: object  # sesame_server.runtime.Runtime


@contextmanager
def local_server(settings: Settings) -> Iterator[BenchServer]:
    from sesame_server.app import create_app
    from sesame_server.runtime import EXTENSION
    from sesame_server.server import make_server

    settings = settings.replace(host="127.0.0.1", port=0, warmup_on_start=True, api_key=None)
    app = create_app(settings)
    rt = app.extensions[EXTENSION]
    server = make_server(app, "127.0.0.1", 0, threads=4)
    threading.Thread(target=_serve_quietly, args=(server,), name="waitress", daemon=True).start()
    try:
        if not rt.engine.wait_ready(1800):
            raise RuntimeError(f"the backend did not load: {rt.engine.load_error}")
        rt.listening_on("127.0.0.1", server.effective_port)
        yield BenchServer(f"http://127.0.0.1:{server.effective_port}", rt)
    finally:
        server.close()
        rt.close()


def _serve_quietly(server) -> None:
    try:
        server.run()
    except OSError:  # close() from another thread breaks waitress's select(): expected
        pass
