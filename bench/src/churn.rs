//! `strata-bench index-churn`: does an in-process index hold its memory still while what it
//! holds stays the same size but keeps changing?
//!
//! The soak's library churns this way: a new small document is added and the oldest one the
//! soak added is deleted, so the live count stays put while keys keep being new. This command
//! does the same to one index directly, far faster than the soak can (a million operations
//! in a minute against ~40,000 an hour through HTTP), and prints the process's resident memory
//! at each checkpoint with the index's own figures, so a rise can be put on one structure.
//! One index per process: `usearch` and `qdrant` (the vector indexes, 384 random unit
//! dimensions), or `bm25` (the lexical index, sentences of a corpus file).

use std::collections::VecDeque;
use std::path::Path;
use std::time::Instant;

use anyhow::bail;
use serde_json::json;
use strata_engine::bm25::Bm25Index;
use strata_engine::ids::TenantId;
use strata_engine::qdrant::QdrantIndex;
use strata_engine::vectors::{AnnSettings, InProcessIndex, VectorIndex};

use crate::indexes::rss_mib;
use crate::l1::Rng;

const DIMS: usize = 384;

/// The structure under churn.
enum Target {
    Vectors(Box<dyn InProcessIndex>),
    Lexical(Box<Bm25Index>, Vec<String>),
}

impl Target {
    fn add(&self, key: u64, owner: &TenantId, rng: &mut Rng) -> anyhow::Result<()> {
        match self {
            Target::Vectors(index) => {
                let v: Vec<f32> = (0..DIMS).map(|_| rng.unit() as f32 - 0.5).collect();
                index.add(&[(key, owner.clone(), v)])?;
            }
            Target::Lexical(index, texts) => {
                let text = &texts[(key as usize) % texts.len()];
                index.add(&[(key, owner.clone(), format!("{text} ({key})"))])?;
            }
        }
        Ok(())
    }

    fn remove(&self, key: u64) -> anyhow::Result<()> {
        match self {
            Target::Vectors(index) => index.remove(&[key])?,
            Target::Lexical(index, _) => index.remove(&[key]),
        }
        Ok(())
    }

    fn figures(&self) -> serde_json::Value {
        match self {
            Target::Vectors(index) => json!({ "vectors": index.len() }),
            Target::Lexical(index, _) => {
                let s = index.stats();
                json!({ "texts": s.texts, "postings": s.postings, "heap_bytes": s.heap_bytes })
            }
        }
    }
}

/// Keeps `live` entries while adding one and removing the oldest, `ops` times; a checkpoint
/// every `every` operations. `save_every` saves a vector index as the server's saver does.
pub fn run(
    index: &str,
    work: &Path,
    corpus: Option<&Path>,
    live: usize,
    ops: usize,
    every: usize,
    save_every: usize,
) -> anyhow::Result<serde_json::Value> {
    std::fs::create_dir_all(work)?;
    let base = rss_mib();
    let target = match index {
        "usearch" => Target::Vectors(Box::new(VectorIndex::new(
            &work.join("churn.usearch"),
            "churn",
            DIMS,
            AnnSettings::default(),
        )?)),
        "qdrant" => Target::Vectors(Box::new(QdrantIndex::new(
            &work.join("churn.qdrant"),
            "churn",
            DIMS,
            AnnSettings::default(),
        )?)),
        "bm25" => {
            let Some(corpus) = corpus else {
                bail!("bm25 churns sentences: pass --corpus");
            };
            let texts = crate::read_lines(corpus, 0, 5000)?;
            Target::Lexical(Box::new(Bm25Index::new()), texts)
        }
        other => bail!("--index is usearch, qdrant or bm25, not {other:?}"),
    };
    let owner = TenantId::parse("churn")?;
    let mut rng = Rng::new(7);
    let mut keys = VecDeque::with_capacity(live + 1);
    let mut next: u64 = 1;
    for _ in 0..live {
        target.add(next, &owner, &mut rng)?;
        keys.push_back(next);
        next += 1;
    }
    let started = Instant::now();
    let mut points = Vec::new();
    let mut checkpoint = |done: usize, target: &Target| {
        let point = json!({
            "ops": done,
            "seconds": started.elapsed().as_secs_f64(),
            "rss_mib": rss_mib() - base,
            "index": target.figures(),
        });
        eprintln!("churn {point}");
        points.push(point);
    };
    checkpoint(0, &target);
    for done in 1..=ops {
        target.add(next, &owner, &mut rng)?;
        keys.push_back(next);
        next += 1;
        if let Some(old) = keys.pop_front() {
            target.remove(old)?;
        }
        if save_every > 0
            && done % save_every == 0
            && let Target::Vectors(index) = &target
        {
            index.save()?;
        }
        if done % every.max(1) == 0 {
            checkpoint(done, &target);
        }
    }
    // Growth over the second half, MiB per million operations: the first half holds the
    // allocator's warm-up and any one-off reservation.
    let half: Vec<&serde_json::Value> = points
        .iter()
        .filter(|p| p["ops"].as_u64().unwrap_or(0) as usize >= ops / 2)
        .collect();
    let xs: Vec<f64> = half
        .iter()
        .map(|p| p["ops"].as_f64().unwrap_or(0.0) / 1e6)
        .collect();
    let ys: Vec<f64> = half
        .iter()
        .map(|p| p["rss_mib"].as_f64().unwrap_or(0.0))
        .collect();
    Ok(json!({
        "index": index,
        "live": live,
        "ops": ops,
        "rss_mib_per_million_ops_second_half": crate::soak::slope(&xs, &ys),
        "points": points,
    }))
}
