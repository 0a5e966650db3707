//! Real `strata serve` processes: a worker killed mid-job, and a graceful SIGTERM, each
//! followed by a restart over the same data directory.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub(crate) struct Proc {
    child: Child,
    pub(crate) base: String,
    log: std::path::PathBuf,
}

impl Proc {
    /// Starts `strata serve` on a port the OS picks, read back from its log (a port chosen
    /// here and released could be taken by another test before strata binds it).
    pub(crate) async fn start(data_dir: &Path, extra: &[&str]) -> Self {
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let log_path = data_dir.with_extension(format!("{n}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        // On the PostgreSQL pass, processes of one test share that test's database.
        let mut db = Vec::new();
        if !extra.contains(&"--database-url")
            && let Some(parent) = data_dir.parent()
            && let Some(url) = crate::helpers::database_for(parent).await
        {
            db = vec!["--database-url".to_owned(), url];
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0", "--log-format", "text"])
            .args(extra)
            .args(&db)
            .env_remove("STRATA_CONFIG")
            .env("STRATA_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("strata starts");
        for _ in 0..600 {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(addr) = text
                .lines()
                .find(|l| l.contains("listening"))
                .and_then(|l| l.split("addr=").nth(1))
                .map(|a| a.trim().to_owned())
            {
                return Self {
                    child,
                    base: format!("http://{addr}"),
                    log: log_path,
                };
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("strata exited with {status} before listening:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("strata did not start listening within 30 s");
    }

    async fn job(&self, id: &str) -> Value {
        reqwest::get(format!("{}/v1/jobs/{id}", self.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub(crate) async fn wait_terminal(&self, id: &str) -> Value {
        let mut job = Value::Null;
        for _ in 0..3600 {
            job = self.job(id).await;
            if ["succeeded", "failed", "cancelled"].contains(&job["status"].as_str().unwrap()) {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        panic!(
            "job {id} did not finish; last seen: {job}\nstrata log tail:\n{}",
            tail.join("\n")
        );
    }

    /// Waits until the job is part-way through embedding its chunks; returns that snapshot.
    async fn wait_mid_embedding(&self, id: &str) -> Value {
        for _ in 0..6000 {
            let job = self.job(id).await;
            let done = job["stages"][2]["done"].as_u64().unwrap_or(0);
            let total = job["stages"][2]["total"].as_u64().unwrap_or(0);
            if job["status"] == "running" && done > 0 && done < total {
                return job;
            }
            assert_ne!(
                job["status"], "succeeded",
                "the job finished before it could be interrupted; make the fixture larger"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("job {id} never reached the embed stage");
    }

    async fn upload_big(&self) -> (String, String) {
        // About 500 distinct chunks: seconds of embedding, in several batches.
        let text: String = (0..4_000)
            .map(|i| format!("Sentence number {i} is here. "))
            .collect();
        let part = reqwest::multipart::Part::bytes(text.into_bytes()).file_name("big.txt");
        let form = reqwest::multipart::Form::new().part("file", part);
        let r = reqwest::Client::new()
            .post(format!("{}/v1/documents", self.base))
            .multipart(form)
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

    /// Ordinals of every chunk, asserting each is embedded.
    pub(crate) async fn all_chunk_ordinals(&self, doc: &str) -> Vec<u64> {
        let mut out = Vec::new();
        let mut from = 0;
        loop {
            let page: Value = reqwest::get(format!(
                "{}/v1/documents/{doc}/chunks?from={from}&limit=500",
                self.base
            ))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
            out.extend(
                page["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["ordinal"].as_u64().unwrap()),
            );
            match page["next_from"].as_u64() {
                Some(n) => from = n,
                None => return out,
            }
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to clean up.
    pub(crate) fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// What the process has logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM");
    }

    pub(crate) async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "strata did not exit in {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ARGS: &[&str] = &[
    "--workers",
    "1",
    "--job-lease-secs",
    "3",
    "--chunk-tokens",
    "64",
    "--chunk-overlap",
    "4",
];

#[tokio::test]
async fn worker_killed_mid_job_completes_exactly_once_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut first = Proc::start(&data, ARGS).await;
    let (doc, job) = first.upload_big().await;
    let mid = first.wait_mid_embedding(&job).await;
    first.child.kill().unwrap(); // SIGKILL: no chance to clean up
    first.child.wait().unwrap();
    let total = mid["stages"][1]["total"].as_u64().unwrap();
    assert!(mid["stages"][2]["done"].as_u64().unwrap() < total);

    let second = Proc::start(&data, ARGS).await;
    let done = second.wait_terminal(&job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        done["attempts"], 2,
        "one interrupted attempt, one that finished: {done}"
    );
    let d: Value = reqwest::get(format!("{}/v1/documents/{doc}", second.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["status"], "ready");
    assert_eq!(d["chunk_count"].as_u64().unwrap(), total);
    let ordinals = second.all_chunk_ordinals(&doc).await;
    assert_eq!(
        ordinals,
        (0..total).collect::<Vec<_>>(),
        "every chunk exactly once"
    );
}

/// mimalloc asks for transparent huge pages on its arena; with them, resident memory rose in
/// 20-40 MiB steps through an hour's soak (pages the allocator never used, faulted in or
/// filled in by khugepaged). The server turns them off for itself at startup.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_server_runs_without_transparent_huge_pages() {
    let dir = tempfile::tempdir().unwrap();
    let server = Proc::start(&dir.path().join("data"), ARGS).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("THP_enabled:"))
        .expect("the kernel reports THP_enabled (Linux 5.0 and later)");
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
}

#[tokio::test]
async fn sigterm_returns_the_running_job_to_the_queue_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let grace: Vec<&str> = ARGS
        .iter()
        .copied()
        .chain(["--shutdown-grace-secs", "0"])
        .collect();
    let mut first = Proc::start(&data, &grace).await;
    let (doc, job) = first.upload_big().await;
    first.wait_mid_embedding(&job).await;
    first.terminate();
    let status = first.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");

    let second = Proc::start(&data, ARGS).await;
    let done = second.wait_terminal(&job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        done["attempts"], 1,
        "a job returned on shutdown does not use up an attempt: {done}"
    );
    let total = done["stages"][1]["total"].as_u64().unwrap();
    let ordinals = second.all_chunk_ordinals(&doc).await;
    assert_eq!(ordinals, (0..total).collect::<Vec<_>>());
}

/// Two `strata serve` processes sharing Redis and one SQLite database file (a test
/// arrangement until the PostgreSQL backend lands: each process keeps its own vector index,
/// so only document, tag and job reads are compared). Each write through one process is
/// followed at once by reads through the other, whose caches held the old answers.
#[tokio::test]
async fn a_write_through_one_process_is_never_followed_by_a_stale_read_from_another() {
    let redis = crate::helpers::redis_url();
    let root = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", root.path().join("shared.db").display());
    let args = [
        "--workers",
        "0",
        "--redis-url",
        redis.as_str(),
        "--redis-namespace",
        crate::helpers::redis_namespace(),
        "--database-url",
        db.as_str(),
        "--cache-warm-queries",
        "0",
    ];
    let a = Proc::start(&root.path().join("a"), &args).await;
    let b = Proc::start(&root.path().join("b"), &args).await;
    let client = reqwest::Client::new();
    let get = |p: &Proc, path: &str| {
        let url = format!("{}{path}", p.base);
        let client = client.clone();
        let path = path.to_owned();
        async move {
            let r = client.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            r.json::<Value>().await.unwrap()
        }
    };
    let list = crate::helpers::ids_and_titles;
    let mut ids: Vec<String> = Vec::new();
    for round in 0..90 {
        // The reader's caches hold the current answers (the second read is a hit).
        get(&b, "/v1/documents?limit=100").await;
        get(&b, "/v1/documents?limit=100").await;
        get(&b, "/v1/tags").await;
        if let Some(id) = ids.last() {
            get(&b, &format!("/v1/documents/{id}")).await;
        }
        // One write through the other process.
        let (writer, reader) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        match round % 3 {
            0 => {
                let r = client
                    .post(format!("{}/v1/documents", writer.base))
                    .json(&serde_json::json!({"text": format!("document of round {round}"), "title": format!("r{round}"), "tags": [format!("t{}", round % 4)]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                let d: Value = r.json().await.unwrap();
                ids.push(d["document"]["id"].as_str().unwrap().to_owned());
            }
            1 => {
                let id = ids.last().unwrap();
                let r = client
                    .patch(format!("{}/v1/documents/{id}", writer.base))
                    .json(&serde_json::json!({"title": format!("renamed in round {round}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
            _ => {
                let id = ids.remove(0);
                let r = client
                    .delete(format!("{}/v1/documents/{id}", writer.base))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 204);
            }
        }
        // At once, through the other process: the same as the writer now answers.
        let got = get(reader, "/v1/documents?limit=100").await;
        let want = get(writer, "/v1/documents?limit=100").await;
        assert_eq!(
            list(&got),
            list(&want),
            "round {round}: stale document list"
        );
        assert_eq!(list(&got).len(), ids.len());
        assert_eq!(
            get(reader, "/v1/tags").await,
            get(writer, "/v1/tags").await,
            "round {round}: stale tags"
        );
        if let Some(id) = ids.last() {
            let path = format!("/v1/documents/{id}");
            assert_eq!(
                get(reader, &path).await["title"],
                get(writer, &path).await["title"],
                "round {round}: stale document"
            );
        }
    }
    // The readers did serve from their caches in between. (Acknowledgement timeouts are not
    // asserted: they measure scheduling on a loaded test machine, a timing bound; the reads
    // above are the property, and they were checked after every write.)
    for p in [&a, &b] {
        let stats = get(p, "/v1/performance/cache/stats").await;
        let hits = crate::helpers::cache_hits(&stats);
        assert!(hits > 10, "{stats}");
    }
}

/// Three stateless instances over one PostgreSQL and one Redis act as one service: 60
/// uploads spread round-robin are each processed exactly once, by more than one instance;
/// a job's progress can be followed from any instance; a write through one instance is
/// visible through the others at once.
#[tokio::test]
async fn several_instances_over_one_postgres_act_as_one_service() {
    let redis = crate::helpers::redis_url();
    let db = crate::helpers::fresh_postgres().await;
    let root = tempfile::tempdir().unwrap();
    let args = [
        "--workers",
        "2",
        "--redis-url",
        redis.as_str(),
        "--redis-namespace",
        crate::helpers::redis_namespace(),
        "--database-url",
        db.as_str(),
        "--cache-warm-queries",
        "0",
    ];
    let mut procs = Vec::new();
    for name in ["a", "b", "c"] {
        procs.push(Proc::start(&root.path().join(name), &args).await);
    }
    let client = reqwest::Client::new();
    let mut docs: Vec<(String, String)> = Vec::new();
    for i in 0..60 {
        let p = &procs[i % 3];
        let text = format!(
            "Document number {i}. It talks about topic {} at some length. {}",
            i % 7,
            "Every sentence adds a little more to read. ".repeat(20 + i % 5)
        );
        let r = client
            .post(format!("{}/v1/documents", p.base))
            .json(&serde_json::json!({"text": text, "title": format!("doc {i}"), "tags": [format!("t{}", i % 3)]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "upload {i}");
        let d: Value = r.json().await.unwrap();
        docs.push((
            d["document"]["id"].as_str().unwrap().to_owned(),
            d["job"]["id"].as_str().unwrap().to_owned(),
        ));
    }
    // Progress of a job uploaded through the first instance, followed from the third.
    let events = client
        .get(format!("{}/v1/jobs/{}/events", procs[2].base, docs[57].1))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let stream = tokio::time::timeout(Duration::from_secs(120), events.text())
        .await
        .expect("the event stream ends with the job")
        .unwrap();
    assert!(stream.contains("event: done"), "{stream}");

    for (i, (doc, job)) in docs.iter().enumerate() {
        let job = procs[(i + 1) % 3].wait_terminal(job).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 1, "processed once: {job}");
        let r = client
            .get(format!(
                "{}/v1/documents/{doc}/chunks?limit=500",
                procs[(i + 2) % 3].base
            ))
            .send()
            .await
            .unwrap();
        let chunks: Value = r.json().await.unwrap();
        let ordinals: Vec<u64> = chunks["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{chunks}"))
            .iter()
            .map(|c| c["ordinal"].as_u64().unwrap())
            .collect();
        assert!(!ordinals.is_empty());
        assert_eq!(
            ordinals,
            (0..ordinals.len() as u64).collect::<Vec<_>>(),
            "every chunk once, in order"
        );
    }
    // Each job succeeded in exactly one instance, and more than one instance did work.
    let logs: Vec<String> = procs
        .iter()
        .map(|p| std::fs::read_to_string(&p.log).unwrap())
        .collect();
    let mut per_instance = Vec::new();
    for log in &logs {
        per_instance.push(log.lines().filter(|l| l.contains("job succeeded")).count());
    }
    for (_, job) in &docs {
        let runs: usize = logs
            .iter()
            .map(|l| {
                l.lines()
                    .filter(|line| line.contains("job succeeded") && line.contains(job.as_str()))
                    .count()
            })
            .sum();
        assert_eq!(runs, 1, "job {job} succeeded {runs} times");
    }
    assert_eq!(per_instance.iter().sum::<usize>(), 60, "{per_instance:?}");
    assert!(
        per_instance.iter().filter(|&&n| n > 0).count() > 1,
        "jobs spread over instances: {per_instance:?}"
    );

    // Warm every instance's caches, then write through one and read through the others.
    let get = |base: &str, path: &str| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move { client.get(url).send().await.unwrap() }
    };
    let (doc, _) = &docs[10];
    let search = serde_json::json!({"query": "topic 3", "k": 100, "filter": {"tags": ["t1"]}});
    for p in &procs {
        for _ in 0..2 {
            assert_eq!(
                get(&p.base, &format!("/v1/documents/{doc}")).await.status(),
                200
            );
            get(&p.base, "/v1/documents?limit=100").await;
        }
    }
    let r = client
        .patch(format!("{}/v1/documents/{doc}", procs[0].base))
        .json(&serde_json::json!({"title": "renamed through a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for p in &procs[1..] {
        let d: Value = get(&p.base, &format!("/v1/documents/{doc}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            d["title"], "renamed through a",
            "stale read from {}",
            p.base
        );
    }
    let search = |base: &str| {
        let (client, url, body) = (client.clone(), format!("{base}/v1/search"), search.clone());
        async move {
            let r = client.post(url).json(&body).send().await.unwrap();
            r.json::<Value>().await.unwrap()
        }
    };
    let before = search(&procs[2].base).await;
    let r = client
        .delete(format!("{}/v1/documents/{doc}", procs[1].base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    for p in [&procs[0], &procs[2]] {
        assert_eq!(
            get(&p.base, &format!("/v1/documents/{doc}")).await.status(),
            404,
            "deleted through b, still served by {}",
            p.base
        );
        let list: Value = get(&p.base, "/v1/documents?limit=100")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(list["items"].as_array().unwrap().len(), 59);
        let hits = search(&p.base).await;
        assert!(
            hits["hits"]
                .as_array()
                .unwrap()
                .iter()
                .all(|h| h["document_id"] != doc.as_str()),
            "a deleted document is still found through {}",
            p.base
        );
    }
    assert!(
        before["hits"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["document_id"] == doc.as_str()),
        "the search before the delete found the document: {before}"
    );
}
