#!/usr/bin/env bash
# Install (or update) the Sesame TTS server from this checkout, start it and wait until
# /health says ok. Safe to run again: it reuses the venv, skips installs that are up to
# date, keeps your .env and restarts the server it started before.
#
#   bin/install.sh                 interactive
#   bin/install.sh --yes           no questions (CI); embedded voice unless on Apple Silicon
#   bin/install.sh --stop          stop the server a previous run started
#
# Written for bash 3.2 (macOS's /bin/bash): no mapfile, no ${x,,}, no empty-array expansion.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bin/install.sh [options]

  --yes, -y        answer every question with its default (non-interactive)
  --embedded       embedded Piper voice only: no MLX, no model download
                   (chosen automatically, with a message, when this is not Apple Silicon)
  --port N         port to serve on (written to .env as PORT)
  --venv DIR       virtualenv to create or reuse (default: .venv in the checkout)
  --python PATH    Python 3.10+ used to create the venv (default: python3)
  --service        install the login service (launchd on macOS, systemd --user on Linux)
  --no-service     do not ask about the service
  --no-start       install only; do not start the server
  --timeout S      seconds to wait for /health to report ok (default 300)
  --pip            install with pip even when uv is available
  --stop           stop the server a previous run started in the background, then exit
  -h, --help       this help
EOF
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
YES=0 EMBEDDED=0 PORT_ARG="" VENV="" PYTHON_BIN="python3" SERVICE="" START=1 TIMEOUT=300 USE_UV=1 STOP=0

while [ $# -gt 0 ]; do
  case "$1" in
    -y|--yes) YES=1 ;;
    --embedded) EMBEDDED=1 ;;
    --port) PORT_ARG="${2:?--port needs a number}"; shift ;;
    --port=*) PORT_ARG="${1#*=}" ;;
    --venv) VENV="${2:?--venv needs a directory}"; shift ;;
    --venv=*) VENV="${1#*=}" ;;
    --python) PYTHON_BIN="${2:?--python needs a path}"; shift ;;
    --service) SERVICE=yes ;;
    --no-service) SERVICE=no ;;
    --no-start) START=0 ;;
    --timeout) TIMEOUT="${2:?--timeout needs seconds}"; shift ;;
    --pip) USE_UV=0 ;;
    --stop) STOP=1 ;;
    -h|--help) usage; exit 0 ;;
    *) printf 'error: unknown option %s\n\n' "$1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

say() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ask QUESTION DEFAULT(y|n): the default when --yes or when nobody can answer (no tty).
ask() {
  local reply hint="y/N"
  [ "$2" = y ] && hint="Y/n"
  if [ "$YES" = 1 ] || [ ! -t 0 ]; then
    [ "$2" = y ]
    return
  fi
  read -r -p "$1 [$hint] " reply || reply=""
  reply="${reply:-$2}"
  case "$reply" in [Yy]*) return 0 ;; *) return 1 ;; esac
}

[ -f "$ROOT/setup.cfg" ] && [ -d "$ROOT/sesame_server" ] ||
  die "run this script from a checkout of sesame-tts-server (git clone it, then: bin/install.sh)"
cd "$ROOT"
case "$VENV" in
  "") VENV="$ROOT/.venv" ;;
  /*) ;;
  *) VENV="$ROOT/$VENV" ;;
esac
PY="$VENV/bin/python"
case "$PORT_ARG" in ""|*[!0-9]*) [ -z "$PORT_ARG" ] || die "--port must be a number (got $PORT_ARG)" ;; esac

# -- settings as the server will see them (environment + .env), via the server's own code --
read_settings() {
  local out
  out="$("$PY" - <<'EOF'
import os, shlex
from dotenv import dotenv_values
from sesame_server.config import load_settings
# The environment wins over .env, as in the server.
environ = {k: v for k, v in dotenv_values(".env").items() if v is not None} if os.path.isfile(".env") else {}
environ.update(os.environ)
s = load_settings(environ=environ)
print(f"S_CACHE_DIR={shlex.quote(str(s.cache_dir))} S_PORT={s.port} S_HOST={shlex.quote(s.host)}")
EOF
)" || die "the settings in .env are invalid (see above)"
  eval "$out"
  PIDFILE="$S_CACHE_DIR/server.pid"
  CONSOLE_LOG="$S_CACHE_DIR/service.log"
}

# -- the background server this script starts when there is no service ---------------------
is_our_server() {
  # Guards against a recycled pid: the process must be a sesame_server.
  ps -p "$1" -o command= 2>/dev/null | grep -q "sesame_server"
}

stop_server() {
  [ -f "$PIDFILE" ] || return 0
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && is_our_server "$pid"; then
    say "Stopping the server started by an earlier run (pid $pid)"
    kill "$pid" 2>/dev/null || true
    local waited=0
    # is_our_server, not kill -0: an exited server nobody reaped yet (a zombie) counts as gone.
    while is_our_server "$pid" && [ $waited -lt 150 ]; do sleep 0.1; waited=$((waited + 1)); done
    if is_our_server "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$PIDFILE"
}

service_unit_path() {
  if [ "$(uname -s)" = Darwin ]; then
    echo "$HOME/Library/LaunchAgents/com.sesame-tts.server.plist"
  else
    echo "$HOME/.config/systemd/user/sesame-tts.service"
  fi
}

if [ "$STOP" = 1 ]; then
  [ -x "$PY" ] || die "no virtualenv at $VENV: nothing was installed here"
  read_settings
  if [ -f "$PIDFILE" ]; then stop_server; say "Stopped"; else say "No server started by this script is running"; fi
  if [ -f "$(service_unit_path)" ]; then
    note "The login service is installed too: stop it with 'launchctl stop com.sesame-tts.server' (macOS),"
    note "'systemctl --user stop sesame-tts' (Linux), or remove it: $VENV/bin/sesame-tts service uninstall"
  fi
  exit 0
fi

# -- 1. the machine --------------------------------------------------------------------------
OS="$(uname -s)" ARCH="$(uname -m)"
APPLE_SILICON=0
if [ "$OS" = Darwin ] && [ "$ARCH" = arm64 ]; then
  APPLE_SILICON=1
fi
if [ "$APPLE_SILICON" = 0 ] && [ "$EMBEDDED" = 0 ]; then
  echo
  echo "Sesame CSM needs Apple Silicon (an M1 or later Mac): it runs on MLX."
  if [ "$OS" = Darwin ] && [ "$(sysctl -n sysctl.proc_translated 2>/dev/null || echo 0)" = 1 ]; then
    echo "This Mac is Apple Silicon, but this shell runs under Rosetta (x86_64). Open a native"
    echo "terminal (or run: arch -arm64 /bin/bash bin/install.sh) to install the CSM voice."
  else
    echo "This machine is $OS $ARCH."
  fi
  echo "The embedded voice (Piper, on the CPU) serves the same OpenAI and ElevenLabs APIs"
  echo "with a different voice and needs no model download."
  if ask "Install with the embedded voice?" y; then
    EMBEDDED=1
    say "Installing in embedded-voice mode"
  else
    die "stopped: the CSM voice cannot run on this machine"
  fi
fi

# -- 2. Python and the virtualenv -------------------------------------------------------------
command -v "$PYTHON_BIN" >/dev/null 2>&1 ||
  die "$PYTHON_BIN not found: install Python 3.10 or newer (macOS: brew install python@3.12; Debian/Ubuntu: apt install python3 python3-venv)"
"$PYTHON_BIN" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
  die "$("$PYTHON_BIN" --version 2>&1) is too old: Python 3.10 or newer is needed (--python PATH picks another)"
if [ "$APPLE_SILICON" = 1 ] && [ "$EMBEDDED" = 0 ] && [ "$("$PYTHON_BIN" -c 'import platform; print(platform.machine())')" != arm64 ]; then
  die "$PYTHON_BIN is an x86_64 (Rosetta) Python; MLX needs a native arm64 Python (brew install python@3.12, or --python PATH)"
fi

if [ -x "$PY" ] && "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  say "Using the virtualenv $VENV"
else
  say "Creating the virtualenv $VENV"
  "$PYTHON_BIN" -m venv --clear "$VENV" ||
    die "could not create a virtualenv (Debian/Ubuntu: apt install python3-venv)"
fi

# uv when it is there; else try to put it in the venv (never in the system Python); else pip.
UV=""
if [ "$USE_UV" = 1 ]; then
  if command -v uv >/dev/null 2>&1; then
    UV="$(command -v uv)"
  elif [ -x "$VENV/bin/uv" ]; then
    UV="$VENV/bin/uv"
  else
    say "Installing uv into the virtualenv (faster installs)"
    if "$PY" -m pip install --quiet uv >/dev/null 2>&1 && [ -x "$VENV/bin/uv" ]; then
      UV="$VENV/bin/uv"
    else
      note "uv could not be installed; using pip"
    fi
  fi
fi
pip_install() {
  if [ -n "$UV" ]; then
    "$UV" pip install --quiet --python "$PY" "$@"
  else
    "$PY" -m pip install --quiet "$@"
  fi
}

# -- 3. dependencies ---------------------------------------------------------------------------
EXTRAS="piper"
[ "$EMBEDDED" = 1 ] || EXTRAS="csm,piper"  # piper too: the fallback voice while weights are missing
STAMP="$VENV/.sesame-tts-installed"
WANT="$(cat requirements.lock setup.cfg 2>/dev/null | cksum | tr -s ' ' '-') extras=$EXTRAS"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && "$PY" -c 'import sesame_server' 2>/dev/null; then
  say "Dependencies are up to date"
else
  say "Installing dependencies (${UV:+uv, }extras: $EXTRAS)"
  if [ -f requirements.lock ]; then
    pip_install -r requirements.lock
  else
    warn "requirements.lock is missing: installing unpinned versions from setup.cfg"
  fi
  pip_install -e ".[$EXTRAS]"
  echo "$WANT" >"$STAMP"
fi

# -- 4. .env -----------------------------------------------------------------------------------
set_env() {  # set_env KEY VALUE: replace the (possibly commented-out) line or append one
  if grep -qE "^[#[:space:]]*$1=" .env; then
    sed -i.bak -E "s|^[#[:space:]]*$1=.*|$1=$2|" .env && rm -f .env.bak
  else
    printf '%s=%s\n' "$1" "$2" >>.env
  fi
}
if [ -f .env ]; then
  say "Keeping your .env"
else
  say "Creating .env from .env.example"
  if [ -f .env.example ]; then cp .env.example .env; else : >.env; fi
  if [ "$EMBEDDED" = 1 ]; then set_env BACKEND piper; fi
fi
[ -z "$PORT_ARG" ] || set_env PORT "$PORT_ARG"
read_settings

# -- 5. model weights (Apple Silicon only) -------------------------------------------------------
download_weights() {
  if ! "$PY" -m sesame_server download --help >/dev/null 2>&1; then
    say "Model weights download on the first start (a few GB; watch $VENV/bin/sesame-tts service logs)."
    note "To fetch them ahead of time later, run: $VENV/bin/sesame-tts download"
    return 0
  fi
  say "Downloading the model weights (a few GB, once)"
  local log rc token
  log="$(mktemp)"
  set +e
  "$PY" -m sesame_server --env-file "$ROOT/.env" download 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" -ne 0 ] && grep -qiE 'gated|401|403|unauthori[sz]ed|HF_TOKEN|access to model' "$log"; then
    echo
    echo "The model needs a Hugging Face account: accept its license at https://huggingface.co/sesame/csm-1b"
    echo "and create a read token at https://huggingface.co/settings/tokens."
    if [ "$YES" = 0 ] && [ -t 0 ]; then
      read -r -s -p "Paste the token (input hidden; empty to skip): " token || token=""
      echo
      if [ -n "$token" ]; then
        set_env HF_TOKEN "$token"
        set +e
        "$PY" -m sesame_server --env-file "$ROOT/.env" download
        rc=$?
        set -e
      fi
    fi
  fi
  rm -f "$log"
  if [ "$rc" -ne 0 ]; then
    warn "the weights are not downloaded yet; the server uses the embedded voice until they are."
    note "Set HF_TOKEN in $ROOT/.env if needed, then run: $VENV/bin/sesame-tts download"
  fi
}
[ "$EMBEDDED" = 1 ] || download_weights

# -- 6. service or background server ----------------------------------------------------------
host_for_url="localhost"
case "$S_HOST" in
  127.*|localhost|::1|0.0.0.0|::|"") ;;
  *) host_for_url="$S_HOST" ;;
esac
HEALTH_URL="$("$PY" -c 'import sys; from sesame_server.ops.health_check import health_url; print(health_url(sys.argv[1], int(sys.argv[2])))' "$S_HOST" "$S_PORT")"

wait_healthy() {  # wait_healthy [PID]: 0 ok, 1 error, 2 timeout, 3 the process died
  "$PY" - "$HEALTH_URL" "$TIMEOUT" "${1:-0}" <<'EOF'
import os, sys, time
from sesame_server.ops.health_check import check_health
url, timeout, pid = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + timeout
last_note = time.monotonic()
while True:
    if pid:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as stat:  # Linux: an unreaped exited server is a zombie
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    sys.exit(3)
        except ProcessLookupError:
            sys.exit(3)
        except (OSError, IndexError):
            pass
    state, body = check_health(url)
    if state == "ok":
        sys.exit(0)
    if state == "error":
        print(f"error: the server reports an error: {(body or {}).get('error', 'unknown')}", file=sys.stderr)
        sys.exit(1)
    if time.monotonic() >= deadline:
        sys.exit(2)
    if time.monotonic() - last_note > 15:
        print(f"    still {state} ...", flush=True)
        last_note = time.monotonic()
    time.sleep(0.5)
EOF
}

port_free() {
  "$PY" - "$S_HOST" "$S_PORT" <<'EOF'
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
with socket.socket(family) as probe:
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as waitress does
    try:
        probe.bind((host, port))
    except OSError:
        sys.exit(1)
EOF
}

explain_failure() {
  echo >&2
  echo "The server did not become healthy. Last lines of $CONSOLE_LOG:" >&2
  tail -n 25 "$CONSOLE_LOG" >&2 2>/dev/null || true
  echo "Full log (JSON lines): $S_CACHE_DIR/server.log" >&2
  exit 1
}

SERVICE_STARTED=0
if [ -z "$SERVICE" ] && [ -f "$(service_unit_path)" ]; then
  SERVICE=yes  # installed by an earlier run: update it rather than start a second server
  say "Updating the installed login service"
elif [ -z "$SERVICE" ]; then
  if ask "Install the login service (starts at login, restarts after a crash)?" n; then SERVICE=yes; else SERVICE=no; fi
fi
if [ "$SERVICE" = yes ] && [ "$START" = 1 ]; then
  if "$PY" -m sesame_server service --help >/dev/null 2>&1; then
    stop_server  # a background server from an earlier run would hold the port
    say "Installing the login service"
    if "$PY" -m sesame_server --env-file "$ROOT/.env" service install --wait 0 ${PORT_ARG:+--port "$PORT_ARG"}; then
      SERVICE_STARTED=1
    else
      warn "the service could not be installed (see above); starting the server in the background instead"
    fi
  else
    warn "this version has no 'sesame-tts service' command; starting the server in the background instead"
  fi
fi

if [ "$START" = 0 ]; then
  say "Installed. Start the server with: $VENV/bin/sesame-tts serve"
  exit 0
fi

if [ "$SERVICE_STARTED" = 1 ]; then
  say "Waiting for the service to report healthy (up to ${TIMEOUT} s)"
  wait_healthy || explain_failure
else
  stop_server
  if ! port_free; then
    next="$("$PY" -c 'import sys; from sesame_server.server import next_free_port; print(next_free_port(sys.argv[1], int(sys.argv[2])))' "$S_HOST" "$S_PORT")"
    die "port $S_PORT is already in use (another sesame-tts?). Stop that process, or run again with --port $next"
  fi
  mkdir -p "$S_CACHE_DIR"
  say "Starting the server in the background (log: $CONSOLE_LOG)"
  # stdin/stdout/stderr all redirected: the server must not hold the caller's terminal or pipes.
  # HOST, PORT and CACHE_DIR are passed explicitly so the server is where we wait for it and
  # logs where --stop and the failure report look, whatever else is in the environment.
  CACHE_DIR="$S_CACHE_DIR" nohup "$PY" -m sesame_server --env-file "$ROOT/.env" serve \
    --host "$S_HOST" --port "$S_PORT" </dev/null >>"$CONSOLE_LOG" 2>&1 &
  echo $! >"$PIDFILE"
  say "Waiting for the model to load and warm up (up to ${TIMEOUT} s)"
  rc=0
  wait_healthy "$(cat "$PIDFILE")" || rc=$?
  if [ "$rc" -ne 0 ]; then
    [ "$rc" -eq 2 ] && warn "no healthy answer from $HEALTH_URL within ${TIMEOUT} s"
    [ "$rc" -eq 3 ] && rm -f "$PIDFILE"
    explain_failure
  fi
  note "Stop it with: bin/install.sh --stop   (pid file: $PIDFILE)"
fi

echo "Sesame TTS running at http://$host_for_url:$S_PORT"
