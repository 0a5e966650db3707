//! Original files in the `blobs` table (1 MiB parts, one transaction per file), and the
//! per-hash advisory lock that orders uploads and deletions of the same content across
//! instances, held on a connection of the small `strata-lock` pool.
//!
//! Must not import: the cache, HTTP types.

use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use tokio::io::AsyncReadExt;

use super::{BLOB_PART, PostgresStore};
use crate::blobs::{BlobLock, SharedBlobs};
use crate::error::Result;

/// Releases a blob's advisory lock when dropped: the unlock runs on the connection that
/// holds the lock; if it cannot, the connection is closed, which releases it too.
struct AdvisoryLock {
    conn: Option<PoolConnection<Postgres>>,
    key: String,
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let key = std::mem::take(&mut self.key);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            drop(conn.detach());
            return;
        };
        rt.spawn(async move {
            let unlocked = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
                .bind(&key)
                .execute(&mut *conn)
                .await;
            if unlocked.is_err() {
                let _ = sqlx::Connection::close(conn.detach()).await;
            }
        });
    }
}

#[async_trait]
impl SharedBlobs for PostgresStore {
    async fn put(&self, sha256: &str, path: &Path) -> Result<()> {
        let mut file = tokio::fs::File::open(path).await?;
        let mut tx = self.begin().await?;
        let stored: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM blobs WHERE sha256 = $1)")
                .bind(sha256)
                .fetch_one(&mut *tx)
                .await?;
        if stored {
            return Ok(());
        }
        let mut part = 0i32;
        loop {
            let mut buf = Vec::with_capacity(BLOB_PART);
            let n = (&mut file)
                .take(BLOB_PART as u64)
                .read_to_end(&mut buf)
                .await?;
            // An empty file is stored as one empty part, so that it exists.
            if n == 0 && part > 0 {
                break;
            }
            sqlx::query(
                "INSERT INTO blobs (sha256, part, data) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(sha256)
            .bind(part)
            .bind(buf)
            .execute(&mut *tx)
            .await?;
            part += 1;
            if n < BLOB_PART {
                break;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn part(&self, sha256: &str, index: u32) -> Result<Option<Bytes>> {
        let data: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT data FROM blobs WHERE sha256 = $1 AND part = $2")
                .bind(sha256)
                .bind(index as i32)
                .fetch_optional(&mut *self.conn().await?)
                .await?;
        Ok(data.map(Bytes::from))
    }

    async fn remove(&self, sha256: &str) -> Result<()> {
        sqlx::query("DELETE FROM blobs WHERE sha256 = $1")
            .bind(sha256)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    async fn lock(&self, sha256: &str) -> Result<crate::blobs::BlobLock> {
        let mut conn = self
            .guarded(async { Ok(self.locks.acquire().await?) })
            .await?;
        let key = format!("strata:blob:{sha256}");
        sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
            .bind(&key)
            .execute(&mut *conn)
            .await?;
        Ok(BlobLock::new(AdvisoryLock {
            conn: Some(conn),
            key,
        }))
    }
}
