//! The HTTP embedder against a local server speaking the OpenAI embeddings protocol, with
//! faults injected: errors, slowness, and the server going away.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail loudly on unexpected values"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use strata_embed::{BreakerState, EmbedError, Embedder, HttpEmbedder, HttpSettings};

#[derive(Default)]
struct Faults {
    requests: AtomicU32,
    fail_next: AtomicU32,
    fail_status: AtomicU32,
    delay_ms: AtomicU64,
}

async fn embeddings(
    State(f): State<Arc<Faults>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    f.requests.fetch_add(1, Ordering::SeqCst);
    let delay = f.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if f.fail_next.load(Ordering::SeqCst) > 0 {
        f.fail_next.fetch_sub(1, Ordering::SeqCst);
        let status = StatusCode::from_u16(f.fail_status.load(Ordering::SeqCst) as u16).unwrap();
        return (status, Json(json!({"error": {"message": "injected"}}))).into_response();
    }
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer sk-test") {
        return (StatusCode::UNAUTHORIZED, "missing key").into_response();
    }
    let inputs: Vec<String> = serde_json::from_value(body["input"].clone()).unwrap();
    // Deterministic 8-dim vectors from the text; returned in reverse order to check sorting.
    let mut data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let v: Vec<f32> = (0..8)
                .map(|d| ((t.len() * (d + 1)) % 7) as f32 + 1.0)
                .collect();
            json!({"object": "embedding", "index": i, "embedding": v})
        })
        .collect();
    data.reverse();
    Json(json!({"object": "list", "data": data, "model": body["model"]})).into_response()
}

async fn serve(faults: Arc<Faults>) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/v1/embeddings", post(embeddings))
        .with_state(faults);
    let handle = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/v1"), handle)
}

fn settings(url: &str) -> HttpSettings {
    HttpSettings {
        api_key: Some("sk-test".into()),
        timeout: Duration::from_millis(500),
        backoff: Duration::from_millis(10),
        max_inputs: 3,
        breaker_failures: 3,
        breaker_cooldown: Duration::from_millis(300),
        ..HttpSettings::new(url, "test-model")
    }
}

#[tokio::test]
async fn embeds_in_order_across_requests_and_normalises() {
    let faults = Arc::new(Faults::default());
    let (url, _server) = serve(faults.clone()).await;
    let e = HttpEmbedder::connect(settings(&url)).await.unwrap();
    assert_eq!(e.dims(), 8);
    assert_eq!(e.model(), "test-model");
    let texts: Vec<String> = (1..=7).map(|n| "x".repeat(n)).collect();
    let before = faults.requests.load(Ordering::SeqCst);
    let v = e.embed(texts.clone()).await.unwrap();
    assert_eq!(
        faults.requests.load(Ordering::SeqCst) - before,
        3,
        "7 inputs at 3 per request"
    );
    assert_eq!(v.len(), 7);
    for (t, vec) in texts.iter().zip(&v) {
        let raw: Vec<f32> = (0..8)
            .map(|d| ((t.len() * (d + 1)) % 7) as f32 + 1.0)
            .collect();
        let n = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
        let expected: Vec<f32> = raw.iter().map(|x| x / n).collect();
        assert!(vec.iter().zip(&expected).all(|(a, b)| (a - b).abs() < 1e-6));
    }
}

#[tokio::test]
async fn transient_errors_are_retried() {
    let faults = Arc::new(Faults::default());
    let (url, _server) = serve(faults.clone()).await;
    let e = HttpEmbedder::connect(settings(&url)).await.unwrap();
    faults.fail_status.store(503, Ordering::SeqCst);
    faults.fail_next.store(2, Ordering::SeqCst);
    let before = faults.requests.load(Ordering::SeqCst);
    assert_eq!(e.embed(vec!["hello".into()]).await.unwrap().len(), 1);
    assert_eq!(
        faults.requests.load(Ordering::SeqCst) - before,
        3,
        "two failures, one success"
    );
    faults.fail_status.store(429, Ordering::SeqCst);
    faults.fail_next.store(1, Ordering::SeqCst);
    assert!(e.embed(vec!["again".into()]).await.is_ok());
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let faults = Arc::new(Faults::default());
    let (url, _server) = serve(faults.clone()).await;
    let e = HttpEmbedder::connect(settings(&url)).await.unwrap();
    faults.fail_status.store(400, Ordering::SeqCst);
    faults.fail_next.store(5, Ordering::SeqCst);
    let before = faults.requests.load(Ordering::SeqCst);
    let err = e.embed(vec!["bad".into()]).await.unwrap_err();
    assert!(
        matches!(err, EmbedError::Runtime(ref m) if m.contains("400")),
        "{err}"
    );
    assert_eq!(faults.requests.load(Ordering::SeqCst) - before, 1);
    assert_eq!(
        e.breaker_state(),
        BreakerState::Closed,
        "a 400 says nothing about the endpoint's health"
    );
}

#[tokio::test]
async fn slow_endpoint_times_out_and_the_breaker_opens_then_recovers() {
    let faults = Arc::new(Faults::default());
    let (url, _server) = serve(faults.clone()).await;
    let e = HttpEmbedder::connect(settings(&url)).await.unwrap();
    faults.delay_ms.store(2000, Ordering::SeqCst);
    let start = std::time::Instant::now();
    let err = e.embed(vec!["slow".into()]).await.unwrap_err();
    assert!(matches!(err, EmbedError::Unavailable(_)), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(e.breaker_state(), BreakerState::Open);
    // While open, calls fail at once without reaching the endpoint.
    let before = faults.requests.load(Ordering::SeqCst);
    let t = std::time::Instant::now();
    assert!(matches!(
        e.embed(vec!["x".into()]).await,
        Err(EmbedError::Unavailable(_))
    ));
    assert!(t.elapsed() < Duration::from_millis(50));
    assert_eq!(faults.requests.load(Ordering::SeqCst), before);
    // The endpoint recovers; after the cool-down one probe closes the breaker.
    faults.delay_ms.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(e.breaker_state(), BreakerState::HalfOpen);
    assert!(e.embed(vec!["back".into()]).await.is_ok());
    assert_eq!(e.breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn unreachable_endpoint_fails_to_connect_clearly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = HttpEmbedder::connect(settings(&format!("http://127.0.0.1:{port}/v1")))
        .await
        .err()
        .expect("no server there");
    assert!(matches!(err, EmbedError::Unavailable(_)), "{err}");
}

#[tokio::test]
async fn wrong_key_is_a_clear_error() {
    let faults = Arc::new(Faults::default());
    let (url, _server) = serve(faults).await;
    let err = HttpEmbedder::connect(HttpSettings {
        api_key: Some("sk-wrong".into()),
        ..settings(&url)
    })
    .await
    .err()
    .expect("401");
    assert!(err.to_string().contains("401"), "{err}");
}
