"""What the login service is: the launchd plist and systemd user unit, rendered as text.

macOS: a launchd agent (~/Library/LaunchAgents/com.sesame-tts.server.plist) that starts at
login and is restarted 10 s after a crash. Linux: the same as a systemd user unit. Both run
this venv's python with `-m sesame_server serve`, so the service uses exactly what was
installed. Pure functions: nothing here runs launchctl/systemctl (ops.service_manager does).
"""

from __future__ import annotations

import os
import plistlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LABEL = "com.sesame-tts.server"
SYSTEMD_UNIT = "sesame-tts.service"
SERVICE_LOG_NAME = "service.log"  # what the process prints (stdout/stderr), next to server.log
THROTTLE_SECONDS = 10
_SYSTEM_PATH = ("/opt/homebrew/bin", "/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin")


# -- rendering ---------------------------------------------------------------------------------
def program_arguments(python: Path, env_file: Path, host: str | None = None, port: int | None = None) -> list[str]:
    args = [str(python), "-m", "sesame_server", "--env-file", str(env_file), "serve"]
    if host:
        args += ["--host", host]
    if port is not None:
        args += ["--port", str(port)]
    return args


def service_environment(python: Path, cache_dir: Path) -> dict[str, str]:
    # CACHE_DIR is pinned so the service logs where `service logs` looks; every other
    # setting stays in the env file, where the operator edits it.
    path = ":".join(dict.fromkeys([str(python.parent), *_SYSTEM_PATH]))
    return {"PATH": path, "PYTHONUNBUFFERED": "1", "CACHE_DIR": str(cache_dir)}


def plist_dict(*, python: Path, workdir: Path, cache_dir: Path, env_file: Path,
               host: str | None = None, port: int | None = None) -> dict[str, Any]:
    return {
        "Label": LABEL,
        "ProgramArguments": program_arguments(python, env_file, host, port),
        "WorkingDirectory": str(workdir),
        "EnvironmentVariables": service_environment(python, cache_dir),
        "RunAtLoad": True,  # start at login
        # Restart after a crash, not after a clean exit: `launchctl stop` (SIGTERM → exit 0)
        # then really stops it.
        "KeepAlive": {"SuccessfulExit": False, "Crashed": True},
        "ThrottleInterval": THROTTLE_SECONDS,
        "ProcessType": "Interactive",  # speech latency matters: no background throttling
        "StandardOutPath": str(cache_dir / SERVICE_LOG_NAME),
        "StandardErrorPath": str(cache_dir / SERVICE_LOG_NAME),
    }


def render_plist(*, python: Path, workdir: Path, cache_dir: Path, env_file: Path,
                 host: str | None = None, port: int | None = None) -> str:
    """The launchd agent plist (XML). All paths must be absolute."""
    _require_absolute(python=python, workdir=workdir, cache_dir=cache_dir, env_file=env_file)
    spec = plist_dict(python=python, workdir=workdir, cache_dir=cache_dir, env_file=env_file, host=host, port=port)
    return plistlib.dumps(spec, sort_keys=False).decode("utf-8")


def render_systemd_unit(*, python: Path, workdir: Path, cache_dir: Path, env_file: Path,
                        host: str | None = None, port: int | None = None) -> str:
    """The systemd user unit. All paths must be absolute."""
    _require_absolute(python=python, workdir=workdir, cache_dir=cache_dir, env_file=env_file)
    env = service_environment(python, cache_dir)
    exec_start = " ".join(_systemd_quote(a) for a in program_arguments(python, env_file, host, port))
    lines = [
        "# Rendered by `sesame-tts service install`; re-run it after moving the checkout or venv.",
        "[Unit]",
        "Description=Sesame TTS server (OpenAI/ElevenLabs-compatible text-to-speech)",
        "After=network.target",
        # At most 3 restarts in 2 minutes: a crash loop (bad config, port taken) stops
        # instead of spinning; `systemctl --user reset-failed` clears it.
        "StartLimitIntervalSec=120",
        "StartLimitBurst=3",
        "",
        "[Service]",
        "Type=simple",
        f"WorkingDirectory={_systemd_quote(str(workdir))}",
        *(f"Environment={_systemd_quote(f'{key}={value}')}" for key, value in env.items()),
        f"ExecStart={exec_start}",
        "Restart=on-failure",
        f"RestartSec={THROTTLE_SECONDS}",
        "TimeoutStopSec=20",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ]
    return "\n".join(lines)


def _require_absolute(**paths: Path) -> None:
    for name, path in paths.items():
        if not Path(path).is_absolute():
            raise ValueError(f"{name} must be an absolute path (got {path})")


def _systemd_quote(value: str) -> str:
    value = value.replace("%", "%%")  # systemd expands %-specifiers
    if any(c in value for c in " \t\"'\\;$"):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


# -- where things go -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    manager: str  # launchd | systemd
    unit_path: Path

    @classmethod
    def for_platform(cls, manager: str | None = None, home: Path | None = None) -> "Target":
        manager = manager or ("launchd" if sys.platform == "darwin" else "systemd")
        home = home or Path.home()
        if manager == "launchd":
            return cls(manager, home / "Library" / "LaunchAgents" / f"{LABEL}.plist")
        return cls(manager, home / ".config" / "systemd" / "user" / SYSTEMD_UNIT)

    def render(self, **paths: Any) -> str:
        return render_plist(**paths) if self.manager == "launchd" else render_systemd_unit(**paths)


def current_python() -> Path:
    """This interpreter, as the venv names it. Not resolved: resolving a venv's python
    symlink would point the service at the base interpreter, outside the venv."""
    return Path(os.path.abspath(sys.executable))
