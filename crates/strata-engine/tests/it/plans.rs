//! Query plans under test: every hot statement, captured as the store really runs it, is
//! explained on a populated database of each backend, and the test fails if one reads a
//! large table without an index.
//!
//! The statements are not copied here: each hot operation runs through the store with a
//! zero slow-statement threshold, so sqlx reports every statement it sends, and a
//! [`SlowLog`] captures them, and `Store::explain` (what the slow-statement log uses)
//! explains each: SQLite with `EXPLAIN QUERY PLAN` (unbound parameters read as NULL),
//! PostgreSQL with the generic plan it would use for any parameters.
//! PostgreSQL's tables hold 20,000 documents and 40,000 chunks with vectors (inserted in
//! bulk, then `ANALYZE`d), so a sequential scan is a real choice for its planner.
//!
//! Hot operations: a document by id, a list page, a tag filter, the dedupe lookup, the job
//! claim, chunk fetches (a document's chunks, a search's hit rows), and on PostgreSQL the
//! vector search (SQLite's runs in process, in usearch, with no SQL).

use std::sync::{Arc, OnceLock};

use chrono::{Duration as Span, Utc};
use sqlx::{Connection as _, Executor as _};
use strata_engine::TenantId;
use strata_engine::model::DocumentFilter;
use strata_engine::slowlog::SlowLog;
use strata_engine::store::postgres::{PostgresOptions, PostgresStore};
use strata_engine::store::sqlite::{SqliteOptions, SqliteStore};
use strata_engine::store::{ChunkFilter, Store};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;

use crate::backends::{FreshPostgres, KINDS, insert};

/// Tables large enough in production that reading all of them is a bug.
const LARGE: [&str; 4] = ["documents", "document_tags", "chunks", "jobs"];

/// The process's statement log (global: SQLite statements run on sqlx's worker threads).
fn log() -> &'static SlowLog {
    static LOG: OnceLock<SlowLog> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = SlowLog::default();
        let subscriber = tracing_subscriber::registry()
            .with(log.layer().with_filter(strata_engine::slowlog::filter()));
        tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
        log
    })
}

/// The statements one operation ran (reads, writes with a WHERE: what a plan matters for).
async fn statements<F, Fut>(what: &str, op: F) -> (String, Vec<String>)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    log().take();
    op().await;
    let sql: Vec<String> = log()
        .take()
        .into_iter()
        .map(|s| s.statement)
        .filter(|s| {
            let head = s.trim_start().to_ascii_uppercase();
            ["SELECT", "WITH", "UPDATE", "DELETE"]
                .iter()
                .any(|k| head.starts_with(k))
        })
        .collect();
    assert!(!sql.is_empty(), "{what}: no statement was captured");
    (what.to_owned(), sql)
}

/// Every hot operation's statements on `store`.
async fn hot(store: Arc<dyn Store>) -> Vec<(String, Vec<String>)> {
    let owner = TenantId::parse("carol").unwrap();
    let doc = insert(store.as_ref(), &owner, 1, &["guide"]).await;
    let s = store.clone();
    let mut out = vec![
        statements("document by id", || async {
            s.get_document(&owner, doc).await.unwrap();
        })
        .await,
    ];
    out.push(
        statements("list page", || async {
            s.list_documents(&owner, &DocumentFilter::default(), Some(doc), 20)
                .await
                .unwrap();
        })
        .await,
    );
    out.push(
        statements("tag filter", || async {
            let filter = DocumentFilter {
                tag: Some("guide".into()),
                status: None,
            };
            s.list_documents(&owner, &filter, None, 20).await.unwrap();
        })
        .await,
    );
    out.push(
        statements("dedupe lookup", || async {
            s.find_by_sha256(&owner, &format!("{:064x}", 1))
                .await
                .unwrap();
        })
        .await,
    );
    out.push(
        statements("job claim", || async {
            let now = Utc::now();
            s.claim_job(KINDS, now, now + Span::seconds(30))
                .await
                .unwrap();
        })
        .await,
    );
    out.push(
        statements("chunks of a document", || async {
            s.list_chunks(&owner, doc, 0, 50).await.unwrap();
        })
        .await,
    );
    out.push(
        statements("hit rows", || async {
            s.hit_rows(&owner, &[1, 2, 3]).await.unwrap();
        })
        .await,
    );
    out
}

/// The large tables an SQLite plan reads in full (`SCAN t` without an index).
fn sqlite_full_scans(plan: &[String]) -> Vec<String> {
    plan.iter()
        .filter(|line| {
            let l = line.trim();
            l.starts_with("SCAN ") && !l.contains(" USING ")
        })
        .filter(|line| {
            let name = line.trim()["SCAN ".len()..]
                .split_whitespace()
                .next()
                .unwrap_or("");
            LARGE.contains(&name) || name.len() <= 2 // an alias of one (d, c, j, t)
        })
        .cloned()
        .collect()
}

#[tokio::test]
async fn hot_statements_use_their_indexes_on_sqlite() {
    log();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plans.db");
    let opts = SqliteOptions {
        slow_statement: std::time::Duration::ZERO,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(&path, &opts).await.unwrap();
    let owner = TenantId::parse("dave").unwrap();
    for n in 100..400 {
        insert(&store, &owner, n, &["bulk"]).await;
    }
    let captured = hot(Arc::new(store.clone())).await;
    store.close().await;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    conn.execute("ANALYZE").await.unwrap();
    conn.close().await.unwrap();
    // Reopened, so every connection of its pool reads the new statistics.
    let store = SqliteStore::open(&path, &opts).await.unwrap();
    let mut bad = Vec::new();
    let mut explained = 0;
    for (what, sql) in &captured {
        for stmt in sql {
            let plan = store
                .explain(stmt)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}\n{stmt}"));
            explained += 1;
            let scans = sqlite_full_scans(&plan);
            if !scans.is_empty() {
                bad.push(format!("{what}: {scans:?}\n  {stmt}\n  plan: {plan:?}"));
            }
        }
    }
    assert!(explained >= 7, "{explained} statements explained");
    assert!(bad.is_empty(), "full scans:\n{}", bad.join("\n"));
}

/// Fills a PostgreSQL database the way a busy instance's looks: 50 tenants, 20,000
/// documents with tags and finished jobs, 40,000 chunks with 8-dimensional vectors.
async fn populate_postgres(url: &str) {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    for sql in [
        "INSERT INTO documents (id, owner, title, media_type, byte_size, sha256, status, \
         chunk_count, created_at, updated_at) \
         SELECT '00000000-0000-7000-8000-' || lpad(i::text, 12, '0'), 'bulk' || (i % 50), \
         'doc ' || i, 'text/plain', 100, lpad(to_hex(i), 64, '0'), 'ready', 2, \
         1700000000000 + i, 1700000000000 + i FROM generate_series(1, 20000) i",
        "INSERT INTO document_tags (document_id, owner, tag) \
         SELECT id, owner, 'tag' || (created_at % 20) FROM documents WHERE owner LIKE 'bulk%'",
        "INSERT INTO jobs (id, owner, kind, subject, payload, status, attempts, max_attempts, \
         run_after, created_at, updated_at, finished_at) \
         SELECT 'j' || id, owner, 'ingest_document', 'document:' || id, '{}', 'succeeded', 1, 5, \
         created_at, created_at, created_at, created_at FROM documents WHERE owner LIKE 'bulk%'",
        "INSERT INTO chunks (document_id, ordinal, owner, text, token_count, text_sha256, \
         model, embedding) \
         SELECT d.id, o, d.owner, 'chunk ' || o || ' of ' || d.title, 4, md5(d.id || o), \
         'plan-model', ARRAY[random(), random(), random(), random(), random(), random(), \
         random(), random()]::real[]::vector \
         FROM documents d, generate_series(0, 1) o WHERE d.owner LIKE 'bulk%'",
    ] {
        conn.execute(sql).await.unwrap();
    }
    conn.close().await.unwrap();
}

#[tokio::test]
async fn hot_statements_use_their_indexes_on_postgres() {
    log();
    let db = FreshPostgres::new().await;
    let opts = PostgresOptions {
        slow_statement: std::time::Duration::ZERO,
        ..PostgresOptions::default()
    };
    let store = PostgresStore::connect(&db.url, &opts).await.unwrap();
    populate_postgres(&db.url).await;
    store
        .ensure_vector_index("plan-model", 8, 16, 64)
        .await
        .unwrap();
    let mut captured = hot(Arc::new(store.clone())).await;
    let owner = TenantId::parse("bulk7").unwrap();
    captured.push(
        statements("vector search", || async {
            let query = [0.5f32; 8];
            store
                .nearest(
                    &owner,
                    "plan-model",
                    &query,
                    10,
                    &ChunkFilter::default(),
                    false,
                )
                .await
                .unwrap();
        })
        .await,
    );
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    conn.execute("ANALYZE").await.unwrap();
    conn.close().await.unwrap();
    let mut bad = Vec::new();
    let mut explained = 0;
    for (what, sql) in &captured {
        for stmt in sql {
            let vector = stmt.contains("<=>");
            let plan = store
                .explain(stmt)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}\n{stmt}"));
            explained += 1;
            let scans: Vec<&String> = plan
                .iter()
                .filter(|l| {
                    LARGE
                        .iter()
                        .any(|t| l.contains(&format!("Seq Scan on {t}")))
                })
                .collect();
            if !scans.is_empty() {
                bad.push(format!("{what}: {scans:?}\n  {stmt}\n  plan: {plan:#?}"));
            }
            if vector && !plan.iter().any(|l| l.contains("using chunks_hnsw_")) {
                bad.push(format!(
                    "{what}: not through the HNSW index\n  plan: {plan:#?}"
                ));
            }
        }
    }
    store.close().await;
    db.drop().await;
    assert!(explained >= 8, "{explained} statements explained");
    assert!(
        bad.is_empty(),
        "plans without their index:\n{}",
        bad.join("\n")
    );
}

/// The recommendations come from the catalog: a table never analysed is named until
/// `optimize` analyses it.
#[tokio::test]
async fn sqlite_recommends_analyze_for_a_table_it_has_no_statistics_for() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("r.db"), &SqliteOptions::default())
        .await
        .unwrap();
    let owner = TenantId::parse("erin").unwrap();
    for n in 0..1200 {
        insert(&store, &owner, n, &[]).await;
    }
    let named = |r: &[strata_engine::store::Recommendation]| -> Vec<(String, String)> {
        r.iter()
            .map(|r| (r.kind.to_owned(), r.target.clone()))
            .collect()
    };
    let before = named(&store.recommendations().await.unwrap());
    for table in ["documents", "jobs"] {
        assert!(
            before.contains(&("missing_statistics".into(), table.into())),
            "{before:?}"
        );
    }
    store.optimize().await.unwrap();
    let after = store.recommendations().await.unwrap();
    assert!(after.is_empty(), "{after:?}");
    store.close().await;
}

/// Full scans of a large table, dead rows, a table never analysed and indexes never used
/// are each named with their figures.
#[tokio::test]
async fn postgres_recommends_from_its_statistics() {
    let db = FreshPostgres::new().await;
    let store = PostgresStore::connect(&db.url, &PostgresOptions::default())
        .await
        .unwrap();
    populate_postgres(&db.url).await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    // Autovacuum would clean and analyse behind the test's back.
    for t in ["documents", "document_tags", "chunks", "jobs"] {
        conn.execute(format!("ALTER TABLE {t} SET (autovacuum_enabled = false)").as_str())
            .await
            .unwrap();
    }
    conn.execute("ANALYZE chunks, jobs").await.unwrap();
    for _ in 0..12 {
        // A filter no index serves: every row read each time.
        conn.execute("SELECT count(*) FROM documents WHERE byte_size + 1 = 7")
            .await
            .unwrap();
    }
    conn.execute(
        "DELETE FROM document_tags WHERE tag IN ('tag0', 'tag1', 'tag2', 'tag3', 'tag4', 'tag5')",
    )
    .await
    .unwrap();
    // A backend's counters reach the shared statistics when it exits.
    conn.close().await.unwrap();
    let want = [
        ("sequential_scans", "documents"),
        ("dead_rows", "document_tags"),
        ("missing_statistics", "documents"),
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let found = loop {
        let r = store.recommendations().await.unwrap();
        let have = |k: &str, t: &str| r.iter().any(|x| x.kind == k && x.target == t);
        if want.iter().all(|(k, t)| have(k, t)) || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    // Whether the server vacuums by itself is a finding too, whichever way it is set.
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let autovacuum: String = sqlx::query_scalar("SHOW autovacuum")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        found.iter().any(|x| x.kind == "autovacuum_off"),
        autovacuum == "off",
        "autovacuum is {autovacuum}: {found:?}"
    );
    for (kind, target) in want {
        assert!(
            found.iter().any(|r| r.kind == kind && r.target == target),
            "no {kind} for {target} in {found:#?}"
        );
    }
    assert!(
        found.iter().any(|r| r.kind == "unused_index"),
        "no unused index in {found:#?}"
    );
    assert!(
        !found
            .iter()
            .any(|r| r.kind == "sequential_scans" && r.target == "chunks"),
        "{found:#?}"
    );
    store.close().await;
    db.drop().await;
}

/// The engine explains each slow statement once, off the request path, and keeps the plan on
/// the log's entries (what `GET /v1/performance/database/stats` shows and the warn line
/// carries), on both backends.
#[tokio::test]
async fn slow_statements_are_explained_and_keep_their_plans() {
    let log = log().clone();
    let dir = tempfile::tempdir().unwrap();
    let pg = FreshPostgres::new().await;
    for url in [None, Some(pg.url.clone())] {
        let mut s = strata_engine::EngineSettings {
            data_dir: dir.path().join(if url.is_some() { "pg" } else { "sqlite" }),
            database_url: url.clone().map(Into::into),
            slow_log: log.clone(),
            load_model: strata_engine::ModelLoad::OnFirstUse,
            ..strata_engine::EngineSettings::default()
        };
        s.sqlite.slow_statement = std::time::Duration::ZERO;
        s.postgres.slow_statement = std::time::Duration::ZERO;
        if let Ok(dir) = std::env::var("STRATA_MODEL_DIR") {
            s.model_dir = dir.into();
        }
        let engine = strata_engine::Engine::open(s).await.unwrap();
        let owner = TenantId::parse("erin").unwrap();
        log.take();
        engine
            .documents()
            .list_documents(
                &owner,
                strata_engine::ListDocuments {
                    limit: Some(5),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(
            !log.unplanned().is_empty(),
            "the list page's statements are new"
        );
        let explained = engine.admin().explain_slow_statements().await;
        assert!(explained > 0);
        assert!(log.unplanned().is_empty(), "each is explained once");
        let listed = log
            .recent()
            .into_iter()
            .find(|s| s.statement.starts_with("SELECT") && s.statement.contains("FROM documents"))
            .expect("the list page's statement");
        let plan = listed.plan.join("\n");
        let uses_index = if url.is_some() {
            plan.contains("Index") || plan.contains("Bitmap")
        } else {
            plan.contains("USING") && plan.contains("INDEX")
        };
        assert!(uses_index, "{}\n{plan}", listed.statement);
        engine.close().await;
    }
}
