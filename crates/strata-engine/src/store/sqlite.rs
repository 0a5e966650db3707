//! The embedded backend: SQLite in WAL mode through a sqlx pool.
//!
//! SQLite serialises writers, so every multi-statement write runs in one `BEGIN IMMEDIATE`
//! transaction and lease checks inside it are race-free.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, QueryBuilder, Row, Sqlite, Transaction};

use super::documents::document_subject;
use super::rows::{corrupt, document_from_row, is_unique_violation, ms, owner_of};
use super::{
    ChunkFilter, Deleted, HitRow, IndexStats, InsertOutcome, Lease, NewChunk, NewJob, Store,
    TableStats, vector_from_bytes, vector_to_bytes,
};
use crate::error::{EngineError, Result};
use crate::ids::{DocumentId, TenantId};
use crate::model::{Chunk, Document, DocumentFilter, DocumentPatch, NewDocument, TagCount};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Pool settings for the SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Maximum open connections (readers run in parallel under WAL; writers queue).
    pub max_connections: u32,
    /// How long a request waits for a connection before failing with 503.
    pub acquire_timeout: Duration,
    /// How long a writer waits for SQLite's write lock.
    pub busy_timeout: Duration,
    /// Statements slower than this are logged (and listed in the database stats).
    pub slow_statement: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            busy_timeout: Duration::from_secs(10),
            slow_statement: Duration::from_millis(500),
        }
    }
}

/// [`Store`] over a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    meter: std::sync::Arc<super::meter::PoolMeter>,
}

const DOC_COLUMNS: &str = "d.id, d.title, d.filename, d.media_type, d.byte_size, d.sha256, \
     d.metadata, d.status, d.error, d.chunk_count, d.job_id, d.created_at, d.updated_at, \
     (SELECT json_group_array(tag) FROM (SELECT tag FROM document_tags t \
        WHERE t.document_id = d.id ORDER BY tag)) AS tags";

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and runs migrations.
    pub async fn open(path: &Path, opts: &SqliteOptions) -> Result<Self> {
        Self::connect(SqliteConnectOptions::new().filename(path), opts).await
    }

    /// Opens a database from a `sqlite://` URL and runs migrations.
    pub async fn open_url(url: &str, opts: &SqliteOptions) -> Result<Self> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| EngineError::Config(format!("invalid sqlite URL: {e}")))?;
        Self::connect(connect, opts).await
    }

    /// Every connection: WAL, foreign keys, and a 1 MB page cache each. Reads that miss
    /// it are served from the OS page cache; with 8 connections a larger cache (16 MB each
    /// before) kept up to 128 MB of private copies of the same pages resident once
    /// searches started reading stored vectors to re-score candidates.
    async fn connect(connect: SqliteConnectOptions, opts: &SqliteOptions) -> Result<Self> {
        let connect = connect
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(opts.busy_timeout)
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-1000")
            .log_slow_statements(log::LevelFilter::Warn, opts.slow_statement);
        let pool = SqlitePoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(connect)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool,
            meter: std::sync::Arc::default(),
        })
    }

    /// `(id, vector)` of the owner's embedded chunks passing `filter` and, when given, among
    /// `ids`: what exact scoring and candidate re-scoring read.
    async fn select_vectors(
        &self,
        owner: &TenantId,
        model: &str,
        filter: &ChunkFilter,
        ids: Option<&[u64]>,
    ) -> Result<Vec<(u64, Vec<f32>)>> {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT c.id, c.embedding ");
        push_candidates(&mut qb, owner, model, filter);
        if let Some(ids) = ids {
            super::push_chunk_ids(&mut qb, ids);
        }
        let rows = qb.build().fetch_all(&mut *self.conn().await?).await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<i64, _>("id")? as u64, embedding_of(r)?)))
            .collect()
    }

    /// A pooled connection, counted and timed by the meter.
    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<Sqlite>> {
        self.meter.acquire(&self.pool).await
    }

    async fn begin(&self) -> Result<Transaction<'static, Sqlite>> {
        // `BEGIN IMMEDIATE` takes the write lock up front, so a read-then-write inside the
        // transaction cannot fail half-way with SQLITE_BUSY on lock upgrade.
        let conn = self.conn().await?;
        Transaction::begin(conn, Some("BEGIN IMMEDIATE".into()))
            .await
            .map_err(EngineError::from)
    }
}

/// The `embedding` column of a row, decoded.
fn embedding_of(row: &SqliteRow) -> Result<Vec<f32>> {
    let bytes: Vec<u8> = row.try_get("embedding")?;
    vector_from_bytes(&bytes).ok_or_else(|| corrupt("embedding", "bad length"))
}

/// `FROM ... WHERE ...` selecting the owner's embedded chunks that pass `filter`.
fn push_candidates(
    qb: &mut QueryBuilder<'_, Sqlite>,
    owner: &TenantId,
    model: &str,
    filter: &ChunkFilter,
) {
    qb.push("FROM chunks c WHERE c.embedding IS NOT NULL AND c.owner = ")
        .push_bind(owner.as_str().to_owned())
        .push(" AND c.model = ")
        .push_bind(model.to_owned());
    if !filter.tags.is_empty() {
        qb.push(" AND EXISTS (SELECT 1 FROM document_tags t WHERE t.document_id = c.document_id AND t.tag IN (");
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

async fn get_document_in(
    tx: &mut Transaction<'static, Sqlite>,
    owner: &TenantId,
    id: &str,
) -> Result<Option<Document>> {
    let sql = format!("SELECT {DOC_COLUMNS} FROM documents d WHERE d.owner = ?1 AND d.id = ?2");
    let row = sqlx::query(&sql)
        .bind(owner.as_str())
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(document_from_row).transpose()
}

super::queue::queue_sql!(SqliteStore, sqlx::Sqlite, skip_locked = "");
super::documents::document_states_sql!(SqliteStore);

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn insert_document(
        &self,
        doc: NewDocument,
        id: DocumentId,
        job: &NewJob,
    ) -> Result<InsertOutcome> {
        let mut tx = self.begin().await?;
        let now = ms(Utc::now());
        let id_s = id.to_string();
        let job_s = job.id.to_string();
        let inserted = sqlx::query(
            "INSERT INTO documents (id, owner, title, filename, media_type, byte_size, sha256, \
             metadata, status, chunk_count, job_id, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'queued', 0, ?9, ?10, ?10)",
        )
        .bind(&id_s)
        .bind(doc.owner.as_str())
        .bind(&doc.title)
        .bind(&doc.filename)
        .bind(doc.media_type.as_str())
        .bind(doc.byte_size as i64)
        .bind(&doc.sha256)
        .bind(doc.metadata.to_string())
        .bind(&job_s)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                drop(tx);
                return match self.find_by_sha256(&doc.owner, &doc.sha256).await? {
                    Some(existing) => Ok(InsertOutcome::Duplicate(existing)),
                    None => Err(EngineError::Unavailable(
                        "concurrent delete of a duplicate; retry".into(),
                    )),
                };
            }
            Err(e) => return Err(EngineError::from(e)),
        }
        for tag in &doc.tags {
            sqlx::query("INSERT INTO document_tags (document_id, owner, tag) VALUES (?1, ?2, ?3)")
                .bind(&id_s)
                .bind(doc.owner.as_str())
                .bind(tag)
                .execute(&mut *tx)
                .await?;
        }
        enqueue_in(&mut tx, job).await?;
        let created = get_document_in(&mut tx, &doc.owner, &id_s)
            .await?
            .ok_or_else(|| EngineError::Internal("inserted document vanished".into()))?;
        tx.commit().await?;
        Ok(InsertOutcome::Created(created))
    }

    async fn find_by_sha256(&self, owner: &TenantId, sha256: &str) -> Result<Option<Document>> {
        let sql =
            format!("SELECT {DOC_COLUMNS} FROM documents d WHERE d.owner = ?1 AND d.sha256 = ?2");
        let row = sqlx::query(&sql)
            .bind(owner.as_str())
            .bind(sha256)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        row.as_ref().map(document_from_row).transpose()
    }

    async fn get_document(&self, owner: &TenantId, id: DocumentId) -> Result<Option<Document>> {
        let sql = format!("SELECT {DOC_COLUMNS} FROM documents d WHERE d.owner = ?1 AND d.id = ?2");
        let row = sqlx::query(&sql)
            .bind(owner.as_str())
            .bind(id.to_string())
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        row.as_ref().map(document_from_row).transpose()
    }

    async fn list_documents(
        &self,
        owner: &TenantId,
        filter: &DocumentFilter,
        before: Option<DocumentId>,
        limit: u32,
    ) -> Result<Vec<Document>> {
        let sql = format!(
            "SELECT {DOC_COLUMNS} FROM documents d \
             WHERE d.owner = ?1 \
               AND (?2 IS NULL OR d.status = ?2) \
               AND (?3 IS NULL OR EXISTS (SELECT 1 FROM document_tags t \
                    WHERE t.owner = ?1 AND t.tag = ?3 AND t.document_id = d.id)) \
               AND (?4 IS NULL OR d.id < ?4) \
             ORDER BY d.id DESC LIMIT ?5"
        );
        let rows = sqlx::query(&sql)
            .bind(owner.as_str())
            .bind(filter.status.map(|s| s.as_str()))
            .bind(filter.tag.as_deref())
            .bind(before.map(|b| b.to_string()))
            .bind(limit as i64)
            .fetch_all(&mut *self.conn().await?)
            .await?;
        rows.iter().map(document_from_row).collect()
    }

    async fn update_document(
        &self,
        owner: &TenantId,
        id: DocumentId,
        patch: &DocumentPatch,
    ) -> Result<Option<Document>> {
        let mut tx = self.begin().await?;
        let id_s = id.to_string();
        let res = sqlx::query(
            "UPDATE documents SET title = COALESCE(?3, title), \
             metadata = COALESCE(?4, metadata), updated_at = ?5 \
             WHERE owner = ?1 AND id = ?2",
        )
        .bind(owner.as_str())
        .bind(&id_s)
        .bind(patch.title.as_deref())
        .bind(patch.metadata.as_ref().map(|m| m.to_string()))
        .bind(ms(Utc::now()))
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            return Ok(None);
        }
        if let Some(tags) = &patch.tags {
            sqlx::query("DELETE FROM document_tags WHERE document_id = ?1")
                .bind(&id_s)
                .execute(&mut *tx)
                .await?;
            for tag in tags {
                sqlx::query(
                    "INSERT INTO document_tags (document_id, owner, tag) VALUES (?1, ?2, ?3)",
                )
                .bind(&id_s)
                .bind(owner.as_str())
                .bind(tag)
                .execute(&mut *tx)
                .await?;
            }
        }
        let doc = get_document_in(&mut tx, owner, &id_s).await?;
        tx.commit().await?;
        Ok(doc)
    }

    async fn delete_document(&self, owner: &TenantId, id: DocumentId) -> Result<Option<Deleted>> {
        let mut tx = self.begin().await?;
        let id_s = id.to_string();
        let chunk_ids: Vec<i64> = sqlx::query_scalar(
            "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id \
             WHERE d.owner = ?1 AND d.id = ?2 AND c.embedding IS NOT NULL",
        )
        .bind(owner.as_str())
        .bind(&id_s)
        .fetch_all(&mut *tx)
        .await?;
        let sha: Option<String> = sqlx::query_scalar(
            "DELETE FROM documents WHERE owner = ?1 AND id = ?2 RETURNING sha256",
        )
        .bind(owner.as_str())
        .bind(&id_s)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(sha256) = sha else {
            return Ok(None);
        };
        // Tags and chunks go with the row (ON DELETE CASCADE); unfinished jobs are cancelled
        // and their leases revoked, so a worker still busy with it stops at its next write.
        let now = ms(Utc::now());
        sqlx::query(super::queue::CANCEL_SUBJECT)
            .bind(document_subject(id))
            .bind(now)
            .bind("document deleted")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(Deleted {
            sha256,
            chunk_ids: chunk_ids.into_iter().map(|i| i as u64).collect(),
        }))
    }

    async fn count_sha256_refs(&self, sha256: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM documents WHERE sha256 = ?1")
            .bind(sha256)
            .fetch_one(&mut *self.conn().await?)
            .await?;
        Ok(n as u64)
    }

    async fn tag_counts(&self, owner: &TenantId) -> Result<Vec<TagCount>> {
        let rows = sqlx::query(
            "SELECT tag, COUNT(*) AS n FROM document_tags WHERE owner = ?1 \
             GROUP BY tag ORDER BY n DESC, tag ASC",
        )
        .bind(owner.as_str())
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TagCount {
                    tag: r.try_get("tag")?,
                    count: r.try_get::<i64, _>("n")? as u64,
                })
            })
            .collect()
    }

    async fn list_chunks(
        &self,
        owner: &TenantId,
        id: DocumentId,
        from: u32,
        limit: u32,
    ) -> Result<Vec<Chunk>> {
        let rows = sqlx::query(
            "SELECT ordinal, text, token_count, embedding IS NOT NULL AS embedded FROM chunks \
             WHERE owner = ?1 AND document_id = ?2 AND ordinal >= ?3 ORDER BY ordinal LIMIT ?4",
        )
        .bind(owner.as_str())
        .bind(id.to_string())
        .bind(from as i64)
        .bind(limit as i64)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Chunk {
                    document_id: id,
                    ordinal: r.try_get::<i64, _>("ordinal")? as u32,
                    text: r.try_get("text")?,
                    token_count: r.try_get::<i64, _>("token_count")? as u32,
                    embedded: r.try_get("embedded")?,
                })
            })
            .collect()
    }

    async fn clear_chunks(&self, lease: &Lease, document: DocumentId) -> Result<Option<Vec<u64>>> {
        let mut tx = self.begin().await?;
        if !lease_held(&mut tx, lease).await? {
            return Ok(None);
        }
        let ids: Vec<i64> =
            sqlx::query_scalar("DELETE FROM chunks WHERE document_id = ?1 RETURNING id")
                .bind(document.to_string())
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(Some(ids.into_iter().map(|i| i as u64).collect()))
    }

    async fn write_chunks(
        &self,
        lease: &Lease,
        owner: &TenantId,
        document: DocumentId,
        chunks: &[NewChunk],
    ) -> Result<Option<Vec<u64>>> {
        let mut tx = self.begin().await?;
        if !lease_held(&mut tx, lease).await? {
            return Ok(None);
        }
        let doc = document.to_string();
        let mut ids = Vec::with_capacity(chunks.len());
        for c in chunks {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO chunks (document_id, ordinal, owner, text, token_count, text_sha256) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
            )
            .bind(&doc)
            .bind(c.ordinal as i64)
            .bind(owner.as_str())
            .bind(&c.text)
            .bind(c.token_count as i64)
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
    ) -> Result<std::collections::HashMap<String, Vec<f32>>> {
        let mut out = std::collections::HashMap::new();
        for part in text_sha256.chunks(500) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "SELECT text_sha256, embedding FROM chunks WHERE embedding IS NOT NULL AND model = ",
            );
            qb.push_bind(model).push(" AND text_sha256 IN (");
            let mut sep = qb.separated(", ");
            for h in part {
                sep.push_bind(h);
            }
            qb.push(") GROUP BY text_sha256");
            for row in qb.build().fetch_all(&mut *self.conn().await?).await? {
                out.insert(row.try_get("text_sha256")?, embedding_of(&row)?);
            }
        }
        Ok(out)
    }

    async fn set_embeddings(
        &self,
        lease: &Lease,
        model: &str,
        rows: &[(u64, Vec<f32>)],
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        if !lease_held(&mut tx, lease).await? {
            return Ok(false);
        }
        for (id, v) in rows {
            sqlx::query("UPDATE chunks SET model = ?2, embedding = ?3 WHERE id = ?1")
                .bind(*id as i64)
                .bind(model)
                .bind(vector_to_bytes(v))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn embedded_fingerprint(&self, model: &str) -> Result<(u64, u64)> {
        // SQLite integers are 64-bit signed; a wrapping sum is computed here, not in SQL.
        let mut count = 0u64;
        let mut sum = 0u64;
        let mut after = 0i64;
        loop {
            let ids: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM chunks WHERE model = ?1 AND embedding IS NOT NULL AND id > ?2 \
                 ORDER BY id LIMIT 10000",
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
    ) -> Result<Vec<(u64, TenantId, Vec<f32>)>> {
        let rows = sqlx::query(
            "SELECT id, owner, embedding FROM chunks WHERE model = ?1 AND embedding IS NOT NULL \
             AND id > ?2 ORDER BY id LIMIT ?3",
        )
        .bind(model)
        .bind(after as i64)
        .bind(limit as i64)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<i64, _>("id")? as u64,
                    owner_of(r)?,
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
    ) -> Result<Vec<(u64, TenantId)>> {
        let rows = sqlx::query(
            "SELECT id, owner FROM chunks WHERE model = ?1 AND embedding IS NOT NULL \
             AND id > ?2 ORDER BY id LIMIT ?3",
        )
        .bind(model)
        .bind(after as i64)
        .bind(limit as i64)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<i64, _>("id")? as u64, owner_of(r)?)))
            .collect()
    }

    async fn count_candidates(
        &self,
        owner: &TenantId,
        model: &str,
        filter: &ChunkFilter,
    ) -> Result<u64> {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) ");
        push_candidates(&mut qb, owner, model, filter);
        let n: i64 = qb
            .build_query_scalar()
            .fetch_one(&mut *self.conn().await?)
            .await?;
        Ok(n as u64)
    }

    async fn candidate_vectors(
        &self,
        owner: &TenantId,
        model: &str,
        filter: &ChunkFilter,
    ) -> Result<Vec<(u64, Vec<f32>)>> {
        self.select_vectors(owner, model, filter, None).await
    }

    async fn vectors_of(
        &self,
        owner: &TenantId,
        model: &str,
        ids: &[u64],
    ) -> Result<Vec<(u64, Vec<f32>)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.select_vectors(owner, model, &ChunkFilter::default(), Some(ids))
            .await
    }

    async fn candidate_ids(
        &self,
        owner: &TenantId,
        model: &str,
        filter: &ChunkFilter,
    ) -> Result<Vec<u64>> {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT c.id ");
        push_candidates(&mut qb, owner, model, filter);
        let ids: Vec<i64> = qb
            .build_query_scalar()
            .fetch_all(&mut *self.conn().await?)
            .await?;
        Ok(ids.into_iter().map(|i| i as u64).collect())
    }

    async fn hit_rows(&self, owner: &TenantId, ids: &[u64]) -> Result<Vec<HitRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT c.id, c.document_id, c.ordinal, c.text, d.title FROM chunks c \
             JOIN documents d ON d.id = c.document_id WHERE c.owner = ",
        );
        qb.push_bind(owner.as_str());
        super::push_chunk_ids(&mut qb, ids);
        let rows = qb.build().fetch_all(&mut *self.conn().await?).await?;
        rows.iter()
            .map(|r| {
                let doc: String = r.try_get("document_id")?;
                Ok(HitRow {
                    id: r.try_get::<i64, _>("id")? as u64,
                    document_id: doc.parse().map_err(|e| corrupt("document id", e))?,
                    title: r.try_get("title")?,
                    ordinal: r.try_get::<i64, _>("ordinal")? as u32,
                    text: r.try_get("text")?,
                })
            })
            .collect()
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    async fn store_id(&self) -> Result<String> {
        let fresh = uuid::Uuid::now_v7().simple().to_string();
        sqlx::query("INSERT INTO strata_meta (key, value) VALUES ('store_id', ?) ON CONFLICT (key) DO NOTHING")
            .bind(&fresh)
            .execute(&mut *self.conn().await?)
            .await?;
        let id: String = sqlx::query_scalar("SELECT value FROM strata_meta WHERE key = 'store_id'")
            .fetch_one(&mut *self.conn().await?)
            .await?;
        Ok(id)
    }

    fn pool_stats(&self) -> super::meter::PoolStats {
        self.meter.stats(&self.pool)
    }

    async fn table_stats(&self) -> Result<Vec<TableStats>> {
        let mut conn = self.conn().await?;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_schema WHERE type = 'table' \
             AND name NOT LIKE 'sqlite%' AND name NOT LIKE '\\_sqlx%' ESCAPE '\\' ORDER BY name",
        )
        .fetch_all(&mut *conn)
        .await?;
        let mut out = Vec::with_capacity(tables.len());
        for table in tables {
            let rows: i64 = sqlx::query_scalar(&format!(
                "SELECT COUNT(*) FROM \"{}\"",
                table.replace('"', "\"\"")
            ))
            .fetch_one(&mut *conn)
            .await?;
            let indexes: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = ?1 ORDER BY name",
            )
            .bind(&table)
            .fetch_all(&mut *conn)
            .await?;
            out.push(TableStats {
                table,
                rows: rows as u64,
                // SQLite keeps no per-table sizes or index scan counts without the dbstat
                // extension; the file size is in the database stats.
                table_bytes: None,
                indexes: indexes
                    .into_iter()
                    .map(|name| IndexStats {
                        name,
                        bytes: None,
                        scans: None,
                    })
                    .collect(),
            });
        }
        Ok(out)
    }

    async fn optimize(&self) -> Result<Vec<String>> {
        let mut conn = self.conn().await?;
        let mut ran = Vec::new();
        for sql in [
            "ANALYZE",
            "PRAGMA optimize",
            "PRAGMA wal_checkpoint(TRUNCATE)",
        ] {
            sqlx::query(sql).execute(&mut *conn).await?;
            ran.push(sql.to_owned());
        }
        Ok(ran)
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
