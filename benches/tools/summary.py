#!/usr/bin/env python3
"""Prints criterion's point estimates (median time, and throughput if declared) for every
benchmark under target/criterion, one line each: `group/function/param  median  [throughput]`.
Usage: python3 benches/tools/summary.py [FILTER]"""
import json, os, sys

root = os.path.join(os.path.dirname(__file__), "..", "..", "target", "criterion")
pattern = sys.argv[1] if len(sys.argv) > 1 else ""
for dirpath, _, files in sorted(os.walk(root)):
    if not dirpath.endswith(os.path.join("new")) or "estimates.json" not in files:
        continue
    name = os.path.relpath(os.path.dirname(dirpath), root)
    if pattern not in name:
        continue
    est = json.load(open(os.path.join(dirpath, "estimates.json")))
    bench = json.load(open(os.path.join(dirpath, "benchmark.json")))
    ns = est["median"]["point_estimate"]
    line = f"{name:60s} {ns/1e3:12.2f} µs"
    tp = bench.get("throughput") or {}
    if "Elements" in tp:
        line += f"   {tp['Elements'] / ns:10.3f} G elem/s"
    print(line)
