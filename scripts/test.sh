#!/usr/bin/env bash
# Runs every test of the workspace: installs RocksDB's build dependencies when missing,
# then `cargo test` in the release profile (the one profile everything here builds in,
# so that RocksDB's C++ is compiled once: ~15 minutes on 2 cores the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-build-deps.sh
bash scripts/ensure-nats-server.sh   # osmium-cluster's tests run local NATS clusters
exec cargo test --release --workspace --locked "$@"
