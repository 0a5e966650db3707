//! The LLM gateway: what strata adds over calling the upstream directly, how fast it serves a
//! cached answer against the HTTP ceiling, whether identical concurrent streams make one
//! upstream call, and what 1,000 concurrent streams cost in memory.
//!
//! The upstream is a local server speaking OpenAI's chat protocol, in this process: it
//! answers at once (a fixed JSON completion, or five SSE chunks), or, for a content
//! `slow:N:MS`, N chunks MS milliseconds apart. strata is the release binary (`strata serve
//! --upstream-url`), as a user runs it. Per round:
//! 1. added latency: an open-loop stream at each rate (one request per tick, each in its own
//!    task, latency from the tick), distinct prompts (every request a cache miss and an
//!    upstream call), alternately straight to the upstream and through strata; p50 and p99
//!    of both, and strata's minus the direct one;
//! 2. cached answers: wrk on one repeated request (an L1 hit) through strata, and on a
//!    ceiling server (strata's middleware around a handler returning the same bytes);
//! 3. fan-out: `fanout` identical streams at once, a slow upstream; upstream calls counted;
//! 4. memory: `streams` distinct slow streams at once; strata's resident memory before and
//!    at its peak.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt as _;
use serde_json::{Value, json};

/// The median of unsorted values.
fn med(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    crate::median(&v)
}

/// A percentile (0..1) of unsorted values.
fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    crate::percentile(&v, p)
}

/// Sizes of one run.
pub struct GatewayRun {
    /// Alternated rounds; medians are reported.
    pub rounds: usize,
    /// Seconds of each open-loop and wrk phase.
    pub seconds: f64,
    /// Open-loop rates (requests per second) of the added-latency phase.
    pub rates: Vec<u32>,
    /// wrk connections of the cached-answer phase.
    pub connections: usize,
    /// Identical concurrent streams of the fan-out phase.
    pub fanout: usize,
    /// Distinct concurrent streams of the memory phase.
    pub streams: usize,
}

/// The local upstream: counts calls.
struct Upstream {
    base: String,
    calls: Arc<AtomicU64>,
}

const ANSWER: &str =
    "Paris is the capital of France. It has been the country's capital for most of its history.";

async fn start_upstream() -> anyhow::Result<Upstream> {
    let calls = Arc::new(AtomicU64::new(0));
    let counter = calls.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |body: Bytes| {
            let calls = counter.clone();
            async move { answer(&calls, &body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/v1", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Upstream { base, calls })
}

fn answer(calls: &AtomicU64, body: &[u8]) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    calls.fetch_add(1, Ordering::Relaxed);
    let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let content = req["messages"][0]["content"].as_str().unwrap_or("");
    let usage = json!({"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32});
    if !req["stream"].as_bool().unwrap_or(false) {
        let v = json!({"id": "chatcmpl-bench", "object": "chat.completion", "created": 1_700_000_000,
            "model": "bench-1", "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER},
            "finish_reason": "stop"}], "usage": usage});
        return (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            v.to_string(),
        )
            .into_response();
    }
    let (n, gap) = content
        .strip_prefix("slow:")
        .and_then(|r| {
            let (n, ms) = r.split_once(':')?;
            Some((n.parse().ok()?, ms.split(':').next()?.parse().ok()?))
        })
        .unwrap_or((5usize, 0u64));
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_700_000_000,
                   "model": "bench-1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let mut frames = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    frames.extend((0..n).map(|i| chunk(json!({"content": format!("word{i} ")}), Value::Null)));
    frames.push(chunk(json!({}), json!("stop")));
    if req["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false)
    {
        frames.push(format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_700_000_000,
                   "model": "bench-1", "choices": [], "usage": usage})
        ));
    }
    frames.push("data: [DONE]\n\n".into());
    let stream = futures_util::stream::iter(frames).then(move |f| async move {
        if gap > 0 {
            tokio::time::sleep(Duration::from_millis(gap)).await;
        }
        Ok::<_, std::convert::Infallible>(f)
    });
    axum::response::Response::builder()
        .header("content-type", "text/event-stream")
        .body(axum::body::Body::from_stream(stream))
        .unwrap_or_default()
}

fn chat_body(content: &str, stream: bool) -> String {
    json!({"model": "bench-1", "temperature": 0, "stream": stream,
           "messages": [{"role": "user", "content": content}]})
    .to_string()
}

/// Open loop at `rate` for `seconds` against `url`, each request a new prompt; latencies of
/// successes in ms, and failures.
async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    rate: u32,
    seconds: f64,
    tag: &str,
) -> (Vec<f64>, u64) {
    let total = (f64::from(rate) * seconds) as u64;
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + period * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let (client, url) = (client.clone(), url.to_owned());
        let body = chat_body(&format!("{tag} question number {i}"), false);
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            let ok = match r {
                Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                _ => false,
            };
            (ok, due.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut ms = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match t.await {
            Ok((true, l)) => ms.push(l),
            _ => failed += 1,
        }
    }
    (ms, failed)
}

/// Reads a whole SSE answer; whether it ended with `[DONE]`.
async fn read_stream(client: &reqwest::Client, url: &str, body: String) -> bool {
    let Ok(r) = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
    else {
        return false;
    };
    r.text()
        .await
        .is_ok_and(|t| t.trim_end().ends_with("data: [DONE]"))
}

/// Runs the benchmark against `strata_bin`.
pub async fn run(strata_bin: &Path, data: &Path, run: GatewayRun) -> anyhow::Result<Value> {
    let _ = std::fs::remove_dir_all(data);
    let up = start_upstream().await?;
    let server = crate::scale::launch(
        strata_bin,
        &data.join("strata"),
        &[
            "--cache-warm-queries",
            "0",
            "--upstream-url",
            &up.base,
            "--max-in-flight",
            "0",
        ],
    )
    .await?;
    let strata_url = format!("{}/v1/chat/completions", server.base);
    let direct_url = format!("{}/chat/completions", up.base);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .timeout(Duration::from_secs(60))
        .build()?;
    // Warm both paths (connections, the first upstream connection of strata's pool).
    for url in [&direct_url, &strata_url] {
        open_loop(&client, url, 200, 0.5, "warm").await;
    }

    // 1. Added latency, alternated per round and rate.
    let mut added = Vec::new();
    for &rate in &run.rates {
        let mut rows: Vec<(f64, f64, f64, f64, u64)> = Vec::new();
        for round in 0..run.rounds {
            let tag = format!("r{rate}-{round}");
            let (direct, df) =
                open_loop(&client, &direct_url, rate, run.seconds, &format!("{tag}d")).await;
            let (via, vf) =
                open_loop(&client, &strata_url, rate, run.seconds, &format!("{tag}s")).await;
            rows.push((
                pct(&direct, 0.5),
                pct(&direct, 0.99),
                pct(&via, 0.5),
                pct(&via, 0.99),
                df + vf,
            ));
            eprintln!(
                "gateway latency {rate}/s round {round}: direct p50 {:.3} p99 {:.3}; strata p50 {:.3} p99 {:.3} ms",
                rows[round].0, rows[round].1, rows[round].2, rows[round].3
            );
        }
        let col = |f: fn(&(f64, f64, f64, f64, u64)) -> f64| med(rows.iter().map(f).collect());
        let added_p50 = med(rows.iter().map(|r| r.2 - r.0).collect());
        let added_p99 = med(rows.iter().map(|r| r.3 - r.1).collect());
        added.push(json!({
            "rate": rate,
            "direct_p50_ms": col(|r| r.0), "direct_p99_ms": col(|r| r.1),
            "strata_p50_ms": col(|r| r.2), "strata_p99_ms": col(|r| r.3),
            "added_p50_ms": added_p50, "added_p99_ms": added_p99,
            "failed": rows.iter().map(|r| r.4).sum::<u64>(),
        }));
    }

    // 2. Cached answers against the ceiling.
    let cached_body = chat_body("What is the capital of France?", false);
    let hit = client
        .post(&strata_url)
        .header("content-type", "application/json")
        .body(cached_body.clone())
        .send()
        .await?
        .bytes()
        .await?;
    let script = crate::cache::post_script(&data.join("chat.lua"), &[cached_body], &[])?;
    let ceiling = crate::cache::ceiling_router_at("/v1/chat/completions", hit, false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ceiling_url = format!("http://{}/v1/chat/completions", listener.local_addr()?);
    let ceiling_task = tokio::spawn(async move { axum::serve(listener, ceiling).await });
    let (mut ratios, mut strata_rps, mut ceiling_rps, mut strata_p99) =
        (vec![], vec![], vec![], vec![]);
    for round in 0..run.rounds {
        let (s, c) = {
            let (script, su, cu) = (script.clone(), strata_url.clone(), ceiling_url.clone());
            let (seconds, conns) = (run.seconds, run.connections);
            tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let s = crate::cache::wrk_threads(&su, &script, seconds, conns, 1)?;
                let c = crate::cache::wrk_threads(&cu, &script, seconds, conns, 1)?;
                Ok((s, c))
            })
            .await??
        };
        eprintln!(
            "gateway cached round {round}: strata {:.0}/s, ceiling {:.0}/s",
            s.rps, c.rps
        );
        ratios.push(s.rps / c.rps);
        strata_rps.push(s.rps);
        ceiling_rps.push(c.rps);
        strata_p99.push(s.p99_ms);
        anyhow::ensure!(s.errors == 0, "{} errors on cached answers", s.errors);
    }
    ceiling_task.abort();

    // 3. Fan-out: identical slow streams at once.
    let before = up.calls.load(Ordering::Relaxed);
    let started = Instant::now();
    let tasks: Vec<_> = (0..run.fanout)
        .map(|_| {
            let (client, url) = (client.clone(), strata_url.clone());
            tokio::spawn(async move {
                read_stream(&client, &url, chat_body("slow:20:10:fanout", true)).await
            })
        })
        .collect();
    let mut complete = 0;
    for t in tasks {
        complete += usize::from(t.await.unwrap_or(false));
    }
    let fanout_calls = up.calls.load(Ordering::Relaxed) - before;
    let fanout_secs = started.elapsed().as_secs_f64();

    // 4. Memory under many concurrent streams (distinct prompts: no sharing).
    let base_rss = server.memory_mb("VmRSS").unwrap_or(f64::NAN);
    let peak = Arc::new(std::sync::Mutex::new(base_rss));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = (0..run.streams)
        .map(|i| {
            let (client, url) = (client.clone(), strata_url.clone());
            tokio::spawn(async move {
                read_stream(&client, &url, chat_body(&format!("slow:30:100:{i}"), true)).await
            })
        })
        .collect();
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        let pid_status = format!("/proc/{}/status", server.pid());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Ok(s) = std::fs::read_to_string(&pid_status)
                    && let Some(mb) = crate::status_mb(&s, "VmRSS")
                {
                    let mut p = peak.lock().unwrap_or_else(|e| e.into_inner());
                    *p = p.max(mb);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut streams_ok = 0;
    for t in tasks {
        streams_ok += usize::from(t.await.unwrap_or(false));
    }
    done.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let peak_rss = *peak.lock().unwrap_or_else(|e| e.into_inner());
    drop(server);
    Ok(json!({
        "added_latency": added,
        "cached": {
            "ratio_to_ceiling": med(ratios),
            "strata_rps": med(strata_rps),
            "ceiling_rps": med(ceiling_rps),
            "strata_p99_ms": med(strata_p99),
            "connections": run.connections,
        },
        "fanout": {"streams": run.fanout, "complete": complete, "upstream_calls": fanout_calls, "seconds": fanout_secs},
        "memory": {
            "streams": run.streams, "complete": streams_ok,
            "rss_before_mb": base_rss, "rss_peak_mb": peak_rss,
            "per_stream_kb": (peak_rss - base_rss) * 1024.0 / run.streams.max(1) as f64,
        },
    }))
}
