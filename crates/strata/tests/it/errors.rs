//! Every error answer is problem+json with a stable code, and bad input never hurts the
//! server or what it stores.

use serde_json::{Value, json};

use crate::helpers::{TestServer, assert_problem, pdf_with_text};

#[tokio::test]
async fn unknown_and_malformed_ids_are_404() {
    let s = TestServer::start().await;
    let missing = "01a212e0-4342-7472-9d1f-3378d36fcc05";
    for path in [
        format!("/v1/documents/{missing}"),
        format!("/v1/documents/{missing}/file"),
        format!("/v1/documents/{missing}/chunks"),
        format!("/v1/jobs/{missing}"),
        format!("/v1/jobs/{missing}/events"),
        "/v1/documents/not-a-uuid".to_owned(),
        "/v1/jobs/42".to_owned(),
    ] {
        assert_problem(s.get(&path).await, 404, "not_found").await;
    }
    let r = s.delete(&format!("/v1/documents/{missing}")).await;
    assert_problem(r, 404, "not_found").await;
    let r = s
        .client
        .patch(s.url(&format!("/v1/documents/{missing}")))
        .json(&json!({"title": "x"}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "not_found").await;
    s.stop().await;
}

#[tokio::test]
async fn routing_errors_are_problems() {
    let s = TestServer::start().await;
    assert_problem(s.get("/v2/nothing").await, 404, "route_not_found").await;
    let r = s.client.put(s.url("/v1/tags")).send().await.unwrap();
    assert_problem(r, 405, "method_not_allowed").await;
    s.stop().await;
}

#[tokio::test]
async fn oversize_upload_is_413_and_the_server_keeps_serving() {
    let s = TestServer::start_with(|e| e.max_upload_bytes = 1024 * 1024).await;
    let big = vec![b'a'; 3 * 1024 * 1024];
    let r = s.upload("big.txt", big, None, &[]).await;
    assert_problem(r, 413, "payload_too_large").await;
    // Just over the limit but within the multipart allowance: the engine's own check.
    let r = s
        .upload("edge.txt", vec![b'b'; 1024 * 1024 + 10], None, &[])
        .await;
    assert_problem(r, 413, "payload_too_large").await;
    let r = s
        .upload_json(json!({"text": "x".repeat(1024 * 1024 + 1)}))
        .await;
    assert_problem(r, 413, "payload_too_large").await;
    let tmp = s.dir.path().join("data/blobs/tmp");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "partial uploads are removed"
    );
    let ok = s.create_text("still serving", &[]).await;
    assert_eq!(ok["status"], "queued");
    assert_eq!(
        s.get_json("/v1/documents").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    s.stop().await;
}

#[tokio::test]
async fn unsupported_media_types_are_415() {
    let s = TestServer::start().await;
    let r = s
        .upload("report.docx", b"PK\x03\x04 zip".to_vec(), None, &[])
        .await;
    assert_problem(r, 415, "unsupported_media_type").await;
    let r = s
        .upload(
            "photo",
            vec![0x89, b'P', b'N', b'G', 0, 0],
            Some("image/png"),
            &[],
        )
        .await;
    assert_problem(r, 415, "unsupported_media_type").await;
    let r = s
        .upload("fake.pdf", vec![0, 159, 146, 150, 1, 2, 3], None, &[])
        .await;
    let body = assert_problem(r, 415, "unsupported_media_type").await;
    assert!(
        body["detail"].as_str().unwrap().contains("not a PDF"),
        "{body}"
    );
    let r = s
        .upload("fake.txt", vec![0, 1, 2, 3, 255, 0], None, &[])
        .await;
    assert_problem(r, 415, "unsupported_media_type").await;
    let r = s
        .client
        .post(s.url("/v1/documents"))
        .header("content-type", "text/csv")
        .body("a,b\n1,2")
        .send()
        .await
        .unwrap();
    assert_problem(r, 415, "unsupported_media_type").await;
    assert_eq!(s.get_json("/v1/documents").await["items"], json!([]));
    s.stop().await;
}

#[tokio::test]
async fn validation_errors_name_the_field() {
    let s = TestServer::start().await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"text": "   "}), "text"),
        (
            json!({"text": "ok", "tags": ["fine", "x".repeat(65)]}),
            "tags[1]",
        ),
        (
            json!({"text": "ok", "metadata": "not an object"}),
            "metadata",
        ),
        (json!({"text": "ok", "title": ""}), "title"),
        (
            json!({"text": "ok", "media_type": "application/pdf"}),
            "media_type",
        ),
    ];
    for (body, field) in cases {
        let r = s.upload_json(body.clone()).await;
        let p = assert_problem(r, 422, "validation_failed").await;
        assert_eq!(p["field"], field, "{body} -> {p}");
    }
    let r = s.upload_json(json!({"title": "no text"})).await;
    let p = assert_problem(r, 422, "validation_failed").await;
    assert!(p["detail"].as_str().unwrap().contains("text"), "{p}");
    let r = s
        .upload("a.txt", b"x".to_vec(), None, &[("metadata", "{oops")])
        .await;
    assert_eq!(
        assert_problem(r, 422, "validation_failed").await["field"],
        "metadata"
    );
    let r = s
        .upload("a.txt", b"x".to_vec(), None, &[("colour", "red")])
        .await;
    assert_eq!(
        assert_problem(r, 422, "validation_failed").await["field"],
        "colour"
    );
    let r = s.upload("empty.txt", Vec::new(), None, &[]).await;
    assert_eq!(
        assert_problem(r, 422, "validation_failed").await["field"],
        "file"
    );
    let form = reqwest::multipart::Form::new().text("title", "no file");
    let r = s
        .client
        .post(s.url("/v1/documents"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        assert_problem(r, 422, "validation_failed").await["field"],
        "file"
    );
    for q in [
        "limit=0",
        "limit=501",
        "limit=abc",
        "status=bogus",
        "cursor=garbage",
        "nope=1",
    ] {
        let r = s.get(&format!("/v1/documents?{q}")).await;
        assert_problem(r, 422, "validation_failed").await;
    }
    assert_problem(
        s.get("/v1/jobs?status=done").await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(
        s.get_json("/v1/documents").await["items"],
        json!([]),
        "nothing stored"
    );
    s.stop().await;
}

#[tokio::test]
async fn malformed_bodies_are_400() {
    let s = TestServer::start().await;
    let r = s
        .client
        .post(s.url("/v1/documents"))
        .header("content-type", "application/json")
        .body("{\"text\": ")
        .send()
        .await
        .unwrap();
    assert_problem(r, 400, "malformed_json").await;
    let r = s
        .client
        .post(s.url("/v1/documents"))
        .header("content-type", "multipart/form-data; boundary=XYZ")
        .body("--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nunterminated")
        .send()
        .await
        .unwrap();
    assert_problem(r, 400, "malformed_multipart").await;
    let r = s
        .client
        .post(s.url("/v1/documents"))
        .header("content-type", "multipart/form-data")
        .body("no boundary")
        .send()
        .await
        .unwrap();
    assert_problem(r, 400, "malformed_multipart").await;
    assert_eq!(s.get_json("/v1/documents").await["items"], json!([]));
    s.stop().await;
}

#[tokio::test]
async fn cursor_from_other_filters_is_refused() {
    let s = TestServer::start_with(|e| e.jobs.workers = 0).await;
    for i in 0..3 {
        s.create_text(&format!("doc {i}"), &["t"]).await;
    }
    let page = s.get_json("/v1/documents?limit=1&tag=t").await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    assert_eq!(
        s.get(&format!("/v1/documents?limit=1&tag=t&cursor={cursor}"))
            .await
            .status(),
        200
    );
    let r = s
        .get(&format!("/v1/documents?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(
        assert_problem(r, 422, "validation_failed").await["field"],
        "cursor"
    );
    s.stop().await;
}

#[tokio::test]
async fn truncated_pdf_fails_its_own_job_and_nothing_else() {
    let s = TestServer::start().await;
    let mut pdf = pdf_with_text(&["This PDF will be cut short."]);
    pdf.truncate(pdf.len() / 2);
    let r = s.upload("cut.pdf", pdf, None, &[]).await;
    assert_eq!(r.status(), 202);
    let bad: Value = r.json().await.unwrap();
    let good = s
        .create_text("A healthy document next to a broken one.", &[])
        .await;
    let job = s.wait_job(bad["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1, "a corrupt file is not retried: {job}");
    let doc = s
        .get_json(&format!(
            "/v1/documents/{}",
            bad["document"]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(doc["status"], "failed");
    assert!(doc["error"].as_str().unwrap().contains("PDF"), "{doc}");
    let job = s.wait_job(good["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded");
    assert_eq!(s.get("/readyz").await.status(), 200);
    s.stop().await;
}

#[tokio::test]
async fn pdf_without_text_layer_fails_clearly() {
    let s = TestServer::start().await;
    let r = s.upload("blank.pdf", pdf_with_text(&[]), None, &[]).await;
    let body: Value = r.json().await.unwrap();
    let job = s.wait_job(body["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "failed");
    assert!(job["error"].as_str().unwrap().contains("no text"), "{job}");
    s.stop().await;
}

#[tokio::test]
async fn every_response_carries_request_id_server_timing_and_process_time() {
    let s = TestServer::start().await;
    let mut ids = std::collections::HashSet::new();
    for path in ["/healthz", "/v1/documents", "/v1/nothing", "/healthz"] {
        let r = s.get(path).await;
        // Made here: 32 hex digits, a different one for every request.
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{path}: {id}"
        );
        assert!(ids.insert(id), "{path}: a request id was given twice");
        let timing = r.headers()["server-timing"].to_str().unwrap().to_owned();
        assert!(timing.contains("app;dur="), "{timing}");
        // The same time in seconds, six decimals, as FastAPI services send it.
        let secs = r.headers()["x-process-time"].to_str().unwrap().to_owned();
        let (whole, frac) = secs.split_once('.').unwrap();
        assert!(whole.parse::<u64>().is_ok() && frac.len() == 6, "{secs}");
        let ms: f64 = timing.rsplit("app;dur=").next().unwrap().parse().unwrap();
        let s: f64 = secs.parse().unwrap();
        assert!((s * 1000.0 - ms).abs() < 0.002, "{secs} against {timing}");
    }
    let r = s
        .client
        .get(s.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    s.stop().await;
}

/// A request that cannot get a database connection within the acquire timeout is answered
/// 503 with Retry-After (never 500), the pool never grows past its size, and the stats
/// count the timeout. PostgreSQL pass only: the one connection is held deterministically by
/// a table lock taken from outside.
#[tokio::test]
async fn an_exhausted_pool_answers_503_with_retry_after() {
    use sqlx::Connection;
    if !crate::helpers::on_postgres() {
        return;
    }
    let s = TestServer::start_with(|e| {
        e.postgres.max_connections = 1;
        e.postgres.min_connections = 1;
        e.postgres.acquire_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    let url = crate::helpers::database_for(s.dir.path()).await.unwrap();
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut admin).await.unwrap();
    sqlx::query("LOCK TABLE documents IN ACCESS EXCLUSIVE MODE")
        .execute(&mut admin)
        .await
        .unwrap();
    // The first list takes the only connection and waits on the lock.
    let first = tokio::spawn({
        let url = s.url("/v1/documents?limit=7");
        let client = s.client.clone();
        async move { client.get(url).send().await.unwrap().status() }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let r = s.get("/v1/documents?limit=8").await;
    assert_eq!(
        r.headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("1".to_owned())
    );
    assert_problem(r, 503, "service_unavailable").await;
    sqlx::query("COMMIT").execute(&mut admin).await.unwrap();
    assert_eq!(first.await.unwrap(), 200);
    let stats = s.get_json("/v1/performance/database/stats").await;
    let pool = &stats["database"]["pool"];
    assert_eq!(pool["max_size"], 1, "{stats}");
    assert!(pool["size"].as_u64().unwrap() <= 1, "{stats}");
    assert!(pool["timeouts"].as_u64().unwrap() >= 1, "{stats}");
    s.stop().await;
}

/// The database stats list the tables with their indexes and the pool; optimize runs and
/// says what it ran.
#[tokio::test]
async fn database_stats_and_optimize() {
    let s = TestServer::start().await;
    s.post_json(
        "/v1/documents",
        json!({"text": "Some words to store.", "title": "t"}),
    )
    .await;
    let stats = s.get_json("/v1/performance/database/stats").await;
    let db = &stats["database"];
    let tables = db["tables"].as_array().unwrap();
    let documents = tables
        .iter()
        .find(|t| t["table"] == "documents")
        .unwrap_or_else(|| panic!("{stats}"));
    let indexes: Vec<&str> = documents["indexes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    for hot in ["documents_owner_sha256", "documents_owner_id"] {
        assert!(indexes.contains(&hot), "{hot} missing: {indexes:?}");
    }
    assert!(db["pool"]["acquired"].as_u64().unwrap() > 0, "{stats}");
    assert!(db["slow_statements"].is_array());
    // A small fresh database: nothing to recommend, but the list is there.
    assert!(db["recommendations"].is_array(), "{stats}");
    let r = s
        .client
        .post(s.url("/v1/performance/database/optimize"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["statements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|st| st.as_str().unwrap().contains("ANALYZE")),
        "{body}"
    );
    s.stop().await;
}

/// Found by the schemathesis run (scripts/fuzz-api): serde reads structs from arrays, the
/// search cache's key folds duplicates and whitespace (so an invalid request could be
/// answered from a valid twin's cache entry), and an f32 rounds a bound just past 1 to 1.
#[tokio::test]
async fn bodies_the_document_refuses_are_refused_even_when_a_twin_is_cached() {
    let s = TestServer::start().await;
    let id = "01a212e0-4342-7472-9d1f-3378d36fcc05";
    // Valid twins first, so their answers are cached.
    for body in [
        json!({"query": "cats", "filter": {"document_ids": [id]}}),
        json!({"query": "cats"}),
    ] {
        assert_eq!(s.post_json("/v1/search", body).await.status(), 200);
    }
    let long = format!("cats{}", " ".repeat(4096));
    for (body, field) in [
        (
            json!({"query": "cats", "filter": {"document_ids": vec![id; 1001]}}),
            "filter.document_ids",
        ),
        (json!({"query": long}), "query"),
        (
            json!({"query": "cats", "min_score": 1.000_000_000_000_000_2}),
            "min_score",
        ),
        (json!({"query": "cats", "filter": []}), "filter"),
        (json!(["cats", 10]), "body"),
    ] {
        let r = s.post_json("/v1/search", body.clone()).await;
        assert_eq!(
            assert_problem(r, 422, "validation_failed").await["field"],
            field,
            "{body}"
        );
    }
    for (body, status, code) in [
        ("[null, null]", 422, "validation_failed"),
        ("\n", 400, "malformed_json"),
        ("[", 400, "malformed_json"),
    ] {
        let r = s
            .client
            .post(s.url("/v1/performance/cache/clear"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_problem(r, status, code).await;
    }
    s.stop().await;
}
