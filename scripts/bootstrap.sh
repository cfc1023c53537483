#!/usr/bin/env bash
# Create the virtualenv (installing python3-venv with apt when Debian lacks it) and install the project.
set -euo pipefail
PYTHON=${1:-python3}
VENV=${2:-.venv}

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"; else return 1; fi; }

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "edge-agent needs Python 3.11 or newer; $PYTHON is $("$PYTHON" -V 2>&1)" >&2
  exit 1
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  rm -rf "$VENV"
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    echo "python venv module missing: installing python3-venv with apt" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip >/dev/null \
      || { echo "cannot install python3-venv: run 'sudo apt-get install python3-venv'" >&2; exit 1; }
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
  fi
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip 2>/dev/null || true
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
