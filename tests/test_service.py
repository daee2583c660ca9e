"""sesame-tts service: the launchd plist and systemd unit render right; install/uninstall/status/logs
do what they say without touching the real launchctl/systemctl."""

from __future__ import annotations

import argparse
import json
import plistlib
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from sesame_server.config import Settings
from sesame_server.ops import log_viewer, service_manager
from sesame_server.ops.health_check import health_url
from sesame_server.ops.service_units import LABEL, Target, current_python, plist_dict, render_plist, render_systemd_unit
from tests.fakes import FakeBackend

TEMPLATE = Path(__file__).resolve().parent.parent / "etc" / "launchd" / "com.sesame-tts.server.plist"


@pytest.fixture
def paths(tmp_path) -> dict:
    checkout = tmp_path / "my projects" / "sesame-tts-server"  # a space, as in real home folders
    return dict(python=checkout / ".venv" / "bin" / "python", workdir=checkout,
                cache_dir=tmp_path / "cache", env_file=checkout / ".env")


def test_plist_is_valid_xml_and_parses(paths):
    text = render_plist(**paths, port=8890)
    ET.fromstring(text.encode())  # well-formed XML
    plist = plistlib.loads(text.encode())
    assert plist["Label"] == LABEL == "com.sesame-tts.server"
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False, "Crashed": True}
    assert plist["ThrottleInterval"] == 10
    args = plist["ProgramArguments"]
    assert args[0] == str(paths["python"]) and Path(args[0]).is_absolute()
    assert args[1:3] == ["-m", "sesame_server"]
    assert args[args.index("--env-file") + 1] == str(paths["env_file"])
    assert args[args.index("serve") + 1:] == ["--port", "8890"]
    for key in ("StandardOutPath", "StandardErrorPath"):
        assert Path(plist[key]).is_absolute() and Path(plist[key]).parent == paths["cache_dir"]
    assert plist["WorkingDirectory"] == str(paths["workdir"])
    env = plist["EnvironmentVariables"]
    assert env["CACHE_DIR"] == str(paths["cache_dir"])
    assert env["PATH"].split(":")[0] == str(paths["python"].parent)


def test_plist_escapes_xml_special_characters(tmp_path):
    odd = tmp_path / "R&D <voices>"
    text = render_plist(python=odd / "bin" / "python", workdir=odd, cache_dir=odd / "cache", env_file=odd / ".env")
    assert plistlib.loads(text.encode())["WorkingDirectory"] == str(odd)


def test_relative_paths_are_refused(paths):
    with pytest.raises(ValueError, match="python"):
        render_plist(**{**paths, "python": Path(".venv/bin/python")})
    with pytest.raises(ValueError, match="cache_dir"):
        render_systemd_unit(**{**paths, "cache_dir": Path("cache")})


def test_template_in_etc_matches_what_install_renders():
    template = plistlib.loads(TEMPLATE.read_bytes())
    rendered = plist_dict(python=Path("/ABSOLUTE/PATH/TO/VENV/bin/python"),
                          workdir=Path("/ABSOLUTE/PATH/TO/sesame-tts-server"),
                          cache_dir=Path("/Users/YOU/.cache/sesame-tts"),
                          env_file=Path("/ABSOLUTE/PATH/TO/sesame-tts-server/.env"))
    assert template == rendered, "etc/launchd template and service_units.plist_dict() disagree: update both"


def unit_values(text: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            values.setdefault(key, []).append(value)
    return values


def test_systemd_unit(paths):
    text = render_systemd_unit(**paths, host="127.0.0.1", port=8890)
    assert "[Unit]" in text and "[Service]" in text and "[Install]" in text
    values = unit_values(text)
    assert values["Restart"] == ["on-failure"]
    assert values["RestartSec"] == ["10"]
    assert values["WantedBy"] == ["default.target"]
    exec_start = shlex.split(values["ExecStart"][0])
    assert exec_start[0] == str(paths["python"]) and Path(exec_start[0]).is_absolute()
    assert exec_start[1:3] == ["-m", "sesame_server"]
    assert exec_start[exec_start.index("serve") + 1:] == ["--host", "127.0.0.1", "--port", "8890"]
    assert shlex.split(values["WorkingDirectory"][0]) == [str(paths["workdir"])]
    environment = dict(shlex.split(v)[0].split("=", 1) for v in values["Environment"])
    assert environment["CACHE_DIR"] == str(paths["cache_dir"])


def test_systemd_escapes_percent(tmp_path):
    odd = tmp_path / "100%"
    text = render_systemd_unit(python=odd / "python", workdir=odd, cache_dir=odd, env_file=odd / ".env")
    assert "100%%" in text and "100%/" not in text


# -- the command ----------------------------------------------------------------------------------
def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env-file", default=".env")
    service_manager.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture
def manager_calls(monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []

    def fake(cmd):
        calls.append(cmd)
        import subprocess
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(service_manager, "call_manager", fake)
    return calls


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def settings_for(tmp_path, **changes) -> Settings:
    return Settings(cache_dir=tmp_path / "cache", port=1).replace(**changes)


@pytest.mark.parametrize("manager", ["launchd", "systemd"])
def test_install_dry_run_prints_and_changes_nothing(manager, tmp_path, home, manager_calls, capsys):
    args = parse("--env-file", str(tmp_path / ".env"), "--manager", manager, "install", "--dry-run")
    assert service_manager.run(args, settings_for(tmp_path)) == 0
    out = capsys.readouterr().out
    assert ("com.sesame-tts.server" if manager == "launchd" else "ExecStart=") in out
    assert manager_calls == [] and not list(home.rglob("*"))
    assert ("launchctl bootstrap" if manager == "launchd" else "systemctl --user enable") in out


def test_systemd_install_writes_the_unit_and_enables_it(tmp_path, home, manager_calls, capsys):
    args = parse("--env-file", str(tmp_path / ".env"), "--manager", "systemd", "install", "--wait", "0",
                 "--port", "8891")
    assert service_manager.run(args, settings_for(tmp_path)) == 0
    unit = home / ".config" / "systemd" / "user" / "sesame-tts.service"
    assert "--port 8891" in unit.read_text()
    assert ["systemctl", "--user", "enable", "sesame-tts.service"] in manager_calls
    assert manager_calls[-1] == ["systemctl", "--user", "restart", "sesame-tts.service"]
    assert (tmp_path / "cache").is_dir()  # launchd would not create the log directory itself

    manager_calls.clear()
    assert service_manager.run(parse("--manager", "systemd", "uninstall"), settings_for(tmp_path)) == 0
    assert not unit.exists()
    assert ["systemctl", "--user", "disable", "--now", "sesame-tts.service"] in manager_calls


def test_launchd_install_bootstraps_the_agent(tmp_path, home, manager_calls):
    args = parse("--env-file", str(tmp_path / ".env"), "--manager", "launchd", "install", "--wait", "0",
                 "--port", "8892")
    assert service_manager.run(args, settings_for(tmp_path)) == 0
    plist_path = home / "Library" / "LaunchAgents" / "com.sesame-tts.server.plist"
    plist = plistlib.loads(plist_path.read_bytes())
    assert plist["ProgramArguments"][0] == str(current_python())
    assert plist["StandardOutPath"] == str(tmp_path / "cache" / "service.log")
    assert any(cmd[:2] == ["launchctl", "bootstrap"] and cmd[-1] == str(plist_path) for cmd in manager_calls)
    # status asks the port the installed agent listens on, not the env file's
    assert service_manager.installed_address(Target.for_platform("launchd", home)) == (None, 8892)


def test_installed_address_of_a_systemd_unit(tmp_path, paths):
    target = Target.for_platform("systemd", tmp_path)
    assert service_manager.installed_address(target) == (None, None)
    target.unit_path.parent.mkdir(parents=True)
    target.unit_path.write_text(render_systemd_unit(**paths, host="0.0.0.0", port=9001))
    assert service_manager.installed_address(target) == ("0.0.0.0", 9001)


def test_install_reports_a_failing_service_manager(tmp_path, home, monkeypatch, capsys):
    import subprocess
    monkeypatch.setattr(service_manager, "call_manager",
                        lambda cmd: subprocess.CompletedProcess(cmd, 1, "", "Failed to connect to bus"))
    args = parse("--env-file", str(tmp_path / ".env"), "--manager", "systemd", "install", "--wait", "0")
    assert service_manager.run(args, settings_for(tmp_path)) == 1
    assert "Failed to connect to bus" in capsys.readouterr().err


def test_uninstall_when_not_installed_is_fine(tmp_path, home, manager_calls):
    assert service_manager.run(parse("--manager", "launchd", "uninstall"), settings_for(tmp_path)) == 0
    assert manager_calls == []


def test_service_manager_without_the_tool_is_a_failed_result():
    result = service_manager.call_manager(["no-such-launchctl-here", "list"])
    assert result.returncode == 127


def test_target_paths(tmp_path):
    assert Target.for_platform("launchd", tmp_path).unit_path == \
        tmp_path / "Library/LaunchAgents/com.sesame-tts.server.plist"
    assert Target.for_platform("systemd", tmp_path).unit_path == tmp_path / ".config/systemd/user/sesame-tts.service"


# -- status: waits on /health ------------------------------------------------------------------------
def test_health_url():
    assert health_url("127.0.0.1", 8880) == "http://127.0.0.1:8880/health"
    assert health_url("0.0.0.0", 8880) == "http://127.0.0.1:8880/health"
    assert health_url("::", 8880) == "http://[::1]:8880/health"


def test_status_reports_a_healthy_server(tmp_path, home, manager_calls, capsys):
    from tests.live import live_server

    with live_server(settings_for(tmp_path, threads=2), backend=FakeBackend()) as live:
        port = int(live.url.rsplit(":", 1)[1])
        code = service_manager.run(parse("--manager", "systemd", "status", "--wait", "10"),
                           settings_for(tmp_path, host="127.0.0.1", port=port))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "not installed" in out and "Server: ok" in out and "fake backend" in out


def test_status_without_a_server_fails_fast(tmp_path, home, manager_calls, capsys):
    from sesame_server.server import next_free_port

    settings = settings_for(tmp_path, host="127.0.0.1", port=next_free_port("127.0.0.1", 20000))
    assert service_manager.run(parse("--manager", "systemd", "status", "--wait", "0"), settings) == 1
    assert "not reachable" in capsys.readouterr().out


# -- logs ---------------------------------------------------------------------------------------------
def write_log(cache: Path, entries: list[dict]) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "server.log").write_text("".join(json.dumps(e) + "\n" for e in entries))


def test_logs_prints_human_lines_and_raw_json(tmp_path, capsys):
    entries = [{"ts": "2025-01-01T10:00:00.000Z", "level": "INFO", "logger": "sesame_server.requests",
                "message": f"POST /v1/audio/speech 200 #{n}"} for n in range(5)]
    entries.append({"ts": "2025-01-01T10:00:01.000Z", "level": "ERROR", "logger": "x", "message": "broke",
                    "exc_info": "Traceback (most recent call last):\nValueError: bad"})
    write_log(tmp_path / "cache", entries)
    settings = settings_for(tmp_path)
    assert service_manager.run(parse("logs", "-n", "3"), settings) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("#3") and "ERROR" in out[2] and out[-1] == "ValueError: bad"
    assert service_manager.run(parse("logs", "-n", "1", "--json"), settings) == 0
    assert json.loads(capsys.readouterr().out)["message"] == "broke"


def test_logs_without_a_log(tmp_path, capsys):
    assert service_manager.run(parse("logs"), settings_for(tmp_path)) == 1
    assert "No log yet" in capsys.readouterr().err


def test_tail_lines_reads_big_files_from_the_end(tmp_path):
    path = tmp_path / "big.log"
    path.write_text("".join(f"line {n} {'x' * 100}\n" for n in range(20000)))
    assert [line.split()[1] for line in log_viewer.tail_lines(path, 3)] == ["19997", "19998", "19999"]
    assert log_viewer.tail_lines(path, 0) == []
