"""`sesame-tts service install | uninstall | status | logs`: the CLI and the service manager.

Every launchctl/systemctl call goes through `call_manager()` (tests replace it); what is
installed comes from ops.service_units, health from ops.health_check and `logs` is
ops.log_viewer.
"""

from __future__ import annotations

import argparse
import os
import plistlib
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from sesame_server.ops.health_check import report_health
from sesame_server.ops.log_viewer import show_logs
from sesame_server.ops.service_units import LABEL, SERVICE_LOG_NAME, SYSTEMD_UNIT, Target, current_python


# -- the CLI ---------------------------------------------------------------------------------------
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
    """`sesame-tts service ...`: the exit status of the chosen subcommand."""
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
    if target.manager == "launchd" and call_manager(["launchctl", "print", _launchd_service()]).returncode == 0:
        call_manager(["launchctl", "bootout", _launchd_service()])  # reload a changed plist
    for cmd in commands:
        result = call_manager(cmd)
        if result.returncode != 0:
            if cmd[:2] == ["launchctl", "bootstrap"]:  # macOS before 10.11 / odd sessions
                result = call_manager(["launchctl", "load", "-w", str(target.unit_path)])
            if result.returncode != 0:
                print(f"sesame-tts: `{shlex.join(cmd)}` failed: {_output(result)}", file=sys.stderr)
                if target.manager == "systemd":
                    print("No systemd user session here? Start the server with `sesame-tts serve` instead.",
                          file=sys.stderr)
                return 1
    _print_control_help(target)
    if args.wait <= 0:
        return 0
    return report_health(settings, args.wait, host=host, port=port)


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
        call_manager(cmd)  # not loaded is fine: we are removing it anyway
    target.unit_path.unlink()
    if target.manager == "systemd":
        call_manager(["systemctl", "--user", "daemon-reload"])
    print(f"Removed {target.unit_path}; the service is stopped and will not start at login.")
    return 0


def status(args: argparse.Namespace, settings: Any, target: Target) -> int:
    if target.unit_path.exists():
        print(f"Service: installed ({target.unit_path}); {_manager_state(target)}")
    else:
        print("Service: not installed (`sesame-tts service install` installs it)")
    host, port = installed_address(target)
    return report_health(settings, args.wait, host=host, port=port)


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
        result = call_manager(["launchctl", "list", LABEL])
        if result.returncode != 0:
            return "not loaded"
        pid = next((line.split("=")[1].strip(" ;") for line in result.stdout.splitlines()
                    if '"PID"' in line), None)
        return f"loaded, running (pid {pid})" if pid else "loaded, not running"
    result = call_manager(["systemctl", "--user", "is-active", SYSTEMD_UNIT])
    return f"systemd says {result.stdout.strip() or _output(result)}"


def _print_control_help(target: Target) -> None:
    if target.manager == "launchd":
        print(f"Control it with: launchctl start|stop {LABEL}   (uninstall: sesame-tts service uninstall)")
    else:
        print(f"Control it with: systemctl --user start|stop|restart {SYSTEMD_UNIT}. It starts when you log in; "
              f"`loginctl enable-linger $USER` keeps it running while you are logged out.")


def call_manager(cmd: list[str]) -> subprocess.CompletedProcess[str]:
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
