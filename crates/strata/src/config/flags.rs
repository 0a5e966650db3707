//! The settings, by section (server, auth, admission, storage, cache, embedding and search, jobs,
//! memories): one type
//! per section serves as its flags (with their `STRATA_*` variables, grouped in `--help` under
//! the section's heading) and as its table in `strata.toml`. Each flag's doc comment is its
//! help; the `[default: ...]` it states is the owning crate's value (a test checks it).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Deserializer};

use super::parse_size;

/// Every setting, as given on the command line, in the environment or in one layer of
/// `strata.toml` (each file setting has the flag's name with underscores: `data_dir = "..."`,
/// at the top level or in its section's table: `[storage] data_dir = "..."`).
///
/// Deliberately not `Debug`: it holds the database and Redis URLs and the embedding API key
/// as given; [`Config`](super::Config) holds them in types that mask them.
#[derive(Clone, Default, Args, Deserialize)]
#[serde(default)]
pub struct Overrides {
    /// Configuration file [default: ./strata.toml when it exists].
    #[arg(long, env = "STRATA_CONFIG", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// `[server]`.
    #[command(flatten)]
    #[serde(flatten)]
    pub server: ServerFlags,
    /// `[auth]`.
    #[command(flatten)]
    #[serde(flatten)]
    pub auth: AuthFlags,
    /// `[admission]`.
    #[command(flatten)]
    #[serde(flatten)]
    pub admission: AdmissionFlags,
    /// `[storage]`.
    #[command(flatten)]
    #[serde(flatten)]
    pub storage: StorageFlags,
    /// `[cache]`.
    #[command(flatten)]
    #[serde(flatten)]
    pub cache: CacheFlags,
    /// `[embedding]`.
    #[command(flatten)]
    #[serde(flatten)]
    pub embedding: EmbeddingFlags,
    /// `[jobs]`.
    #[command(flatten)]
    #[serde(flatten)]
    pub jobs: JobFlags,
    /// `[memories]`.
    #[command(flatten)]
    #[serde(flatten)]
    pub memories: MemoryFlags,
    /// `[gateway]`.
    #[command(flatten)]
    #[serde(flatten)]
    pub gateway: GatewayFlags,
}

impl Overrides {
    /// These settings, each one given here or else taken from `lower`.
    pub fn layered_over(self, lower: Self) -> Self {
        Self {
            config: self.config.or(lower.config),
            server: self.server.layered_over(lower.server),
            auth: self.auth.layered_over(lower.auth),
            admission: self.admission.layered_over(lower.admission),
            storage: self.storage.layered_over(lower.storage),
            cache: self.cache.layered_over(lower.cache),
            embedding: self.embedding.layered_over(lower.embedding),
            jobs: self.jobs.layered_over(lower.jobs),
            memories: self.memories.layered_over(lower.memories),
            gateway: self.gateway.layered_over(lower.gateway),
        }
    }
}

/// The file's table for each section, with the flags that belong to it: the names a
/// `[section]` table of `strata.toml` may hold.
pub(super) fn sections() -> [(&'static str, clap::Command); 9] {
    let flags = |cmd: fn(clap::Command) -> clap::Command| cmd(clap::Command::new("section"));
    [
        ("server", flags(ServerFlags::augment_args)),
        ("auth", flags(AuthFlags::augment_args)),
        ("admission", flags(AdmissionFlags::augment_args)),
        ("storage", flags(StorageFlags::augment_args)),
        ("cache", flags(CacheFlags::augment_args)),
        ("embedding", flags(EmbeddingFlags::augment_args)),
        ("jobs", flags(JobFlags::augment_args)),
        ("memories", flags(MemoryFlags::augment_args)),
        ("gateway", flags(GatewayFlags::augment_args)),
    ]
}

/// `layered_over` for a section: each field given in `self`, or else `lower`'s. Listing a
/// field twice or leaving one out does not compile.
macro_rules! layered {
    ($section:ident { $($field:ident),* $(,)? }) => {
        impl $section {
            /// These settings, each one given here or else taken from `lower`.
            pub fn layered_over(self, lower: Self) -> Self {
                Self { $($field: self.$field.or(lower.$field)),* }
            }
        }
    };
}

/// A size in `strata.toml`: a number of bytes, or text with a unit (`"50MiB"`).
fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Option::<Size>::deserialize(d)? {
        None => Ok(None),
        Some(Size::Bytes(n)) => Ok(Some(n)),
        Some(Size::Text(s)) => parse_size(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

/// The HTTP server, identity and logging. `[server]` in `strata.toml`.
#[derive(Clone, Default, Args, Deserialize)]
#[command(next_help_heading = "Server")]
#[serde(default)]
pub struct ServerFlags {
    /// Address to listen on [default: 127.0.0.1:7733].
    #[arg(long, env = "STRATA_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,

    /// Seconds in-flight requests and jobs get to finish on shutdown [default: 10].
    #[arg(long, env = "STRATA_SHUTDOWN_GRACE_SECS", global = true)]
    pub shutdown_grace_secs: Option<u64>,

    /// Frequent searches recomputed per tenant on startup, after writes and on a schedule, so
    /// the first user after a restart or a write gets a cache hit; 0 turns warming off
    /// [default: 20].
    #[arg(long, env = "STRATA_CACHE_WARM_QUERIES", global = true)]
    pub cache_warm_queries: Option<usize>,

    /// Seconds between scheduled warming passes [default: 300].
    #[arg(long, env = "STRATA_CACHE_WARM_INTERVAL_SECS", global = true)]
    pub cache_warm_interval_secs: Option<u64>,
    /// Origins browsers may call strata from, comma-separated (`https://app.example.com`),
    /// or `*` for any; preflights are answered and strata's headers exposed to them
    /// [default: none, CORS off].
    #[arg(
        long,
        env = "STRATA_CORS_ORIGINS",
        global = true,
        value_delimiter = ','
    )]
    pub cors_origins: Option<Vec<String>>,
    /// Responses from this many bytes on are compressed (zstd, br or gzip, as the client's
    /// Accept-Encoding prefers); cached answers keep their gzip form, so a cache hit
    /// compresses nothing; 0 turns compression off [default: 1024].
    #[arg(long, env = "STRATA_COMPRESS_MIN_BYTES", global = true)]
    pub compress_min_bytes: Option<usize>,
    /// Requests answered after this many milliseconds are logged at warn with their route,
    /// status, timing and request id; 0 turns the log off [default: 1000].
    #[arg(long, env = "STRATA_SLOW_REQUEST_MS", global = true)]
    pub slow_request_ms: Option<u64>,
    /// Serve HTTPS with this PEM certificate chain (leaf first), HTTP/1.1 and h2 chosen by
    /// ALPN; needs --tls-key. Both files are re-read when either changes. Unset: plain HTTP
    /// (terminate TLS in a proxy in front) [default: unset].
    #[arg(long, env = "STRATA_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "STRATA_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,

    /// Log filter, e.g. `info` or `strata_engine=debug,info` [default: info].
    #[arg(long, env = "STRATA_LOG", global = true)]
    pub log: Option<String>,

    /// Log format: `text` or `json` [default: text].
    #[arg(long, env = "STRATA_LOG_FORMAT", global = true)]
    pub log_format: Option<LogFormat>,
}

layered!(ServerFlags {
    listen,
    shutdown_grace_secs,
    cache_warm_queries,
    cache_warm_interval_secs,
    cors_origins,
    compress_min_bytes,
    slow_request_ms,
    tls_cert,
    tls_key,
    log,
    log_format
});

/// Who may call: bearer JWTs and the operator key, or a tenant header set by a proxy.
/// `[auth]` in `strata.toml`. With none of them, every request is the single local admin
/// tenant (development), and `strata serve` refuses a non-loopback --listen address unless
/// given --insecure-no-auth.
#[derive(Clone, Default, Args, Deserialize)]
#[command(next_help_heading = "Auth")]
#[serde(default)]
pub struct AuthFlags {
    /// Secret for HS256 bearer tokens (at least 32 bytes): `sub` is the tenant, `role`
    /// (`admin` | `user`) the role, `exp` required. `strata token` mints one. Never printed.
    #[arg(long, env = "STRATA_JWT_SECRET", global = true, hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Public keys for RS256 / PS256 / ES256 / EdDSA bearer tokens: a PEM file (one or more
    /// public key blocks) or a JWKS document (keys chosen by `kid`); reloaded when the file
    /// changes or on SIGHUP.
    #[arg(long, env = "STRATA_JWT_KEYS", global = true)]
    pub jwt_keys: Option<PathBuf>,
    /// The `iss` every token must carry [default: not checked].
    #[arg(long, env = "STRATA_JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,
    /// An `aud` every token must carry [default: not checked].
    #[arg(long, env = "STRATA_JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf` [default: 30].
    #[arg(long, env = "STRATA_JWT_LEEWAY_SECS", global = true)]
    pub jwt_leeway_secs: Option<u64>,
    /// Operator key for scripts and the dashboard (at least 16 characters), sent as
    /// `Authorization: Bearer <key>`: the admin role, acting as its own tenant. Compared in
    /// constant time; never printed.
    #[arg(long, env = "STRATA_ADMIN_KEY", global = true, hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Take each request's tenant from this header, set by an authenticating proxy in front
    /// of strata (e.g. `X-Forwarded-User`); requests without it get 401. Not with the JWT
    /// settings or --admin-key [default: unset].
    #[arg(long, env = "STRATA_TENANT_HEADER", global = true)]
    pub tenant_header: Option<String>,

    /// Tenants with the admin role in tenant-header mode, comma-separated: they may clear
    /// the cache, optimise the database and read its table statistics. In development mode
    /// the single local tenant is the admin [default: none].
    #[arg(
        long,
        env = "STRATA_ADMIN_TENANTS",
        global = true,
        value_delimiter = ','
    )]
    pub admin_tenants: Option<Vec<String>>,
    /// Serve without authentication on a non-loopback address (every caller is the local
    /// admin tenant). For a private network you trust, never for the internet.
    #[arg(
        long,
        env = "STRATA_INSECURE_NO_AUTH",
        global = true,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub insecure_no_auth: Option<bool>,
}

layered!(AuthFlags {
    jwt_secret,
    jwt_keys,
    jwt_issuer,
    jwt_audience,
    jwt_leeway_secs,
    admin_key,
    tenant_header,
    admin_tenants,
    insecure_no_auth
});

/// What a request must pass before a handler runs, and how long it may take.
/// `[admission]` in `strata.toml`.
#[derive(Clone, Default, Args, Deserialize)]
#[command(next_help_heading = "Admission")]
#[serde(default)]
pub struct AdmissionFlags {
    /// Most requests waiting inside strata (one answered at once, as a cache hit is, never
    /// counts) before new ones are answered 503 `overloaded` with Retry-After at once; health,
    /// metrics and operator routes are never shed; 0 for no bound [default: 512].
    #[arg(long, env = "STRATA_MAX_IN_FLIGHT", global = true)]
    pub max_in_flight: Option<usize>,
    /// Requests per second each tenant may make, sustained; over it, 429 `rate_limited` with
    /// Retry-After and RateLimit headers; 0 for no limit [default: 0].
    #[arg(long, env = "STRATA_RATE_LIMIT", global = true)]
    pub rate_limit: Option<u32>,
    /// Requests a tenant may make at once after a quiet spell (with --rate-limit)
    /// [default: twice the rate].
    #[arg(long, env = "STRATA_RATE_BURST", global = true)]
    pub rate_burst: Option<u32>,
    /// Seconds a request may take before it is answered 504 `timeout` [default: 30].
    #[arg(long, env = "STRATA_REQUEST_TIMEOUT_SECS", global = true)]
    pub request_timeout_secs: Option<u64>,
    /// Seconds an upload may take, its body included [default: 300].
    #[arg(long, env = "STRATA_UPLOAD_TIMEOUT_SECS", global = true)]
    pub upload_timeout_secs: Option<u64>,
    /// Searches and embedding requests that may wait for the model; more are answered 503
    /// with Retry-After at once instead of waiting [default: 512].
    #[arg(long, env = "STRATA_SEARCH_QUEUE", global = true)]
    pub search_queue: Option<usize>,
    /// Milliseconds a search may expect to wait for the local model (the texts of admitted
    /// searches still waiting, times the recent cost of one text); a search that would wait
    /// longer is answered 503 with Retry-After at once, so the ones admitted stay fast under
    /// overload. Raise it to trade latency for throughput (fuller batches); 0 turns it off
    /// [default: 15].
    #[arg(long, env = "STRATA_SEARCH_QUEUE_WAIT_MS", global = true)]
    pub search_queue_wait_ms: Option<u64>,
}

layered!(AdmissionFlags {
    max_in_flight,
    rate_limit,
    rate_burst,
    request_timeout_secs,
    upload_timeout_secs,
    search_queue,
    search_queue_wait_ms
});

/// Where documents live: the database, its pool and the original files. `[storage]` in `strata.toml`.
#[derive(Clone, Default, Args, Deserialize)]
#[command(next_help_heading = "Storage")]
#[serde(default)]
pub struct StorageFlags {
    /// Directory of the embedded store: SQLite database and original files [default: ./strata-data].
    #[arg(long, env = "STRATA_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,

    /// Database URL: `postgres://user@host:port/db` runs on PostgreSQL with pgvector (shared by
    /// any number of instances; see docs/SCALING.md); `sqlite://PATH` overrides the file under
    /// the data directory [default: embedded SQLite in the data directory].
    #[arg(
        long,
        env = "STRATA_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// Largest upload, in bytes or with a unit: 50MiB, 10MB, 512KiB [default: 50MiB].
    #[serde(deserialize_with = "size")]
    #[arg(long, env = "STRATA_MAX_UPLOAD", global = true, value_parser = parse_size)]
    pub max_upload: Option<u64>,

    /// Most database connections this process holds [default: 8 for SQLite, 10 for PostgreSQL].
    /// With N instances over one PostgreSQL, keep N x this (+ 2 each, see docs/SCALING.md)
    /// under the server's max_connections.
    #[arg(long, env = "STRATA_DB_MAX_CONNECTIONS", global = true)]
    pub db_max_connections: Option<u32>,

    /// PostgreSQL connections kept open while idle [default: 1].
    #[arg(long, env = "STRATA_DB_MIN_CONNECTIONS", global = true)]
    pub db_min_connections: Option<u32>,

    /// Milliseconds a request waits for a database connection before it is answered 503 with
    /// Retry-After [default: 5000].
    #[arg(long, env = "STRATA_DB_ACQUIRE_TIMEOUT_MS", global = true)]
    pub db_acquire_timeout_ms: Option<u64>,

    /// Seconds an idle PostgreSQL connection is kept before it is closed [default: 600].
    #[arg(long, env = "STRATA_DB_IDLE_TIMEOUT_SECS", global = true)]
    pub db_idle_timeout_secs: Option<u64>,

    /// Seconds after which a PostgreSQL connection is replaced [default: 1800].
    #[arg(long, env = "STRATA_DB_MAX_LIFETIME_SECS", global = true)]
    pub db_max_lifetime_secs: Option<u64>,

    /// Check each PostgreSQL connection with a round trip before handing it out [default: true].
    #[arg(long, env = "STRATA_DB_TEST_BEFORE_ACQUIRE", global = true)]
    pub db_test_before_acquire: Option<bool>,

    /// Statements slower than this many milliseconds are logged as warnings and listed at
    /// GET /v1/performance/database/stats [default: 500].
    #[arg(long, env = "STRATA_DB_SLOW_STATEMENT_MS", global = true)]
    pub db_slow_statement_ms: Option<u64>,
}

layered!(StorageFlags {
    data_dir,
    database_url,
    max_upload,
    db_max_connections,
    db_min_connections,
    db_acquire_timeout_ms,
    db_idle_timeout_secs,
    db_max_lifetime_secs,
    db_test_before_acquire,
    db_slow_statement_ms
});

/// The tiered cache: the in-process tier, TTLs per kind and Redis. `[cache]` in `strata.toml`.
#[derive(Clone, Default, Args, Deserialize)]
#[command(next_help_heading = "Cache")]
#[serde(default)]
pub struct CacheFlags {
    /// In-process cache budget, in bytes or with a unit [default: 256MiB].
    #[serde(deserialize_with = "size")]
    #[arg(long, env = "STRATA_CACHE_L1", global = true, value_parser = parse_size)]
    pub cache_l1: Option<u64>,

    /// Cache TTLs per kind, in seconds: `search_results=600,tag_counts=60` (kinds: embedding,
    /// search_results, document_meta, document_list, tag_counts, job_status); 0 keeps a kind out
    /// of that tier.
    #[arg(long, env = "STRATA_CACHE_TTL", global = true)]
    pub cache_ttl: Option<String>,

    /// Cache TTLs per kind in Redis (L2), in seconds, same form as --cache-ttl.
    #[arg(long, env = "STRATA_CACHE_L2_TTL", global = true)]
    pub cache_l2_ttl: Option<String>,

    /// Redis for the shared cache tier (L2), generations and cross-instance invalidation:
    /// `redis://[user:password@]host:port[/db]` [default: none, single process].
    #[arg(long, env = "STRATA_REDIS_URL", global = true)]
    pub redis_url: Option<String>,

    /// The prefix of every Redis key and channel strata uses; give deployments that share one
    /// Redis different namespaces (pub/sub ignores the URL's database number, so a different
    /// /db alone does not keep them apart) [default: strata].
    #[arg(long, env = "STRATA_REDIS_NAMESPACE", global = true)]
    pub redis_namespace: Option<String>,

    /// Redis connections in the pool (commands are pipelined on each) [default: 4].
    #[arg(long, env = "STRATA_REDIS_POOL_SIZE", global = true)]
    pub redis_pool_size: Option<usize>,

    /// Longest wait for one Redis command, in milliseconds, before it counts as a failure;
    /// three failures in a row open the circuit breaker for a second [default: 100].
    #[arg(long, env = "STRATA_REDIS_TIMEOUT_MS", global = true)]
    pub redis_timeout_ms: Option<u64>,
}

layered!(CacheFlags {
    cache_l1,
    cache_ttl,
    cache_l2_ttl,
    redis_url,
    redis_namespace,
    redis_pool_size,
    redis_timeout_ms
});

/// The embedding model (local or an endpoint) and vector search. `[embedding]` in `strata.toml`.
#[derive(Clone, Default, Args, Deserialize)]
#[command(next_help_heading = "Embedding and search")]
#[serde(default)]
pub struct EmbeddingFlags {
    /// Directory of the embedding model's files, as `scripts/fetch-model` lays them out
    /// [default: /var/tmp/strata-models/all-MiniLM-L6-v2].
    #[arg(long, env = "STRATA_MODEL_DIR", global = true)]
    pub model_dir: Option<PathBuf>,

    /// Use an OpenAI-compatible embeddings endpoint (base URL, e.g. https://api.openai.com/v1)
    /// instead of the local model.
    #[arg(long, env = "STRATA_EMBED_URL", global = true)]
    pub embed_url: Option<String>,

    /// Model name to ask the endpoint for (with --embed-url) [default: text-embedding-3-small].
    #[arg(long, env = "STRATA_EMBED_MODEL", global = true)]
    pub embed_model: Option<String>,

    /// API key for the endpoint (with --embed-url); sent as a bearer token, never printed.
    #[arg(
        long,
        env = "STRATA_EMBED_API_KEY",
        global = true,
        hide_env_values = true
    )]
    pub embed_api_key: Option<String>,

    /// Local model runtime: `onnx` (int8, fast) or `candle` (f32, pure Rust, slower) [default: onnx].
    #[arg(long, env = "STRATA_EMBEDDER", global = true)]
    pub embedder: Option<Runtime>,

    /// Threads for one embedding forward pass [default: the number of cores].
    #[arg(long, env = "STRATA_EMBED_THREADS", global = true)]
    pub embed_threads: Option<usize>,

    /// Most texts coalesced into one embedding forward pass [default: 32].
    #[arg(long, env = "STRATA_EMBED_MAX_BATCH", global = true)]
    pub embed_max_batch: Option<usize>,

    /// Extra wait, in milliseconds, for more texts to share a forward pass of the local model
    /// [default: 0]. Texts that arrive while a pass runs share the next one anyway, so a wait
    /// only adds latency to a lone query. Not accepted with --embed-url: the endpoint gets
    /// each caller's texts as they come (up to 256 per request).
    #[arg(long, env = "STRATA_EMBED_MAX_WAIT_MS", global = true)]
    pub embed_max_wait_ms: Option<u64>,

    /// HNSW candidate list size when searching: higher is more accurate and slower [default: 64].
    #[arg(long, env = "STRATA_SEARCH_EF", global = true)]
    pub search_ef: Option<usize>,

    /// Filters matching at most this many chunks are searched exactly [default: 10000].
    #[arg(long, env = "STRATA_SEARCH_EXACT_LIMIT", global = true)]
    pub search_exact_limit: Option<u64>,
}

layered!(EmbeddingFlags {
    model_dir,
    embed_url,
    embed_model,
    embed_api_key,
    embedder,
    embed_threads,
    embed_max_batch,
    embed_max_wait_ms,
    search_ef,
    search_exact_limit
});

/// Agents' memories and sessions. `[memories]` in `strata.toml`.
#[derive(Clone, Default, Args, Deserialize)]
#[command(next_help_heading = "Memories and sessions")]
#[serde(default)]
pub struct MemoryFlags {
    /// A memory add whose embedding has at least this cosine similarity to a current memory
    /// of the tenant (with the same key, when it has one) updates that memory instead of
    /// adding a near-duplicate [default: 0.95]. 1 merges only identical embeddings.
    #[arg(long, env = "STRATA_MEMORY_MERGE_THRESHOLD", global = true)]
    pub memory_merge_threshold: Option<f32>,

    /// MiB of tenants' memories (texts and vectors) kept in process for memory search; the
    /// least recently used tenants' are dropped past it and read again on their next search
    /// [default: 1024].
    #[arg(long, env = "STRATA_MEMORY_WORKING_SET_MB", global = true)]
    pub memory_working_set_mb: Option<u64>,

    /// Shortest idle timeout a session can learn, in seconds [default: 300].
    #[arg(long, env = "STRATA_SESSION_TIMEOUT_MIN_SECS", global = true)]
    pub session_timeout_min_secs: Option<u64>,

    /// Longest idle timeout a session can learn, in seconds [default: 14400].
    #[arg(long, env = "STRATA_SESSION_TIMEOUT_MAX_SECS", global = true)]
    pub session_timeout_max_secs: Option<u64>,

    /// Idle timeout of a tenant's sessions until five gaps between its requests are known,
    /// in seconds [default: 1800]. After that it is learned from the tenant's own pace.
    #[arg(long, env = "STRATA_SESSION_TIMEOUT_SECS", global = true)]
    pub session_timeout_secs: Option<u64>,
}

layered!(MemoryFlags {
    memory_merge_threshold,
    memory_working_set_mb,
    session_timeout_min_secs,
    session_timeout_max_secs,
    session_timeout_secs
});

/// The LLM gateway's upstreams: `POST /v1/chat/completions` is proxied to them, in order.
/// `[gateway]` in `strata.toml`, where `[[gateway.upstreams]]` tables list several.
#[derive(Clone, Default, Args, Deserialize)]
#[command(next_help_heading = "Gateway")]
#[serde(default)]
pub struct GatewayFlags {
    /// Base URL (up to and including `/v1`) of an OpenAI-compatible chat upstream, e.g. a
    /// local llama.cpp server: `http://127.0.0.1:8080/v1` [default: none; the chat route
    /// answers 404 model_not_found].
    #[arg(long, env = "STRATA_UPSTREAM_URL", global = true)]
    pub upstream_url: Option<String>,
    /// API key sent to that upstream as `Authorization: Bearer <key>`; never printed.
    #[arg(
        long,
        env = "STRATA_UPSTREAM_KEY",
        global = true,
        hide_env_values = true
    )]
    pub upstream_key: Option<String>,
    /// Comma-separated models that upstream serves [default: any model asked for].
    #[arg(long, env = "STRATA_UPSTREAM_MODELS", global = true)]
    pub upstream_models: Option<String>,
    /// Comma-separated `alias=model` names clients may use for its models.
    #[arg(long, env = "STRATA_UPSTREAM_ALIASES", global = true)]
    pub upstream_aliases: Option<String>,
    /// Comma-separated `model=input/output` prices in dollars per million tokens (e.g.
    /// `gpt-4o-mini=0.15/0.6`), for cost accounting and cost budgets [default: 0].
    #[arg(long, env = "STRATA_UPSTREAM_PRICES", global = true)]
    pub upstream_prices: Option<String>,
    /// More upstreams, tried in order after --upstream-url: a JSON array of objects with
    /// `name`, `base_url`, `api_key`, `models`, `aliases`, `prices` (or `[[gateway.upstreams]]`
    /// tables in strata.toml).
    #[arg(long, env = "STRATA_UPSTREAMS", global = true, hide_env_values = true)]
    pub upstreams: Option<UpstreamList>,
    /// Seconds to wait for an upstream's response headers [default: 60].
    #[arg(long, env = "STRATA_UPSTREAM_FIRST_BYTE_TIMEOUT_SECS", global = true)]
    pub upstream_first_byte_timeout_secs: Option<u64>,
    /// Seconds to wait between two chunks of an upstream's answer [default: 60].
    #[arg(long, env = "STRATA_UPSTREAM_IDLE_TIMEOUT_SECS", global = true)]
    pub upstream_idle_timeout_secs: Option<u64>,
    /// Seconds to wait for a connection to an upstream [default: 5].
    #[arg(long, env = "STRATA_UPSTREAM_CONNECT_TIMEOUT_SECS", global = true)]
    pub upstream_connect_timeout_secs: Option<u64>,
    /// Retries per upstream before its first byte (connection errors, timeouts, 429, 5xx),
    /// with exponential backoff, before the next upstream is tried [default: 2].
    #[arg(long, env = "STRATA_UPSTREAM_RETRIES", global = true)]
    pub upstream_retries: Option<u32>,
    /// The semantic cache on `/v1/chat/completions`: `off`, `shadow` (look up and record
    /// what it would have served and whether that agreed with the upstream, in
    /// `/v1/performance/gateway/stats`; always answer from the upstream) or `on` (answer a
    /// prompt near an earlier one in meaning with that one's answer, past a guard against
    /// differing numbers, negation, opposites and named entities). A request overrides it
    /// with `"strata": {"semantic_cache": "on"}` [default: off].
    #[arg(long, env = "STRATA_SEMANTIC_CACHE", global = true, value_parser = ["off", "shadow", "on"])]
    pub semantic_cache: Option<String>,
    /// The least cosine similarity (0-1) of two prompts for the semantic cache to match them;
    /// a request overrides it with `"strata": {"semantic_threshold": 0.93}` [default: 0.96;
    /// BENCHMARKS.md gives the false hits and matches of each threshold on labelled pairs].
    #[arg(long, env = "STRATA_SEMANTIC_THRESHOLD", global = true)]
    pub semantic_threshold: Option<f32>,
}

layered!(GatewayFlags {
    upstream_url,
    upstream_key,
    upstream_models,
    upstream_aliases,
    upstream_prices,
    upstreams,
    upstream_first_byte_timeout_secs,
    upstream_idle_timeout_secs,
    upstream_connect_timeout_secs,
    upstream_retries,
    semantic_cache,
    semantic_threshold
});

/// Upstreams given as a JSON array (a flag or variable) or as tables (strata.toml).
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct UpstreamList(pub Vec<strata_server::GatewayUpstream>);

impl std::str::FromStr for UpstreamList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_str(s)
            .map(Self)
            .map_err(|e| format!("not a JSON array of upstreams: {e}"))
    }
}

/// Background ingestion: workers, leases, retries and chunking. `[jobs]` in `strata.toml`.
#[derive(Clone, Default, Args, Deserialize)]
#[command(next_help_heading = "Jobs")]
#[serde(default)]
pub struct JobFlags {
    /// Background ingestion workers in this process; 0 runs none [default: 2].
    #[arg(long, env = "STRATA_WORKERS", global = true)]
    pub workers: Option<usize>,

    /// Attempts before a job fails for good [default: 5].
    #[arg(long, env = "STRATA_JOB_MAX_ATTEMPTS", global = true)]
    pub job_max_attempts: Option<u32>,

    /// Seconds a job lease lasts without a heartbeat; a crashed worker's job is retried after it [default: 30].
    #[arg(long, env = "STRATA_JOB_LEASE_SECS", global = true)]
    pub job_lease_secs: Option<u64>,

    /// Seconds before the first retry of a failed job; doubles per attempt [default: 2].
    #[arg(long, env = "STRATA_JOB_BACKOFF_SECS", global = true)]
    pub job_backoff_secs: Option<u64>,

    /// Longest text extraction of one file, in seconds [default: 60].
    #[arg(long, env = "STRATA_EXTRACT_TIMEOUT_SECS", global = true)]
    pub extract_timeout_secs: Option<u64>,

    /// Most tokens per chunk [default: 200].
    #[arg(long, env = "STRATA_CHUNK_TOKENS", global = true)]
    pub chunk_tokens: Option<usize>,

    /// Tokens shared by consecutive chunks [default: 40].
    #[arg(long, env = "STRATA_CHUNK_OVERLAP", global = true)]
    pub chunk_overlap: Option<usize>,
}

layered!(JobFlags {
    workers,
    job_max_attempts,
    job_lease_secs,
    job_backoff_secs,
    extract_timeout_secs,
    chunk_tokens,
    chunk_overlap
});

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
