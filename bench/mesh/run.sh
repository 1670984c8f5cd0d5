#!/usr/bin/env bash
# One command for the sidecar-pair benchmark (issue #5): installs the peers when missing
# (Debian nginx, haproxy, wrk, jq, curl, openssl; oha via cargo install), builds the release
# paymesh-proxy and paymesh-control, then runs mesh-bench.sh with direct + every implementation
# interleaved over ROUNDS rounds and writes bench/mesh/out/summary.md (raw data beside it).
#
#   bench/mesh/run.sh                          # ROUNDS=3 paymesh nginx haproxy, full durations
#   ROUNDS=1 LAT_DURATION=5 MAX_DURATION=5 WARMUP_SECONDS=1 bench/mesh/run.sh   # smoke run
#   bench/mesh/run.sh paymesh                  # only some implementations (direct is always run)
#   PROTOCOLS="h2 tcp" RATES="1000" bench/mesh/run.sh paymesh nginx   # protocols.sh tests
#
# Knobs: everything mesh-bench.sh reads (ROUNDS RATE LAT_CONNS LAT_DURATION MAX_CONNS ...) and
# protocols.sh reads (PROTOCOLS RATES PROTO_DURATION SETUP_DURATION SLOW_CLIENTS ...),
# plus CARGO_TARGET_DIR (where release binaries are built), SKIP_INSTALL=1, SKIP_BUILD=1,
# OUT_DIR (default bench/mesh/out, replaced on every run), PAYMESH_NET (default 127.0.77).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
export ROUNDS=${ROUNDS:-3}
export OUT_DIR=${OUT_DIR:-$HERE/out}
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
export PAYMESH_BIN_DIR=${PAYMESH_BIN_DIR:-$TARGET_DIR/release}

if [[ ${SKIP_INSTALL:-0} != 1 ]]; then
  missing=()
  for c in nginx haproxy wrk jq curl openssl ss; do
    command -v "$c" >/dev/null 2>&1 || [[ -x /usr/sbin/$c ]] || missing+=("$c")
  done
  if (( ${#missing[@]} )); then
    echo "run.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx haproxy wrk jq curl openssl iproute2 >/dev/null
  fi
  if [[ ! -f /usr/lib/nginx/modules/ngx_stream_module.so ]]; then   # nginx's TCP pair (PROTOCOLS=tcp)
    echo "run.sh: installing libnginx-mod-stream" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libnginx-mod-stream >/dev/null
  fi
  if ! command -v oha >/dev/null 2>&1 && [[ ! -x $HOME/.cargo/bin/oha ]]; then
    echo "run.sh: cargo install oha (several minutes on 2 cores)" >&2
    cargo install oha --locked
  fi
fi

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  (cd "$REPO" && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -p paymesh-proxy -p paymesh-control \
    -p paymesh-echo -p paymesh-bench-loadgen)
fi

impls=("$@")
(( ${#impls[@]} )) || impls=(paymesh nginx haproxy)
if [[ -d $OUT_DIR ]] && [[ -n $(ls -A "$OUT_DIR") ]]; then
  [[ -f $OUT_DIR/meta.txt ]] || { echo "run.sh: $OUT_DIR is not a previous run's output; not replacing it" >&2; exit 1; }
  rm -rf "$OUT_DIR"
fi
mkdir -p "$OUT_DIR"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true   # slow clients hold many sockets
"$HERE/mesh-bench.sh" "${impls[@]}"
echo "run.sh: summary in $OUT_DIR/summary.md" >&2
