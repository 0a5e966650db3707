use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

#[derive(Debug, PartialEq)]
enum TestError {
    Cache(CacheError),
    Boom,
}

impl From<CacheError> for TestError {
    fn from(e: CacheError) -> Self {
        TestError::Cache(e)
    }
}

fn cache(bytes: u64) -> Cache {
    Cache::new(CacheSettings {
        l1_bytes: bytes,
        kinds: vec![
            KindSpec {
                name: "search",
                l1_ttl: Duration::from_secs(600),
                l2_ttl: Duration::from_secs(600),
                distributed: false,
            },
            KindSpec {
                name: "off",
                l1_ttl: Duration::ZERO,
                l2_ttl: Duration::ZERO,
                distributed: true,
            },
            KindSpec {
                name: "short",
                l1_ttl: Duration::from_secs(5),
                l2_ttl: Duration::from_secs(5),
                distributed: false,
            },
        ],
        redis: None,
    })
    .unwrap()
}

async fn fetch(c: &Cache, kind: &str, scope: &str, material: &str, calls: &AtomicUsize) -> Lookup {
    c.get_or_compute(kind, scope, material.as_bytes(), || async {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok::<_, TestError>(Bytes::from(format!("{scope}/{material}")))
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn second_lookup_hits_and_other_requests_miss() {
    let c = cache(1 << 20);
    let calls = AtomicUsize::new(0);
    assert_eq!(
        fetch(&c, "search", "t1", "q=a", &calls).await.source,
        Source::Computed
    );
    let hit = fetch(&c, "search", "t1", "q=a", &calls).await;
    assert_eq!(hit.source, Source::L1);
    assert_eq!(hit.value, Bytes::from("t1/q=a"));
    assert_eq!(
        fetch(&c, "search", "t1", "q=b", &calls).await.source,
        Source::Computed
    );
    assert_eq!(
        fetch(&c, "search", "t2", "q=a", &calls).await.source,
        Source::Computed,
        "scopes never share"
    );
    assert_eq!(
        fetch(&c, "short", "t1", "q=a", &calls).await.source,
        Source::Computed,
        "kinds never share"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    let s = c.stats();
    let search = s.kinds.iter().find(|k| k.kind == "search").unwrap();
    assert_eq!((search.hits_l1, search.misses), (1, 3));
    assert!(s.l1_bytes > 0 && s.l1_entries == 4);
}

#[tokio::test]
async fn invalidating_a_scope_hides_only_its_entries() {
    let c = cache(1 << 20);
    let calls = AtomicUsize::new(0);
    fetch(&c, "search", "t1", "q", &calls).await;
    fetch(&c, "search", "t2", "q", &calls).await;
    c.invalidate("t1").await;
    assert_eq!(
        fetch(&c, "search", "t1", "q", &calls).await.source,
        Source::Computed
    );
    assert_eq!(
        fetch(&c, "search", "t2", "q", &calls).await.source,
        Source::L1
    );
    assert_eq!(c.generation("t1").await, Some(1));
    assert_eq!(c.generation("t2").await, Some(0));
    assert_eq!(c.stats().invalidations, 1);
}

#[tokio::test(start_paused = true)]
async fn entries_expire_after_their_kinds_ttl() {
    let c = cache(1 << 20);
    let calls = AtomicUsize::new(0);
    fetch(&c, "short", "s", "q", &calls).await;
    fetch(&c, "search", "s", "q", &calls).await;
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(
        fetch(&c, "short", "s", "q", &calls).await.source,
        Source::Computed
    );
    assert_eq!(
        fetch(&c, "search", "s", "q", &calls).await.source,
        Source::L1
    );
    assert_eq!(c.stats().l1_expirations, 1);
}

/// A content-addressed entry (the global scope) read late in its life lives on; one nobody
/// reads expires; a scoped entry expires however often it is read.
#[tokio::test(start_paused = true)]
async fn content_addressed_entries_in_use_are_renewed_and_others_expire() {
    let c = cache(1 << 20);
    let calls = AtomicUsize::new(0);
    // "short" lives 4.5-5 s.
    for q in ["read", "unread"] {
        fetch(&c, "short", crate::GLOBAL_SCOPE, q, &calls).await;
    }
    fetch(&c, "short", "s", "read", &calls).await;
    for round in 0..4 {
        tokio::time::advance(Duration::from_millis(4_200)).await;
        assert_eq!(
            fetch(&c, "short", crate::GLOBAL_SCOPE, "read", &calls)
                .await
                .source,
            Source::L1
        );
        if round < 2 {
            // Read at 4.2 s (a hit), then at 8.4 s: expired whatever the reads.
            let want = [Source::L1, Source::Computed][round];
            assert_eq!(fetch(&c, "short", "s", "read", &calls).await.source, want);
        }
    }
    assert_eq!(
        fetch(&c, "short", crate::GLOBAL_SCOPE, "unread", &calls)
            .await
            .source,
        Source::Computed
    );
}

/// Entries stored together do not expire together: each lives 90-100% of its TTL.
#[tokio::test(start_paused = true)]
async fn entries_stored_together_expire_spread_over_a_tenth_of_the_ttl() {
    let c = cache(1 << 20);
    let calls = AtomicUsize::new(0);
    // "short" lives 5 s: each entry 4.5-5 s.
    for i in 0..200 {
        fetch(&c, "short", "s", &format!("q{i}"), &calls).await;
    }
    let alive = |c: &Cache| {
        let c = c.clone();
        async move {
            let mut n = 0;
            for i in 0..200 {
                let got = fetch(&c, "short", "s", &format!("q{i}"), &AtomicUsize::new(0)).await;
                n += usize::from(got.source == Source::L1);
            }
            n
        }
    };
    tokio::time::advance(Duration::from_millis(4_400)).await;
    assert_eq!(alive(&c).await, 200, "none expires before 90% of its TTL");
    tokio::time::advance(Duration::from_millis(350)).await;
    let at_4_75 = alive(&c).await;
    assert!(
        (40..160).contains(&at_4_75),
        "{at_4_75} of 200 alive at 4.75 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_compute_once() {
    let c = cache(1 << 20);
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (c, calls) = (c.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            c.get_or_compute("search", "t", b"same", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok::<_, TestError>(Bytes::from_static(b"v"))
            })
            .await
            .unwrap()
        }));
    }
    let mut sources = Vec::new();
    for t in tasks {
        let l = t.await.unwrap();
        assert_eq!(l.value, Bytes::from_static(b"v"));
        sources.push(l.source);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one computation for 50 concurrent misses"
    );
    assert_eq!(
        sources.iter().filter(|s| **s == Source::Computed).count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_computation_is_not_cached_and_releases_waiters() {
    let c = cache(1 << 20);
    let calls = Arc::new(AtomicUsize::new(0));
    let leader = {
        let (c, calls) = (c.clone(), calls.clone());
        tokio::spawn(async move {
            c.get_or_compute("search", "t", b"k", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err::<Bytes, _>(TestError::Boom)
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let follower = c
        .get_or_compute("search", "t", b"k", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, TestError>(Bytes::from_static(b"ok"))
        })
        .await
        .unwrap();
    assert_eq!(leader.await.unwrap().unwrap_err(), TestError::Boom);
    assert_eq!(follower.value, Bytes::from_static(b"ok"));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn l1_stays_within_its_byte_budget() {
    let c = cache(64 * 1024);
    let calls = AtomicUsize::new(0);
    for i in 0..1000 {
        c.get_or_compute("search", "t", format!("{i}").as_bytes(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, TestError>(Bytes::from(vec![b'x'; 1000]))
        })
        .await
        .unwrap();
    }
    let s = c.stats();
    assert!(s.l1_bytes <= 64 * 1024, "{} bytes", s.l1_bytes);
    assert!(s.l1_evictions > 0);
}

#[tokio::test]
async fn clear_by_kind_and_unknown_kinds() {
    let c = cache(1 << 20);
    let calls = AtomicUsize::new(0);
    fetch(&c, "search", "t", "a", &calls).await;
    fetch(&c, "short", "t", "a", &calls).await;
    assert_eq!(c.clear(Some("search")).await.l1, 1);
    assert_eq!(
        fetch(&c, "short", "t", "a", &calls).await.source,
        Source::L1
    );
    assert_eq!(
        fetch(&c, "search", "t", "a", &calls).await.source,
        Source::Computed
    );
    let err = c
        .get_or_compute("nope", "t", b"", || async {
            Ok::<_, TestError>(Bytes::new())
        })
        .await
        .unwrap_err();
    assert_eq!(
        err,
        TestError::Cache(CacheError::UnknownKind("nope".into()))
    );
}

#[tokio::test]
async fn a_kind_with_zero_ttls_is_computed_every_time_and_never_kept() {
    let c = cache(1 << 20);
    let calls = AtomicUsize::new(0);
    for _ in 0..3 {
        assert_eq!(
            fetch(&c, "off", "t1", "q=a", &calls).await.source,
            Source::Computed
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(c.stats().l1_entries, 0, "nothing kept in L1");
}

#[test]
fn keys_follow_the_documented_layout() {
    // {namespace}:{kind}:{scope}:{generation}:{first 32 hex digits of blake3(material)}
    let material = b"{\"query\":\"tides\",\"k\":10}";
    let hex = blake3::hash(material).to_hex();
    assert_eq!(
        super::make_key(
            "strata",
            "search_results",
            "t0a1b",
            7,
            &super::Digest::of(material)
        ),
        format!("strata:search_results:t0a1b:7:{}", &hex[..32])
    );
    for g in [0, 10, 1_234_567, u64::MAX] {
        assert_eq!(
            super::make_key("n", "k", "s", g, &super::Digest::of(material)),
            format!("n:k:s:{g}:{}", &hex[..32])
        );
    }
    assert!(super::key_has_kind(
        "strata-staging",
        "strata-staging:search_results:t0a1b:7:00",
        "search_results"
    ));
    assert!(!super::key_has_kind(
        "strata",
        "strata-staging:search_results:t0a1b:7:00",
        "search_results"
    ));
    assert!(!super::key_has_kind(
        "strata",
        "strata:search_results_v2:t0a1b:7:00",
        "search_results"
    ));
}
