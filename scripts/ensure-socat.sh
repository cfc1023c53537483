#!/bin/sh
# Install socat (pseudo-terminal pairs for the Modbus RTU tests) when it is missing.
# Used by `make test` and by tests/test_modbus_rtu.py; needs root (or passwordless sudo) for apt-get.
set -eu
if command -v socat >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "socat is missing and installing it needs root: apt-get install socat" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q socat >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q socat >/dev/null; }
command -v socat >/dev/null 2>&1
