#!/usr/bin/env python3
"""Generates N Kubernetes and Istio resources for benchmarking `paymesh analyze`.

The mix is what a mesh of many small services looks like: each namespace has a
Namespace (injection on) and a PeerAuthentication (STRICT); each service has a
Deployment, a Service, a DestinationRule with v1/v2 subsets, a
VirtualService with a header override and a weighted split, and an AuthorizationPolicy
allowing its caller. Every reference resolves (hosts are Services, subsets exist,
weights sum to 100), so analyzers find the work of a clean configuration, not of errors.

Usage: generate.py N OUT_DIR [--services-per-namespace K] [--per-file M]
Writes exactly N resources into OUT_DIR as multi-document files of at most M resources
(default 100), deterministic for a given N.
"""

import argparse
import os
import sys

PER_SERVICE = 5  # Deployment, Service, DestinationRule, VirtualService, AuthorizationPolicy
PER_NAMESPACE = 2  # Namespace, PeerAuthentication


def namespace_docs(ns):
    yield f"""apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
  labels:
    istio-injection: enabled
"""
    yield f"""apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: {ns}
spec:
  mtls:
    mode: STRICT
"""


def service_docs(ns, svc, caller, port):
    host = f"{svc}.{ns}.svc.cluster.local"
    yield f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: {svc}
  namespace: {ns}
  labels:
    app: {svc}
    version: v1
spec:
  replicas: 2
  selector:
    matchLabels:
      app: {svc}
      version: v1
  template:
    metadata:
      labels:
        app: {svc}
        version: v1
    spec:
      containers:
      - name: app
        image: ghcr.io/payments-engine/payments:0.1.0
        ports:
        - name: http
          containerPort: {port}
        readinessProbe:
          httpGet:
            path: /ready
            port: http
        resources:
          requests:
            cpu: 100m
            memory: 64Mi
"""
    yield f"""apiVersion: v1
kind: Service
metadata:
  name: {svc}
  namespace: {ns}
  labels:
    app: {svc}
spec:
  selector:
    app: {svc}
  ports:
  - name: http
    port: {port}
    targetPort: http
    appProtocol: http
"""
    yield f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: {svc}
  namespace: {ns}
spec:
  host: {host}
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 2s
      http:
        http1MaxPendingRequests: 50
        maxRetries: 3
    outlierDetection:
      consecutive5xxErrors: 5
      interval: 10s
      baseEjectionTime: 30s
      maxEjectionPercent: 50
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
"""
    yield f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {svc}
  namespace: {ns}
spec:
  hosts:
  - {host}
  http:
  - name: canary-opt-in
    match:
    - headers:
        x-canary:
          exact: "true"
    route:
    - destination:
        host: {host}
        subset: v2
        port:
          number: {port}
  - name: split
    route:
    - destination:
        host: {host}
        subset: v1
        port:
          number: {port}
      weight: 90
    - destination:
        host: {host}
        subset: v2
        port:
          number: {port}
      weight: 10
    timeout: 5s
    retries:
      attempts: 2
      perTryTimeout: 2s
      retryOn: connect-failure,refused-stream
"""
    yield f"""apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: {svc}
  namespace: {ns}
spec:
  selector:
    matchLabels:
      app: {svc}
  action: ALLOW
  rules:
  - from:
    - source:
        principals:
        - cluster.local/ns/{ns}/sa/{caller}
    to:
    - operation:
        methods:
        - GET
        - POST
        paths:
        - /v1/*
"""


def resources(n, services_per_namespace):
    """Yields (namespace, document) until exactly n documents were produced."""
    count = 0
    ns_index = 0
    while True:
        ns = f"team-{ns_index:04d}"
        for doc in namespace_docs(ns):
            if count == n:
                return
            yield ns, doc
            count += 1
        for s in range(services_per_namespace):
            svc = f"svc-{s:03d}"
            caller = f"svc-{(s - 1) % services_per_namespace:03d}"
            for doc in service_docs(ns, svc, caller, 8000 + s):
                if count == n:
                    return
                yield ns, doc
                count += 1
        ns_index += 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, help="number of resources")
    parser.add_argument("out", help="output directory (created; must be empty or absent)")
    parser.add_argument("--services-per-namespace", type=int, default=10)
    parser.add_argument("--per-file", type=int, default=100)
    args = parser.parse_args()
    if args.n < 0 or args.services_per_namespace < 1 or args.per_file < 1:
        parser.error("N must be >= 0, the other counts >= 1")
    os.makedirs(args.out, exist_ok=True)
    if os.listdir(args.out):
        parser.error(f"{args.out} is not empty")

    batch, file_index = [], 0

    def flush():
        nonlocal batch, file_index
        if batch:
            path = os.path.join(args.out, f"resources-{file_index:05d}.yaml")
            with open(path, "w", encoding="utf-8") as f:
                f.write("---\n".join(batch))
            batch, file_index = [], file_index + 1

    for _, doc in resources(args.n, args.services_per_namespace):
        batch.append(doc)
        if len(batch) == args.per_file:
            flush()
    flush()
    print(f"wrote {args.n} resources in {file_index} files to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
