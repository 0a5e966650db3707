//! Sessions over HTTP: start, read, list, end; an idle timeout that starts at the default,
//! is learned from the tenant's own gaps between memory requests (bounded, and explained),
//! ends an idle session by itself with an `expired` event; never another tenant's.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestServer, assert_problem};

async fn start() -> TestServer {
    TestServer::start_custom(
        tempfile::tempdir().unwrap(),
        |e| {
            e.sessions = strata_engine::session::SessionSettings {
                min: Duration::from_secs(1),
                max: Duration::from_secs(60),
                default: Duration::from_secs(3),
                sweep_every: Duration::from_millis(100),
            };
        },
        |srv| {
            srv.identity = strata_server::caller::Identity::Header {
                name: strata_server::HeaderName::from_static("x-tenant"),
                admins: Default::default(),
            }
        },
    )
    .await
}

async fn call(
    s: &TestServer,
    tenant: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    s.request_as(tenant, method, path, body).await
}

async fn session(s: &TestServer, tenant: &str, id: &str) -> Value {
    let r = call(
        s,
        tenant,
        reqwest::Method::GET,
        &format!("/v1/sessions/{id}"),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn a_session_learns_its_tenants_pace_and_ends_when_idle() {
    let s = start().await;
    // The model loads on first use: not a gap of the session's.
    let r = call(
        &s,
        "ana",
        reqwest::Method::POST,
        "/v1/memories",
        Some(json!({"text": "ana likes tea"})),
    )
    .await;
    assert_eq!(r.status(), 201);
    let r = call(
        &s,
        "ana",
        reqwest::Method::POST,
        "/v1/sessions",
        Some(json!({"id": "chat-1", "metadata": {"client": "test"}, "preload": true})),
    )
    .await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["id"].as_str(), v["state"].as_str()),
        (Some("chat-1"), Some("active"))
    );
    assert_eq!(v["timeout"]["learned"], false);
    assert_eq!(v["timeout"]["secs"], 3.0);
    assert!(v["timeout"]["why"].as_str().unwrap().contains("default"));
    assert_eq!(v["preloaded"]["memories"], 1);
    // The id is taken; another tenant's sessions are its own.
    let r = call(
        &s,
        "ana",
        reqwest::Method::POST,
        "/v1/sessions",
        Some(json!({"id": "chat-1"})),
    )
    .await;
    assert_problem(r, 422, "validation_failed").await;
    let r = call(&s, "bo", reqwest::Method::GET, "/v1/sessions/chat-1", None).await;
    assert_problem(r, 404, "not_found").await;

    // Requests naming the session, a fifth of a second apart: the timeout is learned from
    // them, and raised to the 1 s minimum.
    let mut events = s
        .client
        .get(s.url("/v1/sessions/events"))
        .header("x-tenant", "ana")
        .send()
        .await
        .unwrap();
    for i in 0..7 {
        let r = call(
            &s,
            "ana",
            reqwest::Method::POST,
            "/v1/memories",
            Some(json!({"text": format!("fact number {i} about ana"), "session": "chat-1"})),
        )
        .await;
        assert!(r.status().is_success());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut v = Value::Null;
    for _ in 0..50 {
        v = session(&s, "ana", "chat-1").await;
        if v["requests"] == 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(v["requests"], 7, "{v}");
    assert_eq!(v["timeout"]["learned"], true, "{v}");
    assert_eq!(v["timeout"]["secs"], 1.0, "{v}");
    assert!(
        v["timeout"]["why"].as_str().unwrap().contains("minimum"),
        "{v}"
    );
    let typical = v["timeout"]["typical_gap_secs"].as_f64().unwrap();
    assert!(typical < 0.9, "gaps of about 0.2 s were seen as {typical}");

    // Idle past the timeout: the sweep ends it and says so.
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("event: expired") {
        let chunk = tokio::time::timeout_at(deadline, events.chunk())
            .await
            .expect("an expired event within 10 s")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("\"id\":\"chat-1\""), "{seen}");
    let v = session(&s, "ana", "chat-1").await;
    assert_eq!(
        (v["state"].as_str(), v["end_reason"].as_str()),
        (Some("ended"), Some("idle"))
    );
    assert!(v["expires_at"].is_null());
    // A request naming an ended session does not revive it.
    call(
        &s,
        "ana",
        reqwest::Method::POST,
        "/v1/memories/search",
        Some(json!({"query": "fact", "session": "chat-1"})),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(session(&s, "ana", "chat-1").await["requests"], 7);

    // A new session starts from the learned pace; the caller can end it.
    let r = call(
        &s,
        "ana",
        reqwest::Method::POST,
        "/v1/sessions",
        Some(json!({})),
    )
    .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["timeout"]["learned"], true);
    let id = v["id"].as_str().unwrap().to_owned();
    let r = call(
        &s,
        "ana",
        reqwest::Method::POST,
        &format!("/v1/sessions/{id}/end"),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["end_reason"], "closed");
    let list: Value = call(&s, "ana", reqwest::Method::GET, "/v1/sessions", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let active: Value = call(
        &s,
        "ana",
        reqwest::Method::GET,
        "/v1/sessions?active=true",
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(active["items"].as_array().unwrap().is_empty());
    let none: Value = call(&s, "bo", reqwest::Method::GET, "/v1/sessions", None)
        .await
        .json()
        .await
        .unwrap();
    assert!(none["items"].as_array().unwrap().is_empty());
    s.stop().await;
}
