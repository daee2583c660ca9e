# Sourced by bin/serve and bin/test: make (or refresh) the virtualenv from requirements.lock.
# First run: a few minutes; later runs: nothing to do unless requirements.lock or setup.cfg changed.
# SESAME_VENV picks another virtualenv; PYTHON another interpreter (3.11 or 3.12).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SESAME_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

# The digest of the given files: a virtualenv made from them records it in .sesame-setup.
stamp_of() { cat "$@" | "$PYTHON" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'; }

# setup_venv [torch]: with "torch", requirements-torch.lock too (the csm-torch backend).
setup_venv() {
  local locks=("$ROOT/requirements.lock" "$ROOT/setup.cfg")
  [ "${1:-}" = torch ] && locks+=("$ROOT/requirements-torch.lock")
  if ! "$PYTHON" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 13)))' 2>/dev/null; then
    echo "error: $PYTHON is not Python 3.11 or 3.12 ($("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
    exit 1
  fi
  local stamp
  stamp="$(stamp_of "${locks[@]}")"
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.sesame-setup" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  echo "==> Setting up $VENV from requirements.lock (first run: a few minutes)"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet -r "$ROOT/requirements.lock" -e "$ROOT"
  [ "${1:-}" = torch ] && "$VENV/bin/pip" install --quiet -r "$ROOT/requirements-torch.lock"
  echo "$stamp" > "$VENV/.sesame-setup"
}
