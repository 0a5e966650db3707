//! Layered configuration: command-line flags > `STRATA_*` environment > `strata.toml` >
//! defaults. clap resolves flags over environment; this module layers the file and the
//! defaults under them and turns the result into the engine's and server's settings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

mod describe;
mod flags;

pub use flags::{LogFormat, Overrides, Runtime};
use strata_engine::chunk::ChunkConfig;
use strata_engine::jobs::JobSettings;
use strata_engine::store::postgres::PostgresOptions;
use strata_engine::store::sqlite::SqliteOptions;
use strata_engine::vectors::AnnSettings;
use strata_engine::{BatchSettings, EngineSettings};
use strata_server::ServerSettings;

/// Every setting's default, from the crate that owns it (its `Default`): the configuration
/// layer states none of its own.
struct Defaults {
    engine: EngineSettings,
    server: ServerSettings,
}

impl Defaults {
    fn new() -> Self {
        Self {
            engine: EngineSettings::default(),
            server: ServerSettings::default(),
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
        let chunk_tokens = pick!(chunk_tokens, defaults.engine.jobs.chunk.max_tokens);
        let chunk_overlap = pick!(chunk_overlap, defaults.engine.jobs.chunk.overlap);
        let chunk = ChunkConfig::new(chunk_tokens, chunk_overlap)?;
        let lease = pick!(job_lease_secs, defaults.engine.jobs.lease.as_secs());
        if lease < 3 {
            bail!("job_lease_secs must be at least 3");
        }
        let grace = Duration::from_secs(pick!(
            shutdown_grace_secs,
            defaults.engine.jobs.shutdown_grace.as_secs()
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
                defaults.engine.sqlite.acquire_timeout.as_millis() as u64
            )
            .max(1),
        );
        let slow_statement = Duration::from_millis(pick!(
            db_slow_statement_ms,
            defaults.engine.sqlite.slow_statement.as_millis() as u64
        ));
        let engine = EngineSettings {
            data_dir: pick!(data_dir, defaults.engine.data_dir.clone()),
            database_url: flags
                .database_url
                .clone()
                .or(file.database_url.clone())
                .map(strata_engine::SecretUrl::from),
            sqlite: SqliteOptions {
                max_connections: pick!(db_max_connections, defaults.engine.sqlite.max_connections)
                    .max(1),
                acquire_timeout,
                slow_statement,
                ..SqliteOptions::default()
            },
            postgres: PostgresOptions {
                max_connections: pick!(
                    db_max_connections,
                    defaults.engine.postgres.max_connections
                )
                .max(1),
                min_connections: pick!(
                    db_min_connections,
                    defaults.engine.postgres.min_connections
                ),
                acquire_timeout,
                idle_timeout: Duration::from_secs(pick!(
                    db_idle_timeout_secs,
                    defaults.engine.postgres.idle_timeout.as_secs()
                )),
                max_lifetime: Duration::from_secs(pick!(
                    db_max_lifetime_secs,
                    defaults.engine.postgres.max_lifetime.as_secs()
                )),
                test_before_acquire: pick!(
                    db_test_before_acquire,
                    defaults.engine.postgres.test_before_acquire
                ),
                slow_statement,
                ef_search: u32::try_from(
                    pick!(search_ef, defaults.engine.ann.expansion_search).clamp(1, 1000),
                )
                .unwrap_or(defaults.engine.postgres.ef_search),
            },
            max_upload_bytes: max_upload,
            jobs: JobSettings {
                workers: pick!(workers, defaults.engine.jobs.workers),
                max_attempts: pick!(job_max_attempts, defaults.engine.jobs.max_attempts).max(1),
                lease: Duration::from_secs(lease),
                backoff_base: Duration::from_secs(pick!(
                    job_backoff_secs,
                    defaults.engine.jobs.backoff_base.as_secs()
                )),
                extract_timeout: Duration::from_secs(
                    pick!(
                        extract_timeout_secs,
                        defaults.engine.jobs.extract_timeout.as_secs()
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
                expansion_search: pick!(search_ef, defaults.engine.ann.expansion_search).max(1),
                exact_limit: pick!(search_exact_limit, defaults.engine.ann.exact_limit),
                ..AnnSettings::default()
            },
            slow_log: strata_engine::slowlog::SlowLog::default(),
            load_model: strata_engine::ModelLoad::AtStart,
        };
        let server = ServerSettings {
            listen: pick!(listen, defaults.server.listen),
            shutdown_grace: grace,
            identity,
            warm: strata_server::warm::WarmSettings {
                queries_per_tenant: pick!(
                    cache_warm_queries,
                    defaults.server.warm.queries_per_tenant
                ),
                interval: Duration::from_secs(
                    pick!(
                        cache_warm_interval_secs,
                        defaults.server.warm.interval.as_secs()
                    )
                    .max(1),
                ),
            },
            ..defaults.server
        };
        Ok(Self {
            source,
            engine,
            server,
            log: pick!(log, "info".to_owned()),
            log_format: pick!(log_format, LogFormat::Text),
        })
    }
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

#[cfg(test)]
mod tests;
