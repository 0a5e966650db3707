//! The operating surface: the performance summary's windows and alert states, the health
//! verdicts, the dashboard's page and admin-only feed, and the families /metrics gained
//! (the queue's depth, the model's histograms).

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::TestServer;

/// Requests show up in the summary's windows, per route and together, with percentiles;
/// the queue, pool, process and every alert rule are reported.
#[tokio::test]
async fn the_summary_reports_windows_alerts_and_the_queue() {
    let s = TestServer::start().await;
    let doc = s
        .create_text("Windows over counters give percentiles.", &[])
        .await;
    s.wait_job(doc["job_id"].as_str().unwrap()).await;
    for _ in 0..5 {
        assert_eq!(s.get("/v1/documents").await.status(), 200);
    }
    assert_eq!(s.get("/v1/documents/nope").await.status(), 404);
    let sum = s.get_json("/v1/performance/metrics/summary").await;
    for w in ["1m", "5m", "15m"] {
        let total = &sum["windows"][w]["total"];
        assert!(total["requests"].as_u64().unwrap() >= 7, "{w}: {sum}");
        assert!(total["p99_ms"].as_f64().unwrap() >= total["p50_ms"].as_f64().unwrap());
        assert_eq!(total["error_rate"], json!(0.0), "{w}");
        assert!(total["client_error_rate"].as_f64().unwrap() > 0.0, "{w}");
    }
    let routes = sum["windows"]["1m"]["routes"].as_array().unwrap();
    let docs = routes
        .iter()
        .find(|r| r["route"] == "/v1/documents")
        .unwrap_or_else(|| panic!("{sum}"));
    assert!(docs["requests"].as_u64().unwrap() >= 6, "{docs}");
    let jobs = &sum["jobs"];
    assert_eq!(
        (&jobs["queued"], &jobs["running"], &jobs["delayed"]),
        (&json!(0), &json!(0), &json!(0)),
        "{sum}"
    );
    assert!(sum["pool"]["max"].as_u64().unwrap() > 0);
    assert!(sum["process"]["resident_memory_bytes"].as_u64().unwrap() > 0);
    let alerts = sum["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 7, "{sum}");
    let errors = alerts
        .iter()
        .find(|a| a["name"] == "StrataErrorRateHigh")
        .unwrap();
    assert_eq!(
        (&errors["breached"], &errors["value"]),
        (&json!(false), &json!(0.0))
    );
}

/// Each part gets a verdict with the figures it was judged on.
#[tokio::test]
async fn health_judges_each_part() {
    let s = TestServer::start().await;
    let h = s.get_json("/v1/performance/system/health").await;
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["database"]["status"], "ok");
    assert!(h["database"]["latency_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(h["jobs"]["status"], "ok");
    assert_eq!(h["model"]["status"], "ok");
    let host = &h["host"]["stats"];
    assert!(host["disk_available_bytes"].as_u64().unwrap() > 0, "{h}");
    assert!(host["memory_total_bytes"].as_u64().unwrap() > 0, "{h}");
    assert_eq!(h["extraction"]["status"], "ok", "{h}");
    assert_eq!(h["extraction"]["in_child_process"], true);
    s.stop().await;

    // A PDF reader that is gone (a package removed under a running server) degrades it.
    let s = TestServer::start_with(|e| {
        e.extract.pdf = strata_engine::extract::PdfReader::Poppler("/nonexistent/pdftotext".into())
    })
    .await;
    let h = s.get_json("/v1/performance/system/health").await;
    assert_eq!(h["extraction"]["status"], "degraded", "{h}");
    assert_eq!(h["extraction"]["missing"][0], "/nonexistent/pdftotext");
    assert_eq!(h["status"], "degraded");
    s.stop().await;
}

/// The page is static and served to anyone; what it shows comes from an admin-only feed.
#[tokio::test]
async fn the_dashboard_page_is_public_and_its_feed_is_for_admins() {
    let s = TestServer::with_tenant_header(&["ops"]).await;
    let page = s.get("/dashboard").await;
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert!(page.text().await.unwrap().contains("/dashboard/app.js"));
    for asset in ["/dashboard/app.js", "/dashboard/app.css"] {
        assert_eq!(s.get(asset).await.status(), 200, "{asset}");
    }
    assert_eq!(s.get("/dashboard/data").await.status(), 401);
    let user = s
        .request_as("alice", Method::GET, "/dashboard/data", None)
        .await;
    assert_eq!(user.status(), 403);
    let ops = s
        .request_as("ops", Method::GET, "/dashboard/data", None)
        .await;
    assert_eq!(ops.status(), 200);
    let feed: Value = ops.json().await.unwrap();
    assert!(feed["summary"]["windows"]["1m"].is_object(), "{feed}");
    assert_eq!(feed["health"]["status"], "ok", "{feed}");
}

/// The queue's depth is exported for every kind and state, and the model's passes as
/// histograms once it has run.
#[tokio::test]
async fn metrics_carry_the_queue_depth_and_the_model_histograms() {
    let s = TestServer::start().await;
    let r = s
        .post_json("/v1/search", json!({"query": "anything at all"}))
        .await;
    assert_eq!(r.status(), 200);
    let text = s.get("/metrics").await.text().await.unwrap();
    for line in [
        r#"strata_jobs_queue_depth{kind="ingest_document",state="queued"} 0"#,
        r#"strata_jobs_queue_depth{kind="ingest_document",state="running"} 0"#,
        "# TYPE strata_model_pass_duration_seconds histogram",
        "# TYPE strata_model_batch_size_texts histogram",
    ] {
        assert!(text.contains(line), "missing {line:?}");
    }
    let passes = text
        .lines()
        .find(|l| l.starts_with("strata_model_pass_duration_seconds_count"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no pass count in\n{text}"));
    assert!(passes >= 1);
}

/// `Server-Timing` names the phases a request ran: an uncached search embeds, searches the
/// indexes and reads the hits' rows; the same search from the cache runs none of them; a
/// document read is one database phase; a health check none.
#[tokio::test]
async fn server_timing_names_the_phases_that_ran() {
    let s = TestServer::start().await;
    let doc = s
        .create_text("Phases of a request: database, model, index.", &[])
        .await;
    s.wait_job(doc["job_id"].as_str().unwrap()).await;
    let timing = |r: &reqwest::Response| r.headers()["server-timing"].to_str().unwrap().to_owned();
    let names = |t: &str| -> Vec<String> {
        t.split(", ")
            .map(|e| e.split(';').next().unwrap().to_owned())
            .collect()
    };
    let body = json!({"query": "which phases does a request have?"});
    let miss = s.post_json("/v1/search", body.clone()).await;
    assert_eq!(miss.headers()["x-cache"], "MISS");
    let t = timing(&miss);
    assert_eq!(names(&t), ["cache", "db", "embed", "index", "app"], "{t}");
    let hit = s.post_json("/v1/search", body).await;
    assert_eq!(hit.headers()["x-cache"], "HIT-L1");
    let t = timing(&hit);
    assert_eq!(names(&t), ["cache", "app"], "{t}");
    let id = doc["id"].as_str().unwrap();
    let t = timing(&s.get(&format!("/v1/documents/{id}/chunks")).await);
    let n = names(&t);
    assert!(
        n.contains(&"db".to_owned()) && !n.contains(&"embed".to_owned()),
        "{t}"
    );
    let t = timing(&s.get("/healthz").await);
    assert_eq!(names(&t), ["app"], "{t}");
}
