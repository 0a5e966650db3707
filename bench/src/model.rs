//! `strata-bench model`: the raw embedding model's throughput, one sentence at a time, in
//! batches of 32, and with 32 concurrent callers through the dynamic batcher.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use serde_json::json;
use strata_embed::{BatchModel, BatchSettings, Batcher, ModelFiles, OnnxMiniLm};

use crate::corpus::read_lines;

pub(crate) async fn model(
    files: &ModelFiles,
    corpus: &Path,
    n: usize,
    mode: &str,
    threads: Option<usize>,
    sorted: bool,
) -> anyhow::Result<serde_json::Value> {
    let mut sentences = read_lines(corpus, 0, n)?;
    if sorted {
        sentences.sort_by_key(|s| s.len());
    }
    let words: usize = sentences.iter().map(|s| s.split_whitespace().count()).sum();
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let m = Arc::new(OnnxMiniLm::load(files, threads)?);
    m.embed_batch(&sentences[..8])?; // warm-up
    let start = Instant::now();
    match mode {
        "batch1" => {
            for s in &sentences {
                m.embed_batch(std::slice::from_ref(s))?;
            }
        }
        "batch32" => {
            for part in sentences.chunks(32) {
                m.embed_batch(part)?;
            }
        }
        "dynamic" => {
            // 32 concurrent callers, each embedding one sentence at a time; the batcher's
            // throughput, so no wait budget turns callers away (the overload section measures
            // that).
            let batcher = Batcher::start(
                m.clone(),
                BatchSettings {
                    max_queue_wait: None,
                    ..BatchSettings::default()
                },
            );
            let per = sentences.len().div_ceil(32);
            let mut tasks = Vec::new();
            for part in sentences.chunks(per) {
                let b = batcher.clone();
                let part = part.to_vec();
                tasks.push(tokio::spawn(async move {
                    for s in part {
                        b.embed(vec![s]).await?;
                    }
                    Ok::<_, strata_embed::EmbedError>(())
                }));
            }
            for t in tasks {
                t.await??;
            }
        }
        other => bail!("unknown mode {other}"),
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(json!({
        "mode": mode,
        "sentences": n,
        "mean_words": words as f64 / n as f64,
        "seconds": secs,
        "sentences_per_s": n as f64 / secs,
        "ms_per_sentence": secs * 1000.0 / n as f64,
    }))
}
