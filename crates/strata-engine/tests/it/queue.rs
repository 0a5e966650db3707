//! The job queue aggregate's contract, on both backends, and the upgrade of a database made
//! by the release before the queue became generic (its queued and running jobs survive).

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{Duration as Span, Utc};
use serde_json::json;
use strata_engine::jobs::ingest::INGEST_DOCUMENT;
use strata_engine::model::JobStatus;
use strata_engine::store::postgres::{PostgresOptions, PostgresStore};
use strata_engine::store::sqlite::{SqliteOptions, SqliteStore};
use strata_engine::store::{JobOutcome, NewJob, Store};
use strata_engine::{DocumentId, JobId, TenantId};

use crate::backends::insert_doc;

/// A kind no process of these tests runs.
const OTHER: &str = "summarise_document";

fn other_job(owner: &TenantId, max_attempts: u32) -> NewJob {
    NewJob {
        id: JobId::new(),
        owner: owner.clone(),
        kind: OTHER,
        subject: None,
        payload: json!({ "words": 50 }),
        max_attempts,
        run_after: Utc::now(),
    }
}

/// The contract, in one body.
async fn exercise(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let owner = TenantId::parse("carol").unwrap();
    let other = other_job(&owner, 1);
    s.enqueue(&other).await.unwrap();
    let doc = insert_doc(s, &owner, 7).await;
    let now = Utc::now();

    // Only the kinds a process runs are claimed; the payload comes back as it went in.
    let ingest = s
        .claim_job(&[INGEST_DOCUMENT], now, now + Span::seconds(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ingest.job.kind, INGEST_DOCUMENT);
    assert_eq!(ingest.job.document_id, Some(doc));
    assert_eq!(ingest.payload["document_id"], json!(doc));
    assert!(
        s.claim_job(&[INGEST_DOCUMENT], now, now + Span::seconds(30))
            .await
            .unwrap()
            .is_none(),
        "a kind this process does not run is never claimed"
    );
    assert!(s.claim_job(&[], now, now).await.unwrap().is_none());

    // The depth counts unfinished jobs by kind and state; a job waiting for its run time is
    // `delayed`, not `queued`.
    let waiting = NewJob {
        run_after: now + Span::hours(1),
        ..other_job(&owner, 1)
    };
    s.enqueue(&waiting).await.unwrap();
    let depth: Vec<(String, String, u64)> = s
        .queue_depth(now)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.kind, d.state, d.jobs))
        .collect();
    assert_eq!(
        depth,
        vec![
            (INGEST_DOCUMENT.to_owned(), "running".to_owned(), 1),
            (OTHER.to_owned(), "delayed".to_owned(), 1),
            (OTHER.to_owned(), "queued".to_owned(), 1),
        ]
    );

    // A job whose worker vanished with no attempt left is abandoned, then failed once.
    let lost = s
        .claim_job(&[OTHER], now, now + Span::seconds(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (lost.job.id, lost.payload.clone(), lost.job.document_id),
        (other.id, json!({ "words": 50 }), None)
    );
    assert!(s.abandoned_jobs(&[OTHER], now).await.unwrap().is_empty());
    let later = now + Span::seconds(2);
    assert!(
        s.claim_job(&[OTHER], later, later + Span::seconds(30))
            .await
            .unwrap()
            .is_none(),
        "no attempt left: not claimed again"
    );
    let abandoned = s
        .abandoned_jobs(&[OTHER, INGEST_DOCUMENT], later)
        .await
        .unwrap();
    assert_eq!(abandoned.len(), 1);
    assert_eq!(
        (abandoned[0].id, abandoned[0].kind.as_str()),
        (other.id, OTHER)
    );
    assert!(s.fail_abandoned(other.id, later).await.unwrap());
    assert!(!s.fail_abandoned(other.id, later).await.unwrap(), "once");
    let failed = s.get_job(&owner, other.id).await.unwrap().unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert!(failed.error.unwrap().contains("attempts exhausted"));
    assert!(!s.heartbeat(&lost.lease, later).await.unwrap(), "fenced");

    // Shutdown returns a job without counting the attempt; deleting its document cancels it
    // and revokes the lease of whoever holds it.
    assert!(s.release_job(&ingest.lease).await.unwrap());
    assert!(!s.release_job(&ingest.lease).await.unwrap());
    let again = s
        .claim_job(&[INGEST_DOCUMENT], later, later + Span::seconds(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.job.id, again.job.attempts), (ingest.job.id, 1));
    s.delete_document(&owner, doc).await.unwrap().unwrap();
    let cancelled = s.get_job(&owner, ingest.job.id).await.unwrap().unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert!(
        !s.finish_job(&again.lease, &JobOutcome::Succeeded)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn the_queue_contract_holds_on_sqlite() {
    crate::backends::on_sqlite(exercise).await;
}

#[tokio::test]
async fn the_queue_contract_holds_on_postgres() {
    crate::backends::on_postgres(exercise).await;
}

/// The migrations the release before the generic queue applied (0001-0003 on SQLite,
/// 0001-0002 on PostgreSQL), as that release's migrator ran them.
async fn old_migrator(backend: &str, last: i64) -> sqlx::migrate::Migrator {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let mut m = sqlx::migrate::Migrator::new(dir).await.unwrap();
    m.migrations = Cow::Owned(
        m.migrations
            .iter()
            .filter(|m| m.version <= last)
            .cloned()
            .collect(),
    );
    m
}

/// Rows as the old release wrote them: a document queued with its job queued, one being
/// processed by a worker that died (its lease expired), and one done. `$N` placeholders
/// work on both backends.
async fn old_rows<'c, E>(conn: E, owner: &str) -> [(DocumentId, JobId); 3]
where
    E: sqlx::Executor<'c> + Copy,
    for<'q> <E::Database as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, E::Database>,
    for<'q> String: sqlx::Encode<'q, E::Database> + sqlx::Type<E::Database>,
    for<'q> i64: sqlx::Encode<'q, E::Database> + sqlx::Type<E::Database>,
    for<'q> Option<String>: sqlx::Encode<'q, E::Database>,
    for<'q> Option<i64>: sqlx::Encode<'q, E::Database>,
{
    let now = Utc::now().timestamp_millis();
    let rows = [
        ("queued", "queued", 0, None, None),
        (
            "processing",
            "running",
            1,
            Some("lease-1".to_owned()),
            Some(now - 60_000),
        ),
        ("ready", "succeeded", 1, None, None),
    ];
    let mut out = Vec::new();
    for (n, (doc_status, job_status, attempts, token, expires)) in rows.into_iter().enumerate() {
        let (doc, job) = (DocumentId::new(), JobId::new());
        sqlx::query(
            "INSERT INTO documents (id, owner, title, filename, media_type, byte_size, sha256, \
             metadata, status, chunk_count, job_id, created_at, updated_at) \
             VALUES ($1, $2, $3, NULL, 'text/plain', 10, $4, '{}', $5, 0, $6, $7, $7)",
        )
        .bind(doc.to_string())
        .bind(owner.to_owned())
        .bind(format!("old {n}"))
        .bind(format!("{n:064x}"))
        .bind(doc_status.to_owned())
        .bind(job.to_string())
        .bind(now)
        .execute(conn)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO jobs (id, owner, kind, document_id, status, stages, attempts, \
             max_attempts, run_after, lease_token, lease_expires_at, created_at, updated_at) \
             VALUES ($1, $2, 'ingest_document', $3, $4, '[]', $5, 5, $6, $7, $8, $6, $6)",
        )
        .bind(job.to_string())
        .bind(owner.to_owned())
        .bind(doc.to_string())
        .bind(job_status.to_owned())
        .bind(attempts)
        .bind(now - 120_000)
        .bind(token)
        .bind(expires)
        .execute(conn)
        .await
        .unwrap();
        out.push((doc, job));
    }
    [out[0], out[1], out[2]]
}

/// What the upgrade must keep: every job, with its document in the payload and as the
/// subject; the queued and the orphaned running job run again; the finished one does not.
async fn check_upgraded(s: &dyn Store, owner: &TenantId, rows: [(DocumentId, JobId); 3]) {
    let [(d1, j1), (d2, j2), (_, j3)] = rows;
    for (doc, job, status) in [
        (d1, j1, JobStatus::Queued),
        (d2, j2, JobStatus::Running),
        (rows[2].0, j3, JobStatus::Succeeded),
    ] {
        let j = s.get_job(owner, job).await.unwrap().unwrap();
        assert_eq!(
            (j.kind.as_str(), j.status, j.document_id, j.subject),
            (
                INGEST_DOCUMENT,
                status,
                Some(doc),
                Some(format!("document:{doc}"))
            )
        );
    }
    let now = Utc::now();
    let mut claimed = Vec::new();
    while let Some(c) = s
        .claim_job(&[INGEST_DOCUMENT], now, now + Span::seconds(30))
        .await
        .unwrap()
    {
        claimed.push((c.job.id, c.job.attempts, c.payload["document_id"].clone()));
    }
    claimed.sort_by_key(|c| c.0.to_string());
    let mut want = vec![(j1, 1, json!(d1)), (j2, 2, json!(d2))];
    want.sort_by_key(|c| c.0.to_string());
    assert_eq!(claimed, want);
}

#[tokio::test]
async fn a_sqlite_database_of_the_previous_release_keeps_its_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let owner = TenantId::parse("dave").unwrap();
    let rows = {
        let pool = sqlx::SqlitePool::connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true),
        )
        .await
        .unwrap();
        old_migrator("sqlite", 3).await.run(&pool).await.unwrap();
        let rows = old_rows(&pool, owner.as_str()).await;
        pool.close().await;
        rows
    };
    let store = SqliteStore::open(&path, &SqliteOptions::default())
        .await
        .unwrap();
    check_upgraded(&store, &owner, rows).await;
    store.close().await;
}

#[tokio::test]
async fn a_postgres_database_of_the_previous_release_keeps_its_jobs() {
    let db = crate::backends::FreshPostgres::new().await;
    let owner = TenantId::parse("dave").unwrap();
    let rows = {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        old_migrator("postgres", 2).await.run(&pool).await.unwrap();
        let rows = old_rows(&pool, owner.as_str()).await;
        pool.close().await;
        rows
    };
    let store = PostgresStore::connect(&db.url, &PostgresOptions::default())
        .await
        .unwrap();
    check_upgraded(&store, &owner, rows).await;
    store.close().await;
    db.drop().await;
}
