//! The Redis tier against a real Redis: L2 hits across caches (each cache stands for one
//! process), invalidation that reaches every cache before `invalidate` returns, single-flight
//! across caches, a lock whose holder died, and a Redis that is unreachable, stopped and
//! restarted under load.
//!
//! Uses `STRATA_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`); the restart test starts
//! its own `redis-server` on a free port. Every test process uses a namespace of its own, so
//! tests can share one Redis: an invalidation waits only for this test's processes to
//! acknowledge it, not for whatever else is subscribed to the same server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_cache::{Cache, CacheError, CacheSettings, KindSpec, RedisSettings, Source};

#[derive(Debug)]
struct Never;

impl From<CacheError> for Never {
    fn from(e: CacheError) -> Self {
        panic!("cache error: {e}")
    }
}

fn redis_url() -> String {
    std::env::var("STRATA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// This test process's namespace.
fn namespace() -> &'static str {
    static NS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NS.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("strata-test-{}-{nanos}", std::process::id())
    })
}

fn settings(url: &str) -> RedisSettings {
    let mut r = RedisSettings::new(url);
    r.namespace = namespace().to_owned();
    r.heartbeat = Duration::from_millis(50);
    r.open_for = Duration::from_millis(200);
    r.lock_wait = Duration::from_millis(600);
    r.lock_ttl = Duration::from_secs(5);
    r
}

fn kinds() -> Vec<KindSpec> {
    vec![
        KindSpec {
            name: "search",
            l1_ttl: Duration::from_secs(600),
            l2_ttl: Duration::from_secs(600),
            distributed: true,
        },
        KindSpec {
            name: "meta",
            l1_ttl: Duration::from_secs(600),
            l2_ttl: Duration::from_secs(600),
            distributed: false,
        },
    ]
}

async fn cache_at(r: RedisSettings) -> Cache {
    let c = Cache::new(CacheSettings {
        l1_bytes: 1 << 20,
        kinds: kinds(),
        redis: Some(r),
    })
    .unwrap();
    assert!(c.ready(Duration::from_secs(5)).await, "redis bus not ready");
    c
}

async fn cache() -> Cache {
    cache_at(settings(&redis_url())).await
}

/// A scope no other test (or earlier run) uses.
fn scope(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test-{name}-{nanos}")
}

async fn read(
    c: &Cache,
    kind: &str,
    scope: &str,
    q: &str,
    data: &str,
    calls: &AtomicUsize,
) -> (Source, Bytes) {
    let l = c
        .get_or_compute(kind, scope, q.as_bytes(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Never>(Bytes::from(data.to_owned()))
        })
        .await
        .unwrap();
    (l.source, l.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_computed_in_one_process_is_an_l2_hit_in_another() {
    let (a, b) = (cache().await, cache().await);
    let s = scope("l2");
    let calls = AtomicUsize::new(0);
    let big = "x".repeat(4000);
    assert_eq!(
        read(&a, "meta", &s, "q", &big, &calls).await.0,
        Source::Computed
    );
    let (source, value) = read(&b, "meta", &s, "q", "other", &calls).await;
    assert_eq!((source, value.len()), (Source::L2, 4000));
    assert_eq!(
        read(&b, "meta", &s, "q", "other", &calls).await.0,
        Source::L1
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let l2 = b.stats().l2.unwrap();
    assert_eq!(l2.breaker, "closed");
    let stored = a.stats().l2.unwrap().bytes_written;
    assert!(
        stored < 200,
        "4000 repetitive bytes stored compressed, got {stored}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_reaches_every_process_before_it_returns() {
    let (a, b) = (cache().await, cache().await);
    let s = scope("inval");
    let calls = AtomicUsize::new(0);
    for round in 0..100 {
        let before = format!("v{round}");
        let after = format!("v{}", round + 1);
        // Both processes hold the current value in L1.
        read(&a, "meta", &s, "q", &before, &calls).await;
        let (_, seen) = read(&b, "meta", &s, "q", &before, &calls).await;
        assert_eq!(seen, Bytes::from(before.clone()));
        // A write through `a`; the very next read through `b` must not see the old value.
        a.invalidate(&s).await;
        let (source, seen) = read(&b, "meta", &s, "q", &after, &calls).await;
        assert_eq!(
            seen,
            Bytes::from(after),
            "round {round}: stale read ({source:?})"
        );
    }
    assert_eq!(a.stats().l2.unwrap().ack_timeouts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_bumping_several_scopes_reaches_every_process_for_each_before_it_returns() {
    let (a, b, c) = (cache().await, cache().await, cache().await);
    let scopes = [scope("multi-a"), scope("multi-b"), scope("multi-c")];
    let calls = AtomicUsize::new(0);
    for round in 0..30 {
        let before = format!("v{round}");
        let after = format!("v{}", round + 1);
        for s in &scopes {
            for p in [&a, &b, &c] {
                read(p, "meta", s, "q", &before, &calls).await;
            }
        }
        a.invalidate_all(&scopes).await;
        for s in &scopes {
            for (name, p) in [("a", &a), ("b", &b), ("c", &c)] {
                let (source, seen) = read(p, "meta", s, "q", &after, &calls).await;
                assert_eq!(
                    seen,
                    Bytes::from(after.clone()),
                    "round {round}, scope {s}, process {name}: stale read ({source:?})"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_in_two_processes_compute_once() {
    let (a, b) = (cache().await, cache().await);
    let s = scope("flight");
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let c = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (s, calls) = (s.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            c.get_or_compute("search", &s, b"same query", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(150)).await;
                Ok::<_, Never>(Bytes::from_static(b"result"))
            })
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().value, Bytes::from_static(b"result"));
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one computation across both processes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lock_holder_delays_but_never_blocks() {
    let a = cache().await;
    let s = scope("deadlock");
    // Find the key `a` will use and take its lock as a process that then dies would.
    let key = a.key("search", &s, b"q").await.unwrap();
    let ns = namespace();
    let lock = format!("{ns}:lock:{}", key.strip_prefix(&format!("{ns}:")).unwrap());
    let out = Command::new("redis-cli")
        .args([
            "-u",
            &redis_url(),
            "SET",
            &lock,
            "dead-holder",
            "PX",
            "5000",
            "NX",
        ])
        .output()
        .expect("redis-cli");
    assert!(out.status.success());
    let calls = AtomicUsize::new(0);
    let start = Instant::now();
    let (source, _) = read(&a, "search", &s, "q", "v", &calls).await;
    let took = start.elapsed();
    assert_eq!(
        (source, calls.load(Ordering::SeqCst)),
        (Source::Computed, 1)
    );
    assert!(
        took >= Duration::from_millis(500),
        "waited for the holder: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "bounded wait: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_never_fails_or_stalls_a_read() {
    // Nothing listens on port 1.
    let c = Cache::new(CacheSettings {
        l1_bytes: 1 << 20,
        kinds: kinds(),
        redis: Some(settings("redis://127.0.0.1:1")),
    })
    .unwrap();
    assert!(!c.ready(Duration::from_millis(300)).await);
    let calls = AtomicUsize::new(0);
    let start = Instant::now();
    for i in 0..50 {
        let (source, v) = read(&c, "meta", "t", "q", &format!("{i}"), &calls).await;
        assert_eq!((source, v), (Source::Bypassed, Bytes::from(format!("{i}"))));
        // Content-addressed values stay cached without Redis.
        read(&c, "meta", strata_cache::GLOBAL_SCOPE, "q", "g", &calls).await;
    }
    c.invalidate("t").await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 51);
    let l2 = c.stats().l2.unwrap();
    assert!(!l2.bus_healthy);
    assert_eq!(l2.pending_bumps, 1);
}

struct Server(Child);

impl Server {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_and_restarted_under_load() {
    let port = free_port();
    let server = Server::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    let (a, b) = (
        cache_at(settings(&url)).await,
        cache_at(settings(&url)).await,
    );
    let s = scope("restart");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slowest = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let mut load = Vec::new();
    for c in [a.clone(), b.clone()] {
        let (s, stop, slowest) = (s.clone(), stop.clone(), slowest.clone());
        load.push(tokio::spawn(async move {
            let calls = AtomicUsize::new(0);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let (_, v) = read(&c, "meta", &s, &format!("q{}", n % 20), "v", &calls).await;
                assert_eq!(v, Bytes::from_static(b"v"));
                let took = t.elapsed();
                {
                    let mut m = slowest.lock().unwrap();
                    *m = (*m).max(took);
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(server);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!a.stats().l2.unwrap().bus_healthy, "a noticed the outage");
    // A write while Redis is down is remembered and published when it returns.
    a.invalidate(&s).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _server = Server::start(port);
    assert!(
        a.ready(Duration::from_secs(10)).await,
        "a recovered by itself"
    );
    assert!(
        b.ready(Duration::from_secs(10)).await,
        "b recovered by itself"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        assert!(t.await.unwrap() > 50, "reads kept being served");
    }
    let worst = *slowest.lock().unwrap();
    assert!(
        worst < Duration::from_secs(1),
        "no read stalled: worst {worst:?}"
    );
    let stats = a.stats().l2.unwrap();
    assert!(stats.breaker_opened >= 1);
    assert_eq!(
        stats.pending_bumps, 0,
        "the bump made during the outage was replayed"
    );
    // Both tiers serve again.
    let calls = AtomicUsize::new(0);
    read(&a, "meta", &s, "after", "w", &calls).await;
    assert_eq!(
        read(&b, "meta", &s, "after", "w", &calls).await.0,
        Source::L2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_with_different_namespaces_share_a_redis_without_seeing_each_other() {
    let a = cache().await;
    let mut other = settings(&redis_url());
    other.namespace = format!("{}-other", namespace());
    let b = cache_at(other).await;
    let s = scope("namespaces");
    let calls = AtomicUsize::new(0);
    read(&a, "meta", &s, "q", "a's value", &calls).await;
    let (source, seen) = read(&b, "meta", &s, "q", "b's value", &calls).await;
    assert_eq!(
        (source, seen),
        (Source::Computed, Bytes::from_static(b"b's value")),
        "no L2 hit across namespaces"
    );
    // `a`'s write bumps its own namespace's generation only: `b` keeps its entry.
    a.invalidate(&s).await;
    assert_eq!(read(&b, "meta", &s, "q", "new", &calls).await.0, Source::L1);
    assert_eq!(
        read(&a, "meta", &s, "q", "new", &calls).await.1,
        Bytes::from_static(b"new")
    );
}

#[test]
fn a_namespace_that_could_collide_or_match_a_pattern_is_refused() {
    for good in ["strata", "prod-eu.1", "a_b"] {
        assert!(RedisSettings::check_namespace(good).is_ok(), "{good}");
    }
    for bad in ["", "a:b", "a*", "a b", "ü", &"x".repeat(65)] {
        assert!(RedisSettings::check_namespace(bad).is_err(), "{bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_log_streams_from_its_leader_to_readers_in_other_processes() {
    use strata_cache::shared_log::Claim;
    let (a, b) = (cache().await, cache().await);
    let name = format!("log-{}", std::process::id());
    let lease = Duration::from_secs(5);
    let ttl = Duration::from_secs(30);
    let Claim::Lead(leader) = a.claim_log(&name, lease, ttl).await else {
        panic!("the first claim leads");
    };
    let Claim::Follow(mut late) = b.claim_log(&name, lease, ttl).await else {
        panic!("a second claim follows");
    };
    assert!(leader.append(vec![Bytes::from_static(b"one")]).await);
    let Claim::Follow(mut reader) = b.claim_log(&name, lease, ttl).await else {
        panic!("follows while led");
    };
    let r = reader.read().await.unwrap();
    assert_eq!(r.entries, vec![Bytes::from_static(b"one")]);
    assert!(r.led);
    assert_eq!(leader.readers().await, 1);
    assert!(
        leader
            .append(vec![
                Bytes::from_static(b"two"),
                Bytes::from_static(b"three")
            ])
            .await
    );
    let r = reader.read().await.unwrap();
    assert_eq!(r.entries.len(), 2, "only what is new");
    // A reader that joined before any entry gets them all, in order.
    let r = late.read().await.unwrap();
    assert_eq!(
        r.entries,
        vec![
            Bytes::from_static(b"one"),
            Bytes::from_static(b"two"),
            Bytes::from_static(b"three")
        ]
    );
    assert!(leader.close(vec![Bytes::from_static(b"end")]).await);
    let r = reader.read().await.unwrap();
    assert_eq!(r.entries, vec![Bytes::from_static(b"end")]);
    assert!(!r.led, "closed: the last entry and no leader, in one read");
    assert!(
        !leader.append(vec![Bytes::from_static(b"late")]).await,
        "closed"
    );
    leader.release().await;
    // A new claim leads afresh, over an empty log.
    let Claim::Lead(next) = b.claim_log(&name, lease, ttl).await else {
        panic!("a released log can be claimed");
    };
    let Claim::Follow(mut fresh) = a.claim_log(&name, lease, ttl).await else {
        panic!("follows");
    };
    assert!(fresh.read().await.unwrap().entries.is_empty());
    next.release().await;
}
