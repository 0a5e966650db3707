//! The memories aggregate on both backends: inserts that replace by id or by key in one
//! transaction (never across tenants, never a superseded memory), one current memory per key,
//! listings by session, key and time with cursor pages, history chains, and deletes that take
//! the history with them.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use serde_json::json;
use strata_engine::TenantId;
use strata_engine::ids::MemoryId;
use strata_engine::memory::{Inserted, Memory, MemoryChange, MemoryFilter, NewMemory};
use strata_engine::store::{Replace, Store};

use crate::backends::{on_postgres, on_sqlite, unit};

fn new(owner: &TenantId, text: &str, key: Option<&str>, n: usize) -> NewMemory {
    NewMemory {
        id: MemoryId::new(),
        owner: owner.clone(),
        text: text.into(),
        importance: 0.25 * n as f32,
        metadata: json!({"n": n}),
        session: None,
        key: key.map(Into::into),
        occurred_at: None,
        model: "m".into(),
        embedding: unit(n),
    }
}

fn ids(list: &[Memory]) -> Vec<MemoryId> {
    list.iter().map(|m| m.id).collect()
}

async fn created(s: &dyn Store, m: &NewMemory, replace: Replace) -> Memory {
    match s.insert_memory(m, replace).await.unwrap() {
        Some(Inserted::Created(m)) => m,
        other => panic!("expected a new memory, got {other:?}"),
    }
}

async fn contract(s: Arc<dyn Store>) {
    let s = s.as_ref();
    let alice = TenantId::parse("alice").unwrap();
    let bob = TenantId::parse("bob").unwrap();
    let all = MemoryFilter::default();

    let a = created(
        s,
        &new(&alice, "lives in Paris", Some("city"), 1),
        Replace::Key,
    )
    .await;
    assert_eq!((a.text.as_str(), a.importance), ("lives in Paris", 0.25));
    assert_eq!(a.metadata, json!({"n": 1}));
    assert_eq!((a.superseded_by, a.access_count), (None, 0));

    // The same key replaces the current memory and keeps it as history.
    let b_new = new(&alice, "lives in Berlin", Some("city"), 2);
    let b = match s.insert_memory(&b_new, Replace::Key).await.unwrap() {
        Some(Inserted::Superseded(b, old)) => {
            assert_eq!(old, a.id);
            b
        }
        other => panic!("expected a supersession, got {other:?}"),
    };
    let a_now = s.get_memory(&alice, a.id).await.unwrap().unwrap();
    assert_eq!(a_now.superseded_by, Some(b.id));

    // Another tenant's key is its own.
    let c = created(
        s,
        &new(&bob, "lives in Rome", Some("city"), 3),
        Replace::Key,
    )
    .await;
    assert!(s.get_memory(&alice, c.id).await.unwrap().is_none());
    assert!(s.get_memory(&bob, b.id).await.unwrap().is_none());

    // Replacing a superseded memory, or another tenant's, writes nothing.
    let stale = new(&alice, "x", None, 4);
    assert!(
        s.insert_memory(&stale, Replace::Memory(a.id))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.insert_memory(&stale, Replace::Memory(c.id))
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.get_memory(&alice, stale.id).await.unwrap().is_none());
    // A key held by a current memory cannot be taken without replacing it.
    let clash = new(&alice, "lives in Lyon", Some("city"), 5);
    assert!(s.insert_memory(&clash, Replace::Nothing).await.is_err());
    assert!(s.get_memory(&alice, clash.id).await.unwrap().is_none());

    // An explicit replacement, in a session, with a time of its own.
    let mut d_new = new(&alice, "works at the museum", None, 6);
    d_new.session = Some("s1".into());
    d_new.occurred_at = Some(Utc.with_ymd_and_hms(2020, 5, 1, 0, 0, 0).unwrap());
    let d = created(s, &d_new, Replace::Nothing).await;
    assert_eq!(d.occurred_at, d_new.occurred_at);
    let e_new = new(&alice, "works at the library", None, 7);
    let e = match s
        .insert_memory(&e_new, Replace::Memory(d.id))
        .await
        .unwrap()
    {
        Some(Inserted::Superseded(e, old)) if old == d.id => e,
        other => panic!("expected d superseded, got {other:?}"),
    };

    // Listings: current ones newest first; superseded on request; by session, key, time.
    let list = |f: MemoryFilter, before, limit| {
        let alice = alice.clone();
        async move { s.list_memories(&alice, &f, before, limit).await.unwrap() }
    };
    assert_eq!(ids(&list(all.clone(), None, 10).await), [e.id, b.id]);
    let everything = MemoryFilter {
        include_superseded: true,
        ..Default::default()
    };
    assert_eq!(
        ids(&list(everything.clone(), None, 10).await),
        [e.id, d.id, b.id, a.id]
    );
    let page = list(everything.clone(), None, 2).await;
    assert_eq!(ids(&page), [e.id, d.id]);
    assert_eq!(
        ids(&list(everything.clone(), Some(d.id), 2).await),
        [b.id, a.id]
    );
    let s1 = MemoryFilter {
        session: Some("s1".into()),
        include_superseded: true,
        ..Default::default()
    };
    assert_eq!(ids(&list(s1, None, 10).await), [d.id]);
    let city = MemoryFilter {
        key: Some("city".into()),
        ..Default::default()
    };
    assert_eq!(ids(&list(city, None, 10).await), [b.id]);
    let old = MemoryFilter {
        include_superseded: true,
        until: Some(Utc.with_ymd_and_hms(2021, 1, 1, 0, 0, 0).unwrap()),
        ..Default::default()
    };
    assert_eq!(ids(&list(old, None, 10).await), [d.id]);
    let recent = MemoryFilter {
        since: Some(Utc.with_ymd_and_hms(2021, 1, 1, 0, 0, 0).unwrap()),
        ..Default::default()
    };
    assert_eq!(ids(&list(recent, None, 10).await), [e.id, b.id]);

    // The working set: every memory of the owner's, oldest first, with the vectors of
    // the asked model only.
    let set = s.memory_set(&alice, "m").await.unwrap();
    let mut want: Vec<MemoryId> = vec![a.id, b.id, d.id, e.id];
    want.sort();
    assert_eq!(set.iter().map(|(m, _)| m.id).collect::<Vec<_>>(), want);
    let vector_of = |id: MemoryId| set.iter().find(|(m, _)| m.id == id).unwrap().1.clone();
    assert_eq!(vector_of(b.id), Some(unit(2)));
    assert!(
        s.memory_set(&alice, "other")
            .await
            .unwrap()
            .iter()
            .all(|(_, v)| v.is_none())
    );
    assert!(
        s.memory_set(&bob, "m")
            .await
            .unwrap()
            .iter()
            .all(|(m, _)| m.id == c.id)
    );

    // Access: counted per batch, the latest time kept, only the owner's.
    let t1 = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    s.record_access(&alice, &[(b.id, 2), (MemoryId::new(), 1)], t1)
        .await
        .unwrap();
    s.record_access(&alice, &[(b.id, 1)], t1 - chrono::Duration::days(1))
        .await
        .unwrap();
    s.record_access(&bob, &[(b.id, 5)], t1).await.unwrap();
    let b_now = s.get_memory(&alice, b.id).await.unwrap().unwrap();
    assert_eq!((b_now.access_count, b_now.last_accessed_at), (3, Some(t1)));

    // History: the chain a memory replaced, newest first; only the owner's.
    let history = s.memory_history(&alice, b.id).await.unwrap().unwrap();
    assert_eq!(ids(&history.chain), [b.id, a.id]);
    assert!(history.versions.is_empty());
    assert_eq!(
        ids(&s.memory_history(&alice, a.id).await.unwrap().unwrap().chain),
        [a.id]
    );
    assert!(s.memory_history(&bob, b.id).await.unwrap().is_none());

    // In-place changes keep the earlier state as a version; history is immutable.
    let merged = MemoryChange {
        text: Some(("works at the city library".into(), "m".into(), unit(3))),
        importance: Some(0.9),
        reason: "merged",
        ..Default::default()
    };
    let e2 = s
        .change_memory(&alice, e.id, &merged)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (e2.text.as_str(), e2.importance),
        ("works at the city library", 0.9)
    );
    assert_eq!(
        (e2.created_at, e2.metadata.clone()),
        (e.created_at, e.metadata.clone())
    );
    let patched = MemoryChange {
        metadata: Some(json!({"source": "chat"})),
        session: Some(Some("s2".into())),
        reason: "patched",
        ..Default::default()
    };
    let e3 = s
        .change_memory(&alice, e.id, &patched)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e3.text, e2.text);
    assert_eq!(
        (e3.metadata.clone(), e3.session.as_deref()),
        (json!({"source": "chat"}), Some("s2"))
    );
    assert!(
        s.change_memory(&alice, a.id, &patched)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.change_memory(&bob, e.id, &patched)
            .await
            .unwrap()
            .is_none()
    );
    let set = s.memory_set(&alice, "m").await.unwrap();
    assert!(
        set.iter().any(|(m, v)| m.id == e.id && *v == Some(unit(3))),
        "the merged text's vector"
    );
    let h = s.memory_history(&alice, e.id).await.unwrap().unwrap();
    assert_eq!(ids(&h.chain), [e.id, d.id]);
    let reasons: Vec<(&str, &str)> = h
        .versions
        .iter()
        .map(|v| (v.reason.as_str(), v.text.as_str()))
        .collect();
    assert!(
        reasons
            == [
                ("patched", "works at the city library"),
                ("merged", "works at the library")
            ]
            || reasons
                == [
                    ("merged", "works at the library"),
                    ("patched", "works at the city library")
                ],
        "{reasons:?}"
    );
    assert!(h.versions.iter().all(|v| v.memory_id == e.id));

    // Deleting takes the history with it; another tenant cannot delete.
    assert!(s.delete_memory(&bob, b.id).await.unwrap().is_none());
    let gone = s.delete_memory(&alice, b.id).await.unwrap().unwrap();
    assert_eq!(gone.len(), 2);
    assert!(s.get_memory(&alice, a.id).await.unwrap().is_none());
    assert_eq!(ids(&list(everything, None, 10).await), [e.id, d.id]);
    assert!(s.delete_memory(&alice, b.id).await.unwrap().is_none());
    // The key is free again once its memory is gone.
    created(
        s,
        &new(&alice, "lives in Oslo", Some("city"), 8),
        Replace::Nothing,
    )
    .await;
    assert_eq!(
        s.get_memory(&bob, c.id).await.unwrap().unwrap().text,
        "lives in Rome"
    );
}

#[tokio::test]
async fn memories_on_sqlite() {
    on_sqlite(contract).await;
}

#[tokio::test]
async fn memories_on_postgres() {
    on_postgres(contract).await;
}
