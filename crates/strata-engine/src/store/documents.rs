//! The documents aggregate: documents with their tags, their chunk listing, and the status
//! writes the ingestion job kind makes; its SQL written once for both backends (see
//! [`super::queue`] for how). The one real difference is how a document's tags are read
//! back as a JSON array (`tags_json`: `json_group_array` on SQLite, `json_agg` on
//! PostgreSQL).
//!
//! Must not import: HTTP types, the cache, the job runner.

use async_trait::async_trait;

use crate::error::Result;
use crate::ids::{DocumentId, TenantId};
use crate::model::{Chunk, Document, DocumentFilter, DocumentPatch, DocumentStatus, TagCount};

use super::queue::{Lease, NewJob};
use super::{Deleted, InsertOutcome, NewDocument};

/// The subject of a document's jobs: how its jobs are cancelled when it is deleted.
pub(crate) fn document_subject(id: DocumentId) -> String {
    format!("document:{id}")
}

/// Columns of a document row, with `tags` from `tags_json`, in the order
/// [`super::rows::document_from_row`] reads them.
macro_rules! doc_columns {
    ($tags_json:literal) => {
        concat!(
            "d.id, d.title, d.filename, d.media_type, d.byte_size, d.sha256, d.metadata, \
             d.status, d.error, d.chunk_count, d.job_id, d.created_at, d.updated_at, ",
            $tags_json,
            " AS tags"
        )
    };
}

pub(crate) use doc_columns;

/// Documents, their tags and the listing of their chunks.
#[async_trait]
pub trait DocumentStore: Send + Sync + 'static {
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

    /// Sets a document's status and error (the ingestion job kind's claim and abandonment);
    /// a document deleted meanwhile is left deleted.
    async fn set_document_status(
        &self,
        owner: &TenantId,
        id: DocumentId,
        status: DocumentStatus,
        error: Option<&str>,
    ) -> Result<()>;

    /// Sets a document's status, error and (when given) chunk count while `lease` is held;
    /// `false` when it is not (the ingestion job kind's end of an attempt).
    async fn finish_document(
        &self,
        lease: &Lease,
        id: DocumentId,
        status: DocumentStatus,
        error: Option<&str>,
        chunk_count: Option<u32>,
    ) -> Result<bool>;
}

/// [`DocumentStore`] over one backend's store type (`conn()` and `begin()`); instantiate
/// it after `queue_sql!`, whose `enqueue_in` and `lease_held` it uses.
macro_rules! documents_sql {
    ($store:ty, $db:ty, tags_json = $tags_json:literal) => {
        /// One document of the owner's, read inside a transaction.
        async fn document_in(
            conn: &mut <$db as sqlx::Database>::Connection,
            owner: &$crate::ids::TenantId,
            id: &str,
        ) -> $crate::error::Result<Option<$crate::model::Document>> {
            let sql = concat!(
                "SELECT ",
                $crate::store::documents::doc_columns!($tags_json),
                " FROM documents d WHERE d.owner = $1 AND d.id = $2"
            );
            let row = sqlx::query(sql)
                .bind(owner.as_str())
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
            row.as_ref()
                .map($crate::store::rows::document_from_row)
                .transpose()
        }

        /// Adds `tags` to a document inside a transaction (a patch deletes the old ones first).
        async fn insert_tags(
            conn: &mut <$db as sqlx::Database>::Connection,
            id: &str,
            owner: &$crate::ids::TenantId,
            tags: &[String],
        ) -> $crate::error::Result<()> {
            for tag in tags {
                sqlx::query(
                    "INSERT INTO document_tags (document_id, owner, tag) VALUES ($1, $2, $3)",
                )
                .bind(id)
                .bind(owner.as_str())
                .bind(tag)
                .execute(&mut *conn)
                .await?;
            }
            Ok(())
        }

        #[async_trait::async_trait]
        impl $crate::store::documents::DocumentStore for $store {
            async fn insert_document(
                &self,
                doc: $crate::store::NewDocument,
                id: $crate::ids::DocumentId,
                job: &$crate::store::queue::NewJob,
            ) -> $crate::error::Result<$crate::store::InsertOutcome> {
                use $crate::store::InsertOutcome;
                let mut tx = self.begin().await?;
                let now = $crate::store::rows::ms(chrono::Utc::now());
                let id_s = id.to_string();
                let inserted = sqlx::query(
                    "INSERT INTO documents (id, owner, title, filename, media_type, byte_size, \
                     sha256, metadata, status, chunk_count, job_id, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', 0, $9, $10, $10)",
                )
                .bind(&id_s)
                .bind(doc.owner.as_str())
                .bind(&doc.title)
                .bind(&doc.filename)
                .bind(doc.media_type.as_str())
                .bind(doc.byte_size as i64)
                .bind(&doc.sha256)
                .bind(doc.metadata.to_string())
                .bind(job.id.to_string())
                .bind(now)
                .execute(&mut *tx)
                .await;
                match inserted {
                    Ok(_) => {}
                    Err(e) if $crate::store::rows::is_unique_violation(&e) => {
                        drop(tx);
                        return match self.find_by_sha256(&doc.owner, &doc.sha256).await? {
                            Some(existing) => Ok(InsertOutcome::Duplicate(existing)),
                            None => Err($crate::error::EngineError::Unavailable(
                                "concurrent delete of a duplicate; retry".into(),
                            )),
                        };
                    }
                    Err(e) => return Err($crate::error::EngineError::from(e)),
                }
                insert_tags(&mut tx, &id_s, &doc.owner, &doc.tags).await?;
                enqueue_in(&mut tx, job).await?;
                let created = document_in(&mut tx, &doc.owner, &id_s)
                    .await?
                    .ok_or_else(|| {
                        $crate::error::EngineError::Internal("inserted document vanished".into())
                    })?;
                tx.commit().await?;
                Ok(InsertOutcome::Created(created))
            }

            async fn find_by_sha256(
                &self,
                owner: &$crate::ids::TenantId,
                sha256: &str,
            ) -> $crate::error::Result<Option<$crate::model::Document>> {
                let sql = concat!(
                    "SELECT ",
                    $crate::store::documents::doc_columns!($tags_json),
                    " FROM documents d WHERE d.owner = $1 AND d.sha256 = $2"
                );
                let row = sqlx::query(sql)
                    .bind(owner.as_str())
                    .bind(sha256)
                    .fetch_optional(&mut *self.conn().await?)
                    .await?;
                row.as_ref()
                    .map($crate::store::rows::document_from_row)
                    .transpose()
            }

            async fn get_document(
                &self,
                owner: &$crate::ids::TenantId,
                id: $crate::ids::DocumentId,
            ) -> $crate::error::Result<Option<$crate::model::Document>> {
                document_in(&mut *self.conn().await?, owner, &id.to_string()).await
            }

            async fn list_documents(
                &self,
                owner: &$crate::ids::TenantId,
                filter: &$crate::model::DocumentFilter,
                before: Option<$crate::ids::DocumentId>,
                limit: u32,
            ) -> $crate::error::Result<Vec<$crate::model::Document>> {
                let sql = concat!(
                    "SELECT ",
                    $crate::store::documents::doc_columns!($tags_json),
                    " FROM documents d WHERE d.owner = $1 \
                       AND (CAST($2 AS TEXT) IS NULL OR d.status = $2) \
                       AND (CAST($3 AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM document_tags t \
                            WHERE t.owner = $1 AND t.tag = $3 AND t.document_id = d.id)) \
                       AND (CAST($4 AS TEXT) IS NULL OR d.id < $4) \
                     ORDER BY d.id DESC LIMIT $5"
                );
                let rows = sqlx::query(sql)
                    .bind(owner.as_str())
                    .bind(filter.status.map(|s| s.as_str()))
                    .bind(filter.tag.as_deref())
                    .bind(before.map(|b| b.to_string()))
                    .bind(i64::from(limit))
                    .fetch_all(&mut *self.conn().await?)
                    .await?;
                rows.iter()
                    .map($crate::store::rows::document_from_row)
                    .collect()
            }

            async fn update_document(
                &self,
                owner: &$crate::ids::TenantId,
                id: $crate::ids::DocumentId,
                patch: &$crate::model::DocumentPatch,
            ) -> $crate::error::Result<Option<$crate::model::Document>> {
                let mut tx = self.begin().await?;
                let id_s = id.to_string();
                let res = sqlx::query(
                    "UPDATE documents SET title = COALESCE(CAST($3 AS TEXT), title), \
                     metadata = COALESCE(CAST($4 AS TEXT), metadata), updated_at = $5 \
                     WHERE owner = $1 AND id = $2",
                )
                .bind(owner.as_str())
                .bind(&id_s)
                .bind(patch.title.as_deref())
                .bind(patch.metadata.as_ref().map(|m| m.to_string()))
                .bind($crate::store::rows::ms(chrono::Utc::now()))
                .execute(&mut *tx)
                .await?;
                if res.rows_affected() == 0 {
                    return Ok(None);
                }
                if let Some(tags) = &patch.tags {
                    sqlx::query("DELETE FROM document_tags WHERE document_id = $1")
                        .bind(&id_s)
                        .execute(&mut *tx)
                        .await?;
                    insert_tags(&mut tx, &id_s, owner, tags).await?;
                }
                let doc = document_in(&mut tx, owner, &id_s).await?;
                tx.commit().await?;
                Ok(doc)
            }

            async fn delete_document(
                &self,
                owner: &$crate::ids::TenantId,
                id: $crate::ids::DocumentId,
            ) -> $crate::error::Result<Option<$crate::store::Deleted>> {
                let mut tx = self.begin().await?;
                let id_s = id.to_string();
                let chunk_ids: Vec<i64> = sqlx::query_scalar(
                    "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id \
                     WHERE d.owner = $1 AND d.id = $2 AND c.embedding IS NOT NULL",
                )
                .bind(owner.as_str())
                .bind(&id_s)
                .fetch_all(&mut *tx)
                .await?;
                let sha: Option<String> = sqlx::query_scalar(
                    "DELETE FROM documents WHERE owner = $1 AND id = $2 RETURNING sha256",
                )
                .bind(owner.as_str())
                .bind(&id_s)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(sha256) = sha else {
                    return Ok(None);
                };
                // Tags and chunks go with the row (ON DELETE CASCADE); unfinished jobs are
                // cancelled and their leases revoked, so a worker still busy with it stops at
                // its next write.
                sqlx::query($crate::store::queue::CANCEL_SUBJECT)
                    .bind($crate::store::documents::document_subject(id))
                    .bind($crate::store::rows::ms(chrono::Utc::now()))
                    .bind("document deleted")
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Some($crate::store::Deleted {
                    sha256,
                    chunk_ids: chunk_ids.into_iter().map(|i| i as u64).collect(),
                }))
            }

            async fn count_sha256_refs(&self, sha256: &str) -> $crate::error::Result<u64> {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM documents WHERE sha256 = $1")
                    .bind(sha256)
                    .fetch_one(&mut *self.conn().await?)
                    .await?;
                Ok(n as u64)
            }

            async fn tag_counts(
                &self,
                owner: &$crate::ids::TenantId,
            ) -> $crate::error::Result<Vec<$crate::model::TagCount>> {
                use sqlx::Row as _;
                let rows = sqlx::query(
                    "SELECT tag, COUNT(*) AS n FROM document_tags WHERE owner = $1 \
                     GROUP BY tag ORDER BY n DESC, tag ASC",
                )
                .bind(owner.as_str())
                .fetch_all(&mut *self.conn().await?)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::model::TagCount {
                            tag: r.try_get("tag")?,
                            count: r.try_get::<i64, _>("n")? as u64,
                        })
                    })
                    .collect()
            }

            async fn list_chunks(
                &self,
                owner: &$crate::ids::TenantId,
                id: $crate::ids::DocumentId,
                from: u32,
                limit: u32,
            ) -> $crate::error::Result<Vec<$crate::model::Chunk>> {
                use sqlx::Row as _;
                let rows = sqlx::query(
                    "SELECT ordinal, text, token_count, embedding IS NOT NULL AS embedded \
                     FROM chunks WHERE owner = $1 AND document_id = $2 AND ordinal >= $3 \
                     ORDER BY ordinal LIMIT $4",
                )
                .bind(owner.as_str())
                .bind(id.to_string())
                .bind(i64::from(from))
                .bind(i64::from(limit))
                .fetch_all(&mut *self.conn().await?)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::model::Chunk {
                            document_id: id,
                            ordinal: r.try_get::<i64, _>("ordinal")? as u32,
                            text: r.try_get("text")?,
                            token_count: r.try_get::<i64, _>("token_count")? as u32,
                            embedded: r.try_get("embedded")?,
                        })
                    })
                    .collect()
            }

            async fn set_document_status(
                &self,
                owner: &$crate::ids::TenantId,
                id: $crate::ids::DocumentId,
                status: $crate::model::DocumentStatus,
                error: Option<&str>,
            ) -> $crate::error::Result<()> {
                sqlx::query(
                    "UPDATE documents SET status = $3, error = $4, updated_at = $5 \
                     WHERE owner = $1 AND id = $2",
                )
                .bind(owner.as_str())
                .bind(id.to_string())
                .bind(status.as_str())
                .bind(error)
                .bind($crate::store::rows::ms(chrono::Utc::now()))
                .execute(&mut *self.conn().await?)
                .await?;
                Ok(())
            }

            async fn finish_document(
                &self,
                lease: &$crate::store::queue::Lease,
                id: $crate::ids::DocumentId,
                status: $crate::model::DocumentStatus,
                error: Option<&str>,
                chunk_count: Option<u32>,
            ) -> $crate::error::Result<bool> {
                let mut tx = self.begin().await?;
                if !lease_held(&mut tx, lease).await? {
                    return Ok(false);
                }
                sqlx::query(
                    "UPDATE documents SET status = $2, error = $3, \
                     chunk_count = COALESCE(CAST($4 AS BIGINT), chunk_count), updated_at = $5 \
                     WHERE id = $1",
                )
                .bind(id.to_string())
                .bind(status.as_str())
                .bind(error)
                .bind(chunk_count.map(i64::from))
                .bind($crate::store::rows::ms(chrono::Utc::now()))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(true)
            }
        }
    };
}

pub(crate) use documents_sql;
