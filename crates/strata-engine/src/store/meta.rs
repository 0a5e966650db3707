//! Facts about a store itself, written once for both backends (see [`super::queue`] for
//! how): that it answers, and its identity. The rest of a store's administration (table
//! statistics, optimisation, the pool) differs by backend and stays in `sqlite.rs` and
//! `postgres.rs`.
//!
//! Must not import: HTTP types, the cache.

use async_trait::async_trait;

use crate::error::Result;

/// A store's liveness and identity.
#[async_trait]
pub trait StoreMeta: Send + Sync + 'static {
    /// A cheap round trip proving the backend answers.
    async fn ping(&self) -> Result<()>;

    /// This store's random identity, made on first call and stable for its lifetime (the
    /// cache salts tenant scopes with it).
    async fn store_id(&self) -> Result<String>;
}

/// [`StoreMeta`] over one backend's store type (`conn()`).
macro_rules! meta_sql {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::meta::StoreMeta for $store {
            async fn ping(&self) -> $crate::error::Result<()> {
                sqlx::query("SELECT 1")
                    .execute(&mut *self.conn().await?)
                    .await?;
                Ok(())
            }

            async fn store_id(&self) -> $crate::error::Result<String> {
                let fresh = uuid::Uuid::now_v7().simple().to_string();
                sqlx::query(
                    "INSERT INTO strata_meta (key, value) VALUES ('store_id', $1) \
                     ON CONFLICT (key) DO NOTHING",
                )
                .bind(&fresh)
                .execute(&mut *self.conn().await?)
                .await?;
                let id: String =
                    sqlx::query_scalar("SELECT value FROM strata_meta WHERE key = 'store_id'")
                        .fetch_one(&mut *self.conn().await?)
                        .await?;
                Ok(id)
            }
        }
    };
}

pub(crate) use meta_sql;
