"""hnswlib on the same dataset as `strata-bench ann`: build time, recall@10, single-thread q/s.

Reads base.f32, queries.f32 and truth.u32 written by `strata-bench dataset`; prints one JSON
object. Parameters match strata's usearch index: M=16, ef_construction=128, cosine space;
built on one thread, as `strata-bench index` builds strata's indexes, with the resident
memory it added.
"""
import json
import sys
import time

import hnswlib
import numpy as np

data = sys.argv[1]
efs = [int(x) for x in (sys.argv[2] if len(sys.argv) > 2 else "64,128").split(",")]
base = np.fromfile(f"{data}/base.f32", dtype="<f4").reshape(-1, 384)
queries = np.fromfile(f"{data}/queries.f32", dtype="<f4").reshape(-1, 384)
truth = np.fromfile(f"{data}/truth.u32", dtype="<u4").reshape(-1, 10)


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


before = rss_mib()
index = hnswlib.Index(space="cosine", dim=384)
index.init_index(max_elements=len(base), M=16, ef_construction=128)
index.set_num_threads(1)
start = time.perf_counter()
index.add_items(base, np.arange(len(base)))
build = time.perf_counter() - start
rss = rss_mib() - before

results = []
for ef in efs:
    index.set_ef(ef)
    # One batched call on one thread: the queries loop in C++, with no per-query Python cost.
    start = time.perf_counter()
    labels, _ = index.knn_query(queries, k=10)
    secs = time.perf_counter() - start
    hit = sum(len(set(l.tolist()) & set(t.tolist())) for l, t in zip(labels, truth))
    results.append({"ef": ef, "recall_at_10": hit / (10 * len(queries)), "queries_per_s": len(queries) / secs})

print(json.dumps({"engine": "hnswlib", "n": len(base), "build_seconds": build, "build_threads": 1,
                  "rss_mib": rss, "results": results}))
