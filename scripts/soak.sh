#!/usr/bin/env bash
# Soak run (not in CI): many kill -9 cycles of tests/crash_kill9.rs, then the gateway
# under load with random client disconnects, printing the figures of each and the load
# average. Everything runs on this machine (the gateway on loopback) and stops by itself.
#
#   bash scripts/soak.sh                      # 5,000 kill cycles, then 120 s of gateway load
#   CRASH_CYCLES=1000 SOAK_GATEWAY_SECONDS=60 bash scripts/soak.sh
#
# Settings (environment):
#   CRASH_CYCLES                kill -9 cycles (default 5000)
#   CRASH_FULL_CHECK_EVERY      cycles between full checks and verifies of the whole log
#                               (default 250 here: a full check costs ~1 s per 100,000 events)
#   SOAK_GATEWAY_SECONDS        measured seconds of gateway load (default 120; 0 skips it)
#   SOAK_GATEWAY_CONNECTIONS    WebSocket connections (default 200)
#   SOAK_DISCONNECT_PER_MILLE   chance per result that a client drops its socket and signs
#                               in again (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-build-deps.sh

export CRASH_CYCLES="${CRASH_CYCLES:-5000}"
export CRASH_FULL_CHECK_EVERY="${CRASH_FULL_CHECK_EVERY:-250}"
gateway_seconds="${SOAK_GATEWAY_SECONDS:-120}"
connections="${SOAK_GATEWAY_CONNECTIONS:-200}"
disconnects="${SOAK_DISCONNECT_PER_MILLE:-20}"

cargo build --release --locked --test crash_kill9 -p osmium-state
cargo build --release --locked -p osmium-gateway --bin osmium-gateway-load

echo "soak: $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
started=$(date +%s)
cargo test --release --locked --test crash_kill9 -p osmium-state 2>&1 | grep --line-buffered -E '^crash_kill9:|passed|panicked|FAILED|error' || {
    echo "soak: the kill -9 cycles FAILED"
    exit 1
}
echo "soak: kill -9 cycles took $(( $(date +%s) - started )) s; load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "$gateway_seconds" -gt 0 ]; then
    target_dir="${CARGO_TARGET_DIR:-target}"
    "$target_dir/release/osmium-gateway-load" --connections "$connections" --seconds "$gateway_seconds" \
        --think-ms 100 --disconnect-per-mille "$disconnects"
    echo "soak: gateway load done; load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
fi
