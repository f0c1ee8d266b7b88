#!/usr/bin/env python3
"""Turns criterion results into side-by-side ratios.

Usage: scripts/bench_ratios.py [--base GROUP=BENCH ...] CRITERION_DIR [CRITERION_DIR ...]

Each CRITERION_DIR is a `target/criterion` tree (one per `cargo bench` run). For every group it
prints each benchmark's median time per iteration and its ratio to the group's posa entry
(the first entry if none is named posa*), with the range of per-run ratios, taking the median over the runs given: absolute times drift on a shared
machine, ratios measured in the same run much less.
"""
import json
import statistics
import sys
from pathlib import Path


def load(run_dir):
    out = {}
    for bench in Path(run_dir).glob("**/new/benchmark.json"):
        meta = json.loads(bench.read_text())
        est = json.loads((bench.parent / "estimates.json").read_text())
        tp = meta.get("throughput") or {}
        elements = tp.get("Elements") if isinstance(tp, dict) else None
        out[(meta["group_id"], meta["function_id"])] = (est["median"]["point_estimate"], elements)
    return out


def fmt_ns(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.2f} {unit}"
    return f"{ns:.1f} ns"


def per_elem(entry):
    time, elements = entry
    return time / elements if elements else time


def main(args):
    bases = {}
    dirs = []
    while args:
        a = args.pop(0)
        if a == "--base":
            group, _, bench = args.pop(0).partition("=")
            bases[group] = bench
        else:
            dirs.append(a)
    runs = [load(d) for d in dirs]
    groups = {}
    for key in runs[0]:
        groups.setdefault(key[0], []).append(key[1])
    print(f"runs: {len(runs)} (median of per-run values)\n")
    print("| group | benchmark | median time / iter | per element | time ratio to first row (per element) | range over runs |")
    print("|---|---|---|---|---|---|")
    for group, funcs in sorted(groups.items()):
        base_name = sorted(funcs)[0]
        if group in bases:
            base_name = bases[group]
        elif any(f.startswith("posa") for f in funcs):
            base_name = next(f for f in funcs if f.startswith("posa"))
        ordered = [base_name] + [f for f in funcs if f != base_name]
        for f in ordered:
            times = [r[(group, f)][0] for r in runs if (group, f) in r]
            # Per element where the group says how many (rows may differ in size), else per
            # iteration.
            ratios = [per_elem(r[(group, f)]) / per_elem(r[(group, base_name)])
                      for r in runs if (group, f) in r and (group, base_name) in r]
            elements = runs[0][(group, f)][1]
            t = statistics.median(times)
            per = fmt_ns(t / elements) if elements else ""
            spread = f"{min(ratios):.2f}-{max(ratios):.2f}x"
            print(f"| {group} | {f} | {fmt_ns(t)} | {per} | {statistics.median(ratios):.2f}x | {spread} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
