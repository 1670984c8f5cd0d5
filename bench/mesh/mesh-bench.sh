#!/usr/bin/env bash
# Copied from ../shared/bench/mesh-bench.sh (the shared peer harness: contract, nginx/haproxy/
# ztunnel pairs, measurement). paymesh changes, all additive: an implementation may name the
# address the client talks to and a Host header (CLIENT_ADDR / CLIENT_HOST), the mTLS address
# (INBOUND_TLS_ADDR) and extra upstream listen IPs (impl_<name>_upstream_ips); idle RSS of each
# proxy is sampled right after readiness. impls.d/paymesh.sh adds the paymesh pair.
#
# mesh-bench.sh - side-by-side cost of a service-mesh sidecar PAIR with mutual TLS,
# measured on loopback (127.0.0.1 only), against the same client talking straight to
# the upstream ("direct" = the physical limit of this box).
#
#   client --HTTP/1.1--> outbound proxy --mTLS--> inbound proxy --HTTP/1.1--> upstream
#   client --HTTP/1.1------------------------------------------------------> upstream  (direct)
#
# Usage:
#   mesh-bench.sh [IMPL ...]          # e.g.  mesh-bench.sh nginx haproxy ztunnel
#   mesh-bench.sh --list              # list known implementations
#   ROUNDS=3 mesh-bench.sh nginx      # knobs are environment variables (see "Tunables")
# "direct" is always measured, in every round, interleaved with the implementations, and
# every ratio / delta in the report is computed against the direct run of the SAME round.
#
# ---------------------------------------------------------------------------------------
# CONTRACT FOR AN IMPLEMENTATION  (how to plug in a new proxy)
# ---------------------------------------------------------------------------------------
# Write ONE bash function named  impl_<name>  either in this file or in any
# $BENCH_DIR/impls.d/*.sh file (those are sourced automatically). It is called with
# these variables set (all addresses are 127.0.0.1):
#
#   OUT_PORT   outbound proxy listens here for plain HTTP/1.1 from the client.
#              It must forward every request to 127.0.0.1:$IN_PORT over mutual TLS.
#   IN_PORT    inbound proxy listens here for mTLS (TLS 1.3; require + verify a client
#              cert chained to $CERT_DIR/ca.crt) and forwards plain HTTP/1.1 to
#              127.0.0.1:$UP_PORT.
#   UP_PORT    the neutral upstream (nginx, returns 200 with a fixed $BODY_BYTES body).
#   CERT_DIR   certificates generated for this invocation by openssl (test CA):
#                ca.crt                      test root CA (EC P-256 by default, KEY_ALG=rsa for RSA-2048)
#                client.crt  client.key  client.pem(cert+key)   identity of the OUTBOUND side
#                    URI SAN spiffe://cluster.local/ns/payments/sa/payment-service
#                    DNS SAN payment-service.payments.svc.cluster.local
#                    CN payment-service.payments
#                server.crt  server.key  server.pem(cert+key)   identity of the INBOUND side
#                    URI SAN spiffe://cluster.local/ns/payments/sa/account-service
#                    DNS SAN account-service.payments.svc.cluster.local
#                    CN account-service.payments
#              Both leaf certs carry EKU serverAuth+clientAuth (like Istio workload certs).
#              Outbound must verify the server cert against ca.crt (name or SPIFFE ID
#              account-service); inbound should authorise the client identity
#              payment-service (the nginx/haproxy baselines check the CN).
#   RUN_DIR    private scratch dir for configs/logs of this run.
#   WORKERS    worker threads/processes per proxy (default 1: the box has 2 cores).
#
# The function must start the two proxy processes in the background and set
#   OUT_PID  and  IN_PID   (the same PID twice is allowed for a single-process design;
#                           children of these PIDs are counted and killed too)
# Optional companions:  impl_<name>_version  (prints one line: version string)
#                       impl_<name>_cleanup  (undo anything besides the processes)
#                       INBOUND_TLS_PORT=<port>  (set inside impl_<name> if the mTLS port is
#                                                 not IN_PORT; used for the no-client-cert check)
#                       INBOUND_TLS_ADDR=<ip:port>  (same, when the mTLS listener is not on 127.0.0.1)
#                       CLIENT_ADDR=<ip:port>    (set inside impl_<name>: where the client sends its
#                                                 requests, if not 127.0.0.1:$OUT_PORT)
#                       CLIENT_HOST=<host>       (set inside impl_<name>: Host header the client
#                                                 sends, origin-form, e.g. a mesh service name)
#                       impl_<name>_upstream_ips (prints extra IPs the upstream must also listen
#                                                 on at $UP_PORT, e.g. a pod IP; called once at start)
# The harness does everything else: readiness wait, mTLS-enforcement check, warm-up,
# fixed-rate latency run, max-throughput run, CPU/RSS accounting, and killing the
# processes by PID (never by name).
#
# Metrics per implementation (each round; reported as mean and [min..max] over rounds):
#   latency added vs direct   p50 / p99 (also p90, p99.9 in raw data) from
#                             oha -q $RATE -c $LAT_CONNS -z ${LAT_DURATION}s --latency-correction
#   max rps ratio vs direct   wrk -t$MAX_THREADS -c$MAX_CONNS -d${MAX_DURATION}s
#   RSS per proxy             sum of VmRSS over each proxy's process tree after the load
#   idle RSS per proxy        the same, right after readiness (one request served), before load
#   CPU per 10k requests      (utime+stime of both proxy trees, /proc) / (requests/10k),
#                             at the fixed rate and at max throughput
# Outputs: $OUT_DIR/{raw.tsv,summary.md,bench.log,runs/*}; summary also printed.
# Requirements: bash, openssl, nginx, curl, jq, python3, oha (cargo install oha), wrk;
# haproxy for the haproxy pair; root + iptables only for the ztunnel pair.
# ---------------------------------------------------------------------------------------
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# ---- Tunables -------------------------------------------------------------------------
ROUNDS=${ROUNDS:-2}
RATE=${RATE:-1000}
LAT_CONNS=${LAT_CONNS:-16}
LAT_DURATION=${LAT_DURATION:-20}
WARMUP_SECONDS=${WARMUP_SECONDS:-3}
MAX_THREADS=${MAX_THREADS:-2}
MAX_CONNS=${MAX_CONNS:-64}
MAX_DURATION=${MAX_DURATION:-15}
WORKERS=${WORKERS:-1}
BODY_BYTES=${BODY_BYTES:-1024}
UP_PORT=${UP_PORT:-18080}
OUT_PORT=${OUT_PORT:-16001}
IN_PORT=${IN_PORT:-16443}
KEY_ALG=${KEY_ALG:-ec}
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
WRK=${WRK:-wrk}
NGINX=${NGINX:-/usr/sbin/nginx}
HAPROXY=${HAPROXY:-/usr/sbin/haproxy}
ZTUNNEL_BIN=${ZTUNNEL_BIN:-$(command -v ztunnel || echo ztunnel-not-installed)}
READY_TIMEOUT=${READY_TIMEOUT:-20}
OUT_DIR=${OUT_DIR:-/tmp/mesh-bench-$(date -u +%Y%m%dT%H%M%SZ)}

CLK_TCK=$(getconf CLK_TCK)
SERVER_NAME=account-service.payments.svc.cluster.local
CLIENT_CN=payment-service.payments

# ---- small utilities --------------------------------------------------------------------
log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$OUT_DIR/bench.log" >&2; }
die() { log "FATAL: $*"; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "missing command: $1"; }

# all PIDs in the tree rooted at $1 (including $1), via /proc (no pgrep/pkill by name)
tree_pids() {
  local root=$1 p kids
  [[ -d /proc/$root ]] || return 0
  echo "$root"
  for p in /proc/"$root"/task/*/children; do
    [[ -r $p ]] || continue
    for kids in $(cat "$p" 2>/dev/null); do tree_pids "$kids"; done
  done
}
# utime+stime clock ticks summed over the tree
cpu_ticks() {
  local t=0 p f
  for p in $(tree_pids "$1"); do
    f=$(cat /proc/"$p"/stat 2>/dev/null) || continue
    f=${f##*) }                                   # strip "pid (comm) "
    set -- $f                                     # $1=state ... utime=$12 stime=$13
    t=$(( t + ${12} + ${13} ))
  done
  echo "$t"
}
# VmRSS / VmHWM (kB) summed over the tree
mem_kb() {
  local field=$1 root=$2 t=0 p v
  for p in $(tree_pids "$root"); do
    v=$(awk -v f="$field:" '$1==f{print $2}' /proc/"$p"/status 2>/dev/null || true)
    t=$(( t + ${v:-0} ))
  done
  echo "$t"
}

STARTED_PIDS=()
kill_tree() {   # kill a process tree by PID: TERM, wait up to 5 s, then KILL
  local root=$1 pids p i
  [[ -n $root && -d /proc/$root ]] || return 0
  pids=$(tree_pids "$root" | tac)
  for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
  for i in $(seq 50); do
    local alive=0
    for p in $pids; do [[ -d /proc/$p ]] && alive=1; done
    (( alive )) || break
    sleep 0.1
  done
  for p in $pids; do [[ -d /proc/$p ]] && kill -KILL "$p" 2>/dev/null || true; done
  wait "$root" 2>/dev/null || true
}

CURRENT_IMPL=""
cleanup_all() {
  local p
  if [[ -n $CURRENT_IMPL ]] && declare -F "impl_${CURRENT_IMPL}_cleanup" >/dev/null; then
    "impl_${CURRENT_IMPL}_cleanup" || true
  fi
  for p in "${STARTED_PIDS[@]:-}"; do [[ -n $p ]] && kill_tree "$p"; done
  STARTED_PIDS=()
}
trap 'cleanup_all' EXIT
trap 'log "interrupted"; exit 130' INT TERM

port_free() { ! ss -Htln "sport = :$1" | grep -q .; }

wait_http_200() {  # $1 = ip:port, $2 = Host header (optional)
  local deadline=$(( SECONDS + READY_TIMEOUT )) code hdr=()
  [[ -n ${2:-} ]] && hdr=(-H "Host: $2")
  while (( SECONDS < deadline )); do
    code=$(curl -s "${hdr[@]}" -o "$RUN_DIR/ready.body" -w '%{http_code}' --max-time 2 "http://$1/" || true)
    if [[ $code == 200 ]] && [[ $(stat -c %s "$RUN_DIR/ready.body") == "$BODY_BYTES" ]]; then return 0; fi
    sleep 0.2
  done
  return 1
}

# ---- certificates -------------------------------------------------------------------------
gen_certs() {
  local d=$1; mkdir -p "$d"; chmod 700 "$d"
  local newkey
  case $KEY_ALG in
    ec)  newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
    rsa) newkey=(-newkey rsa:2048) ;;
    *) die "KEY_ALG must be ec or rsa" ;;
  esac
  openssl req -x509 "${newkey[@]}" -nodes -days 3 -subj "/O=mesh-bench/CN=mesh-bench test CA" \
    -keyout "$d/ca.key" -out "$d/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  local who
  for who in client server; do
    local cn uri dns
    if [[ $who == client ]]; then
      cn=$CLIENT_CN; uri=spiffe://cluster.local/ns/payments/sa/payment-service; dns=payment-service.payments.svc.cluster.local
    else
      cn=account-service.payments; uri=spiffe://cluster.local/ns/payments/sa/account-service; dns=$SERVER_NAME
    fi
    openssl req "${newkey[@]}" -nodes -subj "/O=cluster.local/CN=$cn" -keyout "$d/$who.key" -out "$d/$who.csr" 2>/dev/null
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=URI:%s,DNS:%s\n' "$uri" "$dns" > "$d/$who.ext"
    openssl x509 -req -in "$d/$who.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
      -extfile "$d/$who.ext" -out "$d/$who.crt" 2>/dev/null
    cat "$d/$who.crt" "$d/$who.key" > "$d/$who.pem"
    openssl verify -CAfile "$d/ca.crt" "$d/$who.crt" >/dev/null || die "cert $who does not verify"
  done
  chmod 600 "$d"/*.key "$d"/*.pem
}

# ---- upstream (neutral nginx, fixed body) ----------------------------------------------------
start_upstream() {
  local d=$OUT_DIR/upstream; mkdir -p "$d"
  local body; body=$(head -c "$BODY_BYTES" /dev/zero | tr '\0' 'x')
  cat > "$d/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $d/tmp; proxy_temp_path $d/tmp; fastcgi_temp_path $d/tmp;
  uwsgi_temp_path $d/tmp; scgi_temp_path $d/tmp;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  default_type text/plain;
  server {
    listen 127.0.0.1:$UP_PORT reuseport backlog=4096;
$(for ip in "${UPSTREAM_EXTRA_IPS[@]}"; do echo "    listen $ip:$UP_PORT reuseport backlog=4096;"; done)
    location / { return 200 "$body"; }
  }
}
EOF
  mkdir -p "$d/tmp"
  "$NGINX" -p "$d" -e "$d/error.log" -c "$d/nginx.conf" > "$d/stdout.log" 2>&1 &
  UPSTREAM_PID=$!
  STARTED_PIDS+=("$UPSTREAM_PID")
  RUN_DIR=$d wait_http_200 "127.0.0.1:$UP_PORT" || die "upstream did not come up (see $d/error.log)"
}

# =============================================================================================
# IMPLEMENTATIONS  (each: start two proxies, set OUT_PID / IN_PID)
# =============================================================================================

# ---- nginx pair ------------------------------------------------------------------------------
impl_nginx_version() { "$NGINX" -v 2>&1 | sed 's/^nginx version: //'; }
impl_nginx() {
  local common="$(nginx_modules)
worker_processes $WORKERS;
daemon off;
events { worker_connections 8192; }"
  local temps="client_body_temp_path $RUN_DIR/tmp; proxy_temp_path $RUN_DIR/tmp; fastcgi_temp_path $RUN_DIR/tmp; uwsgi_temp_path $RUN_DIR/tmp; scgi_temp_path $RUN_DIR/tmp;"
  mkdir -p "$RUN_DIR/tmp"
  cat > "$RUN_DIR/out.conf" <<EOF
$common
pid $RUN_DIR/out.pid;
error_log $RUN_DIR/out.err warn;
http {
  access_log off; $temps
  keepalive_requests 10000000; keepalive_timeout 120s;
  upstream inbound { server 127.0.0.1:$IN_PORT; keepalive 256; keepalive_requests 10000000; keepalive_timeout 120s; }
  server {
    listen 127.0.0.1:$OUT_PORT backlog=4096;
    location / {
      proxy_pass https://inbound;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_certificate         $CERT_DIR/client.crt;
      proxy_ssl_certificate_key     $CERT_DIR/client.key;
      proxy_ssl_trusted_certificate $CERT_DIR/ca.crt;
      proxy_ssl_verify on;
      proxy_ssl_verify_depth 2;
      proxy_ssl_name $SERVER_NAME;
      proxy_ssl_server_name on;
      proxy_ssl_protocols TLSv1.3;
      proxy_ssl_session_reuse on;
    }
  }
$(nginx_out_http_extra)
}
$(nginx_out_stream)
EOF
  cat > "$RUN_DIR/in.conf" <<EOF
$common
pid $RUN_DIR/in.pid;
error_log $RUN_DIR/in.err warn;
http {
  access_log off; $temps
  keepalive_requests 10000000; keepalive_timeout 120s;
  upstream app { server 127.0.0.1:$UP_PORT; keepalive 256; keepalive_requests 10000000; keepalive_timeout 120s; }
  server {
    listen 127.0.0.1:$IN_PORT ssl backlog=4096;
    ssl_certificate        $CERT_DIR/server.crt;
    ssl_certificate_key    $CERT_DIR/server.key;
    ssl_client_certificate $CERT_DIR/ca.crt;
    ssl_verify_client on;
    ssl_verify_depth 2;
    ssl_protocols TLSv1.3;
    ssl_session_cache shared:in:10m;
    location / {
      # authorisation: only the payment-service identity may call
      if (\$ssl_client_s_dn !~ "^CN=payment-service\.payments,") { return 403; }
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
$(nginx_in_http_extra)
}
$(nginx_in_stream)
EOF
  "$NGINX" -p "$RUN_DIR" -e "$RUN_DIR/in.err" -c "$RUN_DIR/in.conf" > "$RUN_DIR/in.log" 2>&1 &
  IN_PID=$!
  "$NGINX" -p "$RUN_DIR" -e "$RUN_DIR/out.err" -c "$RUN_DIR/out.conf" > "$RUN_DIR/out.log" 2>&1 &
  OUT_PID=$!
}

# ---- haproxy pair ----------------------------------------------------------------------------
impl_haproxy_version() { echo "haproxy $("$HAPROXY" -v 2>&1 | head -1 | awk '{print $3}')"; }
impl_haproxy() {
  local g="global
  nbthread $WORKERS
  maxconn 4096
  ssl-default-bind-options ssl-min-ver TLSv1.3
  ssl-default-server-options ssl-min-ver TLSv1.3
defaults
  mode http
  timeout connect 5s
  timeout client 120s
  timeout server 120s
  timeout http-keep-alive 120s
  option http-keep-alive
  http-reuse always"
  cat > "$RUN_DIR/out.cfg" <<EOF
$g
frontend outbound
  bind 127.0.0.1:$OUT_PORT
  default_backend to_inbound
backend to_inbound
  server in1 127.0.0.1:$IN_PORT ssl crt $CERT_DIR/client.pem ca-file $CERT_DIR/ca.crt verify required verifyhost $SERVER_NAME sni str($SERVER_NAME) pool-max-conn 256
$(haproxy_out_extra)
EOF
  cat > "$RUN_DIR/in.cfg" <<EOF
$g
frontend inbound
  bind 127.0.0.1:$IN_PORT ssl crt $CERT_DIR/server.pem ca-file $CERT_DIR/ca.crt verify required
  # authorisation: only the payment-service identity may call
  http-request deny deny_status 403 unless { ssl_c_s_dn(CN) -m str $CLIENT_CN }
  default_backend app
backend app
  server up 127.0.0.1:$UP_PORT pool-max-conn 256
$(haproxy_in_extra)
EOF
  "$HAPROXY" -db -f "$RUN_DIR/in.cfg" > "$RUN_DIR/in.log" 2>&1 &
  IN_PID=$!
  "$HAPROXY" -db -f "$RUN_DIR/out.cfg" > "$RUN_DIR/out.log" 2>&1 &
  OUT_PID=$!
}

# ---- istio ztunnel (single process playing both roles; see RESULTS.md for why) -----------------
# ztunnel hard-codes its listener ports (15001 outbound, 15008 HBONE inbound, 15006, 15021 ...),
# binds them on the wildcard address, and only learns the destination from SO_ORIGINAL_DST
# (iptables REDIRECT). So on one loopback only ONE instance can run; it plays outbound AND
# inbound: client -> iptables REDIRECT -> ztunnel:15001 -> HBONE (HTTP/2 CONNECT over mTLS)
# -> same ztunnel:15008 -> upstream. Identities come from ztunnel's FAKE_CA (its built-in test
# CA), not from $CERT_DIR: ztunnel has no option to load certificates from files.
impl_ztunnel_version() {
  local c; c=$(cat "$(dirname "$ZTUNNEL_BIN")/ZTUNNEL_COMMIT" 2>/dev/null || echo unknown)
  echo "ztunnel@${c:0:12} $("$ZTUNNEL_BIN" version 2>/dev/null | grep -o 'CryptoProvider:"[^"]*"' | tr -d '"')"
}
impl_ztunnel() {
  [[ -x $ZTUNNEL_BIN ]] || die "ZTUNNEL_BIN=$ZTUNNEL_BIN not built"
  need iptables
  local p
  for p in 15000 15001 15006 15008 15020 15021 15053; do port_free "$p" || die "ztunnel port $p busy"; done
  cat > "$RUN_DIR/local.yaml" <<EOF
# Static xDS state for ztunnel (no istiod). Dedicated mode serves exactly ONE workload, and
# the inbound side always presents that workload's identity, so the single workload
# (127.0.0.1, spiffe://cluster.local/ns/payments/sa/account-service) calls itself through a
# service whose VIP is 127.0.0.1:$OUT_PORT -> targetPort $UP_PORT.
workloads:
- uid: cluster1//v1/Pod/payments/account-service
  name: account-service
  namespace: payments
  serviceAccount: account-service
  trustDomain: cluster.local
  workloadIps: ["127.0.0.1"]
  protocol: HBONE
  node: local
  network: ""
  services:
    "payments/$SERVER_NAME":
      $OUT_PORT: $UP_PORT
services:
- name: account-service
  namespace: payments
  hostname: $SERVER_NAME
  vips: ["/127.0.0.1"]
  ports:
    $OUT_PORT: $UP_PORT
EOF
  # client traffic to 127.0.0.1:OUT_PORT is captured like a sidecar/ambient redirect would do
  iptables -t nat -A OUTPUT -p tcp -d 127.0.0.1/32 --dport "$OUT_PORT" \
    -m comment --comment mesh-bench-ztunnel -j REDIRECT --to-ports 15001
  ZT_IPTABLES=1
  env -i PATH=/usr/bin:/bin HOME="$RUN_DIR" \
    FAKE_CA=true XDS_ADDRESS="" CA_ADDRESS="" LOCAL_XDS_PATH="$RUN_DIR/local.yaml" \
    PROXY_MODE=dedicated PROXY_WORKLOAD_INFO=payments/account-service/account-service \
    ZTUNNEL_WORKER_THREADS=$(( 2 * WORKERS )) IPV6_ENABLED=false RUST_LOG=${ZT_LOG:-warn} \
    "$ZTUNNEL_BIN" > "$RUN_DIR/ztunnel.log" 2>&1 &
  OUT_PID=$!
  IN_PID=$OUT_PID
  INBOUND_TLS_PORT=15008
}
impl_ztunnel_cleanup() {
  if [[ ${ZT_IPTABLES:-0} == 1 ]]; then
    iptables -t nat -D OUTPUT -p tcp -d 127.0.0.1/32 --dport "$OUT_PORT" \
      -m comment --comment mesh-bench-ztunnel -j REDIRECT --to-ports 15001 2>/dev/null || true
    ZT_IPTABLES=0
  fi
}

# ---- protocols beyond HTTP/1.1 (h2, gRPC, TCP, connection set-up, slow clients) ----------------
source "$BENCH_DIR/protocols.sh"

# ---- optional add-on implementations ----------------------------------------------------------
if [[ -d $BENCH_DIR/impls.d ]]; then
  for f in "$BENCH_DIR"/impls.d/*.sh; do [[ -r $f ]] && source "$f"; done
fi

# =============================================================================================
# measurement
# =============================================================================================
run_oha() {  # $1 ip:port, $2 outfile, $3 duration(s), $4 Host header (optional)
  local hdr=(); [[ -n ${4:-} ]] && hdr=(-H "Host: $4")
  timeout -k 5 $(( $3 + 30 )) "$OHA" --no-tui --output-format json --latency-correction \
    -q "$RATE" -c "$LAT_CONNS" -z "${3}s" "${hdr[@]}" "http://$1/" > "$2" 2> "$2.err"
}
run_wrk() {  # $1 ip:port, $2 outfile, $3 Host header (optional)
  local hdr=(); [[ -n ${3:-} ]] && hdr=(-H "Host: $3")
  timeout -k 5 $(( MAX_DURATION + 30 )) "$WRK" -t"$MAX_THREADS" -c"$MAX_CONNS" -d"${MAX_DURATION}s" \
    "${hdr[@]}" "http://$1/" > "$2" 2>&1
}

# measure one (impl, round); appends one line to raw.tsv
measure() {
  local impl=$1 round=$2 ver="-"
  RUN_DIR=$OUT_DIR/runs/r${round}-$impl; mkdir -p "$RUN_DIR"
  OUT_PID=""; IN_PID=""; INBOUND_TLS_PORT=$IN_PORT; INBOUND_TLS_ADDR=""; CLIENT_ADDR=""; CLIENT_HOST=""
  proto_reset_targets
  local p
  for p in "$OUT_PORT" "$IN_PORT"; do port_free "$p" || die "port $p busy before $impl"; done
  local target host=""
  if [[ $impl == direct ]]; then
    target=127.0.0.1:$UP_PORT
  else
    CURRENT_IMPL=$impl
    "impl_$impl"
    [[ -n $OUT_PID && -n $IN_PID ]] || die "impl_$impl did not set OUT_PID/IN_PID"
    STARTED_PIDS+=("$OUT_PID"); [[ $IN_PID != "$OUT_PID" ]] && STARTED_PIDS+=("$IN_PID")
    target=${CLIENT_ADDR:-127.0.0.1:$OUT_PORT}; host=$CLIENT_HOST
    if ! wait_http_200 "$target" "$host"; then
      log "ERROR: $impl not ready on $target (Host: ${host:-default}) within ${READY_TIMEOUT}s; logs in $RUN_DIR"
      stop_impl "$impl"; return 1
    fi
  fi
  # idle RSS: ready, one request served, no load yet
  local idle_o=0 idle_i=0
  if [[ -n $OUT_PID ]]; then
    idle_o=$(mem_kb VmRSS "$OUT_PID")
    [[ $IN_PID != "$OUT_PID" ]] && idle_i=$(mem_kb VmRSS "$IN_PID")
  fi
  # mTLS enforcement check: a TLS client WITHOUT a client cert must not get a 200
  local mtls="n/a"
  if [[ $impl != direct ]]; then
    local code
    code=$(curl -sk --max-time 3 -o /dev/null -w '%{http_code}' "https://${INBOUND_TLS_ADDR:-127.0.0.1:$INBOUND_TLS_PORT}/" 2>/dev/null || true)
    if [[ $code == 200 ]]; then mtls="NOT-ENFORCED"; else mtls="enforced(${code:-000})"; fi
  fi
  # warm-up (connections, TLS sessions, pools)
  run_oha "$target" "$RUN_DIR/warmup.json" "$WARMUP_SECONDS" "$host" || true
  # fixed-rate latency run
  local c0o c0i c1o c1i c2o c2i
  c0o=$( [[ -n $OUT_PID ]] && cpu_ticks "$OUT_PID" || echo 0 ); c0i=$( [[ -n $IN_PID && $IN_PID != "$OUT_PID" ]] && cpu_ticks "$IN_PID" || echo 0 )
  run_oha "$target" "$RUN_DIR/oha.json" "$LAT_DURATION" "$host" || log "WARN: oha exit $? for $impl"
  c1o=$( [[ -n $OUT_PID ]] && cpu_ticks "$OUT_PID" || echo 0 ); c1i=$( [[ -n $IN_PID && $IN_PID != "$OUT_PID" ]] && cpu_ticks "$IN_PID" || echo 0 )
  # max throughput run
  run_wrk "$target" "$RUN_DIR/wrk.txt" "$host" || log "WARN: wrk exit $? for $impl"
  c2o=$( [[ -n $OUT_PID ]] && cpu_ticks "$OUT_PID" || echo 0 ); c2i=$( [[ -n $IN_PID && $IN_PID != "$OUT_PID" ]] && cpu_ticks "$IN_PID" || echo 0 )
  local rss_o=0 rss_i=0 hwm_o=0 hwm_i=0
  if [[ -n $OUT_PID ]]; then
    rss_o=$(mem_kb VmRSS "$OUT_PID"); hwm_o=$(mem_kb VmHWM "$OUT_PID")
    if [[ $IN_PID != "$OUT_PID" ]]; then rss_i=$(mem_kb VmRSS "$IN_PID"); hwm_i=$(mem_kb VmHWM "$IN_PID"); fi
  fi
  measure_protocols "$impl" "$round"
  if [[ $impl != direct ]] && declare -F "impl_${impl}_version" >/dev/null; then ver=$("impl_${impl}_version" | tr '\t' ' '); fi
  [[ $impl == direct ]] && ver="nginx $("$NGINX" -v 2>&1 | sed 's/^nginx version: nginx\///') (upstream only)"
  stop_impl "$impl"
  # parse
  local oha_vals wrk_rps wrk_n wrk_err
  oha_vals=$(jq -r '[.latencyPercentiles.p50, .latencyPercentiles.p90, .latencyPercentiles.p99, .latencyPercentiles["p99.9"],
                     .summary.requestsPerSec, .summary.successRate,
                     ([.statusCodeDistribution[]?] | add // 0),
                     ((.statusCodeDistribution["200"] // 0))] | map(tostring) | join("\t")' "$RUN_DIR/oha.json" 2>/dev/null \
             || printf 'nan\tnan\tnan\tnan\tnan\tnan\t0\t0')
  [[ -n $oha_vals ]] || oha_vals=$(printf 'nan\tnan\tnan\tnan\tnan\tnan\t0\t0')   # empty/missing oha output
  wrk_rps=$(awk '/^Requests\/sec:/{print $2}' "$RUN_DIR/wrk.txt" 2>/dev/null); wrk_rps=${wrk_rps:-nan}
  wrk_n=$(awk '/requests in/{print $1}' "$RUN_DIR/wrk.txt" 2>/dev/null); wrk_n=${wrk_n:-0}
  wrk_err=$(awk '/Non-2xx|Socket errors/{e=e $0 ";"} END{print (e==""?"-":e)}' "$RUN_DIR/wrk.txt" 2>/dev/null | tr '\t' ' ')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
    "$round" "$impl" "$oha_vals" \
    "$((c1o-c0o))" "$((c1i-c0i))" "$wrk_rps" "$wrk_n" "$((c2o-c1o))" "$((c2i-c1i))" \
    "$rss_o" "$rss_i" "$hwm_o" "$hwm_i" "$([[ $IN_PID == "$OUT_PID" ]] && echo 1 || echo 2)" \
    "$mtls" "$wrk_err" "$CLK_TCK" "$ver" "$idle_o" "$idle_i" >> "$OUT_DIR/raw.tsv"
  log "done $impl round $round: $(tail -1 "$OUT_DIR/raw.tsv" | cut -f2,3,5,13,22 | tr '\t' ' ')"
}
stop_impl() {
  local impl=$1 p
  [[ $impl == direct ]] && return 0
  for p in "$OUT_PID" "$IN_PID"; do [[ -n $p ]] && kill_tree "$p"; done
  if declare -F "impl_${impl}_cleanup" >/dev/null; then "impl_${impl}_cleanup"; fi
  CURRENT_IMPL=""
  # drop the proxies from STARTED_PIDS
  local keep=() s
  for s in "${STARTED_PIDS[@]}"; do [[ $s == "$OUT_PID" || $s == "$IN_PID" ]] || keep+=("$s"); done
  STARTED_PIDS=("${keep[@]}")
  sleep 1   # let TIME_WAIT / ports settle a bit
}

# =============================================================================================
main() {
  if [[ ${1:-} == --list ]]; then declare -F | awk '{print $3}' | grep '^impl_' | grep -v '_version$\|_cleanup$\|_upstream_ips$' | sed 's/^impl_//'; exit 0; fi
  if [[ ${1:-} == -h || ${1:-} == --help ]]; then sed -n '2,85p' "$0"; exit 0; fi
  local impls=("$@")
  (( ${#impls[@]} )) || impls=(nginx haproxy)
  mkdir -p "$OUT_DIR/runs"
  local i
  for i in "${impls[@]}"; do declare -F "impl_$i" >/dev/null || die "unknown implementation: $i (try --list)"; done
  need openssl; need curl; need jq; need python3; need ss; need "$WRK"; need "$NGINX"
  [[ -x $OHA ]] || need "$OHA"
  for p in "$UP_PORT" "$OUT_PORT" "$IN_PORT"; do port_free "$p" || die "port $p already in use"; done

  {
    echo "date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host=$(uname -srm) cpus=$(nproc) model=$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
    echo "oha=$("$OHA" --version 2>&1 | head -1) wrk=$("$WRK" -v 2>&1 | head -1 | awk '{print $2}') nginx=$("$NGINX" -v 2>&1 | sed 's/.*\///') openssl=$(openssl version | awk '{print $2}')"
    echo "impls=${impls[*]} rounds=$ROUNDS rate=$RATE lat_conns=$LAT_CONNS lat_duration=${LAT_DURATION}s warmup=${WARMUP_SECONDS}s max_threads=$MAX_THREADS max_conns=$MAX_CONNS max_duration=${MAX_DURATION}s workers_per_proxy=$WORKERS body_bytes=$BODY_BYTES key_alg=$KEY_ALG"
    echo "lat_cmd=$OHA --no-tui --output-format json --latency-correction -q $RATE -c $LAT_CONNS -z ${LAT_DURATION}s [-H 'Host: CLIENT_HOST'] http://ADDR/"
    echo "max_cmd=$WRK -t$MAX_THREADS -c$MAX_CONNS -d${MAX_DURATION}s [-H 'Host: CLIENT_HOST'] http://ADDR/"
    echo "ADDR=127.0.0.1:$UP_PORT (direct), 127.0.0.1:$OUT_PORT or the implementation's CLIENT_ADDR; CLIENT_HOST only where the implementation sets one"
    echo "protocols=$PROTOCOLS rates=$RATES proto_duration=${PROTO_DURATION}s proto_warmup=${PROTO_WARMUP}s proto_concurrency=$PROTO_CONCURRENCY proto_conns=$PROTO_CONNS setup_duration=${SETUP_DURATION}s setup_concurrency=$SETUP_CONCURRENCY slow_clients=$SLOW_CLIENTS slow_interval=$SLOW_INTERVAL tcp_payload=$TCP_PAYLOAD"
    echo "loadgen=$LOADGEN (bench/loadgen; one JSON line per test in loadgen.jsonl)"
  } > "$OUT_DIR/meta.txt"
  cat "$OUT_DIR/meta.txt" >&2

  CERT_DIR=$OUT_DIR/certs
  gen_certs "$CERT_DIR"
  UPSTREAM_EXTRA_IPS=()
  for i in "${impls[@]}"; do
    if declare -F "impl_${i}_upstream_ips" >/dev/null; then
      while read -r ip; do
        [[ -n $ip && " ${UPSTREAM_EXTRA_IPS[*]} " != *" $ip "* ]] && UPSTREAM_EXTRA_IPS+=("$ip")  # once each
      done < <("impl_${i}_upstream_ips")
    fi
  done
  start_upstream
  start_echo_upstream
  printf 'round\timpl\tp50_s\tp90_s\tp99_s\tp999_s\toha_rps\toha_success\toha_n\toha_n200\tcpu_out_lat_ticks\tcpu_in_lat_ticks\twrk_rps\twrk_n\tcpu_out_max_ticks\tcpu_in_max_ticks\trss_out_kb\trss_in_kb\thwm_out_kb\thwm_in_kb\tnprocs\tmtls_check\twrk_errors\tclk_tck\tversion\tidle_rss_out_kb\tidle_rss_in_kb\n' > "$OUT_DIR/raw.tsv"

  local order=(direct "${impls[@]}") r k n=$(( ${#impls[@]} + 1 ))
  for (( r=1; r<=ROUNDS; r++ )); do
    for (( k=0; k<n; k++ )); do
      local impl=${order[$(( (k + r - 1) % n ))]}   # rotate the order every round
      log "round $r/$ROUNDS: $impl"
      measure "$impl" "$r" || log "round $r $impl FAILED"
    done
  done
  python3 "$BENCH_DIR/summarize.py" "$OUT_DIR" | tee "$OUT_DIR/summary.md"
  log "raw data: $OUT_DIR"
}
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
