//! The storage abstraction. Owns *what* is persisted and the atomicity of each operation;
//! every backend (SQLite, PostgreSQL) implements [`Store`] with identical semantics, proven
//! by one test body run against each (`tests/it/backends.rs`).
//!
//! Rules every implementation keeps:
//! - every read and write of tenant data filters by owner;
//! - writes made under a [`Lease`] succeed only while that lease is still held (the
//!   lease token is a fencing token), so a worker that lost its lease can never overwrite
//!   the work of the worker that took over.
//!
//! The job queue is its own aggregate ([`queue`]: [`JobQueue`], one body of SQL for both
//! backends); [`Store`] includes it, and the rest of this trait is still one interface with
//! a hand-written implementation per backend, to be split the same way.
//!
//! Must not import: HTTP types, the cache, the embedder.

use async_trait::async_trait;

use crate::error::Result;
use crate::ids::{DocumentId, JobId};
use crate::model::{Document, NewDocument};

/// Vectors are stored as little-endian f32 bytes.
pub fn vector_to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Inverse of [`vector_to_bytes`]; `None` when the length is not a multiple of 4.
pub fn vector_from_bytes(b: &[u8]) -> Option<Vec<f32>> {
    if !b.len().is_multiple_of(4) {
        return None;
    }
    Some(
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

pub mod advice;
pub mod budgets;
pub mod chunks;
pub mod conversations;
pub mod documents;
pub mod lexical;
pub mod memories;
pub mod meta;
pub mod meter;
pub mod outage;
pub mod postgres;
pub mod queue;
mod rows;
pub mod sessions;
pub mod sqlite;
pub mod summaries;

pub use advice::{LARGE_TABLE_ROWS, Recommendation};
pub use budgets::{BudgetStore, UsageFilter};
pub use chunks::ChunkStore;
pub use conversations::ConversationStore;
pub use documents::DocumentStore;
pub use lexical::{LexicalQuery, LexicalStore};
pub use memories::{MemoryStore, Replace};
pub use meta::StoreMeta;
pub use queue::{Abandoned, ClaimedJob, JobOutcome, JobQueue, Lease, NewJob, QueueDepth};
pub use sessions::SessionStore;
pub use summaries::{Summary, SummaryStore};

/// Result of inserting a document whose content may already exist for this owner.
#[derive(Debug, Clone)]
pub enum InsertOutcome {
    /// A new document and its ingestion job were created.
    Created(Document),
    /// The owner already has a document with this sha256; nothing was created.
    Duplicate(Document),
}

/// What deleting a document freed, so the caller can release the blob and the vectors.
#[derive(Debug, Clone)]
pub struct Deleted {
    /// The deleted document's content hash.
    pub sha256: String,
    /// Keys of the vectors its chunks had in the index.
    pub chunk_ids: Vec<u64>,
}

/// A chunk to insert.
#[derive(Debug, Clone)]
pub struct NewChunk {
    /// Position in the document.
    pub ordinal: u32,
    /// Text.
    pub text: String,
    /// Token count.
    pub token_count: u32,
    /// Hex sha256 of what the model embeds for it (title and text: identical inputs share
    /// one vector).
    pub text_sha256: String,
}

/// Appends ` AND c.id IN (...)` with `ids` bound, to a query over `chunks c`.
pub(crate) fn push_chunk_ids<'a, DB>(qb: &mut sqlx::QueryBuilder<'a, DB>, ids: &[u64])
where
    DB: sqlx::Database,
    i64: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    qb.push(" AND c.id IN (");
    let mut sep = qb.separated(", ");
    for id in ids {
        sep.push_bind(*id as i64);
    }
    qb.push(")");
}

/// Appends the ` AND ...` conditions of a chunk filter, on a query over `chunks c`.
pub(crate) fn push_chunk_filter<'a, DB>(qb: &mut sqlx::QueryBuilder<'a, DB>, filter: &ChunkFilter)
where
    DB: sqlx::Database,
    String: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    if !filter.tags.is_empty() {
        qb.push(
            " AND EXISTS (SELECT 1 FROM document_tags t \
             WHERE t.document_id = c.document_id AND t.tag IN (",
        );
        let mut sep = qb.separated(", ");
        for t in &filter.tags {
            sep.push_bind(t.clone());
        }
        qb.push("))");
    }
    if !filter.document_ids.is_empty() {
        qb.push(" AND c.document_id IN (");
        let mut sep = qb.separated(", ");
        for d in &filter.document_ids {
            sep.push_bind(d.to_string());
        }
        qb.push(")");
    }
}

/// Which of a tenant's chunks a search may return.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkFilter {
    /// Documents carrying any of these tags (empty: no tag condition).
    pub tags: Vec<String>,
    /// Only these documents (empty: no document condition).
    pub document_ids: Vec<DocumentId>,
}

impl ChunkFilter {
    /// Whether any condition is set.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.document_ids.is_empty()
    }
}

/// A search hit's stored fields.
#[derive(Debug, Clone)]
pub struct HitRow {
    /// Chunk id (vector key).
    pub id: u64,
    /// Its document.
    pub document_id: DocumentId,
    /// Document title.
    pub title: String,
    /// Chunk position.
    pub ordinal: u32,
    /// Chunk text.
    pub text: String,
}

/// A change another process announced through the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreChange {
    /// A job became runnable: a worker should look for work.
    JobQueued,
    /// A job's status or progress changed.
    JobChanged(JobId),
}

/// Size and use of one table and its indexes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableStats {
    /// Table name.
    pub table: String,
    /// Live rows (an estimate on PostgreSQL, exact on SQLite).
    pub rows: u64,
    /// Bytes of the table's own storage, when the backend reports it.
    pub table_bytes: Option<u64>,
    /// Its indexes.
    pub indexes: Vec<IndexStats>,
}

/// Size and use of one index.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IndexStats {
    /// Index name.
    pub name: String,
    /// Bytes, when the backend reports it.
    pub bytes: Option<u64>,
    /// Scans since statistics were reset, when the backend counts them.
    pub scans: Option<u64>,
}

/// Persistence for documents, chunks and jobs.
#[async_trait]
pub trait Store:
    JobQueue
    + DocumentStore
    + ChunkStore
    + MemoryStore
    + SessionStore
    + BudgetStore
    + ConversationStore
    + SummaryStore
    + StoreMeta
{
    /// Which backend this is (`sqlite`, `postgres`), for logs and stats.
    fn backend(&self) -> &'static str;

    /// The connection pool's state.
    fn pool_stats(&self) -> meter::PoolStats;

    /// Tables and indexes with their sizes and use.
    async fn table_stats(&self) -> Result<Vec<TableStats>>;

    /// Refreshes the planner's statistics and compacts what needs it; returns the statements
    /// run.
    async fn optimize(&self) -> Result<Vec<String>>;

    /// What the catalog says should be done: sequential scans of large tables, indexes never
    /// used, dead rows, missing planner statistics, free pages (see [`Recommendation`]).
    async fn recommendations(&self) -> Result<Vec<Recommendation>>;

    /// The plan the database uses for `sql` (one of strata's own statements, parameters as
    /// `$N`), one line per node: SQLite's `EXPLAIN QUERY PLAN` with the parameters unbound,
    /// PostgreSQL's generic plan (`EXPLAIN EXECUTE` of a prepared statement under
    /// `plan_cache_mode = force_generic_plan`, the plan for any parameters; a vector search
    /// under the settings it runs with). Nothing runs.
    async fn explain(&self, sql: &str) -> Result<Vec<String>>;

    /// Tells every other process sharing this store about a change (a no-op for a store
    /// only one process opens).
    async fn announce(&self, change: StoreChange) -> Result<()> {
        let _ = change;
        Ok(())
    }

    /// Changes other processes announce; `None` where no other process can write.
    async fn listen(
        &self,
    ) -> Result<Option<futures_util::stream::BoxStream<'static, StoreChange>>> {
        Ok(None)
    }

    /// Closes the pool, waiting for connections to be returned.
    async fn close(&self);
}
