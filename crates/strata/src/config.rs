//! Layered configuration: command-line flags > `STRATA_*` environment > `strata.toml` >
//! defaults. clap resolves flags over environment; this module layers the file and the
//! defaults under them and turns the result into the engine's and server's settings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;
use strata_engine::chunk::ChunkConfig;
use strata_engine::jobs::JobSettings;
use strata_engine::store::postgres::PostgresOptions;
use strata_engine::store::sqlite::SqliteOptions;
use strata_engine::vectors::AnnSettings;
use strata_engine::{BatchSettings, EngineSettings};
use strata_server::ServerSettings;

/// Settings shared by every subcommand. Each can also be set in `strata.toml` under the same
/// name with underscores (`data_dir = "..."`).
///
/// Deliberately not `Debug`: it holds the database and Redis URLs and the embedding API key
/// as given; [`Config`] holds them in types that mask them.
#[derive(Clone, Default, Args)]
pub struct Overrides {
    /// Configuration file [default: ./strata.toml when it exists].
    #[arg(long, env = "STRATA_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Directory of the embedded store: SQLite database and original files [default: ./strata-data].
    #[arg(help_heading = "Storage", long, env = "STRATA_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,

    /// Database URL: `postgres://user@host:port/db` runs on PostgreSQL with pgvector (shared by
    /// any number of instances; see docs/SCALING.md); `sqlite://PATH` overrides the file under
    /// the data directory [default: embedded SQLite in the data directory].
    #[arg(
        help_heading = "Storage",
        long,
        env = "STRATA_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// Address to listen on [default: 127.0.0.1:7733].
    #[arg(help_heading = "Server", long, env = "STRATA_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,

    /// Largest upload, in bytes or with a unit: 50MiB, 10MB, 512KiB [default: 50MiB].
    #[arg(help_heading = "Storage", long, env = "STRATA_MAX_UPLOAD", global = true, value_parser = parse_size)]
    pub max_upload: Option<u64>,

    /// Background ingestion workers in this process; 0 runs none [default: 2].
    #[arg(help_heading = "Jobs", long, env = "STRATA_WORKERS", global = true)]
    pub workers: Option<usize>,

    /// Attempts before a job fails for good [default: 5].
    #[arg(
        help_heading = "Jobs",
        long,
        env = "STRATA_JOB_MAX_ATTEMPTS",
        global = true
    )]
    pub job_max_attempts: Option<u32>,

    /// Seconds a job lease lasts without a heartbeat; a crashed worker's job is retried after it [default: 30].
    #[arg(
        help_heading = "Jobs",
        long,
        env = "STRATA_JOB_LEASE_SECS",
        global = true
    )]
    pub job_lease_secs: Option<u64>,

    /// Seconds before the first retry of a failed job; doubles per attempt [default: 2].
    #[arg(
        help_heading = "Jobs",
        long,
        env = "STRATA_JOB_BACKOFF_SECS",
        global = true
    )]
    pub job_backoff_secs: Option<u64>,

    /// Longest text extraction of one file, in seconds [default: 60].
    #[arg(
        help_heading = "Jobs",
        long,
        env = "STRATA_EXTRACT_TIMEOUT_SECS",
        global = true
    )]
    pub extract_timeout_secs: Option<u64>,

    /// Most tokens per chunk [default: 200].
    #[arg(
        help_heading = "Jobs",
        long,
        env = "STRATA_CHUNK_TOKENS",
        global = true
    )]
    pub chunk_tokens: Option<usize>,

    /// Tokens shared by consecutive chunks [default: 40].
    #[arg(
        help_heading = "Jobs",
        long,
        env = "STRATA_CHUNK_OVERLAP",
        global = true
    )]
    pub chunk_overlap: Option<usize>,

    /// Seconds in-flight requests and jobs get to finish on shutdown [default: 10].
    #[arg(
        help_heading = "Server",
        long,
        env = "STRATA_SHUTDOWN_GRACE_SECS",
        global = true
    )]
    pub shutdown_grace_secs: Option<u64>,

    /// Directory of the embedding model's files, as `scripts/fetch-model` lays them out
    /// [default: /var/tmp/strata-models/all-MiniLM-L6-v2].
    #[arg(
        help_heading = "Embedding and search",
        long,
        env = "STRATA_MODEL_DIR",
        global = true
    )]
    pub model_dir: Option<PathBuf>,

    /// Use an OpenAI-compatible embeddings endpoint (base URL, e.g. https://api.openai.com/v1)
    /// instead of the local model.
    #[arg(
        help_heading = "Embedding and search",
        long,
        env = "STRATA_EMBED_URL",
        global = true
    )]
    pub embed_url: Option<String>,

    /// Model name to ask the endpoint for (with --embed-url) [default: text-embedding-3-small].
    #[arg(
        help_heading = "Embedding and search",
        long,
        env = "STRATA_EMBED_MODEL",
        global = true
    )]
    pub embed_model: Option<String>,

    /// API key for the endpoint (with --embed-url); sent as a bearer token, never printed.
    #[arg(
        help_heading = "Embedding and search",
        long,
        env = "STRATA_EMBED_API_KEY",
        global = true,
        hide_env_values = true
    )]
    pub embed_api_key: Option<String>,

    /// Local model runtime: `onnx` (int8, fast) or `candle` (f32, pure Rust, slower) [default: onnx].
    #[arg(
        help_heading = "Embedding and search",
        long,
        env = "STRATA_EMBEDDER",
        global = true
    )]
    pub embedder: Option<Runtime>,

    /// Threads for one embedding forward pass [default: the number of cores].
    #[arg(
        help_heading = "Embedding and search",
        long,
        env = "STRATA_EMBED_THREADS",
        global = true
    )]
    pub embed_threads: Option<usize>,

    /// Most texts coalesced into one embedding forward pass [default: 32].
    #[arg(
        help_heading = "Embedding and search",
        long,
        env = "STRATA_EMBED_MAX_BATCH",
        global = true
    )]
    pub embed_max_batch: Option<usize>,

    /// Extra wait, in milliseconds, for more texts to share a forward pass of the local model
    /// [default: 0]. Texts that arrive while a pass runs share the next one anyway, so a wait
    /// only adds latency to a lone query. Not accepted with --embed-url: the endpoint gets
    /// each caller's texts as they come (up to 256 per request).
    #[arg(
        help_heading = "Embedding and search",
        long,
        env = "STRATA_EMBED_MAX_WAIT_MS",
        global = true
    )]
    pub embed_max_wait_ms: Option<u64>,

    /// HNSW candidate list size when searching: higher is more accurate and slower [default: 64].
    #[arg(
        help_heading = "Embedding and search",
        long,
        env = "STRATA_SEARCH_EF",
        global = true
    )]
    pub search_ef: Option<usize>,

    /// Filters matching at most this many chunks are searched exactly [default: 10000].
    #[arg(
        help_heading = "Embedding and search",
        long,
        env = "STRATA_SEARCH_EXACT_LIMIT",
        global = true
    )]
    pub search_exact_limit: Option<u64>,

    /// In-process cache budget, in bytes or with a unit [default: 256MiB].
    #[arg(help_heading = "Cache", long, env = "STRATA_CACHE_L1", global = true, value_parser = parse_size)]
    pub cache_l1: Option<u64>,

    /// Cache TTLs per kind, in seconds: `search_results=600,tag_counts=60` (kinds: embedding,
    /// search_results, document_meta, document_list, tag_counts, job_status); 0 keeps a kind out
    /// of that tier.
    #[arg(help_heading = "Cache", long, env = "STRATA_CACHE_TTL", global = true)]
    pub cache_ttl: Option<String>,

    /// Cache TTLs per kind in Redis (L2), in seconds, same form as --cache-ttl.
    #[arg(
        help_heading = "Cache",
        long,
        env = "STRATA_CACHE_L2_TTL",
        global = true
    )]
    pub cache_l2_ttl: Option<String>,

    /// Redis for the shared cache tier (L2), generations and cross-instance invalidation:
    /// `redis://[user:password@]host:port[/db]` [default: none, single process].
    #[arg(help_heading = "Cache", long, env = "STRATA_REDIS_URL", global = true)]
    pub redis_url: Option<String>,

    /// The prefix of every Redis key and channel strata uses; give deployments that share one
    /// Redis different namespaces (pub/sub ignores the URL's database number, so a different
    /// /db alone does not keep them apart) [default: strata].
    #[arg(
        help_heading = "Cache",
        long,
        env = "STRATA_REDIS_NAMESPACE",
        global = true
    )]
    pub redis_namespace: Option<String>,

    /// Redis connections in the pool (commands are pipelined on each) [default: 4].
    #[arg(
        help_heading = "Cache",
        long,
        env = "STRATA_REDIS_POOL_SIZE",
        global = true
    )]
    pub redis_pool_size: Option<usize>,

    /// Longest wait for one Redis command, in milliseconds, before it counts as a failure;
    /// three failures in a row open the circuit breaker for a second [default: 100].
    #[arg(
        help_heading = "Cache",
        long,
        env = "STRATA_REDIS_TIMEOUT_MS",
        global = true
    )]
    pub redis_timeout_ms: Option<u64>,

    /// Frequent searches recomputed per tenant on startup, after writes and on a schedule, so
    /// the first user after a restart or a write gets a cache hit; 0 turns warming off
    /// [default: 20].
    #[arg(
        help_heading = "Server",
        long,
        env = "STRATA_CACHE_WARM_QUERIES",
        global = true
    )]
    pub cache_warm_queries: Option<usize>,

    /// Seconds between scheduled warming passes [default: 300].
    #[arg(
        help_heading = "Server",
        long,
        env = "STRATA_CACHE_WARM_INTERVAL_SECS",
        global = true
    )]
    pub cache_warm_interval_secs: Option<u64>,

    /// Take each request's tenant from this header, set by an authenticating proxy in front
    /// of strata (e.g. `X-Forwarded-User`); requests without it get 401. Unset: every request
    /// is the single local tenant (development only) [default: unset].
    #[arg(
        help_heading = "Server",
        long,
        env = "STRATA_TENANT_HEADER",
        global = true
    )]
    pub tenant_header: Option<String>,

    /// Tenants with the admin role in tenant-header mode, comma-separated: they may clear
    /// the cache, optimise the database and read its table statistics. In development mode
    /// the single local tenant is the admin [default: none].
    #[arg(
        help_heading = "Server",
        long,
        env = "STRATA_ADMIN_TENANTS",
        global = true,
        value_delimiter = ','
    )]
    pub admin_tenants: Option<Vec<String>>,

    /// Most database connections this process holds [default: 8 for SQLite, 10 for PostgreSQL].
    /// With N instances over one PostgreSQL, keep N x this (+ 2 each, see docs/SCALING.md)
    /// under the server's max_connections.
    #[arg(
        help_heading = "Storage",
        long,
        env = "STRATA_DB_MAX_CONNECTIONS",
        global = true
    )]
    pub db_max_connections: Option<u32>,

    /// PostgreSQL connections kept open while idle [default: 1].
    #[arg(
        help_heading = "Storage",
        long,
        env = "STRATA_DB_MIN_CONNECTIONS",
        global = true
    )]
    pub db_min_connections: Option<u32>,

    /// Milliseconds a request waits for a database connection before it is answered 503 with
    /// Retry-After [default: 5000].
    #[arg(
        help_heading = "Storage",
        long,
        env = "STRATA_DB_ACQUIRE_TIMEOUT_MS",
        global = true
    )]
    pub db_acquire_timeout_ms: Option<u64>,

    /// Seconds an idle PostgreSQL connection is kept before it is closed [default: 600].
    #[arg(
        help_heading = "Storage",
        long,
        env = "STRATA_DB_IDLE_TIMEOUT_SECS",
        global = true
    )]
    pub db_idle_timeout_secs: Option<u64>,

    /// Seconds after which a PostgreSQL connection is replaced [default: 1800].
    #[arg(
        help_heading = "Storage",
        long,
        env = "STRATA_DB_MAX_LIFETIME_SECS",
        global = true
    )]
    pub db_max_lifetime_secs: Option<u64>,

    /// Check each PostgreSQL connection with a round trip before handing it out [default: true].
    #[arg(
        help_heading = "Storage",
        long,
        env = "STRATA_DB_TEST_BEFORE_ACQUIRE",
        global = true
    )]
    pub db_test_before_acquire: Option<bool>,

    /// Statements slower than this many milliseconds are logged as warnings and listed at
    /// GET /v1/performance/database/stats [default: 500].
    #[arg(
        help_heading = "Storage",
        long,
        env = "STRATA_DB_SLOW_STATEMENT_MS",
        global = true
    )]
    pub db_slow_statement_ms: Option<u64>,

    /// Log filter, e.g. `info` or `strata_engine=debug,info` [default: info].
    #[arg(help_heading = "Server", long, env = "STRATA_LOG", global = true)]
    pub log: Option<String>,

    /// Log format: `text` or `json` [default: text].
    #[arg(
        help_heading = "Server",
        long,
        env = "STRATA_LOG_FORMAT",
        global = true
    )]
    pub log_format: Option<LogFormat>,
}

/// Which implementation runs the local embedding model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// int8 ONNX export through ONNX Runtime.
    Onnx,
    /// f32 weights through candle.
    Candle,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Every setting's default, from the crate that owns it (its `Default`): the configuration
/// layer states none of its own.
struct Defaults {
    engine: EngineSettings,
    jobs: JobSettings,
    sqlite: SqliteOptions,
    postgres: PostgresOptions,
    ann: AnnSettings,
    warm: strata_server::warm::WarmSettings,
}

impl Defaults {
    fn new() -> Self {
        let engine = EngineSettings::default();
        Self {
            jobs: engine.jobs.clone(),
            sqlite: engine.sqlite.clone(),
            postgres: engine.postgres.clone(),
            ann: engine.ann,
            warm: ServerSettings::default().warm,
            engine,
        }
    }
}

/// `strata.toml`: the same settings as the flags (not `Debug`, for the same reason as
/// [`Overrides`]).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    listen: Option<SocketAddr>,
    max_upload: Option<SizeValue>,
    workers: Option<usize>,
    job_max_attempts: Option<u32>,
    job_lease_secs: Option<u64>,
    job_backoff_secs: Option<u64>,
    extract_timeout_secs: Option<u64>,
    chunk_tokens: Option<usize>,
    chunk_overlap: Option<usize>,
    shutdown_grace_secs: Option<u64>,
    db_max_connections: Option<u32>,
    db_min_connections: Option<u32>,
    db_acquire_timeout_ms: Option<u64>,
    db_idle_timeout_secs: Option<u64>,
    db_max_lifetime_secs: Option<u64>,
    db_test_before_acquire: Option<bool>,
    db_slow_statement_ms: Option<u64>,
    cache_l1: Option<SizeValue>,
    cache_ttl: Option<String>,
    cache_l2_ttl: Option<String>,
    redis_url: Option<String>,
    redis_namespace: Option<String>,
    redis_pool_size: Option<usize>,
    redis_timeout_ms: Option<u64>,
    tenant_header: Option<String>,
    admin_tenants: Option<Vec<String>>,
    cache_warm_queries: Option<usize>,
    cache_warm_interval_secs: Option<u64>,
    model_dir: Option<PathBuf>,
    embedder: Option<Runtime>,
    embed_url: Option<String>,
    embed_model: Option<String>,
    embed_api_key: Option<String>,
    embed_threads: Option<usize>,
    embed_max_batch: Option<usize>,
    embed_max_wait_ms: Option<u64>,
    search_ef: Option<usize>,
    search_exact_limit: Option<u64>,
    log: Option<String>,
    log_format: Option<LogFormat>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Bytes(u64),
    Text(String),
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the file layer came from, if any.
    pub source: Option<PathBuf>,
    /// Engine settings.
    pub engine: EngineSettings,
    /// HTTP settings.
    pub server: ServerSettings,
    /// Log filter.
    pub log: String,
    /// Log format.
    pub log_format: LogFormat,
}

impl Config {
    /// Layers `flags` (already merged with the environment by clap) over the file and defaults.
    pub fn resolve(flags: &Overrides) -> anyhow::Result<Self> {
        let (file, source) = match &flags.config {
            Some(path) => (read_file(path)?, Some(path.clone())),
            None if Path::new("strata.toml").exists() => (
                read_file(Path::new("strata.toml"))?,
                Some(PathBuf::from("strata.toml")),
            ),
            None => (FileConfig::default(), None),
        };
        let identity = identity(flags, &file)?;
        let max_upload = match (flags.max_upload, file.max_upload) {
            (Some(v), _) => v,
            (None, Some(SizeValue::Bytes(v))) => v,
            (None, Some(SizeValue::Text(s))) => {
                parse_size(&s).map_err(|e| anyhow::anyhow!("strata.toml max_upload: {e}"))?
            }
            (None, None) => EngineSettings::default().max_upload_bytes,
        };
        macro_rules! pick {
            ($field:ident, $default:expr) => {
                flags
                    .$field
                    .clone()
                    .or(file.$field.clone())
                    .unwrap_or_else(|| $default)
            };
        }
        // Each default is the owning crate's own (its `Default`), stated once there.
        let defaults = Defaults::new();
        let chunk_tokens = pick!(chunk_tokens, defaults.jobs.chunk.max_tokens);
        let chunk_overlap = pick!(chunk_overlap, defaults.jobs.chunk.overlap);
        let chunk = ChunkConfig::new(chunk_tokens, chunk_overlap)?;
        let lease = pick!(job_lease_secs, defaults.jobs.lease.as_secs());
        if lease < 3 {
            bail!("job_lease_secs must be at least 3");
        }
        let grace = Duration::from_secs(pick!(
            shutdown_grace_secs,
            defaults.jobs.shutdown_grace.as_secs()
        ));
        let remote = flags.embed_url.is_some() || file.embed_url.is_some();
        if remote
            && flags
                .embed_max_wait_ms
                .or(file.embed_max_wait_ms)
                .is_some_and(|w| w > 0)
        {
            bail!(
                "embed_max_wait_ms applies to the local model's forward passes; with embed_url \
                 the endpoint gets each caller's texts as they come"
            );
        }
        let acquire_timeout = Duration::from_millis(
            pick!(
                db_acquire_timeout_ms,
                defaults.sqlite.acquire_timeout.as_millis() as u64
            )
            .max(1),
        );
        let slow_statement = Duration::from_millis(pick!(
            db_slow_statement_ms,
            defaults.sqlite.slow_statement.as_millis() as u64
        ));
        let engine = EngineSettings {
            data_dir: pick!(data_dir, defaults.engine.data_dir.clone()),
            database_url: flags
                .database_url
                .clone()
                .or(file.database_url.clone())
                .map(strata_engine::SecretUrl::from),
            sqlite: SqliteOptions {
                max_connections: pick!(db_max_connections, defaults.sqlite.max_connections).max(1),
                acquire_timeout,
                slow_statement,
                ..SqliteOptions::default()
            },
            postgres: PostgresOptions {
                max_connections: pick!(db_max_connections, defaults.postgres.max_connections)
                    .max(1),
                min_connections: pick!(db_min_connections, defaults.postgres.min_connections),
                acquire_timeout,
                idle_timeout: Duration::from_secs(pick!(
                    db_idle_timeout_secs,
                    defaults.postgres.idle_timeout.as_secs()
                )),
                max_lifetime: Duration::from_secs(pick!(
                    db_max_lifetime_secs,
                    defaults.postgres.max_lifetime.as_secs()
                )),
                test_before_acquire: pick!(
                    db_test_before_acquire,
                    defaults.postgres.test_before_acquire
                ),
                slow_statement,
                ef_search: u32::try_from(
                    pick!(search_ef, defaults.ann.expansion_search).clamp(1, 1000),
                )
                .unwrap_or(defaults.postgres.ef_search),
            },
            max_upload_bytes: max_upload,
            jobs: JobSettings {
                workers: pick!(workers, defaults.jobs.workers),
                max_attempts: pick!(job_max_attempts, defaults.jobs.max_attempts).max(1),
                lease: Duration::from_secs(lease),
                backoff_base: Duration::from_secs(pick!(
                    job_backoff_secs,
                    defaults.jobs.backoff_base.as_secs()
                )),
                extract_timeout: Duration::from_secs(
                    pick!(
                        extract_timeout_secs,
                        defaults.jobs.extract_timeout.as_secs()
                    )
                    .max(1),
                ),
                shutdown_grace: grace,
                chunk,
                ..JobSettings::default()
            },
            model_dir: pick!(model_dir, defaults.engine.model_dir.clone()),
            local_runtime: match pick!(embedder, Runtime::Onnx) {
                Runtime::Onnx => strata_engine::LocalRuntime::Onnx,
                Runtime::Candle => strata_engine::LocalRuntime::Candle,
            },
            remote_embedder: flags
                .embed_url
                .clone()
                .or(file.embed_url.clone())
                .map(|url| strata_engine::HttpSettings {
                    api_key: flags.embed_api_key.clone().or(file.embed_api_key.clone()),
                    ..strata_engine::HttpSettings::new(
                        url,
                        pick!(embed_model, "text-embedding-3-small".to_owned()),
                    )
                }),
            embed_threads: pick!(
                embed_threads,
                std::thread::available_parallelism().map_or(2, |n| n.get())
            )
            .max(1),
            batch: BatchSettings {
                max_batch: pick!(embed_max_batch, defaults.engine.batch.max_batch).max(1),
                max_wait: Duration::from_millis(pick!(
                    embed_max_wait_ms,
                    defaults.engine.batch.max_wait.as_millis() as u64
                )),
                ..BatchSettings::default()
            },
            cache: strata_engine::CacheSettings {
                l1_bytes: match (flags.cache_l1, &file.cache_l1) {
                    (Some(v), _) => v,
                    (None, Some(SizeValue::Bytes(v))) => *v,
                    (None, Some(SizeValue::Text(s))) => {
                        parse_size(s).map_err(|e| anyhow::anyhow!("strata.toml cache_l1: {e}"))?
                    }
                    (None, None) => defaults.engine.cache.l1_bytes,
                },
                kinds: cache_kinds(
                    flags.cache_ttl.as_deref().or(file.cache_ttl.as_deref()),
                    flags
                        .cache_l2_ttl
                        .as_deref()
                        .or(file.cache_l2_ttl.as_deref()),
                )?,
                redis: match flags.redis_url.clone().or(file.redis_url.clone()) {
                    Some(url) if !url.trim().is_empty() => {
                        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                            anyhow::bail!("redis_url: {} is not a redis:// URL", mask_url(&url));
                        }
                        let mut r = strata_engine::RedisSettings::new(url);
                        if let Some(ns) = flags
                            .redis_namespace
                            .clone()
                            .or(file.redis_namespace.clone())
                        {
                            strata_engine::RedisSettings::check_namespace(&ns)
                                .map_err(|e| anyhow::anyhow!("redis_namespace: {e}"))?;
                            r.namespace = ns;
                        }
                        r.pool_size = pick!(redis_pool_size, r.pool_size).max(1);
                        r.op_timeout = Duration::from_millis(
                            pick!(redis_timeout_ms, r.op_timeout.as_millis() as u64).max(1),
                        );
                        Some(r)
                    }
                    _ => None,
                },
            },
            ann: AnnSettings {
                expansion_search: pick!(search_ef, defaults.ann.expansion_search).max(1),
                exact_limit: pick!(search_exact_limit, defaults.ann.exact_limit),
                ..AnnSettings::default()
            },
            slow_log: strata_engine::slowlog::SlowLog::default(),
        };
        let server = ServerSettings {
            listen: pick!(listen, ServerSettings::default().listen),
            shutdown_grace: grace,
            identity,
            warm: strata_server::warm::WarmSettings {
                queries_per_tenant: pick!(cache_warm_queries, defaults.warm.queries_per_tenant),
                interval: Duration::from_secs(
                    pick!(cache_warm_interval_secs, defaults.warm.interval.as_secs()).max(1),
                ),
            },
            ..ServerSettings::default()
        };
        Ok(Self {
            source,
            engine,
            server,
            log: pick!(log, "info".to_owned()),
            log_format: pick!(log_format, LogFormat::Text),
        })
    }

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
            ("listen", self.server.listen.to_string()),
            ("identity", describe_identity(&self.server.identity)),
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

/// The default kinds with TTL overrides (`kind=secs,...`) for L1 and L2 applied.
fn cache_kinds(l1: Option<&str>, l2: Option<&str>) -> anyhow::Result<Vec<strata_engine::KindSpec>> {
    let mut kinds = strata_engine::default_cache_kinds();
    for (name, secs) in ttl_overrides(l1, "cache_ttl")? {
        find_kind(&mut kinds, &name, "cache_ttl")?.l1_ttl = Duration::from_secs(secs);
    }
    for (name, secs) in ttl_overrides(l2, "cache_l2_ttl")? {
        find_kind(&mut kinds, &name, "cache_l2_ttl")?.l2_ttl = Duration::from_secs(secs);
    }
    Ok(kinds)
}

fn find_kind<'a>(
    kinds: &'a mut [strata_engine::KindSpec],
    name: &str,
    setting: &str,
) -> anyhow::Result<&'a mut strata_engine::KindSpec> {
    kinds
        .iter_mut()
        .find(|k| k.name == name)
        .ok_or_else(|| anyhow::anyhow!("{setting}: unknown kind {name:?}"))
}

/// Parses `kind=secs,...`.
fn ttl_overrides(text: Option<&str>, setting: &str) -> anyhow::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for part in text
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (name, secs) = part
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("{setting}: {part:?} is not kind=seconds"))?;
        let secs: u64 = secs
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{setting}: {secs:?} is not a number of seconds"))?;
        out.push((name.trim().to_owned(), secs));
    }
    Ok(out)
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

use strata_engine::redact_url as mask_url;

/// Parses `1234`, `512KiB`, `50MiB`, `1GiB`, `10MB`, `1kb`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 50MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit {other:?} (use B, KB, KiB, MB, MiB, GB, GiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// How callers are identified: a tenant header and its admin tenants, or development mode.
fn identity(
    flags: &Overrides,
    file: &FileConfig,
) -> anyhow::Result<strata_server::caller::Identity> {
    use strata_server::caller::Identity;
    let admins = flags
        .admin_tenants
        .clone()
        .or(file.admin_tenants.clone())
        .unwrap_or_default();
    let header = flags.tenant_header.clone().or(file.tenant_header.clone());
    let Some(h) = header.filter(|h| !h.trim().is_empty()) else {
        if admins.iter().any(|a| !a.trim().is_empty()) {
            bail!(
                "admin_tenants needs tenant_header: in development mode the single local tenant is already the admin"
            );
        }
        return Ok(Identity::Local);
    };
    let name = strata_server::HeaderName::from_bytes(h.trim().as_bytes())
        .map_err(|_| anyhow::anyhow!("tenant_header: {h:?} is not a header name"))?;
    let admins = admins
        .iter()
        .map(|a| a.trim())
        .filter(|a| !a.is_empty())
        .map(|a| {
            strata_engine::TenantId::parse(a)
                .map_err(|e| anyhow::anyhow!("admin_tenants: {a:?}: {e}"))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Identity::Header {
        name,
        admins: std::sync::Arc::new(admins),
    })
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("50MiB"), Ok(50 * 1024 * 1024));
        assert_eq!(parse_size("10 MB"), Ok(10_000_000));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }

    #[test]
    fn cache_ttl_overrides() {
        let k = cache_kinds(Some("search_results=5, tag_counts=7"), Some("embedding=9")).unwrap();
        let ttl = |n: &str| k.iter().find(|x| x.name == n).unwrap().l1_ttl.as_secs();
        assert_eq!(
            (ttl("search_results"), ttl("tag_counts"), ttl("embedding")),
            (5, 7, 3600)
        );
        assert!(cache_kinds(Some("nope=1"), None).is_err());
        assert!(cache_kinds(Some("search_results"), None).is_err());
        assert!(cache_kinds(None, Some("nope=1")).is_err());
        let l2 = |n: &str| k.iter().find(|x| x.name == n).unwrap().l2_ttl.as_secs();
        assert_eq!((l2("embedding"), l2("search_results")), (9, 600));
    }

    #[test]
    fn flags_beat_file_beat_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.toml");
        std::fs::write(
            &path,
            "workers = 7\nchunk_tokens = 300\nmax_upload = \"1MiB\"\n",
        )
        .unwrap();
        let flags = Overrides {
            config: Some(path),
            workers: Some(3),
            ..Overrides::default()
        };
        let c = Config::resolve(&flags).unwrap();
        assert_eq!(c.engine.jobs.workers, 3);
        assert_eq!(c.engine.jobs.chunk.max_tokens, 300);
        assert_eq!(c.engine.max_upload_bytes, 1 << 20);
        assert_eq!(c.engine.jobs.chunk.overlap, 40);
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.toml");
        std::fs::write(&path, "wrokers = 7\n").unwrap();
        let flags = Overrides {
            config: Some(path),
            ..Overrides::default()
        };
        let err = format!("{:#}", Config::resolve(&flags).unwrap_err());
        assert!(err.contains("wrokers"), "{err}");
    }

    #[test]
    fn resolved_settings_never_print_a_password() {
        let dir = tempfile::tempdir().unwrap();
        let flags = Overrides {
            config: Some(dir.path().join("absent.toml")),
            database_url: Some("postgres://app:pg-hunter2@db/strata".into()),
            redis_url: Some("redis://:redis-hunter2@cache:6379/0".into()),
            embed_url: Some("http://embed.local/v1".into()),
            embed_api_key: Some("sk-hunter2".into()),
            ..Overrides::default()
        };
        std::fs::write(dir.path().join("absent.toml"), "").unwrap();
        let c = Config::resolve(&flags).unwrap();
        for shown in [format!("{c:?}"), c.describe()] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("app:****@db/strata"), "{shown}");
        }
        assert_eq!(
            c.engine.database_url.as_ref().unwrap().expose(),
            "postgres://app:pg-hunter2@db/strata"
        );
    }

    #[test]
    fn admin_tenants_need_a_tenant_header() {
        let flags = Overrides {
            admin_tenants: Some(vec!["ops".into()]),
            ..Overrides::default()
        };
        let err = format!("{:#}", Config::resolve(&flags).unwrap_err());
        assert!(err.contains("tenant_header"), "{err}");
        let flags = Overrides {
            admin_tenants: Some(vec!["ops".into(), " oncall ".into()]),
            tenant_header: Some("x-forwarded-user".into()),
            ..Overrides::default()
        };
        let c = Config::resolve(&flags).unwrap();
        let strata_server::caller::Identity::Header { admins, .. } = &c.server.identity else {
            panic!("header mode expected");
        };
        assert_eq!(admins.len(), 2);
    }

    #[test]
    fn the_help_states_the_owning_crates_defaults() {
        use clap::Args as _;
        let cmd = Overrides::augment_args(clap::Command::new("strata"));
        let d = Defaults::new();
        let help = |id: &str| {
            cmd.get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_help())
                .map(|h| h.to_string())
                .unwrap_or_else(|| panic!("no --{id}"))
        };
        for (id, want) in [
            ("workers", d.jobs.workers.to_string()),
            ("job_max_attempts", d.jobs.max_attempts.to_string()),
            ("job_lease_secs", d.jobs.lease.as_secs().to_string()),
            (
                "job_backoff_secs",
                d.jobs.backoff_base.as_secs().to_string(),
            ),
            (
                "extract_timeout_secs",
                d.jobs.extract_timeout.as_secs().to_string(),
            ),
            ("chunk_tokens", d.jobs.chunk.max_tokens.to_string()),
            ("chunk_overlap", d.jobs.chunk.overlap.to_string()),
            (
                "shutdown_grace_secs",
                d.jobs.shutdown_grace.as_secs().to_string(),
            ),
            ("embed_max_batch", d.engine.batch.max_batch.to_string()),
            ("search_ef", d.ann.expansion_search.to_string()),
            ("db_min_connections", d.postgres.min_connections.to_string()),
            ("cache_warm_queries", d.warm.queries_per_tenant.to_string()),
            (
                "cache_warm_interval_secs",
                d.warm.interval.as_secs().to_string(),
            ),
        ] {
            let text = help(id);
            assert!(
                text.contains(&format!("[default: {want}]")),
                "--{id} says {text:?}, the default is {want}"
            );
        }
    }
}
