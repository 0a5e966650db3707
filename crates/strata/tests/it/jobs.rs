//! Jobs API: status, listing, and live progress over Server-Sent Events.

use serde_json::Value;

use crate::helpers::TestServer;

/// Reads a job's SSE stream to its end, returning (event, data) pairs.
async fn read_events(base: &str, job_id: &str) -> Vec<(String, Value)> {
    let r = reqwest::get(format!("{base}/v1/jobs/{job_id}/events"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let body = tokio::time::timeout(std::time::Duration::from_secs(60), r.text())
        .await
        .expect("the event stream ends when the job does")
        .unwrap();
    body.split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = Some(e.trim().to_owned());
                }
                if let Some(d) = line.strip_prefix("data:") {
                    data = serde_json::from_str(d.trim()).ok();
                }
            }
            Some((event?, data?))
        })
        .collect()
}

#[tokio::test]
async fn live_events_from_the_servers_own_workers() {
    let s = TestServer::start_with(|e| e.jobs.chunk_batch = 8).await;
    let doc = s
        .create_text(&"Words and more words. ".repeat(2000), &[])
        .await;
    let events = read_events(&s.base, doc["job_id"].as_str().unwrap()).await;
    let (kind, last) = events.last().unwrap();
    assert_eq!(kind, "done");
    assert_eq!(last["status"], "succeeded");
    assert_eq!(last["stages"][1]["done"], last["stages"][1]["total"]);
    // The workers' counts in /metrics: one attempt succeeded, none runs any more (the
    // gauge drops when the worker is done with the job, just after the event).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = s.get("/metrics").await.text().await.unwrap();
        let has = |l: &str| text.lines().any(|x| x == l);
        if has(r#"strata_jobs_attempts_total{kind="ingest_document",outcome="succeeded"} 1"#)
            && has(r#"strata_jobs_running{kind="ingest_document"} 0"#)
        {
            assert!(has(
                r#"strata_jobs_attempts_total{kind="ingest_document",outcome="failed"} 0"#
            ));
            let busy = text
                .lines()
                .find_map(|l| {
                    l.strip_prefix(r#"strata_jobs_busy_seconds_total{kind="ingest_document"} "#)
                })
                .unwrap();
            assert!(busy.parse::<f64>().unwrap() > 0.0, "{busy}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    s.stop().await;
}

#[tokio::test]
async fn jobs_list_pages_and_filters() {
    let s = TestServer::start_with(|e| e.jobs.workers = 0).await;
    for i in 0..5 {
        s.create_text(&format!("job doc {i}"), &[]).await;
    }
    let first = s.get_json("/v1/jobs?limit=2").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = s
        .get_json(&format!("/v1/jobs?limit=2&cursor={cursor}"))
        .await;
    assert_ne!(first["items"][0]["id"], second["items"][0]["id"]);
    let queued = s.get_json("/v1/jobs?status=queued&limit=500").await;
    assert_eq!(queued["items"].as_array().unwrap().len(), 5);
    let done = s.get_json("/v1/jobs?status=succeeded").await;
    assert_eq!(done["items"].as_array().unwrap().len(), 0);
    s.stop().await;
}
