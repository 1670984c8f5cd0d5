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
echo "wall: elapsed seconds; cpu: user + system seconds (the work itself, whatever else the machine runs)"
printf '%8s  %8s  %8s  %12s  %12s  %4s\n' N wall cpu "wall µs/res" "cpu µs/res" exit
TIMEFORMAT='%R %U %S'
for n in "${sizes[@]}"; do
    dir="$work/n$n"
    python3 "$root/bench/analyze/generate.py" "$n" "$dir" 2>/dev/null
    best_wall=""
    best_cpu=""
    status=0
    for _ in $(seq "$runs"); do
        { time "$bin" analyze -f "$dir" >/dev/null 2>&1; } 2>"$work/time" || status=$?
        read -r wall user sys <"$work/time"
        cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.3f", u + s }')
        best_wall=$(awk -v a="$wall" -v b="${best_wall:-$wall}" 'BEGIN { print (a < b ? a : b) }')
        best_cpu=$(awk -v a="$cpu" -v b="${best_cpu:-$cpu}" 'BEGIN { print (a < b ? a : b) }')
    done
    per_wall=$(awk -v t="$best_wall" -v n="$n" 'BEGIN { printf "%.1f", t * 1e6 / n }')
    per_cpu=$(awk -v t="$best_cpu" -v n="$n" 'BEGIN { printf "%.1f", t * 1e6 / n }')
    printf '%8d  %8.3f  %8.3f  %12s  %12s  %4d\n' "$n" "$best_wall" "$best_cpu" "$per_wall" "$per_cpu" "$status"
    rm -rf "$dir"
done
