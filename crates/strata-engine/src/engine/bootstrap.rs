//! The one place that wires the engine: picks the backend from the database URL, loads (or
//! reaches) the embedding model, opens or rebuilds the vector index, builds the cache, its
//! policy and the job runner with its kinds, and hands each service only the handles it
//! uses.

use std::sync::Arc;

use tokio::sync::broadcast;
use tracing::info;

use super::{
    AdminService, BudgetService, ConversationService, DocumentService, Engine, EngineSettings,
    Inner, JobService, MemoryService, ModelLoad, SearchService, SessionService, Writes,
};
use crate::ann::Ann;
use crate::blobs::BlobStore;
use crate::chunk::Tokenizer;
use crate::error::{EngineError, Result};
use crate::jobs::Runner;
use crate::lexical::Lexical;
use crate::policy::{CachePolicy, Scopes};
use crate::store::Store;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::vectors::{AnnSettings, InProcessIndex, LocalIndex, VectorIndex};
use strata_embed::{Embedder, LocalEmbedder, ModelFiles, TextTokenizer};

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
        let (blobs, ann, lexical) = match postgres {
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
                    Ann::Postgres(Box::new(pg.clone())),
                    Lexical::Postgres(Box::new(pg)),
                )
            }
            None => {
                let (store_ref, embed, ann) = (store.as_ref(), embedder.as_ref(), settings.ann);
                let index: Arc<dyn InProcessIndex> = match settings.ann.local {
                    LocalIndex::Usearch => {
                        let path = settings.data_dir.join("vectors.usearch");
                        Arc::new(open_vectors::<VectorIndex>(store_ref, &path, embed, ann).await?)
                    }
                    #[cfg(feature = "qdrant")]
                    LocalIndex::Qdrant => {
                        let path = settings.data_dir.join("vectors.qdrant");
                        Arc::new(
                            open_vectors::<crate::qdrant::QdrantIndex>(
                                store_ref, &path, embed, ann,
                            )
                            .await?,
                        )
                    }
                    #[cfg(not(feature = "qdrant"))]
                    LocalIndex::Qdrant => {
                        return Err(EngineError::Config(
                            "this strata was built without the `qdrant` feature: the qdrant \
                             vector index is not available"
                                .into(),
                        ));
                    }
                };
                let ann = Ann::Local(index);
                (
                    BlobStore::open(blob_dir).await?,
                    ann,
                    Lexical::build(store.as_ref(), embedder.model()).await?,
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
        let (ef, index) = match ann {
            Ann::Postgres(_) => (settings.postgres.ef_search as usize, "pgvector"),
            _ => (settings.ann.expansion_search, settings.ann.local.name()),
        };
        let search_fingerprint = format!(
            "{}/{}/{index}/ef{ef}/exact{}",
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
                settings.extract.clone(),
            ),
            tokenizer,
            embedder: embedder.clone(),
            vectors: ann.clone(),
            lexical: lexical.clone(),
            policy: policy.clone(),
            settings: settings.jobs.clone(),
        };
        let completer: super::summaries::CompleterSlot = Arc::default();
        let runner = Runner::new(
            store.clone(),
            settings.jobs.clone(),
            events.clone(),
            policy.clone(),
            vec![
                Arc::new(ingest),
                Arc::new(super::summaries::SummariseDocument {
                    store: store.clone(),
                    policy: policy.clone(),
                    completer: completer.clone(),
                }),
            ],
        );
        // The model's load and an index rebuild free much of what they allocated.
        crate::heap::release_free_memory();
        info!(backend = store.backend(), data_dir = %settings.data_dir.display(),
              model = embedder.model(), vectors = ann.len(), lexical = lexical.len(), "engine open");
        let writes = Arc::new(Writes::default());
        let wake = runner.wake.clone();
        let sessions = SessionService {
            store: store.clone(),
            policy: policy.clone(),
            settings: settings.sessions,
            events: broadcast::channel(256).0,
            writes: writes.clone(),
        };
        let search = SearchService {
            store: store.clone(),
            ann: ann.clone(),
            lexical: lexical.clone(),
            embedder,
            policy: policy.clone(),
            exact_limit: settings.ann.exact_limit,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                documents: DocumentService {
                    store: store.clone(),
                    blobs,
                    policy: policy.clone(),
                    ann: ann.clone(),
                    lexical: lexical.clone(),
                    wake: wake.clone(),
                    writes: writes.clone(),
                    max_upload_bytes: settings.max_upload_bytes,
                    max_attempts: settings.jobs.max_attempts,
                },
                search: search.clone(),
                memories: MemoryService {
                    store: store.clone(),
                    retrieval: search,
                    policy: policy.clone(),
                    sets: Arc::new(crate::memory::working::WorkingSets::new(
                        settings.memory.working_set_bytes,
                    )),
                    access: Default::default(),
                    queries: Default::default(),
                    loading: Default::default(),
                    writes: writes.clone(),
                    settings: settings.memory.clone(),
                    sessions: sessions.clone(),
                },
                jobs: JobService {
                    store: store.clone(),
                    runner,
                    events,
                },
                sessions,
                budgets: BudgetService {
                    store: store.clone(),
                    policy: policy.clone(),
                    writes: writes.clone(),
                    lease: super::budgets::DEFAULT_LEASE,
                    ledger: Arc::default(),
                    totals: Arc::default(),
                },
                summaries: super::summaries::SummaryService {
                    store: store.clone(),
                    completer,
                    wake: wake.clone(),
                    max_attempts: settings.jobs.max_attempts,
                },
                conversations: ConversationService {
                    store: store.clone(),
                    policy: policy.clone(),
                },
                admin: AdminService {
                    store: store.clone(),
                    slow_log: settings.slow_log.clone(),
                    writes: writes.clone(),
                    lexical: lexical.clone(),
                },
                policy,
                ann,
                store,
                writes,
                data_dir: settings.data_dir.clone(),
                extract: settings.extract.clone(),
                extract_timeout: settings.jobs.extract_timeout,
                _lock: lock,
            }),
        })
    }
}

/// Chunks are measured in the embedding model's own tokens, so each fits its context.
struct ModelTokens(Arc<TextTokenizer>);

impl Tokenizer for ModelTokens {
    fn token_spans(&self, text: &str) -> Vec<std::ops::Range<usize>> {
        self.0.token_spans(text)
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
    let load = match settings.load_model {
        ModelLoad::AtStart => LocalEmbedder::load,
        ModelLoad::OnFirstUse => LocalEmbedder::load_on_first_use,
    };
    let local = load(
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
async fn open_vectors<I: InProcessIndex>(
    store: &dyn Store,
    path: &std::path::Path,
    embedder: &dyn Embedder,
    ann: AnnSettings,
) -> Result<I> {
    const PAGE: u32 = 5000;
    let model = embedder.model().to_owned();
    let dims = embedder.dims();
    let fingerprint = store.embedded_fingerprint(&model).await?;
    let loaded = {
        let (path, model) = (path.to_owned(), model.clone());
        tokio::task::spawn_blocking(move || I::load(&path, &model, dims, ann, fingerprint))
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
    let index = Arc::new(I::new(path, &model, dims, ann)?);
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
