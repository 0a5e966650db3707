//! The embedded backend: SQLite in WAL mode through a sqlx pool.
//!
//! SQLite serialises writers, so every multi-statement write runs in one `BEGIN IMMEDIATE`
//! transaction and lease checks inside it are race-free.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Row, Sqlite, Transaction};

use super::rows::corrupt;
use super::{IndexStats, Store, TableStats, vector_from_bytes, vector_to_bytes};
use crate::error::{EngineError, Result};

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

/// A vector as stored in the `embedding` BLOB: little-endian f32 bytes.
fn vector_value(v: &[f32]) -> Vec<u8> {
    vector_to_bytes(v)
}

/// The `embedding` column of a row, decoded.
fn embedding_of(row: &SqliteRow) -> Result<Vec<f32>> {
    let bytes: Vec<u8> = row.try_get("embedding")?;
    vector_from_bytes(&bytes).ok_or_else(|| corrupt("embedding", "bad length"))
}

super::queue::queue_sql!(SqliteStore, sqlx::Sqlite, skip_locked = "");
super::chunks::chunks_sql!(
    SqliteStore,
    sqlx::Sqlite,
    embedding = "c.embedding",
    vector_param = "$3",
    first_per_text = ("SELECT ", " GROUP BY c.text_sha256")
);
super::documents::documents_sql!(
    SqliteStore,
    sqlx::Sqlite,
    tags_json = "(SELECT json_group_array(tag) FROM (SELECT tag FROM document_tags t WHERE t.document_id = d.id ORDER BY tag))"
);

super::memories::memories_sql!(
    SqliteStore,
    sqlx::Sqlite,
    vector_param = "$11",
    vector_cast = "",
    embedding = "m.embedding"
);

super::meta::meta_sql!(SqliteStore);
super::sessions::sessions_sql!(SqliteStore, sqlx::Sqlite);
super::budgets::budgets_sql!(SqliteStore, sqlx::Sqlite);
super::conversations::conversations_sql!(SqliteStore, sqlx::Sqlite);
super::summaries::summaries_sql!(SqliteStore, sqlx::Sqlite);

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn pool_stats(&self) -> super::meter::PoolStats {
        self.meter.stats(&self.pool)
    }

    async fn recommendations(&self) -> Result<Vec<super::Recommendation>> {
        super::advice::sqlite(&mut *self.conn().await?).await
    }

    async fn explain(&self, sql: &str) -> Result<Vec<String>> {
        use sqlx::Row as _;
        let text = format!("EXPLAIN QUERY PLAN {sql}");
        let mut q = sqlx::query(&text);
        for _ in 0..crate::slowlog::parameters(sql) {
            q = q.bind(None::<String>);
        }
        let rows = q.fetch_all(&mut *self.conn().await?).await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get::<String, _>("detail").unwrap_or_default())
            .collect())
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
