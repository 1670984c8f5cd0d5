#!/usr/bin/env bash
# Control plane at scale (issue #5): N services x 10 endpoints, 100 simulated proxies.
# Builds release binaries, then sweeps N = 100, 250, 500, 1000 and prints markdown tables.
#
# The machine is shared (2 cores, other builds and tests running): absolute numbers move
# with its load; run twice and compare before reading much into a 10% difference.
#
#   bench/control-scale/run.sh                      # the sweep
#   bench/control-scale/run.sh --services 1000      # one size
#   CARGO_TARGET_DIR=/elsewhere bench/control-scale/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p paymesh-control -p paymesh-proxy -p paymesh-bench-control-scale
exec "$target/release/paymesh-bench-control-scale" "$@"
