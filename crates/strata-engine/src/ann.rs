//! Where nearest-neighbour search runs, chosen by the backend: an in-process index on the
//! embedded default (usearch, or a qdrant-edge shard with `--vector-index qdrant`), or
//! pgvector's HNSW index inside PostgreSQL, which every process over the database shares and
//! keeps current by writing the rows themselves.
//!
//! Every touch of the in-process index (its `RwLock`, HNSW graph walks, inserts, saves) and
//! every exact scoring of candidates runs on the blocking pool, never on an async worker: an
//! insert waits for a save's read lock, and a search waits behind a queued insert.
//!
//! Must not import: HTTP types, the cache.

use std::sync::Arc;

use crate::error::{EngineError, Result};
use crate::ids::TenantId;
use crate::store::postgres::PostgresStore;
use crate::store::{ChunkFilter, Store};
use crate::vectors::{InProcessIndex, exact_top_k};

/// How many candidates the in-process index proposes for `k` results: its 8-bit vectors
/// misorder near ties, and re-scoring twice as many (at least 20) with the stored vectors
/// restores the graph's own recall (100k MiniLM vectors, ef 64: recall@10 0.927 from the
/// index alone, 0.973 re-scored; `strata-bench ann --quantization i8 --rerank 20`).
pub(crate) fn rerank_candidates(k: usize) -> usize {
    (2 * k).max(20)
}

/// The vector search of one engine.
#[derive(Clone)]
pub(crate) enum Ann {
    /// An index in this process, persisted in the data directory: usearch, or a qdrant-edge
    /// shard (`--vector-index`).
    Local(Arc<dyn InProcessIndex>),
    /// pgvector in the shared database.
    Postgres(Box<PostgresStore>),
}

impl Ann {
    /// Makes newly embedded rows searchable (pgvector indexes them as they are written).
    pub(crate) async fn add(&self, rows: Vec<(u64, TenantId, Vec<f32>)>) -> Result<()> {
        match self {
            Self::Local(index) => {
                let index = index.clone();
                blocking(move || index.add(&rows)).await
            }
            Self::Postgres(_) => Ok(()),
        }
    }

    /// Forgets vectors whose chunks were deleted (pgvector's rows go with the chunks).
    pub(crate) async fn remove(&self, keys: Vec<u64>) -> Result<()> {
        match self {
            Self::Local(_) if keys.is_empty() => Ok(()),
            Self::Local(index) => {
                let index = index.clone();
                blocking(move || index.remove(&keys)).await
            }
            Self::Postgres(_) => Ok(()),
        }
    }

    /// How many vectors the owner has, where that is known without a query.
    pub(crate) fn tenant_count(&self, owner: &TenantId) -> Option<u64> {
        match self {
            Self::Local(index) => Some(index.tenant_count(owner)),
            Self::Postgres(_) => None,
        }
    }

    /// Vectors in this process's index (0 for pgvector: they live in the database).
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Local(index) => index.len(),
            Self::Postgres(_) => 0,
        }
    }

    /// Saves the in-process index if it changed.
    pub(crate) async fn save(&self) -> Result<bool> {
        match self {
            Self::Local(index) => {
                let index = index.clone();
                blocking(move || index.save()).await
            }
            Self::Postgres(_) => Ok(false),
        }
    }

    /// The owner's `k` chunks nearest to `query` among those passing `filter`: through the
    /// index (approximate), or with every candidate scored (`exact`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn nearest(
        &self,
        store: &dyn Store,
        owner: &TenantId,
        model: &str,
        query: &[f32],
        k: usize,
        filter: &ChunkFilter,
        exact: bool,
    ) -> Result<Vec<(u64, f32)>> {
        match self {
            // Scored in the database either way: no vectors cross the wire.
            Self::Postgres(pg) => pg.nearest(owner, model, query, k, filter, exact).await,
            Self::Local(_) if exact => {
                let rows = store.candidate_vectors(owner, model, filter).await?;
                let query = query.to_vec();
                blocking(move || Ok(exact_top_k(&query, &rows, k))).await
            }
            // A qdrant shard keeps f32 vectors: its scores are the exact path's.
            Self::Local(index) if index.exact_scores() => {
                let allowed = store.allowed_ids(owner, model, filter).await?;
                let (index, owner, query) = (index.clone(), owner.clone(), query.to_vec());
                blocking(move || index.search(&owner, &query, k, allowed.as_ref())).await
            }
            Self::Local(index) => {
                let allowed = store.allowed_ids(owner, model, filter).await?;
                // usearch stores 8-bit vectors: it proposes candidates, and the stored
                // f32 vectors rank them (the same scores the exact path gives).
                let ids = {
                    let (index, owner, query) = (index.clone(), owner.clone(), query.to_vec());
                    blocking(move || {
                        let found =
                            index.search(&owner, &query, rerank_candidates(k), allowed.as_ref())?;
                        Ok(found.into_iter().map(|(id, _)| id).collect::<Vec<u64>>())
                    })
                    .await?
                };
                let rows = store.vectors_of(owner, model, &ids).await?;
                Ok(exact_top_k(query, &rows, k))
            }
        }
    }
}

/// Runs index work on the blocking pool (the lexical index's too).
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| EngineError::Internal(format!("index task failed: {e}")))?
}
