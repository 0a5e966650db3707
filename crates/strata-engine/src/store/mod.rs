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
use crate::ids::{DocumentId, JobId, TenantId};
use crate::model::{Chunk, Document, DocumentFilter, DocumentPatch, NewDocument, TagCount};

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

pub mod documents;
pub mod meter;
pub mod postgres;
pub mod queue;
mod rows;
pub mod sqlite;

pub use documents::DocumentStates;
pub use queue::{Abandoned, ClaimedJob, JobOutcome, JobQueue, Lease, NewJob};

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
    /// Hex sha256 of the text.
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
pub trait Store: JobQueue + DocumentStates {
    /// Which backend this is (`sqlite`, `postgres`), for logs and stats.
    fn backend(&self) -> &'static str;

    /// Inserts a document and its queued ingestion job atomically, unless the owner already
    /// has a document with the same sha256.
    async fn insert_document(
        &self,
        doc: NewDocument,
        id: DocumentId,
        job: &NewJob,
    ) -> Result<InsertOutcome>;

    /// The owner's document with this content hash, if any.
    async fn find_by_sha256(&self, owner: &TenantId, sha256: &str) -> Result<Option<Document>>;

    /// One document of the owner's.
    async fn get_document(&self, owner: &TenantId, id: DocumentId) -> Result<Option<Document>>;

    /// Up to `limit` of the owner's documents, newest first, strictly older than `before`.
    async fn list_documents(
        &self,
        owner: &TenantId,
        filter: &DocumentFilter,
        before: Option<DocumentId>,
        limit: u32,
    ) -> Result<Vec<Document>>;

    /// Applies a validated patch; `None` when the document does not exist.
    async fn update_document(
        &self,
        owner: &TenantId,
        id: DocumentId,
        patch: &DocumentPatch,
    ) -> Result<Option<Document>>;

    /// Deletes a document with its tags and chunks and cancels its unfinished jobs.
    async fn delete_document(&self, owner: &TenantId, id: DocumentId) -> Result<Option<Deleted>>;

    /// How many documents, of any owner, reference this content hash.
    async fn count_sha256_refs(&self, sha256: &str) -> Result<u64>;

    /// The owner's tags with document counts, most used first.
    async fn tag_counts(&self, owner: &TenantId) -> Result<Vec<TagCount>>;

    /// Up to `limit` chunks of a document from ordinal `from` on.
    async fn list_chunks(
        &self,
        owner: &TenantId,
        id: DocumentId,
        from: u32,
        limit: u32,
    ) -> Result<Vec<Chunk>>;

    /// Removes chunks left by an earlier, interrupted attempt, returning their ids; `None`
    /// when the lease is lost.
    async fn clear_chunks(&self, lease: &Lease, document: DocumentId) -> Result<Option<Vec<u64>>>;

    /// Appends a batch of chunks, returning their ids in order; `None` (and nothing written)
    /// when the lease is lost.
    async fn write_chunks(
        &self,
        lease: &Lease,
        owner: &TenantId,
        document: DocumentId,
        chunks: &[NewChunk],
    ) -> Result<Option<Vec<u64>>>;

    /// Stored embeddings of `model` for these text hashes (any owner: identical text has an
    /// identical vector).
    async fn find_embeddings(
        &self,
        model: &str,
        text_sha256: &[String],
    ) -> Result<std::collections::HashMap<String, Vec<f32>>>;

    /// Stores embeddings of chunks; `false` when the lease is lost.
    async fn set_embeddings(
        &self,
        lease: &Lease,
        model: &str,
        rows: &[(u64, Vec<f32>)],
    ) -> Result<bool>;

    /// Count and wrapping sum of the ids of every chunk embedded with `model` (a cheap
    /// fingerprint to check a persisted index against).
    async fn embedded_fingerprint(&self, model: &str) -> Result<(u64, u64)>;

    /// Up to `limit` embedded chunks with id greater than `after`: (id, owner, vector).
    async fn scan_vectors(
        &self,
        model: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<(u64, TenantId, Vec<f32>)>>;

    /// Up to `limit` embedded chunks with id greater than `after`: (id, owner).
    async fn scan_owners(
        &self,
        model: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<(u64, TenantId)>>;

    /// How many of the owner's embedded chunks pass the filter.
    async fn count_candidates(
        &self,
        owner: &TenantId,
        model: &str,
        filter: &ChunkFilter,
    ) -> Result<u64>;

    /// The owner's embedded chunks passing the filter: (id, vector).
    async fn candidate_vectors(
        &self,
        owner: &TenantId,
        model: &str,
        filter: &ChunkFilter,
    ) -> Result<Vec<(u64, Vec<f32>)>>;

    /// The stored vectors of the owner's chunks among `ids` embedded by `model` (ids of
    /// other owners, other models, or chunks since deleted are left out).
    async fn vectors_of(
        &self,
        owner: &TenantId,
        model: &str,
        ids: &[u64],
    ) -> Result<Vec<(u64, Vec<f32>)>>;

    /// Ids of the owner's embedded chunks passing the filter.
    async fn candidate_ids(
        &self,
        owner: &TenantId,
        model: &str,
        filter: &ChunkFilter,
    ) -> Result<Vec<u64>>;

    /// The owner's chunks with these ids, with their documents' titles.
    async fn hit_rows(&self, owner: &TenantId, ids: &[u64]) -> Result<Vec<HitRow>>;

    /// A cheap round trip proving the backend answers.
    async fn ping(&self) -> Result<()>;

    /// The connection pool's state.
    fn pool_stats(&self) -> meter::PoolStats;

    /// Tables and indexes with their sizes and use.
    async fn table_stats(&self) -> Result<Vec<TableStats>>;

    /// Refreshes the planner's statistics and compacts what needs it; returns the statements
    /// run.
    async fn optimize(&self) -> Result<Vec<String>>;

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

    /// This store's random identity, made on first call and stable for its lifetime.
    async fn store_id(&self) -> Result<String>;

    /// Closes the pool, waiting for connections to be returned.
    async fn close(&self);
}
