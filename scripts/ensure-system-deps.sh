#!/usr/bin/env bash
# Debian packages the demo and the tests use: mosquitto (the broker), socat (serial pty pairs) and
# systemd's systemd-analyze (checks of the unit file; systemd need not be running).
# Installed with apt when missing and we may (root or password-less sudo); otherwise say what to do.
set -uo pipefail

have() { command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" ]]; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"; else return 1; fi; }

missing=()
have mosquitto || missing+=(mosquitto)
have socat || missing+=(socat)
have systemd-analyze || missing+=(systemd)
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "installing ${missing[*]} with apt" >&2
if as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
   && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
  exit 0
fi
echo "could not install ${missing[*]}: run 'sudo apt-get install ${missing[*]}' (tests that need them will fail or skip)" >&2
exit 0
