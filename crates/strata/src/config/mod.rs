//! Layered configuration: command-line flags > `STRATA_*` environment > `strata.toml` >
//! defaults. clap resolves flags over environment; this module layers the file and the
//! defaults under them and turns the result into the engine's and server's settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

mod describe;
mod flags;
mod gateway;

use strata_server::admission::{AdmissionSettings, RateLimit};
use strata_server::auth::{AuthSettings, Authenticator, Secret};

pub use flags::{
    AdmissionFlags, AuthFlags, CacheFlags, EmbeddingFlags, JobFlags, LogFormat, MemoryFlags,
    Overrides, PdfReaderChoice, Runtime, StorageFlags, VectorIndexKind,
};
use strata_engine::chunk::ChunkConfig;
use strata_engine::extract::{ExtractSettings, PdfReader};
use strata_engine::jobs::JobSettings;
use strata_engine::store::postgres::PostgresOptions;
use strata_engine::store::sqlite::SqliteOptions;
use strata_engine::vectors::{AnnSettings, LocalIndex};
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

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the file layer came from, if any.
    pub source: Option<PathBuf>,
    /// Engine settings.
    pub engine: EngineSettings,
    /// HTTP settings.
    pub server: ServerSettings,
    /// Bearer credentials (also what `strata token` signs with).
    pub auth: AuthSettings,
    /// Whether `strata serve` may listen beyond loopback with no authentication.
    pub insecure_no_auth: bool,
    /// Log filter.
    pub log: String,
    /// Log format.
    pub log_format: LogFormat,
}

impl Config {
    /// Layers `flags` (already merged with the environment by clap) over the file and
    /// defaults, then resolves each section into the settings of the crate that owns it.
    pub fn resolve(flags: &Overrides) -> anyhow::Result<Self> {
        let (file, source) = match &flags.config {
            Some(path) => (read_file(path)?, Some(path.clone())),
            None if Path::new("strata.toml").exists() => (
                read_file(Path::new("strata.toml"))?,
                Some(PathBuf::from("strata.toml")),
            ),
            None => (Overrides::default(), None),
        };
        let given = flags.clone().layered_over(file);
        let d = Defaults::new();
        let grace = Duration::from_secs(
            given
                .server
                .shutdown_grace_secs
                .unwrap_or(d.server.shutdown_grace.as_secs()),
        );
        let mut embedding = embedding(&given.embedding, &d.engine)?;
        if let Some(q) = given.admission.search_queue {
            embedding.batch.queue = q.max(1);
        }
        if let Some(ms) = given.admission.search_queue_wait_ms {
            embedding.batch.max_queue_wait = (ms > 0).then(|| Duration::from_millis(ms));
        }
        let mut storage = storage(&given.storage, &d.engine);
        if storage.database_url.is_some() && given.embedding.vector_index.is_some() {
            bail!(
                "vector_index chooses the embedded store's in-process index; over PostgreSQL \
                 the vectors live in pgvector (unset vector_index or database_url)"
            );
        }
        storage.postgres.ef_search = u32::try_from(embedding.ann.expansion_search.min(1000))
            .unwrap_or(d.engine.postgres.ef_search);
        let engine = EngineSettings {
            data_dir: storage.data_dir,
            database_url: storage.database_url,
            sqlite: storage.sqlite,
            postgres: storage.postgres,
            max_upload_bytes: storage.max_upload_bytes,
            extract: extract(&given.jobs, &d.engine.extract)?,
            jobs: JobSettings {
                shutdown_grace: grace,
                ..jobs(&given.jobs, &d.engine.jobs)?
            },
            model_dir: embedding.model_dir,
            local_runtime: embedding.local_runtime,
            remote_embedder: embedding.remote_embedder,
            embed_threads: embedding.embed_threads,
            batch: embedding.batch,
            ann: embedding.ann,
            cache: cache(&given.cache, &d.engine.cache)?,
            slow_log: strata_engine::slowlog::SlowLog::default(),
            load_model: strata_engine::ModelLoad::AtStart,
            memory: memory(&given.memories, &d.engine.memory)?,
            sessions: sessions(&given.memories, &d.engine.sessions)?,
        };
        let auth = auth(&given.auth);
        let identity = identity(&given.auth, &auth)?;
        let mut engine = engine;
        if given.embedding.vector_index.is_none() {
            engine.ann.local = default_index(&identity);
        }
        let s = &given.server;
        let server = ServerSettings {
            listen: s.listen.unwrap_or(d.server.listen),
            shutdown_grace: grace,
            identity,
            cors_origins: cors_origins(s.cors_origins.as_deref().unwrap_or_default())?,
            admission: admission(&given.admission, &d.server.admission),
            gateway: gateway::settings(&given.gateway, &d.server.gateway)?,
            tls: match (&s.tls_cert, &s.tls_key) {
                (Some(cert), Some(key)) => Some(strata_server::tls::TlsSettings {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                (None, None) => None,
                _ => bail!("tls_cert and tls_key go together: give both or neither"),
            },
            slow_request: match s.slow_request_ms {
                Some(0) => None,
                Some(ms) => Some(Duration::from_millis(ms)),
                None => d.server.slow_request,
            },
            compress_min_bytes: match s.compress_min_bytes {
                Some(0) => None,
                Some(n) => Some(n),
                None => d.server.compress_min_bytes,
            },
            warm: strata_server::warm::WarmSettings {
                queries_per_tenant: s
                    .cache_warm_queries
                    .unwrap_or(d.server.warm.queries_per_tenant),
                interval: Duration::from_secs(
                    s.cache_warm_interval_secs
                        .unwrap_or(d.server.warm.interval.as_secs())
                        .max(1),
                ),
            },
            ..d.server
        };
        Ok(Self {
            source,
            engine,
            server,
            auth,
            insecure_no_auth: given.auth.insecure_no_auth.unwrap_or(false),
            log: s.log.clone().unwrap_or_else(|| "info".to_owned()),
            log_format: s.log_format.unwrap_or(LogFormat::Text),
        })
    }
}

/// The storage section, resolved (the engine's settings hold it field by field).
struct Storage {
    data_dir: PathBuf,
    database_url: Option<strata_engine::SecretUrl>,
    sqlite: SqliteOptions,
    postgres: PostgresOptions,
    max_upload_bytes: u64,
}

fn storage(s: &StorageFlags, d: &EngineSettings) -> Storage {
    let acquire_timeout = Duration::from_millis(
        s.db_acquire_timeout_ms
            .unwrap_or(d.sqlite.acquire_timeout.as_millis() as u64)
            .max(1),
    );
    let slow_statement = Duration::from_millis(
        s.db_slow_statement_ms
            .unwrap_or(d.sqlite.slow_statement.as_millis() as u64),
    );
    let pg = &d.postgres;
    Storage {
        data_dir: s.data_dir.clone().unwrap_or_else(|| d.data_dir.clone()),
        database_url: s.database_url.clone().map(strata_engine::SecretUrl::from),
        sqlite: SqliteOptions {
            max_connections: s
                .db_max_connections
                .unwrap_or(d.sqlite.max_connections)
                .max(1),
            acquire_timeout,
            slow_statement,
            ..d.sqlite.clone()
        },
        postgres: PostgresOptions {
            max_connections: s.db_max_connections.unwrap_or(pg.max_connections).max(1),
            min_connections: s.db_min_connections.unwrap_or(pg.min_connections),
            acquire_timeout,
            idle_timeout: Duration::from_secs(
                s.db_idle_timeout_secs.unwrap_or(pg.idle_timeout.as_secs()),
            ),
            max_lifetime: Duration::from_secs(
                s.db_max_lifetime_secs.unwrap_or(pg.max_lifetime.as_secs()),
            ),
            test_before_acquire: s.db_test_before_acquire.unwrap_or(pg.test_before_acquire),
            slow_statement,
            ..pg.clone()
        },
        max_upload_bytes: s.max_upload.unwrap_or(d.max_upload_bytes),
    }
}

fn jobs(s: &JobFlags, d: &JobSettings) -> anyhow::Result<JobSettings> {
    let lease = s.job_lease_secs.unwrap_or(d.lease.as_secs());
    if lease < 3 {
        bail!("job_lease_secs must be at least 3");
    }
    Ok(JobSettings {
        workers: s.workers.unwrap_or(d.workers),
        max_attempts: s.job_max_attempts.unwrap_or(d.max_attempts).max(1),
        lease: Duration::from_secs(lease),
        backoff_base: Duration::from_secs(s.job_backoff_secs.unwrap_or(d.backoff_base.as_secs())),
        extract_timeout: Duration::from_secs(
            s.extract_timeout_secs
                .unwrap_or(d.extract_timeout.as_secs())
                .max(1),
        ),
        chunk: ChunkConfig::new(
            s.chunk_tokens.unwrap_or(d.chunk.max_tokens),
            s.chunk_overlap.unwrap_or(d.chunk.overlap),
        )?,
        ..d.clone()
    })
}

/// Extraction runs in child processes of this executable (`strata extract`), under limits.
fn extract(s: &JobFlags, d: &ExtractSettings) -> anyhow::Result<ExtractSettings> {
    let pdf = match s.pdf_reader.unwrap_or(PdfReaderChoice::Auto) {
        PdfReaderChoice::Auto => PdfReader::detect(),
        PdfReaderChoice::Builtin => PdfReader::Builtin,
        PdfReaderChoice::Poppler => match PdfReader::detect() {
            p @ PdfReader::Poppler(_) => p,
            PdfReader::Builtin => bail!(
                "pdf_reader = poppler, but pdftotext is not on PATH (install Debian's \
                 poppler-utils)"
            ),
        },
    };
    let memory_limit = s.extract_memory.unwrap_or(d.memory_limit);
    if memory_limit < 64 * 1024 * 1024 {
        bail!("extract_memory must be at least 64MiB");
    }
    Ok(ExtractSettings {
        pdf,
        helper: Some(
            std::env::current_exe().context("finding this executable, which runs extraction")?,
        ),
        memory_limit,
    })
}

fn sessions(
    s: &MemoryFlags,
    d: &strata_engine::session::SessionSettings,
) -> anyhow::Result<strata_engine::session::SessionSettings> {
    let secs = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_secs);
    let min = secs(s.session_timeout_min_secs, d.min);
    let max = secs(s.session_timeout_max_secs, d.max);
    let default = secs(s.session_timeout_secs, d.default);
    if min.is_zero() || min > max || default < min || default > max {
        bail!(
            "session timeouts must satisfy 0 < min <= default <= max (got min {} s, default {} s, \
             max {} s)",
            min.as_secs(),
            default.as_secs(),
            max.as_secs()
        );
    }
    Ok(strata_engine::session::SessionSettings {
        min,
        max,
        default,
        ..*d
    })
}

fn memory(
    s: &MemoryFlags,
    d: &strata_engine::MemorySettings,
) -> anyhow::Result<strata_engine::MemorySettings> {
    let merge_threshold = s.memory_merge_threshold.unwrap_or(d.merge_threshold);
    if !(merge_threshold > 0.0 && merge_threshold <= 1.0) {
        bail!("memory_merge_threshold must be above 0 and at most 1 (got {merge_threshold})");
    }
    Ok(strata_engine::MemorySettings {
        merge_threshold,
        working_set_bytes: s.memory_working_set_mb.map_or(d.working_set_bytes, |mb| {
            (mb as usize).saturating_mul(1 << 20)
        }),
    })
}

/// The embedding and search section, resolved.
struct Embedding {
    model_dir: PathBuf,
    local_runtime: strata_engine::LocalRuntime,
    remote_embedder: Option<strata_engine::HttpSettings>,
    embed_threads: usize,
    batch: BatchSettings,
    ann: AnnSettings,
}

fn embedding(s: &EmbeddingFlags, d: &EngineSettings) -> anyhow::Result<Embedding> {
    if s.embed_url.is_some() && s.embed_max_wait_ms.is_some_and(|w| w > 0) {
        bail!(
            "embed_max_wait_ms applies to the local model's forward passes; with embed_url \
             the endpoint gets each caller's texts as they come"
        );
    }
    Ok(Embedding {
        model_dir: s.model_dir.clone().unwrap_or_else(|| d.model_dir.clone()),
        local_runtime: match s.embedder {
            None => d.local_runtime,
            Some(Runtime::Onnx) => strata_engine::LocalRuntime::Onnx,
            Some(Runtime::Candle) => strata_engine::LocalRuntime::Candle,
        },
        remote_embedder: s.embed_url.clone().map(|url| {
            let model = s.embed_model.as_deref();
            strata_engine::HttpSettings {
                api_key: s.embed_api_key.clone(),
                ..strata_engine::HttpSettings::new(
                    url,
                    model.unwrap_or(strata_engine::HttpSettings::DEFAULT_MODEL),
                )
            }
        }),
        embed_threads: s.embed_threads.unwrap_or(d.embed_threads).max(1),
        batch: BatchSettings {
            max_batch: s.embed_max_batch.unwrap_or(d.batch.max_batch).max(1),
            max_wait: Duration::from_millis(
                s.embed_max_wait_ms
                    .unwrap_or(d.batch.max_wait.as_millis() as u64),
            ),
            ..d.batch
        },
        ann: AnnSettings {
            expansion_search: s.search_ef.unwrap_or(d.ann.expansion_search).max(1),
            exact_limit: s.search_exact_limit.unwrap_or(d.ann.exact_limit),
            local: match s.vector_index {
                None => d.ann.local,
                Some(VectorIndexKind::Usearch) => LocalIndex::Usearch,
                Some(VectorIndexKind::Qdrant) => LocalIndex::Qdrant,
            },
            ..d.ann
        },
    })
}

/// The embedded store's vector index when none is configured: usearch while every request
/// is the single local tenant, qdrant-edge once tenants come from tokens or a proxy's header
/// (when this strata has it). Measured on 100k MiniLM vectors (BENCHMARKS.md, "In-process
/// indexes"): usearch answers one tenant's unfiltered search faster and holds its vectors in
/// a third of the memory, but searching one tenant among many walks its whole graph testing
/// every node's owner, 4x (1 of 10 tenants) to 40x (1 of 100) slower than qdrant-edge, which
/// restricts the walk to the tenant inside the graph (docs/ARCHITECTURE.md, Decisions).
fn default_index(identity: &strata_server::caller::Identity) -> LocalIndex {
    let many_tenants = !matches!(identity, strata_server::caller::Identity::Local);
    if many_tenants && cfg!(feature = "qdrant") {
        LocalIndex::Qdrant
    } else {
        LocalIndex::Usearch
    }
}

fn cache(
    s: &CacheFlags,
    d: &strata_engine::CacheSettings,
) -> anyhow::Result<strata_engine::CacheSettings> {
    let redis = match s.redis_url.as_deref().map(str::trim) {
        Some(url) if !url.is_empty() => {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                bail!("redis_url: {} is not a redis:// URL", mask_url(url));
            }
            let mut r = strata_engine::RedisSettings::new(url.to_owned());
            if let Some(ns) = &s.redis_namespace {
                strata_engine::RedisSettings::check_namespace(ns)
                    .map_err(|e| anyhow::anyhow!("redis_namespace: {e}"))?;
                r.namespace = ns.clone();
            }
            r.pool_size = s.redis_pool_size.unwrap_or(r.pool_size).max(1);
            r.op_timeout = Duration::from_millis(
                s.redis_timeout_ms
                    .unwrap_or(r.op_timeout.as_millis() as u64)
                    .max(1),
            );
            Some(r)
        }
        _ => None,
    };
    Ok(strata_engine::CacheSettings {
        l1_bytes: s.cache_l1.unwrap_or(d.l1_bytes),
        kinds: cache_kinds(
            d.kinds.clone(),
            s.cache_ttl.as_deref(),
            s.cache_l2_ttl.as_deref(),
        )?,
        redis,
    })
}

/// The default kinds with TTL overrides (`kind=secs,...`) for L1 and L2 applied.
fn cache_kinds(
    mut kinds: Vec<strata_engine::KindSpec>,
    l1: Option<&str>,
    l2: Option<&str>,
) -> anyhow::Result<Vec<strata_engine::KindSpec>> {
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

/// Reads `strata.toml`: each setting at the top level or in its section's table, never
/// both, and no name the flags do not have.
fn read_file(path: &Path) -> anyhow::Result<Overrides> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let invalid = || format!("invalid config file {}", path.display());
    let table: toml::Table = toml::from_str(&text).with_context(invalid)?;
    let flat = without_sections(table).with_context(invalid)?;
    Overrides::deserialize(toml::Value::Table(flat)).with_context(invalid)
}

/// The file's settings with the section tables lifted to the top level.
fn without_sections(table: toml::Table) -> anyhow::Result<toml::Table> {
    let sections = flags::sections();
    let home = |key: &str| {
        sections
            .iter()
            .find(|(_, flags)| flags.get_arguments().any(|a| a.get_id() == key))
            .map(|(name, _)| *name)
    };
    let mut flat = toml::Table::new();
    let mut put = |key: String, value, section: Option<&str>| {
        match (home(&key), section) {
            (None, _) => bail!("unknown setting {key:?}"),
            (Some(at), Some(section)) if at != section => {
                bail!("{key:?} belongs in [{at}], not [{section}]")
            }
            _ => {}
        }
        if flat.insert(key.clone(), value).is_some() {
            bail!("{key:?} is set twice (at the top level and in its section)");
        }
        Ok(())
    };
    for (key, value) in table {
        match (sections.iter().find(|(name, _)| *name == key), value) {
            (Some((name, _)), toml::Value::Table(inner)) => {
                for (k, v) in inner {
                    put(k, v, Some(name))?;
                }
            }
            (Some((name, _)), _) => bail!("[{name}] must be a table of settings"),
            (None, value) => put(key, value, None)?,
        }
    }
    Ok(flat)
}

use strata_engine::redact_url as mask_url;

/// A leading whole number and the unit after it (trimmed).
fn number_and_unit(s: &str) -> Option<(u64, &str)> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    Some((num.parse().ok()?, unit.trim()))
}

/// Parses `90s`, `30m`, `12h`, `7d` (a bare number is seconds); zero is refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (n, unit) = number_and_unit(s)
        .ok_or_else(|| format!("{s:?} is not a duration (e.g. 90s, 30m, 12h, 7d)"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown unit {other:?} (use s, m, h or d)")),
    };
    match n.checked_mul(secs) {
        Some(0) | None => Err(format!("{s:?} is not a usable lifetime")),
        Some(v) => Ok(Duration::from_secs(v)),
    }
}

/// Parses `1234`, `512KiB`, `50MiB`, `1GiB`, `10MB`, `1kb`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (n, unit) =
        number_and_unit(s).ok_or_else(|| format!("{s:?} is not a size (e.g. 50MiB)"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
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

fn admission(a: &AdmissionFlags, d: &AdmissionSettings) -> AdmissionSettings {
    let secs = |given: Option<u64>, default: Duration| {
        given.map_or(default, |s| Duration::from_secs(s.max(1)))
    };
    AdmissionSettings {
        max_in_flight: a.max_in_flight.unwrap_or(d.max_in_flight),
        rate: match a.rate_limit.unwrap_or(0) {
            0 => None,
            per_second => Some(RateLimit {
                per_second,
                burst: a.rate_burst.unwrap_or(per_second.saturating_mul(2)).max(1),
            }),
        },
        timeout: secs(a.request_timeout_secs, d.timeout),
        upload_timeout: secs(a.upload_timeout_secs, d.upload_timeout),
    }
}

/// Each origin is `*` or `scheme://host[:port]`, with nothing after it.
fn cors_origins(given: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for o in given.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
        let rest = o
            .strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"));
        let valid = o == "*"
            || rest.is_some_and(|r| {
                !r.is_empty()
                    && r.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
            });
        if !valid {
            bail!("cors_origins: {o:?} is not * or an origin such as https://app.example.com");
        }
        out.push(o.to_owned());
    }
    Ok(out)
}

fn auth(a: &AuthFlags) -> AuthSettings {
    let d = AuthSettings::default();
    AuthSettings {
        secret: a.jwt_secret.clone().map(Secret::new),
        keys_file: a.jwt_keys.clone(),
        admin_key: a.admin_key.clone().map(Secret::new),
        issuer: a.jwt_issuer.clone(),
        audience: a.jwt_audience.clone(),
        leeway: a.jwt_leeway_secs.map_or(d.leeway, Duration::from_secs),
    }
}

/// How callers are identified: bearer credentials, a tenant header and its admin tenants,
/// or development mode.
fn identity(
    a: &AuthFlags,
    settings: &AuthSettings,
) -> anyhow::Result<strata_server::caller::Identity> {
    use strata_server::caller::Identity;
    let admins = a.admin_tenants.clone().unwrap_or_default();
    let header = a.tenant_header.clone().filter(|h| !h.trim().is_empty());
    if settings.is_configured() {
        if header.is_some() {
            bail!(
                "tenant_header does not combine with jwt_secret, jwt_keys or admin_key: \
                 either a proxy names the tenant or strata checks bearer tokens"
            );
        }
        if !admins.is_empty() {
            bail!(
                "admin_tenants is for tenant_header mode; with tokens, the role claim says who is admin"
            );
        }
        let auth = Authenticator::new(settings)?;
        return Ok(Identity::Token(std::sync::Arc::new(auth)));
    }
    let Some(h) = header else {
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

impl Config {
    /// Refuses to serve a non-loopback address with no authentication, unless told
    /// `insecure_no_auth`.
    pub fn check_exposure(&self) -> anyhow::Result<()> {
        let open = matches!(self.server.identity, strata_server::caller::Identity::Local);
        if open && !self.server.listen.ip().is_loopback() && !self.insecure_no_auth {
            bail!(
                "listen {} is reachable from other machines and no authentication is configured: \
                 set jwt_secret, jwt_keys or admin_key (or tenant_header behind a proxy), listen on \
                 127.0.0.1, or pass --insecure-no-auth to serve every caller as the local admin",
                self.server.listen
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
