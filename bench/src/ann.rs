//! `strata-bench dataset` and `ann`: the ANN data set (real MiniLM embeddings of corpus
//! sentences, written as little-endian f32 rows, with the exact top-10 of every query as
//! the truth) and usearch alone on it, at several ef, quantizations and metrics.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use strata_embed::{BatchSettings, Embedder, LocalEmbedder, LocalRuntime, ModelFiles};

use crate::corpus::read_lines;

fn write_f32(path: &Path, rows: &[Vec<f32>]) -> anyhow::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    for r in rows {
        for x in r {
            w.write_all(&x.to_le_bytes())?;
        }
    }
    w.flush()?;
    Ok(())
}

pub(crate) fn read_f32(path: &Path, dims: usize) -> anyhow::Result<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes
        .chunks_exact(dims * 4)
        .map(|row| {
            row.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
        .collect())
}

pub(crate) async fn dataset(
    files: &ModelFiles,
    corpus: &Path,
    out: &Path,
    n: usize,
    queries: usize,
) -> anyhow::Result<serde_json::Value> {
    std::fs::create_dir_all(out)?;
    let all = read_lines(corpus, 0, n + queries)?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let settings = BatchSettings {
        max_queue_wait: None,
        ..BatchSettings::default()
    };
    let e = LocalEmbedder::load(files, LocalRuntime::Onnx, threads, settings)?;
    let start = Instant::now();
    let mut vectors = Vec::with_capacity(all.len());
    for part in all.chunks(256) {
        vectors.extend(e.embed(part.to_vec()).await?);
    }
    let embed_secs = start.elapsed().as_secs_f64();
    let (base, qs) = vectors.split_at(n);
    write_f32(&out.join("base.f32"), base)?;
    write_f32(&out.join("queries.f32"), qs)?;
    // Exact top-10 by brute force: the ground truth for recall.
    let truth: Vec<Vec<u32>> = qs.iter().map(|q| exact(base, q, 10)).collect();
    let mut w = std::io::BufWriter::new(std::fs::File::create(out.join("truth.u32"))?);
    for t in &truth {
        for id in t {
            w.write_all(&id.to_le_bytes())?;
        }
    }
    w.flush()?;
    Ok(json!({"base": n, "queries": queries, "dims": 384, "embed_seconds": embed_secs}))
}

fn exact(base: &[Vec<f32>], q: &[f32], k: usize) -> Vec<u32> {
    let mut scored: Vec<(u32, f32)> = base
        .iter()
        .enumerate()
        .map(|(i, v)| (i as u32, dot(v, q)))
        .collect();
    scored.select_nth_unstable_by(k, |a, b| b.1.total_cmp(&a.1));
    scored.truncate(k);
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored.into_iter().map(|(i, _)| i).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub(crate) fn ann(
    data: &Path,
    efs: &[usize],
    quantization: &str,
    metric: &str,
    rerank: usize,
) -> anyhow::Result<serde_json::Value> {
    use usearch::{Index, IndexOptions, MetricKind, ScalarKind};
    let base = read_f32(&data.join("base.f32"), 384)?;
    let queries = read_f32(&data.join("queries.f32"), 384)?;
    let truth_bytes = std::fs::read(data.join("truth.u32"))?;
    let truth: Vec<Vec<u64>> = truth_bytes
        .chunks_exact(40)
        .map(|r| {
            r.chunks_exact(4)
                .map(|c| u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        })
        .collect();
    let index = Index::new(&IndexOptions {
        dimensions: 384,
        metric: match metric {
            "ip" => MetricKind::IP,
            "cos" => MetricKind::Cos,
            other => bail!("unknown metric {other}"),
        },
        quantization: match quantization {
            "f16" => ScalarKind::F16,
            "f32" => ScalarKind::F32,
            "bf16" => ScalarKind::BF16,
            "i8" => ScalarKind::I8,
            other => bail!("unknown quantization {other}"),
        },
        connectivity: 16,
        expansion_add: 128,
        expansion_search: 64,
        multi: false,
    })?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    index.reserve_capacity_and_threads(base.len(), threads)?;
    let start = Instant::now();
    std::thread::scope(|s| {
        let per = base.len().div_ceil(threads);
        for (t, part) in base.chunks(per).enumerate() {
            let index = &index;
            s.spawn(move || {
                for (i, v) in part.iter().enumerate() {
                    let _ = index.add((t * per + i) as u64, v.as_slice());
                }
            });
        }
    });
    let build = start.elapsed().as_secs_f64();
    if index.size() != base.len() {
        bail!("index holds {} of {} vectors", index.size(), base.len());
    }
    let mut results = Vec::new();
    for &ef in efs {
        index.change_expansion_search(ef);
        let start = Instant::now();
        let mut hit = 0usize;
        let deadline = Instant::now() + Duration::from_secs(60);
        for (q, t) in queries.iter().zip(&truth) {
            let m = index.search(q.as_slice(), rerank.max(10))?;
            let keys = if rerank > 10 {
                let mut scored: Vec<(u64, f32)> = m
                    .keys
                    .iter()
                    .map(|&k| (k, dot(&base[k as usize], q)))
                    .collect();
                scored.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
                scored.into_iter().take(10).map(|(k, _)| k).collect()
            } else {
                m.keys
            };
            hit += keys.iter().filter(|k| t.contains(k)).count();
            if Instant::now() > deadline {
                bail!("ANN queries took over a minute");
            }
        }
        let secs = start.elapsed().as_secs_f64();
        results.push(json!({
            "ef": ef,
            "recall_at_10": hit as f64 / (10 * queries.len()) as f64,
            "queries_per_s": queries.len() as f64 / secs,
            "rerank": rerank,
        }));
    }
    Ok(
        json!({"engine": "usearch", "quantization": quantization, "metric": metric, "n": base.len(), "build_seconds": build, "build_threads": threads, "results": results}),
    )
}
