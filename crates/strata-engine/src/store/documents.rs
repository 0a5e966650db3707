//! The documents aggregate's SQL written once for both backends (see [`super::queue`] for
//! how): so far the status writes the ingestion job kind makes. The rest of the aggregate
//! (inserting, listing, patching, deleting documents; chunks and their vectors) is still
//! written per backend in `sqlite.rs` and `postgres.rs`, and moves here the same way.
//!
//! Must not import: HTTP types, the cache, the job runner.

use async_trait::async_trait;

use crate::error::Result;
use crate::ids::{DocumentId, TenantId};
use crate::model::DocumentStatus;

use super::queue::Lease;

/// The subject of a document's jobs: how its jobs are cancelled when it is deleted.
pub(crate) fn document_subject(id: DocumentId) -> String {
    format!("document:{id}")
}

/// Status writes on documents.
#[async_trait]
pub trait DocumentStates: Send + Sync + 'static {
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

/// [`DocumentStates`] over one backend's store type (`conn()` and `begin()`).
macro_rules! document_states_sql {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::documents::DocumentStates for $store {
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
                let now = $crate::store::rows::ms(chrono::Utc::now());
                let held = sqlx::query($crate::store::queue::LEASE_HELD)
                    .bind(now)
                    .bind(lease.job_id.to_string())
                    .bind(&lease.token)
                    .execute(&mut *tx)
                    .await?;
                if held.rows_affected() != 1 {
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
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(true)
            }
        }
    };
}

pub(crate) use document_states_sql;
