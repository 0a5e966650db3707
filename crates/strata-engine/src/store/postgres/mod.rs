//! The scale-out backend: PostgreSQL with pgvector through a sqlx pool. The same schema and
//! semantics as the SQLite store (one test suite runs against both); job claims take the row
//! with `FOR UPDATE SKIP LOCKED`, so any number of processes can claim concurrently.
//!
//! Beyond the [`Store`] contract it owns what makes processes over one database act as one
//! service: nearest-neighbour search in pgvector's HNSW index (iterative scans, so a filter
//! still yields k rows), original files in the `blobs` table ([`SharedBlobs`]), and job
//! announcements over LISTEN/NOTIFY.
//!
//! Connections: the main pool (`max_connections`, application_name `strata`), one listener
//! connection (`strata-listen`), and a small pool for blob advisory locks (`strata-lock`,
//! at most [`LOCK_CONNECTIONS`], opened only while uploads or deletes run).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection, Executor, Postgres, QueryBuilder, Row, Transaction};

use super::lexical::{LexicalQuery, LexicalStore};
use super::meter::{PoolMeter, PoolStats};
use super::outage::{Outage, SUSPECT_AFTER};
use super::{ChunkFilter, Store, StoreChange, TableStats};
use crate::error::{EngineError, Result};
use crate::ids::TenantId;

mod blobs;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Most connections the blob lock pool opens.
pub const LOCK_CONNECTIONS: u32 = 2;
/// Size of one stored part of an original file.
const BLOB_PART: usize = 1024 * 1024;
/// The NOTIFY channel of job announcements.
const CHANNEL: &str = "strata_jobs";

/// Pool settings for the PostgreSQL backend.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Most open connections.
    pub max_connections: u32,
    /// Connections kept open when idle.
    pub min_connections: u32,
    /// How long a request waits for a connection before failing with 503.
    pub acquire_timeout: Duration,
    /// Idle connections are closed after this long.
    pub idle_timeout: Duration,
    /// Connections are replaced after this long.
    pub max_lifetime: Duration,
    /// Check a connection with a round trip before handing it out.
    pub test_before_acquire: bool,
    /// Statements slower than this are logged (and listed in the database stats).
    pub slow_statement: Duration,
    /// `hnsw.ef_search`: candidates the HNSW index examines per search (recall vs speed).
    pub ef_search: u32,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            min_connections: 1,
            acquire_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(1800),
            test_before_acquire: true,
            slow_statement: Duration::from_millis(500),
            ef_search: 64,
        }
    }
}

/// [`Store`] over PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    locks: PgPool,
    meter: Arc<PoolMeter>,
    /// Fails requests at once while the database is unreachable (see [`Outage`]).
    outage: Arc<Outage>,
    connect: PgConnectOptions,
    /// This process's identity in announcements (its own are not echoed back to it).
    instance: Arc<str>,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://...`) and runs migrations; a clear error when pgvector
    /// is not installed on the server.
    pub async fn connect(url: &str, opts: &PostgresOptions) -> Result<Self> {
        let connect: PgConnectOptions = url
            .parse::<PgConnectOptions>()
            .map_err(|e| EngineError::Config(format!("invalid PostgreSQL URL: {e}")))?
            .log_slow_statements(log::LevelFilter::Warn, opts.slow_statement);
        let ef_search = opts.ef_search.clamp(1, 1000);
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .min_connections(opts.min_connections.min(opts.max_connections))
            .acquire_timeout(opts.acquire_timeout)
            .idle_timeout(opts.idle_timeout)
            .max_lifetime(opts.max_lifetime)
            .test_before_acquire(opts.test_before_acquire)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    // Iterative scans let the HNSW walk continue until the tenant and filter
                    // conditions have k rows (pgvector 0.8), instead of returning short.
                    // No JIT: compiling a plan costs ~100 ms, far more than any query strata
                    // sends is meant to take.
                    conn.execute(
                        format!(
                            "SET hnsw.ef_search = {ef_search}; \
                             SET hnsw.iterative_scan = relaxed_order; SET jit = off"
                        )
                        .as_str(),
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect_with(connect.clone().application_name("strata"))
            .await
            .map_err(|e| {
                EngineError::Config(format!(
                    "cannot connect to PostgreSQL at {}: {e}",
                    masked(url)
                ))
            })?;
        let available: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector')",
        )
        .fetch_one(&pool)
        .await?;
        if !available {
            return Err(EngineError::Config(
                "the PostgreSQL server has no pgvector extension; install it (scripts/test and \
                 scripts/serve build it from Debian's source package) and restart"
                    .into(),
            ));
        }
        MIGRATOR.run(&pool).await?;
        let locks = PgPoolOptions::new()
            .max_connections(LOCK_CONNECTIONS)
            .min_connections(0)
            .acquire_timeout(opts.acquire_timeout)
            .idle_timeout(Duration::from_secs(60))
            .connect_lazy_with(connect.clone().application_name("strata-lock"));
        let probe_with = connect.clone().application_name("strata-probe");
        let outage = Outage::new(Arc::new(move || {
            let opts = probe_with.clone();
            Box::pin(async move {
                match opts.connect().await {
                    Ok(conn) => {
                        let _ = conn.close().await;
                        true
                    }
                    Err(_) => false,
                }
            })
        }));
        Ok(Self {
            pool,
            locks,
            meter: Arc::default(),
            outage,
            connect,
            instance: Arc::from(uuid::Uuid::now_v7().simple().to_string()),
        })
    }

    /// A pooled connection, counted and timed by the meter; at once an error while the
    /// database is known to be unreachable, and soon one when it turns out to be while this
    /// caller waits (see [`Outage`]).
    async fn conn(&self) -> Result<PoolConnection<Postgres>> {
        self.guarded(self.meter.acquire(&self.pool)).await
    }

    /// `acquire` (of a connection from one of the pools) behind the breaker.
    async fn guarded<T>(&self, acquire: impl Future<Output = Result<T>>) -> Result<T> {
        self.outage.check()?;
        tokio::pin!(acquire);
        let got = tokio::select! {
            biased;
            got = &mut acquire => got,
            () = tokio::time::sleep(SUSPECT_AFTER) => {
                self.outage.suspect();
                tokio::select! {
                    biased;
                    got = &mut acquire => got,
                    () = self.outage.opened() => Err(self.outage.unavailable()),
                }
            }
        };
        if let Err(EngineError::Unavailable(_)) = &got {
            self.outage.suspect();
        }
        got
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        let conn = self.conn().await?;
        Transaction::begin(conn, None)
            .await
            .map_err(EngineError::from)
    }

    /// Creates, once per model, the HNSW index (cosine) over that model's vectors. The
    /// `vector` column has no fixed dimension, so the index is on a cast to the model's
    /// dimension and limited to its rows, the form pgvector documents for mixed dimensions.
    pub async fn ensure_vector_index(
        &self,
        model: &str,
        dims: usize,
        connectivity: usize,
        expansion_add: usize,
    ) -> Result<()> {
        let name = vector_index_name(model);
        let mut tx = self.begin().await?;
        // Instances starting together must not race on the index's name.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('strata:vector-index'))")
            .execute(&mut *tx)
            .await?;
        let sql = format!(
            "CREATE INDEX IF NOT EXISTS {name} ON chunks USING hnsw \
             ((embedding::vector({dims})) vector_cosine_ops) \
             WITH (m = {connectivity}, ef_construction = {expansion_add}) \
             WHERE model = {model_lit}",
            model_lit = literal(model)
        );
        tx.execute(sql.as_str()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The owner's `k` chunks nearest to `query` among those passing `filter`: through the
    /// HNSW index (approximate), or by scoring every candidate (`exact`). (chunk id, cosine
    /// similarity), best first.
    pub async fn nearest(
        &self,
        owner: &TenantId,
        model: &str,
        query: &[f32],
        k: usize,
        filter: &ChunkFilter,
        exact: bool,
    ) -> Result<Vec<(u64, f32)>> {
        let dims = query.len();
        let mut qb = QueryBuilder::<Postgres>::new("SELECT c.id, ");
        // The index is on `embedding::vector(dims)` over this model's rows; an expression it
        // does not have keeps the planner off it for the exact path.
        let dim = if exact {
            String::new()
        } else {
            format!("({dims})")
        };
        qb.push(format!("(c.embedding::vector{dim} <=> "))
            .push_bind(query.to_vec())
            .push(format!("::real[]::vector{dim})"));
        qb.push(" AS d FROM chunks c WHERE c.embedding IS NOT NULL AND c.model = ")
            .push(literal(model))
            .push(" AND c.owner = ")
            .push_bind(owner.as_str().to_owned());
        super::push_chunk_filter(&mut qb, filter);
        qb.push(format!(" ORDER BY d LIMIT {k}"));
        let mut conn = self.conn().await?;
        let rows = if exact {
            qb.build().fetch_all(&mut *conn).await?
        } else {
            // The approximate path is the HNSW index, always: on a small table the planner
            // prefers reading and sorting every row of the tenant (each vector detoasted),
            // measured at 5 ms per query on 1,862 rows against 1 ms through the index, and
            // the gap grows with the tenant. SET LOCAL keeps the choice to this query.
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            tx.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off")
                .await?;
            let rows = qb.build().fetch_all(&mut *tx).await?;
            tx.commit().await?;
            rows
        };
        let mut hits = rows
            .iter()
            .map(|r| {
                let d: f64 = r.try_get("d")?;
                Ok((r.try_get::<i64, _>("id")? as u64, (1.0 - d) as f32))
            })
            .collect::<Result<Vec<_>>>()?;
        // relaxed_order: the iterative scan may return rows slightly out of order.
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(hits)
    }
}

/// The name of a model's HNSW index: stable, and safe as an identifier whatever the model.
fn vector_index_name(model: &str) -> String {
    format!(
        "chunks_hnsw_{}",
        &blake3::hash(model.as_bytes()).to_hex()[..16]
    )
}

/// A SQL string literal (the model id is configuration, but quote it properly anyway).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A quoted SQL identifier.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A URL with its credentials hidden, for error messages.
fn masked(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((_, host)) => format!("postgres://***@{host}"),
        None => url.to_owned(),
    }
}

/// The `embedding` column of a row (selected as `real[]`), decoded.
fn embedding_of(row: &PgRow) -> Result<Vec<f32>> {
    Ok(row.try_get::<Vec<f32>, _>("embedding")?)
}

/// A vector as bound for `$N::real[]::vector`.
fn vector_value(v: &[f32]) -> &[f32] {
    v
}

super::queue::queue_sql!(
    PostgresStore,
    sqlx::Postgres,
    skip_locked = " FOR UPDATE SKIP LOCKED"
);
super::chunks::chunks_sql!(
    PostgresStore,
    sqlx::Postgres,
    embedding = "c.embedding::real[] AS embedding",
    vector_param = "$3::real[]::vector",
    first_per_text = ("SELECT DISTINCT ON (c.text_sha256) ", "")
);
super::documents::documents_sql!(
    PostgresStore,
    sqlx::Postgres,
    tags_json =
        "(SELECT json_agg(tag ORDER BY tag)::text FROM document_tags t WHERE t.document_id = d.id)"
);

super::memories::memories_sql!(
    PostgresStore,
    sqlx::Postgres,
    vector_param = "$11::real[]::vector",
    vector_cast = "::real[]::vector",
    embedding = "m.embedding::real[] AS embedding"
);

super::meta::meta_sql!(PostgresStore);
super::sessions::sessions_sql!(PostgresStore, sqlx::Postgres);
super::budgets::budgets_sql!(PostgresStore, sqlx::Postgres);
super::conversations::conversations_sql!(PostgresStore, sqlx::Postgres);
super::summaries::summaries_sql!(PostgresStore, sqlx::Postgres);

/// BM25 (see [`super::lexical`]) of the owner's embedded chunks that
/// match any word of the query: N and the mean length from `lexical_stats`, each term's
/// document frequency from the GIN index, its frequency in a chunk from the positions the
/// chunk's tsvector keeps, after cutting it down to the query's lexemes (`setweight` marks
/// them, `ts_filter` keeps them: unnesting whole tsvectors made the query 2.8x slower).
/// Returns the builder inside the `matched` CTE's `WHERE`, for the caller to add conditions
/// on `c` and then [`lexical_finish`].
fn lexical_select<'a>(
    query: &LexicalQuery,
    owner: &'a TenantId,
    model: &'a str,
) -> QueryBuilder<'a, Postgres> {
    let mut qb = QueryBuilder::new(
        "WITH stats AS ( \
           SELECT GREATEST(sum(chunks), 1)::float8 AS n, \
                  GREATEST(sum(tokens)::float8 / GREATEST(sum(chunks), 1), 1) AS avgdl \
           FROM lexical_stats), \
         terms AS ( \
           SELECT t.lexeme, (SELECT count(*) FROM chunks x \
                             WHERE x.lexemes @@ quote_literal(t.lexeme)::tsquery)::float8 AS df \
           FROM unnest(to_tsvector('strata_english', ",
    );
    qb.push_bind(query.text()).push(
        ")) t), \
         idf AS ( \
           SELECT lexeme, GREATEST(ln((s.n - df + 0.5) / (df + 0.5)), 1e-6) AS idf \
           FROM terms, stats s), \
         matched AS ( \
           SELECT c.id, c.lexeme_count, \
                  ts_filter(setweight(c.lexemes, 'A', (SELECT array_agg(lexeme) FROM terms)), \
                            '{a}') AS lexemes \
           FROM chunks c \
           WHERE c.lexemes @@ (SELECT string_agg(quote_literal(lexeme), ' | ')::tsquery \
                               FROM terms) \
             AND c.embedding IS NOT NULL AND c.owner = ",
    );
    qb.push_bind(owner.as_str())
        .push(" AND c.model = ")
        .push_bind(model);
    qb
}

/// Closes the `matched` CTE and scores its chunks; the caller appends order and limit.
fn lexical_finish(qb: &mut QueryBuilder<'_, Postgres>) {
    qb.push(
        ") SELECT m.id, sum(i.idf * array_length(u.positions, 1) * 2.2 \
             / (array_length(u.positions, 1) \
                + 1.2 * (0.25 + 0.75 * m.lexeme_count / s.avgdl)))::float8 AS score \
         FROM matched m CROSS JOIN stats s CROSS JOIN LATERAL unnest(m.lexemes) u \
         JOIN idf i ON i.lexeme = u.lexeme \
         GROUP BY m.id",
    );
}

#[async_trait]
impl LexicalStore for PostgresStore {
    async fn bm25_top(
        &self,
        owner: &TenantId,
        model: &str,
        query: &LexicalQuery,
        filter: &ChunkFilter,
        limit: usize,
    ) -> Result<Vec<(u64, f32)>> {
        let mut qb = lexical_select(query, owner, model);
        super::push_chunk_filter(&mut qb, filter);
        lexical_finish(&mut qb);
        qb.push(" ORDER BY score DESC, m.id LIMIT ")
            .push_bind(limit as i64);
        let rows = qb.build().fetch_all(&mut *self.conn().await?).await?;
        rows.iter().map(super::rows::scored_of).collect()
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            outage: Some(self.outage.stats()),
            ..self.meter.stats(&self.pool)
        }
    }

    async fn table_stats(&self) -> Result<Vec<TableStats>> {
        let tables = sqlx::query(
            "SELECT c.relname AS name, GREATEST(c.reltuples, 0)::bigint AS rows, \
                    pg_table_size(c.oid) AS bytes \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relkind = 'r' \
               AND c.relname NOT LIKE '\\_sqlx%' ORDER BY c.relname",
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        let indexes = sqlx::query(
            "SELECT s.relname AS tbl, s.indexrelname AS name, \
                    pg_relation_size(s.indexrelid) AS bytes, s.idx_scan AS scans \
             FROM pg_stat_user_indexes s WHERE s.schemaname = current_schema() \
             ORDER BY s.indexrelname",
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        tables
            .iter()
            .map(|t| {
                let name: String = t.try_get("name")?;
                Ok(TableStats {
                    rows: t.try_get::<i64, _>("rows")? as u64,
                    table_bytes: Some(t.try_get::<i64, _>("bytes")? as u64),
                    indexes: indexes
                        .iter()
                        .filter(|i| i.try_get::<String, _>("tbl").is_ok_and(|n| n == name))
                        .map(|i| {
                            Ok(super::IndexStats {
                                name: i.try_get("name")?,
                                bytes: Some(i.try_get::<i64, _>("bytes")? as u64),
                                scans: Some(i.try_get::<i64, _>("scans")? as u64),
                            })
                        })
                        .collect::<Result<_>>()?,
                    table: name,
                })
            })
            .collect()
    }

    async fn recommendations(&self) -> Result<Vec<super::Recommendation>> {
        super::advice::postgres(&mut *self.conn().await?).await
    }

    async fn explain(&self, sql: &str) -> Result<Vec<String>> {
        let name = format!("strata_explain_{}", uuid::Uuid::now_v7().simple());
        let mut conn = self.conn().await?;
        let explained = async {
            let mut tx = Connection::begin(&mut *conn).await?;
            tx.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                .await?;
            if sql.contains("<=>") {
                // A vector search runs with these (see `nearest`): its plan is the one
                // under them.
                tx.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off")
                    .await?;
            }
            tx.execute(format!("PREPARE {name} AS {sql}").as_str())
                .await?;
            let args = vec!["NULL"; crate::slowlog::parameters(sql)].join(", ");
            let execute = if args.is_empty() {
                format!("EXPLAIN EXECUTE {name}")
            } else {
                format!("EXPLAIN EXECUTE {name}({args})")
            };
            let plan: Vec<String> = sqlx::query_scalar(execute.as_str())
                .fetch_all(&mut *tx)
                .await?;
            tx.rollback().await?;
            Ok::<_, EngineError>(plan)
        }
        .await;
        // A prepared statement outlives the transaction; it must not outlive this call on a
        // pooled connection.
        let _ = conn.execute(format!("DEALLOCATE {name}").as_str()).await;
        explained
    }

    async fn optimize(&self) -> Result<Vec<String>> {
        let mut ran = Vec::new();
        let mut conn = self.conn().await?;
        // VACUUM where dead rows make up a fifth of a table (deletes and re-ingestion leave
        // them); ANALYZE everywhere, so the planner's estimates match the data.
        let bloated: Vec<String> = sqlx::query_scalar(
            "SELECT relname FROM pg_stat_user_tables WHERE schemaname = current_schema() \
             AND n_dead_tup > 1000 AND n_dead_tup > n_live_tup / 5 ORDER BY relname",
        )
        .fetch_all(&mut *conn)
        .await?;
        for table in bloated {
            let sql = format!("VACUUM (ANALYZE) {}", quote_ident(&table));
            conn.execute(sql.as_str()).await?;
            ran.push(sql);
        }
        conn.execute("ANALYZE").await?;
        ran.push("ANALYZE".into());
        // REINDEX indexes that ended up invalid (an interrupted build).
        let invalid: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND NOT i.indisvalid",
        )
        .fetch_all(&mut *conn)
        .await?;
        for index in invalid {
            let sql = format!("REINDEX INDEX {}", quote_ident(&index));
            conn.execute(sql.as_str()).await?;
            ran.push(sql);
        }
        Ok(ran)
    }

    async fn announce(&self, change: StoreChange) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload(&self.instance, change))
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    async fn listen(&self) -> Result<Option<BoxStream<'static, StoreChange>>> {
        Ok(Some(self.listen_stream().await?))
    }

    async fn close(&self) {
        self.pool.close().await;
        self.locks.close().await;
    }
}

/// Announcement payload: `{instance} {kind} {job id}`.
fn payload(instance: &str, change: StoreChange) -> String {
    match change {
        StoreChange::JobQueued => format!("{instance} queued -"),
        StoreChange::JobChanged(id) => format!("{instance} changed {id}"),
    }
}

fn parse_payload(own: &str, payload: &str) -> Option<StoreChange> {
    let mut parts = payload.split(' ');
    let (from, kind, id) = (parts.next()?, parts.next()?, parts.next()?);
    if from == own {
        return None;
    }
    match kind {
        "queued" => Some(StoreChange::JobQueued),
        "changed" => id.parse().ok().map(StoreChange::JobChanged),
        _ => None,
    }
}

impl PostgresStore {
    async fn listen_stream(&self) -> Result<BoxStream<'static, StoreChange>> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(self.connect.clone().application_name("strata-listen"));
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(CHANNEL).await?;
        let own = self.instance.clone();
        Ok(Box::pin(futures_util::stream::unfold(
            (listener, own),
            |(mut listener, own)| async move {
                loop {
                    match listener.recv().await {
                        Ok(n) => {
                            if let Some(change) = parse_payload(&own, n.payload()) {
                                return Some((change, (listener, own)));
                            }
                        }
                        Err(e) => {
                            // sqlx reconnects on the next recv; what was missed meanwhile is
                            // covered by the workers' polling and the event streams' re-reads.
                            tracing::warn!(error = %e, "job announcements interrupted; reconnecting");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            },
        )))
    }
}
