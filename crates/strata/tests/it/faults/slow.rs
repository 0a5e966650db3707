//! Slow and silent dependencies: Redis and PostgreSQL reached through a TCP proxy written
//! here, which passes, delays or silently drops what crosses it (a network partition). The
//! configured timeouts must fire, requests must fail fast rather than pile up, and memory
//! must stay bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{Load, Outcome, OwnPostgres, OwnRedis, Request, report};
use crate::helpers::TestServer;

/// What the proxy does with the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward at once.
    Pass,
    /// Forward each read after this long.
    Delay(Duration),
    /// Drop everything; when the mode leaves it, the connections that lost bytes are cut
    /// (as a partition's connections end up reset).
    Blackhole,
}

/// A loopback TCP proxy in front of `127.0.0.1:upstream`.
pub struct Proxy {
    pub port: u16,
    mode: watch::Sender<Mode>,
    /// Bytes dropped while blackholed.
    dropped: Arc<AtomicU64>,
}

impl Proxy {
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mode, _) = watch::channel(Mode::Pass);
        let dropped = Arc::new(AtomicU64::new(0));
        let (tx, dropped2) = (mode.clone(), dropped.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pump(ri, wo, tx.subscribe(), dropped2.clone()));
                tokio::spawn(pump(ro, wi, tx.subscribe(), dropped2.clone()));
            }
        });
        Self {
            port,
            mode,
            dropped,
        }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// One direction of one connection.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    dropped: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut lost = false;
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                if lost && *mode.borrow() != Mode::Blackhole {
                    return; // dropping both halves cuts the connection
                }
                continue;
            }
        };
        let now = *mode.borrow();
        match now {
            Mode::Pass => {}
            Mode::Delay(d) => tokio::time::sleep(d).await,
            Mode::Blackhole => {
                lost = true;
                dropped.fetch_add(n as u64, Ordering::Relaxed);
                continue;
            }
        }
        if lost || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// This process's resident memory, in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn classify(r: &reqwest::Result<reqwest::Response>) -> Outcome {
    match r {
        Ok(r) if r.status().is_success() => Outcome::Ok,
        // 503 + Retry-After (the database is known to be unreachable) and 504 (the request's
        // deadline passed) are the answers a slow dependency allows.
        Ok(r) if r.status() == 503 && r.headers().contains_key("retry-after") => Outcome::Refused,
        Ok(r) if r.status() == 504 => Outcome::Refused,
        _ => Outcome::Failed,
    }
}

fn mixed(s: &TestServer, ids: Vec<String>) -> Request {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let base = s.url("");
    Arc::new(move |task, n| {
        let (client, base) = (client.clone(), base.clone());
        let id = ids[(task + n as usize) % ids.len()].clone();
        Box::pin(async move {
            // A third are renames (the database, then an invalidation through Redis), the
            // rest reads of the document and the library page, which each rename makes miss
            // the in-process cache.
            let r = match n % 3 {
                0 => {
                    client
                        .patch(format!("{base}/v1/documents/{id}"))
                        .json(&serde_json::json!({ "title": format!("title {task}-{n}") }))
                        .send()
                        .await
                }
                1 => client.get(format!("{base}/v1/documents/{id}")).send().await,
                _ => {
                    client
                        .get(format!("{base}/v1/documents?limit=20"))
                        .send()
                        .await
                }
            };
            classify(&r)
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_redis_costs_reads_nothing_but_its_timeout() {
    let redis = OwnRedis::start();
    let proxy = Proxy::start(redis.url().rsplit(':').next().unwrap().parse().unwrap()).await;
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let s = TestServer::start_custom(
        tempfile::tempdir().unwrap(),
        move |e| {
            let mut r = strata_engine::RedisSettings::new(url);
            r.namespace = crate::helpers::redis_namespace().to_owned();
            e.cache.redis = Some(r);
        },
        |_| {},
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let d = s
            .create_text(&format!("Document {i} behind a silent Redis."), &[])
            .await;
        ids.push(d["id"].as_str().unwrap().to_owned());
    }
    let load = Load::start(4, Duration::from_millis(5), mixed(&s, ids));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss_mib();
    proxy.set(Mode::Blackhole);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let rss_during = rss_mib();
    proxy.set(Mode::Pass);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let samples = load.finish().await;
    let (ok, refused, failed, worst) = report("redis blackholed for 4 s", &samples);
    eprintln!(
        "[fault] redis blackholed: {} bytes dropped, RSS {rss_before:.0} -> {rss_during:.0} MiB",
        proxy.dropped()
    );
    assert!(proxy.dropped() > 0, "the partition swallowed traffic");
    assert_eq!((failed, refused), (0, 0), "every request was served");
    assert!(ok > 100);
    // Redis's operation timeout is 100 ms and its breaker opens after a few failures: no
    // read waits for a silent Redis for long.
    assert!(worst < Duration::from_secs(2), "worst read {worst:?}");
    assert!(rss_during - rss_before < 64.0, "memory stays bounded");
    s.stop().await;
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_then_silent_postgres_times_requests_out_and_fails_fast() {
    let pg = tokio::task::spawn_blocking(OwnPostgres::start)
        .await
        .unwrap();
    let pg_port: u16 = pg
        .url()
        .rsplit(':')
        .next()
        .and_then(|r| r.split('/').next())
        .unwrap()
        .parse()
        .unwrap();
    let proxy = Proxy::start(pg_port).await;
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", proxy.port);
    let s = TestServer::start_custom(
        tempfile::tempdir().unwrap(),
        move |e| e.database_url = Some(url.into()),
        |srv| srv.admission.timeout = Duration::from_secs(1),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let d = s
            .create_text(&format!("Document {i} behind a slow database."), &[])
            .await;
        ids.push(d["id"].as_str().unwrap().to_owned());
    }
    let load = Load::start(4, Duration::from_millis(5), mixed(&s, ids));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss_mib();

    // Slow: each read crossing the proxy waits 400 ms; a request needing several round trips
    // passes its 1 s deadline and is answered 504.
    let slow_from = Instant::now();
    proxy.set(Mode::Delay(Duration::from_millis(400)));
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Silent: the breaker's probe cannot connect, so requests are refused at once.
    let silent_from = Instant::now();
    proxy.set(Mode::Blackhole);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let rss_during = rss_mib();
    let back_at = Instant::now();
    proxy.set(Mode::Pass);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let samples = load.finish().await;

    let (_, _, failed, worst) = report("postgres slow 3 s, silent 4 s", &samples);
    let phase = |from: Instant, to: Instant| -> Vec<super::Sample> {
        samples
            .iter()
            .filter(|x| x.at >= from && x.at < to)
            .copied()
            .collect()
    };
    report("postgres, slow", &phase(slow_from, silent_from));
    let silent = phase(silent_from + Duration::from_secs(2), back_at);
    report("postgres, silent (after 2 s)", &silent);
    let after = phase(back_at, Instant::now());
    report("postgres, back", &after);
    eprintln!("[fault] postgres slow/silent: RSS {rss_before:.0} -> {rss_during:.0} MiB");
    assert_eq!(
        failed, 0,
        "only successes, 503 + Retry-After and 504 timeouts"
    );
    // The deadline bounds every request (1 s, and a little for the answer).
    assert!(worst < Duration::from_millis(2500), "worst {worst:?}");
    // Once the silence is known, requests that reach the database are refused at once.
    let slowest_silent = silent.iter().map(|x| x.took).max().unwrap_or_default();
    assert!(
        slowest_silent < Duration::from_millis(1100),
        "no request piles up behind a silent database: {slowest_silent:?}"
    );
    assert!(
        after.iter().any(|x| x.outcome == Outcome::Ok),
        "it recovers"
    );
    assert!(rss_during - rss_before < 64.0, "memory stays bounded");
    let health: Value = s.get_json("/v1/performance/system/health").await;
    assert_eq!(health["database"]["status"], "ok", "{health}");
    s.stop().await;
    drop(pg);
}
