//! The edge's response headers: security headers on every answer, CORS only when asked for.

use std::time::Duration;

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

async fn get_encoded(
    s: &TestServer,
    path: &str,
    accept: &str,
    inm: Option<&str>,
) -> reqwest::Response {
    let mut r = s.client.get(s.url(path)).header("accept-encoding", accept);
    if let Some(tag) = inm {
        r = r.header("if-none-match", tag);
    }
    r.send().await.unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out).unwrap();
    out
}

#[tokio::test]
async fn answers_are_compressed_as_negotiated_and_cached_compressed() {
    let s = TestServer::start_with(|e| e.jobs.workers = 0).await;
    for i in 0..12 {
        let title =
            format!("A document with a long enough title to make the list large, number {i}");
        let r = s
            .upload_json(serde_json::json!({"text": format!("body {i}"), "title": title}))
            .await;
        assert_eq!(r.status(), 202);
    }
    let path = "/v1/documents?limit=100";
    let plain = get_encoded(&s, path, "identity", None).await;
    assert!(plain.headers().get("content-encoding").is_none());
    assert_eq!(plain.headers()["vary"], "accept-encoding");
    let plain_tag = plain.headers()["etag"].to_str().unwrap().to_owned();
    let identity = plain.bytes().await.unwrap();
    assert!(identity.len() > 1024, "{}", identity.len());

    // gzip: the form cached beside the identity body (an L1 hit: the identity request
    // computed both), with its own ETag.
    let mut gz_tag = String::new();
    for _ in 0..2 {
        let r = get_encoded(&s, path, "br;q=0.5, gzip", None).await;
        let h = r.headers().clone();
        assert_eq!(h["content-encoding"], "gzip");
        assert_eq!(h["x-cache"], "HIT-L1");
        gz_tag = h["etag"].to_str().unwrap().to_owned();
        assert_eq!(
            gz_tag,
            format!("{}-gzip\"", &plain_tag[..plain_tag.len() - 1])
        );
        let body = r.bytes().await.unwrap();
        assert!(
            body.len() < identity.len() / 2,
            "{} of {}",
            body.len(),
            identity.len()
        );
        assert_eq!(gunzip(&body), identity);
    }
    let r = get_encoded(&s, path, "gzip", Some(&gz_tag)).await;
    assert_eq!(r.status(), 304);
    // The identity tag does not validate the gzip form, nor the other way round.
    assert_eq!(
        get_encoded(&s, path, "gzip", Some(&plain_tag))
            .await
            .status(),
        200
    );
    assert_eq!(
        get_encoded(&s, path, "identity", Some(&gz_tag))
            .await
            .status(),
        200
    );
    assert_eq!(
        get_encoded(&s, path, "identity", Some(&plain_tag))
            .await
            .status(),
        304
    );

    // A cached read has its gzip form only: a client that refuses gzip gets identity.
    let br_only = get_encoded(&s, path, "gzip;q=0, br", None).await;
    assert!(br_only.headers().get("content-encoding").is_none());
    assert_eq!(br_only.headers()["etag"].to_str().unwrap(), plain_tag);
    // Other answers: the compression layer picks from what the client takes.
    for (accept, want) in [
        ("br", "br"),
        ("zstd", "zstd"),
        ("gzip;q=0.1, zstd;q=0.9", "zstd"),
    ] {
        let r = get_encoded(&s, "/metrics", accept, None).await;
        assert_eq!(r.headers()["content-encoding"], want, "{accept}");
        assert_eq!(r.headers()["vary"], "accept-encoding");
    }
    // Small answers stay as they are.
    let small = get_encoded(&s, "/healthz", "gzip", None).await;
    assert!(small.headers().get("content-encoding").is_none());
    s.stop().await;
}

/// Cleartext HTTP/2 with prior knowledge on the same port as HTTP/1.1: plain answers, the
/// NDJSON search stream and the SSE job stream, several streams at once on one connection.
#[tokio::test]
async fn http2_with_prior_knowledge_serves_answers_and_streams() {
    let s = TestServer::start().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let doc: serde_json::Value = h2
        .post(s.url("/v1/documents"))
        .json(&serde_json::json!({"text": "The ocean is deep and blue. Whales sing in it.", "title": "sea"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job = doc["document"]["job_id"].as_str().unwrap().to_owned();
    // The job's live events over h2, to the end.
    let events = h2
        .get(s.url(&format!("/v1/jobs/{job}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(events.version(), reqwest::Version::HTTP_2);
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let text = tokio::time::timeout(Duration::from_secs(60), events.text())
        .await
        .expect("the stream ends with the job")
        .unwrap();
    assert!(
        text.contains("event: done") || text.contains("event:done"),
        "{text}"
    );
    // Many requests at once multiplexed over the one connection.
    let gets = (0..20).map(|_| h2.get(s.url("/v1/documents")).send());
    for r in futures_util::future::join_all(gets).await {
        let r = r.unwrap();
        assert_eq!(
            (r.version(), r.status().as_u16()),
            (reqwest::Version::HTTP_2, 200)
        );
    }
    // The NDJSON search stream.
    let r = h2
        .post(s.url("/v1/search"))
        .json(&serde_json::json!({"query": "whales", "k": 3, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let body = r.text().await.unwrap();
    let lines: Vec<serde_json::Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lines.is_empty(), "{body}");
    s.stop().await;
}

/// A self-signed certificate for localhost and 127.0.0.1, made by openssl: (cert, key).
fn self_signed(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-days", "1", "-subj", &format!("/CN={name}")])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

fn trusting(cert: &std::path::Path) -> reqwest::Client {
    let pem = std::fs::read(cert).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn https_serves_http1_and_h2_and_picks_up_a_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "first");
    let (live_cert, live_key) = (dir.path().join("live.crt"), dir.path().join("live.key"));
    std::fs::copy(&cert, &live_cert).unwrap();
    std::fs::copy(&key, &live_key).unwrap();
    let tls = strata_server::tls::TlsSettings {
        cert: live_cert.clone(),
        key: live_key.clone(),
    };
    let s = TestServer::start_custom(
        tempfile::tempdir().unwrap(),
        |e| e.jobs.workers = 0,
        move |srv| srv.tls = Some(tls),
    )
    .await;
    let url = s.url("/v1/documents").replace("http://", "https://");
    // ALPN: the client offers h2 and gets it; an HTTP/1.1-only client gets HTTP/1.1.
    let r = trusting(&cert).get(&url).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, reqwest::Version::HTTP_2)
    );
    let pem = std::fs::read(&cert).unwrap();
    let h1 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .http1_only()
        .build()
        .unwrap();
    let r = h1.get(&url).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, reqwest::Version::HTTP_11)
    );
    // Plain HTTP on the TLS port is not served.
    assert!(s.client.get(s.url("/v1/documents")).send().await.is_err());

    // Renewal: new files in place; a client trusting only the new certificate gets in.
    let (cert2, key2) = self_signed(dir.path(), "second");
    std::fs::copy(&key2, &live_key).unwrap();
    std::fs::copy(&cert2, &live_cert).unwrap();
    let started = std::time::Instant::now();
    loop {
        if let Ok(r) = trusting(&cert2).get(&url).send().await {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the renewed certificate was not served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        trusting(&cert).get(&url).send().await.is_err(),
        "the old certificate is gone"
    );
    s.stop().await;
}

/// Sends raw bytes on a fresh connection and returns the status line's code.
async fn raw_status(s: &TestServer, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(request).await.unwrap();
    let mut head = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut head))
        .await
        .expect("an answer, not a hang")
        .unwrap();
    String::from_utf8_lossy(&head[..n])
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_owned()
}

/// Too many or too large request headers are refused at once (431, by hyper before any
/// handler) and the server keeps serving.
#[tokio::test]
async fn oversized_request_heads_get_431_and_nothing_hangs() {
    let s = TestServer::start_with(|e| e.jobs.workers = 0).await;
    let mut many = b"GET /v1/documents HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..150 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(raw_status(&s, &many).await, "431");
    let mut big = b"GET /v1/documents HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 600 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(raw_status(&s, &big).await, "431");
    let fine = b"GET /v1/documents HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(raw_status(&s, fine).await, "200");
    s.stop().await;
}

/// The SSE job stream is gzip-compressed for a client that asks, flushed per event: the
/// first event can be decoded while the stream is still open (the job waits in the queue,
/// as no worker runs), and a client that does not ask gets plain text.
#[tokio::test]
async fn event_streams_are_compressed_with_a_flush_per_event() {
    use std::io::Read as _;
    let s = TestServer::start_with(|e| e.jobs.workers = 0).await;
    let doc = s.create_text("The ocean is deep and blue.", &[]).await;
    let job = doc["job_id"].as_str().unwrap().to_owned();
    let mut r = s
        .client
        .get(s.url(&format!("/v1/jobs/{job}/events")))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut received = Vec::new();
    let mut decoded = String::new();
    while !decoded.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), r.chunk())
            .await
            .expect("the first event arrives while the job is still queued")
            .unwrap()
            .expect("the stream is still open");
        received.extend_from_slice(&chunk);
        decoded.clear();
        // No trailer yet: the decoder stops with an unexpected end after what it has.
        let _ = flate2::read::GzDecoder::new(&received[..]).read_to_string(&mut decoded);
    }
    assert!(decoded.starts_with("event: progress"), "{decoded}");
    assert!(decoded.contains("\"status\":\"queued\""), "{decoded}");
    drop(r);
    let plain = s
        .client
        .get(s.url(&format!("/v1/jobs/{job}/events")))
        .send()
        .await
        .unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    s.stop().await;
}
