//! `strata-bench lexical`: strata's in-process BM25 index (`bm25.rs`, the lexical side of
//! hybrid search) against qdrant-edge's sparse BM25 vectors, on BEIR SciFact train.
//!
//! Issue 25 asks whether Qdrant's sparse path should carry the lexical side when the
//! qdrant-edge index is chosen. This answers it on the same texts and queries: each SciFact
//! abstract (title and text) is one indexed text, each train claim with judgements one query
//! at k = 100, scored as `bench/scifact.py` scores the HTTP runs (nDCG@10 with linear gain,
//! ties by document id descending; recall@100; every judged query counted).
//!
//! One engine per process, so its memory is its own (`bench/run` alternates them):
//! - `strata`: `Bm25Index` (k1 1.2, b 0.75, the corpus's own average length and idf);
//! - `qdrant`: an `EdgeShard` with one sparse vector under `Modifier::Idf` (the shard
//!   computes idf at query time), documents embedded by qdrant-edge's `EdgeBm25` (its English
//!   stop words and Snowball stemmer, k1 1.2, b 0.75). Its embedder takes the average
//!   length as a setting: the run gives it this corpus's average (words kept by strata's
//!   analysis), as a careful user would, and reports the crate's default of 256 beside it.
//!
//! Prints one JSON object: build seconds, resident memory the (first) index added, and per configuration
//! nDCG@10, recall@100 and single-thread query latency (analysis included) p50/p95.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use qdrant_edge::bm25_embed::{EdgeBm25, EdgeBm25Config};
use qdrant_edge::{
    EdgeConfig, EdgeShard, EdgeSparseVectorParamsBuilder, Modifier, NamedQuery, PointId,
    PointInsertOperations, PointOperations, PointStructPersisted, QueryEnum, QueryRequest,
    ScoringQuery, UpdateOperation, VectorInternal, VectorPersisted, VectorStructPersisted,
    WithPayloadInterface, WithVector,
};
use serde_json::json;
use strata_engine::bm25::{Bm25Index, analyze};
use strata_engine::ids::TenantId;
use strata_engine::qdrant::numeric_hits;

use crate::indexes::rss_mib;

/// The sparse vector's name in the shard.
const SPARSE: &str = "bm25";
/// Hits asked for per query (recall is read at 100, nDCG at 10).
const K: usize = 100;

/// SciFact as the run uses it.
struct Data {
    /// (BEIR id, title and text), in file order; a text's key is its position.
    docs: Vec<(String, String)>,
    /// (query text, judged documents and their gains), judged queries only.
    queries: Vec<(String, HashMap<String, f64>)>,
}

fn load(dir: &Path) -> anyhow::Result<Data> {
    let mut docs = Vec::new();
    let corpus = std::fs::read_to_string(dir.join("corpus.jsonl"))
        .with_context(|| format!("reading {}", dir.join("corpus.jsonl").display()))?;
    for line in corpus.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let text = format!(
            "{} {}",
            v["title"].as_str().unwrap_or_default(),
            v["text"].as_str().unwrap_or_default()
        );
        docs.push((
            v["_id"]
                .as_str()
                .context("a document without _id")?
                .to_owned(),
            text,
        ));
    }
    let mut judged: HashMap<String, HashMap<String, f64>> = HashMap::new();
    let qrels = std::fs::read_to_string(dir.join("qrels-train.tsv"))?;
    for line in qrels.lines().skip(1) {
        let mut f = line.split('\t');
        let (Some(q), Some(d), Some(s)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        judged
            .entry(q.to_owned())
            .or_default()
            .insert(d.to_owned(), s.trim().parse()?);
    }
    let mut queries = Vec::new();
    for line in std::fs::read_to_string(dir.join("queries-train.jsonl"))?.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)?;
        let id = v["_id"].as_str().context("a query without _id")?;
        if let Some(rel) = judged.remove(id) {
            queries.push((v["text"].as_str().unwrap_or_default().to_owned(), rel));
        }
    }
    Ok(Data { docs, queries })
}

/// nDCG@10 and recall@100 of one ranking, as pytrec_eval computes them.
fn score(ranked: &[(String, f32)], rel: &HashMap<String, f64>) -> (f64, f64) {
    let mut ranked = ranked.to_vec();
    // Score descending, ties by document id descending (trec_eval's order).
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    let dcg: f64 = ranked
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, (d, _))| rel.get(d).copied().unwrap_or(0.0) / ((i + 2) as f64).log2())
        .sum();
    let mut gains: Vec<f64> = rel.values().copied().filter(|g| *g > 0.0).collect();
    gains.sort_by(|a, b| b.total_cmp(a));
    let ideal: f64 = gains
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, g)| g / ((i + 2) as f64).log2())
        .sum();
    let relevant = gains.len().max(1) as f64;
    let found = ranked
        .iter()
        .take(K)
        .filter(|(d, _)| rel.get(d).is_some_and(|g| *g > 0.0))
        .count() as f64;
    let ndcg = if ideal > 0.0 { dcg / ideal } else { 0.0 };
    (ndcg, found / relevant)
}

/// Runs every query through `search` and scores the rankings.
fn evaluate(
    data: &Data,
    mut search: impl FnMut(&str) -> anyhow::Result<Vec<(u64, f32)>>,
) -> anyhow::Result<serde_json::Value> {
    let (mut ndcg, mut recall) = (0.0, 0.0);
    let mut times = Vec::with_capacity(data.queries.len());
    for (text, rel) in &data.queries {
        let start = Instant::now();
        let hits = search(text)?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        let ranked: Vec<(String, f32)> = hits
            .into_iter()
            .map(|(key, s)| (data.docs[key as usize].0.clone(), s))
            .collect();
        let (n, r) = score(&ranked, rel);
        ndcg += n;
        recall += r;
    }
    times.sort_by(f64::total_cmp);
    let q = data.queries.len().max(1) as f64;
    Ok(json!({
        "ndcg_at_10": ndcg / q,
        "recall_at_100": recall / q,
        "p50_ms": super::percentile(&times, 0.5),
        "p95_ms": super::percentile(&times, 0.95),
    }))
}

/// Runs the measurements for `engine` (`strata` or `qdrant`) on SciFact in `dir`; `work` is
/// scratch space for the qdrant shard.
///
/// With `distractors` (a file of sentences, one a line) the first `n` of them join the
/// index as texts no query is judged against: the same quality question at a larger index's
/// cost per query.
pub fn run(
    engine: &str,
    dir: &Path,
    work: &Path,
    distractors: Option<(&Path, usize)>,
) -> anyhow::Result<serde_json::Value> {
    let mut data = load(dir)?;
    let judged = data.docs.len();
    if let Some((file, n)) = distractors {
        for (i, line) in crate::corpus::read_lines(file, 0, n)?
            .into_iter()
            .enumerate()
        {
            data.docs.push((format!("distractor-{i}"), line));
        }
    }
    let words: usize = data.docs.iter().map(|(_, t)| analyze(t).count()).sum();
    let avg_len = words as f64 / data.docs.len().max(1) as f64;
    let out = match engine {
        "strata" => strata(&data)?,
        "qdrant" => qdrant(&data, work, avg_len)?,
        other => bail!("unknown engine {other} (strata or qdrant)"),
    };
    let mut out = out;
    out["engine"] = json!(engine);
    out["texts"] = json!(data.docs.len());
    out["distractors"] = json!(data.docs.len() - judged);
    out["queries"] = json!(data.queries.len());
    out["average_words"] = json!(avg_len);
    Ok(out)
}

fn strata(data: &Data) -> anyhow::Result<serde_json::Value> {
    let owner = TenantId::local();
    let before = rss_mib();
    let index = Bm25Index::new();
    let start = Instant::now();
    let rows: Vec<(u64, TenantId, String)> = data
        .docs
        .iter()
        .enumerate()
        .map(|(i, (_, t))| (i as u64, owner.clone(), t.clone()))
        .collect();
    for chunk in rows.chunks(256) {
        index.add(chunk)?;
    }
    let build_seconds = start.elapsed().as_secs_f64();
    let rss = rss_mib() - before;
    let result = evaluate(data, |q| {
        let mut terms: Vec<String> = analyze(q).collect();
        terms.sort_unstable();
        terms.dedup();
        Ok(index.search(&owner, &terms, K, None))
    })?;
    Ok(json!({
        "build_seconds": build_seconds,
        "rss_mib": rss,
        "heap_mib": index.stats().heap_bytes as f64 / (1024.0 * 1024.0),
        "configurations": { "strata_bm25": result },
    }))
}

fn qdrant(data: &Data, work: &Path, avg_len: f64) -> anyhow::Result<serde_json::Value> {
    let mut configurations = serde_json::Map::new();
    let mut build = serde_json::Map::new();
    let mut rss = None;
    for (name, avg) in [
        ("qdrant_bm25_corpus_avg_len", avg_len),
        ("qdrant_bm25_avg_len_256", 256.0),
    ] {
        let path = work.join(format!("lexical-qdrant-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        // The configuration's JSON form (as Qdrant's REST API takes it): the other fields
        // keep the crate's defaults.
        let config: EdgeBm25Config = serde_json::from_value(json!({ "avg_len": avg }))?;
        let embedder =
            EdgeBm25::new(config).map_err(|e| anyhow::anyhow!("qdrant-edge BM25: {e}"))?;
        let config = EdgeConfig::builder()
            .sparse_vector(
                SPARSE,
                EdgeSparseVectorParamsBuilder::new()
                    .modifier(Modifier::Idf)
                    .build(),
            )
            .build();
        let before = rss_mib();
        let shard = EdgeShard::new(&path, config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let start = Instant::now();
        for (base, chunk) in data.docs.chunks(256).enumerate() {
            let points: Vec<PointStructPersisted> = chunk
                .iter()
                .enumerate()
                .map(|(i, (_, text))| PointStructPersisted {
                    id: PointId::NumId((base * 256 + i) as u64),
                    vector: VectorStructPersisted::Named(HashMap::from([(
                        SPARSE.to_owned(),
                        VectorPersisted::Sparse(embedder.embed_document(text)),
                    )])),
                    payload: None,
                })
                .collect();
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)),
                ))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        shard.optimize().map_err(|e| anyhow::anyhow!("{e}"))?;
        shard.flush();
        build.insert(name.to_owned(), json!(start.elapsed().as_secs_f64()));
        // The first shard's: the second is built after the first is dropped, over memory
        // the allocator may already hold.
        if rss.is_none() {
            rss = Some(rss_mib() - before);
        }
        let result = evaluate(data, |q| {
            let request = QueryRequest {
                prefetches: Vec::new(),
                query: Some(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery::new(
                    VectorInternal::Sparse(embedder.embed_query(q)),
                    SPARSE,
                )))),
                filter: None,
                score_threshold: None,
                limit: K,
                offset: 0,
                params: None,
                with_vector: WithVector::Bool(false),
                with_payload: WithPayloadInterface::Bool(false),
            };
            let found = shard.query(request).map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(numeric_hits(found))
        })?;
        configurations.insert(name.to_owned(), result);
        drop(shard);
        let _ = std::fs::remove_dir_all(&path);
    }
    Ok(json!({ "build_seconds": build, "rss_mib": rss, "configurations": configurations }))
}
