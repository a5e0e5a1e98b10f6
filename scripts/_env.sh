# Sourced by the scripts in this folder: creates or refreshes .venv from pyproject.toml.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
STAMP="$VENV/.pyproject.sha256"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "== preparing .venv (Python 3.11) =="
  PY="$(command -v python3.11 || command -v python3)"
  "$PY" -m venv "$VENV"
  mkdir -p var
  if ! "$VENV/bin/pip" install -q -e ".[dev]" >var/pip-install.log 2>&1; then
    grep -v "^WARNING: Location" var/pip-install.log >&2
    exit 1
  fi
  echo "$want" >"$STAMP"
fi
export PATH="$VENV/bin:$PATH"
