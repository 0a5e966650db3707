//! Engine tests over a real SQLite database per test: tenancy, lease fencing, retries and
//! extraction limits, below the HTTP layer.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail loudly on unexpected values"
)]

mod backends;
mod lexical;
mod memories;
mod plans;
mod queue;

use std::time::Duration;

use chrono::Utc;
use strata_engine::jobs::Step;
use strata_engine::jobs::ingest::INGEST_DOCUMENT;
use strata_engine::model::{DocumentFilter, DocumentStatus, JobStatus};
use strata_engine::store::sqlite::{SqliteOptions, SqliteStore};
use strata_engine::store::{ChunkStore, DocumentStore, JobOutcome, JobQueue, NewChunk};
use strata_engine::{
    Engine, EngineError, EngineSettings, IngestOutcome, ListDocuments, ListJobs, TenantId,
    UploadMeta,
};
use tokio_util::sync::CancellationToken;

/// The kinds these tests claim.
const KINDS: &[&str] = &[INGEST_DOCUMENT];

async fn engine(dir: &tempfile::TempDir, workers: usize) -> Engine {
    let mut s = EngineSettings {
        data_dir: dir.path().to_owned(),
        ..EngineSettings::default()
    };
    s.jobs.workers = workers;
    s.load_model = strata_engine::ModelLoad::OnFirstUse;
    s.jobs.backoff_base = Duration::from_millis(1);
    s.jobs.extract_timeout = Duration::from_secs(5);
    if let Ok(dir) = std::env::var("STRATA_MODEL_DIR") {
        s.model_dir = dir.into();
    }
    Engine::open(s).await.unwrap()
}

async fn add(engine: &Engine, owner: &TenantId, text: &str) -> strata_engine::model::Document {
    match engine
        .documents()
        .ingest_text(
            owner,
            text,
            UploadMeta {
                tags: vec!["t".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap()
    {
        IngestOutcome::Created(d) => d,
        IngestOutcome::Duplicate(d) => panic!("unexpected duplicate {}", d.id),
    }
}

#[tokio::test]
async fn another_tenants_rows_are_invisible() {
    // Searches, too, see only the caller's chunks.
    let dir = tempfile::tempdir().unwrap();
    let e = engine(&dir, 0).await;
    let (a, b) = (
        TenantId::parse("alice").unwrap(),
        TenantId::parse("bob").unwrap(),
    );
    let doc = add(&e, &a, "alice's secret").await;
    let job = doc.job_id.unwrap();
    assert!(matches!(
        e.documents().get_document(&b, doc.id).await,
        Err(EngineError::NotFound { .. })
    ));
    assert!(matches!(
        e.jobs().get_job(&b, job).await,
        Err(EngineError::NotFound { .. })
    ));
    assert!(matches!(
        e.documents().open_file(&b, doc.id).await,
        Err(EngineError::NotFound { .. })
    ));
    assert!(matches!(
        e.documents().list_chunks(&b, doc.id, 0, None).await,
        Err(EngineError::NotFound { .. })
    ));
    let patch = strata_engine::model::DocumentPatch {
        title: Some("x".into()),
        ..Default::default()
    };
    assert!(matches!(
        e.documents().update_document(&b, doc.id, patch).await,
        Err(EngineError::NotFound { .. })
    ));
    assert!(matches!(
        e.documents().delete_document(&b, doc.id).await,
        Err(EngineError::NotFound { .. })
    ));
    assert!(
        e.documents()
            .list_documents(&b, ListDocuments::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        e.jobs()
            .list_jobs(&b, ListJobs::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(e.documents().tag_counts(&b).await.unwrap().is_empty());
    e.jobs().drain_jobs().await.unwrap();
    let search = |q: &str| strata_engine::search::SearchRequest {
        query: q.into(),
        k: Some(10),
        filter: Default::default(),
        min_score: None,
        stream: false,
        mode: None,
        semantic_ratio: None,
        fusion: None,
    };
    assert_eq!(
        e.retrieval()
            .search(&a, search("secret"))
            .await
            .unwrap()
            .hits
            .len(),
        1
    );
    assert!(
        e.retrieval()
            .search(&b, search("secret"))
            .await
            .unwrap()
            .hits
            .is_empty()
    );
    // Dedupe is per owner: bob uploading the same bytes gets his own document.
    let bobs = add(&e, &b, "alice's secret").await;
    assert_ne!(bobs.id, doc.id);
    // Deleting bob's copy keeps alice's shared blob.
    e.documents().delete_document(&b, bobs.id).await.unwrap();
    assert!(e.documents().open_file(&a, doc.id).await.is_ok());
    assert_eq!(
        e.documents().get_document(&a, doc.id).await.unwrap().title,
        doc.title
    );
}

#[tokio::test]
async fn a_worker_that_lost_its_lease_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(&dir, 0).await;
    // The engine creates the document; its job is driven through a second handle on the
    // same database, like two worker processes would.
    let store2 = SqliteStore::open(&dir.path().join("strata.db"), &SqliteOptions::default())
        .await
        .unwrap();
    let owner = TenantId::local();
    let doc = add(&e, &owner, "contested").await;
    let now = Utc::now();
    let first = store2
        .claim_job(KINDS, now, now + chrono::Duration::seconds(1))
        .await
        .unwrap()
        .unwrap();
    assert!(
        store2
            .claim_job(KINDS, now, now + chrono::Duration::seconds(1))
            .await
            .unwrap()
            .is_none(),
        "leased"
    );
    // Two seconds later the lease has expired: a second worker takes over.
    let later = now + chrono::Duration::seconds(2);
    let second = store2
        .claim_job(KINDS, later, later + chrono::Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.job.id, first.job.id);
    assert_eq!(second.job.attempts, 2);
    let chunk = |text: &str| NewChunk {
        ordinal: 0,
        text: text.into(),
        token_count: 1,
        text_sha256: String::new(),
    };
    let stale = store2
        .write_chunks(&first.lease, &owner, doc.id, &[chunk("stale")])
        .await;
    assert!(stale.unwrap().is_none());
    assert!(!store2.heartbeat(&first.lease, later).await.unwrap());
    assert!(
        !store2
            .finish_document(&first.lease, doc.id, DocumentStatus::Ready, None, Some(1))
            .await
            .unwrap()
    );
    assert!(
        !store2
            .finish_job(&first.lease, &JobOutcome::Succeeded)
            .await
            .unwrap()
    );
    assert!(
        store2
            .clear_chunks(&first.lease, doc.id)
            .await
            .unwrap()
            .is_none()
    );
    let ids = store2
        .write_chunks(&second.lease, &owner, doc.id, &[chunk("fresh")])
        .await;
    let ids = ids.unwrap().unwrap();
    assert_eq!(ids.len(), 1);
    let late = store2
        .set_embeddings(&first.lease, "m", &[(ids[0], vec![1.0])])
        .await;
    assert!(!late.unwrap());
    assert!(
        store2
            .finish_document(&second.lease, doc.id, DocumentStatus::Ready, None, Some(1))
            .await
            .unwrap()
    );
    assert!(
        store2
            .finish_job(&second.lease, &JobOutcome::Succeeded)
            .await
            .unwrap()
    );
    let chunks = e
        .documents()
        .list_chunks(&owner, doc.id, 0, None)
        .await
        .unwrap();
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].text, "fresh");
    assert_eq!(
        e.documents()
            .get_document(&owner, doc.id)
            .await
            .unwrap()
            .chunk_count,
        1
    );
}

#[tokio::test]
async fn transient_failures_retry_with_backoff_then_fail_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(&dir, 0).await;
    let owner = TenantId::local();
    let doc = add(&e, &owner, "its file will vanish").await;
    let store = SqliteStore::open(&dir.path().join("strata.db"), &SqliteOptions::default())
        .await
        .unwrap();
    for attempt in 1..=5u32 {
        let now = Utc::now() + chrono::Duration::hours(i64::from(attempt));
        let claimed = store
            .claim_job(KINDS, now, now + chrono::Duration::seconds(30))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claimed.job.attempts, attempt);
        let retry_at = now + chrono::Duration::minutes(30);
        store
            .finish_job(
                &claimed.lease,
                &JobOutcome::Retry {
                    error: "disk hiccup".into(),
                    retry_at,
                },
            )
            .await
            .unwrap();
        let job = e.jobs().get_job(&owner, doc.job_id.unwrap()).await.unwrap();
        if attempt < 5 {
            assert_eq!(job.status, JobStatus::Queued);
            // Not due before its backoff.
            assert!(store.claim_job(KINDS, now, now).await.unwrap().is_none());
        } else {
            assert_eq!(job.status, JobStatus::Failed);
            assert!(job.error.unwrap().contains("attempts exhausted"));
        }
    }
}

#[tokio::test]
async fn missing_original_is_a_permanent_failure() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(&dir, 0).await;
    let owner = TenantId::local();
    let doc = add(&e, &owner, "soon without a file").await;
    let sha = &doc.sha256;
    std::fs::remove_file(
        dir.path()
            .join("blobs")
            .join(&sha[..2])
            .join(&sha[2..4])
            .join(sha),
    )
    .unwrap();
    assert_eq!(
        e.jobs()
            .runner()
            .run_one(&CancellationToken::new())
            .await
            .unwrap(),
        Step::Ran
    );
    let job = e.jobs().get_job(&owner, doc.job_id.unwrap()).await.unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.attempts, 1);
    assert!(job.error.unwrap().contains("missing"));
    // The ingestion kind's hook failed the document with the job.
    let doc = e.documents().get_document(&owner, doc.id).await.unwrap();
    assert_eq!(doc.status, DocumentStatus::Failed);
    assert!(doc.error.unwrap().contains("missing"));
}

#[tokio::test]
async fn drain_processes_everything_and_listing_filters_by_status() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(&dir, 0).await;
    let owner = TenantId::local();
    for i in 0..7 {
        add(
            &e,
            &owner,
            &format!("document number {i}. It has two sentences."),
        )
        .await;
    }
    assert_eq!(e.jobs().drain_jobs().await.unwrap(), 7);
    let ready = e
        .documents()
        .list_documents(
            &owner,
            ListDocuments {
                filter: DocumentFilter {
                    status: Some(strata_engine::model::DocumentStatus::Ready),
                    tag: Some("t".into()),
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(ready.items.len(), 7);
    assert!(ready.items.iter().all(|d| d.chunk_count == 1));
}

#[tokio::test]
async fn workers_on_the_runtime_stop_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(&dir, 2).await;
    let tracker = tokio_util::task::TaskTracker::new();
    let shutdown = CancellationToken::new();
    e.spawn_workers(&tracker, &shutdown);
    let doc = add(&e, &TenantId::local(), "picked up by a background worker").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while e
        .documents()
        .get_document(&TenantId::local(), doc.id)
        .await
        .unwrap()
        .status
        .as_str()
        != "ready"
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "worker never ran the job"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    tracker.close();
    tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .expect("workers join");
}
