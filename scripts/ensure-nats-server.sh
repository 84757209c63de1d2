#!/usr/bin/env bash
# Makes sure `nats-server` (NATS with JetStream: osmium-cluster's replicated log and its
# tests) is on this machine. Installs Debian's package with apt-get when it can (root, or
# sudo without a password); otherwise says exactly what to run. The tests find the binary
# on PATH, or at $NATS_SERVER when set.
set -euo pipefail

have_nats_server() {
  if [ -n "${NATS_SERVER:-}" ]; then
    [ -x "$NATS_SERVER" ] && return 0
    echo "error: NATS_SERVER=$NATS_SERVER is not an executable file" >&2
    exit 1
  fi
  command -v nats-server >/dev/null 2>&1
}

have_nats_server && exit 0

echo "osmium-cluster's tests need nats-server (not found); installing with apt-get..." >&2
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo"
else
  echo "error: cannot install as a regular user. Run:  sudo apt-get update && sudo apt-get install -y nats-server" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: no apt-get here. Install nats-server 2.9 or later (https://nats.io) on PATH, or set NATS_SERVER to its path, then rerun." >&2
  exit 1
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nats-server >/dev/null
have_nats_server || { echo "error: nats-server still not found after installing the nats-server package" >&2; exit 1; }
