//! Admission control over HTTP: per-tenant rate limits, load shedding, deadlines.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use strata_server::admission::{AdmissionSettings, RateLimit};
use tokio_util::bytes::Bytes;

use crate::helpers::{TestServer, assert_problem};

async fn server(admission: AdmissionSettings) -> TestServer {
    TestServer::start_custom(
        tempfile::tempdir().unwrap(),
        |e| e.jobs.workers = 0,
        move |srv| {
            srv.admission = admission;
            srv.identity = strata_server::caller::Identity::Header {
                name: strata_server::HeaderName::from_static("x-tenant"),
                admins: Default::default(),
            };
        },
    )
    .await
}

async fn get(s: &TestServer, path: &str, tenant: &str) -> reqwest::Response {
    s.client
        .get(s.url(path))
        .header("x-tenant", tenant)
        .send()
        .await
        .unwrap()
}

/// An upload whose body stops after its first bytes until `release` fires: a request held
/// in flight for as long as the test wants.
fn stalled_upload(
    s: &TestServer,
    tenant: &str,
    release: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let head = "--X\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\
                Content-Type: text/plain\r\n\r\nsome text";
    let tail = "\r\n--X--\r\n";
    let body =
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) })
            .chain(futures_util::stream::once(async move {
                let _ = release.await;
                Ok(Bytes::from(tail))
            }));
    let req = s
        .client
        .post(s.url("/v1/documents"))
        .header("x-tenant", tenant)
        .header("content-type", "multipart/form-data; boundary=X")
        .body(reqwest::Body::wrap_stream(body));
    tokio::spawn(req.send())
}

#[tokio::test]
async fn a_tenant_over_its_rate_gets_429_and_others_do_not() {
    let s = server(AdmissionSettings {
        rate: Some(RateLimit {
            per_second: 2,
            burst: 3,
        }),
        ..AdmissionSettings::default()
    })
    .await;
    let mut remaining = Vec::new();
    let mut refused = None;
    for _ in 0..6 {
        let r = get(&s, "/v1/documents", "alice").await;
        if r.status() == 429 {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["ratelimit-policy"],
            "\"tenant\";q=2;w=1;burst=3"
        );
        remaining.push(r.headers()["ratelimit"].to_str().unwrap().to_owned());
    }
    assert_eq!(remaining.len(), 3, "the burst is 3: {remaining:?}");
    assert!(remaining[0].starts_with("\"tenant\";r=2;"), "{remaining:?}");
    assert!(remaining[2].starts_with("\"tenant\";r=0;"), "{remaining:?}");
    let r = refused.expect("the fourth request at once is over the rate");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert!(r.headers()["ratelimit"].to_str().unwrap().contains("r=0"));
    assert_problem(r, 429, "rate_limited").await;
    // Another tenant has its own budget; health and metrics are never limited.
    assert_eq!(get(&s, "/v1/documents", "bob").await.status(), 200);
    for _ in 0..5 {
        assert_eq!(get(&s, "/healthz", "alice").await.status(), 200);
        assert_eq!(get(&s, "/metrics", "alice").await.status(), 200);
    }
    // The budget refills at the sustained rate.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(&s, "/v1/documents", "alice").await.status(), 200);
    s.stop().await;
}

#[tokio::test]
async fn over_capacity_is_shed_at_once_and_health_stays_reachable() {
    let s = server(AdmissionSettings {
        max_in_flight: 1,
        ..AdmissionSettings::default()
    })
    .await;
    let (release, held) = tokio::sync::oneshot::channel();
    let upload = stalled_upload(&s, "alice", held);
    // Wait until the upload holds the one slot.
    let started = Instant::now();
    let shed = loop {
        let t = Instant::now();
        let r = get(&s, "/v1/documents", "bob").await;
        if r.status() == 503 {
            break (r, t.elapsed());
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never shed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(shed.1 < Duration::from_millis(500), "shed in {:?}", shed.1);
    assert_eq!(shed.0.headers()["retry-after"], "1");
    assert_problem(shed.0, 503, "overloaded").await;
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/performance/cache/stats",
    ] {
        assert_eq!(get(&s, path, "bob").await.status(), 200, "{path}");
    }
    release.send(()).unwrap();
    assert_eq!(upload.await.unwrap().unwrap().status(), 202);
    assert_eq!(get(&s, "/v1/documents", "bob").await.status(), 200);
    s.stop().await;
}

#[tokio::test]
async fn a_request_past_its_deadline_is_answered_504() {
    let s = server(AdmissionSettings {
        upload_timeout: Duration::from_secs(1),
        ..AdmissionSettings::default()
    })
    .await;
    let (_release, held) = tokio::sync::oneshot::channel();
    let started = Instant::now();
    let r = stalled_upload(&s, "alice", held).await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_problem(r, 504, "timeout").await;
    // Nothing was stored, and the server keeps serving.
    let list: serde_json::Value = get(&s, "/v1/documents", "alice")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    s.stop().await;
}

#[tokio::test]
async fn instances_over_one_redis_share_a_tenants_rate() {
    let start = || {
        TestServer::start_custom(
            tempfile::tempdir().unwrap(),
            |e| {
                e.jobs.workers = 0;
                e.cache.redis = Some(crate::helpers::redis_settings());
            },
            |srv| {
                srv.admission.rate = Some(RateLimit {
                    per_second: 1,
                    burst: 3,
                });
                srv.identity = strata_server::caller::Identity::Header {
                    name: strata_server::HeaderName::from_static("x-tenant"),
                    admins: Default::default(),
                };
            },
        )
    };
    let (a, b) = (start().await, start().await);
    let tenant = format!("shared-{}", uuid::Uuid::now_v7());
    // Three requests fit the burst wherever they land; the fourth is refused by either.
    let mut statuses = Vec::new();
    for s in [&a, &b, &a, &b, &a] {
        statuses.push(get(s, "/v1/documents", &tenant).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429], "{statuses:?}");
    // Another tenant is not affected.
    assert_eq!(get(&b, "/v1/documents", "someone-else").await.status(), 200);
    a.stop().await;
    b.stop().await;
}

/// Searches that would wait for the model past the wait budget are refused 503 `overloaded`
/// at once with Retry-After; the one with no one ahead is always admitted and answered.
#[tokio::test]
async fn searches_past_the_models_wait_budget_are_refused_at_once() {
    let s = TestServer::start_with(|e| {
        e.jobs.workers = 0;
        e.batch.max_batch = 1;
        e.batch.max_queue_wait = Some(Duration::from_millis(1));
    })
    .await;
    // One search alone: admitted, and it teaches the batcher what a text costs.
    let first = s
        .post_json("/v1/search", serde_json::json!({"query": "a first query"}))
        .await;
    assert_eq!(first.status(), 200);
    let searches = (0..16).map(|i| {
        s.post_json(
            "/v1/search",
            serde_json::json!({"query": format!("distinct query number {i}")}),
        )
    });
    let (mut answered, mut refused) = (0, 0);
    for r in futures_util::future::join_all(searches).await {
        match r.status().as_u16() {
            200 => answered += 1,
            503 => {
                assert_eq!(r.headers()["retry-after"], "1");
                assert_problem(r, 503, "overloaded").await;
                refused += 1;
            }
            other => panic!("status {other}"),
        }
    }
    assert!(answered >= 1, "the first to arrive is alone, so admitted");
    assert!(refused >= 1, "{answered} answered, none refused");
    s.stop().await;
}
