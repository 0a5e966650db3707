//! The semantic cache on labelled question pairs (Quora Question Pairs, as in
//! `../shared/data/qqp-pairs.jsonl`): insert one side, look up the other. A hit on a
//! duplicate pair is a match found; a hit on a non-duplicate is a false hit.
//!
//! Two measurements, each at several thresholds with the guard on and off:
//! - `pairs`: each pair alone (the similarity of its two sides, then the guard), the way the
//!   issue's baseline figures for plain MiniLM cosine are stated;
//! - `tier`: through [`strata_cache::SemanticTier`] as the gateway uses it, the pairs dealt
//!   into scopes of `scope` entries each (a tenant's cached prompts): the `b` side is looked
//!   up among all the `a` sides of its scope, and a hit on any entry but its own pair counts
//!   as false (the labels say nothing of it; most are unrelated questions).
//!
//! Embeddings come from the same int8 MiniLM strata runs, computed once and kept beside the
//! data directory (keyed by the model and the pairs file's size).

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use serde_json::json;
use strata_cache::{Found, Probe, SemanticSettings, SemanticTier, guard};
use strata_embed::{BatchModel, ModelFiles, OnnxMiniLm};

/// One labelled pair.
struct Pair {
    a: String,
    b: String,
    duplicate: bool,
}

fn read_pairs(path: &Path, max: usize) -> anyhow::Result<Vec<Pair>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        out.push(Pair {
            a: v["a"].as_str().context("a")?.to_owned(),
            b: v["b"].as_str().context("b")?.to_owned(),
            duplicate: v["duplicate"].as_bool().context("duplicate")?,
        });
        if out.len() == max {
            break;
        }
    }
    Ok(out)
}

/// Embeddings of `texts`, from `cache` when it holds exactly as many.
fn embed_all(files: &ModelFiles, texts: &[&str], cache: &Path) -> anyhow::Result<Vec<Vec<f32>>> {
    const DIMS: usize = 384;
    if let Ok(bytes) = std::fs::read(cache)
        && bytes.len() == texts.len() * DIMS * 4
    {
        return Ok(bytes
            .chunks_exact(DIMS * 4)
            .map(|row| {
                row.chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().expect("four bytes")))
                    .collect()
            })
            .collect());
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let model = OnnxMiniLm::load(files, threads)?;
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].len());
    let mut out = vec![Vec::new(); texts.len()];
    let started = Instant::now();
    for (n, part) in order.chunks(64).enumerate() {
        let batch: Vec<String> = part.iter().map(|&i| texts[i].to_owned()).collect();
        for (&i, v) in part.iter().zip(model.embed_batch(&batch)?) {
            anyhow::ensure!(v.len() == DIMS, "the model gives {} dimensions", v.len());
            out[i] = v;
        }
        if n % 200 == 0 {
            eprintln!(
                "embedded {} of {} texts ({:.0} s)",
                n * 64,
                texts.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(cache)?);
    for v in &out {
        for x in v {
            f.write_all(&x.to_le_bytes())?;
        }
    }
    f.flush()?;
    Ok(out)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Counts of one configuration.
#[derive(Default, Clone, Copy)]
struct Tally {
    found: usize,
    false_hits: usize,
    /// Tier only: false hits on an entry other than the pair's own.
    other_entry: usize,
}

impl Tally {
    fn report(&self, dups: usize, non: usize) -> serde_json::Value {
        json!({
            "found_pct": pct(self.found, dups),
            "false_hit_pct": pct(self.false_hits, non + dups),
            "false_hit_on_non_duplicates_pct": pct(self.false_hits - self.other_entry, non),
            "false_hits_on_other_entries": self.other_entry,
        })
    }
}

fn pct(n: usize, of: usize) -> f64 {
    if of == 0 {
        0.0
    } else {
        (n as f64 * 10_000.0 / of as f64).round() / 100.0
    }
}

/// Runs both measurements; `max` pairs at most (0: all).
pub fn run(
    files: &ModelFiles,
    pairs_path: &Path,
    data: &Path,
    thresholds: &[f32],
    scope: usize,
    max: usize,
) -> anyhow::Result<serde_json::Value> {
    let pairs = read_pairs(pairs_path, if max == 0 { usize::MAX } else { max })?;
    std::fs::create_dir_all(data)?;
    let size = std::fs::metadata(pairs_path)?.len();
    let cache = data.join(format!("qqp-{size}-{}.f32", pairs.len()));
    let texts: Vec<&str> = pairs
        .iter()
        .map(|p| p.a.as_str())
        .chain(pairs.iter().map(|p| p.b.as_str()))
        .collect();
    let embedded = Instant::now();
    let vectors = embed_all(files, &texts, &cache)?;
    let embed_secs = embedded.elapsed().as_secs_f64();
    let (va, vb) = vectors.split_at(pairs.len());
    let dups = pairs.iter().filter(|p| p.duplicate).count();
    let non = pairs.len() - dups;

    // Each pair alone.
    let similarity: Vec<f32> = va.iter().zip(vb).map(|(a, b)| dot(a, b)).collect();
    let floor = thresholds.iter().copied().fold(f32::INFINITY, f32::min);
    let guard_ok: Vec<Option<bool>> = pairs
        .iter()
        .zip(&similarity)
        .map(|(p, &s)| (s >= floor).then(|| guard::check(&p.b, &p.a).is_ok()))
        .collect();
    let mut alone = Vec::new();
    for &t in thresholds {
        for guarded in [false, true] {
            let mut tally = Tally::default();
            for (i, p) in pairs.iter().enumerate() {
                let hit = similarity[i] >= t && (!guarded || guard_ok[i] == Some(true));
                if hit && p.duplicate {
                    tally.found += 1;
                } else if hit {
                    tally.false_hits += 1;
                }
            }
            let mut r = tally.report(dups, non);
            r["threshold"] = json!(t);
            r["guard"] = json!(guarded);
            r["false_hit_pct"] = json!(pct(tally.false_hits, non));
            alone.push(r);
        }
    }

    // Through the tier, scopes of `scope` pairs.
    let scope = scope.max(1);
    let mut tier_rows = Vec::new();
    let lookups = Instant::now();
    let mut lookups_made = 0usize;
    for &t in thresholds {
        for guarded in [false, true] {
            let mut tally = Tally::default();
            for (s, chunk) in (0..pairs.len())
                .collect::<Vec<_>>()
                .chunks(scope)
                .enumerate()
            {
                let tier = SemanticTier::new(SemanticSettings {
                    max_bytes: u64::MAX,
                    per_scope: scope,
                    ..SemanticSettings::default()
                });
                let key = *blake3_like(s);
                for &i in chunk {
                    tier.insert(
                        key,
                        &pairs[i].a,
                        &va[i],
                        Bytes::from(i.to_le_bytes().to_vec()),
                    );
                }
                for &i in chunk {
                    lookups_made += 1;
                    let found = tier.lookup(
                        &key,
                        Probe {
                            text: &pairs[i].b,
                            vector: &vb[i],
                            threshold: t,
                            guard: guarded,
                        },
                    );
                    if let Found::Hit(c) = found {
                        let own = c.pointer.as_ref() == i.to_le_bytes();
                        if own && pairs[i].duplicate {
                            tally.found += 1;
                        } else {
                            tally.false_hits += 1;
                            if !own {
                                tally.other_entry += 1;
                            }
                        }
                    }
                }
            }
            let mut r = tally.report(dups, non);
            r["threshold"] = json!(t);
            r["guard"] = json!(guarded);
            tier_rows.push(r);
        }
    }
    let per_lookup_us = lookups.elapsed().as_secs_f64() * 1e6 / lookups_made.max(1) as f64;
    Ok(json!({
        "pairs": pairs.len(),
        "duplicates": dups,
        "non_duplicates": non,
        "embed_secs": embed_secs,
        "scope_entries": scope,
        "lookup_us_mean": per_lookup_us,
        "alone": alone,
        "tier": tier_rows,
    }))
}

/// A distinct 32-byte scope key per number.
fn blake3_like(n: usize) -> Box<[u8; 32]> {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&(n as u64).to_le_bytes());
    Box::new(k)
}
