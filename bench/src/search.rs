//! `strata-bench search`: ingestion and uncached search through the HTTP server at scale
//! (the raw model timed on the same chunk texts after each round), and the helpers other
//! benchmarks ingest with.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;
use strata_embed::{BatchModel, ModelFiles, OnnxMiniLm};

use crate::corpus::read_lines;
use crate::{median, percentile};

/// The sizes of one `search` run.
pub(crate) struct SearchRun {
    pub(crate) sentences: usize,
    pub(crate) queries: usize,
    pub(crate) chunk_tokens: usize,
    pub(crate) rounds: usize,
}

/// Chunk texts the raw model is timed on after each ingestion round.
const RAW_SAMPLE: usize = 2048;

pub(crate) async fn search(
    model_dir: &Path,
    strata_bin: &Path,
    corpus: &Path,
    run: SearchRun,
    data: &Path,
) -> anyhow::Result<serde_json::Value> {
    let all = read_lines(corpus, 0, run.sentences + run.queries)?;
    let (docs_text, query_text) = all.split_at(run.sentences);
    // Checked here, so a bad size is this command's error rather than the server's.
    strata_engine::chunk::ChunkConfig::new(run.chunk_tokens, 0)?;
    if data.exists() {
        std::fs::remove_dir_all(data)?;
    }
    let model = model_dir.to_string_lossy();
    let tokens = run.chunk_tokens.to_string();
    let server = crate::scale::launch(
        strata_bin,
        &data.join("strata"),
        &[
            "--model-dir",
            &model,
            "--workers",
            "2",
            "--chunk-tokens",
            &tokens,
            "--chunk-overlap",
            "0",
        ],
    )
    .await?;
    let base = server.base.clone();
    let client = reqwest::Client::new();
    // Loaded before the first round, so its start-up is not timed; it sleeps while the
    // server ingests (no spinning threads).
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let raw = OnnxMiniLm::load(&ModelFiles::at(model_dir), threads)?;

    // Ingest in rounds of whole documents (100 sentences each), alternating with the raw
    // model on the same chunk texts while the server is idle: a noisy minute on a shared
    // machine then moves one round's ratio, not the run's.
    let rounds = run.rounds.max(1);
    let per_round = docs_text.len().div_ceil(100).div_ceil(rounds) * 100;
    let mut warmed = false;
    let mut round_rows = Vec::new();
    let (mut documents, mut chunks, mut ingest_secs) = (0usize, 0u64, 0f64);
    for part in docs_text.chunks(per_round.max(100)) {
        let model_before = model_stats(&client, &base).await?;
        let start = Instant::now();
        let (ids, c) = ingest(&client, &base, part, documents, Duration::from_secs(3600)).await?;
        let d = ids.len();
        let secs = start.elapsed().as_secs_f64();
        let model_after = model_stats(&client, &base).await?;
        let delta = |k: &str| {
            model_after[k].as_f64().unwrap_or(0.0) - model_before[k].as_f64().unwrap_or(0.0)
        };
        (documents, chunks, ingest_secs) = (documents + d, chunks + c, ingest_secs + secs);
        // The raw model runs on this round's own chunks: a sample of whole documents spread
        // over the round (the first round's newest documents, used for every round before,
        // had their own mix of lengths, which moved the ratio from round to round).
        let sample = chunk_sample(&client, &base, &ids, RAW_SAMPLE).await?;
        if !warmed {
            // One untimed pass: the first calls of each input shape are slower (the first
            // round's raw figure was 301-303/s against 346-388 afterwards).
            for batch in sample.chunks(32) {
                raw.embed_batch(batch)?;
            }
            warmed = true;
        }
        // The server saves its index and returns memory once its queue runs dry; the raw
        // model is timed after that, on cores nothing else of this run is using.
        server.settle(Duration::from_secs(60)).await;
        let t = Instant::now();
        for batch in sample.chunks(32) {
            raw.embed_batch(batch)?;
        }
        let raw_rate = sample.len() as f64 / t.elapsed().as_secs_f64();
        let rate = c as f64 / secs;
        round_rows.push(json!({
            "chunks": c,
            "ingest_seconds": secs,
            "ingest_chunks_per_s": rate,
            "raw_model_chunks_per_s": raw_rate,
            "ingest_vs_raw": rate / raw_rate,
            // The ratio's two factors: how much of the round the model spent in passes, and
            // how fast it embedded while in them (against the raw figure, which runs alone).
            "model_busy": delta("busy_seconds") / secs,
            "model_chunks_per_busy_s": delta("texts") / delta("busy_seconds").max(1e-9),
            "model_texts_per_pass": delta("texts") / delta("passes").max(1.0),
        }));
    }
    drop(raw);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_rest = server.memory_mb("VmRSS");

    // Uncached search latency, one client, distinct queries, each in every mode (the order
    // rotating from query to query, so no mode always runs first on a fresh query).
    const MODES: [&str; 3] = ["hybrid", "semantic", "lexical"];
    let mut lat: [Vec<f64>; 3] = Default::default();
    for (n, q) in query_text.iter().enumerate() {
        for i in 0..MODES.len() {
            let m = (n + i) % MODES.len();
            let t = Instant::now();
            let r = client
                .post(format!("{base}/v1/search"))
                .json(&json!({"query": q, "k": 10, "mode": MODES[m]}))
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("{} search failed: {}", MODES[m], r.status());
            }
            let _ = r.bytes().await?;
            lat[m].push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    for l in &mut lat {
        l.sort_by(f64::total_cmp);
    }
    let [lat, semantic_lat, lexical_lat] = lat;
    let rss_load = server.memory_mb("VmRSS");
    let rss_peak = server.memory_mb("VmHWM");
    let db: serde_json::Value = client
        .get(format!("{base}/v1/performance/database/stats"))
        .send()
        .await?
        .json()
        .await?;
    drop(server);

    let median_of = |key: &str| {
        let mut v: Vec<f64> = round_rows.iter().filter_map(|r| r[key].as_f64()).collect();
        v.sort_by(f64::total_cmp);
        median(&v)
    };
    Ok(json!({
        "documents": documents,
        "chunks": chunks,
        "ingest_seconds": ingest_secs,
        "ingest_chunks_per_s": chunks as f64 / ingest_secs,
        "raw_model_chunks_per_s": median_of("raw_model_chunks_per_s"),
        // The median of the rounds' ratios, each against the raw figure taken right after it.
        "ingest_vs_raw": median_of("ingest_vs_raw"),
        "rounds": round_rows,
        "queries": lat.len(),
        "search_ms_p50": percentile(&lat, 0.50),
        "search_ms_p95": percentile(&lat, 0.95),
        "search_ms_p99": percentile(&lat, 0.99),
        "semantic_search_ms_p50": percentile(&semantic_lat, 0.50),
        "semantic_search_ms_p95": percentile(&semantic_lat, 0.95),
        "lexical_search_ms_p50": percentile(&lexical_lat, 0.50),
        "lexical_search_ms_p95": percentile(&lexical_lat, 0.95),
        // The server's own process: its resident memory with the model loaded, the vector
        // index and SQLite's caches.
        "rss_mb_at_rest": rss_rest,
        "rss_mb_after_search": rss_load,
        "rss_mb_peak": rss_peak,
        // The in-process lexical index's heap, as the server estimates it.
        "lexical_index_bytes": db["database"]["lexical_index"]["heap_bytes"],
        // The weights the server loads (int8 ONNX), for the bar of 300 MB plus them.
        "model_weights_bytes": std::fs::metadata(model_dir.join(strata_embed::MODEL_ONNX.0))?.len(),
    }))
}

/// Up to `want` chunks of the server's documents as its model embedded them (title and
/// text), whole documents spread over the list.
async fn chunk_sample(
    client: &reqwest::Client,
    base: &str,
    documents: &[String],
    want: usize,
) -> anyhow::Result<Vec<String>> {
    // Whole documents spread evenly over the list, so the sample has the list's mix of
    // chunk lengths (a pass's cost follows its texts' lengths).
    let chunks_of = |id: &str| {
        let url = format!("{base}/v1/documents/{id}/chunks?limit=500");
        let client = client.clone();
        let doc_url = format!("{base}/v1/documents/{id}");
        async move {
            let page: serde_json::Value = client.get(url).send().await?.json().await?;
            let doc: serde_json::Value = client.get(doc_url).send().await?.json().await?;
            let title = doc["title"].as_str().unwrap_or_default().to_owned();
            // What the server's model embedded for each chunk: its title, then its text.
            anyhow::Ok(
                page["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        strata_engine::model::embedding_input(
                            &title,
                            c["text"].as_str().unwrap_or_default(),
                        )
                    })
                    .collect::<Vec<String>>(),
            )
        }
    };
    let Some(first) = documents.first() else {
        return Ok(Vec::new());
    };
    let per_doc = chunks_of(first).await?.len().max(1);
    let stride = (documents.len() * per_doc / want.max(1)).max(1);
    let mut sample = Vec::new();
    for id in documents.iter().step_by(stride) {
        sample.extend(chunks_of(id).await?);
        if sample.len() >= want {
            break;
        }
    }
    sample.truncate(want);
    Ok(sample)
}

/// The server's model counters (`GET /v1/performance/model/stats`).
async fn model_stats(client: &reqwest::Client, base: &str) -> anyhow::Result<serde_json::Value> {
    let v: serde_json::Value = client
        .get(format!("{base}/v1/performance/model/stats"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(v["stats"].clone())
}

/// Uploads `texts` to a strata server as documents of 100 paragraphs each (titled from
/// `doc {first}` on) and waits until every ingestion job has succeeded; returns (the
/// documents' ids, chunks).
pub(crate) async fn ingest(
    client: &reqwest::Client,
    base: &str,
    texts: &[String],
    first: usize,
    within: Duration,
) -> anyhow::Result<(Vec<String>, u64)> {
    let mut ids = Vec::new();
    let mut jobs = Vec::new();
    for (i, part) in texts.chunks(100).enumerate() {
        let r: serde_json::Value = client
            .post(format!("{base}/v1/documents"))
            .json(&json!({"text": part.join("\n\n"), "title": format!("doc {}", first + i)}))
            .send()
            .await?
            .json()
            .await?;
        if let Some(j) = r["job"]["id"].as_str() {
            jobs.push(j.to_owned());
        }
        if let Some(id) = r["document"]["id"].as_str() {
            ids.push(id.to_owned());
        }
    }
    let deadline = Instant::now() + within;
    let mut chunks = 0u64;
    for j in &jobs {
        loop {
            let job: serde_json::Value = client
                .get(format!("{base}/v1/jobs/{j}"))
                .send()
                .await?
                .json()
                .await?;
            match job["status"].as_str() {
                Some("succeeded") => {
                    chunks += job["stages"][1]["total"].as_u64().unwrap_or(0);
                    break;
                }
                Some("failed" | "cancelled") => bail!("job failed: {job}"),
                _ if Instant::now() > deadline => bail!("ingestion took over {within:?}"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    Ok((ids, chunks))
}

/// A memory field (`VmRSS: 1234 kB`) of a `/proc/*/status` text, in MiB.
pub(crate) fn status_mb(status: &str, field: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
