//! `GET /metrics`: Prometheus text exposition of the cache's counters (per kind and tier,
//! sizes, evictions, breaker state, warming). Written by hand: the format is a few lines
//! of text, not worth a dependency. Also the database pool's gauges and the local embedding
//! model's passes and busy time. The observability work
//! extends this page with HTTP and job metrics.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;

struct Page(String);

impl Page {
    /// One family with a sample per kind and per value of a second label.
    fn per_kind(
        &mut self,
        kinds: &[strata_cache::KindStats],
        (name, kind, help): (&str, &str, &str),
        label: &str,
        values: impl Fn(&strata_cache::KindStats) -> Vec<(&'static str, f64)>,
    ) {
        self.family(name, kind, help);
        for k in kinds {
            for (v, n) in values(k) {
                self.sample(name, &[("kind", k.kind), (label, v)], n);
            }
        }
    }

    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(
                    self.0,
                    "{k}=\"{}\"",
                    v.replace('\\', "\\\\").replace('"', "\\\"")
                );
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// `GET /metrics`
pub async fn metrics(State(app): State<AppState>) -> Response {
    let s = app.engine.cache().stats();
    let mut p = Page(String::with_capacity(4096));
    p.per_kind(
        &s.kinds,
        (
            "strata_cache_requests_total",
            "counter",
            "Cache lookups by kind and outcome.",
        ),
        "outcome",
        |k| {
            vec![
                ("hit_l1", k.hits_l1 as f64),
                ("hit_l2", k.hits_l2 as f64),
                ("miss", k.misses as f64),
                ("coalesced", k.joined as f64),
                ("bypass", k.bypassed as f64),
                ("failed", k.failures as f64),
            ]
        },
    );
    p.per_kind(
        &s.kinds,
        (
            "strata_cache_mean_latency_seconds",
            "gauge",
            "Mean lookup time by kind and tier.",
        ),
        "tier",
        |k| {
            vec![
                ("l1", k.mean_l1_hit_micros / 1e6),
                ("l2", k.mean_l2_hit_micros / 1e6),
                ("miss", k.mean_miss_micros / 1e6),
            ]
        },
    );
    p.family(
        "strata_cache_hit_ratio",
        "gauge",
        "(L1 + L2 hits) / lookups, by kind.",
    );
    for k in &s.kinds {
        p.sample("strata_cache_hit_ratio", &[("kind", k.kind)], k.hit_ratio);
    }
    p.family(
        "strata_cache_computed_bytes_total",
        "counter",
        "Bytes produced by computations, by kind.",
    );
    for k in &s.kinds {
        p.sample(
            "strata_cache_computed_bytes_total",
            &[("kind", k.kind)],
            k.bytes_computed as f64,
        );
    }
    for (name, kind, help, v) in [
        (
            "strata_cache_l1_bytes",
            "gauge",
            "Bytes held in L1.",
            s.l1_bytes,
        ),
        (
            "strata_cache_l1_capacity_bytes",
            "gauge",
            "L1 byte budget.",
            s.l1_capacity_bytes,
        ),
        (
            "strata_cache_l1_entries",
            "gauge",
            "Entries in L1.",
            s.l1_entries,
        ),
        (
            "strata_cache_l1_evictions_total",
            "counter",
            "L1 entries evicted for space.",
            s.l1_evictions,
        ),
        (
            "strata_cache_l1_expirations_total",
            "counter",
            "L1 entries dropped at their TTL.",
            s.l1_expirations,
        ),
        (
            "strata_cache_invalidations_total",
            "counter",
            "Scope generation bumps.",
            s.invalidations,
        ),
    ] {
        p.family(name, kind, help);
        p.sample(name, &[], v as f64);
    }
    if let (model, Some(m)) = app.engine.model_stats() {
        for (name, kind, help, v) in [
            (
                "strata_model_passes_total",
                "counter",
                "Forward passes of the local embedding model.",
                m.passes as f64,
            ),
            (
                "strata_model_texts_total",
                "counter",
                "Texts embedded by the local model.",
                m.texts as f64,
            ),
            (
                "strata_model_failed_passes_total",
                "counter",
                "Forward passes that failed.",
                m.failed_passes as f64,
            ),
            (
                "strata_model_busy_seconds_total",
                "counter",
                "Seconds inside forward passes; its rate is the model's utilisation (at most 1).",
                m.busy_seconds,
            ),
            (
                "strata_model_queued_requests",
                "gauge",
                "Embedding requests waiting for a forward pass.",
                m.queued as f64,
            ),
        ] {
            p.family(name, kind, help);
            p.sample(name, &[("model", model)], v);
        }
    }
    let pool = app.engine.pool_stats();
    for (name, kind, help, v) in [
        (
            "strata_db_pool_max_connections",
            "gauge",
            "Most connections the database pool may open.",
            f64::from(pool.max_size),
        ),
        (
            "strata_db_pool_connections",
            "gauge",
            "Open database connections.",
            f64::from(pool.size),
        ),
        (
            "strata_db_pool_idle_connections",
            "gauge",
            "Open database connections nobody holds.",
            f64::from(pool.idle),
        ),
        (
            "strata_db_pool_in_use_connections",
            "gauge",
            "Database connections held by a caller.",
            f64::from(pool.in_use),
        ),
        (
            "strata_db_pool_waiters",
            "gauge",
            "Callers waiting for a database connection.",
            pool.waiters as f64,
        ),
        (
            "strata_db_pool_acquired_total",
            "counter",
            "Database connections handed out.",
            pool.acquired as f64,
        ),
        (
            "strata_db_pool_timeouts_total",
            "counter",
            "Acquires that timed out (answered 503).",
            pool.timeouts as f64,
        ),
        (
            "strata_db_pool_acquire_mean_seconds",
            "gauge",
            "Mean wait for a database connection.",
            pool.acquire_mean_ms / 1e3,
        ),
        (
            "strata_db_pool_acquire_max_seconds",
            "gauge",
            "Longest wait for a database connection.",
            pool.acquire_max_ms / 1e3,
        ),
    ] {
        p.family(name, kind, help);
        p.sample(name, &[("backend", app.engine.backend())], v);
    }
    if let Some(l2) = &s.l2 {
        p.family(
            "strata_cache_l2_breaker_open",
            "gauge",
            "1 while the Redis circuit breaker is open or half-open.",
        );
        p.sample(
            "strata_cache_l2_breaker_open",
            &[],
            f64::from(u8::from(l2.breaker != "closed")),
        );
        p.family(
            "strata_cache_l2_bus_healthy",
            "gauge",
            "1 while this process trusts its caches for tenant data.",
        );
        p.sample(
            "strata_cache_l2_bus_healthy",
            &[],
            f64::from(u8::from(l2.bus_healthy)),
        );
        for (name, help, v) in [
            (
                "strata_cache_l2_breaker_opened_total",
                "Times the breaker opened.",
                l2.breaker_opened,
            ),
            ("strata_cache_l2_gets_total", "L2 reads.", l2.gets),
            ("strata_cache_l2_sets_total", "L2 writes.", l2.sets),
            (
                "strata_cache_l2_errors_total",
                "Redis commands that failed.",
                l2.errors,
            ),
            (
                "strata_cache_l2_timeouts_total",
                "Redis commands that timed out.",
                l2.timeouts,
            ),
            (
                "strata_cache_l2_skipped_total",
                "Redis commands skipped while the breaker was open.",
                l2.skipped,
            ),
            (
                "strata_cache_l2_read_bytes_total",
                "Encoded bytes read from L2.",
                l2.bytes_read,
            ),
            (
                "strata_cache_l2_written_bytes_total",
                "Encoded bytes written to L2.",
                l2.bytes_written,
            ),
            (
                "strata_cache_l2_lock_waits_total",
                "Waits for another process's computation.",
                l2.lock_waits,
            ),
            (
                "strata_cache_l2_ack_timeouts_total",
                "Invalidations not acknowledged by every process in time.",
                l2.ack_timeouts,
            ),
        ] {
            p.family(name, "counter", help);
            p.sample(name, &[], v as f64);
        }
    }
    let w = app.warmer.stats();
    p.family(
        "strata_cache_warmed_total",
        "counter",
        "Searches recomputed by warming.",
    );
    p.sample("strata_cache_warmed_total", &[], w.warmed as f64);
    let mut r = p.0.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}
