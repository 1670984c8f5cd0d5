#!/usr/bin/env bash
# Measures the account-service's transfer throughput on SQLite, without the mesh:
# one release-built account-service on 127.0.0.1 (embedded SQLite, WAL), driven open-loop by
# `payments load --mode transfers` (each transfer = reserve + credit + commit, three HTTP calls
# and three write transactions), followed by the money check.
#
# Usage: bench/payments/run.sh [RATE] [DURATION] [MODE]
#   RATE      offered transfers per second (default 2000)
#   DURATION  how long to offer it (default 30s)
#   MODE      transfers (account-service alone, default) or payments (all four services)
set -euo pipefail
cd "$(dirname "$0")/../.."

rate=${1:-2000}
duration=${2:-30s}
mode=${3:-transfers}

cargo build --release --locked -p paymesh-payments --bin payments >&2
bin=$PWD/target/release/payments
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Starts `payments <service>` with PORT=0 in $work; sets $url to its address.
start() {
  local name=$1; shift
  env -i PATH="$PATH" BIND_ADDR=127.0.0.1 PORT=0 RUST_LOG=warn "$@" \
    "$bin" "$name" >"$work/$name.out" 2>"$work/$name.log" &
  pids+=($!)
  for _ in $(seq 1 200); do
    if grep -q "listening on" "$work/$name.out" 2>/dev/null; then
      url="http://$(awk '{print $NF}' "$work/$name.out")"
      return
    fi
    sleep 0.05
  done
  echo "$name did not start:" >&2; cat "$work/$name.log" >&2; exit 1
}

start account-service DATABASE_URL="sqlite://$work/account.db?mode=rwc"
account=$url
target=$account
if [ "$mode" = payments ]; then
  start validation-service
  validation=$url
  start saga-service DATABASE_URL="sqlite://$work/saga.db?mode=rwc" ACCOUNT_SERVICE_URL="$account"
  saga=$url
  start payment-service VALIDATION_SERVICE_URL="$validation" SAGA_SERVICE_URL="$saga"
  target=$url
fi

echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "command: bench/payments/run.sh $rate $duration $mode"
"$bin" load --mode "$mode" --target "$target" --account-url "$account" \
  --rate "$rate" --duration "$duration" --tenants acme,globex --accounts 100 \
  --opening-balance 100000000 --max-amount 10000 --seed 42
