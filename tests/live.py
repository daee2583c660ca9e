"""A real server on an ephemeral port, for tests: waitress + the app, in this process."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from sesame_server.app import create_app
from sesame_server.config import Settings
from sesame_server.engine.engine import Engine
from sesame_server.engine.job import Job
from sesame_server.runtime import EXTENSION
from sesame_server.server import make_server


@dataclass
class LiveServer:
    url: str
    app: object
    engine: Engine
    jobs: dict[str, Job] = field(default_factory=dict)  # finished jobs by request id
    finished: threading.Condition = field(default_factory=threading.Condition)

    def _record(self, job: Job) -> None:
        with self.finished:
            self.jobs[job.request.request_id] = job
            self.finished.notify_all()

    def job(self, request_id: str, timeout: float = 60.0) -> Job:
        """The finished job for a request id, waiting for the engine to finish it."""
        with self.finished:
            if not self.finished.wait_for(lambda: request_id in self.jobs, timeout):
                raise AssertionError(f"the engine never finished request {request_id}")
            return self.jobs[request_id]


@contextmanager
def live_server(settings: Settings, backend=None) -> Iterator[LiveServer]:
    app = create_app(settings, backend=backend)
    engine = app.extensions[EXTENSION].engine
    server = make_server(app, "127.0.0.1", 0, threads=settings.threads)
    def run() -> None:
        try:
            server.run()
        except OSError:  # closing waitress from this thread breaks its select(): expected
            pass

    thread = threading.Thread(target=run, name="waitress", daemon=True)
    thread.start()
    live = LiveServer(url=f"http://127.0.0.1:{server.effective_port}", app=app, engine=engine)
    app.extensions[EXTENSION].listening_on("127.0.0.1", server.effective_port)
    engine.on_job_done.append(live._record)
    try:
        assert engine.wait_ready(120), f"engine failed to load: {engine.load_error}"
        yield live
    finally:
        server.close()
        app.extensions[EXTENSION].close()
        thread.join(5)


@contextmanager
def cli_server(args: list[str], env: dict[str, str], timeout: float = 120.0) -> Iterator[str]:
    """`python -m sesame_server serve` as its own process on a free loopback port: yields its
    URL once /health answers 200; stopped with SIGTERM after, which must be a clean exit."""
    import socket
    import subprocess
    import sys


    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "sesame_server", *args, "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, server, timeout)
        yield url
    finally:
        server.terminate()
        assert server.wait(30) == 0, server.stderr.read()[-2000:]  # SIGTERM is a clean stop


def wait_ready(url: str, process, timeout: float = 120.0) -> None:
    """Until the server at `url` (run by `process`, a Popen) answers /ready with 200."""
    from sesame_server.bench_cluster import wait_ready as ready

    ready(url, process, timeout)
