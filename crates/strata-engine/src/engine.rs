//! [`Engine`]: the domain's front door. Validates input, enforces tenancy, coordinates the
//! store, the blob directory and the job runner. Built once, cheap to clone, never mutated.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::ann::Ann;
use crate::blobs::{BlobStore, BlobWriter, StagedBlob};
use crate::chunk::Tokenizer;
use crate::cursor;
use crate::error::{EngineError, Result};
use crate::extract::sniff;
use crate::ids::{DocumentId, IdKind, JobId, TenantId};
use crate::jobs::{JobEvent, JobSettings, Runner, Step};
use crate::model::{
    Chunk, Document, DocumentFilter, DocumentPatch, DocumentStatus, Job, JobFilter, JobStatus,
    NewDocument, Page, TagCount,
};
use crate::policy::{CachePolicy, Changed, Scopes};
use crate::search::{SearchRequest, SearchResults};
use crate::store::postgres::{PostgresOptions, PostgresStore};
use crate::store::sqlite::{SqliteOptions, SqliteStore};
use crate::store::{InsertOutcome, Store, StoreChange, TableStats};
use crate::validate;
use crate::vectors::{AnnSettings, VectorIndex};
use strata_embed::{BatchSettings, Embedder, LocalEmbedder, ModelFiles, TextTokenizer};

/// Where `scripts/fetch-model` puts the model by default.
pub const DEFAULT_MODEL_DIR: &str = "/var/tmp/strata-models/all-MiniLM-L6-v2";

/// Most texts a request may embed on the model's interactive queue (ahead of ingestion);
/// larger requests use the bulk queue (see [`Engine::embed_texts`]).
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
    /// The slowest recent statements, newest first.
    pub slow_statements: Vec<crate::slowlog::SlowStatement>,
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
        }
    }
}

/// Chunks are measured in the embedding model's own tokens, so each fits its context.
struct ModelTokens(Arc<TextTokenizer>);

impl Tokenizer for ModelTokens {
    fn token_spans(&self, text: &str) -> Vec<std::ops::Range<usize>> {
        self.0.token_spans(text)
    }
}

/// Caller-supplied fields of an upload, before validation.
#[derive(Debug, Clone, Default)]
pub struct UploadMeta {
    /// Title; defaults to the file name.
    pub title: Option<String>,
    /// Original file name.
    pub filename: Option<String>,
    /// The media type the client declared, if any.
    pub declared_type: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Metadata object.
    pub metadata: Option<serde_json::Value>,
}

/// What an upload did.
#[derive(Debug, Clone)]
pub enum IngestOutcome {
    /// New document; its job is queued.
    Created(Document),
    /// Same content already stored for this owner; nothing new was created.
    Duplicate(Document),
}

/// Listing parameters for documents.
#[derive(Debug, Clone, Default)]
pub struct ListDocuments {
    /// Page size (default 50, max 500).
    pub limit: Option<u32>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// Row filter.
    pub filter: DocumentFilter,
}

/// Listing parameters for jobs.
#[derive(Debug, Clone, Default)]
pub struct ListJobs {
    /// Page size (default 50, max 500).
    pub limit: Option<u32>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// Row filter.
    pub filter: JobFilter,
}

/// The engine. Clone freely.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    blobs: BlobStore,
    runner: Runner,
    events: broadcast::Sender<JobEvent>,
    settings: EngineSettings,
    embedder: Arc<dyn Embedder>,
    ann: Ann,
    policy: CachePolicy,
    writes: Writes,
    /// Held for the engine's life: one process per data directory.
    _lock: std::fs::File,
}

impl Engine {
    /// Opens the store (running migrations) and the blob directory.
    pub async fn open(settings: EngineSettings) -> Result<Self> {
        tokio::fs::create_dir_all(&settings.data_dir)
            .await
            .map_err(|e| {
                EngineError::Config(format!(
                    "cannot create data directory {}: {e}",
                    settings.data_dir.display()
                ))
            })?;
        let lock_path = settings.data_dir.join("strata.lock");
        let lock = std::fs::File::create(&lock_path)?;
        if lock.try_lock().is_err() {
            return Err(EngineError::Config(format!(
                "the data directory {} is in use by another strata process; stop it, talk to \
                 it over HTTP instead, or (over PostgreSQL, where it holds only upload \
                 staging) give each process its own --data-dir",
                settings.data_dir.display()
            )));
        }
        let mut postgres = None;
        let store: Arc<dyn Store> = match settings.database_url.as_ref().map(|u| u.expose()) {
            None => Arc::new(
                SqliteStore::open(&settings.data_dir.join("strata.db"), &settings.sqlite).await?,
            ),
            Some(url) if url.starts_with("sqlite:") => {
                Arc::new(SqliteStore::open_url(url, &settings.sqlite).await?)
            }
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let pg = PostgresStore::connect(url, &settings.postgres).await?;
                postgres = Some(pg.clone());
                Arc::new(pg)
            }
            Some(url) => {
                let scheme = url.split(':').next().unwrap_or("");
                return Err(EngineError::Config(format!(
                    "database URL scheme {scheme:?} is not supported \
                     (supported: sqlite:, postgres://)"
                )));
            }
        };
        let (embedder, tokenizer) = load_embedder(&settings).await?;
        let blob_dir = settings.data_dir.join("blobs");
        let (blobs, ann) = match postgres {
            // Shared state lives in the database: files in `blobs`, vectors in pgvector;
            // the data directory holds only this process's upload staging.
            Some(pg) => {
                pg.ensure_vector_index(
                    embedder.model(),
                    embedder.dims(),
                    settings.ann.connectivity,
                    settings.ann.expansion_add,
                )
                .await?;
                let shared: Arc<dyn crate::blobs::SharedBlobs> = Arc::new(pg.clone());
                (
                    BlobStore::open_shared(blob_dir, shared).await?,
                    Ann::Postgres(Box::new(pg)),
                )
            }
            None => {
                let index = open_vectors(
                    store.as_ref(),
                    &settings.data_dir.join("vectors.usearch"),
                    embedder.as_ref(),
                    settings.ann,
                )
                .await?;
                (
                    BlobStore::open(blob_dir).await?,
                    Ann::Local(Arc::new(index)),
                )
            }
        };
        let cache = strata_cache::Cache::new(settings.cache.clone())
            .map_err(|e| EngineError::Config(e.to_string()))?;
        if cache.has_remote() {
            if cache.ready(std::time::Duration::from_secs(3)).await {
                info!("redis connected: L2 cache and cross-instance invalidation on");
            } else {
                tracing::warn!(
                    "redis not reachable yet: serving without the shared cache until it answers"
                );
            }
        }
        let scopes = Scopes::new(&store.store_id().await?);
        let ef = match ann {
            Ann::Local(_) => settings.ann.expansion_search,
            Ann::Postgres(_) => settings.postgres.ef_search as usize,
        };
        let search_fingerprint = format!(
            "{}/{}/ef{ef}/exact{}",
            embedder.model(),
            store.backend(),
            settings.ann.exact_limit
        );
        let policy = CachePolicy::new(cache, scopes, search_fingerprint);
        let (events, _) = broadcast::channel(1024);
        let ingest = crate::jobs::ingest::IngestDocument {
            store: store.clone(),
            blobs: blobs.clone(),
            sandbox: crate::jobs::ingest::Sandbox::new(
                settings.jobs.workers.max(1),
                settings.jobs.extract_timeout,
            ),
            tokenizer,
            embedder: embedder.clone(),
            vectors: ann.clone(),
            policy: policy.clone(),
            settings: settings.jobs.clone(),
        };
        let runner = Runner::new(
            store.clone(),
            settings.jobs.clone(),
            events.clone(),
            policy.clone(),
            vec![Arc::new(ingest)],
        );
        // The model's load and an index rebuild free much of what they allocated.
        crate::heap::release_free_memory();
        info!(backend = store.backend(), data_dir = %settings.data_dir.display(),
              model = embedder.model(), vectors = ann.len(), "engine open");
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                blobs,
                runner,
                events,
                settings,
                embedder,
                ann,
                policy,
                writes: Writes::default(),
                _lock: lock,
            }),
        })
    }

    /// Semantic search over the owner's chunks.
    pub async fn search(&self, owner: &TenantId, req: SearchRequest) -> Result<SearchResults> {
        let plan = req.validate()?;
        let query = self.embed_query(&plan.query).await?;
        crate::search::run(
            self.inner.store.as_ref(),
            &self.inner.ann,
            self.inner.settings.ann.exact_limit,
            self.inner.embedder.model(),
            owner,
            &plan,
            &query,
        )
        .await
    }

    /// What every cached read is keyed by and every write invalidates, with the cache.
    pub fn cache_policy(&self) -> &CachePolicy {
        &self.inner.policy
    }

    /// A query's embedding, from the cache when this model embedded this exact text before.
    pub async fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        let read = CachePolicy::query_embedding(self.inner.embedder.model(), text);
        let lookup = self
            .inner
            .policy
            .cache()
            .get_or_compute(read.kind, &read.scope, &read.material, || async {
                let v = self.embed_texts(vec![text.to_owned()]).await?.remove(0);
                Ok::<_, EngineError>(bytes::Bytes::from(crate::store::vector_to_bytes(&v)))
            })
            .await?;
        crate::store::vector_from_bytes(&lookup.value)
            .ok_or_else(|| EngineError::Internal("corrupt cached embedding".into()))
    }

    /// Embeds texts with the configured model (one unit vector per text). A request of more
    /// than [`INTERACTIVE_TEXTS`] texts is throughput work (an `/v1/embeddings` batch of up
    /// to 2,048): it waits behind queries on the model's bulk queue, as ingestion does, so a
    /// large batch never delays the query embedding of a search.
    pub async fn embed_texts(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        let embedder = &self.inner.embedder;
        let result = if texts.len() > INTERACTIVE_TEXTS {
            embedder.embed_bulk(texts).await
        } else {
            embedder.embed(texts).await
        };
        result.map_err(|e| match e {
            strata_embed::EmbedError::Overloaded => {
                EngineError::Unavailable("the embedding queue is full".into())
            }
            strata_embed::EmbedError::Closed => EngineError::Unavailable("shutting down".into()),
            strata_embed::EmbedError::Unavailable(why) => EngineError::Unavailable(why),
            other => EngineError::Internal(other.to_string()),
        })
    }

    /// Tokens the model sees of each text (after truncation), for usage accounting.
    pub fn count_tokens(&self, texts: &[String]) -> Result<Vec<usize>> {
        let Some(t) = self.inner.embedder.tokenizer() else {
            return Ok(texts.iter().map(|s| s.split_whitespace().count()).collect());
        };
        t.count_tokens(texts)
            .map_err(|e| EngineError::Internal(e.to_string()))
    }

    /// The embedding model's id and dimensions.
    pub fn embedding_model(&self) -> (&str, usize) {
        (self.inner.embedder.model(), self.inner.embedder.dims())
    }

    /// Saves the vector index if it changed. Called periodically and on close.
    pub async fn save_vectors(&self) -> Result<bool> {
        self.inner.ann.save().await
    }

    /// The connection pool's state, the tables with their sizes and index use, and the
    /// slowest recent statements.
    pub async fn database_stats(&self) -> Result<DatabaseStats> {
        let store = &self.inner.store;
        Ok(DatabaseStats {
            backend: store.backend(),
            pool: store.pool_stats(),
            tables: store.table_stats().await?,
            slow_statements: self.inner.settings.slow_log.recent(),
        })
    }

    /// Refreshes planner statistics and compacts what needs it; the statements run.
    pub async fn optimize_database(&self) -> Result<Vec<String>> {
        let this = self.clone();
        self.inner
            .writes
            .detach(async move { this.inner.store.optimize().await })
            .await
    }

    /// The embedding model's id and, when it runs in this process, its passes and busy time.
    pub fn model_stats(&self) -> (&str, Option<strata_embed::ModelStats>) {
        (self.inner.embedder.model(), self.inner.embedder.stats())
    }

    /// The database connection pool's state.
    pub fn pool_stats(&self) -> crate::store::meter::PoolStats {
        self.inner.store.pool_stats()
    }

    /// The storage backend's name.
    pub fn backend(&self) -> &'static str {
        self.inner.store.backend()
    }

    /// The upload size limit in bytes.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.inner.settings.data_dir
    }

    /// The largest upload accepted, in bytes.
    pub fn max_upload_bytes(&self) -> u64 {
        self.inner.settings.max_upload_bytes
    }

    /// Starts streaming an upload to disk.
    pub async fn begin_upload(&self) -> Result<BlobWriter> {
        self.inner
            .blobs
            .writer(self.inner.settings.max_upload_bytes)
            .await
    }

    /// Stores an upload as a document of `owner` and queues its ingestion, unless the owner
    /// already has the same content. The staged file is consumed either way.
    pub async fn ingest(
        &self,
        owner: &TenantId,
        staged: StagedBlob,
        meta: UploadMeta,
    ) -> Result<IngestOutcome> {
        let (this, owner) = (self.clone(), owner.clone());
        self.inner
            .writes
            .detach(async move { this.ingest_now(&owner, staged, meta).await })
            .await
    }

    async fn ingest_now(
        &self,
        owner: &TenantId,
        staged: StagedBlob,
        meta: UploadMeta,
    ) -> Result<IngestOutcome> {
        let prepared = self.prepare(owner, &staged, meta);
        let doc = match prepared {
            Ok(d) => d,
            Err(e) => {
                staged.discard().await;
                return Err(e);
            }
        };
        let blobs = &self.inner.blobs;
        let _guard = blobs.lock(&doc.sha256).await?;
        if let Some(existing) = self.inner.store.find_by_sha256(owner, &doc.sha256).await? {
            staged.discard().await;
            return Ok(IngestOutcome::Duplicate(existing));
        }
        blobs.commit(staged).await?;
        let id = DocumentId::new();
        let outcome = self
            .inner
            .store
            .insert_document(
                doc,
                id,
                &crate::jobs::ingest::new_job(
                    JobId::new(),
                    owner,
                    id,
                    self.inner.settings.jobs.max_attempts,
                ),
            )
            .await?;
        Ok(match outcome {
            InsertOutcome::Created(d) => {
                self.inner.policy.changed(owner, Changed::Everything).await;
                self.inner.runner.wake.notify_one();
                if let Err(e) = self.inner.store.announce(StoreChange::JobQueued).await {
                    tracing::debug!(error = %e, "could not announce the queued job");
                }
                IngestOutcome::Created(d)
            }
            InsertOutcome::Duplicate(d) => IngestOutcome::Duplicate(d),
        })
    }

    /// Stores `text` as a document (the JSON upload path).
    pub async fn ingest_text(
        &self,
        owner: &TenantId,
        text: &str,
        meta: UploadMeta,
    ) -> Result<IngestOutcome> {
        if text.trim().is_empty() {
            return Err(EngineError::invalid("text", "must not be empty"));
        }
        let mut w = self.begin_upload().await?;
        w.write(text.as_bytes()).await?;
        let staged = w.finish().await?;
        self.ingest(owner, staged, meta).await
    }

    fn prepare(
        &self,
        owner: &TenantId,
        staged: &StagedBlob,
        meta: UploadMeta,
    ) -> Result<NewDocument> {
        if staged.len == 0 {
            return Err(EngineError::invalid("file", "is empty"));
        }
        let media = sniff(
            meta.declared_type.as_deref(),
            meta.filename.as_deref(),
            &staged.head,
        )
        .map_err(EngineError::UnsupportedMediaType)?;
        let filename = meta
            .filename
            .map(|f| f.rsplit(['/', '\\']).next().unwrap_or_default().to_owned())
            .filter(|f| !f.is_empty());
        let title = match (&meta.title, &filename) {
            (Some(t), _) => validate::title(t)?,
            (None, Some(f)) => validate::title(f)?,
            (None, None) => format!("untitled-{}", &staged.sha256[..8]),
        };
        Ok(NewDocument {
            owner: owner.clone(),
            title,
            filename,
            media_type: media,
            byte_size: staged.len,
            sha256: staged.sha256.clone(),
            tags: validate::tags(&meta.tags)?,
            metadata: match meta.metadata {
                Some(m) => validate::metadata(m)?,
                None => serde_json::json!({}),
            },
        })
    }

    /// One document of the owner's.
    pub async fn get_document(&self, owner: &TenantId, id: DocumentId) -> Result<Document> {
        self.inner
            .store
            .get_document(owner, id)
            .await?
            .ok_or_else(|| EngineError::not_found(IdKind::Document, id))
    }

    /// A page of the owner's documents, newest first.
    pub async fn list_documents(
        &self,
        owner: &TenantId,
        q: ListDocuments,
    ) -> Result<Page<Document>> {
        let limit = validate::limit(q.limit, DEFAULT_PAGE, MAX_PAGE)?;
        let fp = cursor::fingerprint(&[
            "documents",
            q.filter.tag.as_deref().unwrap_or(""),
            q.filter.status.map(DocumentStatus::as_str).unwrap_or(""),
        ]);
        let before = q
            .cursor
            .as_deref()
            .map(|c| parse_cursor_id::<DocumentId>(c, &fp))
            .transpose()?;
        let mut items = self
            .inner
            .store
            .list_documents(owner, &q.filter, before, limit + 1)
            .await?;
        Ok(page(&mut items, limit, &fp, |d| d.id.to_string()))
    }

    /// Applies a patch; at least one field must be present.
    pub async fn update_document(
        &self,
        owner: &TenantId,
        id: DocumentId,
        patch: DocumentPatch,
    ) -> Result<Document> {
        if patch.title.is_none() && patch.tags.is_none() && patch.metadata.is_none() {
            return Err(EngineError::invalid(
                "body",
                "give at least one of title, tags, metadata",
            ));
        }
        let patch = DocumentPatch {
            title: patch.title.as_deref().map(validate::title).transpose()?,
            tags: patch.tags.as_deref().map(validate::tags).transpose()?,
            metadata: patch.metadata.map(validate::metadata).transpose()?,
        };
        let (this, owner) = (self.clone(), owner.clone());
        self.inner
            .writes
            .detach(async move {
                let updated = this.inner.store.update_document(&owner, id, &patch).await?;
                if updated.is_some() {
                    // Titles appear in search hits; tags and metadata do not.
                    let what = if patch.title.is_some() {
                        Changed::Documents
                    } else {
                        Changed::Catalog
                    };
                    this.inner.policy.changed(&owner, what).await;
                }
                Ok(updated)
            })
            .await?
            .ok_or_else(|| EngineError::not_found(IdKind::Document, id))
    }

    /// Deletes a document, its chunks, its unfinished jobs and (when no other document
    /// shares it) its original file.
    pub async fn delete_document(&self, owner: &TenantId, id: DocumentId) -> Result<()> {
        let (this, owner) = (self.clone(), owner.clone());
        self.inner
            .writes
            .detach(async move { this.delete_now(&owner, id).await })
            .await
    }

    async fn delete_now(&self, owner: &TenantId, id: DocumentId) -> Result<()> {
        let doc = self.get_document(owner, id).await?;
        let _guard = self.inner.blobs.lock(&doc.sha256).await?;
        let deleted = self
            .inner
            .store
            .delete_document(owner, id)
            .await?
            .ok_or_else(|| EngineError::not_found(IdKind::Document, id))?;
        self.inner.ann.remove(deleted.chunk_ids).await?;
        self.inner.policy.changed(owner, Changed::Everything).await;
        if self.inner.store.count_sha256_refs(&deleted.sha256).await? == 0 {
            self.inner.blobs.remove(&deleted.sha256).await?;
        }
        Ok(())
    }

    /// The document and its original file, opened for streaming.
    pub async fn open_file(
        &self,
        owner: &TenantId,
        id: DocumentId,
    ) -> Result<(Document, crate::blobs::BlobStream)> {
        let doc = self.get_document(owner, id).await?;
        let file = self.inner.blobs.open_blob(&doc.sha256).await?;
        Ok((doc, file))
    }

    /// The owner's tags with counts.
    pub async fn tag_counts(&self, owner: &TenantId) -> Result<Vec<TagCount>> {
        self.inner.store.tag_counts(owner).await
    }

    /// Chunks of one of the owner's documents.
    pub async fn list_chunks(
        &self,
        owner: &TenantId,
        id: DocumentId,
        from: u32,
        limit: Option<u32>,
    ) -> Result<Vec<Chunk>> {
        let limit = validate::limit(limit, DEFAULT_PAGE, MAX_PAGE)?;
        self.get_document(owner, id).await?;
        self.inner.store.list_chunks(owner, id, from, limit).await
    }

    /// One job of the owner's.
    pub async fn get_job(&self, owner: &TenantId, id: JobId) -> Result<Job> {
        self.inner
            .store
            .get_job(owner, id)
            .await?
            .ok_or_else(|| EngineError::not_found(IdKind::Job, id))
    }

    /// A page of the owner's jobs, newest first.
    pub async fn list_jobs(&self, owner: &TenantId, q: ListJobs) -> Result<Page<Job>> {
        let limit = validate::limit(q.limit, DEFAULT_PAGE, MAX_PAGE)?;
        let fp =
            cursor::fingerprint(&["jobs", q.filter.status.map(JobStatus::as_str).unwrap_or("")]);
        let before = q
            .cursor
            .as_deref()
            .map(|c| parse_cursor_id::<JobId>(c, &fp))
            .transpose()?;
        let mut items = self
            .inner
            .store
            .list_jobs(owner, &q.filter, before, limit + 1)
            .await?;
        Ok(page(&mut items, limit, &fp, |j| j.id.to_string()))
    }

    /// Live job changes of every tenant; filter by owner before showing them.
    pub fn subscribe_jobs(&self) -> broadcast::Receiver<JobEvent> {
        self.inner.events.subscribe()
    }

    /// Starts the background workers, and the periodic save of the vector index, on
    /// `tracker`; they stop when `shutdown` fires.
    pub fn spawn_workers(&self, tracker: &TaskTracker, shutdown: &CancellationToken) {
        self.inner.runner.spawn_workers(tracker, shutdown);
        self.spawn_listener(tracker, shutdown);
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
                    Some(StoreChange::JobQueued) => this.inner.runner.wake.notify_one(),
                    Some(StoreChange::JobChanged(id)) => {
                        if this.inner.events.receiver_count() == 0 {
                            continue;
                        }
                        if let Ok(Some((owner, job))) = this.inner.store.get_job_any_owner(id).await
                        {
                            let _ = this.inner.events.send(JobEvent { owner, job });
                        }
                    }
                }
            }
        });
    }

    /// Runs due jobs in the calling task until none is left (CLI ingestion, tests).
    /// Returns how many attempts ran.
    pub async fn drain_jobs(&self) -> Result<usize> {
        let token = CancellationToken::new();
        let mut ran = 0;
        while self.inner.runner.run_one(&token).await? != Step::Idle {
            ran += 1;
        }
        Ok(ran)
    }

    /// The job runner, for tests that need single steps.
    pub fn runner(&self) -> &Runner {
        &self.inner.runner
    }

    /// Checks the store answers.
    pub async fn ping(&self) -> Result<()> {
        self.inner.store.ping().await
    }

    /// Waits for writes in flight, saves the vector index and closes the store's pool.
    pub async fn close(&self) {
        self.inner.writes.finish().await;
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

/// The configured embedder, and the tokenizer chunks are measured in (the model's own when
/// it has one, words otherwise).
async fn load_embedder(
    settings: &EngineSettings,
) -> Result<(Arc<dyn Embedder>, Arc<dyn Tokenizer>)> {
    if let Some(remote) = &settings.remote_embedder {
        let e = strata_embed::HttpEmbedder::connect(remote.clone())
            .await
            .map_err(|e| {
                EngineError::Config(format!(
                    "cannot reach the embedding endpoint {}: {e}",
                    remote.url
                ))
            })?;
        return Ok((Arc::new(e), Arc::new(crate::chunk::WordTokenizer)));
    }
    let files = ModelFiles::at(&settings.model_dir);
    let local = LocalEmbedder::load(
        &files,
        settings.local_runtime,
        settings.embed_threads,
        settings.batch,
    )
    .map_err(|e| EngineError::Config(format!("cannot load the embedding model: {e}")))?;
    let tokenizer: Arc<dyn Tokenizer> = match local.tokenizer() {
        Some(t) => Arc::new(ModelTokens(t)),
        None => Arc::new(crate::chunk::WordTokenizer),
    };
    Ok((Arc::new(local), tokenizer))
}

/// Loads the persisted index when it matches the database, else rebuilds it from the stored
/// vectors.
async fn open_vectors(
    store: &dyn Store,
    path: &std::path::Path,
    embedder: &dyn Embedder,
    ann: AnnSettings,
) -> Result<VectorIndex> {
    const PAGE: u32 = 5000;
    let model = embedder.model().to_owned();
    let dims = embedder.dims();
    let fingerprint = store.embedded_fingerprint(&model).await?;
    let loaded = {
        let (path, model) = (path.to_owned(), model.clone());
        tokio::task::spawn_blocking(move || {
            VectorIndex::load(&path, &model, dims, ann, fingerprint)
        })
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))??
    };
    if let Some(index) = loaded {
        let mut after = 0;
        loop {
            let rows = store.scan_owners(&model, after, PAGE).await?;
            let Some(last) = rows.last() else { break };
            after = last.0;
            index.register_owners(&rows);
        }
        return Ok(index);
    }
    if fingerprint.0 > 0 {
        info!(
            vectors = fingerprint.0,
            "vector index missing or stale; rebuilding it from the stored vectors"
        );
    }
    let index = Arc::new(VectorIndex::new(path, &model, dims, ann)?);
    let mut after = 0;
    loop {
        let rows = store.scan_vectors(&model, after, PAGE).await?;
        let Some(last) = rows.last() else { break };
        after = last.0;
        let idx = index.clone();
        tokio::task::spawn_blocking(move || idx.add(&rows))
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))??;
    }
    index.save()?;
    Arc::try_unwrap(index).map_err(|_| EngineError::Internal("vector index still shared".into()))
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

    /// Waits for every write in flight.
    async fn finish(&self) {
        self.0.close();
        self.0.wait().await;
    }
}

fn parse_cursor_id<T: std::str::FromStr>(cursor: &str, fp: &str) -> Result<T> {
    cursor::decode(cursor, fp)?
        .parse()
        .map_err(|_| EngineError::invalid("cursor", "is not a cursor issued by this server"))
}

fn page<T>(items: &mut Vec<T>, limit: u32, fp: &str, id: impl Fn(&T) -> String) -> Page<T> {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_cursor = if more {
        items.last().map(|last| cursor::encode(&id(last), fp))
    } else {
        None
    };
    Page {
        items: std::mem::take(items),
        next_cursor,
    }
}
