//! Scale-out: strata over PostgreSQL + pgvector (and Redis) at 1, 2 and 3 instances on this
//! box, and the database connections one instance holds under 1,000 concurrent clients.
//!
//! Search answers and list pages are not cached here (their TTL is 0), so every request
//! reaches PostgreSQL: what is measured is the database path. Query embeddings stay cached
//! (each instance embeds each of the distinct queries once, in the warm-up).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::cache::wrk_threads;

/// One `strata serve` process.
pub(crate) struct Instance {
    child: Child,
    pub(crate) base: String,
}

impl Instance {
    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A field of the process's `/proc/<pid>/status` in MiB (`VmRSS`, `VmHWM`).
    pub(crate) fn memory_mb(&self, field: &str) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        crate::status_mb(&status, field)
    }

    /// A field of the process's `/proc/PID/smaps_rollup` (e.g. `AnonHugePages`), in MiB.
    pub(crate) fn smaps_mb(&self, field: &str) -> Option<f64> {
        let rollup =
            std::fs::read_to_string(format!("/proc/{}/smaps_rollup", self.child.id())).ok()?;
        crate::status_mb(&rollup, field)
    }

    /// CPU time the process has used (user + system), in clock ticks.
    pub(crate) fn cpu_ticks(&self) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
    }

    /// Waits (at most `within`) until the process has used no CPU for half a second: the
    /// work a burst leaves behind (saving the index, returning memory) is over.
    pub(crate) async fn settle(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let mut last = self.cpu_ticks();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = self.cpu_ticks();
            if now == last {
                return;
            }
            last = now;
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn psql(server: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .args([server, "-Atc", sql])
        .output()
        .context("running psql")?;
    if !out.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Drops and creates database `db` on `server` (a URL with a database path); its URL.
pub(crate) fn fresh_database(server: &str, db: &str) -> anyhow::Result<String> {
    psql(server, &format!("DROP DATABASE IF EXISTS {db}"))?;
    psql(server, &format!("CREATE DATABASE {db}"))?;
    match server.rsplit_once('/') {
        Some((base, _)) => Ok(format!("{base}/{db}")),
        None => bail!("the PostgreSQL URL needs a database path"),
    }
}

async fn start(
    bin: &Path,
    dir: &Path,
    database_url: &str,
    redis: Option<&str>,
    extra: &[&str],
) -> anyhow::Result<Instance> {
    let mut args: Vec<&str> = vec!["--database-url", database_url];
    args.extend(["--cache-warm-queries", "0"]);
    args.extend(["--cache-ttl", "search_results=0,document_list=0"]);
    args.extend(["--cache-l2-ttl", "search_results=0,document_list=0"]);
    if let Some(r) = redis {
        args.extend(["--redis-url", r]);
    }
    args.extend(extra);
    launch(bin, dir, &args).await
}

/// Starts `strata serve` with its data in `dir` on a free loopback port and the given extra
/// arguments; returns once it listens.
pub(crate) async fn launch(bin: &Path, dir: &Path, args: &[&str]) -> anyhow::Result<Instance> {
    std::fs::create_dir_all(dir)?;
    let log = dir.with_extension("log");
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--log-format", "text"])
        .args(args)
        .env_remove("STRATA_CONFIG")
        .env("STRATA_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    let mut child = cmd.spawn().context("starting strata")?;
    for _ in 0..1200 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(addr) = text
            .lines()
            .find(|l| l.contains("listening"))
            .and_then(|l| l.split("addr=").nth(1))
        {
            return Ok(Instance {
                child,
                base: format!("http://{}", addr.trim()),
            });
        }
        if let Some(status) = child.try_wait()? {
            bail!("strata exited with {status}:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("strata did not start within 60 s")
}

/// Runs one wrk per instance at once (connections split evenly); total req/s, the worst
/// p99, total errors.
fn drive(
    urls: &[String],
    script: &Path,
    seconds: f64,
    connections: usize,
) -> anyhow::Result<serde_json::Value> {
    let per = (connections / urls.len()).max(1);
    let results: Vec<anyhow::Result<crate::cache::Wrk>> = std::thread::scope(|s| {
        let handles: Vec<_> = urls
            .iter()
            .map(|u| s.spawn(move || wrk_threads(u, script, seconds, per, 1)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("wrk thread panicked")))
            })
            .collect()
    });
    let mut rps = 0.0;
    let mut p99: f64 = 0.0;
    let mut p50: f64 = 0.0;
    let mut errors = 0;
    for r in results {
        let r = r?;
        rps += r.rps;
        p99 = p99.max(r.p99_ms);
        p50 = p50.max(r.p50_ms);
        errors += r.errors;
    }
    Ok(json!({"rps": rps, "p50_ms": p50, "p99_ms": p99, "errors": errors}))
}

fn lua(path: &Path, method: &str, bodies: &[String], paths: &[String]) -> anyhow::Result<()> {
    let mut s = String::from("local bodies = {\n");
    for b in bodies {
        s.push_str(&serde_json::to_string(b)?);
        s.push_str(",\n");
    }
    s.push_str("}\nlocal paths = {\n");
    for p in paths {
        s.push_str(&serde_json::to_string(p)?);
        s.push_str(",\n");
    }
    s.push_str(&format!(
        "}}\nlocal i = 0\nlocal headers = {{[\"Content-Type\"] = \"application/json\"}}\n\
         request = function()\n  i = i + 1\n  \
         local b = nil\n  if #bodies > 0 then b = bodies[(i % #bodies) + 1] end\n  \
         return wrk.format(\"{method}\", paths[(i % #paths) + 1], headers, b)\nend\n"
    ));
    std::fs::write(path, s)?;
    Ok(())
}

/// The scale-out benchmark.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    strata_bin: PathBuf,
    corpus: &Path,
    data: &Path,
    server: &str,
    redis: Option<String>,
    sentences: usize,
    rounds: usize,
    seconds: f64,
    connections: usize,
    clients: usize,
) -> anyhow::Result<serde_json::Value> {
    let db = "strata_bench_scale";
    let url = fresh_database(server, db)?;
    if data.exists() {
        std::fs::remove_dir_all(data)?;
    }
    std::fs::create_dir_all(data)?;
    let texts = crate::read_lines(corpus, 0, sentences)?;
    let queries = crate::read_lines(corpus, sentences, 64)?;
    let bodies: Vec<String> = queries
        .iter()
        .map(|q| json!({"query": q, "k": 10}).to_string())
        .collect();
    let search_lua = data.join("search.lua");
    lua(&search_lua, "POST", &bodies, &["/v1/search".to_owned()])?;
    let list_lua = data.join("list.lua");
    let list_paths: Vec<String> = (1..=50)
        .map(|l| format!("/v1/documents?limit={l}"))
        .collect();
    lua(&list_lua, "GET", &[], &list_paths)?;

    // Ingest through the first instance (all workers of all instances take part).
    let mut instances = Vec::new();
    for n in 0..3 {
        instances.push(
            start(
                &strata_bin,
                &data.join(format!("i{n}")),
                &url,
                redis.as_deref(),
                &[],
            )
            .await?,
        );
    }
    let client = reqwest::Client::new();
    let started = Instant::now();
    let (ids, chunks) = crate::ingest(
        &client,
        &instances[0].base,
        &texts,
        0,
        Duration::from_secs(1800),
    )
    .await?;
    let documents = ids.len();
    let ingest_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "ingested {documents} documents, {chunks} chunks in {ingest_secs:.1} s over 3 instances"
    );

    let mut results = Vec::new();
    for round in 1..=rounds {
        for n in 1..=3usize {
            let urls: Vec<String> = instances[..n].iter().map(|i| i.base.clone()).collect();
            // Warm-up: each instance embeds every distinct query once before measuring.
            for u in &urls {
                for b in &bodies {
                    client
                        .post(format!("{u}/v1/search"))
                        .header("content-type", "application/json")
                        .body(b.clone())
                        .send()
                        .await?
                        .error_for_status()?;
                }
            }
            let search = drive(&urls, &search_lua, seconds, connections)?;
            let list = drive(&urls, &list_lua, seconds, connections)?;
            eprintln!("round {round}, {n} instance(s): search {search}, list {list}");
            results.push(json!({"round": round, "instances": n, "search": search, "list": list}));
        }
    }
    drop(instances);

    // Connections one instance holds under `clients` concurrent clients (default pool: 10).
    let one = start(&strata_bin, &data.join("c"), &url, redis.as_deref(), &[]).await?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (server, stop) = (server.to_owned(), stop.clone());
        let db = db.to_owned();
        std::thread::spawn(move || {
            let mut max = (0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let q = |app: &str| {
                    psql(
                        &server,
                        &format!(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' \
                             AND application_name = '{app}'"
                        ),
                    )
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
                };
                max.0 = max.0.max(q("strata"));
                max.1 = max.1.max(q("strata-listen") + q("strata-lock"));
                std::thread::sleep(Duration::from_millis(100));
            }
            max
        })
    };
    let under_load = drive(std::slice::from_ref(&one.base), &list_lua, seconds, clients)?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (pool_max, side_max) = sampler.join().map_err(|_| anyhow::anyhow!("sampler"))?;
    let stats: serde_json::Value = client
        .get(format!("{}/v1/performance/database/stats", one.base))
        .send()
        .await?
        .json()
        .await?;
    drop(one);
    psql(server, &format!("DROP DATABASE IF EXISTS {db}")).ok();
    Ok(json!({
        "documents": documents,
        "chunks": chunks,
        "ingest_secs": ingest_secs,
        "runs": results,
        "clients": clients,
        "under_load": under_load,
        "pool_connections_max": pool_max,
        "other_connections_max": side_max,
        "pool_stats": stats["database"]["pool"],
    }))
}
