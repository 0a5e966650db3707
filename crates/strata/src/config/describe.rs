//! The resolved configuration as `strata serve` prints it at startup, secrets masked.

use std::time::Duration;

use super::{Config, mask_url};

impl Config {
    /// A human-readable listing with secrets masked, for the startup log.
    pub fn describe(&self) -> String {
        let e = &self.engine;
        let j = &e.jobs;
        let lines = [
            (
                "config file",
                self.source
                    .as_ref()
                    .map_or("(none)".into(), |p| p.display().to_string()),
            ),
            (
                "listen",
                match &self.server.tls {
                    Some(t) => format!(
                        "{} (HTTPS, certificate {})",
                        self.server.listen,
                        t.cert.display()
                    ),
                    None => format!("{} (plain HTTP)", self.server.listen),
                },
            ),
            ("identity", describe_identity(&self.server.identity)),
            (
                "admission",
                describe_admission(&self.server.admission, e.batch.queue),
            ),
            (
                "cors_origins",
                if self.server.cors_origins.is_empty() {
                    "(none: CORS off)".to_owned()
                } else {
                    self.server.cors_origins.join(", ")
                },
            ),
            ("data_dir", e.data_dir.display().to_string()),
            (
                "database_url",
                e.database_url
                    .as_ref()
                    .map_or("(embedded SQLite in data_dir)".into(), |u| u.redacted()),
            ),
            ("max_upload", format!("{} bytes", e.max_upload_bytes)),
            ("workers", j.workers.to_string()),
            ("job_max_attempts", j.max_attempts.to_string()),
            ("job_lease_secs", j.lease.as_secs().to_string()),
            ("job_backoff_secs", j.backoff_base.as_secs().to_string()),
            (
                "extract_timeout_secs",
                j.extract_timeout.as_secs().to_string(),
            ),
            (
                "extract_memory",
                format!("{} MiB", e.extract.memory_limit / (1024 * 1024)),
            ),
            ("pdf_reader", e.extract.pdf.describe()),
            ("chunk_tokens", j.chunk.max_tokens.to_string()),
            ("chunk_overlap", j.chunk.overlap.to_string()),
            (
                "shutdown_grace_secs",
                j.shutdown_grace.as_secs().to_string(),
            ),
            (
                "db_pool",
                if e.database_url
                    .as_ref()
                    .is_some_and(|u| u.scheme().starts_with("postgres"))
                {
                    let p = &e.postgres;
                    format!(
                        "max {}, min {}, acquire timeout {} ms, idle {} s, lifetime {} s, \
                         test before acquire {}, ef_search {}",
                        p.max_connections,
                        p.min_connections,
                        p.acquire_timeout.as_millis(),
                        p.idle_timeout.as_secs(),
                        p.max_lifetime.as_secs(),
                        p.test_before_acquire,
                        p.ef_search
                    )
                } else {
                    format!(
                        "max {}, acquire timeout {} ms",
                        e.sqlite.max_connections,
                        e.sqlite.acquire_timeout.as_millis()
                    )
                },
            ),
            (
                "db_slow_statement_ms",
                e.sqlite.slow_statement.as_millis().to_string(),
            ),
            ("cache_l1", format!("{} bytes", e.cache.l1_bytes)),
            ("cache_ttl", ttl_list(&e.cache.kinds, |k| k.l1_ttl)),
            ("cache_l2_ttl", ttl_list(&e.cache.kinds, |k| k.l2_ttl)),
            (
                "redis_url",
                e.cache
                    .redis
                    .as_ref()
                    .map_or("(none: L1 only, one process)".into(), |r| {
                        format!(
                            "{} (namespace {}, pool {}, timeout {} ms)",
                            r.url.redacted(),
                            r.namespace,
                            r.pool_size,
                            r.op_timeout.as_millis()
                        )
                    }),
            ),
            ("model_dir", e.model_dir.display().to_string()),
            (
                "embedder",
                match &e.remote_embedder {
                    Some(r) => format!(
                        "{} at {} (key {})",
                        r.model,
                        mask_url(&r.url),
                        if r.api_key.is_some() { "****" } else { "none" }
                    ),
                    None => format!("local all-MiniLM-L6-v2 ({:?})", e.local_runtime),
                },
            ),
            ("embed_threads", e.embed_threads.to_string()),
            ("embed_max_batch", e.batch.max_batch.to_string()),
            (
                "embed_max_wait_ms",
                e.batch.max_wait.as_millis().to_string(),
            ),
            ("search_ef", e.ann.expansion_search.to_string()),
            ("search_exact_limit", e.ann.exact_limit.to_string()),
            (
                "vector_index",
                match e.database_url {
                    Some(_) => "pgvector".to_owned(),
                    None => e.ann.local.name().to_owned(),
                },
            ),
            (
                "memory_merge_threshold",
                e.memory.merge_threshold.to_string(),
            ),
            (
                "memory_working_set_mb",
                (e.memory.working_set_bytes >> 20).to_string(),
            ),
            (
                "session_timeout",
                format!(
                    "{} s until learned, then {}-{} s",
                    e.sessions.default.as_secs(),
                    e.sessions.min.as_secs(),
                    e.sessions.max.as_secs()
                ),
            ),
            (
                "cache_warm",
                format!(
                    "{} queries per tenant every {} s",
                    self.server.warm.queries_per_tenant,
                    self.server.warm.interval.as_secs()
                ),
            ),
            ("log", self.log.clone()),
        ];
        lines
            .iter()
            .map(|(k, v)| format!("  {k:<22} {v}\n"))
            .collect()
    }
}

/// `kind=secs,...` of one tier's TTLs, for the startup listing.
fn ttl_list(
    kinds: &[strata_engine::KindSpec],
    ttl: impl Fn(&strata_engine::KindSpec) -> Duration,
) -> String {
    kinds
        .iter()
        .map(|k| format!("{}={}", k.name, ttl(k).as_secs()))
        .collect::<Vec<_>>()
        .join(",")
}

fn describe_admission(a: &strata_server::admission::AdmissionSettings, queue: usize) -> String {
    format!(
        "max in flight {}, rate limit {}, timeout {} s (uploads {} s), search queue {queue}",
        if a.max_in_flight == 0 {
            "unbounded".to_owned()
        } else {
            a.max_in_flight.to_string()
        },
        a.rate.map_or("off".to_owned(), |r| format!(
            "{}/s per tenant, burst {}",
            r.per_second, r.burst
        )),
        a.timeout.as_secs(),
        a.upload_timeout.as_secs()
    )
}

fn describe_identity(identity: &strata_server::caller::Identity) -> String {
    match identity {
        strata_server::caller::Identity::Local => {
            "development: the single local tenant, admin".into()
        }
        strata_server::caller::Identity::Header { name, admins } => {
            let mut admins: Vec<_> = admins.iter().map(|a| a.as_str()).collect();
            admins.sort_unstable();
            format!(
                "tenant header {name}; admins: {}",
                if admins.is_empty() {
                    "(none)".to_owned()
                } else {
                    admins.join(", ")
                }
            )
        }
        strata_server::caller::Identity::Token(auth) => format!("bearer: {}", auth.describe()),
    }
}
