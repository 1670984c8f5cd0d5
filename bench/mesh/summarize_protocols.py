#!/usr/bin/env python3
"""Summarise protocols.sh's loadgen.jsonl (one JSON line per round, implementation and test)
into Markdown tables, one per test: fixed-rate protocols (added latency vs `direct` of the same
round), new connections per second, TLS handshakes per second, and slow clients beside normal
traffic (against h1 at the same rate, same round and implementation).

Values are mean [min..max] over rounds. Usage: summarize_protocols.py OUT_DIR (summarize.py
calls it after the HTTP/1.1 tables).
"""
import json
import os
import sys
from collections import defaultdict

from stats import agg, num

ORDER = ["h1", "h2", "grpc-unary", "grpc-stream", "tcp"]
PATHS = {
    "h1": "HTTP/1.1 keep-alive, 1 KiB body from nginx",
    "h2": "h2c client → outbound; pairs carry it as their h2 support allows (see README); /health of paymesh-echo",
    "grpc-unary": "gRPC Echo/Unary (paymesh-echo), 128-byte payload",
    "grpc-stream": "one message + answer on a long-lived gRPC Echo/Chat stream per worker",
    "tcp": "TCP echo round trip of 128 bytes on kept-open connections (paymesh: via HTTP CONNECT)",
}


def cpu_per_10k(r):
    ok = num(r.get("ok"))
    return num(r.get("pair_cpu_s")) / (ok / 1e4) if ok else float("nan")


def failures(r):
    if "setup_error" in r:
        return f"set-up failed: {r['setup_error'][:160]}"
    bad = int(num(r.get("errors")) or 0) + int(num(r.get("dropped")) or 0)
    if bad:
        return f"{bad} errors/dropped of {int(num(r.get('started')) + num(r.get('dropped')))} (e.g. {r.get('first_error') or 'dropped: client behind'})"
    return None


def load(out_dir):
    path = os.path.join(out_dir, "loadgen.jsonl")
    if not os.path.exists(path):
        return None
    runs = defaultdict(dict)  # test -> (round, impl) -> report
    impls = []
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        r = json.loads(line)
        runs[r["test"]][(r["round"], r["impl"])] = r
        if r["impl"] not in impls:
            impls.append(r["impl"])
    return runs, impls


def rounds_of(table):
    return sorted({k[0] for k in table})


def notes_for(table, impl):
    out = set()
    for (rnd, i), r in table.items():
        if i == impl:
            f = failures(r)
            if f:
                out.add(f"round {rnd}: {f}")
    return sorted(out)


def fixed_rate(test, table, impls):
    proto, rate = test.split("@")
    print(f"### {proto} @ {rate}/s — {PATHS.get(proto, '')}\n")
    d = [table[(k, "direct")] for k in rounds_of(table) if (k, "direct") in table]
    if d:
        print("| direct | p50 ms | p90 ms | p99 ms | p99.9 ms | achieved/s |")
        print("|---|---|---|---|---|---|")
        print("| no proxies | " + " | ".join(
            [agg([num(x.get(f"{q}_ms")) for x in d]) for q in ("p50", "p90", "p99", "p999")]
            + [agg([num(x.get("achieved_rps")) for x in d], "{:.0f}")]) + " |\n")
    print("| pair | added p50 ms | added p90 ms | added p99 ms | added p99.9 ms | p99 × direct | achieved/s | pair CPU-s per 10k |")
    print("|---|---|---|---|---|---|---|---|")
    for impl in impls:
        if impl == "direct":
            continue
        cols = defaultdict(list)
        for k in rounds_of(table):
            r, dr = table.get((k, impl)), table.get((k, "direct"))
            if not r:
                continue
            for q in ("p50", "p90", "p99", "p999"):
                cols[q].append(num(r.get(f"{q}_ms")) - (num(dr.get(f"{q}_ms")) if dr else float("nan")))
            cols["ratio"].append(num(r.get("p99_ms")) / num(dr.get("p99_ms")) if dr and num(dr.get("p99_ms")) else float("nan"))
            cols["rps"].append(num(r.get("achieved_rps")))
            cols["cpu"].append(cpu_per_10k(r))
        if not cols:
            continue
        print(f"| {impl} | " + " | ".join([agg(cols[q]) for q in ("p50", "p90", "p99", "p999")]
                                          + [agg(cols["ratio"], "{:.2f}"), agg(cols["rps"], "{:.0f}"), agg(cols["cpu"], "{:.2f}")]) + " |")
        for n in notes_for(table, impl):
            print(f"|   ↳ {n} ||||||||")
    for n in notes_for(table, "direct"):
        print(f"|   ↳ direct {n} ||||||||")
    print()


def closed_loop(test, table, impls, what):
    print(f"### {what}\n")
    print("| pair | per second | × direct | p50 ms | p99 ms | pair CPU-s per 10k |")
    print("|---|---|---|---|---|---|")
    for impl in impls:
        cols = defaultdict(list)
        for k in rounds_of(table):
            r, dr = table.get((k, impl)), table.get((k, "direct"))
            if not r:
                continue
            cols["rps"].append(num(r.get("achieved_rps")))
            cols["ratio"].append(num(r.get("achieved_rps")) / num(dr.get("achieved_rps")) if dr and num(dr.get("achieved_rps")) else float("nan"))
            cols["p50"].append(num(r.get("p50_ms")))
            cols["p99"].append(num(r.get("p99_ms")))
            cols["cpu"].append(cpu_per_10k(r) if impl != "direct" else float("nan"))
        if not cols:
            continue
        print(f"| {impl} | " + " | ".join([agg(cols["rps"], "{:.0f}"), agg(cols["ratio"], "{:.2f}"),
                                           agg(cols["p50"]), agg(cols["p99"]), agg(cols["cpu"], "{:.2f}")]) + " |")
        for n in notes_for(table, impl):
            print(f"|   ↳ {n} ||||||")
    print()


def slow_clients(test, table, base, impls):
    rate = test.split("@")[1]
    print(f"### Slow clients beside h1 @ {rate}/s (p99 with vs without, same round and pair)\n")
    print("| pair | p99 ms without | p99 ms with | p99 change ms | p99.9 ms with | achieved/s with | slow connections opened / still open at end |")
    print("|---|---|---|---|---|---|---|")
    for impl in impls:
        cols = defaultdict(list)
        kept = []
        for k in rounds_of(table):
            r = table.get((k, impl))
            if not r:
                continue
            b = (base or {}).get((k, impl))
            without = num(b.get("p99_ms")) if b else float("nan")
            cols["without"].append(without)
            cols["with"].append(num(r.get("p99_ms")))
            cols["delta"].append(num(r.get("p99_ms")) - without)
            cols["p999"].append(num(r.get("p999_ms")))
            cols["rps"].append(num(r.get("achieved_rps")))
            s = r.get("slow") or {}
            kept.append(f"{s.get('opened', '?')} / {s.get('open_at_end', '?')}")
        if not cols:
            continue
        print(f"| {impl} | " + " | ".join([agg(cols["without"]), agg(cols["with"]), agg(cols["delta"]),
                                           agg(cols["p999"]), agg(cols["rps"], "{:.0f}"), ", ".join(kept)]) + " |")
        for n in notes_for(table, impl):
            print(f"|   ↳ {n} |||||||")
    print()


def main(out_dir):
    loaded = load(out_dir)
    if not loaded:
        return
    runs, impls = loaded
    print("## Protocols, rates, connection set-up, slow clients (bench/loadgen)\n")
    print("Open loop at a fixed rate: latency from each request's intended send time (no coordinated "
          "omission); added = pair minus `direct` of the same round. Errors and dropped slots are listed under "
          "their pair.\n")
    fixed = [t for t in runs if "@" in t and not t.startswith("slow-clients")]
    fixed.sort(key=lambda t: (ORDER.index(t.split("@")[0]) if t.split("@")[0] in ORDER else 99, num(t.split("@")[1])))
    for t in fixed:
        fixed_rate(t, runs[t], impls)
    if "connect-rate" in runs:
        closed_loop("connect-rate", runs["connect-rate"], impls,
                    "New connections per second through the pair (closed loop; a new TCP connection per HTTP/1.1 request, Connection: close)")
    if "tls-handshake" in runs:
        closed_loop("tls-handshake", runs["tls-handshake"], impls,
                    "Full TLS 1.3 handshakes per second with a client certificate to the inbound port (closed loop, no resumption; client on the same 2 cores)")
    for t in sorted(t for t in runs if t.startswith("slow-clients@")):
        slow_clients(t, runs[t], runs.get("h1@" + t.split("@")[1]), impls)


if __name__ == "__main__":
    main(sys.argv[1])
