//! The chunks aggregate: a document's chunks, their embeddings, and the reads search and
//! the vector index make of them; its SQL written once for both backends (see
//! [`super::queue`] for how).
//!
//! What really differs is how a vector is stored: little-endian f32 bytes in a BLOB on
//! SQLite, a pgvector `vector` (written from and read as `real[]`) on PostgreSQL. Each
//! backend module therefore provides two functions the macro body calls, `embedding_of(row)`
//! (decode the `embedding` column) and `vector_value(&[f32])` (the value to bind for it), and
//! passes the SQL spelling of both as macro arguments; and how the first stored vector of each
//! text hash is picked (`GROUP BY` on SQLite, `DISTINCT ON` on PostgreSQL).
//!
//! Must not import: HTTP types, the cache, the job runner.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;

use crate::error::Result;
use crate::ids::{DocumentId, TenantId};

use super::queue::Lease;
use super::{ChunkFilter, HitRow, NewChunk};

/// Chunks and their vectors.
#[async_trait]
pub trait ChunkStore: Send + Sync + 'static {
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
    ) -> Result<HashMap<String, Vec<f32>>>;

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

    /// Up to `limit` embedded chunks with id greater than `after`, of one document when
    /// given: (id, owner, the text they are indexed by: the given title and the chunk's
    /// text, as [`crate::model::embedding_input`] joins them).
    async fn scan_texts(
        &self,
        model: &str,
        after: u64,
        limit: u32,
        document: Option<DocumentId>,
    ) -> Result<Vec<(u64, TenantId, String)>>;

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

    /// The chunks an in-process index may return under `filter`: `None` (any of the
    /// owner's) without one, else [`ChunkStore::candidate_ids`] as a set.
    async fn allowed_ids(
        &self,
        owner: &TenantId,
        model: &str,
        filter: &ChunkFilter,
    ) -> Result<Option<HashSet<u64>>> {
        if filter.is_empty() {
            return Ok(None);
        }
        let ids = self.candidate_ids(owner, model, filter).await?;
        Ok(Some(ids.into_iter().collect()))
    }

    /// The owner's chunks with these ids, with their documents' titles.
    async fn hit_rows(&self, owner: &TenantId, ids: &[u64]) -> Result<Vec<HitRow>>;
}

/// [`ChunkStore`] over one backend's store type; instantiate it after `queue_sql!`, whose
/// `lease_held` it uses. `embedding` is how a query selects the `embedding` column so
/// that `embedding_of` decodes it, `vector_param` how a bound `vector_value` is written,
/// `first_per_text` the `(select head, tail)` that keeps one row per text hash.
macro_rules! chunks_sql {
    (
        $store:ty,
        $db:ty,
        embedding = $embedding:literal,
        vector_param = $vector_param:literal,
        first_per_text = ($first_head:literal, $first_tail:literal)
    ) => {
        /// `FROM ... WHERE ...` selecting the owner's embedded chunks that pass `filter`.
        fn push_candidates(
            qb: &mut sqlx::QueryBuilder<'_, $db>,
            owner: &$crate::ids::TenantId,
            model: &str,
            filter: &$crate::store::ChunkFilter,
        ) {
            qb.push("FROM chunks c WHERE c.embedding IS NOT NULL AND c.owner = ")
                .push_bind(owner.as_str().to_owned())
                .push(" AND c.model = ")
                .push_bind(model.to_owned());
            $crate::store::push_chunk_filter(qb, filter);
        }

        impl $store {
            /// `(id, vector)` of the owner's embedded chunks passing `filter` and, when given,
            /// among `ids`: what exact scoring and candidate re-scoring read.
            async fn select_vectors(
                &self,
                owner: &$crate::ids::TenantId,
                model: &str,
                filter: &$crate::store::ChunkFilter,
                ids: Option<&[u64]>,
            ) -> $crate::error::Result<Vec<(u64, Vec<f32>)>> {
                use sqlx::Row as _;
                let mut qb =
                    sqlx::QueryBuilder::<$db>::new(concat!("SELECT c.id, ", $embedding, " "));
                push_candidates(&mut qb, owner, model, filter);
                if let Some(ids) = ids {
                    $crate::store::push_chunk_ids(&mut qb, ids);
                }
                let rows = qb.build().fetch_all(&mut *self.conn().await?).await?;
                rows.iter()
                    .map(|r| Ok((r.try_get::<i64, _>("id")? as u64, embedding_of(r)?)))
                    .collect()
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::chunks::ChunkStore for $store {
            async fn clear_chunks(
                &self,
                lease: &$crate::store::queue::Lease,
                document: $crate::ids::DocumentId,
            ) -> $crate::error::Result<Option<Vec<u64>>> {
                let mut tx = self.begin().await?;
                if !lease_held(&mut tx, lease).await? {
                    return Ok(None);
                }
                let ids: Vec<i64> =
                    sqlx::query_scalar("DELETE FROM chunks WHERE document_id = $1 RETURNING id")
                        .bind(document.to_string())
                        .fetch_all(&mut *tx)
                        .await?;
                tx.commit().await?;
                Ok(Some(ids.into_iter().map(|i| i as u64).collect()))
            }

            async fn write_chunks(
                &self,
                lease: &$crate::store::queue::Lease,
                owner: &$crate::ids::TenantId,
                document: $crate::ids::DocumentId,
                chunks: &[$crate::store::NewChunk],
            ) -> $crate::error::Result<Option<Vec<u64>>> {
                let mut tx = self.begin().await?;
                if !lease_held(&mut tx, lease).await? {
                    return Ok(None);
                }
                let doc = document.to_string();
                let mut ids = Vec::with_capacity(chunks.len());
                for c in chunks {
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO chunks (document_id, ordinal, owner, text, token_count, \
                         text_sha256) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    )
                    .bind(&doc)
                    .bind(i64::from(c.ordinal))
                    .bind(owner.as_str())
                    .bind(&c.text)
                    .bind(i64::from(c.token_count))
                    .bind(&c.text_sha256)
                    .fetch_one(&mut *tx)
                    .await?;
                    ids.push(id as u64);
                }
                tx.commit().await?;
                Ok(Some(ids))
            }

            async fn find_embeddings(
                &self,
                model: &str,
                text_sha256: &[String],
            ) -> $crate::error::Result<std::collections::HashMap<String, Vec<f32>>> {
                use sqlx::Row as _;
                let mut out = std::collections::HashMap::new();
                for part in text_sha256.chunks(500) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(concat!(
                        $first_head,
                        "text_sha256, ",
                        $embedding,
                        " FROM chunks c WHERE c.embedding IS NOT NULL AND c.model = "
                    ));
                    qb.push_bind(model.to_owned())
                        .push(" AND c.text_sha256 IN (");
                    let mut sep = qb.separated(", ");
                    for h in part {
                        sep.push_bind(h.clone());
                    }
                    qb.push(")").push($first_tail);
                    for row in qb.build().fetch_all(&mut *self.conn().await?).await? {
                        out.insert(row.try_get("text_sha256")?, embedding_of(&row)?);
                    }
                }
                Ok(out)
            }

            async fn set_embeddings(
                &self,
                lease: &$crate::store::queue::Lease,
                model: &str,
                rows: &[(u64, Vec<f32>)],
            ) -> $crate::error::Result<bool> {
                let mut tx = self.begin().await?;
                if !lease_held(&mut tx, lease).await? {
                    return Ok(false);
                }
                for (id, v) in rows {
                    sqlx::query(concat!(
                        "UPDATE chunks SET model = $2, embedding = ",
                        $vector_param,
                        " WHERE id = $1"
                    ))
                    .bind(*id as i64)
                    .bind(model)
                    .bind(vector_value(v))
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn embedded_fingerprint(&self, model: &str) -> $crate::error::Result<(u64, u64)> {
                // Database integers are signed 64-bit: the wrapping sum is computed here.
                let mut count = 0u64;
                let mut sum = 0u64;
                let mut after = 0i64;
                loop {
                    let ids: Vec<i64> = sqlx::query_scalar(
                        "SELECT id FROM chunks WHERE model = $1 AND embedding IS NOT NULL \
                         AND id > $2 ORDER BY id LIMIT 10000",
                    )
                    .bind(model)
                    .bind(after)
                    .fetch_all(&mut *self.conn().await?)
                    .await?;
                    let Some(&last) = ids.last() else { break };
                    count += ids.len() as u64;
                    sum = ids.iter().fold(sum, |s, &i| s.wrapping_add(i as u64));
                    after = last;
                }
                Ok((count, sum))
            }

            async fn scan_vectors(
                &self,
                model: &str,
                after: u64,
                limit: u32,
            ) -> $crate::error::Result<Vec<(u64, $crate::ids::TenantId, Vec<f32>)>> {
                use sqlx::Row as _;
                let rows = sqlx::query(concat!(
                    "SELECT c.id, c.owner, ",
                    $embedding,
                    " FROM chunks c WHERE c.model = $1 AND c.embedding IS NOT NULL \
                     AND c.id > $2 ORDER BY c.id LIMIT $3"
                ))
                .bind(model)
                .bind(after as i64)
                .bind(i64::from(limit))
                .fetch_all(&mut *self.conn().await?)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok((
                            r.try_get::<i64, _>("id")? as u64,
                            $crate::store::rows::owner_of(r)?,
                            embedding_of(r)?,
                        ))
                    })
                    .collect()
            }

            async fn scan_owners(
                &self,
                model: &str,
                after: u64,
                limit: u32,
            ) -> $crate::error::Result<Vec<(u64, $crate::ids::TenantId)>> {
                use sqlx::Row as _;
                let rows = sqlx::query(
                    "SELECT id, owner FROM chunks WHERE model = $1 AND embedding IS NOT NULL \
                     AND id > $2 ORDER BY id LIMIT $3",
                )
                .bind(model)
                .bind(after as i64)
                .bind(i64::from(limit))
                .fetch_all(&mut *self.conn().await?)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok((
                            r.try_get::<i64, _>("id")? as u64,
                            $crate::store::rows::owner_of(r)?,
                        ))
                    })
                    .collect()
            }

            async fn scan_texts(
                &self,
                model: &str,
                after: u64,
                limit: u32,
                document: Option<$crate::ids::DocumentId>,
            ) -> $crate::error::Result<Vec<(u64, $crate::ids::TenantId, String)>> {
                use sqlx::Row as _;
                // Two statements, so each has its index (one document's chunks, or by id).
                let sql = if document.is_some() {
                    "SELECT c.id, c.owner, d.title, d.sha256, c.text \
                     FROM chunks c JOIN documents d ON d.id = c.document_id \
                     WHERE c.model = $1 AND c.embedding IS NOT NULL AND c.id > $2 \
                     AND c.document_id = $4 ORDER BY c.id LIMIT $3"
                } else {
                    "SELECT c.id, c.owner, d.title, d.sha256, c.text \
                     FROM chunks c JOIN documents d ON d.id = c.document_id \
                     WHERE c.model = $1 AND c.embedding IS NOT NULL AND c.id > $2 \
                     AND $4 IS NULL ORDER BY c.id LIMIT $3"
                };
                let rows = sqlx::query(sql)
                    .bind(model)
                    .bind(after as i64)
                    .bind(i64::from(limit))
                    .bind(document.map(|d| d.to_string()))
                    .fetch_all(&mut *self.conn().await?)
                    .await?;
                rows.iter()
                    .map(|r| {
                        let title: String = r.try_get("title")?;
                        let sha256: String = r.try_get("sha256")?;
                        let text: String = r.try_get("text")?;
                        Ok((
                            r.try_get::<i64, _>("id")? as u64,
                            $crate::store::rows::owner_of(r)?,
                            $crate::model::embedding_input(
                                $crate::model::given_title(&title, &sha256),
                                &text,
                            ),
                        ))
                    })
                    .collect()
            }

            async fn count_candidates(
                &self,
                owner: &$crate::ids::TenantId,
                model: &str,
                filter: &$crate::store::ChunkFilter,
            ) -> $crate::error::Result<u64> {
                let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT COUNT(*) ");
                push_candidates(&mut qb, owner, model, filter);
                let n: i64 = qb
                    .build_query_scalar()
                    .fetch_one(&mut *self.conn().await?)
                    .await?;
                Ok(n as u64)
            }

            async fn candidate_vectors(
                &self,
                owner: &$crate::ids::TenantId,
                model: &str,
                filter: &$crate::store::ChunkFilter,
            ) -> $crate::error::Result<Vec<(u64, Vec<f32>)>> {
                self.select_vectors(owner, model, filter, None).await
            }

            async fn vectors_of(
                &self,
                owner: &$crate::ids::TenantId,
                model: &str,
                ids: &[u64],
            ) -> $crate::error::Result<Vec<(u64, Vec<f32>)>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let all = $crate::store::ChunkFilter::default();
                self.select_vectors(owner, model, &all, Some(ids)).await
            }

            async fn candidate_ids(
                &self,
                owner: &$crate::ids::TenantId,
                model: &str,
                filter: &$crate::store::ChunkFilter,
            ) -> $crate::error::Result<Vec<u64>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT c.id ");
                push_candidates(&mut qb, owner, model, filter);
                let ids: Vec<i64> = qb
                    .build_query_scalar()
                    .fetch_all(&mut *self.conn().await?)
                    .await?;
                Ok(ids.into_iter().map(|i| i as u64).collect())
            }

            async fn hit_rows(
                &self,
                owner: &$crate::ids::TenantId,
                ids: &[u64],
            ) -> $crate::error::Result<Vec<$crate::store::HitRow>> {
                use sqlx::Row as _;
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut qb = sqlx::QueryBuilder::<$db>::new(
                    "SELECT c.id, c.document_id, c.ordinal, c.text, d.title FROM chunks c \
                     JOIN documents d ON d.id = c.document_id WHERE c.owner = ",
                );
                qb.push_bind(owner.as_str().to_owned());
                $crate::store::push_chunk_ids(&mut qb, ids);
                let rows = qb.build().fetch_all(&mut *self.conn().await?).await?;
                rows.iter()
                    .map(|r| {
                        let doc: String = r.try_get("document_id")?;
                        Ok($crate::store::HitRow {
                            id: r.try_get::<i64, _>("id")? as u64,
                            document_id: doc
                                .parse()
                                .map_err(|e| $crate::store::rows::corrupt("document id", e))?,
                            title: r.try_get("title")?,
                            ordinal: r.try_get::<i64, _>("ordinal")? as u32,
                            text: r.try_get("text")?,
                        })
                    })
                    .collect()
            }
        }
    };
}

pub(crate) use chunks_sql;
