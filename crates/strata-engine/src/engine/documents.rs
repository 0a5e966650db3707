//! The document library service: uploads (dedupe by content, staging, the ingestion job
//! queued in the same transaction), the catalogue (get, list, tags, chunks), patches,
//! deletions and the original files.
//!
//! Holds only what it uses: the store, the blob directory, the cache policy, the vector
//! index (to forget a deleted document's vectors), the job runner's wake-up, and the
//! tracker of writes that must finish even if their caller goes away.

use std::sync::Arc;

use tokio::sync::Notify;

use super::{Writes, paged};
use crate::ann::Ann;
use crate::blobs::{BlobStore, BlobWriter, StagedBlob};
use crate::error::{EngineError, Result};
use crate::extract::sniff;
use crate::ids::{DocumentId, IdKind, JobId, TenantId};
use crate::lexical::Lexical;
use crate::model::{
    Chunk, Document, DocumentFilter, DocumentPatch, DocumentStatus, NewDocument, Page, TagCount,
};
use crate::policy::{CachePolicy, Changed};
use crate::store::{InsertOutcome, Store, StoreChange};
use crate::timing::{Phase, timed};
use crate::validate;
use crate::{DEFAULT_PAGE, MAX_PAGE};

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

/// The document library (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct DocumentService {
    pub(super) store: Arc<dyn Store>,
    pub(super) blobs: BlobStore,
    pub(super) policy: CachePolicy,
    pub(super) ann: Ann,
    pub(super) lexical: Lexical,
    pub(super) wake: Arc<Notify>,
    pub(super) writes: Arc<Writes>,
    pub(super) max_upload_bytes: u64,
    pub(super) max_attempts: u32,
}

impl DocumentService {
    /// The largest upload accepted, in bytes.
    pub fn max_upload_bytes(&self) -> u64 {
        self.max_upload_bytes
    }

    /// Starts streaming an upload to disk.
    pub async fn begin_upload(&self) -> Result<BlobWriter> {
        self.blobs.writer(self.max_upload_bytes).await
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
        self.writes
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
        let blobs = &self.blobs;
        let _guard = blobs.lock(&doc.sha256).await?;
        if let Some(existing) = self.store.find_by_sha256(owner, &doc.sha256).await? {
            staged.discard().await;
            return Ok(IngestOutcome::Duplicate(existing));
        }
        let sha256 = doc.sha256.clone();
        blobs.commit(staged).await?;
        let id = DocumentId::new();
        let inserted = self
            .store
            .insert_document(
                doc,
                id,
                &crate::jobs::ingest::new_job(JobId::new(), owner, id, self.max_attempts),
            )
            .await;
        let outcome = match inserted {
            Ok(o) => o,
            Err(e) => {
                // No row, no file: a file only this upload needed goes (the guard is held, so
                // no other upload of the same content can be between the two).
                if let Ok(0) = self.store.count_sha256_refs(&sha256).await
                    && let Err(rm) = blobs.remove(&sha256).await
                {
                    tracing::warn!(error = %rm, "could not remove the file of a failed upload");
                }
                return Err(e);
            }
        };
        Ok(match outcome {
            InsertOutcome::Created(d) => {
                self.policy.changed(owner, Changed::Library).await;
                self.wake.notify_one();
                if let Err(e) = self.store.announce(StoreChange::JobQueued).await {
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
            (None, None) => crate::model::generated_title(&staged.sha256),
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
        timed(Phase::Db, self.store.get_document(owner, id))
            .await?
            .ok_or_else(|| EngineError::not_found(IdKind::Document, id))
    }

    /// A page of the owner's documents, newest first.
    pub async fn list_documents(
        &self,
        owner: &TenantId,
        q: ListDocuments,
    ) -> Result<Page<Document>> {
        let fingerprint = [
            "documents",
            q.filter.tag.as_deref().unwrap_or(""),
            q.filter.status.map(DocumentStatus::as_str).unwrap_or(""),
        ];
        paged(
            q.limit,
            q.cursor.as_deref(),
            &fingerprint,
            |before: Option<DocumentId>, n| {
                timed(
                    Phase::Db,
                    self.store.list_documents(owner, &q.filter, before, n),
                )
            },
            |d: &Document| d.id.to_string(),
        )
        .await
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
        self.writes
            .detach(async move {
                let updated = this.store.update_document(&owner, id, &patch).await?;
                if updated.is_some() && patch.title.is_some() {
                    // The title is indexed with each chunk.
                    this.lexical
                        .refresh_document(this.store.as_ref(), id)
                        .await?;
                }
                if updated.is_some() {
                    // Titles appear in search hits; tags and metadata do not.
                    let what = if patch.title.is_some() {
                        Changed::Documents
                    } else {
                        Changed::Catalog
                    };
                    this.policy.changed(&owner, what).await;
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
        self.writes
            .detach(async move { this.delete_now(&owner, id).await })
            .await
    }

    async fn delete_now(&self, owner: &TenantId, id: DocumentId) -> Result<()> {
        let doc = self.get_document(owner, id).await?;
        let _guard = self.blobs.lock(&doc.sha256).await?;
        let deleted = self
            .store
            .delete_document(owner, id)
            .await?
            .ok_or_else(|| EngineError::not_found(IdKind::Document, id))?;
        self.ann.remove(deleted.chunk_ids.clone()).await?;
        self.lexical.remove(deleted.chunk_ids).await?;
        self.store.delete_summary(owner, id).await?;
        self.policy.changed(owner, Changed::Library).await;
        if self.store.count_sha256_refs(&deleted.sha256).await? == 0 {
            self.blobs.remove(&deleted.sha256).await?;
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
        let file = self.blobs.open_blob(&doc.sha256).await?;
        Ok((doc, file))
    }

    /// The owner's tags with counts.
    pub async fn tag_counts(&self, owner: &TenantId) -> Result<Vec<TagCount>> {
        timed(Phase::Db, self.store.tag_counts(owner)).await
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
        timed(Phase::Db, self.store.list_chunks(owner, id, from, limit)).await
    }
}
