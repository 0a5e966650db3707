//! Where lexical search runs, chosen by the backend as [`crate::ann`] chooses vector search:
//! the in-process BM25 index of the embedded default ([`crate::bm25`]), or PostgreSQL's full
//! text search, which every process over the database shares and keeps current by writing
//! the rows themselves.
//!
//! The in-process index follows the database: it is built from the stored chunks when the
//! engine opens, and every change (a document's chunks becoming searchable, a title
//! change, a deletion) reads or writes the database first and then the index, one change at
//! a time (an async mutex): a change that read the database before another committed is
//! applied before that other one reads, so the last state read is the one indexed.
//! Searches take the index's read lock on the blocking pool.
//!
//! Must not import: HTTP types, the cache.

use std::sync::Arc;

use tokio::sync::Mutex;
use tracing::info;

use crate::ann::blocking;
use crate::bm25::Bm25Index;
use crate::error::Result;
use crate::ids::{DocumentId, TenantId};
use crate::store::postgres::PostgresStore;
use crate::store::{ChunkFilter, LexicalQuery, LexicalStore, Store};

/// Rows read per page when the index is built.
const PAGE: u32 = 5000;

/// The in-process index and the lock that orders its changes.
pub(crate) struct LocalLexical {
    index: Bm25Index,
    model: String,
    changes: Mutex<()>,
}

impl LocalLexical {
    /// Indexes the embedded chunks the database holds now, of one document or of all, page
    /// by page.
    async fn load(self: &Arc<Self>, store: &dyn Store, document: Option<DocumentId>) -> Result<()> {
        let mut after = 0;
        loop {
            let rows = store.scan_texts(&self.model, after, PAGE, document).await?;
            let Some(last) = rows.last() else { break };
            after = last.0;
            let this = self.clone();
            blocking(move || this.index.add(&rows)).await?;
        }
        Ok(())
    }
}

/// The lexical search of one engine.
#[derive(Clone)]
pub(crate) enum Lexical {
    /// BM25 in this process, built from the database.
    Local(Arc<LocalLexical>),
    /// BM25 in SQL over PostgreSQL's tsvectors.
    Postgres(Box<PostgresStore>),
}

impl Lexical {
    /// Builds the in-process index from every chunk `model` embedded.
    pub(crate) async fn build(store: &dyn Store, model: &str) -> Result<Self> {
        let started = std::time::Instant::now();
        let local = Arc::new(LocalLexical {
            index: Bm25Index::new(),
            model: model.to_owned(),
            changes: Mutex::new(()),
        });
        local.load(store, None).await?;
        let stats = local.index.stats();
        info!(
            texts = stats.texts,
            terms = stats.terms,
            postings = stats.postings,
            mib = stats.heap_bytes / (1 << 20),
            ms = started.elapsed().as_millis() as u64,
            "lexical index built"
        );
        Ok(Self::Local(local))
    }

    /// (Re)indexes a document's embedded chunks as the database holds them now (with its
    /// current title): after ingestion stored its vectors, and after a title change.
    pub(crate) async fn refresh_document(
        &self,
        store: &dyn Store,
        document: DocumentId,
    ) -> Result<()> {
        let Self::Local(local) = self else {
            return Ok(());
        };
        let _order = local.changes.lock().await;
        local.load(store, Some(document)).await
    }

    /// Forgets chunks that were deleted.
    pub(crate) async fn remove(&self, ids: Vec<u64>) -> Result<()> {
        match self {
            Self::Local(_) if ids.is_empty() => Ok(()),
            Self::Local(local) => {
                let _order = local.changes.lock().await;
                let l = local.clone();
                blocking(move || {
                    l.index.remove(&ids);
                    Ok(())
                })
                .await
            }
            Self::Postgres(_) => Ok(()),
        }
    }

    /// Texts in this process's index (0 for PostgreSQL: they live in the database).
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Local(local) => local.index.len(),
            Self::Postgres(_) => 0,
        }
    }

    /// The in-process index's size (`None` on PostgreSQL).
    pub(crate) fn stats(&self) -> Option<crate::bm25::Bm25Stats> {
        match self {
            Self::Local(local) => Some(local.index.stats()),
            Self::Postgres(_) => None,
        }
    }

    /// The owner's `limit` best chunks embedded by `model` passing `filter`, by BM25
    /// (higher is better), ties by id; only chunks matching at least one word.
    pub(crate) async fn top(
        &self,
        store: &dyn Store,
        owner: &TenantId,
        model: &str,
        query: &LexicalQuery,
        filter: &ChunkFilter,
        limit: usize,
    ) -> Result<Vec<(u64, f32)>> {
        match self {
            Self::Postgres(pg) => pg.lexical(owner, model, query, filter, limit).await,
            Self::Local(local) => {
                let terms: Vec<String> = query
                    .words()
                    .iter()
                    .filter_map(|w| crate::bm25::term(w))
                    .collect();
                if terms.is_empty() || limit == 0 || model != local.model {
                    return Ok(Vec::new());
                }
                let allowed = store.allowed_ids(owner, model, filter).await?;
                let (l, owner) = (local.clone(), owner.clone());
                blocking(move || Ok(l.index.search(&owner, &terms, limit, allowed.as_ref()))).await
            }
        }
    }
}
