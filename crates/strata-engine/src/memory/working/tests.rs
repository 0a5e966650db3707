use chrono::Utc;
use serde_json::json;

use super::*;

fn unit(dims: usize, i: usize) -> Vec<f32> {
    let mut v = vec![0.0; dims];
    v[i % dims] = 1.0;
    v
}

fn memory(text: &str, session: Option<&str>) -> Memory {
    let now = Utc::now();
    Memory {
        id: MemoryId::new(),
        text: text.into(),
        importance: 0.5,
        metadata: json!({"topic": text.split(' ').next().unwrap()}),
        session: session.map(Into::into),
        key: None,
        occurred_at: None,
        created_at: now,
        updated_at: now,
        superseded_by: None,
        access_count: 0,
        last_accessed_at: None,
    }
}

fn terms(q: &str) -> Vec<String> {
    crate::bm25::analyze(q).collect()
}

#[test]
fn candidates_come_from_both_sides_and_respect_every_filter() {
    let a = memory("cats purr when content", Some("s1"));
    let b = memory("dogs bark at strangers", None);
    let c = memory("parrots repeat words", Some("s1"));
    let set = TenantSet::new(
        vec![
            (a.clone(), Some(unit(4, 0))),
            (b.clone(), Some(unit(4, 1))),
            (c.clone(), Some(unit(4, 2))),
        ],
        4,
        7,
    );
    assert_eq!((set.len(), set.generation()), (3, 7));
    let all = MemoryFilter::default();
    let none = MetadataMatch::new();
    // The vector side finds `a`, the lexical side `b`: both are candidates, `b` with its
    // exact cosine.
    let found = set.candidates(&unit(4, 0), &terms("dogs"), &all, &none, 1);
    let mut ids: Vec<MemoryId> = found.iter().map(|c| c.memory.id).collect();
    ids.sort();
    let mut want = vec![a.id, b.id];
    want.sort();
    assert_eq!(ids, want);
    let fb = found.iter().find(|c| c.memory.id == b.id).unwrap();
    assert_eq!((fb.cosine, fb.bm25.is_some()), (0.0, true));
    // A session filter gates both sides.
    let s1 = MemoryFilter {
        session: Some("s1".into()),
        ..Default::default()
    };
    let found = set.candidates(&unit(4, 1), &terms("dogs parrots"), &s1, &none, 5);
    assert!(
        found
            .iter()
            .all(|c| c.memory.session.as_deref() == Some("s1"))
    );
    assert_eq!(found.len(), 2);
    // Metadata must equal.
    let mut topic = MetadataMatch::new();
    topic.insert("topic".into(), json!("parrots"));
    let found = set.candidates(&unit(4, 0), &terms("cats"), &all, &topic, 5);
    assert_eq!(
        found.iter().map(|c| c.memory.id).collect::<Vec<_>>(),
        [c.id]
    );
}

#[test]
fn superseded_memories_leave_default_searches_and_stay_reachable() {
    let a = memory("lives in Paris", None);
    let b = memory("lives in Berlin", None);
    let set = TenantSet::new(vec![(a.clone(), Some(unit(4, 0)))], 4, 0);
    set.put(b.clone(), Some(&unit(4, 1)));
    set.supersede(a.id, b.id, Utc::now());
    let none = MetadataMatch::new();
    let found = set.candidates(
        &unit(4, 0),
        &terms("paris"),
        &MemoryFilter::default(),
        &none,
        5,
    );
    assert_eq!(
        found.iter().map(|c| c.memory.id).collect::<Vec<_>>(),
        [b.id]
    );
    let with_old = MemoryFilter {
        include_superseded: true,
        ..Default::default()
    };
    let found = set.candidates(&unit(4, 0), &terms("paris"), &with_old, &none, 5);
    let old = found.iter().find(|c| c.memory.id == a.id).unwrap();
    assert!(old.bm25.is_some() && old.cosine > 0.99);
    assert_eq!(set.get(a.id).unwrap().superseded_by, Some(b.id));
    assert_eq!(set.nearest_current(&unit(4, 0), None).unwrap().0, b.id);
}

#[test]
fn removal_and_compaction_keep_every_live_memory_searchable() {
    let rows: Vec<(Memory, Option<Vec<f32>>)> = (0..40)
        .map(|i| {
            (
                memory(&format!("fact number{i} here"), None),
                Some(unit(8, i)),
            )
        })
        .collect();
    let ids: Vec<MemoryId> = rows.iter().map(|(m, _)| m.id).collect();
    let set = TenantSet::new(rows, 8, 0);
    set.remove(&ids[..30]);
    assert_eq!(set.len(), 10);
    let none = MetadataMatch::new();
    for (i, id) in ids.iter().enumerate().skip(30) {
        let found = set.candidates(
            &unit(8, i),
            &terms(&format!("number{i}")),
            &MemoryFilter::default(),
            &none,
            1,
        );
        let hit = found.iter().find(|c| c.memory.id == *id).unwrap();
        assert!(hit.cosine > 0.99 && hit.bm25.is_some(), "{i}");
    }
    assert!(set.get(ids[0]).is_none());
}

#[test]
fn the_budget_evicts_the_least_recently_used_set() {
    let one = |n: usize| {
        let rows = (0..n)
            .map(|i| (memory("x y", None), Some(unit(64, i))))
            .collect();
        Arc::new(TenantSet::new(rows, 64, 1))
    };
    let per = one(100).bytes();
    let sets = WorkingSets::new(per * 2 + per / 2);
    let t = |s: &str| TenantId::parse(s).unwrap();
    sets.insert(&t("a"), one(100));
    sets.insert(&t("b"), one(100));
    assert!(sets.get(&t("a"), 1).is_some());
    sets.insert(&t("c"), one(100));
    assert!(sets.get(&t("b"), 1).is_none(), "b was least recently used");
    assert!(sets.get(&t("a"), 1).is_some() && sets.get(&t("c"), 1).is_some());
    assert!(
        sets.get(&t("a"), 2).is_none(),
        "a set at another generation"
    );
    let stats = sets.stats();
    assert_eq!((stats.tenants, stats.evictions), (2, 1));
}

#[test]
fn dot_is_the_plain_sum_of_products() {
    let a: Vec<f32> = (0..389).map(|i| (i as f32 * 0.37).sin()).collect();
    let b: Vec<f32> = (0..389).map(|i| (i as f32 * 0.11).cos()).collect();
    let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    assert!((dot(&a, &b) - plain).abs() < 1e-3);
}

#[test]
fn the_two_pass_scan_finds_the_exact_nearest_with_exact_cosines() {
    // Pseudo-random unit vectors of the model's size.
    let dims = 384;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let mut unit = || {
        let v: Vec<f32> = (0..dims).map(|_| next()).collect();
        let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        v.into_iter().map(|a| a / norm).collect::<Vec<f32>>()
    };
    let rows: Vec<(Memory, Option<Vec<f32>>)> = (0..3000)
        .map(|_| (memory("x", None), Some(unit())))
        .collect();
    let vectors: Vec<(MemoryId, Vec<f32>)> = rows
        .iter()
        .map(|(m, v)| (m.id, v.clone().unwrap()))
        .collect();
    let set = TenantSet::new(rows, dims, 0);
    for _ in 0..20 {
        let q = unit();
        let mut exact: Vec<(MemoryId, f32)> =
            vectors.iter().map(|(id, v)| (*id, dot(v, &q))).collect();
        exact.sort_by(|a, b| b.1.total_cmp(&a.1));
        let found = set.candidates(&q, &[], &MemoryFilter::default(), &MetadataMatch::new(), 20);
        assert_eq!(found.len(), 20);
        let mut got: Vec<(MemoryId, f32)> = found.iter().map(|c| (c.memory.id, c.cosine)).collect();
        got.sort_by(|a, b| b.1.total_cmp(&a.1));
        assert_eq!(got, exact[..20].to_vec());
    }
}

#[test]
fn codes_follow_their_vectors() {
    let v: Vec<f32> = (0..40).map(|i| (i as f32 - 20.0) / 50.0).collect();
    let mut codes = vec![0i8; 40];
    let scale = quantize(&v, &mut codes);
    for (c, x) in codes.iter().zip(&v) {
        assert!((f32::from(*c) * scale - x).abs() <= scale / 2.0 + 1e-6);
    }
    assert_eq!(
        dot_i8(&codes, &codes),
        codes.iter().map(|c| i32::from(*c).pow(2)).sum::<i32>()
    );
    let mut zero = vec![1i8; 4];
    assert_eq!(quantize(&[0.0; 4], &mut zero), 0.0);
    assert_eq!(zero, [0; 4]);
}
