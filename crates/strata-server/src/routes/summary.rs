//! `GET /v1/performance/metrics/summary` (sliding windows over the registry, the pool, the
//! job queue, the process and the alert rules' state: what the dashboard draws) and
//! `GET /v1/performance/system/health` (each dependency probed, with its latency and a
//! verdict).
//!
//! Both hold nothing of any tenant's (every figure is summed over tenants), so any caller
//! may read them, as `/metrics`.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::AppState;
use crate::alerts::{self, Inputs};
use crate::caller::Caller;
use crate::summary::{Counters, Window};

/// The counters the windows are computed from, now.
pub(crate) fn counters(app: &AppState) -> Counters {
    let cache = app.engine.cache_policy().cache().stats();
    let jobs = app.engine.jobs().stats();
    Counters {
        routes: app.metrics.http.totals(),
        cache: cache
            .kinds
            .iter()
            .map(|k| {
                let hits = k.hits_l1 + k.hits_l2;
                (k.kind, (hits, hits + k.misses + k.joined + k.bypassed))
            })
            .collect(),
        model_busy_seconds: app
            .engine
            .retrieval()
            .model_stats()
            .1
            .map_or(0.0, |m| m.busy_seconds),
        job_failures: jobs.iter().map(|k| k.failed).sum(),
        job_attempts: jobs
            .iter()
            .map(|k| k.succeeded + k.failed + k.retried + k.released + k.lease_lost)
            .sum(),
    }
}

/// `GET /v1/performance/metrics/summary`
#[utoipa::path(
    get,
    path = "/v1/performance/metrics/summary",
    operation_id = "metrics_summary",
    tag = "performance",
    summary = "Performance summary over 1, 5 and 15 minutes",
    description = "`windows` (1m, 5m, 15m; each covers `seconds`, less while the process is \
                   younger): requests, throughput, 5xx and 4xx rates and p50/p95/p99/mean \
                   latency in ms, all together (`total`) and per matched route; cache hit \
                   ratio per kind; the model's utilisation; job attempts and failures. Then \
                   `pool` (utilisation = in use / max), `jobs` (unfinished jobs by state and \
                   kind, every process; `null` when the store does not answer), `process`, \
                   `model`, and `alerts`: each rule of docs/alerts.yml with its value now and \
                   whether it is breached (Prometheus fires it after it holds for `hold`). \
                   Computed from in-process counters sampled every 5 s; cheap to poll every \
                   second.",
    responses((status = 200, description = "The summary", body = Object)),
)]
pub async fn metrics_summary(State(app): State<AppState>, _caller: Caller) -> Json<Value> {
    Json(summary(&app).await)
}

/// The summary (see [`metrics_summary`]).
pub(crate) async fn summary(app: &AppState) -> Value {
    let now = Instant::now();
    let counters = counters(app);
    app.windows.offer(now, &counters);
    let windows = app.windows.windows(now, &counters);
    let depth = app.engine.jobs().queue_depth().await.ok();
    let pool = app.engine.admin().pool_stats();
    let process = crate::process::read();
    let (model, model_stats) = app.engine.retrieval().model_stats();
    let pool_utilisation =
        (pool.max_size > 0).then(|| f64::from(pool.in_use) / f64::from(pool.max_size));
    let jobs = depth.as_ref().map(|d| {
        let by_state = |state: &str| -> u64 {
            d.iter()
                .filter(|x| x.state == state)
                .map(|x| x.jobs)
                .sum::<u64>()
        };
        json!({
            "queued": by_state("queued"),
            "delayed": by_state("delayed"),
            "running": by_state("running"),
            "by_kind": d,
        })
    });
    let inputs = alert_inputs(
        &windows,
        pool_utilisation,
        jobs.as_ref().and_then(|j| j["queued"].as_f64()),
        process.map(|p| p.resident_memory_bytes as f64),
    );
    let windows_json: serde_json::Map<String, Value> = windows
        .iter()
        .map(|w| (w.name.to_owned(), json!(w)))
        .collect();
    json!({
        "uptime_seconds": app.started.elapsed().as_secs_f64(),
        "windows": windows_json,
        "pool": {
            "backend": app.engine.admin().backend(),
            "max": pool.max_size,
            "open": pool.size,
            "idle": pool.idle,
            "in_use": pool.in_use,
            "waiters": pool.waiters,
            "utilisation": pool_utilisation,
            "acquire_mean_ms": pool.acquire_mean_ms,
            "timeouts": pool.timeouts,
        },
        "jobs": jobs,
        "process": process,
        "model": { "id": model, "stats": model_stats },
        "alerts": alerts::evaluate(&inputs),
    })
}

/// The alert rules' inputs from a summary's figures.
fn alert_inputs(
    windows: &[Window],
    pool_utilisation: Option<f64>,
    jobs_queued: Option<f64>,
    resident_memory_bytes: Option<f64>,
) -> Inputs {
    let find = |name: &str| windows.iter().find(|w| w.name == name);
    let (m5, m15) = (find("5m"), find("15m"));
    let lookups = |w: &Window| w.cache.iter().map(|c| c.lookups).sum::<u64>();
    let hit_ratio_change = match (m5, m15) {
        (Some(a), Some(b)) if a.seconds > 0.0 && lookups(a) as f64 / a.seconds >= 1.0 => {
            match (a.cache_hit_ratio, b.cache_hit_ratio) {
                (Some(x), Some(y)) if y > 0.0 => Some(x / y),
                _ => None,
            }
        }
        _ => None,
    };
    Inputs {
        p95_seconds_5m: m5.and_then(|w| w.total.p95_ms).map(|ms| ms / 1000.0),
        error_rate_5m: m5.and_then(|w| w.total.error_rate),
        hit_ratio_change,
        pool_utilisation,
        jobs_queued,
        job_failures_15m: m15.map(|w| w.job_failures as f64),
        resident_memory_bytes,
    }
}

/// A part's verdict: `ok`, `degraded` (working, but look at it) or `down`.
fn verdict(ok: bool, degraded: bool) -> &'static str {
    match (ok, degraded) {
        (false, _) => "down",
        (true, true) => "degraded",
        (true, false) => "ok",
    }
}

/// The worse of two verdicts.
fn worse(a: &'static str, b: &'static str) -> &'static str {
    let rank = |v| match v {
        "down" => 2,
        "degraded" => 1,
        _ => 0,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// The bound of the alert rule `name` (so health and alerts agree on what is too much).
fn threshold(name: &str) -> f64 {
    alerts::RULES
        .iter()
        .find(|r| r.name == name)
        .map_or(f64::INFINITY, |r| r.threshold)
}

/// How long a probe may take before the part is called down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Free disk below this share of the data directory's filesystem is `degraded`.
const DISK_LOW: f64 = 0.05;

/// `GET /v1/performance/system/health`
#[utoipa::path(
    get,
    path = "/v1/performance/system/health",
    operation_id = "system_health",
    tag = "performance",
    summary = "Each dependency's state and latency, and the process's and host's resources",
    description = "`status` is the worst part's verdict (`ok`, `degraded`, `down`); each part \
                   has its own `status` and the figures it was judged on: `database` (a \
                   round trip, the pool), `redis` (a PING; absent without Redis; its breaker \
                   and invalidation bus), `model` (the local model's passes, failures and \
                   queue), `extraction` (the PDF reader, whether extraction runs in a child \
                   process, its memory and time limits, and any program gone missing), \
                   `jobs` (unfinished jobs by state), `process` (memory, CPU, file \
                   descriptors against their limit, threads) and `host` (CPUs, load, memory, \
                   the data directory's free disk). Always 200: readiness for a load \
                   balancer is `/readyz`.",
    responses((status = 200, description = "The verdicts", body = Object)),
)]
pub async fn system_health(State(app): State<AppState>, _caller: Caller) -> Json<Value> {
    Json(health(&app).await)
}

/// The verdicts (see [`system_health`]).
pub(crate) async fn health(app: &AppState) -> Value {
    let started = Instant::now();
    let db = tokio::time::timeout(PROBE_TIMEOUT, app.engine.admin().ping()).await;
    let db_ms = started.elapsed().as_secs_f64() * 1000.0;
    let pool = app.engine.admin().pool_stats();
    let (db_ok, db_error) = match db {
        Ok(Ok(())) => (true, None),
        Ok(Err(e)) => (false, Some(e.to_string())),
        Err(_) => (false, Some(format!("no answer within {PROBE_TIMEOUT:?}"))),
    };
    // Degraded on the alert rule's own bound (a waiter or two is normal: this probe is one).
    let saturated = pool.max_size > 0
        && f64::from(pool.in_use) / f64::from(pool.max_size) > threshold("StrataDbPoolSaturated");
    let database_status = verdict(db_ok, saturated);
    let mut overall = database_status;
    let mut parts = serde_json::Map::new();
    parts.insert(
        "database".into(),
        json!({
            "status": database_status,
            "backend": app.engine.admin().backend(),
            "latency_ms": db_ms,
            "error": db_error,
            "pool": { "max": pool.max_size, "open": pool.size, "in_use": pool.in_use,
                      "waiters": pool.waiters, "timeouts": pool.timeouts },
        }),
    );
    let cache = app.engine.cache_policy().cache();
    if let Some(ping) = cache.ping_remote().await {
        let l2 = cache.stats().l2;
        let (ok, latency_ms, error) = match ping {
            Ok(d) => (true, Some(d.as_secs_f64() * 1000.0), None),
            Err(e) => (false, None, Some(e)),
        };
        let bus = l2.as_ref().is_some_and(|s| s.bus_healthy);
        let breaker = l2.as_ref().map_or("closed", |s| s.breaker);
        let status = verdict(ok, !bus || breaker != "closed");
        overall = worse(overall, status);
        parts.insert(
            "redis".into(),
            json!({
                "status": status,
                "latency_ms": latency_ms,
                "error": error,
                "breaker": breaker,
                "bus_healthy": bus,
            }),
        );
    }
    let (model, stats) = app.engine.retrieval().model_stats();
    let model_status = match stats {
        // A model that has failed every pass it ran is down; one with failures, degraded.
        Some(s) => verdict(
            s.passes == 0 || s.failed_passes < s.passes,
            s.failed_passes > 0,
        ),
        None => "ok",
    };
    overall = worse(overall, model_status);
    parts.insert(
        "model".into(),
        json!({ "status": model_status, "id": model, "local": stats.is_some(), "stats": stats }),
    );
    // Extraction: the programs it runs must still be there (a package removed under a running
    // server fails every upload of that format).
    let (extract, timeout) = app.engine.extraction();
    let pdf = match &extract.pdf {
        strata_engine::extract::PdfReader::Poppler(p) => Some(p.as_path()),
        strata_engine::extract::PdfReader::Builtin => None,
    };
    let missing: Vec<String> = pdf
        .into_iter()
        .chain(extract.helper.as_deref())
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    let extract_status = if missing.is_empty() { "ok" } else { "degraded" };
    overall = worse(overall, extract_status);
    parts.insert(
        "extraction".into(),
        json!({
            "status": extract_status,
            "pdf_reader": extract.pdf.describe(),
            "in_child_process": extract.helper.is_some(),
            "memory_limit_bytes": extract.memory_limit,
            "time_limit_secs": timeout.as_secs_f64(),
            "missing": missing,
        }),
    );
    let depth = app.engine.jobs().queue_depth().await;
    let jobs_status = match &depth {
        Ok(d) => {
            let queued: u64 = d
                .iter()
                .filter(|x| x.state == "queued")
                .map(|x| x.jobs)
                .sum();
            verdict(true, queued as f64 > threshold("StrataJobBacklog"))
        }
        Err(_) => "down",
    };
    overall = worse(overall, jobs_status);
    parts.insert(
        "jobs".into(),
        json!({ "status": jobs_status, "depth": depth.as_ref().ok() }),
    );
    if let Some(p) = crate::process::read() {
        let status = verdict(true, p.max_fds > 0 && p.open_fds * 10 > p.max_fds * 9);
        overall = worse(overall, status);
        parts.insert("process".into(), json!({ "status": status, "stats": p }));
    }
    if let Some(h) = crate::process::host(app.engine.data_dir()) {
        let low_disk = match (h.disk_available_bytes, h.disk_total_bytes) {
            (Some(free), Some(total)) if total > 0 => (free as f64 / total as f64) < DISK_LOW,
            _ => false,
        };
        let low_memory = h.memory_available_bytes * 20 < h.memory_total_bytes;
        let status = verdict(true, low_disk || low_memory);
        overall = worse(overall, status);
        parts.insert("host".into(), json!({ "status": status, "stats": h }));
    }
    let mut out = serde_json::Map::new();
    out.insert("status".into(), json!(overall));
    out.insert(
        "checked_in_ms".into(),
        json!(started.elapsed().as_secs_f64() * 1000.0),
    );
    out.extend(parts);
    Value::Object(out)
}
