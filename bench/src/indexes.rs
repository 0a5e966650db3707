//! `strata-bench index`: one of strata's in-process vector indexes (usearch, or the
//! qdrant-edge shard) on the `ann` data set, through the same types the server uses.
//!
//! One engine per process, so its memory is its own: `bench/run` alternates the engines (and
//! hnswlib, in Python) round by round. Prints one JSON object:
//! - `build_seconds`: every vector added (one thread, as ingestion adds them) and the index
//!   saved (for qdrant, that is when its optimizers build the HNSW segments);
//! - `rss_mib`: resident memory the index added;
//! - `results`: recall@10 against the exact answers and single-thread queries/s per ef,
//!   everything owned by one tenant, as strata re-ranks (usearch proposes twice as many
//!   candidates, scored again with the f32 vectors; qdrant's scores are already f32);
//! - `filtered`: the same vectors spread over 10 tenants, searched as one tenant with an
//!   allowed set (the answer to a tag or document filter) keeping 100%, 10% or 1% of its
//!   vectors, at ef 64: recall@10 against the exact filtered answers, and queries/s.

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use anyhow::bail;
use serde_json::json;
use strata_engine::ids::TenantId;
use strata_engine::qdrant::QdrantIndex;
use strata_engine::vectors::{AnnSettings, InProcessIndex, VectorIndex, exact_top_k};

const MODEL: &str = "bench";
const DIMS: usize = 384;

/// Keys of the `k` best, ranked as the server ranks them (`ann.rs`): an index whose scores
/// are estimates proposes twice as many candidates, re-scored with the f32 vectors.
fn top(
    index: &dyn InProcessIndex,
    owner: &TenantId,
    q: &[f32],
    k: usize,
    allowed: Option<&HashSet<u64>>,
    base: &[Vec<f32>],
) -> anyhow::Result<Vec<u64>> {
    if index.exact_scores() {
        let found = index.search(owner, q, k, allowed)?;
        return Ok(found.into_iter().map(|(key, _)| key).collect());
    }
    let found = index.search(owner, q, (2 * k).max(20), allowed)?;
    let rows: Vec<(u64, Vec<f32>)> = found
        .into_iter()
        .map(|(key, _)| (key, base[key as usize].clone()))
        .collect();
    Ok(exact_top_k(q, &rows, k)
        .into_iter()
        .map(|(key, _)| key)
        .collect())
}

/// The process's resident memory, in MiB (0 where /proc is not there).
pub(crate) fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs the measurements for `engine` (`usearch` or `qdrant`) on the data set in `data`.
pub fn run(
    engine: &str,
    data: &Path,
    efs: &[usize],
    queries_limit: usize,
) -> anyhow::Result<serde_json::Value> {
    let base = super::read_f32(&data.join("base.f32"), DIMS)?;
    let mut queries = super::read_f32(&data.join("queries.f32"), DIMS)?;
    queries.truncate(queries_limit);
    let work = work_dir(data, engine)?;
    let result = match engine {
        "usearch" => measure::<VectorIndex>(engine, &work.join("v.usearch"), &base, &queries, efs),
        "qdrant" => measure::<QdrantIndex>(engine, &work.join("v.qdrant"), &base, &queries, efs),
        other => bail!("unknown engine {other} (usearch or qdrant)"),
    };
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn work_dir(data: &Path, engine: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = data.join(format!("index-{engine}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn build<I: InProcessIndex>(
    path: &Path,
    base: &[Vec<f32>],
    owner_of: impl Fn(usize) -> TenantId,
) -> anyhow::Result<(I, f64, (u64, u64))> {
    let index = I::new(path, MODEL, DIMS, AnnSettings::default())?;
    let start = Instant::now();
    // Batch by batch, as ingestion adds them: no copy of the whole set is held beside the
    // index, so the resident memory measured after is the index's.
    for first in (0..base.len()).step_by(256) {
        let rows: Vec<(u64, TenantId, Vec<f32>)> = (first..(first + 256).min(base.len()))
            .map(|i| (i as u64, owner_of(i), base[i].clone()))
            .collect();
        index.add(&rows)?;
    }
    index.save()?;
    let secs = start.elapsed().as_secs_f64();
    let n = base.len() as u64;
    let key_sum = (0..n).fold(0u64, u64::wrapping_add);
    Ok((index, secs, (n, key_sum)))
}

fn measure<I: InProcessIndex>(
    engine: &str,
    path: &Path,
    base: &[Vec<f32>],
    queries: &[Vec<f32>],
    efs: &[usize],
) -> anyhow::Result<serde_json::Value> {
    let everyone = TenantId::local();
    let all: Vec<(u64, Vec<f32>)> = base
        .iter()
        .enumerate()
        .map(|(i, v)| (i as u64, v.clone()))
        .collect();
    let truth: Vec<Vec<u64>> = queries
        .iter()
        .map(|q| {
            exact_top_k(q, &all, 10)
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        })
        .collect();
    let before = rss_mib();
    let (index, build_seconds, fingerprint) = build::<I>(path, base, |_| everyone.clone())?;
    let rss = rss_mib() - before;
    drop(index);
    let owners: Vec<(u64, TenantId)> = (0..base.len() as u64)
        .map(|k| (k, everyone.clone()))
        .collect();
    let mut results = Vec::new();
    for &ef in efs {
        let settings = AnnSettings {
            expansion_search: ef,
            ..AnnSettings::default()
        };
        let index = I::load(path, MODEL, DIMS, settings, fingerprint)?
            .ok_or_else(|| anyhow::anyhow!("the saved {engine} index did not load"))?;
        index.register_owners(&owners);
        let start = Instant::now();
        let mut hit = 0usize;
        for (q, t) in queries.iter().zip(&truth) {
            let got = top(&index, &everyone, q, 10, None, base)?;
            hit += got.iter().filter(|k| t.contains(k)).count();
        }
        let secs = start.elapsed().as_secs_f64();
        results.push(json!({
            "ef": ef,
            "recall_at_10": hit as f64 / (10 * queries.len()) as f64,
            "queries_per_s": queries.len() as f64 / secs,
        }));
    }
    // A new index in place of the first (`new` replaces what is at the path).
    let filtered = filtered::<I>(path, base, queries)?;
    Ok(json!({
        "engine": engine,
        "n": base.len(),
        "queries": queries.len(),
        "build_seconds": build_seconds,
        "build_threads": 1,
        "rss_mib": rss,
        "results": results,
        "filtered": filtered,
    }))
}

/// The vectors spread over 10 and then 100 tenants; the first tenant searched alone and with
/// allowed sets of several selectivities. Beside each, the exact path's speed over the same
/// candidates (their vectors in memory): the server takes that path instead of the index for
/// a filter matching at most `--search-exact-limit` chunks (10,000 by default), reading the
/// candidates' vectors from the database, so below that limit it is what a user gets from
/// either engine.
fn filtered<I: InProcessIndex>(
    path: &Path,
    base: &[Vec<f32>],
    queries: &[Vec<f32>],
) -> anyhow::Result<serde_json::Value> {
    let mut out = Vec::new();
    for tenant_count in [10usize, 100] {
        let tenants: Vec<TenantId> = (0..tenant_count)
            .map(|t| TenantId::parse(&format!("t{t}")).expect("a valid tenant name"))
            .collect();
        let (index, _, _) = build::<I>(path, base, |i| tenants[i % tenant_count].clone())?;
        let mine: Vec<u64> = (0..base.len() as u64)
            .filter(|k| (*k as usize).is_multiple_of(tenant_count))
            .collect();
        for percent in [100u64, 10, 1] {
            // A fixed pseudo-random share of the tenant's keys, as a tag would pick.
            let allowed: HashSet<u64> = mine
                .iter()
                .copied()
                .filter(|k| k.wrapping_mul(0x9E37_79B9_7F4A_7C15) % 100 < percent)
                .collect();
            let candidates: Vec<(u64, Vec<f32>)> = allowed
                .iter()
                .map(|&k| (k, base[k as usize].clone()))
                .collect();
            let filter = (percent < 100).then_some(&allowed);
            let mut hit = 0usize;
            let (mut secs, mut exact_secs) = (0.0, 0.0);
            for q in queries {
                let t = Instant::now();
                let got = top(&index, &tenants[0], q, 10, filter, base)?;
                secs += t.elapsed().as_secs_f64();
                let t = Instant::now();
                let truth: Vec<u64> = exact_top_k(q, &candidates, 10)
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect();
                exact_secs += t.elapsed().as_secs_f64();
                hit += got.iter().filter(|k| truth.contains(k)).count();
            }
            out.push(json!({
                "tenants": tenant_count,
                "tenant_share_percent": percent,
                "allowed": allowed.len(),
                "recall_at_10": hit as f64 / (10 * queries.len()) as f64,
                "queries_per_s": queries.len() as f64 / secs,
                "exact_queries_per_s": queries.len() as f64 / exact_secs,
            }));
        }
        drop(index);
    }
    Ok(serde_json::Value::Array(out))
}
