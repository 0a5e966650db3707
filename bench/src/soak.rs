//! Soak: a long mixed load on one `strata serve` process, sampled every minute, to show that
//! nothing grows without bound (memory, file descriptors, pool connections, latency) and that
//! nothing fails.
//!
//! The load is a closed loop of `clients` tasks, each sending one request after another
//! with a short pause: searches (60%, the query drawn from `queries` distinct ones, so most
//! are cache hits and some miss after writes), document reads (15%), list pages (10%),
//! retags (10%), and uploads of a new small document paired with the deletion of the oldest
//! one added by the soak (5%), so the library stays the same size and ingestion keeps
//! running. Each minute records the process's RSS, open descriptors and threads, the pool's
//! connections and waiters, the minute's requests, errors and latency percentiles.
//!
//! The verdict, after a warm-up: the least-squares slope of RSS (MiB per hour) and of open
//! descriptors, against the warm-up level; and the total of errors. The warm-up lasts at
//! least `warmup_minutes` and until the in-process cache has reached its byte budget: a cache
//! filling to the bound it was given is the configuration at work, not growth, and RSS can
//! only be flat once it is full. Each minute also splits RSS into anonymous memory and
//! mapped files (the model, SQLite's pages) and records the transparent huge pages among
//! them, and samples the cache's bytes and entries, and on the embedded default the
//! in-process lexical index's dictionary and heap.
//! After the load, the cache is cleared and RSS sampled again at rest, so the report shows
//! how much of the end figure the cache held.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::scale::{Instance, launch};

/// One minute of the soak.
struct Minute {
    requests: usize,
    errors: usize,
    latencies_ms: Vec<f64>,
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn threads(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("Threads:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Least-squares slope of `ys` against `xs`.
pub(crate) fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let cov: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if var == 0.0 { 0.0 } else { cov / var }
}

/// Runs the soak; `database_url` and `redis_url` choose the backend (none: SQLite).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    strata_bin: &Path,
    data: &Path,
    sentences: &[String],
    minutes: f64,
    warmup_minutes: f64,
    clients: usize,
    l1: Option<&str>,
    database_url: Option<&str>,
    redis_url: Option<&str>,
) -> anyhow::Result<Value> {
    if data.exists() {
        std::fs::remove_dir_all(data)?;
    }
    let mut args: Vec<&str> = vec!["--cache-warm-queries", "0"];
    if let Some(l1) = l1 {
        args.extend(["--cache-l1", l1]);
    }
    if let Some(u) = database_url {
        args.extend(["--database-url", u]);
    }
    if let Some(u) = redis_url {
        args.extend(["--redis-url", u]);
    }
    let server: Instance = launch(strata_bin, &data.join("strata"), &args).await?;
    let base = server.base.clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;

    // The library: 200 documents of 20 sentences.
    let mut docs = Vec::new();
    let mut jobs = Vec::new();
    for (i, group) in sentences.chunks(20).take(200).enumerate() {
        let r: Value = client
            .post(format!("{base}/v1/documents"))
            .json(
                &json!({ "text": group.join(" "), "title": format!("soak {i}"), "tags": ["seed"] }),
            )
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        docs.push(
            r["document"]["id"]
                .as_str()
                .context("document id")?
                .to_owned(),
        );
        jobs.push(r["job"]["id"].as_str().context("job id")?.to_owned());
    }
    for j in &jobs {
        loop {
            let job: Value = client
                .get(format!("{base}/v1/jobs/{j}"))
                .send()
                .await?
                .json()
                .await?;
            if job["status"] == "succeeded" {
                break;
            }
            anyhow::ensure!(job["status"] != "failed", "seed job failed: {job}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let queries: Vec<String> = sentences.iter().skip(4000).take(500).cloned().collect();
    anyhow::ensure!(
        !queries.is_empty(),
        "the corpus needs more than 4000 sentences"
    );
    let extra_texts: Vec<String> = sentences.iter().skip(5000).cloned().collect();
    // Each query's embedding once, before the clock starts: the soak is a steady state, not
    // a cold start (which the overload benchmark measures).
    for q in &queries {
        client
            .post(format!("{base}/v1/search"))
            .json(&json!({ "query": q, "k": 5 }))
            .send()
            .await?
            .error_for_status()?;
    }

    let minute = Arc::new(Mutex::new(Minute {
        requests: 0,
        errors: 0,
        latencies_ms: Vec::new(),
    }));
    let added: Arc<Mutex<VecDeque<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let docs = Arc::new(docs);
    let queries = Arc::new(queries);
    let extra_texts = Arc::new(extra_texts);
    let mut tasks = Vec::new();
    for t in 0..clients {
        let (client, base, minute, added, stop) = (
            client.clone(),
            base.clone(),
            minute.clone(),
            added.clone(),
            stop.clone(),
        );
        let (docs, queries, extra) = (docs.clone(), queries.clone(), extra_texts.clone());
        tasks.push(tokio::spawn(async move {
            let mut n: u64 = t as u64 * 7919;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let roll = (n >> 33) % 100;
                let pick = (n >> 13) as usize;
                let started = Instant::now();
                let ok = match roll {
                    0..60 => {
                        let q = &queries[pick % queries.len()];
                        send(
                            client
                                .post(format!("{base}/v1/search"))
                                .json(&json!({"query": q, "k": 5})),
                        )
                        .await
                    }
                    60..75 => {
                        send(client.get(format!("{base}/v1/documents/{}", docs[pick % docs.len()])))
                            .await
                    }
                    75..85 => send(client.get(format!("{base}/v1/documents?limit=20"))).await,
                    85..95 => {
                        let tag = format!("t{}", pick % 7);
                        send(
                            client
                                .patch(format!("{base}/v1/documents/{}", docs[pick % docs.len()]))
                                .json(&json!({ "tags": ["seed", tag] })),
                        )
                        .await
                    }
                    _ => {
                        let text = &extra[pick % extra.len().max(1)];
                        let r = client
                            .post(format!("{base}/v1/documents"))
                            .json(&json!({ "text": format!("{text} ({n})"), "tags": ["soak"] }))
                            .send()
                            .await;
                        match r {
                            Ok(r) if r.status().is_success() => {
                                let id =
                                    r.json::<Value>().await.ok().and_then(|v| {
                                        v["document"]["id"].as_str().map(str::to_owned)
                                    });
                                let oldest = {
                                    let mut a = added.lock().unwrap_or_else(|p| p.into_inner());
                                    if let Some(id) = id {
                                        a.push_back(id);
                                    }
                                    if a.len() > 50 { a.pop_front() } else { None }
                                };
                                match oldest {
                                    Some(old) => {
                                        send(client.delete(format!("{base}/v1/documents/{old}")))
                                            .await
                                    }
                                    None => true,
                                }
                            }
                            Ok(r) => {
                                eprintln!("soak error: upload {}", r.status());
                                false
                            }
                            Err(e) => {
                                eprintln!("soak error: upload {e}");
                                false
                            }
                        }
                    }
                };
                let ms = started.elapsed().as_secs_f64() * 1e3;
                {
                    let mut m = minute.lock().unwrap_or_else(|p| p.into_inner());
                    m.requests += 1;
                    m.errors += usize::from(!ok);
                    m.latencies_ms.push(ms);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    let pid = server.pid();
    let mut samples = Vec::new();
    let start = Instant::now();
    let total = Duration::from_secs_f64(minutes * 60.0);
    let mut next = start + Duration::from_secs(60).min(total);
    while Instant::now() < start + total {
        tokio::time::sleep_until(next.into()).await;
        next += Duration::from_secs(60);
        let m = {
            let mut m = minute.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(
                &mut *m,
                Minute {
                    requests: 0,
                    errors: 0,
                    latencies_ms: Vec::new(),
                },
            )
        };
        let mut lat = m.latencies_ms;
        lat.sort_by(f64::total_cmp);
        let db = stats(&client, &format!("{base}/v1/performance/database/stats")).await;
        let cache = stats(&client, &format!("{base}/v1/performance/cache/stats")).await;
        let sample = json!({
            "minute": samples.len() + 1,
            "rss_mb": server.memory_mb("VmRSS"),
            "rss_anon_mb": server.memory_mb("RssAnon"),
            "rss_file_mb": server.memory_mb("RssFile"),
            "anon_huge_mb": server.smaps_mb("AnonHugePages"),
            "l1_bytes": cache["cache"]["l1_bytes"],
            "l1_capacity_bytes": cache["cache"]["l1_capacity_bytes"],
            "l1_entries": cache["cache"]["l1_entries"],
            "l1_evictions": cache["cache"]["l1_evictions"],
            "fds": fds(pid),
            "threads": threads(pid),
            "pool_size": db["database"]["pool"]["size"],
            "pool_in_use": db["database"]["pool"]["in_use"],
            "pool_waiters": db["database"]["pool"]["waiters"],
            "lexical_terms": db["database"]["lexical_index"]["terms"],
            "lexical_heap_bytes": db["database"]["lexical_index"]["heap_bytes"],
            "requests": m.requests,
            "errors": m.errors,
            "p50_ms": crate::percentile(&lat, 0.50),
            "p99_ms": crate::percentile(&lat, 0.99),
        });
        eprintln!("soak {}", sample);
        samples.push(sample);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }

    // At rest: then with the cache cleared, which shows how much of the end figure it held.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss_at_rest = server.memory_mb("VmRSS");
    let cleared = client
        .post(format!("{base}/v1/performance/cache/clear"))
        .send()
        .await
        .map(|r| r.status().is_success())
        .unwrap_or(false);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss_cleared = server.memory_mb("VmRSS");
    let anon_cleared = server.memory_mb("RssAnon");

    // Warm-up ends at `warmup_minutes` or when L1 first reached its budget, the later.
    let filled_at = samples.iter().find_map(|s| {
        let (b, c) = (s["l1_bytes"].as_f64()?, s["l1_capacity_bytes"].as_f64()?);
        (c > 0.0 && b >= 0.95 * c).then(|| s["minute"].as_f64().unwrap_or(0.0))
    });
    let warmup_end = warmup_minutes.max(filled_at.unwrap_or(0.0));
    let after: Vec<&Value> = samples
        .iter()
        .filter(|s| s["minute"].as_f64().unwrap_or(0.0) > warmup_end)
        .collect();
    let xs: Vec<f64> = after
        .iter()
        .map(|s| s["minute"].as_f64().unwrap_or(0.0))
        .collect();
    let col =
        |k: &str| -> Vec<f64> { after.iter().map(|s| s[k].as_f64().unwrap_or(0.0)).collect() };
    let rss = col("rss_mb");
    let anon = col("rss_anon_mb");
    let fd = col("fds");
    let p99 = col("p99_ms");
    let errors: u64 = samples
        .iter()
        .map(|s| s["errors"].as_u64().unwrap_or(0))
        .sum();
    let requests: u64 = samples
        .iter()
        .map(|s| s["requests"].as_u64().unwrap_or(0))
        .sum();
    let first = |v: &[f64]| v.first().copied().unwrap_or(0.0);
    let last = |v: &[f64]| v.last().copied().unwrap_or(0.0);
    Ok(json!({
        "backend": if database_url.is_some() { "postgres" } else { "sqlite" },
        "minutes": minutes,
        "warmup_minutes": warmup_minutes,
        "l1_full_at_minute": filled_at,
        "trend_from_minute": warmup_end,
        "minutes_in_trend": after.len(),
        "clients": clients,
        "requests": requests,
        "errors": errors,
        "rss_mb_after_warmup": first(&rss),
        "rss_mb_end": last(&rss),
        "rss_slope_mb_per_hour": slope(&xs, &rss) * 60.0,
        "rss_anon_mb_after_warmup": first(&anon),
        "rss_anon_mb_end": last(&anon),
        "rss_anon_slope_mb_per_hour": slope(&xs, &anon) * 60.0,
        "rss_mb_at_rest": rss_at_rest,
        "cache_cleared": cleared,
        "rss_mb_cache_cleared": rss_cleared,
        "rss_anon_mb_cache_cleared": anon_cleared,
        "fds_after_warmup": first(&fd),
        "fds_end": last(&fd),
        "fds_slope_per_hour": slope(&xs, &fd) * 60.0,
        "p99_ms_after_warmup": first(&p99),
        "p99_ms_end": last(&p99),
        "p99_slope_ms_per_hour": slope(&xs, &p99) * 60.0,
        "samples": samples,
    }))
}

/// A statistics endpoint's JSON, or null when it does not answer.
async fn stats(client: &reqwest::Client, url: &str) -> Value {
    match client.get(url).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

async fn send(r: reqwest::RequestBuilder) -> bool {
    match r.send().await {
        Ok(r) if r.status().is_success() => true,
        Ok(r) => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            eprintln!(
                "soak error: {status} {}",
                body.chars().take(200).collect::<String>()
            );
            false
        }
        Err(e) => {
            eprintln!("soak error: {e}");
            false
        }
    }
}
