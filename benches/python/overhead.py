"""What the Python binding costs over the Rust API, measured side by side on one dataset.

- search: p50 of single-threaded `Collection.search(q, k=10)` from Python against `quiver bench`'s
  p50 (the Rust API) on the same collection and queries, both after one warm-up pass;
- the binding's fixed cost: a search against a single in-memory document from Python (an upper
  bound on what the binding adds to any search), as a share of the Rust p50;
- ingest: documents/s of `Collection.insert_batch` from Python (batches of 512, durability
  "sync") against the same batches through the Rust API (`cargo bench --bench collection` is the
  write-path bench; here `quiver import` of the same dataset gives the Rust figure).

Run from the repository root after `bash scripts/install-deps.sh`:
    .venv/bin/python benches/python/overhead.py ../shared/data/scifact-mini
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

import quiverdb

QUIVER = os.path.join("target", "release", "quiver")


def load(dataset):
    def sets(values, offsets):
        v = np.load(os.path.join(dataset, values)).astype(np.float32)
        o = np.load(os.path.join(dataset, offsets))
        return [v[o[i] : o[i + 1]] for i in range(len(o) - 1)]

    return sets("docs.npy", "doc_offsets.npy"), sets("queries.npy", "query_offsets.npy")


def main():
    dataset = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/scifact-mini"
    if not os.path.exists(QUIVER):
        subprocess.run(["cargo", "build", "--release", "-p", "quiver"], check=True)
    docs, queries = load(dataset)
    dim = docs[0].shape[1]
    work = tempfile.mkdtemp(prefix="quiverdb-pybench-")
    try:
        # Ingest from Python.
        py_path = os.path.join(work, "py")
        c = quiverdb.Collection.create(py_path, dim, memtable_max_docs=1 << 20, background=0)
        t = time.perf_counter()
        for start in range(0, len(docs), 512):
            c.insert_batch(list(range(start, min(start + 512, len(docs)))), docs[start : start + 512])
        py_ingest = len(docs) / (time.perf_counter() - t)
        c.flush()
        c.close()

        # Ingest through the Rust API (quiver import: batches of 512, sync durability).
        rust_path = os.path.join(work, "rust")
        subprocess.run([QUIVER, "create", rust_path, "--dim", str(dim)], check=True, capture_output=True)
        out = subprocess.run(
            [QUIVER, "import", rust_path, "--dataset", dataset], check=True, capture_output=True, text=True
        ).stdout
        rust_ingest = float(re.search(r"\((\d+) docs/s", out).group(1))

        # Search: Python, then quiver bench on the same collection.
        c = quiverdb.Collection.open(py_path)
        for q in queries:
            c.search(q, k=10)
        lat = []
        for q in queries:
            t = time.perf_counter()
            c.search(q, k=10)
            lat.append((time.perf_counter() - t) * 1e3)
        c.close()
        py_p50 = float(np.percentile(lat, 50))
        bench = subprocess.run(
            [QUIVER, "bench", "--dataset", dataset, "--collection", py_path, "--exact-queries", "0", "--warmup", "1"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        rows = [json.loads(line) for line in bench.splitlines() if line.startswith("{")]
        rust_p50 = next(r["latency_ms"]["p50"] for r in rows if r.get("params") != "exact")
        # The binding's fixed cost per call, free of the engine's variance: a search against one
        # document held in memory (the engine's own work is one exact MaxSim).
        tiny = quiverdb.Collection.create(os.path.join(work, "tiny"), dim)
        tiny.insert(1, docs[0])
        q = queries[0]
        for _ in range(200):
            tiny.search(q, k=10)
        ts = []
        for _ in range(2000):
            t = time.perf_counter()
            tiny.search(q, k=10)
            ts.append(time.perf_counter() - t)
        call_us = float(np.percentile(ts, 50)) * 1e6
        tiny.close()
        print(
            json.dumps(
                {
                    "dataset": os.path.basename(dataset.rstrip("/")),
                    "docs": len(docs),
                    "queries": len(queries),
                    "search_p50_ms": {"python": round(py_p50, 3), "rust": rust_p50},
                    "search_overhead": round(py_p50 / rust_p50 - 1, 3),
                    "one_doc_search_from_python_us": round(call_us, 1),
                    "binding_cost_bound": round(call_us / 1e3 / rust_p50, 4),
                    "ingest_docs_per_s": {"python": round(py_ingest), "rust": round(rust_ingest)},
                    "ingest_ratio": round(py_ingest / rust_ingest, 3),
                }
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
