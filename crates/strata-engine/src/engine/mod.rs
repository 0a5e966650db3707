//! [`Engine`]: the domain, as a few services built once by [`Engine::open`] (in
//! `bootstrap.rs`, the only place that wires backends, model, index, cache and runner):
//! [`DocumentService`] (the library), [`SearchService`] (retrieval and embeddings),
//! [`JobService`] (jobs and their live changes), [`MemoryService`] (agents' long-term
//! memories) and [`AdminService`] (the database's statistics and maintenance). Each holds
//! only the handles it uses; the gateway will be a service beside them. The engine itself only hands the services out
//! and runs the background work (workers, the listener, the index's periodic save).
//! Built once, cheap to clone, never mutated.

mod admin;
mod bootstrap;
mod budgets;
mod conversations;
mod documents;
mod memories;
mod retrieval;
mod sessions;
mod summaries;
mod work;

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

pub use admin::AdminService;
pub use budgets::{BudgetService, BudgetView, LimitSpec};
pub use conversations::{ConversationService, CreateConversation};
pub use documents::{DocumentService, IngestOutcome, ListDocuments, UploadMeta};
pub use memories::{
    AccessRecorder, DEFAULT_K as DEFAULT_MEMORY_K, ListMemories, MAX_BATCH as MAX_MEMORY_BATCH,
    MemoryService, MemorySettings,
};
pub use retrieval::SearchService;
pub use sessions::{SessionEvent, SessionService, SessionView, StartSession};
pub use summaries::{CompleteError, Completer, SummaryService};
pub use work::{JobService, ListJobs};

use crate::ann::Ann;
use crate::cursor;
use crate::error::{EngineError, Result};
use crate::jobs::{JobEvent, JobSettings};
use crate::model::Page;
use crate::policy::CachePolicy;
use crate::store::postgres::PostgresOptions;
use crate::store::sqlite::SqliteOptions;
use crate::store::{Store, StoreChange, TableStats};
use crate::vectors::AnnSettings;
use strata_embed::BatchSettings;

/// Where `scripts/fetch-model` puts the model by default.
pub const DEFAULT_MODEL_DIR: &str = "/var/tmp/strata-models/all-MiniLM-L6-v2";

/// Most texts a request may embed on the model's interactive queue (ahead of ingestion);
/// larger requests use the bulk queue (see [`SearchService::embed_texts`]).
pub const INTERACTIVE_TEXTS: usize = 8;

/// Default page size of list endpoints.
pub const DEFAULT_PAGE: u32 = 50;
/// Largest page size of list endpoints.
pub const MAX_PAGE: u32 = 500;

/// Everything the engine needs to start.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Root of the embedded data (SQLite file, blobs).
    pub data_dir: PathBuf,
    /// A `sqlite://` URL overriding `{data_dir}/strata.db`, or a `postgres://` URL.
    pub database_url: Option<strata_cache::SecretUrl>,
    /// SQLite pool settings.
    pub sqlite: SqliteOptions,
    /// PostgreSQL pool and search settings (with a `postgres://` database URL).
    pub postgres: PostgresOptions,
    /// Largest accepted upload in bytes.
    pub max_upload_bytes: u64,
    /// Job runner settings.
    pub jobs: JobSettings,
    /// How files are turned into text, and under which limits.
    pub extract: crate::extract::ExtractSettings,
    /// Directory of the local embedding model's files.
    pub model_dir: PathBuf,
    /// Which implementation runs the local model.
    pub local_runtime: strata_embed::LocalRuntime,
    /// An OpenAI-compatible embeddings endpoint to use instead of the local model.
    pub remote_embedder: Option<strata_embed::HttpSettings>,
    /// ONNX Runtime intra-op threads.
    pub embed_threads: usize,
    /// Dynamic batching of embedding requests.
    pub batch: BatchSettings,
    /// Vector index parameters.
    pub ann: AnnSettings,
    /// Cache sizes and TTLs.
    pub cache: strata_cache::CacheSettings,
    /// Where the process's slow statement layer keeps what it sees (empty when none is
    /// installed).
    pub slow_log: crate::slowlog::SlowLog,
    /// When the local model's weights load.
    pub load_model: ModelLoad,
    /// Memory merging and working sets.
    pub memory: MemorySettings,
    /// Sessions' adaptive timeout.
    pub sessions: crate::session::SessionSettings,
}

/// When the local embedding model's weights load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModelLoad {
    /// At start: a missing or corrupt model stops the process before it serves anything
    /// (what `strata serve` does).
    #[default]
    AtStart,
    /// On the first forward pass: for tests and commands that may never embed. The model's
    /// id, dimensions and tokenizer are known at once either way.
    OnFirstUse,
}

/// What `GET /v1/performance/database/stats` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DatabaseStats {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// The connection pool.
    pub pool: crate::store::meter::PoolStats,
    /// Tables, their sizes and their indexes' use.
    pub tables: Vec<TableStats>,
    /// What the catalog says should be done (empty when nothing).
    pub recommendations: Vec<crate::store::Recommendation>,
    /// The slowest recent statements, newest first.
    pub slow_statements: Vec<crate::slowlog::SlowStatement>,
    /// The in-process lexical index of the embedded default (null on PostgreSQL, whose
    /// index is among its tables').
    pub lexical_index: Option<crate::bm25::Bm25Stats>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("strata-data"),
            database_url: None,
            sqlite: SqliteOptions::default(),
            postgres: PostgresOptions::default(),
            max_upload_bytes: 50 * 1024 * 1024,
            jobs: JobSettings::default(),
            extract: crate::extract::ExtractSettings::default(),
            model_dir: PathBuf::from(DEFAULT_MODEL_DIR),
            remote_embedder: None,
            local_runtime: strata_embed::LocalRuntime::Onnx,
            embed_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            batch: BatchSettings::default(),
            ann: AnnSettings::default(),
            cache: strata_cache::CacheSettings {
                l1_bytes: 256 * 1024 * 1024,
                kinds: crate::policy::default_cache_kinds(),
                redis: None,
            },
            slow_log: crate::slowlog::SlowLog::default(),
            load_model: ModelLoad::default(),
            memory: MemorySettings::default(),
            sessions: crate::session::SessionSettings::default(),
        }
    }
}

/// The engine. Clone freely.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    documents: DocumentService,
    search: SearchService,
    jobs: JobService,
    memories: MemoryService,
    sessions: SessionService,
    budgets: BudgetService,
    conversations: ConversationService,
    summaries: SummaryService,
    admin: AdminService,
    policy: CachePolicy,
    ann: Ann,
    store: Arc<dyn Store>,
    writes: Arc<Writes>,
    data_dir: PathBuf,
    /// Who reads which file format, under which limits.
    extract: crate::extract::ExtractSettings,
    /// Longest extraction of one file.
    extract_timeout: std::time::Duration,
    /// Held for the engine's life: one process per data directory.
    _lock: std::fs::File,
}

impl Engine {
    /// The document library.
    pub fn documents(&self) -> &DocumentService {
        &self.inner.documents
    }

    /// Search and embeddings.
    pub fn retrieval(&self) -> &SearchService {
        &self.inner.search
    }

    /// Jobs and their live changes.
    pub fn jobs(&self) -> &JobService {
        &self.inner.jobs
    }

    /// Agents' long-term memories.
    pub fn memories(&self) -> &MemoryService {
        &self.inner.memories
    }

    /// Sessions and their adaptive timeouts.
    pub fn sessions(&self) -> &SessionService {
        &self.inner.sessions
    }

    /// The gateway's budgets and usage ledger.
    pub fn budgets(&self) -> &BudgetService {
        &self.inner.budgets
    }

    /// Document summaries (background jobs through the gateway's model).
    pub fn summaries(&self) -> &SummaryService {
        &self.inner.summaries
    }

    /// Conversations and their messages.
    pub fn conversations(&self) -> &ConversationService {
        &self.inner.conversations
    }

    /// The database's statistics and maintenance.
    pub fn admin(&self) -> &AdminService {
        &self.inner.admin
    }

    /// What every cached read is keyed by and every write invalidates, with the cache.
    pub fn cache_policy(&self) -> &CachePolicy {
        &self.inner.policy
    }

    /// The data directory (the embedded store, or upload staging over PostgreSQL).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.inner.data_dir
    }

    /// Who reads which file format (poppler or the built-in PDF parser, the extraction
    /// helper), the memory limit of each extraction process, and the time limit.
    pub fn extraction(&self) -> (&crate::extract::ExtractSettings, std::time::Duration) {
        (&self.inner.extract, self.inner.extract_timeout)
    }

    /// Saves the vector index if it changed. Called periodically and on close.
    pub async fn save_vectors(&self) -> Result<bool> {
        self.inner.ann.save().await
    }

    /// Starts the background workers, and the periodic save of the vector index, on
    /// `tracker`; they stop when `shutdown` fires.
    pub fn spawn_workers(&self, tracker: &TaskTracker, shutdown: &CancellationToken) {
        self.inner.jobs.runner.spawn_workers(tracker, shutdown);
        let m = &self.inner.memories;
        m.access
            .spawn(self.inner.store.clone(), m.sets.clone(), tracker, shutdown);
        self.inner.sessions.spawn_sweeper(tracker, shutdown);
        self.inner
            .budgets
            .spawn_sweeper(tracker, shutdown, std::time::Duration::from_secs(30));
        self.inner.budgets.spawn_ledger(tracker, shutdown);
        self.spawn_listener(tracker, shutdown);
        // Slow statements are explained off the request path, a few seconds after they ran.
        let admin = self.admin().clone();
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = tick.tick() => { admin.explain_slow_statements().await; }
                    () = stop.cancelled() => return,
                }
            }
        });
        let this = self.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = this.save_vectors().await {
                            tracing::warn!(error = %e, "could not save the vector index");
                        }
                        // Ingestion batches of varying shapes leave freed C-heap pages behind.
                        crate::heap::release_free_memory();
                    }
                    () = shutdown.cancelled() => return,
                }
            }
        });
    }

    /// Forwards what other processes sharing the store announce: a queued job wakes a
    /// worker here, a job change reaches this process's event subscribers (SSE).
    fn spawn_listener(&self, tracker: &TaskTracker, shutdown: &CancellationToken) {
        use futures_util::StreamExt;
        let this = self.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let mut changes = match this.inner.store.listen().await {
                Ok(Some(s)) => s,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for other instances' job changes; \
                        relying on polling");
                    return;
                }
            };
            loop {
                let change = tokio::select! {
                    c = changes.next() => c,
                    () = shutdown.cancelled() => return,
                };
                match change {
                    None => return,
                    Some(StoreChange::JobQueued) => this.inner.jobs.runner.wake.notify_one(),
                    Some(StoreChange::JobChanged(id)) => {
                        if this.inner.jobs.events.receiver_count() == 0 {
                            continue;
                        }
                        if let Ok(Some((owner, job))) = this.inner.store.get_job_any_owner(id).await
                        {
                            let _ = this.inner.jobs.events.send(JobEvent { owner, job });
                        }
                    }
                }
            }
        });
    }

    /// Waits for writes in flight, saves the vector index and closes the store's pool.
    pub async fn close(&self) {
        self.inner.writes.finish().await;
        self.inner.memories.flush_access().await;
        match self.save_vectors().await {
            Ok(true) => info!(vectors = self.inner.ann.len(), "vector index saved"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not save the vector index; it will be rebuilt at the next start")
            }
        }
        self.inner.store.close().await;
        self.inner.policy.cache().close().await;
    }
}

/// Writes that run to completion even if their caller goes away (an HTTP client
/// disconnecting drops its handler's future): a transaction abandoned half-way would hold
/// SQLite's write lock until the pool noticed, and a blob could be left without its row.
/// Every such write is tracked, and [`Engine::close`] waits for them before it closes the
/// pool, so a write past the server's grace period still finishes.
#[derive(Default)]
struct Writes(TaskTracker);

impl Writes {
    async fn detach<T: Send + 'static>(
        &self,
        write: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        self.0
            .spawn(write)
            .await
            .map_err(|e| EngineError::Internal(format!("write task failed: {e}")))?
    }

    /// Runs a write nobody waits for (it still finishes before [`Engine::close`] closes the
    /// pool).
    fn spawn(&self, write: impl std::future::Future<Output = ()> + Send + 'static) {
        self.0.spawn(write);
    }

    /// Waits for every write in flight.
    async fn finish(&self) {
        self.0.close();
        self.0.wait().await;
    }
}

/// One page of a keyset-paginated listing, newest first: validates the page size, decodes
/// the cursor (refused when it was issued for other filters: `fingerprint`), fetches one
/// row more than the page to learn whether another follows, and encodes the next cursor
/// from the last row's id.
async fn paged<T, Id, Fut>(
    limit: Option<u32>,
    cursor: Option<&str>,
    fingerprint: &[&str],
    fetch: impl FnOnce(Option<Id>, u32) -> Fut,
    id: impl Fn(&T) -> String,
) -> Result<Page<T>>
where
    Id: std::str::FromStr,
    Fut: std::future::Future<Output = Result<Vec<T>>>,
{
    let limit = crate::validate::limit(limit, crate::DEFAULT_PAGE, crate::MAX_PAGE)?;
    let fp = cursor::fingerprint(fingerprint);
    let before = cursor
        .map(|c| {
            cursor::decode(c, &fp)?.parse::<Id>().map_err(|_| {
                EngineError::invalid("cursor", "is not a cursor issued by this server")
            })
        })
        .transpose()?;
    let mut items = fetch(before, limit + 1).await?;
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_cursor = if more {
        items.last().map(|last| cursor::encode(&id(last), &fp))
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}
