//! The harness's command line: one subcommand per measurement, each with the options
//! `bench/run` passes. Only definitions live here; `main.rs` dispatches them.
//!
//! Must not import: the measurements themselves.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(about = "strata benchmarks (see bench/run)")]
pub(crate) struct Cli {
    /// Directory of the model files.
    #[arg(long, env = "STRATA_MODEL_DIR", default_value = strata_engine::DEFAULT_MODEL_DIR)]
    pub(crate) model_dir: PathBuf,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
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
        #[command(flatten)]
        load: Load,
        /// Open-loop rates, comma-separated.
        #[arg(long, default_value = "1000,3000", value_delimiter = ',')]
        rates: Vec<u32>,
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
    /// What an L1 entry costs the process (resident memory per entry against its weight) and
    /// whether RSS holds still while a byte-budgeted L1 churns; run once per weigher.
    L1Memory {
        /// counted (key + value + 64, the old weigher) or allocated (strata-cache's now).
        #[arg(long, default_value = "allocated")]
        weigher: String,
        /// The cache's byte budget, in MiB.
        #[arg(long, default_value_t = 64)]
        budget_mib: u64,
        /// Seconds of churn.
        #[arg(long, default_value_t = 120)]
        seconds: u64,
        /// Only this phase (cost or churn); without it both, each in its own process.
        #[arg(long)]
        phase: Option<String>,
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
        #[command(flatten)]
        load: Load,
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
        /// The server's in-process cache budget (`--cache-l1`, e.g. `64MiB`); its default
        /// without. The trend starts once the cache is full, so a smaller budget leaves more
        /// of the run to measure the steady state.
        #[arg(long)]
        l1: Option<String>,
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
        #[command(flatten)]
        load: Load,
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
        #[command(flatten)]
        load: Load,
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
    /// Serve the ceiling (strata's middleware around a handler answering a fixed body) on its
    /// own, until stopped: a process to profile beside `strata serve` (bench/profile-hit).
    Ceiling {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7798")]
        listen: std::net::SocketAddr,
        /// The body every POST /v1/search is answered with.
        #[arg(long)]
        body: PathBuf,
        /// Label the body gzip (`Content-Encoding: gzip`, `Vary`), as the gzip ceiling does.
        #[arg(long)]
        gzip: bool,
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
    /// One in-process index (usearch, qdrant or bm25) kept at a fixed size while entries are
    /// added and the oldest removed, as the soak's library churns: resident memory and the
    /// index's own figures at each checkpoint, and the growth over the second half.
    IndexChurn {
        /// `usearch`, `qdrant` or `bm25`.
        #[arg(long)]
        index: String,
        /// Scratch directory (the vector indexes' files).
        #[arg(long)]
        work: PathBuf,
        /// Sentences file (bm25 only; the first 5,000 lines are used).
        #[arg(long)]
        corpus: Option<PathBuf>,
        /// Entries kept live.
        #[arg(long, default_value_t = 650)]
        live: usize,
        /// Add-and-remove operations.
        #[arg(long, default_value_t = 1_000_000)]
        ops: usize,
        /// Operations between checkpoints.
        #[arg(long, default_value_t = 50_000)]
        every: usize,
        /// Operations between saves of a vector index (0: never); the server saves every few
        /// seconds, a few hundred of the soak's operations.
        #[arg(long, default_value_t = 300)]
        save_every: usize,
    },
    /// strata's in-process BM25 index or qdrant-edge's sparse BM25 vectors on BEIR SciFact
    /// train, one abstract per text: build time, memory, nDCG@10, recall@100, latency.
    Lexical {
        /// `strata` or `qdrant`.
        #[arg(long)]
        engine: String,
        /// BEIR SciFact directory (corpus.jsonl, queries-train.jsonl, qrels-train.tsv).
        #[arg(long)]
        scifact: PathBuf,
        /// Scratch directory for the qdrant shard.
        #[arg(long)]
        work: PathBuf,
        /// Sentences (one a line) to add as unjudged texts, for the cost of a larger index.
        #[arg(long)]
        distractors: Option<PathBuf>,
        /// How many of them.
        #[arg(long, default_value_t = 0)]
        distractor_count: usize,
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

/// The load options the HTTP measurements share.
#[derive(Args)]
pub(crate) struct Load {
    /// Alternated rounds (medians reported).
    #[arg(long, default_value_t = 3)]
    pub(crate) rounds: usize,
    /// Seconds of each measured run (a wrk run, an open-loop phase).
    #[arg(long, default_value_t = 5.0)]
    pub(crate) seconds: f64,
    /// Concurrent keep-alive connections (split over the instances where there are several).
    #[arg(long, default_value_t = 64)]
    pub(crate) connections: usize,
}
