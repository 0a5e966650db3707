//! The tiers' hit ratio on a Zipf(1.0) workload: L1 alone, then L1 + L2 (Redis).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use serde_json::json;
use strata_engine::RedisSettings;

use crate::Zipf;

#[derive(Debug)]
struct Never;

impl From<strata_cache::CacheError> for Never {
    fn from(_: strata_cache::CacheError) -> Self {
        Never
    }
}

/// Hit ratio of L1 alone and of L1 + L2 on a Zipf(1.0) workload over `keys` distinct
/// requests, L1 sized to `fraction` of them; the first half of the requests warms up.
pub async fn zipf(
    redis: String,
    keys: usize,
    fraction: f64,
    requests: usize,
) -> anyhow::Result<serde_json::Value> {
    use strata_engine::{Cache, CacheSettings, KindSpec, Source};
    // A search answer's size and shape (JSON text compresses like the real thing).
    let value = |k: usize| {
        let hit = format!(
            "{{\"document_id\":\"0193{k:028x}\",\"title\":\"document {k}\",\"ordinal\":3,\"text\":\"a sentence of the corpus that matched the query {k}\",\"score\":0.71}},"
        );
        Bytes::from(format!(
            "{{\"hits\":[{}],\"exhaustive\":false}}",
            hit.repeat(10)
        ))
    };
    let entry = value(0).len() as u64 + 120;
    let cache = Cache::new(CacheSettings {
        l1_bytes: (keys as f64 * fraction * entry as f64) as u64,
        kinds: vec![KindSpec {
            name: "search_results",
            l1_ttl: Duration::from_secs(3600),
            l2_ttl: Duration::from_secs(3600),
            distributed: false,
        }],
        redis: Some(RedisSettings::new(redis)),
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if !cache.ready(Duration::from_secs(5)).await {
        bail!("redis is not reachable");
    }
    let scope = format!("bench{}", std::process::id());
    let zipf = Arc::new(Zipf::new(keys));
    let tasks = 32;
    let per_task = requests / tasks;
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (cache, zipf, scope) = (cache.clone(), zipf.clone(), scope.clone());
        handles.push(tokio::spawn(async move {
            let mut rng = crate::l1::Rng::new(t as u64);
            let mut counts = [[0u64; 3]; 2]; // [warm-up, measured] x [l1, l2, miss]
            for i in 0..per_task {
                let k = zipf.sample(rng.unit());
                let l = cache
                    .get_or_compute("search_results", &scope, &k.to_le_bytes(), || async move {
                        Ok::<_, Never>(value(k))
                    })
                    .await
                    .map_err(|_| ())
                    .expect("compute never fails");
                let phase = usize::from(i >= per_task / 2);
                let tier = match l.source {
                    Source::L1 => 0,
                    Source::L2 => 1,
                    _ => 2,
                };
                counts[phase][tier] += 1;
            }
            counts
        }));
    }
    let mut total = [[0u64; 3]; 2];
    for h in handles {
        let c = h.await?;
        for p in 0..2 {
            for t in 0..3 {
                total[p][t] += c[p][t];
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let stats = cache.stats();
    cache.clear(Some("search_results")).await;
    cache.close().await;
    let [l1, l2, miss] = total[1];
    let n = (l1 + l2 + miss) as f64;
    Ok(json!({
        "keys": keys,
        "l1_fraction": fraction,
        "requests": requests,
        "seconds": secs,
        "measured_requests": n,
        "l1_hit_ratio": l1 as f64 / n,
        "l2_hit_ratio": l2 as f64 / n,
        "combined_hit_ratio": (l1 + l2) as f64 / n,
        "warmup_combined_hit_ratio": (total[0][0] + total[0][1]) as f64 / (total[0].iter().sum::<u64>() as f64),
        "l1_evictions": stats.l1_evictions,
        "l2_bytes_written": stats.l2.as_ref().map(|s| s.bytes_written),
    }))
}
