//! `strata-bench l1`: the in-process cache engines (quick_cache, moka) under a Zipf(1.0)
//! read-heavy workload on two threads, and the Zipf sampler the other benchmarks draw from.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

/// Zipf(1.0) sampler over `n` ranks: inverse CDF by binary search.
pub(crate) struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub(crate) fn new(n: usize) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for k in 1..=n {
            sum += 1.0 / k as f64;
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Self { cdf }
    }

    pub(crate) fn sample(&self, u: f64) -> usize {
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// xorshift64*: the uniform numbers the workloads draw, one stream per thread or task.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(stream: u64) -> Self {
        Self(0x9E37_79B9_7F4A_7C15 ^ (stream + 1))
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub(crate) fn l1(
    engine: &str,
    keys: usize,
    fraction: f64,
    seconds: f64,
) -> anyhow::Result<serde_json::Value> {
    use std::sync::atomic::{AtomicU64, Ordering};
    const VALUE: usize = 2048;
    let key_of = |k: usize| format!("strata:search_results:t0123456789abcdef:0:{k:032x}");
    let entry_bytes = (key_of(0).len() + VALUE + 64) as u64;
    let capacity = ((keys as u64 * entry_bytes) as f64 * fraction) as u64;
    let zipf = Arc::new(Zipf::new(keys));
    let value = bytes::Bytes::from(vec![7u8; VALUE]);
    enum Engine {
        Moka(moka::sync::Cache<String, bytes::Bytes>),
        Quick(quick_cache::sync::Cache<String, bytes::Bytes, Weigh>),
    }
    #[derive(Clone)]
    struct Weigh;
    impl quick_cache::Weighter<String, bytes::Bytes> for Weigh {
        fn weight(&self, k: &String, v: &bytes::Bytes) -> u64 {
            (k.len() + v.len() + 64) as u64
        }
    }
    let cache = Arc::new(match engine {
        "moka" => Engine::Moka(
            moka::sync::Cache::builder()
                .max_capacity(capacity)
                .weigher(|k: &String, v: &bytes::Bytes| (k.len() + v.len() + 64) as u32)
                .build(),
        ),
        "quick_cache" => Engine::Quick(quick_cache::sync::Cache::with_weighter(
            (capacity / entry_bytes) as usize,
            capacity,
            Weigh,
        )),
        other => bail!("unknown engine {other}"),
    });
    let (hits, misses) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let threads = 2;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (cache, zipf, hits, misses, value) = (
                cache.clone(),
                zipf.clone(),
                hits.clone(),
                misses.clone(),
                value.clone(),
            );
            s.spawn(move || {
                let mut rng = Rng::new(t as u64);
                let (mut h, mut m) = (0u64, 0u64);
                let mut ops = 0u64;
                loop {
                    let key = key_of(zipf.sample(rng.unit()));
                    let found = match cache.as_ref() {
                        Engine::Moka(c) => c.get(&key).is_some(),
                        Engine::Quick(c) => c.get(&key).is_some(),
                    };
                    if found {
                        h += 1;
                    } else {
                        m += 1;
                        match cache.as_ref() {
                            Engine::Moka(c) => c.insert(key, value.clone()),
                            Engine::Quick(c) => c.insert(key, value.clone()),
                        }
                    }
                    ops += 1;
                    if ops.is_multiple_of(1024) && Instant::now() >= deadline {
                        break;
                    }
                }
                hits.fetch_add(h, Ordering::Relaxed);
                misses.fetch_add(m, Ordering::Relaxed);
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let (h, m) = (hits.load(Ordering::Relaxed), misses.load(Ordering::Relaxed));
    Ok(json!({
        "engine": engine,
        "keys": keys,
        "capacity_bytes": capacity,
        "threads": threads,
        "ops_per_s": (h + m) as f64 / secs,
        "hit_ratio": h as f64 / (h + m) as f64,
    }))
}
