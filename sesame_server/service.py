"""sesame-tts service install | uninstall | status | logs.

macOS: a launchd agent (~/Library/LaunchAgents/com.sesame-tts.server.plist) that starts at
login and is restarted 10 s after a crash. Linux: the same as a systemd user unit. Both run
this venv's python with `-m sesame_server serve`, so the service uses exactly what was
installed. The renderers are pure functions; every launchctl/systemctl call goes through
`service_manager()`.
"""

from __future__ import annotations

import argparse
import json
import os
import plistlib
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sesame_server.logs import LOG_FILE_NAME, format_human

LABEL = "com.sesame-tts.server"
SYSTEMD_UNIT = "sesame-tts.service"
SERVICE_LOG_NAME = "service.log"  # what the process prints (stdout/stderr), next to server.log
THROTTLE_SECONDS = 10
_SYSTEM_PATH = ("/opt/homebrew/bin", "/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin")


# -- rendering (pure) --------------------------------------------------------------------------
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


# -- the CLI -------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add install | uninstall | status | logs to the `service` subparser."""
    parser.add_argument("--manager", choices=("launchd", "systemd"),
                        help="service manager (default: launchd on macOS, systemd elsewhere)")
    sub = parser.add_subparsers(dest="service_command", metavar="{install,uninstall,status,logs}")
    sub.required = True

    install = sub.add_parser("install", help="install and start the service (starts at login, restarts on crash)")
    install.add_argument("--dry-run", "--print", dest="dry_run", action="store_true",
                         help="print the unit file and the commands; change nothing")
    install.add_argument("--host", help="interface the service listens on (default: HOST from the env file)")
    install.add_argument("--port", type=int, help="port the service listens on (default: PORT from the env file)")
    install.add_argument("--wait", type=float, default=120.0, metavar="SECONDS",
                         help="wait this long for /health to report ok (default 120; 0: don't wait)")

    uninstall = sub.add_parser("uninstall", help="stop the service and remove it")
    uninstall.add_argument("--dry-run", dest="dry_run", action="store_true", help="print what would be done")

    status = sub.add_parser("status", help="is the service installed and running, and is the server healthy")
    status.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                        help="wait up to this long for /health to report ok (default 30)")

    logs = sub.add_parser("logs", help="show the server log (CACHE_DIR/server.log)")
    logs.add_argument("-n", "--lines", type=int, default=50, help="how many lines (default 50)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("--json", action="store_true", help="print the raw JSON lines")
    logs.add_argument("--console", action="store_true",
                      help=f"show what the process printed ({SERVICE_LOG_NAME}: startup errors, crashes)")


def run(args: argparse.Namespace, settings: Any) -> int:
    target = Target.for_platform(getattr(args, "manager", None))
    command = args.service_command
    if command == "install":
        return install(args, settings, target)
    if command == "uninstall":
        return uninstall(args, target)
    if command == "status":
        return status(args, settings, target)
    return show_logs(args, settings)


def install(args: argparse.Namespace, settings: Any, target: Target) -> int:
    env_file = Path(os.path.abspath(getattr(args, "env_file", None) or ".env"))
    host = getattr(args, "host", None)
    port = getattr(args, "port", None)
    cache_dir = Path(settings.cache_dir).expanduser().absolute()
    text = target.render(python=current_python(), workdir=env_file.parent, cache_dir=cache_dir,
                         env_file=env_file, host=host, port=port)
    commands = _install_commands(target)
    if args.dry_run:
        print(f"# {target.unit_path}\n{text}")
        print("# then:\n" + "\n".join(shlex.join(c) for c in commands))
        return 0
    cache_dir.mkdir(parents=True, exist_ok=True)
    target.unit_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(target.unit_path, text)
    print(f"Wrote {target.unit_path}")
    if target.manager == "launchd" and service_manager(["launchctl", "print", _launchd_service()]).returncode == 0:
        service_manager(["launchctl", "bootout", _launchd_service()])  # reload a changed plist
    for cmd in commands:
        result = service_manager(cmd)
        if result.returncode != 0:
            if cmd[:2] == ["launchctl", "bootstrap"]:  # macOS before 10.11 / odd sessions
                result = service_manager(["launchctl", "load", "-w", str(target.unit_path)])
            if result.returncode != 0:
                print(f"sesame-tts: `{shlex.join(cmd)}` failed: {_output(result)}", file=sys.stderr)
                if target.manager == "systemd":
                    print("No systemd user session here? Start the server with `sesame-tts serve` instead.",
                          file=sys.stderr)
                return 1
    _print_control_help(target)
    if args.wait <= 0:
        return 0
    return _report_health(settings, args.wait, host=host, port=port)


def _install_commands(target: Target) -> list[list[str]]:
    if target.manager == "launchd":
        return [["launchctl", "enable", _launchd_service()],  # undo an earlier `unload -w`
                ["launchctl", "bootstrap", _launchd_domain(), str(target.unit_path)]]
    return [["systemctl", "--user", "daemon-reload"],
            ["systemctl", "--user", "enable", SYSTEMD_UNIT],
            ["systemctl", "--user", "restart", SYSTEMD_UNIT]]


def uninstall(args: argparse.Namespace, target: Target) -> int:
    if target.manager == "launchd":
        commands = [["launchctl", "bootout", _launchd_service()]]
    else:
        commands = [["systemctl", "--user", "disable", "--now", SYSTEMD_UNIT]]
    if args.dry_run:
        print("\n".join(shlex.join(c) for c in commands) + f"\nrm {target.unit_path}")
        return 0
    if not target.unit_path.exists():
        print(f"The service is not installed ({target.unit_path} does not exist).")
        return 0
    for cmd in commands:
        service_manager(cmd)  # not loaded is fine: we are removing it anyway
    target.unit_path.unlink()
    if target.manager == "systemd":
        service_manager(["systemctl", "--user", "daemon-reload"])
    print(f"Removed {target.unit_path}; the service is stopped and will not start at login.")
    return 0


def status(args: argparse.Namespace, settings: Any, target: Target) -> int:
    if target.unit_path.exists():
        print(f"Service: installed ({target.unit_path}); {_manager_state(target)}")
    else:
        print("Service: not installed (`sesame-tts service install` installs it)")
    host, port = installed_address(target)
    return _report_health(settings, args.wait, host=host, port=port)


def installed_address(target: Target) -> tuple[str | None, int | None]:
    """--host/--port baked into the installed unit, if any: the service listens there."""
    try:
        if target.manager == "launchd":
            args = plistlib.loads(target.unit_path.read_bytes())["ProgramArguments"]
        else:
            line = next(l for l in target.unit_path.read_text().splitlines() if l.startswith("ExecStart="))
            args = shlex.split(line.split("=", 1)[1])
    except (OSError, ValueError, KeyError, StopIteration, plistlib.InvalidFileException):
        return None, None
    host = args[args.index("--host") + 1] if "--host" in args[:-1] else None
    port = int(args[args.index("--port") + 1]) if "--port" in args[:-1] else None
    return host, port


def _manager_state(target: Target) -> str:
    if target.manager == "launchd":
        result = service_manager(["launchctl", "list", LABEL])
        if result.returncode != 0:
            return "not loaded"
        pid = next((line.split("=")[1].strip(" ;") for line in result.stdout.splitlines()
                    if '"PID"' in line), None)
        return f"loaded, running (pid {pid})" if pid else "loaded, not running"
    result = service_manager(["systemctl", "--user", "is-active", SYSTEMD_UNIT])
    return f"systemd says {result.stdout.strip() or _output(result)}"


def _print_control_help(target: Target) -> None:
    if target.manager == "launchd":
        print(f"Control it with: launchctl start|stop {LABEL}   (uninstall: sesame-tts service uninstall)")
    else:
        print(f"Control it with: systemctl --user start|stop|restart {SYSTEMD_UNIT}. It starts when you log in; "
              f"`loginctl enable-linger $USER` keeps it running while you are logged out.")


def service_manager(cmd: list[str]) -> subprocess.CompletedProcess:
    """The one door to launchctl/systemctl. A missing tool is a failed result, not a crash."""
    if shutil.which(cmd[0]) is None:
        return subprocess.CompletedProcess(cmd, 127, "", f"{cmd[0]} not found")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def _launchd_domain() -> str:
    return f"gui/{os.getuid()}"


def _launchd_service() -> str:
    return f"{_launchd_domain()}/{LABEL}"


def _output(result: subprocess.CompletedProcess) -> str:
    return (result.stderr or result.stdout or f"exit status {result.returncode}").strip()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


# -- health ------------------------------------------------------------------------------------
def health_url(host: str, port: int) -> str:
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


def _report_health(settings: Any, wait: float, *, host: str | None = None, port: int | None = None) -> int:
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


# -- logs --------------------------------------------------------------------------------------
def show_logs(args: argparse.Namespace, settings: Any) -> int:
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
                pass  # not one of ours: print as is
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
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[-count:]


def follow(path: Path, interval: float = 0.5):
    """New lines as they are written; survives rotation (the file is replaced)."""
    handle = open(path, "r", encoding="utf-8", errors="replace")
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
                    handle = open(path, "r", encoding="utf-8", errors="replace")
                    inode = os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                pass
    finally:
        handle.close()
