//! The summaries aggregate: one summary per document, written by the `summarise_document`
//! job kind and removed with its document; its SQL written once for both backends.
//!
//! Must not import: HTTP types, the cache, the job runner.

use async_trait::async_trait;

use crate::error::Result;
use crate::ids::{DocumentId, TenantId};

/// A stored summary.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Summary {
    /// The document.
    pub document_id: String,
    /// The model that wrote it.
    pub model: String,
    /// The text.
    pub summary: String,
    /// Parts of the document summarised separately before the final summary (1: in one go).
    pub parts: u32,
    /// When it was written.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Document summaries.
#[async_trait]
pub trait SummaryStore: Send + Sync + 'static {
    /// Stores (or replaces) the document's summary.
    async fn put_summary(&self, owner: &TenantId, summary: &Summary) -> Result<()>;

    /// The document's summary, if one was written.
    async fn get_summary(&self, owner: &TenantId, document: DocumentId) -> Result<Option<Summary>>;

    /// Removes the document's summary (its document is gone).
    async fn delete_summary(&self, owner: &TenantId, document: DocumentId) -> Result<()>;
}

/// [`SummaryStore`] over one backend's store type.
macro_rules! summaries_sql {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::summaries::SummaryStore for $store {
            async fn put_summary(
                &self,
                owner: &$crate::ids::TenantId,
                s: &$crate::store::summaries::Summary,
            ) -> $crate::error::Result<()> {
                sqlx::query(
                    "INSERT INTO document_summaries (owner, document_id, model, summary, parts, \
                     created_at) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (owner, document_id) DO UPDATE SET model = excluded.model, \
                     summary = excluded.summary, parts = excluded.parts, \
                     created_at = excluded.created_at",
                )
                .bind(owner.as_str())
                .bind(&s.document_id)
                .bind(&s.model)
                .bind(&s.summary)
                .bind(i64::from(s.parts))
                .bind($crate::store::rows::ms(s.created_at))
                .execute(&mut *self.conn().await?)
                .await?;
                Ok(())
            }

            async fn get_summary(
                &self,
                owner: &$crate::ids::TenantId,
                document: $crate::ids::DocumentId,
            ) -> $crate::error::Result<Option<$crate::store::summaries::Summary>> {
                use sqlx::Row as _;
                let row = sqlx::query(
                    "SELECT document_id, model, summary, parts, created_at FROM document_summaries \
                     WHERE owner = $1 AND document_id = $2",
                )
                .bind(owner.as_str())
                .bind(document.to_string())
                .fetch_optional(&mut *self.conn().await?)
                .await?;
                let Some(r) = row else { return Ok(None) };
                Ok(Some($crate::store::summaries::Summary {
                    document_id: r.try_get("document_id")?,
                    model: r.try_get("model")?,
                    summary: r.try_get("summary")?,
                    parts: r.try_get::<i64, _>("parts")? as u32,
                    created_at: $crate::store::rows::from_ms(r.try_get("created_at")?)?,
                }))
            }

            async fn delete_summary(
                &self,
                owner: &$crate::ids::TenantId,
                document: $crate::ids::DocumentId,
            ) -> $crate::error::Result<()> {
                sqlx::query("DELETE FROM document_summaries WHERE owner = $1 AND document_id = $2")
                    .bind(owner.as_str())
                    .bind(document.to_string())
                    .execute(&mut *self.conn().await?)
                    .await?;
                Ok(())
            }
        }
    };
}

pub(crate) use summaries_sql;
