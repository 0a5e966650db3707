//! Work done for callers: `[gateway]` upstreams and background `[jobs]`.

use clap::Args;
use serde::Deserialize;

use super::{parse_size, size};

/// The LLM gateway's upstreams: `POST /v1/chat/completions` is proxied to them, in order.
/// `[gateway]` in `strata.toml`, where `[[gateway.upstreams]]` tables list several.
#[derive(Clone, Default, Args, Deserialize)]
#[command(next_help_heading = "Gateway")]
#[serde(default)]
pub struct GatewayFlags {
    /// Base URL (up to and including `/v1`) of an OpenAI-compatible chat upstream, e.g. a
    /// local llama.cpp server: `http://127.0.0.1:8080/v1` [default: none; the chat route
    /// answers 404 model_not_found].
    #[arg(long, env = "STRATA_UPSTREAM_URL", global = true)]
    pub upstream_url: Option<String>,
    /// API key sent to that upstream as `Authorization: Bearer <key>`; never printed.
    #[arg(
        long,
        env = "STRATA_UPSTREAM_KEY",
        global = true,
        hide_env_values = true
    )]
    pub upstream_key: Option<String>,
    /// Comma-separated models that upstream serves [default: any model asked for].
    #[arg(long, env = "STRATA_UPSTREAM_MODELS", global = true)]
    pub upstream_models: Option<String>,
    /// Comma-separated `alias=model` names clients may use for its models.
    #[arg(long, env = "STRATA_UPSTREAM_ALIASES", global = true)]
    pub upstream_aliases: Option<String>,
    /// Comma-separated `model=input/output` prices in dollars per million tokens (e.g.
    /// `gpt-4o-mini=0.15/0.6`), for cost accounting and cost budgets [default: 0].
    #[arg(long, env = "STRATA_UPSTREAM_PRICES", global = true)]
    pub upstream_prices: Option<String>,
    /// More upstreams, tried in order after --upstream-url: a JSON array of objects with
    /// `name`, `base_url`, `api_key`, `models`, `aliases`, `prices` (or `[[gateway.upstreams]]`
    /// tables in strata.toml).
    #[arg(long, env = "STRATA_UPSTREAMS", global = true, hide_env_values = true)]
    pub upstreams: Option<UpstreamList>,
    /// Seconds to wait for an upstream's response headers [default: 60].
    #[arg(long, env = "STRATA_UPSTREAM_FIRST_BYTE_TIMEOUT_SECS", global = true)]
    pub upstream_first_byte_timeout_secs: Option<u64>,
    /// Seconds to wait between two chunks of an upstream's answer [default: 60].
    #[arg(long, env = "STRATA_UPSTREAM_IDLE_TIMEOUT_SECS", global = true)]
    pub upstream_idle_timeout_secs: Option<u64>,
    /// Seconds to wait for a connection to an upstream [default: 5].
    #[arg(long, env = "STRATA_UPSTREAM_CONNECT_TIMEOUT_SECS", global = true)]
    pub upstream_connect_timeout_secs: Option<u64>,
    /// Retries per upstream before its first byte (connection errors, timeouts, 429, 5xx),
    /// with exponential backoff, before the next upstream is tried [default: 2].
    #[arg(long, env = "STRATA_UPSTREAM_RETRIES", global = true)]
    pub upstream_retries: Option<u32>,
    /// The semantic cache on `/v1/chat/completions`: `off`, `shadow` (look up and record
    /// what it would have served and whether that agreed with the upstream, in
    /// `/v1/performance/gateway/stats`; always answer from the upstream) or `on` (answer a
    /// prompt near an earlier one in meaning with that one's answer, past a guard against
    /// differing numbers, negation, opposites and named entities). A request overrides it
    /// with `"strata": {"semantic_cache": "on"}` [default: off].
    #[arg(long, env = "STRATA_SEMANTIC_CACHE", global = true, value_parser = ["off", "shadow", "on"])]
    pub semantic_cache: Option<String>,
    /// The least cosine similarity (0-1) of two prompts for the semantic cache to match them;
    /// a request overrides it with `"strata": {"semantic_threshold": 0.93}` [default: 0.96;
    /// BENCHMARKS.md gives the false hits and matches of each threshold on labelled pairs].
    #[arg(long, env = "STRATA_SEMANTIC_THRESHOLD", global = true)]
    pub semantic_threshold: Option<f32>,
}

layered!(GatewayFlags {
    upstream_url,
    upstream_key,
    upstream_models,
    upstream_aliases,
    upstream_prices,
    upstreams,
    upstream_first_byte_timeout_secs,
    upstream_idle_timeout_secs,
    upstream_connect_timeout_secs,
    upstream_retries,
    semantic_cache,
    semantic_threshold
});

/// Upstreams given as a JSON array (a flag or variable) or as tables (strata.toml).
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct UpstreamList(pub Vec<strata_server::GatewayUpstream>);

impl std::str::FromStr for UpstreamList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_str(s)
            .map(Self)
            .map_err(|e| format!("not a JSON array of upstreams: {e}"))
    }
}

/// Background ingestion: workers, leases, retries and chunking. `[jobs]` in `strata.toml`.
#[derive(Clone, Default, Args, Deserialize)]
#[command(next_help_heading = "Jobs")]
#[serde(default)]
pub struct JobFlags {
    /// Background ingestion workers in this process; 0 runs none [default: 2].
    #[arg(long, env = "STRATA_WORKERS", global = true)]
    pub workers: Option<usize>,

    /// Attempts before a job fails for good [default: 5].
    #[arg(long, env = "STRATA_JOB_MAX_ATTEMPTS", global = true)]
    pub job_max_attempts: Option<u32>,

    /// Seconds a job lease lasts without a heartbeat; a crashed worker's job is retried after it [default: 30].
    #[arg(long, env = "STRATA_JOB_LEASE_SECS", global = true)]
    pub job_lease_secs: Option<u64>,

    /// Seconds before the first retry of a failed job; doubles per attempt [default: 2].
    #[arg(long, env = "STRATA_JOB_BACKOFF_SECS", global = true)]
    pub job_backoff_secs: Option<u64>,

    /// Longest text extraction of one file, in seconds; the extracting process is killed at
    /// it [default: 60].
    #[arg(long, env = "STRATA_EXTRACT_TIMEOUT_SECS", global = true)]
    pub extract_timeout_secs: Option<u64>,

    /// Address space each extraction process may use (a file needing more fails with that
    /// reason): bytes, or with a unit (512MiB, 2GiB) [default: 1GiB].
    #[serde(deserialize_with = "size")]
    #[arg(long, env = "STRATA_EXTRACT_MEMORY", global = true, value_parser = parse_size)]
    pub extract_memory: Option<u64>,

    /// Who reads PDFs: `poppler` (Debian's poppler-utils `pdftotext`, in a child process; reads
    /// CJK, damaged and Type3 files), `builtin` (the parser compiled in; reads fewer files),
    /// or `auto`: poppler when `pdftotext` is on PATH [default: auto].
    #[arg(long, env = "STRATA_PDF_READER", global = true)]
    pub pdf_reader: Option<PdfReaderChoice>,

    /// Most tokens per chunk [default: 200].
    #[arg(long, env = "STRATA_CHUNK_TOKENS", global = true)]
    pub chunk_tokens: Option<usize>,

    /// Tokens shared by consecutive chunks [default: 40].
    #[arg(long, env = "STRATA_CHUNK_OVERLAP", global = true)]
    pub chunk_overlap: Option<usize>,
}

layered!(JobFlags {
    workers,
    job_max_attempts,
    job_lease_secs,
    job_backoff_secs,
    extract_timeout_secs,
    extract_memory,
    pdf_reader,
    chunk_tokens,
    chunk_overlap
});

/// Who reads PDFs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PdfReaderChoice {
    /// Poppler when `pdftotext` is on PATH, else the built-in parser.
    Auto,
    /// Poppler's `pdftotext`; strata refuses to start without it.
    Poppler,
    /// The parser compiled into strata.
    Builtin,
}
