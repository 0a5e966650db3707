//! Admission under overload: does strata shed excess load fast and keep the requests it
//! accepts fast?
//!
//! One strata process (the release binary, embedded default) holds a small ingested corpus.
//! Every request is a search for a distinct query, so each misses the cache and needs the
//! embedding model: the expensive path, the one that saturates first. Per round:
//! 1. capacity: 32 closed-loop clients for the round's seconds; successes per second is C;
//! 2. unloaded: an open-loop stream at C/4 (one request per tick, each in its own task;
//!    latency counted from the tick, so a stalled server cannot hide its queue: no
//!    coordinated omission); the p99 of successes is the baseline;
//! 3. overload: the same open-loop stream at 4 x C. Reported: the p99 of the accepted
//!    requests against the unloaded p99 (target <= 2x), the p99 time to a rejection (503/429;
//!    target < 5 ms), and timeouts (504 or no answer within 30 s; target 0).
//!
//! The load generator shares the machine's cores with strata, as every bench here does.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{median, percentile};

/// Sizes of one run.
pub struct OverloadRun {
    /// Sentences ingested (the corpus searched).
    pub sentences: usize,
    /// Seconds of each phase.
    pub seconds: f64,
    /// Alternated rounds; medians are reported.
    pub rounds: usize,
    /// Extra `strata serve` arguments (admission settings under test).
    pub extra: Vec<String>,
}

/// What one open-loop phase saw.
#[derive(Default)]
struct Phase {
    ok_ms: Vec<f64>,
    rejected_ms: Vec<f64>,
    timeouts: u64,
    other: u64,
    sent: u64,
    seconds: f64,
}

/// Runs the benchmark against `strata_bin`.
pub async fn run(
    strata_bin: &Path,
    corpus: &Path,
    data: &Path,
    run: OverloadRun,
) -> anyhow::Result<Value> {
    let _ = std::fs::remove_dir_all(data);
    let mut args: Vec<&str> = vec!["--cache-warm-queries", "0"];
    args.extend(run.extra.iter().map(String::as_str));
    let server = crate::scale::launch(strata_bin, &data.join("strata"), &args).await?;
    let base = server.base.clone();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .timeout(Duration::from_secs(30))
        .build()?;
    let text = std::fs::read_to_string(corpus)?;
    let sentences: Vec<String> = text.lines().map(str::to_owned).collect();
    let docs: Vec<String> = sentences.iter().take(run.sentences).cloned().collect();
    crate::ingest(&client, &base, &docs, 0, Duration::from_secs(600)).await?;
    // Queries: held-out sentences, each made distinct by a counter so no two share a cache
    // entry or a query embedding.
    let pool: Arc<Vec<String>> = Arc::new(
        sentences
            .iter()
            .skip(run.sentences)
            .take(2000)
            .cloned()
            .collect(),
    );
    anyhow::ensure!(
        !pool.is_empty(),
        "the corpus has no sentences left for queries"
    );
    let counter = Arc::new(AtomicU64::new(0));
    let seconds = Duration::from_secs_f64(run.seconds);
    let mut rounds = Vec::new();
    for round in 0..run.rounds {
        server.settle(Duration::from_secs(10)).await;
        let capacity = closed_loop(&client, &base, &pool, &counter, 32, seconds).await;
        server.settle(Duration::from_secs(10)).await;
        let unloaded = open_loop(&client, &base, &pool, &counter, capacity / 4.0, seconds).await;
        server.settle(Duration::from_secs(10)).await;
        let overload = open_loop(&client, &base, &pool, &counter, capacity * 4.0, seconds).await;
        let result = summary(capacity, &unloaded, &overload);
        eprintln!("round {round}: {result}");
        rounds.push(result);
    }
    let med = |key: &str| {
        let mut v: Vec<f64> = rounds.iter().filter_map(|r| r[key].as_f64()).collect();
        v.sort_by(f64::total_cmp);
        median(&v)
    };
    let timeouts: u64 = rounds
        .iter()
        .filter_map(|r| r["overload_timeouts"].as_u64())
        .sum();
    Ok(json!({
        "sentences": run.sentences,
        "seconds": run.seconds,
        "extra_args": run.extra,
        "capacity_rps": med("capacity_rps"),
        "unloaded_p50_ms": med("unloaded_p50_ms"),
        "unloaded_p99_ms": med("unloaded_p99_ms"),
        "overload_accepted_p50_ms": med("overload_accepted_p50_ms"),
        "overload_accepted_p99_ms": med("overload_accepted_p99_ms"),
        "overload_accepted_rps": med("overload_accepted_rps"),
        "overload_rejected_share": med("overload_rejected_share"),
        "overload_rejected_p99_ms": med("overload_rejected_p99_ms"),
        "accepted_p99_over_unloaded_p99": med("accepted_p99_over_unloaded_p99"),
        "overload_timeouts_total": timeouts,
        "targets": {
            "accepted_p99_over_unloaded_p99_max": 2.0,
            "rejected_p99_ms_max": 5.0,
            "timeouts": 0,
        },
        "rounds": rounds,
    }))
}

fn summary(capacity: f64, unloaded: &Phase, overload: &Phase) -> Value {
    let sorted = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v
    };
    let (u, a, r) = (
        sorted(&unloaded.ok_ms),
        sorted(&overload.ok_ms),
        sorted(&overload.rejected_ms),
    );
    let unloaded_p99 = percentile(&u, 0.99);
    let accepted_p99 = percentile(&a, 0.99);
    json!({
        "capacity_rps": capacity,
        "unloaded_sent": unloaded.sent,
        "unloaded_p50_ms": percentile(&u, 0.5),
        "unloaded_p99_ms": unloaded_p99,
        "unloaded_failures": unloaded.rejected_ms.len() as u64 + unloaded.timeouts + unloaded.other,
        "overload_sent": overload.sent,
        "overload_accepted": a.len(),
        "overload_accepted_rps": a.len() as f64 / overload.seconds.max(1e-9),
        "overload_accepted_p50_ms": percentile(&a, 0.5),
        "overload_accepted_p99_ms": accepted_p99,
        "overload_rejected": r.len(),
        "overload_rejected_share": r.len() as f64 / overload.sent.max(1) as f64,
        "overload_rejected_p99_ms": percentile(&r, 0.99),
        "overload_timeouts": overload.timeouts,
        "overload_other": overload.other,
        "accepted_p99_over_unloaded_p99": if unloaded_p99 > 0.0 { accepted_p99 / unloaded_p99 } else { 0.0 },
    })
}

fn body(pool: &[String], counter: &AtomicU64) -> String {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    let q = &pool[(n as usize) % pool.len()];
    json!({"query": format!("{q} {n}"), "k": 10}).to_string()
}

/// One search with its body read: the status, 504 for a client-side timeout, 0 for any
/// other failure.
async fn search(client: &reqwest::Client, url: &str, body: String) -> u16 {
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    match r {
        Ok(r) => {
            let status = r.status().as_u16();
            if r.bytes().await.is_ok() { status } else { 0 }
        }
        Err(e) if e.is_timeout() => 504,
        Err(_) => 0,
    }
}

/// Successes per second of `clients` closed-loop clients.
async fn closed_loop(
    client: &reqwest::Client,
    base: &str,
    pool: &Arc<Vec<String>>,
    counter: &Arc<AtomicU64>,
    clients: usize,
    seconds: Duration,
) -> f64 {
    let ok = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + seconds;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, url, pool, counter, ok) = (
                client.clone(),
                format!("{base}/v1/search"),
                pool.clone(),
                counter.clone(),
                ok.clone(),
            );
            tokio::spawn(async move {
                while Instant::now() < end {
                    if search(&client, &url, body(&pool, &counter)).await == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    ok.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64().max(1e-9)
}

/// One request per tick at `rate` per second for `seconds`, each in its own task; latency
/// from the tick.
async fn open_loop(
    client: &reqwest::Client,
    base: &str,
    pool: &Arc<Vec<String>>,
    counter: &Arc<AtomicU64>,
    rate: f64,
    seconds: Duration,
) -> Phase {
    let rate = rate.max(1.0);
    let n = (rate * seconds.as_secs_f64()).round() as u64;
    let start = tokio::time::Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u16, f64)>();
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        let (client, url, tx) = (client.clone(), format!("{base}/v1/search"), tx.clone());
        let b = body(pool, counter);
        tokio::spawn(async move {
            let status = search(&client, &url, b).await;
            let ms = due.elapsed().as_secs_f64() * 1000.0;
            let _ = tx.send((status, ms));
        });
    }
    drop(tx);
    let mut phase = Phase {
        sent: n,
        seconds: seconds.as_secs_f64(),
        ..Phase::default()
    };
    while let Some((status, ms)) = rx.recv().await {
        match status {
            200 => phase.ok_ms.push(ms),
            429 | 503 => phase.rejected_ms.push(ms),
            504 => phase.timeouts += 1,
            _ => phase.other += 1,
        }
    }
    phase
}
