//! The edge's response headers: security headers on every answer, CORS only when asked for.

use crate::helpers::TestServer;

const SECURITY: [(&str, &str); 4] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
];

#[tokio::test]
async fn every_answer_carries_the_security_headers_and_no_cors_by_default() {
    let s = TestServer::start_with(|e| e.jobs.workers = 0).await;
    for (method, path) in [
        ("GET", "/v1/documents"),
        ("GET", "/nope"),
        ("DELETE", "/v1/tags"),
        ("GET", "/v1/documents/not-an-id"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
    ] {
        let r = s
            .client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                s.url(path),
            )
            .header("origin", "https://elsewhere.example")
            .send()
            .await
            .unwrap();
        for (name, value) in SECURITY {
            assert_eq!(
                r.headers().get(name).and_then(|v| v.to_str().ok()),
                Some(value),
                "{method} {path}: {name}"
            );
        }
        assert!(
            r.headers().get("access-control-allow-origin").is_none(),
            "{method} {path}: CORS is off by default"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn configured_origins_get_preflights_and_exposed_headers() {
    let s = TestServer::start_custom(
        tempfile::tempdir().unwrap(),
        |e| e.jobs.workers = 0,
        |srv| srv.cors_origins = vec!["https://app.example.com".into()],
    )
    .await;
    let preflight = s
        .client
        .request(reqwest::Method::OPTIONS, s.url("/v1/search"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    let allowed = h["access-control-allow-headers"].to_str().unwrap();
    assert!(allowed.contains("authorization"), "{allowed}");
    let r = s
        .client
        .get(s.url("/v1/documents"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(
        exposed.contains("etag") && exposed.contains("x-cache"),
        "{exposed}"
    );
    let other = s
        .client
        .get(s.url("/v1/documents"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    s.stop().await;
}
