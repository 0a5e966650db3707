//! Cursor pagination neither repeats nor skips a document while others are inserted and
//! deleted between and during page requests (property test over a real server).

use std::collections::HashSet;

use proptest::prelude::*;
use serde_json::Value;

use crate::helpers::TestServer;

#[derive(Debug, Clone)]
enum Op {
    Insert,
    DeleteVolatile(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Insert),
        (0usize..1000).prop_map(Op::DeleteVolatile)
    ]
}

async fn run_case(
    initial: usize,
    stable_mask: Vec<bool>,
    limit: u32,
    ops: Vec<Op>,
    tag: Option<&str>,
) {
    let s = TestServer::start_with(|e| e.jobs.workers = 0).await;
    let mut stable = HashSet::new();
    let mut volatile = Vec::new();
    let mut ever = HashSet::new();
    for i in 0..initial {
        let tags: &[&str] = if i % 2 == 0 { &["even"] } else { &[] };
        let d = s.create_text(&format!("initial document {i}"), tags).await;
        let id = d["id"].as_str().unwrap().to_owned();
        ever.insert(id.clone());
        let in_filter = tag.is_none() || i % 2 == 0;
        if stable_mask[i % stable_mask.len()] {
            if in_filter {
                stable.insert(id);
            }
        } else {
            volatile.push(id);
        }
    }
    // A writer inserting concurrently with the pager, in addition to the interleaved ops.
    let writer = {
        let base = s.base.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut made = Vec::new();
            for i in 0..10 {
                let r = client
                    .post(format!("{base}/v1/documents"))
                    .json(&serde_json::json!({"text": format!("concurrent {i}"), "tags": ["even"]}))
                    .send()
                    .await
                    .unwrap();
                let v: Value = r.json().await.unwrap();
                made.push(v["document"]["id"].as_str().unwrap().to_owned());
            }
            made
        })
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut ops = ops.into_iter();
    let mut extra = 0;
    loop {
        let mut path = format!("/v1/documents?limit={limit}&fields=id");
        if let Some(t) = tag {
            path.push_str(&format!("&tag={t}"));
        }
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = s.get_json(&path).await;
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        // Mutate between pages.
        for op in ops.by_ref().take(2) {
            match op {
                Op::Insert => {
                    let d = s
                        .create_text(&format!("inserted while paging {extra}"), &["even"])
                        .await;
                    extra += 1;
                    ever.insert(d["id"].as_str().unwrap().to_owned());
                }
                Op::DeleteVolatile(i) if !volatile.is_empty() => {
                    let id = volatile.swap_remove(i % volatile.len());
                    let r = s.delete(&format!("/v1/documents/{id}")).await;
                    assert_eq!(r.status(), 204);
                }
                Op::DeleteVolatile(_) => {}
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    ever.extend(writer.await.unwrap());
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "a document was repeated: {seen:?}"
    );
    for id in &stable {
        assert!(unique.contains(id), "stable document {id} was skipped");
    }
    for id in &seen {
        assert!(ever.contains(id), "unknown id {id}");
    }
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first, strictly"
    );
    s.stop().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn paging_is_stable_under_concurrent_writes(
        initial in 5usize..60,
        stable_mask in prop::collection::vec(any::<bool>(), 1..8),
        limit in 1u32..12,
        ops in prop::collection::vec(op(), 0..40),
        filtered in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run_case(initial, stable_mask, limit, ops, filtered.then_some("even")));
    }
}
