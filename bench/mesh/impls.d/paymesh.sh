# paymesh pair for mesh-bench.sh (sourced by it; see the contract at the top of mesh-bench.sh).
#
#   client --HTTP/1.1--> paymesh-proxy (client pod, CLIENT_IP:15001, outbound)
#          --mTLS (HTTP/1.1, Istio's default, or h2 for the paymesh_h2 pair; certificates from
#          paymesh-control's CA)--> paymesh-proxy (server pod,
#          SERVER_IP:15006, inbound) --HTTP/1.1--> upstream nginx at SERVER_IP:$UP_PORT
#
# How the harness contract is mapped (paymesh is a real sidecar, not a port forwarder):
# - paymesh listens on fixed ports of its pod IP (15001 outbound, 15006 inbound), so the pair
#   runs on two loopback pod IPs of its own ($PAYMESH_NET.2 and .3), not on 127.0.0.1:OUT_PORT /
#   IN_PORT; the control plane gets $PAYMESH_NET.1. CLIENT_ADDR / INBOUND_TLS_ADDR tell the
#   harness where to send traffic and where to run the no-client-certificate check.
# - The client sends origin-form requests to the outbound port with
#   `Host: account-service.payments.svc.cluster.local` (what an app behind HTTP_PROXY sends in
#   absolute-form; paymesh routes both the same way). wrk cannot send absolute-form, so both
#   oha and wrk use origin-form + Host for every implementation that sets CLIENT_HOST.
# - The inbound proxy forwards to POD_IP:targetPort, so the neutral upstream also listens on
#   SERVER_IP:$UP_PORT (impl_paymesh_upstream_ips); the Service maps port 80 to it.
# - Identities come from paymesh-control's CA (bootstrap token -> CSR), not from $CERT_DIR:
#   spiffe://cluster.local/ns/payments/sa/payment-service (client pod) and .../account-service
#   (server pod), the same identities the harness's openssl certificates carry. The outbound
#   verifies the server's SPIFFE ID from the endpoint's identity; the inbound requires a mesh
#   client certificate (STRICT PeerAuthentication). paymesh has no AuthorizationPolicy
#   enforcement yet, so unlike the nginx/haproxy baselines it does not check the caller's name.
# - Each proxy runs PAYMESH_PROXY_WORKERS=$WORKERS worker threads (nginx: worker_processes,
#   haproxy: nbthread). The control plane is not counted in CPU or RSS (like istiod); its RSS is
#   logged to $RUN_DIR/control-rss.txt.

PAYMESH_BIN_DIR=${PAYMESH_BIN_DIR:-$(cd "$BENCH_DIR/../.." && pwd)/target/release}
PAYMESH_NET=${PAYMESH_NET:-127.0.77}
PM_CONTROL_IP=$PAYMESH_NET.1
PM_CLIENT_IP=$PAYMESH_NET.2
PM_SERVER_IP=$PAYMESH_NET.3
PM_HOST=account-service.payments.svc.cluster.local
PM_ADMIN_TOKEN=mesh-bench-admin-token
PM_CONTROL_PID=""
PM_PROXY_PIDS=()

impl_paymesh_version() {
  echo "$("$PAYMESH_BIN_DIR/paymesh-proxy" --version 2>/dev/null | head -1) (git $(git -C "$BENCH_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown))"
}
impl_paymesh_upstream_ips() { echo "$PM_SERVER_IP"; }

# 0 when nothing listens on $1 (ip:port)
pm_addr_free() { ! ss -Htln "src $1" | grep -q .; }

pm_wait_200() {  # $1 url
  local deadline=$(( SECONDS + READY_TIMEOUT ))
  while (( SECONDS < deadline )); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true) == 200 ]] && return 0
    sleep 0.1
  done
  return 1
}

pm_write_config() {  # $1 dir
  mkdir -p "$1/config" "$1/ca" "$1/credentials"
  cat > "$1/config/mesh.yaml" <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: payments, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: payment-service, namespace: payments}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: account-service, namespace: payments}
---
apiVersion: v1
kind: Service
metadata: {name: account-service, namespace: payments}
spec:
  selector: {app: account-service}
  ports:
  - {name: http, port: 80, targetPort: $UP_PORT}
  - {name: http2, port: 81, targetPort: $ECHO_PORT}
  - {name: grpc, port: 82, targetPort: $ECHO_GRPC_PORT}
  - {name: tcp-echo, port: 83, targetPort: $ECHO_TCP_PORT}
---
apiVersion: v1
kind: Service
metadata: {name: payment-service, namespace: payments}
spec:
  selector: {app: payment-service}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: payments}
spec: {mtls: {mode: STRICT}}
EOF
  # PM_H2_UPGRADE=UPGRADE (the paymesh_h2 pair): the http port's requests cross between the
  # sidecars as multiplexed HTTP/2 instead of Istio's default HTTP/1.1 (which the nginx and
  # haproxy pairs also use).
  if [[ -n ${PM_H2_UPGRADE:-} ]]; then
    cat >> "$1/config/mesh.yaml" <<EOF
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: account-service, namespace: payments}
spec:
  host: account-service
  trafficPolicy:
    portLevelSettings: [{port: {number: 80}, connectionPool: {http: {h2UpgradePolicy: $PM_H2_UPGRADE}}}]
EOF
  fi
  # PM_POLICIES=1: the repository's traffic policies for account-service (k8s/istio: its
  # DestinationRule's connection pool, outlier detection and least-request balancing, and the
  # `reads` rule's timeout and retries), on this pair's port, to measure what enforcing them costs.
  if [[ -n ${PM_POLICIES:-} ]]; then
    cat >> "$1/config/mesh.yaml" <<EOF
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: account-service, namespace: payments}
spec:
  host: account-service
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 2s}
      http: {http1MaxPendingRequests: 50, http2MaxRequests: 200, maxRequestsPerConnection: 0, maxRetries: 3, idleTimeout: 60s}
    outlierDetection: {consecutive5xxErrors: 5, consecutiveGatewayErrors: 3, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: account-service, namespace: payments}
spec:
  hosts: [account-service]
  http:
  - name: reads
    match: [{method: {exact: GET}}]
    route: [{destination: {host: account-service, port: {number: 80}}}]
    timeout: 3s
    retries: {attempts: 3, perTryTimeout: 1s, retryOn: "5xx,reset,connect-failure"}
EOF
  fi
  cat > "$1/pods.yaml" <<EOF
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata:
    name: payment-service-0
    namespace: payments
    labels: {app: payment-service}
    annotations: {paymesh.io/sidecar: "true"}
  spec:
    serviceAccountName: payment-service
    containers: [{name: app, image: bench-client, ports: [{containerPort: 8080}]}]
  status: {podIP: $PM_CLIENT_IP}
- apiVersion: v1
  kind: Pod
  metadata:
    name: account-service-0
    namespace: payments
    labels: {app: account-service}
    annotations: {paymesh.io/sidecar: "true"}
  spec:
    serviceAccountName: account-service
    containers:
    - name: app
      image: nginx
      ports: [{containerPort: $UP_PORT}, {containerPort: $ECHO_PORT}, {containerPort: $ECHO_GRPC_PORT}, {containerPort: $ECHO_TCP_PORT}]
  status: {podIP: $PM_SERVER_IP}
EOF
  ( umask 077; printf '%s\n' "$PM_ADMIN_TOKEN" > "$1/admin-token" )
}

pm_token() {  # $1 service account, $2 pod, $3 output file
  local answer
  answer=$(curl -s --max-time 5 -X POST -H "Authorization: Bearer $PM_ADMIN_TOKEN" \
    -H 'Content-Type: application/json' \
    -d "{\"namespace\":\"payments\",\"serviceAccount\":\"$1\",\"pod\":\"$2\"}" \
    "http://$PM_CONTROL_IP:15014/debug/bootstrap-token") || die "paymesh: bootstrap-token request failed"
  ( umask 077; jq -er .token <<<"$answer" > "$3" ) || die "paymesh: no token for $2: $answer"
}

pm_start_proxy() {  # $1 pod, $2 service account, $3 ip; sets PM_LAST_PID
  local tok=$RUN_DIR/$1.token
  pm_token "$2" "$1" "$tok"
  PAYMESH_PROXY_WORKERS=$WORKERS RUST_LOG=${PM_LOG:-warn} "$PAYMESH_BIN_DIR/paymesh-proxy" --mode sidecar \
    --pod "$1" --namespace payments --service-account "$2" --ip "$3" \
    --control "$PM_CONTROL_IP:15012" --root-cert "$RUN_DIR/ca/root-cert.pem" --token-file "$tok" \
    > "$RUN_DIR/$1.out" 2> "$RUN_DIR/$1.log" &
  PM_LAST_PID=$!
  PM_PROXY_PIDS+=("$PM_LAST_PID")
}

# A client certificate for the TLS handshake test against the inbound port: the identity of
# payment-service, signed with the control plane's own CA key (its self-signed root in --ca-dir),
# so the inbound accepts it as a mesh certificate. Quicker than a CSR over the CA's gRPC API,
# and the same chain a proxy gets (paymesh signs leaves directly with its root).
pm_mesh_client_cert() {  # $1 output prefix
  local ca=$RUN_DIR/ca
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/O=cluster.local" \
    -keyout "$1.key" -out "$1.csr" 2>/dev/null || return 1
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=URI:spiffe://cluster.local/ns/payments/sa/payment-service\n' > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$ca/ca-cert.pem" -CAkey "$ca/ca-key.pem" -CAcreateserial -days 1 \
    -extfile "$1.ext" -out "$1.crt" 2>/dev/null || return 1
  chmod 600 "$1.key"
}

impl_paymesh() {
  local b
  for b in paymesh-control paymesh-proxy; do
    [[ -x $PAYMESH_BIN_DIR/$b ]] || die "paymesh: $PAYMESH_BIN_DIR/$b not built (run.sh builds it)"
  done
  local a
  for a in "$PM_CONTROL_IP:15012" "$PM_CONTROL_IP:15014" "$PM_CLIENT_IP:15001" "$PM_CLIENT_IP:15006" \
           "$PM_SERVER_IP:15001" "$PM_SERVER_IP:15006"; do
    pm_addr_free "$a" || die "paymesh: $a busy (set PAYMESH_NET to another 127.x.y)"
  done
  pm_write_config "$RUN_DIR"
  "$PAYMESH_BIN_DIR/paymesh-control" -f "$RUN_DIR/config" --pods "$RUN_DIR/pods.yaml" \
    --ca-dir "$RUN_DIR/ca" --credentials-dir "$RUN_DIR/credentials" \
    --grpc-addr "$PM_CONTROL_IP:15012" --monitoring-addr "$PM_CONTROL_IP:15014" \
    --admin-token-file "$RUN_DIR/admin-token" \
    > "$RUN_DIR/control.out" 2> "$RUN_DIR/control.log" &
  PM_CONTROL_PID=$!
  pm_wait_200 "http://$PM_CONTROL_IP:15014/ready" || die "paymesh: control plane not ready (see $RUN_DIR/control.log)"
  pm_start_proxy account-service-0 account-service "$PM_SERVER_IP"; IN_PID=$PM_LAST_PID
  pm_start_proxy payment-service-0 payment-service "$PM_CLIENT_IP"; OUT_PID=$PM_LAST_PID
  pm_wait_200 "http://$PM_SERVER_IP:15021/healthz/ready" || log "paymesh: inbound proxy not ready (see $RUN_DIR/account-service-0.log)"
  pm_wait_200 "http://$PM_CLIENT_IP:15021/healthz/ready" || log "paymesh: outbound proxy not ready (see $RUN_DIR/payment-service-0.log)"
  echo "control plane VmRSS kB after both proxies connected: $(mem_kb VmRSS "$PM_CONTROL_PID")" > "$RUN_DIR/control-rss.txt"
  CLIENT_ADDR=$PM_CLIENT_IP:15001
  CLIENT_HOST=$PM_HOST
  INBOUND_TLS_ADDR=$PM_SERVER_IP:15006
  # protocols.sh: every protocol goes to the one outbound port, routed by authority; TCP is an
  # HTTP CONNECT to the tcp-echo Service port (paymesh has no transparent capture).
  H2_ADDR=$CLIENT_ADDR; H2_AUTHORITY=$PM_HOST:81
  GRPC_ADDR=$CLIENT_ADDR; GRPC_AUTHORITY=$PM_HOST:82
  TCP_ADDR=$CLIENT_ADDR; TCP_TUNNEL=$PM_HOST:83
  HS_ADDR=$INBOUND_TLS_ADDR; HS_ALPN=h2
  if pm_mesh_client_cert "$RUN_DIR/mesh-client"; then
    HS_CERT=$RUN_DIR/mesh-client.crt; HS_KEY=$RUN_DIR/mesh-client.key
  else
    log "paymesh: could not sign a mesh client certificate; the handshake test will be rejected"
  fi
}

# The same pair with `h2UpgradePolicy: UPGRADE` on the http port: one multiplexed HTTP/2
# connection between the sidecars instead of a pool of HTTP/1.1 mutual TLS connections.
impl_paymesh_h2_version() { impl_paymesh_version; }
impl_paymesh_h2() { PM_H2_UPGRADE=UPGRADE impl_paymesh; }
impl_paymesh_h2_upstream_ips() { impl_paymesh_upstream_ips; }
impl_paymesh_h2_cleanup() { impl_paymesh_cleanup; }

impl_paymesh_cleanup() {  # the harness kills OUT_PID/IN_PID; this also covers a failed start
  local p
  for p in "${PM_PROXY_PIDS[@]}" "$PM_CONTROL_PID"; do [[ -n $p ]] && kill_tree "$p"; done
  PM_PROXY_PIDS=()
  PM_CONTROL_PID=""
}
