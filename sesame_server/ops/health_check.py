"""Is the server up? GET /health, polled until it answers ok or error, then one summary."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any


def health_url(host: str, port: int) -> str:
    """Where to ask a server listening on host:port (a wildcard address is asked over loopback)."""
    if host in ("0.0.0.0", "", "*"):
        host = "127.0.0.1"  # listening everywhere: ask over loopback
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/health"


def check_health(url: str, timeout: float = 5.0) -> tuple[str, dict | None]:
    """One GET /health: (status, body), status being ok | loading | error | unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:  # 503 while loading: the body still says why
        try:
            body = json.loads(exc.read() or b"{}")
        except ValueError:
            return "error", None
    except (OSError, ValueError):
        return "unreachable", None
    return str(body.get("status", "error")), body


def wait_for_health(url: str, timeout: float, interval: float = 0.5) -> tuple[str, dict | None]:
    """Poll /health until it says ok or error, or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        state, body = check_health(url)
        if state in ("ok", "error") or time.monotonic() >= deadline:
            return state, body
        time.sleep(interval)


def report_health(settings: Any, wait: float, *, host: str | None = None, port: int | None = None) -> int:
    """Wait up to `wait` s for /health, print one summary; 0 when the server is ok."""
    url = health_url(host or settings.host, port if port is not None else settings.port)
    state, body = wait_for_health(url, wait)
    if state == "ok" and body is not None:
        model = body.get("model") or {}
        print(f"Server: ok at {url.removesuffix('/health')} — {body.get('backend')} backend, "
              f"model {'loaded' if model.get('loaded') else 'unloaded'}, queue {body.get('queue_depth')}, "
              f"{body.get('requests_served')} requests served, up {body.get('uptime_seconds')} s")
        return 0
    if state == "unreachable":
        print(f"Server: not reachable at {url}" + (f" after {wait:.0f} s" if wait else ""))
    else:
        detail = f": {body.get('error')}" if body and body.get("error") else ""
        print(f"Server: {state} at {url}{detail}")
    print("See `sesame-tts service logs` (and `--console` for startup errors).")
    return 1
