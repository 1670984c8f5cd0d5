#!/usr/bin/env python3
"""Summarise mesh-bench.sh raw.tsv into Markdown (one row per implementation).

Copied from ../shared/bench/summarize.py; paymesh changes: an idle RSS column (VmRSS right
after readiness, before load), and the protocols.sh tables (summarize_protocols.py) after these. Every delta/ratio is computed against the `direct` run of the SAME round, then
reported as mean [min..max] over rounds.  Usage: summarize.py OUT_DIR
"""
import csv
import os
import sys
from collections import defaultdict

from stats import agg, num as f


def main(out_dir):
    rows = list(csv.DictReader(open(os.path.join(out_dir, "raw.tsv")), delimiter="\t"))
    if not rows:
        print("no data")
        return
    meta = open(os.path.join(out_dir, "meta.txt")).read().strip()
    by_round = defaultdict(dict)
    order = []
    for r in rows:
        by_round[r["round"]][r["impl"]] = r
        if r["impl"] not in order:
            order.append(r["impl"])
    impls = [i for i in order if i != "direct"]

    def cpu_s(r, kind):
        clk = f(r["clk_tck"]) or 100.0
        return (f(r[f"cpu_out_{kind}_ticks"]) + f(r[f"cpu_in_{kind}_ticks"])) / clk

    print("## mesh-bench summary\n")
    print("```\n" + meta + "\n```\n")
    nr = len(by_round)
    print(f"Rounds: {nr}. Values: mean [min..max] over rounds; deltas and ratios are vs `direct` of the same round.\n")

    # direct absolute row
    d = [by_round[k]["direct"] for k in sorted(by_round) if "direct" in by_round[k]]
    print("| direct (no proxies) | p50 ms | p90 ms | p99 ms | p99.9 ms | achieved rps @fixed rate | max rps (wrk) |")
    print("|---|---|---|---|---|---|---|")
    print("| upstream only | " + " | ".join([
        agg([f(x["p50_s"]) * 1e3 for x in d]),
        agg([f(x["p90_s"]) * 1e3 for x in d]),
        agg([f(x["p99_s"]) * 1e3 for x in d]),
        agg([f(x["p999_s"]) * 1e3 for x in d]),
        agg([f(x["oha_rps"]) for x in d], "{:.0f}"),
        agg([f(x["wrk_rps"]) for x in d], "{:.0f}"),
    ]) + " |\n")

    print("| implementation | added p50 ms @fixed rate | added p99 ms @fixed rate | added p90 / p99.9 ms | max rps ratio vs direct (abs rps) | RSS per proxy MiB after load (out / in) | idle RSS MiB (out / in) | pair CPU-s per 10k req @fixed rate | pair CPU-s per 10k req @max | procs | mTLS check | version |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for impl in impls:
        a50, a90, a99, a999, ratio, absr, rss_o, rss_i, c_lat, c_max = ([] for _ in range(10))
        idle_o, idle_i = [], []
        checks, versions, procs, notes = set(), set(), set(), set()
        for k in sorted(by_round):
            rr = by_round[k]
            if impl not in rr or "direct" not in rr:
                continue
            r, dr = rr[impl], rr["direct"]
            a50.append((f(r["p50_s"]) - f(dr["p50_s"])) * 1e3)
            a90.append((f(r["p90_s"]) - f(dr["p90_s"])) * 1e3)
            a99.append((f(r["p99_s"]) - f(dr["p99_s"])) * 1e3)
            a999.append((f(r["p999_s"]) - f(dr["p999_s"])) * 1e3)
            ratio.append(f(r["wrk_rps"]) / f(dr["wrk_rps"]) if f(dr["wrk_rps"]) else float("nan"))
            absr.append(f(r["wrk_rps"]))
            rss_o.append(f(r["rss_out_kb"]) / 1024)
            rss_i.append(f(r["rss_in_kb"]) / 1024)
            idle_o.append(f(r.get("idle_rss_out_kb")) / 1024)
            idle_i.append(f(r.get("idle_rss_in_kb")) / 1024)
            n = f(r["oha_n"])
            c_lat.append(cpu_s(r, "lat") / (n / 1e4) if n else float("nan"))
            nw = f(r["wrk_n"])
            c_max.append(cpu_s(r, "max") / (nw / 1e4) if nw else float("nan"))
            checks.add(r["mtls_check"])
            versions.add(r["version"])
            procs.add(r["nprocs"])
            if f(r["oha_n200"]) < f(r["oha_n"]) or f(r["oha_success"]) < 1.0:
                notes.add(f"non-200/failed at fixed rate (round {k})")
            if r["wrk_errors"] not in ("-", ""):
                notes.add(f"wrk: {r['wrk_errors']}")
        single = procs == {"1"}
        rss_cell = agg(rss_o, "{:.1f}") + (" (one process, both roles)" if single else " / " + agg(rss_i, "{:.1f}"))
        idle_cell = agg(idle_o, "{:.1f}") + ("" if single else " / " + agg(idle_i, "{:.1f}"))
        cells = [
            impl,
            agg(a50), agg(a99),
            agg(a90) + " / " + agg(a999),
            agg(ratio, "{:.2f}") + " (" + agg(absr, "{:.0f}") + ")",
            rss_cell,
            idle_cell,
            agg(c_lat), agg(c_max),
            "/".join(sorted(procs)),
            ",".join(sorted(checks)),
            "; ".join(sorted(versions)),
        ]
        print("| " + " | ".join(cells) + " |")
        for n_ in sorted(notes):
            print(f"|   ↳ note: {n_} ||||||||||||")
    print()
    print("Per-round raw values (p50/p99 ms, achieved rps at fixed rate, wrk max rps):\n")
    print("| round | impl | p50 ms | p99 ms | p99.9 ms | fixed-rate achieved rps | wrk rps | RSS out/in MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for k in sorted(by_round):
        for impl in order:
            r = by_round[k].get(impl)
            if not r:
                continue
            print(f"| {k} | {impl} | {f(r['p50_s'])*1e3:.3f} | {f(r['p99_s'])*1e3:.3f} | {f(r['p999_s'])*1e3:.3f} | "
                  f"{f(r['oha_rps']):.0f} | {f(r['wrk_rps']):.0f} | {f(r['rss_out_kb'])/1024:.1f}/{f(r['rss_in_kb'])/1024:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1])
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import summarize_protocols  # noqa: E402  (protocols.sh's tables, when loadgen.jsonl exists)

    print()
    summarize_protocols.main(sys.argv[1])
