//! What the database's own statistics say should be done, for
//! `GET /v1/performance/database/stats`: one reading of each backend's catalog
//! (`pg_stat_user_tables` and `pg_stat_user_indexes`; `sqlite_stat1` and the page counts),
//! never canned text.
//!
//! Must not import: HTTP types, the cache.

use sqlx::{PgConnection, Row as _, SqliteConnection};

use crate::error::Result;

/// One thing the catalog says should be done, with the figures it is based on.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Recommendation {
    /// `sequential_scans`, `unused_index`, `dead_rows`, `missing_statistics`,
    /// `autovacuum_off` or `free_pages`.
    pub kind: &'static str,
    /// The table or index.
    pub target: String,
    /// What was seen, with its numbers.
    pub finding: String,
    /// What to do about it.
    pub action: String,
}

/// A table counts as large from this many rows: below it a full read costs less than an
/// index's overhead, and nothing is recommended.
pub const LARGE_TABLE_ROWS: i64 = 10_000;

/// PostgreSQL: repeated full scans of large tables, dead rows, tables never analysed, and
/// non-unique indexes never scanned on large tables.
pub(crate) async fn postgres(conn: &mut PgConnection) -> Result<Vec<Recommendation>> {
    let mut out = Vec::new();
    // strata's tables churn (job rows, chunks rewritten on every re-ingestion, tags): with
    // autovacuum off their dead rows pile up and every statement slows (a one-hour soak on
    // such a server halved its throughput in half an hour).
    let autovacuum: String = sqlx::query_scalar("SELECT current_setting('autovacuum')")
        .fetch_one(&mut *conn)
        .await?;
    if autovacuum == "off" {
        out.push(Recommendation {
            kind: "autovacuum_off",
            target: "server".into(),
            finding: "autovacuum is off: dead rows of strata's tables are never reclaimed".into(),
            action: "turn autovacuum on (postgresql.conf), or call POST \
                     /v1/performance/database/optimize on a schedule"
                .into(),
        });
    }
    let tables = sqlx::query(
        "SELECT relname, seq_scan, seq_tup_read, COALESCE(idx_scan, 0) AS idx_scan, \
                n_live_tup, n_dead_tup, \
                (last_analyze IS NULL AND last_autoanalyze IS NULL) AS never_analyzed \
         FROM pg_stat_user_tables WHERE schemaname = current_schema() \
           AND relname NOT LIKE '\\_sqlx%' ORDER BY relname",
    )
    .fetch_all(&mut *conn)
    .await?;
    for t in &tables {
        let name: String = t.try_get("relname")?;
        let (seq, read, idx, live, dead): (i64, i64, i64, i64, i64) = (
            t.try_get("seq_scan")?,
            t.try_get("seq_tup_read")?,
            t.try_get("idx_scan")?,
            t.try_get("n_live_tup")?,
            t.try_get("n_dead_tup")?,
        );
        // Repeated full reads of a large table: some statement has no index to use.
        if live >= LARGE_TABLE_ROWS && seq >= 10 && read / seq.max(1) >= live / 2 {
            out.push(Recommendation {
                kind: "sequential_scans",
                target: name.clone(),
                finding: format!(
                    "{seq} sequential scans read {} rows each on average ({live} live rows; \
                     {idx} index scans)",
                    read / seq.max(1)
                ),
                action: "find the statement in slow_statements and EXPLAIN it; add the \
                         index its WHERE clause needs"
                    .into(),
            });
        }
        if dead > 1000 && dead > live / 5 {
            out.push(Recommendation {
                kind: "dead_rows",
                target: name.clone(),
                finding: format!("{dead} dead rows beside {live} live ones"),
                action: "POST /v1/performance/database/optimize (VACUUM ANALYZE of this \
                         table), or tune autovacuum for it"
                    .into(),
            });
        }
        if live >= 1000 && t.try_get::<bool, _>("never_analyzed")? {
            out.push(Recommendation {
                kind: "missing_statistics",
                target: name,
                finding: format!("{live} rows and never analysed: the planner guesses"),
                action: "POST /v1/performance/database/optimize (ANALYZE)".into(),
            });
        }
    }
    let unused = sqlx::query(
        "SELECT s.indexrelname AS name, s.relname AS tbl, t.n_live_tup AS live, \
                pg_relation_size(s.indexrelid) AS bytes \
         FROM pg_stat_user_indexes s \
         JOIN pg_index i ON i.indexrelid = s.indexrelid \
         JOIN pg_stat_user_tables t ON t.relid = s.relid \
         WHERE s.schemaname = current_schema() AND s.idx_scan = 0 \
           AND NOT i.indisunique AND NOT i.indisprimary AND t.n_live_tup >= $1 \
         ORDER BY s.indexrelname",
    )
    .bind(LARGE_TABLE_ROWS)
    .fetch_all(&mut *conn)
    .await?;
    for i in &unused {
        let name: String = i.try_get("name")?;
        let table: String = i.try_get("tbl")?;
        out.push(Recommendation {
            kind: "unused_index",
            target: name,
            finding: format!(
                "never scanned since statistics were reset, on {table} ({} live rows), \
                 {} bytes kept up to date by every write",
                i.try_get::<i64, _>("live")?,
                i.try_get::<i64, _>("bytes")?
            ),
            action: "if this workload never needs it (a search mode or filter it does \
                     not use), it costs writes for nothing; keep it otherwise"
                .into(),
        });
    }
    Ok(out)
}

/// SQLite: a file a fifth free, and tables of 1,000+ rows the planner has no statistics for.
pub(crate) async fn sqlite(conn: &mut SqliteConnection) -> Result<Vec<Recommendation>> {
    let mut out = Vec::new();
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(&mut *conn)
        .await?;
    let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
        .fetch_one(&mut *conn)
        .await?;
    let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(&mut *conn)
        .await?;
    if free >= 256 && free * 5 >= pages {
        out.push(Recommendation {
            kind: "free_pages",
            target: "database file".into(),
            finding: format!(
                "{free} of {pages} pages are free ({} bytes the file keeps)",
                free * page_size
            ),
            action: "VACUUM while nothing else writes (it rewrites the file); new rows \
                     reuse free pages meanwhile"
                .into(),
        });
    }
    // Tables the planner has no statistics for (sqlite_stat1 is written by ANALYZE).
    // No sqlite_stat1 yet (an error here) means nothing was ever analysed.
    let analysed: Vec<String> = sqlx::query_scalar("SELECT DISTINCT tbl FROM sqlite_stat1")
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_default();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'table' \
         AND name NOT LIKE 'sqlite%' AND name NOT LIKE '\\_sqlx%' ESCAPE '\\' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await?;
    for table in tables {
        if analysed.contains(&table) {
            continue;
        }
        let rows: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM \"{}\"",
            table.replace('"', "\"\"")
        ))
        .fetch_one(&mut *conn)
        .await?;
        if rows >= 1000 {
            out.push(Recommendation {
                kind: "missing_statistics",
                target: table,
                finding: format!("{rows} rows and never analysed: the planner guesses"),
                action: "POST /v1/performance/database/optimize (ANALYZE)".into(),
            });
        }
    }
    Ok(out)
}
