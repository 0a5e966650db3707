//! The caller seam's roles: operator endpoints need the admin role, and the statistics a
//! non-admin may read carry no other tenant's data.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestServer, assert_problem};

/// Every endpoint that acts on all tenants at once.
const ADMIN_ENDPOINTS: &[(&str, &str)] = &[
    ("POST", "/v1/performance/cache/clear"),
    ("POST", "/v1/performance/database/optimize"),
];

async fn header_server() -> TestServer {
    TestServer::with_tenant_header(&["ops"]).await
}

async fn send(
    s: &TestServer,
    method: &str,
    path: &str,
    tenant: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = s
        .client
        .request(Method::from_bytes(method.as_bytes()).unwrap(), s.url(path));
    if let Some(t) = tenant {
        req = req.header("x-tenant", t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

/// Uploads a text as `tenant` and waits for its ingestion; returns the document id.
async fn ingest_as(s: &TestServer, tenant: &str, title: &str, text: &str) -> String {
    let r = send(
        s,
        "POST",
        "/v1/documents",
        Some(tenant),
        Some(json!({ "text": text, "title": title })),
    )
    .await;
    assert_eq!(r.status(), 202);
    let created: Value = r.json().await.unwrap();
    let job = created["job"]["id"].as_str().unwrap().to_owned();
    for _ in 0..600 {
        let j = s.get_json_as(&format!("/v1/jobs/{job}"), tenant).await;
        match j["status"].as_str().unwrap() {
            "succeeded" => return created["document"]["id"].as_str().unwrap().to_owned(),
            "failed" | "cancelled" => panic!("ingestion failed: {j}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("ingestion of {title} did not finish");
}

#[tokio::test]
async fn a_non_admin_tenant_gets_403_on_every_admin_endpoint() {
    let s = header_server().await;
    let bob_doc = ingest_as(&s, "bob", "bob's ledger", "Quarterly ledger of bob.").await;
    // Bob's document is cached for him.
    let path = format!("/v1/documents/{bob_doc}");
    send(&s, "GET", &path, Some("bob"), None).await;
    let r = send(&s, "GET", &path, Some("bob"), None).await;
    assert_eq!(r.headers()["x-cache"], "HIT-L1");

    for (method, endpoint) in ADMIN_ENDPOINTS {
        let body = Some(json!({}));
        assert_problem(
            send(&s, method, endpoint, Some("alice"), body.clone()).await,
            403,
            "forbidden",
        )
        .await;
        assert_problem(
            send(&s, method, endpoint, None, body).await,
            401,
            "unauthenticated",
        )
        .await;
    }
    // Alice cannot clear bob's cached answers: they still hit.
    let r = send(
        &s,
        "POST",
        "/v1/performance/cache/clear",
        Some("alice"),
        Some(json!({ "tenant": "bob" })),
    )
    .await;
    assert_problem(r, 403, "forbidden").await;
    let r = send(&s, "GET", &path, Some("bob"), None).await;
    assert_eq!(
        r.headers()["x-cache"],
        "HIT-L1",
        "a refused clear cleared nothing"
    );

    // The admin tenant may.
    for (method, endpoint) in ADMIN_ENDPOINTS {
        let r = send(&s, method, endpoint, Some("ops"), Some(json!({}))).await;
        assert_eq!(r.status(), 200, "{method} {endpoint} as admin");
    }
    let r = send(&s, "GET", &path, Some("bob"), None).await;
    assert_eq!(
        r.headers()["x-cache"],
        "MISS",
        "the admin's clear removed it"
    );
    s.stop().await;
}

#[tokio::test]
async fn statistics_never_show_a_non_admin_another_tenants_data() {
    let s = header_server().await;
    ingest_as(
        &s,
        "bob",
        "zanzibar-ledger",
        "Zanzibar ledger, bob's alone.",
    )
    .await;
    let r = send(
        &s,
        "POST",
        "/v1/search",
        Some("bob"),
        Some(json!({ "query": "zanzibar ledger" })),
    )
    .await;
    assert_eq!(r.status(), 200);

    for path in [
        "/v1/performance/database/stats",
        "/v1/performance/cache/stats",
        "/v1/performance/model/stats",
    ] {
        let r = send(&s, "GET", path, Some("alice"), None).await;
        assert_eq!(r.status(), 200, "{path}");
        let text = r.text().await.unwrap();
        for secret in ["bob", "zanzibar", "documents", "chunks", "tenants"] {
            assert!(
                !text.to_lowercase().contains(secret),
                "{path} shows a non-admin {secret:?}: {text}"
            );
        }
    }
    // The admin sees the whole database's tables (row counts are estimates on PostgreSQL).
    let db = s.get_json_as("/v1/performance/database/stats", "ops").await;
    let tables = db["database"]["tables"].as_array().unwrap();
    assert!(tables.iter().any(|t| t["table"] == "documents"), "{db}");
    let cache = s.get_json_as("/v1/performance/cache/stats", "ops").await;
    assert!(cache["warming"]["tenants"].is_u64(), "{cache}");
    s.stop().await;
}

#[tokio::test]
async fn development_mode_is_one_local_admin() {
    let s = TestServer::start_with(|e| e.jobs.workers = 0).await;
    for (method, endpoint) in ADMIN_ENDPOINTS {
        let r = send(&s, method, endpoint, None, Some(json!({}))).await;
        assert_eq!(r.status(), 200, "{method} {endpoint}");
    }
    let db = s.get_json("/v1/performance/database/stats").await;
    assert!(db["database"]["tables"].is_array(), "{db}");
    s.stop().await;
}
