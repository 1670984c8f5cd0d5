#!/usr/bin/env bash
# Instructions per request of a PEER sidecar pair (haproxy), counted by callgrind the
# way run.sh counts paymesh's: the same client (oha, N keep-alive HTTP/1.1 GETs over 4
# connections after a 200-request warm-up), both proxies under valgrind, counters zeroed after
# the warm-up and dumped after the N requests. It says how much user-space work per request the
# peers do, so paymesh's figure has a yardstick on a machine whose wall-clock figures are noisy.
#
#   bench/instructions/peer.sh haproxy
#   N=5000 bench/instructions/peer.sh haproxy
#   SYSCALLS=1 bench/instructions/peer.sh haproxy   # system calls per request (perf, no valgrind)
#
# nginx is not supported: its worker is forked by a master under valgrind, and callgrind writes
# no dump for a forked child that callgrind_control can ask for.
# The pair is bench/mesh's (mesh-bench.sh's impl_haproxy: TLS 1.3 mutual auth, EC
# P-256, one worker each) in front of its nginx upstream, answering a 3-byte body as paymesh-echo's
# /health does in run.sh. The hop between haproxy's proxies is HTTP/1.1 over TLS (one request at
# a time per connection), as paymesh's is by default (HTTP/2 with PM_H2_UPGRADE=UPGRADE run.sh).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
IMPL=${1:?usage: peer.sh haproxy}
[[ $IMPL == haproxy ]] || { echo "peer.sh: only haproxy is supported (see the header)" >&2; exit 2; }
N=${N:-1000}
for c in valgrind callgrind_control; do
  command -v "$c" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
done
for c in nginx haproxy jq openssl ss curl; do
  command -v "$c" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx haproxy jq openssl iproute2 >/dev/null; break; }
done

# mesh-bench.sh only runs its main when executed; sourced, it lends its pairs and helpers.
export OUT_DIR=${OUT_DIR:-$(mktemp -d /tmp/paymesh-peer-instructions.XXXXXX)}
PROTOCOLS=none
BODY_BYTES=${BODY_BYTES:-3}
# shellcheck source=../mesh/mesh-bench.sh
source "$REPO/bench/mesh/mesh-bench.sh"
OHA=$(command -v oha || echo "$HOME/.cargo/bin/oha")
[[ -x $OHA ]] || cargo install oha --locked

# The pair's binaries, each run under callgrind with a dump file of its own.
wrap() {  # real binary, name
  local w=$OUT_DIR/$2-under-callgrind
  printf '#!/usr/bin/env bash\nexec valgrind --tool=callgrind --callgrind-out-file=%s/%s.%%p.callgrind %s "$@"\n' \
    "$OUT_DIR" "$2" "$1" > "$w"
  chmod +x "$w"
  echo "$w"
}
UPSTREAM_EXTRA_IPS=()
CERT_DIR=$OUT_DIR/certs
gen_certs "$CERT_DIR"
start_upstream
if [[ -n ${SYSCALLS:-} ]]; then
  # shellcheck source=syscalls.sh
  source "$HERE/syscalls.sh"
else
  HAPROXY=$(wrap "$HAPROXY" haproxy)
fi
RUN_DIR=$OUT_DIR/pair; mkdir -p "$RUN_DIR"
"impl_$IMPL"
STARTED_PIDS+=("$OUT_PID" "$IN_PID")
url="http://127.0.0.1:$OUT_PORT/"
deadline=$(( SECONDS + 60 ))
until curl -fsS -o /dev/null "$url" 2>/dev/null; do
  (( SECONDS < deadline )) || die "$IMPL pair not answering (see $RUN_DIR)"
  sleep 0.5
done

"$OHA" --no-tui -n 200 -c 4 "$url" > /dev/null
if [[ -n ${SYSCALLS:-} ]]; then
  syscalls_run "$OUT_DIR/syscalls" "$OUT_PID" "$IN_PID" -- \
    "$OHA" --no-tui --output-format json -n "$N" -c 4 "$url" > "$OUT_DIR/oha.json"
  syscalls_report "$OUT_DIR/syscalls" "$N"
  echo "syscalls: data in $OUT_DIR" >&2
  exit 0
fi
pids=("$OUT_PID" "$IN_PID")
for p in "${pids[@]}"; do callgrind_control -z "$p" > /dev/null 2>&1; done
"$OHA" --no-tui --output-format json -n "$N" -c 4 "$url" > "$OUT_DIR/oha.json"
for p in "${pids[@]}"; do callgrind_control -d "$p" > /dev/null 2>&1; done
ok=$(jq -r '.statusCodeDistribution["200"] // 0' "$OUT_DIR/oha.json")
[[ $ok == "$N" ]] || die "$ok of $N requests answered 200 (see $OUT_DIR)"

printf '| %s process | instructions per request |\n|---|---|\n' "$IMPL"
for p in "${pids[@]}"; do
  dump=$(ls "$OUT_DIR"/*."$p".callgrind.* 2>/dev/null | tail -1 || true)
  [[ -n $dump ]] || die "no callgrind dump for $p"
  ir=$(awk '/^summary:/ {print $2}' "$dump")
  role=outbound; [[ $p == "${pids[1]}" ]] && role=inbound
  printf '| %s | %s |\n' "$role" "$(( ir / N ))"
done
echo "instructions: data in $OUT_DIR" >&2
