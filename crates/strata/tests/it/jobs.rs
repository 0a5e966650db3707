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
async fn events_stream_progress_until_the_job_ends() {
    let s = TestServer::start_with(|e| {
        e.jobs.workers = 0;
        e.jobs.chunk_batch = 4;
    })
    .await;
    let text = "A sentence about strata and its chunking. ".repeat(400);
    let doc = s.create_text(&text, &[]).await;
    let job_id = doc["job_id"].as_str().unwrap().to_owned();
    // The stream opens while the job is queued; a server with workers then runs it.
    let events = tokio::spawn({
        let base = s.base.clone();
        let job_id = job_id.clone();
        async move { read_events(&base, &job_id).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // Run the job in this process through a second engine over the same data directory.
    let engine = strata_engine::Engine::open(strata_engine::EngineSettings {
        data_dir: s.dir.path().join("data"),
        jobs: strata_engine::jobs::JobSettings {
            chunk_batch: 4,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(engine.drain_jobs().await.unwrap(), 1);
    engine.close().await;
    let events = events.await.unwrap();
    let (last_kind, last) = events.last().expect("at least one event");
    assert_eq!(last_kind, "done");
    assert_eq!(last["status"], "succeeded");
    assert_eq!(events[0].1["status"], "queued");
    let progress: Vec<u64> = events
        .iter()
        .filter(|(_, j)| j["stage"] == "chunk")
        .map(|(_, j)| j["stages"][1]["done"].as_u64().unwrap())
        .collect();
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "progress never goes back: {progress:?}"
    );
    assert!(events.iter().all(|(k, _)| k == "progress" || k == "done"));
    // A finished job's stream is one `done` event.
    let again = read_events(&s.base, &job_id).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, "done");
    s.stop().await;
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
