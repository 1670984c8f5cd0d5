#!/usr/bin/env bash
# Instructions per request of each sidecar of the mesh pair, counted by callgrind: a figure that
# does not move with the machine's load, for before/after comparisons of hot-path changes
# (issue #5). Wall-clock and CPU figures come from bench/mesh/run.sh; this one says whether a
# change made the proxy execute less.
#
#   bench/instructions/run.sh                 # builds release binaries, 1,000 requests
#   N=5000 BIN=/some/target/release bench/instructions/run.sh
#   ANNOTATE=1 bench/instructions/run.sh      # also print each proxy's top functions
#   NEW_CONNECTIONS=1 bench/instructions/run.sh  # a new client connection per request
#   SYSCALLS=1 bench/instructions/run.sh      # system calls per request instead (perf, no valgrind)
#   PM_H2_UPGRADE=UPGRADE bench/instructions/run.sh   # the HTTP/2 hop between the sidecars
#   PM_POLICIES=1 bench/instructions/run.sh   # with k8s/istio's account-service policies applied
#
# Same pair as bench/mesh (impls.d/paymesh.sh writes the config): paymesh-control, an inbound
# and an outbound sidecar (STRICT mTLS, HTTP/1.1 between them as Istio's default, or h2 with
# PM_H2_UPGRADE=UPGRADE) under valgrind, paymesh-echo as the app;
# oha sends N HTTP/1.1 GET /health through the outbound port over 4 keep-alive connections after
# a 200-request warm-up (pooled connections made), between callgrind's zero and dump.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
N=${N:-1000}
BIN=${BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release}
RUN_DIR=${RUN_DIR:-$(mktemp -d /tmp/paymesh-instructions.XXXXXX)}
for c in valgrind callgrind_control; do
  command -v "$c" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
done
OHA=$(command -v oha || echo "$HOME/.cargo/bin/oha")
[[ -x $OHA ]] || cargo install oha --locked
if [[ -z ${SKIP_BUILD:-} ]]; then
  (cd "$REPO" && cargo build --release -p paymesh-proxy -p paymesh-control -p paymesh-echo)
fi

# What impls.d/paymesh.sh expects from the harness.
PAYMESH_NET=${PAYMESH_NET:-127.0.79}; UP_PORT=18080; READY_TIMEOUT=120; WORKERS=1
# The Service's other ports (bench/mesh/protocols.sh); nothing listens on them here.
ECHO_PORT=18090; ECHO_GRPC_PORT=18091; ECHO_TCP_PORT=18092
PAYMESH_BIN_DIR=$BIN; BENCH_DIR=$REPO/bench/mesh
log() { echo "$*" >&2; }
die() { echo "instructions: $*" >&2; exit 1; }
# shellcheck source=../mesh/impls.d/paymesh.sh
source "$REPO/bench/mesh/impls.d/paymesh.sh"

pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
pm_write_config "$RUN_DIR"
"$BIN/paymesh-echo" --ip "$PM_SERVER_IP" --port "$UP_PORT" > "$RUN_DIR/echo.log" 2>&1 & pids+=($!)
"$BIN/paymesh-control" -f "$RUN_DIR/config" --pods "$RUN_DIR/pods.yaml" --ca-dir "$RUN_DIR/ca" \
  --credentials-dir "$RUN_DIR/credentials" --grpc-addr "$PM_CONTROL_IP:15012" \
  --monitoring-addr "$PM_CONTROL_IP:15014" --admin-token-file "$RUN_DIR/admin-token" \
  > "$RUN_DIR/control.log" 2>&1 & pids+=($!)
pm_wait_200 "http://$PM_CONTROL_IP:15014/ready" || die "control plane not ready ($RUN_DIR/control.log)"

under=(valgrind --tool=callgrind)
if [[ -n ${SYSCALLS:-} ]]; then
  # shellcheck source=syscalls.sh
  source "$HERE/syscalls.sh"
  under=()
fi
start_proxy() {  # pod, service account, ip
  pm_token "$2" "$1" "$RUN_DIR/$1.token"
  PAYMESH_PROXY_WORKERS=1 RUST_LOG=warn "${under[@]}" \
    ${under:+--callgrind-out-file="$RUN_DIR/$1.callgrind"} "$BIN/paymesh-proxy" --mode sidecar \
    --pod "$1" --namespace payments --service-account "$2" --ip "$3" \
    --control "$PM_CONTROL_IP:15012" --root-cert "$RUN_DIR/ca/root-cert.pem" \
    --token-file "$RUN_DIR/$1.token" > "$RUN_DIR/$1.out" 2> "$RUN_DIR/$1.log" & pids+=($!)
  proxies+=($!)
}
proxies=()
start_proxy account-service-0 account-service "$PM_SERVER_IP"
start_proxy payment-service-0 payment-service "$PM_CLIENT_IP"
pm_wait_200 "http://$PM_SERVER_IP:15021/healthz/ready" || die "inbound proxy not ready"
pm_wait_200 "http://$PM_CLIENT_IP:15021/healthz/ready" || die "outbound proxy not ready"

url="http://$PM_CLIENT_IP:15001/health"
"$OHA" --no-tui -n 200 -c 4 -H "Host: $PM_HOST" "$url" > /dev/null
if [[ -n ${SYSCALLS:-} ]]; then
  syscalls_run "$RUN_DIR/syscalls" "${proxies[1]}" "${proxies[0]}" -- \
    "$OHA" --no-tui --output-format json -n "$N" -c 4 -H "Host: $PM_HOST" "$url" > "$RUN_DIR/oha.json"
  syscalls_report "$RUN_DIR/syscalls" "$N"
  echo "instructions: data in $RUN_DIR" >&2
  exit 0
fi
for p in "${proxies[@]}"; do callgrind_control -z "$p" > /dev/null 2>&1; done
# NEW_CONNECTIONS=1: a new client connection per request (oha --disable-keepalive), for the
# cost of connection set-up on the outbound side.
"$OHA" --no-tui --output-format json -n "$N" -c 4 ${NEW_CONNECTIONS:+--disable-keepalive} \
  -H "Host: $PM_HOST" "$url" > "$RUN_DIR/oha.json"
for p in "${proxies[@]}"; do callgrind_control -d "$p" > /dev/null 2>&1; done
ok=$(jq -r '.statusCodeDistribution["200"] // 0' "$RUN_DIR/oha.json")
[[ $ok == "$N" ]] || die "$ok of $N requests answered 200 (see $RUN_DIR)"

printf '| proxy | instructions per request |\n|---|---|\n'
for side in payment-service-0:outbound account-service-0:inbound; do
  dump=$(ls "$RUN_DIR/${side%%:*}.callgrind".* 2>/dev/null | tail -1 || true)
  [[ -n $dump ]] || die "no callgrind dump for ${side%%:*}"
  ir=$(awk '/^summary:/ {print $2}' "$dump")
  printf '| %s | %s |\n' "${side#*:}" "$(( ir / N ))"
  if [[ -n ${ANNOTATE:-} ]]; then
    callgrind_annotate --auto=no --threshold=100 "$dump" | sed -n "/file:function/,+25p" >&2
  fi
done
echo "instructions: data in $RUN_DIR" >&2
