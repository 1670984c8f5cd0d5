# Protocols beyond the HTTP/1.1 method of mesh-bench.sh (sourced by it; issue #5).
#
# For every (implementation, round), after the oha/wrk HTTP/1.1 runs, the proxies stay up and
# bench/loadgen (paymesh-bench-loadgen) runs, for each test of $PROTOCOLS:
#   h1 h2 grpc-unary grpc-stream tcp   open loop at each rate of $RATES (latency from the
#                                      intended send time: no coordinated omission)
#   connect-rate     closed loop, a new TCP connection per HTTP/1.1 request (Connection: close)
#                    through the pair: new connections per second
#   tls-handshake    closed loop, a full TLS 1.3 handshake with a client certificate to the
#                    inbound (mTLS) port: handshakes per second (no `direct`: nothing to compare)
#   slow-clients     $SLOW_CLIENTS connections trickling an unfinished request header to the
#                    client-facing port while h1 runs at $RATE: the normal traffic's percentiles
#                    (compare with h1 at $RATE) and how many slow connections the proxy kept
# Each run appends one JSON line (the loadgen report + round, impl, test, pair CPU seconds) to
# $OUT_DIR/loadgen.jsonl; summarize.py turns them into one table per test.
#
# Upstreams: h1 and connect-rate hit the neutral nginx ($UP_PORT, 1 KiB body, as the oha runs);
# h2, gRPC and TCP hit paymesh-echo (HTTP/1.1+h2c `/health` on $ECHO_PORT, gRPC Echo on
# $ECHO_GRPC_PORT, TCP echo on $ECHO_TCP_PORT), one instance per upstream IP.
# Ports of the nginx/haproxy pairs: h1 OUT_PORT->IN_PORT (as before), h2 +1, gRPC +2, TCP +3.
# An implementation that listens elsewhere sets the variables of proto_reset_targets.

PROTOCOLS=${PROTOCOLS:-h1 h2 grpc-unary grpc-stream tcp connect-rate tls-handshake slow-clients}
RATES=${RATES:-1000 5000}
PROTO_DURATION=${PROTO_DURATION:-$LAT_DURATION}
PROTO_WARMUP=${PROTO_WARMUP:-1}
PROTO_CONCURRENCY=${PROTO_CONCURRENCY:-32}   # open-loop workers (h1 / TCP: one connection each)
PROTO_CONNS=${PROTO_CONNS:-2}                # h2 / gRPC connections the workers share
SETUP_DURATION=${SETUP_DURATION:-$MAX_DURATION}
SETUP_CONCURRENCY=${SETUP_CONCURRENCY:-16}   # closed-loop workers for connect-rate / tls-handshake
SLOW_CLIENTS=${SLOW_CLIENTS:-500}
SLOW_INTERVAL=${SLOW_INTERVAL:-1s}
TCP_PAYLOAD=${TCP_PAYLOAD:-128}
ECHO_PORT=${ECHO_PORT:-18090}
ECHO_GRPC_PORT=${ECHO_GRPC_PORT:-18091}
ECHO_TCP_PORT=${ECHO_TCP_PORT:-18092}
LOADGEN=${LOADGEN:-${PAYMESH_BIN_DIR:-$BENCH_DIR/../../target/release}/paymesh-bench-loadgen}
ECHO_BIN=${ECHO_BIN:-${PAYMESH_BIN_DIR:-$BENCH_DIR/../../target/release}/paymesh-echo}
OUT_H2=$(( OUT_PORT + 1 )); OUT_GRPC=$(( OUT_PORT + 2 )); OUT_TCP=$(( OUT_PORT + 3 ))
IN_H2=$(( IN_PORT + 1 )); IN_GRPC=$(( IN_PORT + 2 )); IN_TCP=$(( IN_PORT + 3 ))

proto_on() { [[ " $PROTOCOLS " == *" $1 "* ]]; }
proto_any_echo() { proto_on h2 || proto_on grpc-unary || proto_on grpc-stream || proto_on tcp; }

# Targets of the current implementation (reset before each one starts; impls may override).
proto_reset_targets() {
  H2_ADDR=""; H2_AUTHORITY=""; GRPC_ADDR=""; GRPC_AUTHORITY=""; TCP_ADDR=""; TCP_TUNNEL=""
  HS_ADDR=""; HS_CERT=""; HS_KEY=""; HS_SNI=$SERVER_NAME; HS_ALPN="h2,http/1.1"
}

# ---- upstream: paymesh-echo on 127.0.0.1 and every extra upstream IP ------------------------
start_echo_upstream() {
  proto_any_echo || return 0
  [[ -x $ECHO_BIN ]] || die "paymesh-echo not built at $ECHO_BIN (run.sh builds it)"
  [[ -x $LOADGEN ]] || die "paymesh-bench-loadgen not built at $LOADGEN (run.sh builds it)"
  local ip d=$OUT_DIR/upstream
  for ip in 127.0.0.1 "${UPSTREAM_EXTRA_IPS[@]}"; do
    TOKIO_WORKER_THREADS=1 "$ECHO_BIN" --ip "$ip" --port "$ECHO_PORT" --grpc-port "$ECHO_GRPC_PORT" \
      --tcp-port "$ECHO_TCP_PORT" --pod "echo-$ip" > "$d/echo-$ip.log" 2>&1 &
    STARTED_PIDS+=("$!")
    RUN_DIR=$d READY_TIMEOUT=10 wait_echo "$ip:$ECHO_PORT" || die "paymesh-echo on $ip did not come up (see $d/echo-$ip.log)"
  done
}
wait_echo() {  # $1 ip:port; /health answers 200
  local deadline=$(( SECONDS + READY_TIMEOUT ))
  while (( SECONDS < deadline )); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$1/health" || true) == 200 ]] && return 0
    sleep 0.1
  done
  return 1
}

# ---- nginx pair fragments ---------------------------------------------------------------------
nginx_modules() { proto_on tcp && echo "load_module /usr/lib/nginx/modules/ngx_stream_module.so;"; true; }
nginx_ssl_client() {  # $1 directive prefix (proxy / grpc)
  cat <<EOF
      $1_ssl_certificate         $CERT_DIR/client.crt;
      $1_ssl_certificate_key     $CERT_DIR/client.key;
      $1_ssl_trusted_certificate $CERT_DIR/ca.crt;
      $1_ssl_verify on;
      $1_ssl_verify_depth 2;
      $1_ssl_name $SERVER_NAME;
      $1_ssl_server_name on;
      $1_ssl_protocols TLSv1.3;
      $1_ssl_session_reuse on;
EOF
}
nginx_ssl_server() {
  cat <<EOF
    ssl_certificate        $CERT_DIR/server.crt;
    ssl_certificate_key    $CERT_DIR/server.key;
    ssl_client_certificate $CERT_DIR/ca.crt;
    ssl_verify_client on;
    ssl_verify_depth 2;
    ssl_protocols TLSv1.3;
    ssl_session_cache shared:in$1:10m;
EOF
}
# h2: h2c from the client, then HTTP/1.1 over mTLS (nginx's proxy module has no h2 upstreams);
# gRPC: grpc_pass end to end over h2 with mTLS.
nginx_out_http_extra() {
  if proto_on h2; then cat <<EOF
  upstream inbound_h2 { server 127.0.0.1:$IN_H2; keepalive 256; keepalive_requests 10000000; keepalive_timeout 120s; }
  server {
    listen 127.0.0.1:$OUT_H2 http2 backlog=4096;
    location / {
      proxy_pass https://inbound_h2;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
$(nginx_ssl_client proxy)
    }
  }
EOF
  fi
  if proto_on grpc-unary || proto_on grpc-stream; then cat <<EOF
  upstream inbound_grpc { server 127.0.0.1:$IN_GRPC; keepalive 256; keepalive_requests 10000000; keepalive_timeout 120s; }
  server {
    listen 127.0.0.1:$OUT_GRPC http2 backlog=4096;
    location / {
      grpc_pass grpcs://inbound_grpc;
$(nginx_ssl_client grpc)
    }
  }
EOF
  fi
}
nginx_in_http_extra() {
  if proto_on h2; then cat <<EOF
  upstream echo_h1 { server 127.0.0.1:$ECHO_PORT; keepalive 256; keepalive_requests 10000000; keepalive_timeout 120s; }
  server {
    listen 127.0.0.1:$IN_H2 ssl backlog=4096;
$(nginx_ssl_server h2)
    location / {
      if (\$ssl_client_s_dn !~ "^CN=payment-service\.payments,") { return 403; }
      proxy_pass http://echo_h1;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
EOF
  fi
  if proto_on grpc-unary || proto_on grpc-stream; then cat <<EOF
  upstream echo_grpc { server 127.0.0.1:$ECHO_GRPC_PORT; keepalive 256; keepalive_requests 10000000; keepalive_timeout 120s; }
  server {
    listen 127.0.0.1:$IN_GRPC ssl http2 backlog=4096;
$(nginx_ssl_server grpc)
    location / {
      if (\$ssl_client_s_dn !~ "^CN=payment-service\.payments,") { return 403; }
      grpc_pass grpc://echo_grpc;
    }
  }
EOF
  fi
}
# TCP: the stream module (Debian: libnginx-mod-stream); it cannot check the caller's name.
nginx_out_stream() {
  proto_on tcp || return 0
  cat <<EOF
stream {
  server {
    listen 127.0.0.1:$OUT_TCP backlog=4096;
    proxy_pass 127.0.0.1:$IN_TCP;
    proxy_ssl on;
$(nginx_ssl_client proxy)
  }
}
EOF
}
nginx_in_stream() {
  proto_on tcp || return 0
  cat <<EOF
stream {
  server {
    listen 127.0.0.1:$IN_TCP ssl backlog=4096;
$(nginx_ssl_server tcp)
    proxy_pass 127.0.0.1:$ECHO_TCP_PORT;
  }
}
EOF
}

# ---- haproxy pair fragments: h2 end to end (h2c in, alpn h2 over mTLS, h2c to echo) ---------
haproxy_out_extra() {
  local srv="ssl crt $CERT_DIR/client.pem ca-file $CERT_DIR/ca.crt verify required verifyhost $SERVER_NAME sni str($SERVER_NAME)"
  if proto_on h2; then printf 'frontend out_h2\n  bind 127.0.0.1:%s proto h2\n  default_backend to_in_h2\nbackend to_in_h2\n  server in1 127.0.0.1:%s %s alpn h2 pool-max-conn 256\n' "$OUT_H2" "$IN_H2" "$srv"; fi
  if proto_on grpc-unary || proto_on grpc-stream; then printf 'frontend out_grpc\n  bind 127.0.0.1:%s proto h2\n  default_backend to_in_grpc\nbackend to_in_grpc\n  server in1 127.0.0.1:%s %s alpn h2 pool-max-conn 256\n' "$OUT_GRPC" "$IN_GRPC" "$srv"; fi
  if proto_on tcp; then printf 'frontend out_tcp\n  mode tcp\n  bind 127.0.0.1:%s\n  default_backend to_in_tcp\nbackend to_in_tcp\n  mode tcp\n  server in1 127.0.0.1:%s %s\n' "$OUT_TCP" "$IN_TCP" "$srv"; fi
  true
}
haproxy_in_extra() {
  local bind="ssl crt $CERT_DIR/server.pem ca-file $CERT_DIR/ca.crt verify required"
  local authz="{ ssl_c_s_dn(CN) -m str $CLIENT_CN }"
  if proto_on h2; then printf 'frontend in_h2\n  bind 127.0.0.1:%s %s alpn h2\n  http-request deny deny_status 403 unless %s\n  default_backend echo_h2\nbackend echo_h2\n  server up 127.0.0.1:%s proto h2 pool-max-conn 256\n' "$IN_H2" "$bind" "$authz" "$ECHO_PORT"; fi
  if proto_on grpc-unary || proto_on grpc-stream; then printf 'frontend in_grpc\n  bind 127.0.0.1:%s %s alpn h2\n  http-request deny deny_status 403 unless %s\n  default_backend echo_grpc\nbackend echo_grpc\n  server up 127.0.0.1:%s proto h2 pool-max-conn 256\n' "$IN_GRPC" "$bind" "$authz" "$ECHO_GRPC_PORT"; fi
  if proto_on tcp; then printf 'frontend in_tcp\n  mode tcp\n  bind 127.0.0.1:%s %s\n  tcp-request session reject unless %s\n  default_backend echo_tcp\nbackend echo_tcp\n  mode tcp\n  server up 127.0.0.1:%s\n' "$IN_TCP" "$bind" "$authz" "$ECHO_TCP_PORT"; fi
  true
}

# ---- measurement ------------------------------------------------------------------------------
pair_ticks() {  # CPU ticks of both proxies (0 for direct)
  local t=0
  [[ -n $OUT_PID ]] && t=$(( t + $(cpu_ticks "$OUT_PID") ))
  [[ -n $IN_PID && $IN_PID != "$OUT_PID" ]] && t=$(( t + $(cpu_ticks "$IN_PID") ))
  echo "$t"
}

# $1 impl, $2 round, $3 test name, rest: loadgen arguments. Appends one JSON line.
run_loadgen() {
  local impl=$1 round=$2 test=$3; shift 3
  local out=$RUN_DIR/loadgen-$test.json t0 t1 line
  t0=$(pair_ticks)
  RUST_BACKTRACE=0 timeout -k 5 $(( PROTO_DURATION + SETUP_DURATION + 60 )) "$LOADGEN" "$@" > "$out" 2> "$out.err" || true
  t1=$(pair_ticks)
  line=$(tail -n 1 "$out" 2>/dev/null || true)
  if [[ -z $line ]] || ! jq -e . >/dev/null 2>&1 <<<"$line"; then
    local why; why=$(grep -m1 '^Error' "$out.err" || tail -n 1 "$out.err" || true)
    line=$(jq -cn --arg e "${why:-no output}" '{setup_error: $e}')
    log "WARN: loadgen $test failed for $impl: ${why:-no output}"
  fi
  jq -c --arg r "$round" --arg i "$impl" --arg t "$test" --argjson cpu "$(( t1 - t0 ))" --argjson clk "$CLK_TCK" \
    '. + {round: ($r|tonumber), impl: $i, test: $t, pair_cpu_s: ($cpu / $clk)}' <<<"$line" >> "$OUT_DIR/loadgen.jsonl"
}

measure_protocols() {  # $1 impl, $2 round; the implementation is up
  local impl=$1 round=$2 rate
  local h1_addr h1_host lg=(--duration "${PROTO_DURATION}s" --warmup "${PROTO_WARMUP}s")
  if [[ $impl == direct ]]; then
    h1_addr=127.0.0.1:$UP_PORT; h1_host=""
  else
    h1_addr=${CLIENT_ADDR:-127.0.0.1:$OUT_PORT}; h1_host=$CLIENT_HOST
  fi
  local h1_auth=(); [[ -n $h1_host ]] && h1_auth=(--authority "$h1_host")
  local h2a h2h ga gh ta tt
  if [[ $impl == direct ]]; then
    h2a=127.0.0.1:$ECHO_PORT; h2h=""; ga=127.0.0.1:$ECHO_GRPC_PORT; gh=""; ta=127.0.0.1:$ECHO_TCP_PORT; tt=""
  else
    h2a=${H2_ADDR:-127.0.0.1:$OUT_H2}; h2h=$H2_AUTHORITY
    ga=${GRPC_ADDR:-127.0.0.1:$OUT_GRPC}; gh=$GRPC_AUTHORITY
    ta=${TCP_ADDR:-127.0.0.1:$OUT_TCP}; tt=$TCP_TUNNEL
  fi
  local h2auth=(); [[ -n $h2h ]] && h2auth=(--authority "$h2h")
  local gauth=(); [[ -n $gh ]] && gauth=(--authority "$gh")
  local tun=(); [[ -n $tt ]] && tun=(--tunnel "$tt")
  for rate in $RATES; do
    local open=(--rate "$rate" --concurrency "$PROTO_CONCURRENCY" "${lg[@]}")
    proto_on h1 && run_loadgen "$impl" "$round" "h1@$rate" --mode h1 --addr "$h1_addr" "${h1_auth[@]}" "${open[@]}"
    proto_on h2 && run_loadgen "$impl" "$round" "h2@$rate" --mode h2 --addr "$h2a" "${h2auth[@]}" --path /health \
      --connections "$PROTO_CONNS" "${open[@]}"
    proto_on grpc-unary && run_loadgen "$impl" "$round" "grpc-unary@$rate" --mode grpc-unary --addr "$ga" "${gauth[@]}" \
      --connections "$PROTO_CONNS" "${open[@]}"
    proto_on grpc-stream && run_loadgen "$impl" "$round" "grpc-stream@$rate" --mode grpc-stream --addr "$ga" "${gauth[@]}" \
      --connections "$PROTO_CONNS" "${open[@]}"
    proto_on tcp && run_loadgen "$impl" "$round" "tcp@$rate" --mode tcp --addr "$ta" "${tun[@]}" --payload "$TCP_PAYLOAD" "${open[@]}"
  done
  local closed=(--concurrency "$SETUP_CONCURRENCY" --duration "${SETUP_DURATION}s" --warmup "${PROTO_WARMUP}s")
  proto_on connect-rate && run_loadgen "$impl" "$round" connect-rate --mode connect-rate --addr "$h1_addr" "${h1_auth[@]}" "${closed[@]}"
  if proto_on tls-handshake && [[ $impl != direct ]]; then
    run_loadgen "$impl" "$round" tls-handshake --mode tls-handshake \
      --addr "${HS_ADDR:-${INBOUND_TLS_ADDR:-127.0.0.1:$INBOUND_TLS_PORT}}" \
      --tls-cert "${HS_CERT:-$CERT_DIR/client.crt}" --tls-key "${HS_KEY:-$CERT_DIR/client.key}" \
      --tls-sni "$HS_SNI" --alpn "$HS_ALPN" "${closed[@]}"
  fi
  proto_on slow-clients && run_loadgen "$impl" "$round" "slow-clients@$RATE" --mode slow-clients --addr "$h1_addr" "${h1_auth[@]}" \
    --rate "$RATE" --concurrency "$PROTO_CONCURRENCY" --slow-clients "$SLOW_CLIENTS" --slow-interval "$SLOW_INTERVAL" "${lg[@]}"
  return 0
}
