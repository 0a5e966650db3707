//! strata's benchmark harness. Each subcommand measures one thing and prints one JSON
//! object on stdout; `bench/run` alternates them over rounds and prints medians and ratios.
//!
//! Every load loop here is bounded in count and time, and talks only to loopback.

mod cache;
mod gateway;
mod indexes;
mod memories;
mod mixed;
mod overload;
mod scale;
mod semantic;
mod soak;

/// mimalloc: glibc malloc's consolidation and cross-thread frees were a measurable share of
/// a cache hit's cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::json;
use strata_embed::{
    BatchModel, BatchSettings, Batcher, Embedder, LocalEmbedder, LocalRuntime, ModelFiles,
    OnnxMiniLm,
};

#[derive(Parser)]
#[command(about = "strata benchmarks (see bench/run)")]
struct Cli {
    /// Directory of the model files.
    #[arg(long, env = "STRATA_MODEL_DIR", default_value = strata_engine::DEFAULT_MODEL_DIR)]
    model_dir: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Extract real sentences (comment lines of Python sources) into a text file, one per line.
    Corpus {
        /// Directory to walk for *.py files.
        #[arg(long)]
        from: PathBuf,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Most sentences.
        #[arg(long, default_value_t = 101_000)]
        max: usize,
    },
    /// Raw model throughput: batch 1, batch 32, and 32 concurrent single-sentence callers
    /// through the dynamic batcher.
    Model {
        /// Sentences file.
        #[arg(long)]
        corpus: PathBuf,
        /// Sentences per measurement.
        #[arg(long, default_value_t = 640)]
        n: usize,
        /// Which measurement: batch1, batch32 or dynamic.
        #[arg(long)]
        mode: String,
        /// Intra-op threads [default: cores].
        #[arg(long)]
        threads: Option<usize>,
        /// Sort each batch's sentences by length first (less padding).
        #[arg(long)]
        sorted: bool,
    },
    /// Embed the corpus into vector files: base vectors, held-out queries, exact top-10.
    Dataset {
        /// Sentences file.
        #[arg(long)]
        corpus: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Base vectors.
        #[arg(long, default_value_t = 100_000)]
        n: usize,
        /// Queries (taken after the base sentences).
        #[arg(long, default_value_t = 1000)]
        queries: usize,
    },
    /// Ingest documents through a real strata server (port 0, fresh data dir) in rounds, each
    /// followed by the raw model's batch-32 throughput on the same chunk texts (the server
    /// idle), then measure uncached search latency over HTTP with distinct queries.
    Search {
        /// Sentences file.
        #[arg(long)]
        corpus: PathBuf,
        /// Sentences to ingest (one paragraph each).
        #[arg(long, default_value_t = 2000)]
        sentences: usize,
        /// Distinct queries to time (held-out sentences).
        #[arg(long, default_value_t = 300)]
        queries: usize,
        /// Data directory (created fresh; removed afterwards unless --keep).
        #[arg(long)]
        data: PathBuf,
        /// Most tokens per chunk.
        #[arg(long, default_value_t = 32)]
        chunk_tokens: usize,
        /// Ingestion rounds, each followed by a raw-model measurement; the ratio reported is
        /// the median of the rounds' ratios.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// The `strata` binary to run (a process of its own, so its memory is measured alone).
        #[arg(long)]
        strata_bin: PathBuf,
    },
    /// The LLM gateway against a local upstream: added latency over a direct call (open loop
    /// at each rate), cached answers against the HTTP ceiling, identical concurrent streams
    /// (upstream calls), resident memory under many concurrent streams.
    Gateway {
        /// Data directory (created fresh).
        #[arg(long)]
        data: PathBuf,
        /// The `strata` binary to run.
        #[arg(long)]
        strata_bin: PathBuf,
        /// Alternated rounds (medians reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Seconds of each open-loop and wrk phase.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Open-loop rates, comma-separated.
        #[arg(long, default_value = "1000,3000", value_delimiter = ',')]
        rates: Vec<u32>,
        /// wrk connections for cached answers.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Identical concurrent streams.
        #[arg(long, default_value_t = 100)]
        fanout: usize,
        /// Distinct concurrent streams for the memory measurement.
        #[arg(long, default_value_t = 1000)]
        streams: usize,
    },
    /// The semantic cache on labelled question pairs: matches found on duplicates and false
    /// hits on non-duplicates at each threshold, guard on and off, pair by pair and through
    /// the tier with many entries a scope.
    Semantic {
        /// The pairs (`{"a", "b", "duplicate"}` a line).
        #[arg(long, default_value = "../shared/data/qqp-pairs.jsonl")]
        pairs: PathBuf,
        /// Where the embeddings are kept between runs.
        #[arg(long)]
        data: PathBuf,
        /// Thresholds, comma-separated.
        #[arg(
            long,
            default_value = "0.85,0.88,0.90,0.92,0.94,0.95,0.96,0.97",
            value_delimiter = ','
        )]
        thresholds: Vec<f32>,
        /// Entries a scope holds in the tier measurement.
        #[arg(long, default_value_t = 1000)]
        scope: usize,
        /// Most pairs (0: all).
        #[arg(long, default_value_t = 0)]
        max: usize,
    },
    /// Admission under overload: uncached searches through a real server at a quarter of and
    /// at four times its measured capacity (open loop); accepted p99 against unloaded p99,
    /// time to a rejection, timeouts.
    Overload {
        /// Sentences file.
        #[arg(long)]
        corpus: PathBuf,
        /// Sentences to ingest; the queries are the sentences after them.
        #[arg(long, default_value_t = 2000)]
        sentences: usize,
        /// Seconds of each phase.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Alternated rounds (medians reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Data directory (created fresh).
        #[arg(long)]
        data: PathBuf,
        /// The `strata` binary to run.
        #[arg(long)]
        strata_bin: PathBuf,
        /// Extra arguments for `strata serve`, after `--` (the admission settings under test).
        #[arg(last = true)]
        extra: Vec<String>,
    },
    /// Memories at scale: search uncached and after preload, preload per tenant, ranking of
    /// 50, a mixed workload's operations per second, adds against the raw model.
    Memories {
        /// Sentences file (the data set's texts, then queries and texts to add).
        #[arg(long)]
        corpus: PathBuf,
        /// The ANN data set of the same corpus (its base vectors are the memories').
        #[arg(long)]
        dataset: PathBuf,
        /// Data directory (created fresh).
        #[arg(long)]
        data: PathBuf,
        /// The `strata` binary to run.
        #[arg(long)]
        strata_bin: PathBuf,
        /// Tenants.
        #[arg(long, default_value_t = 100)]
        users: usize,
        /// Memories per tenant.
        #[arg(long, default_value_t = 10_000)]
        per_user: usize,
        /// Seconds of the mixed workload per round.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Concurrent clients of the mixed workload.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Texts per add-rate measurement.
        #[arg(long, default_value_t = 640)]
        adds: usize,
        /// Alternated rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// In-process cache engines under a Zipf(1.0) read-heavy workload on 2 threads: every
    /// miss inserts; capacity in bytes is a fraction of the working set.
    L1 {
        /// moka or quick_cache.
        #[arg(long)]
        engine: String,
        /// Distinct keys.
        #[arg(long, default_value_t = 100_000)]
        keys: usize,
        /// Capacity as a fraction of all keys' bytes.
        #[arg(long, default_value_t = 0.05)]
        fraction: f64,
        /// Seconds to run.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Cached search over HTTP with wrk: a ceiling server (same middleware, precomputed body
    /// of the same size), strata answering from L1, and (with --redis) strata answering from
    /// L2, alternated over rounds.
    CacheHttp {
        /// Sentences file.
        #[arg(long)]
        corpus: PathBuf,
        /// Scratch directory for the servers' data.
        #[arg(long)]
        data: PathBuf,
        /// Redis for the L2 contender.
        #[arg(long)]
        redis: Option<String>,
        /// Alternation rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Seconds per wrk run.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Sentences ingested into each server.
        #[arg(long, default_value_t = 200)]
        sentences: usize,
        /// Python (a venv with bench/seed's pinned packages) to run the seed stack with.
        #[arg(long)]
        seed_python: Option<PathBuf>,
        /// PostgreSQL for the seed stack's source of truth.
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        seed_database_url: String,
        /// uvicorn workers of the seed stack.
        #[arg(long, default_value_t = 2)]
        seed_workers: usize,
        /// Connection counts for the scaling runs (ceiling and L1 hit), e.g. 64,1000,10000;
        /// the fd limit must allow them.
        #[arg(long, value_delimiter = ',')]
        scale: Vec<usize>,
        /// The `strata` binary, started as a new user starts it and measured beside the
        /// in-process servers.
        #[arg(long)]
        strata_bin: Option<PathBuf>,
    },
    /// Hit ratios of L1 and L1 + L2 (Redis) on a Zipf(1.0) workload over distinct requests,
    /// L1 sized to a fraction of them.
    Zipf {
        /// Redis URL (a database of its own is best: the run clears its keys at the end).
        #[arg(long)]
        redis: String,
        /// Distinct requests.
        #[arg(long, default_value_t = 100_000)]
        keys: usize,
        /// L1 budget as a fraction of all answers' bytes.
        #[arg(long, default_value_t = 0.05)]
        fraction: f64,
        /// Requests (the first half warms up).
        #[arg(long, default_value_t = 1_000_000)]
        requests: usize,
    },
    /// A long mixed load on one `strata serve`, sampled each minute (RSS, descriptors,
    /// threads, pool, latency, errors): the slopes after warm-up show whether anything grows.
    Soak {
        /// The `strata` binary to run.
        #[arg(long)]
        strata_bin: PathBuf,
        /// Sentences file (documents, then queries, then texts to upload).
        #[arg(long)]
        corpus: PathBuf,
        /// Scratch directory.
        #[arg(long)]
        data: PathBuf,
        /// Minutes of load.
        #[arg(long, default_value_t = 60.0)]
        minutes: f64,
        /// Minutes left out of the trend.
        #[arg(long, default_value_t = 10.0)]
        warmup: f64,
        /// Concurrent clients.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// A PostgreSQL URL (a database of the soak's own is made on it); SQLite without.
        #[arg(long)]
        postgres: Option<String>,
        /// Redis for the shared cache.
        #[arg(long)]
        redis: Option<String>,
    },
    /// strata over PostgreSQL at 1, 2 and 3 instances (search and list, uncached), and the
    /// connections one instance holds under many concurrent clients.
    ScaleOut {
        /// The `strata` binary to run.
        #[arg(long)]
        strata_bin: PathBuf,
        /// Sentences file.
        #[arg(long)]
        corpus: PathBuf,
        /// Scratch directory.
        #[arg(long)]
        data: PathBuf,
        /// PostgreSQL server (a database of the benchmark's own is made on it).
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        postgres: String,
        /// Redis for the instances' shared cache and invalidation.
        #[arg(long)]
        redis: Option<String>,
        /// Sentences ingested (100 per document).
        #[arg(long, default_value_t = 5000)]
        sentences: usize,
        /// Alternated rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Connections per measurement, split over the instances.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Concurrent clients for the connection-count measurement.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
    },
    /// A mixed Zipf(1.0) workload of searches, document reads, list pages and writes over
    /// several tenants, on the embedded default and (with --postgres and --redis) on
    /// PostgreSQL + Redis, alternated over rounds.
    Mixed {
        /// Sentences file.
        #[arg(long)]
        corpus: PathBuf,
        /// Scratch directory for the servers' data.
        #[arg(long)]
        data: PathBuf,
        /// PostgreSQL server for the second contender (a database of its own is made on it).
        #[arg(long)]
        postgres: Option<String>,
        /// Redis for the second contender.
        #[arg(long)]
        redis: Option<String>,
        /// Sentences ingested per tenant (100 per document).
        #[arg(long, default_value_t = 2000)]
        sentences: usize,
        /// Distinct search queries (drawn Zipf(1.0)).
        #[arg(long, default_value_t = 2000)]
        queries: usize,
        /// Tenants (each request picks one uniformly).
        #[arg(long, default_value_t = 8)]
        tenants: usize,
        /// Share of requests that write (PATCH a document's tags), in percent.
        #[arg(long, default_value_t = 5.0)]
        write_percent: f64,
        /// Alternated rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Seconds per wrk run.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 64)]
        connections: usize,
    },
    /// The in-process cost of one cached search (strata's router, L1 hit) against the
    /// ceiling's router, called through tower with no sockets, alternated over rounds.
    HitPath {
        /// Sentences file.
        #[arg(long)]
        corpus: PathBuf,
        /// Scratch directory for the server's data.
        #[arg(long)]
        data: PathBuf,
        /// Sentences ingested (100 per document).
        #[arg(long, default_value_t = 1000)]
        sentences: usize,
        /// Alternated rounds.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Requests per contender and round.
        #[arg(long, default_value_t = 200_000)]
        requests: usize,
    },
    /// One of strata's in-process indexes (usearch or qdrant-edge) on the dataset, through
    /// the server's own types: build time, memory, recall@10 and queries/s, unfiltered and
    /// with tenant and allowed-set filters of several selectivities.
    Index {
        /// `usearch` or `qdrant`.
        #[arg(long)]
        engine: String,
        /// Dataset directory.
        #[arg(long)]
        data: PathBuf,
        /// ef values to measure.
        #[arg(long, value_delimiter = ',', default_value = "64,128")]
        ef: Vec<usize>,
        /// Queries used (the filtered runs score every query exactly too).
        #[arg(long, default_value_t = 1000)]
        queries: usize,
    },
    /// usearch HNSW on the dataset: build time, recall@10 and single-thread queries/s.
    Ann {
        /// Dataset directory.
        #[arg(long)]
        data: PathBuf,
        /// ef values to measure.
        #[arg(long, value_delimiter = ',', default_value = "64,128")]
        ef: Vec<usize>,
        /// Stored scalar type: f16, bf16, i8 (strata's index) or f32.
        #[arg(long, default_value = "i8")]
        quantization: String,
        /// Distance: `ip` (inner product; strata's vectors are unit length, so it ranks as
        /// cosine does) or `cos`.
        #[arg(long, default_value = "ip")]
        metric: String,
        /// Candidates taken from the index and re-scored exactly against the f32 vectors, as
        /// strata does (20 for k = 10); 0: the index's own top 10.
        #[arg(long, default_value_t = 20)]
        rerank: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let out = rt.block_on(run(cli))?;
    println!("{out}");
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<serde_json::Value> {
    let files = ModelFiles::at(&cli.model_dir);
    match cli.cmd {
        Cmd::Corpus { from, out, max } => corpus(&from, &out, max),
        Cmd::Model {
            corpus,
            n,
            mode,
            threads,
            sorted,
        } => model(&files, &corpus, n, &mode, threads, sorted).await,
        Cmd::Dataset {
            corpus,
            out,
            n,
            queries,
        } => dataset(&files, &corpus, &out, n, queries).await,
        Cmd::L1 {
            engine,
            keys,
            fraction,
            seconds,
        } => l1(&engine, keys, fraction, seconds),
        Cmd::Index {
            engine,
            data,
            ef,
            queries,
        } => indexes::run(&engine, &data, &ef, queries),
        Cmd::Ann {
            data,
            ef,
            quantization,
            metric,
            rerank,
        } => ann(&data, &ef, &quantization, &metric, rerank),
        Cmd::ScaleOut {
            strata_bin,
            corpus,
            data,
            postgres,
            redis,
            sentences,
            rounds,
            seconds,
            connections,
            clients,
        } => {
            scale::run(
                strata_bin,
                &corpus,
                &data,
                &postgres,
                redis,
                sentences,
                rounds,
                seconds,
                connections,
                clients,
            )
            .await
        }
        Cmd::CacheHttp {
            corpus,
            data,
            redis,
            rounds,
            seconds,
            connections,
            sentences,
            seed_python,
            seed_database_url,
            seed_workers,
            scale,
            strata_bin,
        } => {
            let seed = match (seed_python, &redis) {
                (Some(python), Some(redis_url)) => Some(cache::Seed {
                    python,
                    dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seed"),
                    database_url: seed_database_url,
                    redis_url: redis_url.clone(),
                    workers: seed_workers,
                }),
                (Some(_), None) => bail!("the seed stack needs --redis"),
                _ => None,
            };
            cache::http(
                &cli.model_dir,
                &corpus,
                &data,
                redis,
                cache::HttpRun {
                    rounds,
                    seconds,
                    connections,
                    sentences,
                    scale,
                    strata_bin,
                },
                seed,
            )
            .await
        }
        Cmd::HitPath {
            corpus,
            data,
            sentences,
            rounds,
            requests,
        } => cache::hit_path(&cli.model_dir, &corpus, &data, sentences, rounds, requests).await,
        Cmd::Mixed {
            corpus,
            data,
            postgres,
            redis,
            sentences,
            queries,
            tenants,
            write_percent,
            rounds,
            seconds,
            connections,
        } => {
            mixed::run(
                &cli.model_dir,
                &corpus,
                &data,
                postgres,
                redis,
                sentences,
                queries,
                tenants,
                write_percent,
                rounds,
                seconds,
                connections,
            )
            .await
        }
        Cmd::Soak {
            strata_bin,
            corpus,
            data,
            minutes,
            warmup,
            clients,
            postgres,
            redis,
        } => {
            let sentences = read_lines(&corpus, 0, 8000)?;
            let db = match &postgres {
                Some(server) => Some(scale::fresh_database(server, "strata_soak")?),
                None => None,
            };
            soak::run(
                &strata_bin,
                &data,
                &sentences,
                minutes,
                warmup,
                clients,
                db.as_deref(),
                redis.as_deref(),
            )
            .await
        }
        Cmd::Zipf {
            redis,
            keys,
            fraction,
            requests,
        } => cache::zipf(redis, keys, fraction, requests).await,
        Cmd::Semantic {
            pairs,
            data,
            thresholds,
            scope,
            max,
        } => semantic::run(&files, &pairs, &data, &thresholds, scope, max),
        Cmd::Gateway {
            data,
            strata_bin,
            rounds,
            seconds,
            rates,
            connections,
            fanout,
            streams,
        } => {
            gateway::run(
                &strata_bin,
                &data,
                gateway::GatewayRun {
                    rounds,
                    seconds,
                    rates,
                    connections,
                    fanout,
                    streams,
                },
            )
            .await
        }
        Cmd::Overload {
            corpus,
            sentences,
            seconds,
            rounds,
            data,
            strata_bin,
            extra,
        } => {
            overload::run(
                &strata_bin,
                &corpus,
                &data,
                overload::OverloadRun {
                    sentences,
                    seconds,
                    rounds,
                    extra,
                },
            )
            .await
        }
        Cmd::Memories {
            corpus,
            dataset,
            data,
            strata_bin,
            users,
            per_user,
            seconds,
            connections,
            adds,
            rounds,
        } => {
            memories::run(
                &strata_bin,
                &files,
                &corpus,
                &dataset,
                &data,
                memories::MemoryRun {
                    users,
                    per_user,
                    seconds,
                    connections,
                    adds,
                    rounds,
                },
            )
            .await
        }
        Cmd::Search {
            corpus,
            sentences,
            queries,
            data,
            chunk_tokens,
            rounds,
            strata_bin,
        } => {
            search(
                &cli.model_dir,
                &strata_bin,
                &corpus,
                SearchRun {
                    sentences,
                    queries,
                    chunk_tokens,
                    rounds,
                },
                &data,
            )
            .await
        }
    }
}

fn corpus(from: &Path, out: &Path, max: usize) -> anyhow::Result<serde_json::Value> {
    let mut files = Vec::new();
    walk(from, &mut files)?;
    files.sort();
    let mut seen = HashSet::new();
    let mut lines = Vec::new();
    'outer: for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for line in text.lines() {
            let t = line.trim_start();
            let Some(c) = t.strip_prefix('#') else {
                continue;
            };
            let c = c.trim_start_matches('#').trim();
            let words = c.split_whitespace().count();
            if (5..=40).contains(&words)
                && c.chars().all(|ch| !ch.is_control())
                && seen.insert(c.to_owned())
            {
                lines.push(c.to_owned());
                if lines.len() >= max {
                    break 'outer;
                }
            }
        }
    }
    let mut w = std::io::BufWriter::new(std::fs::File::create(out)?);
    for l in &lines {
        writeln!(w, "{l}")?;
    }
    w.flush()?;
    Ok(json!({"sentences": lines.len(), "files": files.len()}))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "py") {
            out.push(p);
        }
    }
    Ok(())
}

fn read_lines(path: &Path, skip: usize, n: usize) -> anyhow::Result<Vec<String>> {
    let f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let lines: Vec<String> = std::io::BufReader::new(f)
        .lines()
        .skip(skip)
        .take(n)
        .collect::<Result<_, _>>()?;
    if lines.len() < n {
        bail!(
            "{} has only {} sentences after {skip}, {n} wanted",
            path.display(),
            lines.len()
        );
    }
    Ok(lines)
}

async fn model(
    files: &ModelFiles,
    corpus: &Path,
    n: usize,
    mode: &str,
    threads: Option<usize>,
    sorted: bool,
) -> anyhow::Result<serde_json::Value> {
    let mut sentences = read_lines(corpus, 0, n)?;
    if sorted {
        sentences.sort_by_key(|s| s.len());
    }
    let words: usize = sentences.iter().map(|s| s.split_whitespace().count()).sum();
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let m = Arc::new(OnnxMiniLm::load(files, threads)?);
    m.embed_batch(&sentences[..8])?; // warm-up
    let start = Instant::now();
    match mode {
        "batch1" => {
            for s in &sentences {
                m.embed_batch(std::slice::from_ref(s))?;
            }
        }
        "batch32" => {
            for part in sentences.chunks(32) {
                m.embed_batch(part)?;
            }
        }
        "dynamic" => {
            // 32 concurrent callers, each embedding one sentence at a time; the batcher's
            // throughput, so no wait budget turns callers away (the overload section measures
            // that).
            let batcher = Batcher::start(
                m.clone(),
                BatchSettings {
                    max_queue_wait: None,
                    ..BatchSettings::default()
                },
            );
            let per = sentences.len().div_ceil(32);
            let mut tasks = Vec::new();
            for part in sentences.chunks(per) {
                let b = batcher.clone();
                let part = part.to_vec();
                tasks.push(tokio::spawn(async move {
                    for s in part {
                        b.embed(vec![s]).await?;
                    }
                    Ok::<_, strata_embed::EmbedError>(())
                }));
            }
            for t in tasks {
                t.await??;
            }
        }
        other => bail!("unknown mode {other}"),
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(json!({
        "mode": mode,
        "sentences": n,
        "mean_words": words as f64 / n as f64,
        "seconds": secs,
        "sentences_per_s": n as f64 / secs,
        "ms_per_sentence": secs * 1000.0 / n as f64,
    }))
}

fn write_f32(path: &Path, rows: &[Vec<f32>]) -> anyhow::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    for r in rows {
        for x in r {
            w.write_all(&x.to_le_bytes())?;
        }
    }
    w.flush()?;
    Ok(())
}

fn read_f32(path: &Path, dims: usize) -> anyhow::Result<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes
        .chunks_exact(dims * 4)
        .map(|row| {
            row.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
        .collect())
}

async fn dataset(
    files: &ModelFiles,
    corpus: &Path,
    out: &Path,
    n: usize,
    queries: usize,
) -> anyhow::Result<serde_json::Value> {
    std::fs::create_dir_all(out)?;
    let all = read_lines(corpus, 0, n + queries)?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let settings = BatchSettings {
        max_queue_wait: None,
        ..BatchSettings::default()
    };
    let e = LocalEmbedder::load(files, LocalRuntime::Onnx, threads, settings)?;
    let start = Instant::now();
    let mut vectors = Vec::with_capacity(all.len());
    for part in all.chunks(256) {
        vectors.extend(e.embed(part.to_vec()).await?);
    }
    let embed_secs = start.elapsed().as_secs_f64();
    let (base, qs) = vectors.split_at(n);
    write_f32(&out.join("base.f32"), base)?;
    write_f32(&out.join("queries.f32"), qs)?;
    // Exact top-10 by brute force: the ground truth for recall.
    let truth: Vec<Vec<u32>> = qs.iter().map(|q| exact(base, q, 10)).collect();
    let mut w = std::io::BufWriter::new(std::fs::File::create(out.join("truth.u32"))?);
    for t in &truth {
        for id in t {
            w.write_all(&id.to_le_bytes())?;
        }
    }
    w.flush()?;
    Ok(json!({"base": n, "queries": queries, "dims": 384, "embed_seconds": embed_secs}))
}

fn exact(base: &[Vec<f32>], q: &[f32], k: usize) -> Vec<u32> {
    let mut scored: Vec<(u32, f32)> = base
        .iter()
        .enumerate()
        .map(|(i, v)| (i as u32, dot(v, q)))
        .collect();
    scored.select_nth_unstable_by(k, |a, b| b.1.total_cmp(&a.1));
    scored.truncate(k);
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored.into_iter().map(|(i, _)| i).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn ann(
    data: &Path,
    efs: &[usize],
    quantization: &str,
    metric: &str,
    rerank: usize,
) -> anyhow::Result<serde_json::Value> {
    use usearch::{Index, IndexOptions, MetricKind, ScalarKind};
    let base = read_f32(&data.join("base.f32"), 384)?;
    let queries = read_f32(&data.join("queries.f32"), 384)?;
    let truth_bytes = std::fs::read(data.join("truth.u32"))?;
    let truth: Vec<Vec<u64>> = truth_bytes
        .chunks_exact(40)
        .map(|r| {
            r.chunks_exact(4)
                .map(|c| u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        })
        .collect();
    let index = Index::new(&IndexOptions {
        dimensions: 384,
        metric: match metric {
            "ip" => MetricKind::IP,
            "cos" => MetricKind::Cos,
            other => bail!("unknown metric {other}"),
        },
        quantization: match quantization {
            "f16" => ScalarKind::F16,
            "f32" => ScalarKind::F32,
            "bf16" => ScalarKind::BF16,
            "i8" => ScalarKind::I8,
            other => bail!("unknown quantization {other}"),
        },
        connectivity: 16,
        expansion_add: 128,
        expansion_search: 64,
        multi: false,
    })?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    index.reserve_capacity_and_threads(base.len(), threads)?;
    let start = Instant::now();
    std::thread::scope(|s| {
        let per = base.len().div_ceil(threads);
        for (t, part) in base.chunks(per).enumerate() {
            let index = &index;
            s.spawn(move || {
                for (i, v) in part.iter().enumerate() {
                    let _ = index.add((t * per + i) as u64, v.as_slice());
                }
            });
        }
    });
    let build = start.elapsed().as_secs_f64();
    if index.size() != base.len() {
        bail!("index holds {} of {} vectors", index.size(), base.len());
    }
    let mut results = Vec::new();
    for &ef in efs {
        index.change_expansion_search(ef);
        let start = Instant::now();
        let mut hit = 0usize;
        let deadline = Instant::now() + Duration::from_secs(60);
        for (q, t) in queries.iter().zip(&truth) {
            let m = index.search(q.as_slice(), rerank.max(10))?;
            let keys = if rerank > 10 {
                let mut scored: Vec<(u64, f32)> = m
                    .keys
                    .iter()
                    .map(|&k| (k, dot(&base[k as usize], q)))
                    .collect();
                scored.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
                scored.into_iter().take(10).map(|(k, _)| k).collect()
            } else {
                m.keys
            };
            hit += keys.iter().filter(|k| t.contains(k)).count();
            if Instant::now() > deadline {
                bail!("ANN queries took over a minute");
            }
        }
        let secs = start.elapsed().as_secs_f64();
        results.push(json!({
            "ef": ef,
            "recall_at_10": hit as f64 / (10 * queries.len()) as f64,
            "queries_per_s": queries.len() as f64 / secs,
            "rerank": rerank,
        }));
    }
    Ok(
        json!({"engine": "usearch", "quantization": quantization, "metric": metric, "n": base.len(), "build_seconds": build, "build_threads": threads, "results": results}),
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

/// The median of sorted values: the mean of the middle two when their number is even.
fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The sizes of one `search` run.
struct SearchRun {
    sentences: usize,
    queries: usize,
    chunk_tokens: usize,
    rounds: usize,
}

/// Chunk texts the raw model is timed on after each ingestion round.
const RAW_SAMPLE: usize = 2048;

async fn search(
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
    let server = scale::launch(
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
async fn ingest(
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

/// Zipf(1.0) sampler over `n` ranks: inverse CDF by binary search.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for k in 1..=n {
            sum += 1.0 / k as f64;
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Self { cdf }
    }

    fn sample(&self, u: f64) -> usize {
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

fn l1(engine: &str, keys: usize, fraction: f64, seconds: f64) -> anyhow::Result<serde_json::Value> {
    use std::sync::atomic::{AtomicU64, Ordering};
    const VALUE: usize = 2048;
    let key_of = |k: usize| format!("strata:search_results:t0123456789abcdef:0:{k:032x}");
    let entry_bytes = (key_of(0).len() + VALUE + 64) as u64;
    let capacity = ((keys as u64 * entry_bytes) as f64 * fraction) as u64;
    let zipf = Arc::new(Zipf::new(keys));
    let value = bytes::Bytes::from(vec![7u8; VALUE]);
    enum Engine {
        Moka(moka::sync::Cache<String, bytes::Bytes>),
        Quick(quick_cache::sync::Cache<String, bytes::Bytes, Weigh>),
    }
    #[derive(Clone)]
    struct Weigh;
    impl quick_cache::Weighter<String, bytes::Bytes> for Weigh {
        fn weight(&self, k: &String, v: &bytes::Bytes) -> u64 {
            (k.len() + v.len() + 64) as u64
        }
    }
    let cache = Arc::new(match engine {
        "moka" => Engine::Moka(
            moka::sync::Cache::builder()
                .max_capacity(capacity)
                .weigher(|k: &String, v: &bytes::Bytes| (k.len() + v.len() + 64) as u32)
                .build(),
        ),
        "quick_cache" => Engine::Quick(quick_cache::sync::Cache::with_weighter(
            (capacity / entry_bytes) as usize,
            capacity,
            Weigh,
        )),
        other => bail!("unknown engine {other}"),
    });
    let (hits, misses) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let threads = 2;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (cache, zipf, hits, misses, value) = (
                cache.clone(),
                zipf.clone(),
                hits.clone(),
                misses.clone(),
                value.clone(),
            );
            s.spawn(move || {
                let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1);
                let (mut h, mut m) = (0u64, 0u64);
                let mut ops = 0u64;
                loop {
                    // xorshift64*
                    x ^= x >> 12;
                    x ^= x << 25;
                    x ^= x >> 27;
                    let u =
                        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
                    let key = key_of(zipf.sample(u));
                    let found = match cache.as_ref() {
                        Engine::Moka(c) => c.get(&key).is_some(),
                        Engine::Quick(c) => c.get(&key).is_some(),
                    };
                    if found {
                        h += 1;
                    } else {
                        m += 1;
                        match cache.as_ref() {
                            Engine::Moka(c) => c.insert(key, value.clone()),
                            Engine::Quick(c) => c.insert(key, value.clone()),
                        }
                    }
                    ops += 1;
                    if ops.is_multiple_of(1024) && Instant::now() >= deadline {
                        break;
                    }
                }
                hits.fetch_add(h, Ordering::Relaxed);
                misses.fetch_add(m, Ordering::Relaxed);
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let (h, m) = (hits.load(Ordering::Relaxed), misses.load(Ordering::Relaxed));
    Ok(json!({
        "engine": engine,
        "keys": keys,
        "capacity_bytes": capacity,
        "threads": threads,
        "ops_per_s": (h + m) as f64 / secs,
        "hit_ratio": h as f64 / (h + m) as f64,
    }))
}
