//! `strata serve` killed with SIGKILL while ingesting 50 documents, on both backends; and a
//! graceful shutdown (SIGTERM) under a request load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Load, Outcome, Request, report};
use crate::process::Proc;

const ARGS: &[&str] = &[
    "--workers",
    "2",
    "--job-lease-secs",
    "3",
    "--chunk-tokens",
    "48",
    "--chunk-overlap",
    "4",
    "--cache-warm-queries",
    "0",
];

/// Document `i`: about 25 chunks of sentences no other document has.
fn text(i: usize) -> String {
    (0..150)
        .map(|j| {
            format!(
                "Document {i} sentence {j} speaks of item {} in set {i}. ",
                i * 1000 + j
            )
        })
        .collect()
}

async fn upload(p: &Proc, i: usize) -> (String, String) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/documents", p.base))
        .json(&json!({ "text": text(i), "title": format!("doc {i}") }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    (
        v["document"]["id"].as_str().unwrap().to_owned(),
        v["job"]["id"].as_str().unwrap().to_owned(),
    )
}

async fn get(p: &Proc, path: &str) -> Value {
    reqwest::get(format!("{}{path}", p.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The `vectors=` count of the last "engine open" line of a log.
fn vectors_at_open(log: &str) -> u64 {
    log.lines()
        .rev()
        .find(|l| l.contains("engine open"))
        .and_then(|l| l.split("vectors=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no engine open line with vectors= in:\n{log}"))
}

async fn killed_mid_ingestion(database_url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut args: Vec<&str> = ARGS.to_vec();
    if let Some(url) = &database_url {
        args.extend(["--database-url", url.as_str()]);
    }
    let backend = if database_url.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let mut first = Proc::start(&data, &args).await;
    let mut docs = Vec::new();
    for i in 0..50 {
        docs.push(upload(&first, i).await);
    }
    // Kill it once some documents are done and others are still queued or running.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let page = get(&first, "/v1/documents?limit=100&fields=id,status").await;
        let ready = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["status"] == "ready")
            .count();
        if ready >= 3 {
            assert!(
                ready < 50,
                "ingestion finished before the kill; make the documents larger"
            );
            eprintln!("[fault] {backend}: SIGKILL with {ready} of 50 documents ready");
            break;
        }
        assert!(Instant::now() < deadline, "no document became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill();

    let second = Proc::start(&data, &args).await;
    let mut chunks = 0;
    for (doc, job) in &docs {
        let done = second.wait_terminal(job).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        let d = get(&second, &format!("/v1/documents/{doc}")).await;
        assert_eq!(d["status"], "ready", "{d}");
        let n = d["chunk_count"].as_u64().unwrap();
        // Every chunk exactly once.
        assert_eq!(
            second.all_chunk_ordinals(doc).await,
            (0..n).collect::<Vec<_>>(),
            "{doc}"
        );
        chunks += n;
    }
    // No lost job and no extra one: 50 ingestions, all succeeded.
    let jobs = get(&second, "/v1/jobs?limit=100").await;
    let items = jobs["items"].as_array().unwrap();
    assert_eq!(items.len(), 50, "{jobs}");
    assert!(items.iter().all(|j| j["status"] == "succeeded"));

    // The vector index agrees with the database: after a clean restart the in-process
    // index holds one vector per chunk; over PostgreSQL the vectors are the chunks' rows,
    // and each is found by a semantic search for its own text.
    let mut second = second;
    second.terminate();
    assert!(second.wait_exit(Duration::from_secs(20)).await.success());
    let third = Proc::start(&data, &args).await;
    if database_url.is_none() {
        assert_eq!(
            vectors_at_open(&third.log()),
            chunks,
            "index vectors vs chunks"
        );
    }
    let client = reqwest::Client::new();
    for (i, (doc, _)) in docs.iter().enumerate().step_by(7) {
        let query = format!(
            "Document {i} sentence 3 speaks of item {} in set {i}.",
            i * 1000 + 3
        );
        let res: Value = client
            .post(format!("{}/v1/search", third.base))
            .json(&json!({ "query": query, "k": 1, "mode": "semantic" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            res["hits"][0]["document_id"],
            doc.as_str(),
            "{query}: {res}"
        );
    }
    eprintln!("[fault] {backend}: 50 documents, {chunks} chunks, each exactly once after the kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_ingesting_50_documents_loses_and_doubles_nothing_on_sqlite() {
    killed_mid_ingestion(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_ingesting_50_documents_loses_and_doubles_nothing_on_postgres() {
    killed_mid_ingestion(Some(crate::helpers::fresh_postgres().await)).await;
}

/// SIGTERM under load: requests in flight complete, the running jobs go back to the queue
/// without spending an attempt, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_under_load_completes_in_flight_requests_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args: Vec<&str> = ARGS
        .iter()
        .copied()
        // Room for the requests in flight (and for the connections the kernel completed
        // just before the stop) to be answered; 0 would cut them off.
        .chain(["--shutdown-grace-secs", "5"])
        .collect();
    let mut first = Proc::start(&data, &args).await;
    let mut docs = Vec::new();
    for i in 0..6 {
        docs.push(upload(&first, i).await);
    }
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    // A new connection per request: a request then either finds the listener closed or is
    // answered (a connection the kernel completed before the stop is taken from the accept
    // queue and served, see strata-server's `drain`), so a dropped request cannot hide
    // behind HTTP/1.1's keep-alive race (a request sent on an idle connection just as the
    // server closes it is never received, and clients retry such idempotent requests).
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let request: Request = {
        let (base, acked) = (first.base.clone(), acked.clone());
        Arc::new(move |task, n| {
            let (client, base, acked) = (client.clone(), base.clone(), acked.clone());
            Box::pin(async move {
                let r = if task == 0 {
                    client
                        .post(format!("{base}/v1/documents"))
                        .json(&json!({ "text": format!("Uploaded while stopping, {n}.") }))
                        .send()
                        .await
                } else {
                    client
                        .get(format!("{base}/v1/documents?limit=20"))
                        .send()
                        .await
                };
                match r {
                    Ok(r) if r.status().is_success() => {
                        if task == 0
                            && let Ok(v) = r.json::<Value>().await
                        {
                            acked
                                .lock()
                                .unwrap()
                                .push(v["document"]["id"].as_str().unwrap_or_default().to_owned());
                        }
                        Outcome::Ok
                    }
                    // A request sent after the listener closed never reached the server: the
                    // connection is refused, which is what a stopped server does.
                    Err(e) if e.is_connect() => Outcome::Refused,
                    other => {
                        eprintln!("[fault] failed during shutdown: {other:?}");
                        Outcome::Failed
                    }
                }
            })
        })
    };
    let load = Load::start(4, Duration::from_millis(5), request);
    tokio::time::sleep(Duration::from_millis(800)).await;
    first.terminate();
    let status = first.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "clean exit: {status:?}");
    let samples = load.finish().await;
    let (_, _, failed, _) = report("graceful shutdown under load", &samples);
    assert_eq!(
        failed, 0,
        "every request that reached the server was answered"
    );

    let second = Proc::start(&data, ARGS).await;
    for (doc, job) in &docs {
        let done = second.wait_terminal(job).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(
            done["attempts"], 1,
            "a job returned at shutdown spends no attempt: {done}"
        );
        assert_eq!(
            get(&second, &format!("/v1/documents/{doc}")).await["status"],
            "ready"
        );
    }
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "[fault] {} uploads acknowledged under load before the stop",
        acked.len()
    );
    for id in &acked {
        let d = get(&second, &format!("/v1/documents/{id}")).await;
        assert_eq!(
            d["id"],
            id.as_str(),
            "an acknowledged upload is present: {d}"
        );
    }
}
