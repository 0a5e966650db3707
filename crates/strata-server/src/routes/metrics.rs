//! `GET /metrics`: the registry's Prometheus text exposition (see [`crate::metrics`]), and
//! the table of the observed families: the cache's counters (per kind and tier, sizes,
//! evictions, breaker state, warming), the database pool's gauges and the local embedding
//! model's passes and busy time, read from the snapshots the JSON endpoints show.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::metrics::{Kind, Snapshots};

/// `GET /metrics`
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    responses((status = 200, description = "The text exposition format", body = String,
               content_type = "text/plain; version=0.0.4; charset=utf-8")),
)]
pub async fn metrics(State(app): State<AppState>) -> Response {
    let depth = match app.engine.jobs().queue_depth().await {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the job queue's depth for /metrics");
            None
        }
    };
    app.metrics.set_queue_depth(depth);
    let mut r = app.metrics.encode().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(prometheus_client::encoding::prometheus_text::CONTENT_TYPE),
    );
    r
}

/// One observed family: its kind, name (counters without `_total`), HELP, and samples.
type Emit<'a> =
    dyn FnMut(Kind, &str, &str, &[(&[(&str, &str)], f64)]) -> Result<(), std::fmt::Error> + 'a;

/// Emits every observed family, in the order `/metrics` has always listed them.
pub(crate) fn observed(s: &Snapshots, emit: &mut Emit<'_>) -> Result<(), std::fmt::Error> {
    let stats = s.engine.cache_policy().cache().stats();
    let kinds = &stats.kinds;
    let per_kind =
        |label: &'static str,
         values: &dyn Fn(&strata_cache::KindStats) -> Vec<(&'static str, f64)>| {
            let mut out: Vec<([(&str, &str); 2], f64)> = Vec::new();
            for k in kinds {
                for (v, n) in values(k) {
                    out.push(([("kind", k.kind), (label, v)], n));
                }
            }
            out
        };
    let requests = per_kind("outcome", &|k| {
        vec![
            ("hit_l1", k.hits_l1 as f64),
            ("hit_l2", k.hits_l2 as f64),
            ("miss", k.misses as f64),
            ("coalesced", k.joined as f64),
            ("bypass", k.bypassed as f64),
            ("failed", k.failures as f64),
        ]
    });
    emit(
        Kind::Counter,
        "strata_cache_requests",
        "Cache lookups by kind and outcome.",
        &borrowed(&requests),
    )?;
    let latency = per_kind("tier", &|k| {
        vec![
            ("l1", k.mean_l1_hit_micros / 1e6),
            ("l2", k.mean_l2_hit_micros / 1e6),
            ("miss", k.mean_miss_micros / 1e6),
        ]
    });
    emit(
        Kind::Gauge,
        "strata_cache_mean_latency_seconds",
        "Mean lookup time by kind and tier.",
        &borrowed(&latency),
    )?;
    let by_kind = |f: &dyn Fn(&strata_cache::KindStats) -> f64| -> Vec<([(&str, &str); 1], f64)> {
        kinds.iter().map(|k| ([("kind", k.kind)], f(k))).collect()
    };
    emit(
        Kind::Gauge,
        "strata_cache_hit_ratio",
        "(L1 + L2 hits) / lookups, by kind.",
        &borrowed(&by_kind(&|k| k.hit_ratio)),
    )?;
    emit(
        Kind::Counter,
        "strata_cache_computed_bytes",
        "Bytes produced by computations, by kind.",
        &borrowed(&by_kind(&|k| k.bytes_computed as f64)),
    )?;
    let one = |v: f64| [(&[][..], v)];
    emit(
        Kind::Gauge,
        "strata_cache_l1_bytes",
        "Bytes held in L1.",
        &one(stats.l1_bytes as f64),
    )?;
    emit(
        Kind::Gauge,
        "strata_cache_l1_capacity_bytes",
        "L1 byte budget.",
        &one(stats.l1_capacity_bytes as f64),
    )?;
    emit(
        Kind::Gauge,
        "strata_cache_l1_entries",
        "Entries in L1.",
        &one(stats.l1_entries as f64),
    )?;
    emit(
        Kind::Counter,
        "strata_cache_l1_evictions",
        "L1 entries evicted for space.",
        &one(stats.l1_evictions as f64),
    )?;
    emit(
        Kind::Counter,
        "strata_cache_l1_expirations",
        "L1 entries dropped at their TTL.",
        &one(stats.l1_expirations as f64),
    )?;
    emit(
        Kind::Counter,
        "strata_cache_invalidations",
        "Scope generation bumps.",
        &one(stats.invalidations as f64),
    )?;
    if let (model, Some(m)) = s.engine.retrieval().model_stats() {
        let labels = [("model", model)];
        let l = |v: f64| [(&labels[..], v)];
        for (kind, name, help, v) in [
            (
                Kind::Counter,
                "strata_model_passes",
                "Forward passes of the local embedding model.",
                m.passes as f64,
            ),
            (
                Kind::Counter,
                "strata_model_texts",
                "Texts embedded by the local model.",
                m.texts as f64,
            ),
            (
                Kind::Counter,
                "strata_model_failed_passes",
                "Forward passes that failed.",
                m.failed_passes as f64,
            ),
            (
                Kind::Counter,
                "strata_model_busy_seconds",
                "Seconds inside forward passes; its rate is the model's utilisation (at most 1).",
                m.busy_seconds,
            ),
            (
                Kind::Gauge,
                "strata_model_queued_requests",
                "Embedding requests waiting for a forward pass.",
                m.queued as f64,
            ),
        ] {
            emit(kind, name, help, &l(v))?;
        }
    }
    let pool = s.engine.admin().pool_stats();
    let labels = [("backend", s.engine.admin().backend())];
    let l = |v: f64| [(&labels[..], v)];
    for (kind, name, help, v) in [
        (
            Kind::Gauge,
            "strata_db_pool_max_connections",
            "Most connections the database pool may open.",
            f64::from(pool.max_size),
        ),
        (
            Kind::Gauge,
            "strata_db_pool_connections",
            "Open database connections.",
            f64::from(pool.size),
        ),
        (
            Kind::Gauge,
            "strata_db_pool_idle_connections",
            "Open database connections nobody holds.",
            f64::from(pool.idle),
        ),
        (
            Kind::Gauge,
            "strata_db_pool_in_use_connections",
            "Database connections held by a caller.",
            f64::from(pool.in_use),
        ),
        (
            Kind::Gauge,
            "strata_db_pool_waiters",
            "Callers waiting for a database connection.",
            pool.waiters as f64,
        ),
        (
            Kind::Counter,
            "strata_db_pool_acquired",
            "Database connections handed out.",
            pool.acquired as f64,
        ),
        (
            Kind::Counter,
            "strata_db_pool_timeouts",
            "Acquires that timed out (answered 503).",
            pool.timeouts as f64,
        ),
        (
            Kind::Gauge,
            "strata_db_pool_acquire_mean_seconds",
            "Mean wait for a database connection.",
            pool.acquire_mean_ms / 1e3,
        ),
        (
            Kind::Gauge,
            "strata_db_pool_acquire_max_seconds",
            "Longest wait for a database connection.",
            pool.acquire_max_ms / 1e3,
        ),
    ] {
        emit(kind, name, help, &l(v))?;
    }
    if let Some(outage) = pool.outage {
        for (kind, name, help, v) in [
            (
                Kind::Gauge,
                "strata_db_unreachable",
                "1 while the database is unreachable and requests needing it are answered 503 at once.",
                f64::from(u8::from(outage.open)),
            ),
            (
                Kind::Counter,
                "strata_db_outages",
                "Times the database became unreachable.",
                outage.trips as f64,
            ),
            (
                Kind::Counter,
                "strata_db_fast_failures",
                "Requests answered 503 at once while the database was unreachable.",
                outage.fast_failures as f64,
            ),
        ] {
            emit(kind, name, help, &l(v))?;
        }
    }
    if let Some(l2) = &stats.l2 {
        emit(
            Kind::Gauge,
            "strata_cache_l2_breaker_open",
            "1 while the Redis circuit breaker is open or half-open.",
            &one(f64::from(u8::from(l2.breaker != "closed"))),
        )?;
        emit(
            Kind::Gauge,
            "strata_cache_l2_bus_healthy",
            "1 while this process trusts its caches for tenant data.",
            &one(f64::from(u8::from(l2.bus_healthy))),
        )?;
        for (name, help, v) in [
            (
                "strata_cache_l2_breaker_opened",
                "Times the breaker opened.",
                l2.breaker_opened,
            ),
            ("strata_cache_l2_gets", "L2 reads.", l2.gets),
            ("strata_cache_l2_sets", "L2 writes.", l2.sets),
            (
                "strata_cache_l2_errors",
                "Redis commands that failed.",
                l2.errors,
            ),
            (
                "strata_cache_l2_timeouts",
                "Redis commands that timed out.",
                l2.timeouts,
            ),
            (
                "strata_cache_l2_skipped",
                "Redis commands skipped while the breaker was open.",
                l2.skipped,
            ),
            (
                "strata_cache_l2_read_bytes",
                "Encoded bytes read from L2.",
                l2.bytes_read,
            ),
            (
                "strata_cache_l2_written_bytes",
                "Encoded bytes written to L2.",
                l2.bytes_written,
            ),
            (
                "strata_cache_l2_lock_waits",
                "Waits for another process's computation.",
                l2.lock_waits,
            ),
            (
                "strata_cache_l2_ack_timeouts",
                "Invalidations not acknowledged by every process in time.",
                l2.ack_timeouts,
            ),
        ] {
            emit(Kind::Counter, name, help, &one(v as f64))?;
        }
    }
    emit(
        Kind::Counter,
        "strata_cache_warmed",
        "Searches recomputed by warming.",
        &one(s.warmer.stats().warmed as f64),
    )?;
    gateway(s, emit)?;
    jobs(s, emit)?;
    process(emit)
}

/// What this process's job workers did, per kind.
fn jobs(s: &Snapshots, emit: &mut Emit<'_>) -> Result<(), std::fmt::Error> {
    let kinds = s.engine.jobs().stats();
    let mut attempts = Vec::new();
    for k in &kinds {
        for (outcome, n) in [
            ("succeeded", k.succeeded),
            ("failed", k.failed),
            ("retried", k.retried),
            ("released", k.released),
            ("lease_lost", k.lease_lost),
        ] {
            attempts.push(([("kind", k.kind), ("outcome", outcome)], n as f64));
        }
    }
    emit(
        Kind::Counter,
        "strata_jobs_attempts",
        "Job attempts this process ended, by kind and outcome.",
        &borrowed(&attempts),
    )?;
    let per_kind = |f: &dyn Fn(&strata_engine::jobs::stats::KindJobStats) -> f64| -> Vec<_> {
        kinds.iter().map(|k| ([("kind", k.kind)], f(k))).collect()
    };
    emit(
        Kind::Gauge,
        "strata_jobs_running",
        "Job attempts running in this process now, by kind.",
        &borrowed(&per_kind(&|k| k.running as f64)),
    )?;
    emit(
        Kind::Counter,
        "strata_jobs_busy_seconds",
        "Seconds this process's workers spent in job attempts, by kind.",
        &borrowed(&per_kind(&|k| k.busy_seconds)),
    )?;
    emit(
        Kind::Counter,
        "strata_jobs_abandoned",
        "Jobs failed for good because their workers kept losing them, by kind.",
        &borrowed(&per_kind(&|k| k.abandoned as f64)),
    )?;
    let Some(depth) = s
        .queue
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
    else {
        return Ok(());
    };
    // Every kind this process runs, in every state, so a series reads 0 rather than vanish.
    let mut samples: Vec<([(&str, &str); 2], f64)> = Vec::new();
    for k in &kinds {
        for state in ["queued", "delayed", "running"] {
            samples.push(([("kind", k.kind), ("state", state)], 0.0));
        }
    }
    for d in &depth {
        match samples
            .iter_mut()
            .find(|(l, _)| l[0].1 == d.kind && l[1].1 == d.state)
        {
            Some((_, n)) => *n = d.jobs as f64,
            None => samples.push(([("kind", &d.kind), ("state", &d.state)], d.jobs as f64)),
        }
    }
    emit(
        Kind::Gauge,
        "strata_jobs_queue_depth",
        "Unfinished jobs of every process, by kind and state: queued (due), delayed \
         (waiting out a retry's backoff), running.",
        &borrowed(&samples),
    )
}

/// The observed histograms: the local model's pass durations and batch sizes.
pub(crate) fn observed_histograms(
    s: &Snapshots,
    emit: &mut dyn FnMut(crate::metrics::Observed<'_>) -> Result<(), std::fmt::Error>,
) -> Result<(), std::fmt::Error> {
    let (model, Some(m)) = s.engine.retrieval().model_stats() else {
        return Ok(());
    };
    let labels = [("model", model)];
    emit(crate::metrics::Observed {
        name: "strata_model_pass_duration_seconds",
        help: "Seconds per forward pass of the local embedding model (tokenising included).",
        labels: &labels,
        bounds: &strata_engine::PASS_SECONDS_BUCKETS,
        counts: &m.pass_seconds,
        sum: m.busy_seconds,
    })?;
    emit(crate::metrics::Observed {
        name: "strata_model_batch_size_texts",
        help: "Texts per forward pass of the local embedding model.",
        labels: &labels,
        bounds: &strata_engine::BATCH_SIZE_BUCKETS,
        counts: &m.batch_sizes,
        sum: m.pass_texts as f64,
    })
}

/// The process's own resources, under the names Prometheus' client libraries use.
fn process(emit: &mut Emit<'_>) -> Result<(), std::fmt::Error> {
    let Some(p) = crate::process::read() else {
        return Ok(());
    };
    let one = |v: f64| [(&[][..], v)];
    emit(
        Kind::Counter,
        "process_cpu_seconds",
        "User and system CPU time spent, in seconds.",
        &one(p.cpu_seconds),
    )?;
    for (name, help, v) in [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            p.resident_memory_bytes as f64,
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            p.virtual_memory_bytes as f64,
        ),
        (
            "process_open_fds",
            "Open file descriptors.",
            p.open_fds as f64,
        ),
        (
            "process_max_fds",
            "The most file descriptors the process may open.",
            p.max_fds as f64,
        ),
        (
            "process_threads",
            "Threads of the process.",
            p.threads as f64,
        ),
        (
            "process_start_time_seconds",
            "When the process started, in seconds since the Unix epoch.",
            p.start_time_seconds,
        ),
    ] {
        emit(Kind::Gauge, name, help, &one(v))?;
    }
    Ok(())
}

/// The gateway's counters, its semantic tier, and the usage it metered by upstream model
/// (tokens and cost sent upstream, and what the caches saved).
fn gateway(s: &Snapshots, emit: &mut Emit<'_>) -> Result<(), std::fmt::Error> {
    let one = |v: f64| [(&[][..], v)];
    let g = s.gateway.stats();
    for (name, help, v) in [
        (
            "strata_gateway_requests",
            "Chat requests parsed.",
            g.requests,
        ),
        (
            "strata_gateway_cache_hits",
            "Chat requests answered from a cache (exact or semantic).",
            g.cache_hits,
        ),
        (
            "strata_gateway_joined",
            "Chat requests answered by joining an identical call in flight.",
            g.joined,
        ),
        (
            "strata_gateway_upstream_calls",
            "Upstream calls made.",
            g.upstream_calls,
        ),
        (
            "strata_gateway_upstream_failures",
            "Upstream calls that did not answer with a success.",
            g.upstream_failures,
        ),
        (
            "strata_gateway_broken_streams",
            "Upstream streams that broke off before they were complete.",
            g.broken_streams,
        ),
        (
            "strata_gateway_cancelled",
            "Upstream calls cancelled because every client went away.",
            g.cancelled,
        ),
        (
            "strata_gateway_budget_denials",
            "Chat requests refused by a budget.",
            g.budget_denials,
        ),
    ] {
        emit(Kind::Counter, name, help, &one(v as f64))?;
    }
    let sem = &g.semantic;
    let mut lookups = vec![
        ([("outcome", "hit")], sem.tier.hits as f64),
        ([("outcome", "miss")], sem.tier.misses as f64),
    ];
    let mut guarded: Vec<_> = sem.tier.guarded.iter().collect();
    guarded.sort();
    for (conflict, n) in &guarded {
        lookups.push(([("outcome", conflict)], **n as f64));
    }
    emit(
        Kind::Counter,
        "strata_gateway_semantic_lookups",
        "Semantic cache lookups by outcome: hit, miss, or the guard's refusal by conflict.",
        &borrowed(&lookups),
    )?;
    emit(
        Kind::Gauge,
        "strata_gateway_semantic_entries",
        "Prompts the semantic tier holds.",
        &one(sem.tier.entries as f64),
    )?;
    let totals = s.engine.budgets().totals();
    let by_model = |f: &dyn Fn(&strata_engine::budget::UsageDelta) -> i64| -> Vec<_> {
        totals
            .iter()
            .map(|(m, d)| ([("model", m.as_str())], f(d) as f64))
            .collect()
    };
    for (name, help, f) in [
        (
            "strata_gateway_answers",
            "Chat answers metered, from the upstream or a cache, by upstream model.",
            &(|d: &strata_engine::budget::UsageDelta| d.requests)
                as &dyn Fn(&strata_engine::budget::UsageDelta) -> i64,
        ),
        (
            "strata_gateway_cached_answers",
            "Chat answers served from a cache, by upstream model.",
            &|d| d.cached_requests,
        ),
        (
            "strata_gateway_prompt_tokens",
            "Prompt tokens sent upstream, by upstream model.",
            &|d| d.prompt_tokens,
        ),
        (
            "strata_gateway_completion_tokens",
            "Completion tokens received from upstream, by upstream model.",
            &|d| d.completion_tokens,
        ),
        (
            "strata_gateway_cost_micro_dollars",
            "Cost of upstream calls in millionths of a dollar, by upstream model.",
            &|d| d.cost_micros,
        ),
        (
            "strata_gateway_saved_tokens",
            "Tokens answered from a cache instead of the upstream, by upstream model.",
            &|d| d.saved_tokens,
        ),
        (
            "strata_gateway_saved_cost_micro_dollars",
            "Cost the caches saved in millionths of a dollar, by upstream model.",
            &|d| d.saved_cost_micros,
        ),
    ] {
        emit(Kind::Counter, name, help, &borrowed(&by_model(f)))?;
    }
    Ok(())
}

/// Samples with fixed-size label arrays as the slices [`Emit`] takes.
fn borrowed<'a, const N: usize>(
    v: &'a [([(&'a str, &'a str); N], f64)],
) -> Vec<(&'a [(&'a str, &'a str)], f64)> {
    v.iter().map(|(l, n)| (&l[..], *n)).collect()
}
