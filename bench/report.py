"""Summarises bench/run's raw measurements: medians per scenario, ratios, targets.

Usage: report.py RESULTS.jsonl REPORT.json. Prints a table; writes the summary as JSON.
"""
import json
import statistics
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
by = {}
for r in rows:
    by.setdefault(r["scenario"], []).append(r["result"])


def med(scenario, key):
    vals = [r[key] for r in by.get(scenario, []) if key in r]
    return statistics.median(vals) if vals else None


def ann_med(engine, ef, key):
    vals = [x[key] for r in by.get(f"ann_{engine}", []) for x in r["results"] if x["ef"] == ef]
    return statistics.median(vals) if vals else None


report = {"rounds": max((r["round"] for r in rows), default=0), "scenarios": {}, "targets": []}
lines = []


def row(name, value, unit, note=""):
    report["scenarios"][name] = value
    shown = "n/a" if value is None else (f"{value:,.3f}" if value < 10 else f"{value:,.0f}")
    lines.append(f"  {name:<44} {shown:>12} {unit:<14} {note}")


def target(name, value, op, bar):
    if value is None:
        ok = None
    else:
        ok = {">=": value >= bar, "<=": value <= bar, ">": value > bar}[op]
    report["targets"].append({"target": name, "value": value, "bar": f"{op} {bar}", "met": ok})
    mark = {True: "met", False: "MISSED", None: "not measured"}[ok]
    shown = "n/a" if value is None else f"{value:.3f}"
    lines.append(f"  {name:<44} {shown:>12} {op + ' ' + str(bar):<14} {mark}")


b1 = med("model_batch1", "sentences_per_s")
b32 = med("model_batch32", "sentences_per_s")
dyn = med("model_dynamic", "sentences_per_s")
lines.append("model (all-MiniLM-L6-v2, int8 ONNX), medians:")
row("batch 1", b1, "sentences/s", f"{med('model_batch1', 'ms_per_sentence') or 0:.2f} ms/sentence")
row("batch 32", b32, "sentences/s")
row("32 concurrent callers, dynamic batching", dyn, "sentences/s")
lines.append("in-process cache engines, Zipf(1.0), 2 threads (medians):")
for e in ("quick_cache", "moka"):
    row(f"{e} operations/s", med(f"l1_{e}", "ops_per_s"), "ops/s", f"hit ratio {med(f'l1_{e}', 'hit_ratio') or 0:.3f}")
lines.append("ANN, recall@10 and single-thread queries/s (medians):")
for engine in ("usearch", "hnswlib"):
    n = next((r["n"] for r in by.get(f"ann_{engine}", [])), None)
    row(f"{engine} build ({n} vectors)", med(f"ann_{engine}", "build_seconds"), "s",
        f"{med(f'ann_{engine}', 'build_threads') or '?'} thread(s)")
    if med(f"ann_{engine}", "rss_mib") is not None:
        row(f"{engine} resident memory added", med(f"ann_{engine}", "rss_mib"), "MiB")
    for ef in (64, 128):
        row(f"{engine} ef={ef} recall@10", ann_med(engine, ef, "recall_at_10"), "")
        row(f"{engine} ef={ef} queries/s", ann_med(engine, ef, "queries_per_s"), "q/s")
lines.append("strata's in-process indexes through the server's types (medians; filtered = one tenant of 10 or 100, "
             "and a share of its vectors; exact = scoring that share's vectors, the server's path below its exact limit):")
for engine in ("usearch", "qdrant"):
    runs = by.get(f"index_{engine}", [])
    row(f"{engine} build, 1 thread ({next((r['n'] for r in runs), None)} vectors)", med(f"index_{engine}", "build_seconds"), "s")
    row(f"{engine} resident memory added", med(f"index_{engine}", "rss_mib"), "MiB")
    for ef in (64, 128):
        for key, unit in (("recall_at_10", ""), ("queries_per_s", "q/s")):
            vals = [x[key] for r in runs for x in r["results"] if x["ef"] == ef]
            row(f"{engine} ef={ef} {key}", statistics.median(vals) if vals else None, unit)
    for tenants in (10, 100):
        for share in (100, 10, 1):
            picked = [x for r in runs for x in r["filtered"]
                      if x.get("tenants", 10) == tenants and x["tenant_share_percent"] == share]
            for key, unit in (("recall_at_10", ""), ("queries_per_s", "q/s"), ("exact_queries_per_s", "q/s exact")):
                vals = [x[key] for x in picked if key in x]
                row(f"{engine} 1 of {tenants} tenants, {share}% of it, {key}",
                    statistics.median(vals) if vals else None, unit)
s = by.get("search", [{}])[0]
lines.append("ingestion and uncached search through the HTTP server:")
row(f"ingestion ({s.get('chunks')} chunks)", s.get("ingest_chunks_per_s"), "chunks/s")
row("raw model, same chunk texts, batch 32 (median of rounds)", s.get("raw_model_chunks_per_s"), "chunks/s")
rounds = s.get("rounds", [])
if rounds:
    ratios = " / ".join(f"{r['ingest_vs_raw']:.2f}" for r in rounds)
    lines.append(f"  ingestion / raw model per round (each raw timed right after its round): {ratios}")
    if all("model_busy" in r for r in rounds):
        busy = " / ".join(f"{r['model_busy']:.2f}" for r in rounds)
        speed = " / ".join(f"{r['model_chunks_per_busy_s'] / r['raw_model_chunks_per_s']:.2f}" for r in rounds)
        per_pass = " / ".join(f"{r['model_texts_per_pass']:.1f}" for r in rounds)
        lines.append(f"  model busy per round (time in passes / round): {busy}")
        lines.append(f"  model speed in passes / raw per round: {speed}; texts per pass: {per_pass}")
for p in ("p50", "p95", "p99"):
    row(f"hybrid search latency {p}", s.get(f"search_ms_{p}"), "ms")
for mode in ("semantic", "lexical"):
    for p in ("p50", "p95"):
        row(f"{mode} search latency {p}", s.get(f"{mode}_search_ms_{p}"), "ms")
sizes = by.get("search_sizes", [{}])[0]
if sizes:
    row("lexical index in memory at this size", (s.get("lexical_index_bytes") or 0) / 2**20, "MiB",
        f"beside a {sizes['database_bytes'] / 2**20:.1f} MiB database")
q = by.get("quality", [{}])[0]
if q:
    pub = q.get("published", {})
    lines.append(f"retrieval quality, BEIR SciFact train ({q.get('queries')} queries, {q.get('documents')} abstracts, "
                 f"through the HTTP API; MTEB test split: MiniLM {pub.get('minilm_ndcg10')}, "
                 f"BM25 {pub.get('bm25_ndcg10_low')}-{pub.get('bm25_ndcg10_high')}):")
    for name, c in q.get("configs", {}).items():
        row(f"{name} nDCG@10", c.get("ndcg_at_10"), "",
            f"recall@100 {c.get('recall_at_100', 0):.3f}, p95 {c.get('search_ms_p95', 0):.1f} ms")
    row("lexical index in memory", (q.get("lexical_index_bytes") or 0) / 2**20 if q.get("lexical_index_bytes") else None,
        "MiB", f"database {(q.get('database_bytes') or 0) / 2**20:.1f} MiB")
for size in ("", "large_"):
    lex = [c for r in by.get(f"lexical_{size}strata", []) + by.get(f"lexical_{size}qdrant", [])
           for c in r["configurations"]]
    if not lex:
        continue
    extra = next((r.get("distractors", 0) for r in by.get(f"lexical_{size}strata", [])), 0)
    lines.append(f"lexical side alone on SciFact train, one abstract per text, + {extra} unjudged sentences, "
                 "k = 100 (medians; strata's BM25 index vs qdrant-edge's sparse BM25 vectors):")
    for name in dict.fromkeys(lex):
        vals = [r["configurations"][name] for e in ("strata", "qdrant") for r in by.get(f"lexical_{size}{e}", [])
                if name in r["configurations"]]
        pick = lambda k: statistics.median(v[k] for v in vals)
        row(f"{name} nDCG@10", pick("ndcg_at_10"), "",
            f"recall@100 {pick('recall_at_100'):.3f}, p50 {pick('p50_ms'):.2f} ms, p95 {pick('p95_ms'):.2f} ms")
    for e in ("strata", "qdrant"):
        row(f"lexical {e} resident memory added", med(f"lexical_{size}{e}", "rss_mib"), "MiB")
row("resident memory after ingestion (server + model)", s.get("rss_mb_at_rest"), "MiB")
row("resident memory after the search load", s.get("rss_mb_after_search"), "MiB")
row("resident memory, peak (ingestion included)", s.get("rss_mb_peak"), "MiB")

http = by.get("cache_http", [{}])[0]


def http_med(contender, key):
    vals = [r[key] for r in http.get("runs", []) if r["contender"] == contender]
    return statistics.median(vals) if vals else None


lines.append(f"cached search over HTTP, wrk, {http.get('connections')} connections, "
             f"{http.get('body_bytes')}-byte answer (medians):")
for c in ("ceiling", "ceiling_body_unread", "strata_l1_hit", "strata_l2_hit", "ceiling_gzip",
          "strata_l1_hit_gzip", "ceiling_gzip_edge_requests", "strata_l1_hit_edge", "seed_stack_as_shipped", "seed_stack_nodelay_fix"):
    row(f"{c} requests/s", http_med(c, "requests_per_s"), "req/s",
        f"p50 {http_med(c, 'p50_ms') or 0:.2f} ms, p99 {http_med(c, 'p99_ms') or 0:.2f} ms, "
        f"errors {sum(r['errors'] for r in http.get('runs', []) if r['contender'] == c)}")
if http.get("answers"):
    ib, gb, n = http.get("answers_identity_bytes", 0), http.get("answers_gzip_bytes", 0), http["answers"]
    row("typical answer, identity / gzip (mean of all queries)", ib / n, "bytes",
        f"gzip {gb / n:.0f} bytes: {100 * (1 - gb / ib):.0f}% saved" if ib else "")
    row("the benchmarked answer gzipped", http.get("body_bytes_gzip"), "bytes")
lines.append("connection scaling (keep-alive connections held for the whole run):")
for r in http.get("scaling", []):
    row(f"{r['contender']} at {r['connections']} connections", r["requests_per_s"], "req/s",
        f"p99 {r['p99_ms']:.2f} ms, errors {r['errors']}")
z = by.get("zipf", [{}])[0]
lines.append(f"cache hit ratio, Zipf(1.0) over {z.get('keys')} distinct requests, L1 = 5% of them, "
             "after warm-up:")
row("L1 hit ratio", z.get("l1_hit_ratio"), "")
row("L2 hit ratio", z.get("l2_hit_ratio"), "")

hp = by.get("hit_path", [{}])[0]
if hp:
    lines.append("an L1 hit in process (strata's router vs the ceiling's, no sockets, medians over rounds):")
    row("ceiling, per request", hp.get("ceiling_ns"), "ns")
    row("strata L1 hit, per request", hp.get("strata_l1_hit_ns"), "ns",
        f"strata's own work {hp.get('strata_extra_ns', 0):.0f} ns")
    two = hp.get("two_tasks")
    if two:
        row("two tasks at once, ceiling, wall time per request", two.get("ceiling_wall_ns"), "ns")
        row("two tasks at once, strata L1 hit, wall time per request", two.get("strata_l1_hit_wall_ns"), "ns",
            f"{two.get('ratio', 0):.2f}x the ceiling's throughput")

mx = by.get("mixed", [{}])[0]
if mx:
    lines.append(f"mixed Zipf(1.0) workload, {mx.get('tenants')} tenants, {mx.get('documents')} documents, "
                 f"{mx.get('queries')} distinct queries, {mx.get('write_percent')}% writes, "
                 f"{mx.get('connections')} connections (medians over rounds):")
    for c in ("embedded", "postgres_redis"):
        runs = [r for r in mx.get("runs", []) if r["contender"] == c]
        if runs:
            row(f"strata {c} requests/s", statistics.median(r["requests_per_s"] for r in runs), "req/s",
                f"p50 {statistics.median(r['p50_ms'] for r in runs):.2f} ms, "
                f"p99 {statistics.median(r['p99_ms'] for r in runs):.2f} ms, "
                f"hit ratio {statistics.median(r['hit_ratio'] for r in runs):.3f}, "
                f"errors {sum(r['errors'] for r in runs)}")

so = by.get("scale_out", [{}])[0]
if so:
    lines.append(f"scale-out over PostgreSQL + pgvector and Redis ({so.get('chunks')} chunks; answers not "
                 "cached, so every request reaches the database; medians over rounds):")
    for n in (1, 2, 3):
        for what in ("search", "list"):
            vals = [r[what] for r in so.get("runs", []) if r["instances"] == n]
            if vals:
                row(f"{what} at {n} instance(s)", statistics.median(v["rps"] for v in vals), "req/s",
                    f"p99 {statistics.median(v['p99_ms'] for v in vals):.1f} ms, "
                    f"errors {sum(v['errors'] for v in vals)}")
    ul = so.get("under_load", {})
    row(f"list under {so.get('clients')} concurrent clients, one instance", ul.get("rps"), "req/s",
        f"p99 {ul.get('p99_ms', 0):.0f} ms, errors {ul.get('errors')}")
    row("  pooled connections held at most (pool size 10)", so.get("pool_connections_max"), "")
    row("  other connections (listener, blob locks) at most", so.get("other_connections_max"), "")

ov = by.get("overload", [{}])[0]
if ov:
    lines.append(f"admission under overload: uncached searches, open loop ({ov.get('sentences')} sentences; "
                 "medians over rounds):")
    row("capacity (32 closed-loop clients)", ov.get("capacity_rps"), "req/s")
    row("unloaded p99 (at capacity / 4)", ov.get("unloaded_p99_ms"), "ms", f"p50 {ov.get('unloaded_p50_ms', 0):.1f} ms")
    row("at 4 x capacity: accepted p99", ov.get("overload_accepted_p99_ms"), "ms",
        f"p50 {ov.get('overload_accepted_p50_ms', 0):.1f} ms, {ov.get('overload_accepted_rps', 0):.0f} req/s accepted")
    row("at 4 x capacity: share rejected", ov.get("overload_rejected_share"), "")

sem = by.get("semantic", [{}])[0]
DEFAULT_SEMANTIC = 0.96  # strata_gateway::settings::DEFAULT_SEMANTIC_THRESHOLD
sem_default = {}
if sem:
    lines.append(f"semantic cache on {sem.get('pairs', 0):,} labelled Quora pairs (insert a, look up b; "
                 f"found: of {sem.get('duplicates', 0):,} duplicates, false: of {sem.get('non_duplicates', 0):,} non-duplicates):")
    for r in sem.get("alone", []):
        if abs(r["threshold"] - DEFAULT_SEMANTIC) < 1e-6 and r["guard"]:
            sem_default = r
        row(f"pair by pair, threshold {r['threshold']:.2f}, guard {'on ' if r['guard'] else 'off'}: found",
            r.get("found_pct"), "%", f"false hits {r.get('false_hit_pct', 0):.2f}%")
    for r in sem.get("tier", []):
        row(f"through the tier ({sem.get('scope_entries')} entries a scope), threshold {r['threshold']:.2f}, "
            f"guard {'on ' if r['guard'] else 'off'}: found", r.get("found_pct"), "%",
            f"false hits {r.get('false_hit_pct', 0):.2f}% of lookups ({r.get('false_hits_on_other_entries', 0)} on other entries)")
    row("semantic lookup (scan of a scope + guard), mean", sem.get("lookup_us_mean"), "us")

gw = by.get("gateway", [{}])[0]
if gw:
    lines.append("LLM gateway against a local upstream (open loop; strata's percentile minus the direct call's):")
    for a in gw.get("added_latency", []):
        row(f"added latency at {a['rate']}/s, p50", a.get("added_p50_ms"), "ms",
            f"direct {a.get('direct_p50_ms', 0):.2f} ms, via strata {a.get('strata_p50_ms', 0):.2f} ms")
        row(f"added latency at {a['rate']}/s, p99", a.get("added_p99_ms"), "ms",
            f"direct {a.get('direct_p99_ms', 0):.2f} ms, via strata {a.get('strata_p99_ms', 0):.2f} ms; "
            f"{a.get('failed', 0)} failed")
    c = gw.get("cached", {})
    row("cached chat answer (L1 hit) / ceiling", c.get("ratio_to_ceiling"), "x",
        f"{c.get('strata_rps', 0):,.0f} vs {c.get('ceiling_rps', 0):,.0f} req/s")
    f = gw.get("fanout", {})
    row(f"{f.get('streams')} identical streams: upstream calls", f.get("upstream_calls"), "",
        f"{f.get('complete')} complete")
    m = gw.get("memory", {})
    row(f"resident memory under {m.get('streams')} streams", m.get("rss_peak_mb"), "MiB",
        f"{m.get('rss_before_mb', 0):.0f} MiB before, {m.get('per_stream_kb', 0):.1f} KiB a stream, {m.get('complete')} complete")

mem = by.get("memories", [{}])[0]
if mem:
    lines.append(f"memories: {mem.get('users')} tenants x {mem.get('memories_per_user')} memories "
                 "(seed 002's figures beside strata's):")
    row("search, uncached (fresh process, new query) p50", mem.get("search_uncached_p50_ms"), "ms",
        f"p95 {mem.get('search_uncached_p95_ms', 0):.1f} ms")
    row("preload per tenant p50", mem.get("preload_p50_ms"), "ms",
        f"p95 {mem.get('preload_p95_ms', 0):.1f} ms; seed 002: 8.78 ms")
    row("search after preload, new query p50", mem.get("search_after_preload_new_query_p50_ms"), "ms",
        f"p95 {mem.get('search_after_preload_new_query_p95_ms', 0):.1f} ms")
    row("search after preload, frequent query p50", mem.get("search_after_preload_frequent_query_p50_ms"), "ms",
        f"p95 {mem.get('search_after_preload_frequent_query_p95_ms', 0):.1f} ms")
    row("ranking of 50 memories, in process", mem.get("rank_50_in_process_us"), "us", "seed 002: 7,340 us")
    row("search of a 50-memory tenant over HTTP p50", mem.get("search_50_memories_p50_ms"), "ms",
        "the whole request, cached query embedding")
    row("mixed memory workload (10% adds, 10% new queries)", mem.get("mixed_ops_per_sec"), "ops/s",
        "seed 002: 12,014 (target 15,000)")
    row("reads only (searches of frequent queries, reads, pages)", mem.get("reads_ops_per_sec"), "ops/s",
        "the same mix with the model out of the loop")
    row("adds", mem.get("adds_per_sec"), "adds/s", f"raw model {mem.get('raw_model_per_sec', 0):.0f}/s")

lines.append("targets (ratios measured in this run):")
target("dynamic batching / batch 1", dyn / b1 if dyn and b1 else None, ">=", 3.0)
target("ingestion / raw model", s.get("ingest_vs_raw"), ">=", 0.85)
u, h = ann_med("usearch", 64, "queries_per_s"), ann_med("hnswlib", 64, "queries_per_s")
target("usearch ef=64 recall@10", ann_med("usearch", 64, "recall_at_10"), ">=", 0.95)
target("usearch / hnswlib queries/s at ef=64", u / h if u and h else None, ">=", 1.0)
target("uncached hybrid search p95 (ms)", s.get("search_ms_p95"), "<=", 20.0)
if q:
    cfg = q.get("configs", {})
    hy = cfg.get("hybrid", {}).get("ndcg_at_10")
    target("SciFact hybrid nDCG@10 (defaults)", hy, ">=", 0.70)
    best_single = max([cfg.get(m, {}).get("ndcg_at_10") or 0 for m in ("semantic", "lexical")])
    target("SciFact hybrid / best single mode, nDCG@10", hy / best_single if hy and best_single else None, ">", 1.0)
# Issue 6's memory bar: 300 MB plus the model's weights, in MiB like the measurements.
weights = s.get("model_weights_bytes")
rss = max([v for v in (s.get("rss_mb_at_rest"), s.get("rss_mb_after_search")) if v is not None], default=None)
target("resident memory at 100k chunks (MiB)", rss if weights else None, "<=",
       round((300e6 + (weights or 0)) / 2**20, 1))
ceil, l1 = http_med("ceiling", "requests_per_s"), http_med("strata_l1_hit", "requests_per_s")
target("L1-hit search / ceiling, requests/s", l1 / ceil if l1 and ceil else None, ">=", 0.8)
cp99, lp99 = http_med("ceiling", "p99_ms"), http_med("strata_l1_hit", "p99_ms")
target("L1-hit search p99 / ceiling p99", lp99 / cp99 if lp99 and cp99 else None, "<=", 2.0)
gz_ceil = http_med("ceiling_gzip", "requests_per_s")
gz_l1 = http_med("strata_l1_hit_gzip", "requests_per_s")
target("L1-hit search, gzip / ceiling serving the gzip body", gz_l1 / gz_ceil if gz_l1 and gz_ceil else None,
       ">=", 0.8)
edge = http_med("strata_l1_hit_edge", "requests_per_s")
target("L1-hit with JWT + rate limit + gzip / gzip ceiling", edge / gz_ceil if edge and gz_ceil else None,
       ">=", 0.8)
# The same ratio with the gzip ceiling sent the edge contender's own requests (bearer token
# included): the same bytes into both servers, as bench/count-hit compares them.
gz_ceil_same = http_med("ceiling_gzip_edge_requests", "requests_per_s")
row("L1-hit with JWT + rate limit + gzip / gzip ceiling sent the same requests",
    edge / gz_ceil_same if edge and gz_ceil_same else None, "", "target >= 0.8 as above")
bare = http_med("bare_axum", "requests_per_s")
# Issue 23's cost of watching: the L1 hit with every metric, the request stopwatch and
# Server-Timing on, against a server that watches nothing (bare axum, the same answer).
target("(issue 23) L1-hit, all metrics on / bare axum, no metrics", l1 / bare if l1 and bare else None, ">=", 0.8)
row("(issue 19) L1-hit with strata's middleware / bare axum, no middleware", l1 / bare if l1 and bare else None, "",
    f"same {http.get('body_bytes', '?')}-byte answer; the ceiling router / bare axum: "
    f"{(ceil / bare) if ceil and bare else 0:.3f}")
ceil_s, l1_s = http_med("ceiling_small", "requests_per_s"), http_med("strata_l1_hit_small", "requests_per_s")
bare_s = http_med("bare_axum_small", "requests_per_s")
small = http.get("small_body_bytes", "?")
target(f"L1-hit search / ceiling, small ({small}-byte) answer", l1_s / ceil_s if l1_s and ceil_s else None,
       ">=", 0.8)
row(f"(issue 19) L1-hit / bare axum, small ({small}-byte) answer", l1_s / bare_s if l1_s and bare_s else None, "",
    f"the ceiling router / bare axum: {(ceil_s / bare_s) if ceil_s and bare_s else 0:.3f}")
bin_l1, bin_s = http_med("strata_binary_l1_hit", "requests_per_s"), http_med("strata_binary_l1_hit_small",
                                                                              "requests_per_s")
row("(issue 19) the shipped binary's L1 hit / ceiling", bin_l1 / ceil if bin_l1 and ceil else None, "",
    "`strata serve` as it ships: default logging, admission and compression")
row(f"(issue 19) the shipped binary's L1 hit / bare axum, small answer", bin_s / bare_s if bin_s and bare_s else None,
    "", "the figure a new user sees (0.55-0.60x when the issue was filed)")
unread = http_med("ceiling_body_unread", "requests_per_s")
row("(for reference) L1-hit / ceiling that leaves the body unread", l1 / unread if l1 and unread else None, "")
paired = []
for rnd in sorted({r["round"] for r in http.get("runs", []) if "round" in r}):
    got = {r["contender"]: r["requests_per_s"] for r in http["runs"] if r.get("round") == rnd}
    if got.get("ceiling") and got.get("strata_l1_hit"):
        paired.append(got["strata_l1_hit"] / got["ceiling"])
if paired:
    lines.append("  (for reference) L1-hit / ceiling round by round, each pair run back to back: "
                 + " / ".join(f"{p:.2f}" for p in paired))
big = [r for r in http.get("scaling", []) if r["contender"] == "strata_l1_hit"]
if big:
    top = max(big, key=lambda r: r["connections"])
    target(f"errors at {top['connections']} connections (strata)", float(top["errors"]), "<=", 0.0)
if so:
    target("pooled connections under 1,000 clients", so.get("pool_connections_max"), "<=", 10.0)
    target("failed requests under 1,000 clients", so.get("under_load", {}).get("errors"), "<=", 0.0)
if ov:
    target("overload: accepted p99 / unloaded p99", ov.get("accepted_p99_over_unloaded_p99"), "<=", 2.0)
    target("overload: time to a rejection, p99 (ms)", ov.get("overload_rejected_p99_ms"), "<=", 5.0)
    target("overload: timeouts", float(ov.get("overload_timeouts_total", 0)), "<=", 0.0)
if gw:
    for a in gw.get("added_latency", []):
        target(f"gateway: added p99 at {a['rate']}/s (ms)", a.get("added_p99_ms"), "<=", 1.0)
    target("gateway: cached answer / ceiling", gw.get("cached", {}).get("ratio_to_ceiling"), ">=", 0.8)
    f = gw.get("fanout", {})
    target("gateway: upstream calls for identical streams", float(f.get("upstream_calls", 0)), "<=", 1.0)
if sem_default:
    target(f"semantic cache at the default {DEFAULT_SEMANTIC}: false hits (%)", sem_default.get("false_hit_pct"), "<=", 1.0)
    target(f"semantic cache at the default {DEFAULT_SEMANTIC}: duplicates found (%)", sem_default.get("found_pct"), ">=", 30.0)
if mem:
    r50 = mem.get("rank_50_in_process_us")
    target("memories: ranking of 50 (ms)", r50 / 1000 if r50 is not None else None, "<=", 1.0)
    target("memories: adds / raw model", mem.get("adds_over_raw_model"), ">=", 0.85)
    target("memories: mixed ops/s / seed 002's 15,000 target", (mem.get("mixed_ops_per_sec") or 0) / 15000, ">=", 1.0)
target("combined hit ratio after warm-up (Zipf)", z.get("combined_hit_ratio"), ">=", 0.9)
for c in ("embedded", "postgres_redis"):
    runs = [r for r in mx.get("runs", []) if r["contender"] == c] if mx else []
    if runs:
        target(f"errors in the mixed workload ({c})", float(sum(r["errors"] for r in runs)), "<=", 0.0)
seed_best = max([v for v in (http_med("seed_stack_as_shipped", "requests_per_s"),
                             http_med("seed_stack_nodelay_fix", "requests_per_s")) if v] or [0]) or None
target("L1-hit search / best seed stack, requests/s", l1 / seed_best if l1 and seed_best else None, ">=", 20.0)
# What any server could reach against the seed stack here: a ratio above the ceiling's is
# out of reach for strata too.
bound = ceil / seed_best if ceil and seed_best else None
report["scenarios"]["(for reference) ceiling / best seed stack"] = bound
lines.append(f"  {'(for reference) ceiling / best seed stack':<44} "
             f"{'n/a' if bound is None else f'{bound:.1f}x':>12}  (no server here can beat the ceiling)")

print("\n".join(lines))
json.dump(report, open(sys.argv[2], "w"), indent=2)
print(f"\nraw measurements: {sys.argv[1]}\nsummary: {sys.argv[2]}")
