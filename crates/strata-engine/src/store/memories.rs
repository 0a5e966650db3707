//! The memories aggregate: a tenant's memories, their replacement history and their
//! embeddings; its SQL written once for both backends (see [`super::queue`] for how). What
//! differs is how a vector is bound (`vector_param`, as the chunks aggregate's).
//!
//! Replacement is one transaction: the replaced memory is marked `superseded_by` the new one
//! (only if it is still the owner's current memory) before the new row goes in, so the
//! unique index on an owner's current keys never sees two. A memory's history is the chain of
//! memories it replaced, read with a recursive query; deleting a memory deletes that chain
//! (a user who deletes a fact wants its earlier versions gone too).
//!
//! Must not import: HTTP types, the cache, the job runner.

use async_trait::async_trait;

use crate::error::Result;
use crate::ids::{MemoryId, TenantId};
use crate::memory::{Inserted, Memory, MemoryChange, MemoryFilter, MemoryHistory, NewMemory};

/// Columns of a memory row, in the order [`super::rows::memory_from_row`] reads them.
macro_rules! memory_columns {
    () => {
        "m.id, m.text, m.importance, m.metadata, m.session, m.key, m.occurred_at, \
         m.created_at, m.updated_at, m.superseded_by, m.access_count, m.last_accessed_at"
    };
}

pub(crate) use memory_columns;

/// The ids of a memory (`$2`, of owner `$1`) and of every memory it replaced, directly or
/// through others.
macro_rules! history_chain {
    () => {
        "WITH RECURSIVE chain(id) AS ( \
           SELECT id FROM memories WHERE owner = $1 AND id = $2 \
           UNION ALL \
           SELECT m.id FROM memories m JOIN chain c ON m.superseded_by = c.id \
           WHERE m.owner = $1) "
    };
}

pub(crate) use history_chain;

/// Which earlier memory an insert replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// None.
    Nothing,
    /// This one, which must be the owner's and current.
    Memory(MemoryId),
    /// The owner's current memory with the new memory's key, if there is one.
    Key,
}

/// Memories and their history.
#[async_trait]
pub trait MemoryStore: Send + Sync + 'static {
    /// Inserts a memory, replacing another as `replace` says, in one transaction. `None`
    /// (and nothing written) when `Replace::Memory` names no current memory of the owner.
    async fn insert_memory(&self, new: &NewMemory, replace: Replace) -> Result<Option<Inserted>>;

    /// One memory of the owner's (current or superseded).
    async fn get_memory(&self, owner: &TenantId, id: MemoryId) -> Result<Option<Memory>>;

    /// Up to `limit` of the owner's memories passing `filter`, newest first, strictly older
    /// than `before`.
    async fn list_memories(
        &self,
        owner: &TenantId,
        filter: &MemoryFilter,
        before: Option<MemoryId>,
        limit: u32,
    ) -> Result<Vec<Memory>>;

    /// The memory, every memory it replaced, and their earlier states; `None` when the
    /// owner has no such memory.
    async fn memory_history(&self, owner: &TenantId, id: MemoryId)
    -> Result<Option<MemoryHistory>>;

    /// Changes a current memory of the owner's in place, keeping its earlier state as a
    /// version; `None` when the owner has no such current memory.
    async fn change_memory(
        &self,
        owner: &TenantId,
        id: MemoryId,
        change: &MemoryChange,
    ) -> Result<Option<Memory>>;

    /// Every memory of the owner's (current and superseded), oldest first, each with its
    /// embedding when `model` made it: what a tenant's in-process working set is built from.
    async fn memory_set(
        &self,
        owner: &TenantId,
        model: &str,
    ) -> Result<Vec<(Memory, Option<Vec<f32>>)>>;

    /// Counts searches that returned these memories of the owner's, `(id, times)`, and
    /// stamps them accessed `at`; one transaction for the batch. Unknown ids are skipped.
    async fn record_access(
        &self,
        owner: &TenantId,
        hits: &[(MemoryId, u32)],
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<()>;

    /// Deletes a memory with its history; the ids of the memories deleted (for the
    /// in-process working sets), `None` when the owner has no such memory.
    async fn delete_memory(&self, owner: &TenantId, id: MemoryId) -> Result<Option<Vec<MemoryId>>>;
}

/// [`MemoryStore`] over one backend's store type (`conn()` and `begin()`).
macro_rules! memories_sql {
    (
        $store:ty,
        $db:ty,
        vector_param = $vector_param:literal,
        vector_cast = $vector_cast:literal,
        embedding = $embedding:literal
    ) => {
        /// One memory of the owner's, read on `conn` (inside a transaction or not).
        async fn memory_in(
            conn: &mut <$db as sqlx::Database>::Connection,
            owner: &str,
            id: &str,
        ) -> $crate::error::Result<Option<$crate::memory::Memory>> {
            let sql = concat!(
                "SELECT ",
                $crate::store::memories::memory_columns!(),
                " FROM memories m WHERE m.owner = $1 AND m.id = $2"
            );
            let row = sqlx::query(sql)
                .bind(owner)
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
            row.as_ref()
                .map($crate::store::rows::memory_from_row)
                .transpose()
        }

        /// Appends the owner and `filter` as conditions on `m` (after a `WHERE`).
        fn push_memory_filter<'a>(
            qb: &mut sqlx::QueryBuilder<'a, $db>,
            owner: &'a $crate::ids::TenantId,
            filter: &'a $crate::memory::MemoryFilter,
        ) {
            qb.push("m.owner = ").push_bind(owner.as_str());
            if !filter.include_superseded {
                qb.push(" AND m.superseded_by IS NULL");
            }
            if let Some(session) = &filter.session {
                qb.push(" AND m.session = ").push_bind(session.as_str());
            }
            if let Some(key) = &filter.key {
                qb.push(" AND m.key = ").push_bind(key.as_str());
            }
            if let Some(since) = filter.since {
                qb.push(" AND COALESCE(m.occurred_at, m.created_at) >= ")
                    .push_bind($crate::store::rows::ms(since));
            }
            if let Some(until) = filter.until {
                qb.push(" AND COALESCE(m.occurred_at, m.created_at) < ")
                    .push_bind($crate::store::rows::ms(until));
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::memories::MemoryStore for $store {
            async fn insert_memory(
                &self,
                new: &$crate::memory::NewMemory,
                replace: $crate::store::memories::Replace,
            ) -> $crate::error::Result<Option<$crate::memory::Inserted>> {
                use $crate::memory::Inserted;
                use $crate::store::memories::Replace;
                let mut tx = self.begin().await?;
                let now = $crate::store::rows::ms(chrono::Utc::now());
                let id = new.id.to_string();
                let owner = new.owner.as_str();
                // Mark the replaced memory first: the new row may take its key.
                let replaced: Option<String> = match (replace, &new.key) {
                    (Replace::Nothing, _) | (Replace::Key, None) => None,
                    (Replace::Memory(old), _) => {
                        let old = old.to_string();
                        let done = sqlx::query(
                            "UPDATE memories SET superseded_by = $1, updated_at = $2 \
                             WHERE owner = $3 AND id = $4 AND superseded_by IS NULL",
                        )
                        .bind(&id)
                        .bind(now)
                        .bind(owner)
                        .bind(&old)
                        .execute(&mut *tx)
                        .await?;
                        if done.rows_affected() == 0 {
                            return Ok(None);
                        }
                        Some(old)
                    }
                    (Replace::Key, Some(key)) => {
                        sqlx::query_scalar(
                            "UPDATE memories SET superseded_by = $1, updated_at = $2 \
                             WHERE owner = $3 AND key = $4 AND superseded_by IS NULL \
                             RETURNING id",
                        )
                        .bind(&id)
                        .bind(now)
                        .bind(owner)
                        .bind(key)
                        .fetch_optional(&mut *tx)
                        .await?
                    }
                };
                sqlx::query(concat!(
                    "INSERT INTO memories (id, owner, text, importance, metadata, session, key, \
                     occurred_at, created_at, updated_at, model, embedding) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, ",
                    $vector_param,
                    ")"
                ))
                .bind(&id)
                .bind(owner)
                .bind(&new.text)
                .bind(f64::from(new.importance))
                .bind(new.metadata.to_string())
                .bind(&new.session)
                .bind(&new.key)
                .bind(new.occurred_at.map($crate::store::rows::ms))
                .bind(now)
                .bind(&new.model)
                .bind(vector_value(&new.embedding))
                .execute(&mut *tx)
                .await?;
                let memory = memory_in(&mut tx, owner, &id).await?.ok_or_else(|| {
                    $crate::error::EngineError::Internal("inserted memory vanished".into())
                })?;
                tx.commit().await?;
                Ok(Some(match replaced {
                    None => Inserted::Created(memory),
                    Some(old) => Inserted::Superseded(
                        memory,
                        old.parse()
                            .map_err(|e| $crate::store::rows::corrupt("memory id", e))?,
                    ),
                }))
            }

            async fn get_memory(
                &self,
                owner: &$crate::ids::TenantId,
                id: $crate::ids::MemoryId,
            ) -> $crate::error::Result<Option<$crate::memory::Memory>> {
                memory_in(&mut *self.conn().await?, owner.as_str(), &id.to_string()).await
            }

            async fn list_memories(
                &self,
                owner: &$crate::ids::TenantId,
                filter: &$crate::memory::MemoryFilter,
                before: Option<$crate::ids::MemoryId>,
                limit: u32,
            ) -> $crate::error::Result<Vec<$crate::memory::Memory>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(concat!(
                    "SELECT ",
                    $crate::store::memories::memory_columns!(),
                    " FROM memories m WHERE "
                ));
                push_memory_filter(&mut qb, owner, filter);
                if let Some(before) = before {
                    qb.push(" AND m.id < ").push_bind(before.to_string());
                }
                qb.push(" ORDER BY m.id DESC LIMIT ")
                    .push_bind(i64::from(limit));
                let rows = qb.build().fetch_all(&mut *self.conn().await?).await?;
                rows.iter()
                    .map($crate::store::rows::memory_from_row)
                    .collect()
            }

            async fn memory_history(
                &self,
                owner: &$crate::ids::TenantId,
                id: $crate::ids::MemoryId,
            ) -> $crate::error::Result<Option<$crate::memory::MemoryHistory>> {
                use sqlx::Row as _;
                let mut conn = self.conn().await?;
                let sql = concat!(
                    $crate::store::memories::history_chain!(),
                    "SELECT ",
                    $crate::store::memories::memory_columns!(),
                    " FROM memories m JOIN chain c ON c.id = m.id ORDER BY m.id DESC"
                );
                let rows = sqlx::query(sql)
                    .bind(owner.as_str())
                    .bind(id.to_string())
                    .fetch_all(&mut *conn)
                    .await?;
                if rows.is_empty() {
                    return Ok(None);
                }
                let chain = rows
                    .iter()
                    .map($crate::store::rows::memory_from_row)
                    .collect::<$crate::error::Result<Vec<_>>>()?;
                let sql = concat!(
                    $crate::store::memories::history_chain!(),
                    "SELECT v.memory_id, v.text, v.importance, v.metadata, v.replaced_at, v.reason \
                     FROM memory_versions v JOIN chain c ON c.id = v.memory_id \
                     WHERE v.owner = $1 ORDER BY v.replaced_at DESC, v.memory_id DESC"
                );
                let rows = sqlx::query(sql)
                    .bind(owner.as_str())
                    .bind(id.to_string())
                    .fetch_all(&mut *conn)
                    .await?;
                let versions = rows
                    .iter()
                    .map(|r| {
                        let id: String = r.try_get("memory_id")?;
                        let metadata: String = r.try_get("metadata")?;
                        Ok($crate::memory::MemoryVersion {
                            memory_id: id
                                .parse()
                                .map_err(|e| $crate::store::rows::corrupt("memory id", e))?,
                            text: r.try_get("text")?,
                            importance: r.try_get::<f64, _>("importance")? as f32,
                            metadata: serde_json::from_str(&metadata)
                                .map_err(|e| $crate::store::rows::corrupt("metadata", e))?,
                            replaced_at: $crate::store::rows::from_ms(r.try_get("replaced_at")?)?,
                            reason: r.try_get("reason")?,
                        })
                    })
                    .collect::<$crate::error::Result<Vec<_>>>()?;
                Ok(Some($crate::memory::MemoryHistory { chain, versions }))
            }

            async fn change_memory(
                &self,
                owner: &$crate::ids::TenantId,
                id: $crate::ids::MemoryId,
                change: &$crate::memory::MemoryChange,
            ) -> $crate::error::Result<Option<$crate::memory::Memory>> {
                let mut tx = self.begin().await?;
                let now = $crate::store::rows::ms(chrono::Utc::now());
                let id = id.to_string();
                // The state being replaced becomes a version, only of a current memory.
                let kept = sqlx::query(
                    "INSERT INTO memory_versions \
                     (memory_id, owner, replaced_at, reason, text, importance, metadata) \
                     SELECT id, owner, $1, $2, text, importance, metadata FROM memories \
                     WHERE owner = $3 AND id = $4 AND superseded_by IS NULL",
                )
                .bind(now)
                .bind(change.reason)
                .bind(owner.as_str())
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                if kept.rows_affected() == 0 {
                    return Ok(None);
                }
                let mut qb = sqlx::QueryBuilder::<$db>::new("UPDATE memories SET updated_at = ");
                qb.push_bind(now);
                if let Some((text, model, embedding)) = &change.text {
                    qb.push(", text = ").push_bind(text.as_str());
                    qb.push(", model = ").push_bind(model.as_str());
                    qb.push(", embedding = ")
                        .push_bind(vector_value(embedding))
                        .push($vector_cast);
                }
                if let Some(importance) = change.importance {
                    qb.push(", importance = ").push_bind(f64::from(importance));
                }
                if let Some(metadata) = &change.metadata {
                    qb.push(", metadata = ").push_bind(metadata.to_string());
                }
                if let Some(session) = &change.session {
                    qb.push(", session = ").push_bind(session.as_deref());
                }
                if let Some(at) = change.occurred_at {
                    qb.push(", occurred_at = ")
                        .push_bind(at.map($crate::store::rows::ms));
                }
                qb.push(" WHERE owner = ")
                    .push_bind(owner.as_str())
                    .push(" AND id = ")
                    .push_bind(&id);
                qb.build().execute(&mut *tx).await?;
                let memory = memory_in(&mut tx, owner.as_str(), &id).await?;
                tx.commit().await?;
                Ok(memory)
            }

            async fn memory_set(
                &self,
                owner: &$crate::ids::TenantId,
                model: &str,
            ) -> $crate::error::Result<Vec<($crate::memory::Memory, Option<Vec<f32>>)>> {
                use sqlx::Row as _;
                let sql = concat!(
                    "SELECT m.model, ",
                    $embedding,
                    ", ",
                    $crate::store::memories::memory_columns!(),
                    " FROM memories m WHERE m.owner = $1 ORDER BY m.id"
                );
                let rows = sqlx::query(sql)
                    .bind(owner.as_str())
                    .fetch_all(&mut *self.conn().await?)
                    .await?;
                rows.iter()
                    .map(|r| {
                        let memory = $crate::store::rows::memory_from_row(r)?;
                        let vector = if r.try_get::<&str, _>("model")? == model {
                            Some(embedding_of(r)?)
                        } else {
                            None
                        };
                        Ok((memory, vector))
                    })
                    .collect()
            }

            async fn record_access(
                &self,
                owner: &$crate::ids::TenantId,
                hits: &[($crate::ids::MemoryId, u32)],
                at: chrono::DateTime<chrono::Utc>,
            ) -> $crate::error::Result<()> {
                if hits.is_empty() {
                    return Ok(());
                }
                let at = $crate::store::rows::ms(at);
                let mut tx = self.begin().await?;
                for (id, times) in hits {
                    sqlx::query(
                        "UPDATE memories SET access_count = access_count + $1, \
                         last_accessed_at = CASE WHEN last_accessed_at IS NULL \
                         OR last_accessed_at < $2 THEN $2 ELSE last_accessed_at END \
                         WHERE owner = $3 AND id = $4",
                    )
                    .bind(i64::from(*times))
                    .bind(at)
                    .bind(owner.as_str())
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn delete_memory(
                &self,
                owner: &$crate::ids::TenantId,
                id: $crate::ids::MemoryId,
            ) -> $crate::error::Result<Option<Vec<$crate::ids::MemoryId>>> {
                let sql = concat!(
                    $crate::store::memories::history_chain!(),
                    "DELETE FROM memories WHERE owner = $1 AND id IN (SELECT id FROM chain) \
                     RETURNING id"
                );
                let mut tx = self.begin().await?;
                let versions = concat!(
                    $crate::store::memories::history_chain!(),
                    "DELETE FROM memory_versions WHERE owner = $1 \
                     AND memory_id IN (SELECT id FROM chain)"
                );
                sqlx::query(versions)
                    .bind(owner.as_str())
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                let ids: Vec<String> = sqlx::query_scalar(sql)
                    .bind(owner.as_str())
                    .bind(id.to_string())
                    .fetch_all(&mut *tx)
                    .await?;
                if ids.is_empty() {
                    return Ok(None);
                }
                tx.commit().await?;
                ids.iter()
                    .map(|id| {
                        id.parse()
                            .map_err(|e| $crate::store::rows::corrupt("memory id", e))
                    })
                    .collect::<$crate::error::Result<Vec<_>>>()
                    .map(Some)
            }
        }
    };
}

pub(crate) use memories_sql;
