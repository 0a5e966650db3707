//! One test body, every backend: the `Store` contract exercised against SQLite and against
//! PostgreSQL (a fresh database per test on `STRATA_TEST_DATABASE_URL`'s server, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, with pgvector).

use std::sync::Arc;

use chrono::{Duration as Span, Utc};
use strata_engine::jobs::ingest::{INGEST_DOCUMENT, new_job};
use strata_engine::model::{
    DocumentFilter, DocumentPatch, DocumentStatus, JobFilter, JobStatus, MediaType, NewDocument,
    StageProgress,
};
use strata_engine::store::postgres::{PostgresOptions, PostgresStore};
use strata_engine::store::sqlite::{SqliteOptions, SqliteStore};
use strata_engine::store::{ChunkFilter, InsertOutcome, JobOutcome, NewChunk, NewJob, Store};
use strata_engine::{DocumentId, JobId, TenantId};

/// The kinds these tests claim.
pub(crate) const KINDS: &[&str] = &[INGEST_DOCUMENT];

fn new_doc(owner: &TenantId, n: u32, tags: &[&str]) -> NewDocument {
    NewDocument {
        owner: owner.clone(),
        title: format!("doc {n}"),
        filename: Some(format!("doc{n}.txt")),
        media_type: MediaType::from_mime("text/plain").unwrap(),
        byte_size: 10 + u64::from(n),
        sha256: format!("{n:064x}"),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        metadata: serde_json::json!({"n": n}),
    }
}

/// The document's ingestion job, as the engine queues it.
fn ingest_job(owner: &TenantId, doc: DocumentId) -> NewJob {
    new_job(JobId::new(), owner, doc, 3)
}

pub(crate) async fn insert(
    store: &dyn Store,
    owner: &TenantId,
    n: u32,
    tags: &[&str],
) -> DocumentId {
    let id = DocumentId::new();
    match store
        .insert_document(new_doc(owner, n, tags), id, &ingest_job(owner, id))
        .await
        .unwrap()
    {
        InsertOutcome::Created(d) => d.id,
        InsertOutcome::Duplicate(_) => panic!("unexpected duplicate"),
    }
}

/// A document with no tags.
pub(crate) async fn insert_doc(store: &dyn Store, owner: &TenantId, n: u32) -> DocumentId {
    insert(store, owner, n, &[]).await
}

/// A fresh database on `STRATA_TEST_DATABASE_URL`'s server (default
/// `postgres://postgres@127.0.0.1:5432/postgres`), dropped by [`FreshPostgres::drop`].
pub(crate) struct FreshPostgres {
    admin: sqlx::PgPool,
    name: String,
    /// Its URL.
    pub(crate) url: String,
}

impl FreshPostgres {
    pub(crate) async fn new() -> Self {
        let server = std::env::var("STRATA_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let name = format!("strata_test_{}", uuid::Uuid::now_v7().simple());
        let admin = sqlx::PgPool::connect(&server).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        let url = match server.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("STRATA_TEST_DATABASE_URL needs a database path"),
        };
        Self { admin, name, url }
    }

    pub(crate) async fn drop(self) {
        // FORCE: a connection a pool opened in the background (min_connections) while it was
        // closing can outlive `close()` by a moment; without it the drop fails after 5 s.
        sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .execute(&self.admin)
            .await
            .unwrap();
    }
}

pub(crate) fn unit(i: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; 8];
    v[i % 8] = 1.0;
    v
}

/// The contract, in one body.
async fn exercise(store: Arc<dyn Store>) {
    let alice = TenantId::parse("alice").unwrap();
    let bob = TenantId::parse("bob").unwrap();
    let s = store.as_ref();

    // Documents, dedupe, tenancy, listing, tags.
    let d1 = insert(s, &alice, 1, &["a", "b"]).await;
    let d2 = insert(s, &alice, 2, &["b"]).await;
    let _b1 = insert(s, &bob, 1, &["a"]).await;
    let again = DocumentId::new();
    match s
        .insert_document(new_doc(&alice, 1, &[]), again, &ingest_job(&alice, again))
        .await
        .unwrap()
    {
        InsertOutcome::Duplicate(d) => assert_eq!(d.id, d1),
        InsertOutcome::Created(_) => panic!("same sha256 for the same owner is a duplicate"),
    }
    assert!(s.get_document(&bob, d1).await.unwrap().is_none(), "tenancy");
    let all = s
        .list_documents(&alice, &DocumentFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(all.iter().map(|d| d.id).collect::<Vec<_>>(), vec![d2, d1]);
    let page = s
        .list_documents(&alice, &DocumentFilter::default(), Some(d2), 10)
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    let tagged = s
        .list_documents(
            &alice,
            &DocumentFilter {
                tag: Some("a".into()),
                status: Some(DocumentStatus::Queued),
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(tagged.iter().map(|d| d.id).collect::<Vec<_>>(), vec![d1]);
    assert_eq!(tagged[0].tags, vec!["a".to_owned(), "b".to_owned()]);
    let counts = s.tag_counts(&alice).await.unwrap();
    assert_eq!((counts[0].tag.as_str(), counts[0].count), ("b", 2));
    let patched = s
        .update_document(
            &alice,
            d2,
            &DocumentPatch {
                title: Some("renamed".into()),
                tags: Some(vec!["c".into()]),
                metadata: None,
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (patched.title.as_str(), patched.tags.clone()),
        ("renamed", vec!["c".to_owned()])
    );
    assert_eq!(patched.metadata, serde_json::json!({"n": 2}));
    assert_eq!(
        s.count_sha256_refs(&format!("{:064x}", 1)).await.unwrap(),
        2
    );

    // Jobs: two concurrent claimers never take the same job.
    let now = Utc::now();
    let (c1, c2) = tokio::join!(
        s.claim_job(KINDS, now, now + Span::seconds(30)),
        s.claim_job(KINDS, now, now + Span::seconds(30))
    );
    let (c1, c2) = (c1.unwrap().unwrap(), c2.unwrap().unwrap());
    assert_ne!(c1.job.id, c2.job.id);
    assert_eq!(c1.job.attempts, 1);
    let doc = c1.job.document_id.unwrap();
    s.set_document_status(&c1.owner, doc, DocumentStatus::Processing, None)
        .await
        .unwrap();
    assert_eq!(
        s.get_document(&c1.owner, doc)
            .await
            .unwrap()
            .unwrap()
            .status,
        DocumentStatus::Processing
    );
    assert!(
        s.heartbeat(&c1.lease, now + Span::seconds(60))
            .await
            .unwrap()
    );
    let progress = [StageProgress {
        stage: "chunk".into(),
        done: 1,
        total: 2,
    }];
    assert!(
        s.record_progress(&c1.lease, "chunk", &progress)
            .await
            .unwrap()
    );
    let job = s.get_job(&c1.owner, c1.job.id).await.unwrap().unwrap();
    assert_eq!(
        (job.status, job.stage.as_deref(), job.stages),
        (JobStatus::Running, Some("chunk"), progress.to_vec())
    );

    // Chunks and embeddings under the lease.
    let chunks: Vec<NewChunk> = (0..3)
        .map(|i| NewChunk {
            ordinal: i,
            text: format!("chunk {i}"),
            token_count: 2,
            text_sha256: format!("{i:064x}"),
        })
        .collect();
    let ids = s
        .write_chunks(&c1.lease, &c1.owner, doc, &chunks)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ids.len(), 3);
    let rows: Vec<(u64, Vec<f32>)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, unit(i)))
        .collect();
    assert!(s.set_embeddings(&c1.lease, "m", &rows).await.unwrap());
    let found = s
        .find_embeddings("m", &[format!("{:064x}", 1), "missing".into()])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[&format!("{:064x}", 1)], unit(1));
    let filter = ChunkFilter::default();
    assert_eq!(
        s.count_candidates(&c1.owner, "m", &filter).await.unwrap(),
        3
    );
    let mut vecs = s.candidate_vectors(&c1.owner, "m", &filter).await.unwrap();
    vecs.sort_by_key(|(id, _)| *id);
    assert_eq!(vecs[2].1, unit(2));
    let only_b = ChunkFilter {
        tags: vec!["zzz".into()],
        document_ids: vec![],
    };
    assert_eq!(
        s.count_candidates(&c1.owner, "m", &only_b).await.unwrap(),
        0
    );
    let hits = s.hit_rows(&c1.owner, &ids[..2]).await.unwrap();
    assert_eq!(hits.len(), 2);
    assert!(
        s.hit_rows(&bob_or_other(&c1.owner), &ids)
            .await
            .unwrap()
            .is_empty(),
        "tenancy"
    );
    let (count, _) = s.embedded_fingerprint("m").await.unwrap();
    assert_eq!(count, 3);
    assert_eq!(s.scan_vectors("m", 0, 10).await.unwrap().len(), 3);
    assert_eq!(s.scan_owners("m", ids[0], 10).await.unwrap().len(), 2);

    // The second claimer's lease cannot write the first's job; finishing and releasing.
    assert!(
        s.finish_document(&c1.lease, doc, DocumentStatus::Ready, None, Some(3))
            .await
            .unwrap()
    );
    assert!(
        s.finish_job(&c1.lease, &JobOutcome::Succeeded)
            .await
            .unwrap()
    );
    assert!(
        !s.heartbeat(&c1.lease, now + Span::seconds(90))
            .await
            .unwrap(),
        "lease ended"
    );
    let finished = s.get_document(&c1.owner, doc).await.unwrap().unwrap();
    assert_eq!(
        (finished.status, finished.chunk_count),
        (DocumentStatus::Ready, 3)
    );
    assert!(s.release_job(&c2.lease).await.unwrap());
    let released = s.get_job(&c2.owner, c2.job.id).await.unwrap().unwrap();
    assert_eq!((released.status, released.attempts), (JobStatus::Queued, 0));
    let listed = s
        .list_jobs(
            &c1.owner,
            &JobFilter {
                status: Some(JobStatus::Succeeded),
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    let c3 = s
        .claim_job(KINDS, Utc::now(), Utc::now() + Span::seconds(30))
        .await
        .unwrap()
        .unwrap();
    assert!(
        s.finish_job(
            &c3.lease,
            &JobOutcome::Retry {
                error: "flaky".into(),
                retry_at: Utc::now()
            }
        )
        .await
        .unwrap()
    );
    assert_eq!(
        s.get_job(&c3.owner, c3.job.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        JobStatus::Queued
    );

    // Chunks of the document, deletion, identity.
    let listed = s.list_chunks(&c1.owner, doc, 1, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|c| c.ordinal).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(listed.iter().all(|c| c.embedded));
    let deleted = s.delete_document(&c1.owner, doc).await.unwrap().unwrap();
    assert_eq!(deleted.chunk_ids.len(), 3);
    assert!(s.get_document(&c1.owner, doc).await.unwrap().is_none());
    let id = s.store_id().await.unwrap();
    assert_eq!(s.store_id().await.unwrap(), id);
    s.ping().await.unwrap();
}

fn bob_or_other(owner: &TenantId) -> TenantId {
    TenantId::parse(if owner.as_str() == "bob" {
        "alice"
    } else {
        "bob"
    })
    .unwrap()
}

/// Runs a contract on a fresh SQLite store.
pub(crate) async fn on_sqlite<F, Fut>(contract: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db"), &SqliteOptions::default())
        .await
        .unwrap();
    contract(Arc::new(store.clone())).await;
    store.close().await;
}

/// Runs a contract on a fresh PostgreSQL database.
pub(crate) async fn on_postgres<F, Fut>(contract: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let db = FreshPostgres::new().await;
    let store = PostgresStore::connect(&db.url, &PostgresOptions::default())
        .await
        .unwrap();
    contract(Arc::new(store.clone())).await;
    store.close().await;
    db.drop().await;
}

#[tokio::test]
async fn the_store_contract_holds_on_sqlite() {
    on_sqlite(exercise).await;
}

#[tokio::test]
async fn the_store_contract_holds_on_postgres() {
    on_postgres(exercise).await;
}
