//! The lexical index on both backends: BM25 as the formula gives it (k1 1.2, b 0.75, the
//! floored idf), the tenant, model and filters inside the query, titles indexed with their
//! chunks. PostgreSQL ranks in SQL; the embedded default ranks in process over what
//! `scan_texts` reads (the engine builds its index from the same scan), so the SQLite run
//! rebuilds an index from the store for every search.

use std::sync::Arc;

use chrono::{Duration as Span, Utc};
use strata_engine::TenantId;
use strata_engine::bm25::{self, Bm25Index};
use strata_engine::model::DocumentPatch;
use strata_engine::store::postgres::{PostgresOptions, PostgresStore};
use strata_engine::store::{ChunkFilter, LexicalQuery, LexicalStore, NewChunk, Store};

use crate::backends::{FreshPostgres, KINDS, insert, on_sqlite, unit};

/// Every chunk's text; titles are `doc {n}` (see `backends::new_doc`).
const TEXTS: &[&str] = &[
    "apple banana apple cherry",
    "banana cherry",
    "cherry cherry cherry date elderberry fig grape",
    "zucchini",
];

/// BM25 of `text` (tokens already as the index sees them) for `terms`, over a corpus of
/// documents given by their token lists.
fn bm25(doc: &[&str], corpus: &[Vec<&str>], terms: &[&str]) -> f64 {
    let n = corpus.len() as f64;
    let avgdl = corpus.iter().map(Vec::len).sum::<usize>() as f64 / n;
    let dl = doc.len() as f64;
    terms
        .iter()
        .map(|t| {
            let df = corpus.iter().filter(|d| d.contains(t)).count() as f64;
            let idf = ((n - df + 0.5) / (df + 0.5)).ln().max(1e-6);
            let tf = doc.iter().filter(|w| *w == t).count() as f64;
            idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * dl / avgdl))
        })
        .sum()
}

/// Where a backend ranks: in SQL, or in process over the store's texts.
enum Ranker {
    Sql(Box<PostgresStore>),
    InProcess,
}

impl Ranker {
    async fn lexical(
        &self,
        s: &dyn Store,
        owner: &TenantId,
        model: &str,
        q: &LexicalQuery,
        filter: &ChunkFilter,
        limit: usize,
    ) -> Vec<(u64, f32)> {
        match self {
            Self::Sql(pg) => pg.lexical(owner, model, q, filter, limit).await.unwrap(),
            Self::InProcess => {
                let index = Bm25Index::new();
                index
                    .add(&s.scan_texts(model, 0, 10_000, None).await.unwrap())
                    .unwrap();
                let allowed = if filter.is_empty() {
                    None
                } else {
                    Some(s.candidate_ids(owner, model, filter).await.unwrap())
                };
                let allowed = allowed.map(|a| a.into_iter().collect());
                let terms: Vec<String> = q.words().iter().filter_map(|w| bm25::term(w)).collect();
                index.search(owner, &terms, limit, allowed.as_ref())
            }
        }
    }
}

async fn contract(s: Arc<dyn Store>, ranker: Ranker) {
    let alice = TenantId::parse("alice").unwrap();
    let bob = TenantId::parse("bob").unwrap();
    // One document per text for alice (titles "doc 0".."doc 3", tag "t{n}"), one for bob.
    let mut docs = Vec::new();
    for (n, _) in TEXTS.iter().enumerate() {
        let tag = format!("t{n}");
        docs.push(insert(s.as_ref(), &alice, n as u32, &[tag.as_str()]).await);
    }
    docs.push(insert(s.as_ref(), &bob, 9, &[]).await);
    let mut ids = Vec::new();
    for (i, &doc) in docs.iter().enumerate() {
        let now = Utc::now();
        let claimed = s
            .claim_job(KINDS, now, now + Span::seconds(30))
            .await
            .unwrap()
            .expect("a job per document");
        let text = TEXTS.get(i).copied().unwrap_or("apple banana cherry");
        let written = s
            .write_chunks(
                &claimed.lease,
                &claimed.owner,
                doc,
                &[NewChunk {
                    ordinal: 0,
                    text: text.into(),
                    token_count: 4,
                    text_sha256: format!("{i:064x}"),
                }],
            )
            .await
            .unwrap()
            .unwrap();
        assert!(
            s.set_embeddings(&claimed.lease, "m", &[(written[0], unit(i))])
                .await
                .unwrap()
        );
        ids.push(written[0]);
    }
    // The index holds title and text: "doc N" adds two tokens ("doc", the number) to each.
    let corpus: Vec<Vec<&str>> = TEXTS
        .iter()
        .enumerate()
        .map(|(n, t)| {
            let mut v = vec!["doc", ["0", "1", "2", "3"][n]];
            v.extend(t.split(' '));
            v
        })
        .chain([vec!["doc", "9", "apple", "banana", "cherry"]])
        .collect();

    let all = ChunkFilter::default();
    let q = LexicalQuery::parse("Apples and cherries?");
    let st = s.as_ref();
    let found = ranker.lexical(st, &alice, "m", &q, &all, 10).await;
    let expected: Vec<(u64, f64)> = {
        let mut e: Vec<(u64, f64)> = (0..3)
            .map(|i| (ids[i], bm25(&corpus[i], &corpus, &["apple", "cherry"])))
            .collect();
        e.sort_by(|a, b| b.1.total_cmp(&a.1));
        e
    };
    let got: Vec<u64> = found.iter().map(|(id, _)| *id).collect();
    let want: Vec<u64> = expected.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        got, want,
        "stemmed and ranked by BM25: {found:?} vs {expected:?}"
    );
    for ((_, g), (_, e)) in found.iter().zip(&expected) {
        assert!(
            ((*g as f64) - e).abs() < 1e-3 * e.max(1.0),
            "BM25 {g} against the formula's {e} ({})",
            s.backend()
        );
    }
    // Bob's chunk has the words too but is never alice's hit.
    assert!(!got.contains(&ids[4]));
    let bobs = ranker.lexical(st, &bob, "m", &q, &all, 10).await;
    assert_eq!(bobs.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [ids[4]]);
    // Another model's chunks are not candidates.
    assert!(
        ranker
            .lexical(st, &alice, "other", &q, &all, 10)
            .await
            .is_empty()
    );
    // The limit, and filters inside the query: only t1 and document 2 may answer.
    assert_eq!(ranker.lexical(st, &alice, "m", &q, &all, 1).await.len(), 1);
    let tagged = ChunkFilter {
        tags: vec!["t1".into()],
        document_ids: vec![],
    };
    let by_tag = ranker.lexical(st, &alice, "m", &q, &tagged, 10).await;
    assert_eq!(
        by_tag.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [ids[1]]
    );
    let by_doc = ChunkFilter {
        tags: vec![],
        document_ids: vec![docs[2]],
    };
    let one = ranker.lexical(st, &alice, "m", &q, &by_doc, 10).await;
    assert_eq!(one.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [ids[2]]);
    // The title is indexed, and follows a rename.
    let by_title = ranker
        .lexical(st, &alice, "m", &LexicalQuery::parse("doc 3"), &all, 10)
        .await;
    assert_eq!(by_title[0].0, ids[3], "{by_title:?}");
    s.update_document(
        &alice,
        docs[3],
        &DocumentPatch {
            title: Some("Vegetable notes".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let renamed = ranker
        .lexical(
            st,
            &alice,
            "m",
            &LexicalQuery::parse("vegetables"),
            &all,
            10,
        )
        .await;
    assert_eq!(
        renamed.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [ids[3]]
    );
    // A deleted document's chunks leave the index.
    s.delete_document(&alice, docs[0]).await.unwrap();
    let after = ranker.lexical(st, &alice, "m", &q, &all, 10).await;
    assert!(!after.iter().any(|(id, _)| *id == ids[0]), "{after:?}");
}

#[tokio::test]
async fn bm25_on_sqlite_is_the_formula() {
    on_sqlite(|s| contract(s, Ranker::InProcess)).await;
}

#[tokio::test]
async fn bm25_on_postgres_is_the_formula() {
    let db = FreshPostgres::new().await;
    let store = PostgresStore::connect(&db.url, &PostgresOptions::default())
        .await
        .unwrap();
    contract(
        Arc::new(store.clone()),
        Ranker::Sql(Box::new(store.clone())),
    )
    .await;
    store.close().await;
    db.drop().await;
}
