#!/usr/bin/env bash
# Times `paymesh analyze -f DIR` on generated configurations of growing size, to show
# whether its cost grows linearly with the number of resources.
#
#   bench/analyze/run.sh            # N = 1000 2000 5000 10000, best of 3 runs each
#   RUNS=5 bench/analyze/run.sh 500 50000
#
# Builds paymesh in release mode first. The exit status of analyze is shown, not judged:
# a configuration the analyzers flag is still a valid timing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
runs="${RUNS:-3}"
sizes=("$@")
if [ "${#sizes[@]}" -eq 0 ]; then
    sizes=(1000 2000 5000 10000)
fi

cargo build --release --quiet -p paymesh-cli --manifest-path "$root/Cargo.toml"
bin="$root/target/release/paymesh"

work="$(mktemp -d "${TMPDIR:-/tmp}/paymesh-bench-analyze.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "paymesh analyze, best of $runs runs; $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
printf '%8s  %10s  %16s  %6s\n' N seconds "µs per resource" exit
for n in "${sizes[@]}"; do
    dir="$work/n$n"
    python3 "$root/bench/analyze/generate.py" "$n" "$dir" 2>/dev/null
    best=""
    status=0
    for _ in $(seq "$runs"); do
        start=$EPOCHREALTIME
        "$bin" analyze -f "$dir" >/dev/null 2>&1 || status=$?
        end=$EPOCHREALTIME
        elapsed=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.6f", e - s }')
        if [ -z "$best" ] || awk -v a="$elapsed" -v b="$best" 'BEGIN { exit !(a < b) }'; then
            best=$elapsed
        fi
    done
    per=$(awk -v t="$best" -v n="$n" 'BEGIN { printf "%.1f", t * 1e6 / n }')
    printf '%8d  %10.3f  %16s  %6d\n' "$n" "$best" "$per" "$status"
    rm -rf "$dir"
done
