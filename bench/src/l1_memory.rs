//! `strata-bench l1-memory`: what an L1 entry really costs the process, and whether resident
//! memory holds still while a byte-budgeted cache churns.
//!
//! Two phases, under the server's allocator (mimalloc):
//! 1. **churn**: a budgeted cache on two threads (60% reads of recent keys by Zipf, the rest
//!    new keys, value sizes log-normal like the soak's mix), RSS and the cache's weight and
//!    entry count sampled each second; at the end the cache is cleared and RSS read again;
//! 2. **cost** (in a child process, from a clean heap): fills an unbounded cache with entries
//!    of one value size at a time and reads the resident-set growth per entry, against what
//!    the weigher counts for it.
//!
//! `--weigher counted` weighs an entry as strata-cache did (key + value + 64 bytes);
//! `--weigher allocated` as strata-cache does now ([`strata_cache::entry_weight`]). Run both
//! (one process each: RSS is per process) and compare.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use serde_json::json;

use crate::l1::{Rng, Zipf};

#[derive(Clone)]
struct Entry {
    value: Bytes,
    #[allow(dead_code)] // kept for its size: the server's entries carry an expiry
    expires: Instant,
}

#[derive(Clone, Copy)]
enum Weigh {
    Counted,
    Allocated,
}

impl quick_cache::Weighter<String, Entry> for Weigh {
    fn weight(&self, k: &String, v: &Entry) -> u64 {
        match self {
            Weigh::Counted => (k.len() + v.value.len() + 64) as u64,
            Weigh::Allocated => strata_cache::entry_weight(k.capacity(), v.value.len()),
        }
    }
}

type Cache = quick_cache::sync::Cache<String, Entry, Weigh>;

fn rss() -> u64 {
    (crate::indexes::rss_mib() * 1048576.0) as u64
}

/// Log-normal value size: median 3 KiB, sigma 0.9, within 64 B..64 KiB (the soak's cache
/// averaged 3.6-4.2 KiB an entry: search pages, embeddings, documents, lists).
fn value_size(rng: &mut Rng) -> usize {
    // Box-Muller; 1 - u keeps the logarithm's argument above zero.
    let (u1, u2) = (1.0 - rng.unit(), rng.unit());
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (3072.0 * (0.9 * z).exp()).clamp(64.0, 65536.0) as usize
}

fn key(n: u64) -> String {
    // Shaped like strata-cache's keys: prefix, kind, scope, generation, digest.
    let mut k = String::with_capacity(80);
    use std::fmt::Write as _;
    let _ = write!(
        k,
        "strata:search_results:t0123456789abcdef01234567:3:{n:032x}"
    );
    k
}

fn value(len: usize) -> Bytes {
    // Exact capacity, as the server seals its bodies.
    Bytes::from(vec![0x5a; len])
}

/// Runs the phases; `budget` in bytes. Without `phase`, both: the churn here and the cost in
/// a child process of this binary, so that neither phase reads memory the other freed (the
/// allocator keeps freed pages and hands them out again without touching RSS).
pub(crate) fn run(
    weigher: &str,
    budget: u64,
    seconds: u64,
    phase: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let weigh = match weigher {
        "counted" => Weigh::Counted,
        "allocated" => Weigh::Allocated,
        other => bail!("unknown weigher {other} (counted or allocated)"),
    };
    let seconds = seconds.max(1);
    // As the server runs: no transparent huge pages (strata_engine::heap).
    strata_engine::heap::disable_huge_pages();
    match phase {
        Some("cost") => return Ok(cost(weigh)),
        Some("churn") => return Ok(churn(weigh, budget, seconds)),
        Some(other) => bail!("unknown phase {other} (cost or churn)"),
        None => {}
    }
    let churn = churn(weigh, budget, seconds);
    let child = std::process::Command::new(std::env::current_exe()?)
        .args(["l1-memory", "--weigher", weigher, "--phase", "cost"])
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !child.status.success() {
        bail!("the cost phase failed: {}", child.status);
    }
    let cost: serde_json::Value = serde_json::from_slice(&child.stdout)?;
    Ok(json!({ "weigher": weigher, "budget": budget, "cost": cost, "churn": churn }))
}

fn cost(weigh: Weigh) -> serde_json::Value {
    use quick_cache::Weighter as _;
    let n = 20_000u64;
    let mut rows = Vec::new();
    // Kept to the end, so no fill reuses memory an earlier one freed.
    let mut kept = Vec::new();
    for size in [16usize, 1_536, 3_000, 4_500, 12_000, 40_000] {
        let cache = Cache::with_weighter(n as usize, u64::MAX, weigh);
        let before = rss();
        let mut counted = 0u64;
        for i in 0..n {
            let (k, v) = (key(i), value(size));
            let e = Entry {
                value: v,
                expires: Instant::now(),
            };
            counted += weigh.weight(&k, &e);
            cache.insert(k, e);
        }
        // One read each, so every value has been cloned once as on the hit path.
        for i in 0..n {
            drop(cache.get(&key(i)));
        }
        let grown = rss().saturating_sub(before);
        rows.push(json!({
            "value_bytes": size,
            "rss_per_entry": grown / n,
            "weighed_per_entry": counted / n,
            "rss_over_weight": grown as f64 / counted as f64,
        }));
        kept.push(cache);
    }
    json!(rows)
}

fn churn(weigh: Weigh, budget: u64, seconds: u64) -> serde_json::Value {
    let cache = Arc::new(Cache::with_weighter(
        (budget / 2048).clamp(64, 10_000_000) as usize,
        budget,
        weigh,
    ));
    let baseline = rss();
    let stop = Arc::new(AtomicBool::new(false));
    let next_key = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let recent = 30_000usize;
    let zipf = Arc::new(Zipf::new(recent));
    let workers: Vec<_> = (0..2u64)
        .map(|t| {
            let (cache, stop, next_key, zipf) =
                (cache.clone(), stop.clone(), next_key.clone(), zipf.clone());
            std::thread::spawn(move || {
                let mut rng = Rng::new(t);
                let mut ops = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let newest = next_key.load(Ordering::Relaxed);
                    let read = rng.unit() < 0.6 && newest > 0;
                    let n = if read {
                        newest.saturating_sub(1 + zipf.sample(rng.unit()) as u64)
                    } else {
                        next_key.fetch_add(1, Ordering::Relaxed)
                    };
                    let k = key(n);
                    match cache.get(&k) {
                        Some(e) => drop(e.value),
                        None => {
                            let e = Entry {
                                value: value(value_size(&mut rng)),
                                expires: Instant::now(),
                            };
                            cache.insert(k, e);
                        }
                    }
                    ops += 1;
                    if ops.is_multiple_of(64) {
                        // Paced like a busy server's cache, not a tight loop.
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
                ops
            })
        })
        .collect();
    let start = Instant::now();
    let mut samples = Vec::new();
    for s in 1..=seconds {
        std::thread::sleep(
            (start + Duration::from_secs(s)).saturating_duration_since(Instant::now()),
        );
        let r = rss();
        samples.push(json!({
            "s": s,
            "rss_mib": r as f64 / 1048576.0,
            "over_baseline_mib": r.saturating_sub(baseline) as f64 / 1048576.0,
            "weight_mib": cache.weight() as f64 / 1048576.0,
            "entries": cache.len(),
        }));
    }
    stop.store(true, Ordering::Relaxed);
    let ops: u64 = workers.into_iter().map(|w| w.join().unwrap_or(0)).sum();
    let before_clear = rss();
    cache.clear();
    std::thread::sleep(Duration::from_secs(1));
    let after_clear = rss();
    let over = |i: usize| samples[i]["over_baseline_mib"].as_f64().unwrap_or(0.0);
    let tail = samples.len() / 5..samples.len();
    let (xs, ys): (Vec<f64>, Vec<f64>) = tail.map(|i| (i as f64, over(i))).unzip();
    json!({
        "ops": ops,
        "baseline_mib": baseline as f64 / 1048576.0,
        "over_baseline_mib_at": {
            "20%": over(samples.len() / 5),
            "end": over(samples.len() - 1),
        },
        "slope_mib_per_min_after_20%": crate::soak::slope(&xs, &ys) * 60.0,
        "before_clear_mib": before_clear as f64 / 1048576.0,
        "after_clear_mib": after_clear as f64 / 1048576.0,
        "samples": samples,
    })
}
