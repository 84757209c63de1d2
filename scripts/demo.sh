#!/usr/bin/env bash
# The main job: drives a realistic workload through the engine into ./data, then
# rebuilds and verifies the projections from the log and prints a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-build-deps.sh
exec cargo run --release --locked -p osmium-replay -- demo --data-dir ./data "$@"
