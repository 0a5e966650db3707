//! Where data lives and how it is found: `[storage]`, `[cache]`, `[embedding]` and
//! `[memories]`.

use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;

use super::{Runtime, VectorIndexKind, parse_size, size};

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

    /// The in-process vector index of the embedded store: `usearch` (8-bit HNSW, candidates
    /// re-ranked with the stored vectors: fastest and smallest for one tenant) or `qdrant`
    /// (Qdrant's engine, qdrant-edge: f32 HNSW that applies the tenant and filters inside the
    /// graph walk: 4-40x faster when many tenants share the instance). Switching rebuilds the
    /// index from the stored vectors on the next start. Over PostgreSQL vectors live in
    /// pgvector and this is refused. Unset, it is qdrant when tenants come from tokens or
    /// --tenant-header, and usearch with no authentication (the single local tenant)
    /// [default: usearch].
    #[arg(long, env = "STRATA_VECTOR_INDEX", global = true)]
    pub vector_index: Option<VectorIndexKind>,
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
    search_exact_limit,
    vector_index
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
