//! PostgreSQL stopped under load, then started again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Load, Outcome, OwnPostgres, Request, median, report};
use crate::helpers::TestServer;

/// 2xx is success; a 503 problem with `Retry-After` is the refusal an outage allows.
fn outcome(r: &reqwest::Result<reqwest::Response>) -> Outcome {
    match r {
        Ok(r) if r.status().is_success() => Outcome::Ok,
        Ok(r) if r.status() == 503 && r.headers().contains_key("retry-after") => Outcome::Refused,
        _ => Outcome::Failed,
    }
}

async fn wait_ready(s: &TestServer, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let doc = s.get_json(&format!("/v1/documents/{id}")).await;
        if doc["status"] == "ready" || doc["status"] == "failed" {
            return doc;
        }
        assert!(Instant::now() < deadline, "document {id} stuck: {doc}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_under_load_answers_503_at_once_and_recovers_without_a_restart() {
    let mut pg = tokio::task::spawn_blocking(OwnPostgres::start)
        .await
        .unwrap();
    let url = pg.url();
    let s = TestServer::start_custom(
        tempfile::tempdir().unwrap(),
        |e| e.database_url = Some(url.into()),
        |_| {},
    )
    .await;
    let mut before = Vec::new();
    for i in 0..10 {
        let doc = s
            .create_text(
                &format!("Document {i}, acknowledged before the outage."),
                &[],
            )
            .await;
        before.push(doc["id"].as_str().unwrap().to_owned());
    }

    // Half the tasks read documents, half upload new ones.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let request: Request = {
        let (base, before, acked) = (s.url(""), before.clone(), acked.clone());
        Arc::new(move |task, n| {
            let (client, base, acked) = (client.clone(), base.clone(), acked.clone());
            let read = before[n as usize % before.len()].clone();
            Box::pin(async move {
                if task % 2 == 0 {
                    // A cached read may be served while the database is down.
                    let r = client
                        .get(format!("{base}/v1/documents/{read}"))
                        .send()
                        .await;
                    outcome(&r)
                } else {
                    let r = client
                        .post(format!("{base}/v1/documents"))
                        .json(&json!({ "text": format!("Upload {task}-{n} under load.") }))
                        .send()
                        .await;
                    let o = outcome(&r);
                    if o == Outcome::Ok
                        && let Ok(r) = r
                        && let Ok(v) = r.json::<Value>().await
                    {
                        acked
                            .lock()
                            .unwrap()
                            .push(v["document"]["id"].as_str().unwrap_or_default().to_owned());
                    }
                    o
                }
            })
        })
    };
    let load = Load::start(4, Duration::from_millis(20), request);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let stopping = Instant::now();
    let mut pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    let stopped = Instant::now();
    eprintln!("[fault] pg_ctl stop took {:?}", stopped - stopping);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let metrics = s.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("strata_db_unreachable{backend=\"postgres\"} 1"),
        "the outage shows in the metrics"
    );
    let restarting = Instant::now();
    let pg = tokio::task::spawn_blocking(move || {
        pg.restart();
        pg
    })
    .await
    .unwrap();
    let restarted = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let samples = load.finish().await;

    let (_, refused, failed, _) = report("postgres stop/start, whole run", &samples);
    for (phase, from, to) in [
        ("before the stop", None, Some(stopping)),
        (
            "stopping and the first second",
            Some(stopping),
            Some(stopped + Duration::from_secs(1)),
        ),
        (
            "known outage",
            Some(stopped + Duration::from_secs(1)),
            Some(restarting),
        ),
        ("restart and after", Some(restarting), None),
    ] {
        let part: Vec<_> = samples
            .iter()
            .filter(|x| from.is_none_or(|f| x.at >= f) && to.is_none_or(|t| x.at < t))
            .copied()
            .collect();
        report(&format!("postgres, {phase}"), &part);
    }
    assert_eq!(
        failed, 0,
        "every request succeeded or was refused with 503 + Retry-After"
    );
    assert!(refused > 0, "the outage was noticed");
    // Once the outage is known (a second in), refusals take milliseconds, not the pool's
    // 5 s acquire timeout.
    let during: Vec<Duration> = samples
        .iter()
        .filter(|x| x.at > stopped + Duration::from_secs(1) && x.at + x.took < restarting)
        .filter(|x| x.outcome == Outcome::Refused)
        .map(|x| x.took)
        .collect();
    assert!(!during.is_empty());
    let (med, worst) = (median(during.clone()), *during.iter().max().unwrap());
    eprintln!(
        "[fault] postgres down: {} refusals, median {:.2} ms, worst {:.2} ms",
        during.len(),
        med.as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3
    );
    assert!(
        worst < Duration::from_millis(1000),
        "refusals during a known outage wait for nothing: worst {worst:?}"
    );
    // Recovery: the first upload to succeed after the restart.
    let recovered = samples
        .iter()
        .filter(|x| x.at > restarted && x.outcome == Outcome::Ok)
        .map(|x| x.at + x.took)
        .min()
        .expect("requests succeed again after the restart");
    eprintln!(
        "[fault] postgres back: first success {:.2} s after pg_ctl start returned",
        (recovered - restarted).as_secs_f64()
    );
    assert!(recovered - restarted < Duration::from_secs(10));

    // Nothing acknowledged is lost, and queued jobs resume.
    let acked = acked.lock().unwrap().clone();
    eprintln!("[fault] {} uploads acknowledged under load", acked.len());
    for id in before.iter().chain(&acked) {
        let doc = wait_ready(&s, id).await;
        assert_eq!(doc["status"], "ready", "{doc}");
    }
    s.stop().await;
    drop(pg);
}
