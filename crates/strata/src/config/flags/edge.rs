//! The edge's sections: `[server]`, `[auth]` and `[admission]`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;

use super::LogFormat;

/// The HTTP server, identity and logging. `[server]` in `strata.toml`.
#[derive(Clone, Default, Args, Deserialize)]
#[command(next_help_heading = "Server")]
#[serde(default)]
pub struct ServerFlags {
    /// Address to listen on [default: 127.0.0.1:7733].
    #[arg(long, env = "STRATA_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,

    /// Seconds in-flight requests and jobs get to finish on shutdown [default: 10].
    #[arg(long, env = "STRATA_SHUTDOWN_GRACE_SECS", global = true)]
    pub shutdown_grace_secs: Option<u64>,

    /// Frequent searches recomputed per tenant on startup, after writes and on a schedule, so
    /// the first user after a restart or a write gets a cache hit; 0 turns warming off
    /// [default: 20].
    #[arg(long, env = "STRATA_CACHE_WARM_QUERIES", global = true)]
    pub cache_warm_queries: Option<usize>,

    /// Seconds between scheduled warming passes [default: 300].
    #[arg(long, env = "STRATA_CACHE_WARM_INTERVAL_SECS", global = true)]
    pub cache_warm_interval_secs: Option<u64>,
    /// Origins browsers may call strata from, comma-separated (`https://app.example.com`),
    /// or `*` for any; preflights are answered and strata's headers exposed to them
    /// [default: none, CORS off].
    #[arg(
        long,
        env = "STRATA_CORS_ORIGINS",
        global = true,
        value_delimiter = ','
    )]
    pub cors_origins: Option<Vec<String>>,
    /// Responses from this many bytes on are compressed (zstd, br or gzip, as the client's
    /// Accept-Encoding prefers); cached answers keep their gzip form, so a cache hit
    /// compresses nothing; 0 turns compression off [default: 1024].
    #[arg(long, env = "STRATA_COMPRESS_MIN_BYTES", global = true)]
    pub compress_min_bytes: Option<usize>,
    /// Requests answered after this many milliseconds are logged at warn with their route,
    /// status, timing and request id; 0 turns the log off [default: 1000].
    #[arg(long, env = "STRATA_SLOW_REQUEST_MS", global = true)]
    pub slow_request_ms: Option<u64>,
    /// Serve HTTPS with this PEM certificate chain (leaf first), HTTP/1.1 and h2 chosen by
    /// ALPN; needs --tls-key. Both files are re-read when either changes. Unset: plain HTTP
    /// (terminate TLS in a proxy in front) [default: unset].
    #[arg(long, env = "STRATA_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "STRATA_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,

    /// Log filter, e.g. `info` or `strata_engine=debug,info` [default: info].
    #[arg(long, env = "STRATA_LOG", global = true)]
    pub log: Option<String>,

    /// Log format: `text` or `json` [default: text].
    #[arg(long, env = "STRATA_LOG_FORMAT", global = true)]
    pub log_format: Option<LogFormat>,
}

layered!(ServerFlags {
    listen,
    shutdown_grace_secs,
    cache_warm_queries,
    cache_warm_interval_secs,
    cors_origins,
    compress_min_bytes,
    slow_request_ms,
    tls_cert,
    tls_key,
    log,
    log_format
});

/// Who may call: bearer JWTs and the operator key, or a tenant header set by a proxy.
/// `[auth]` in `strata.toml`. With none of them, every request is the single local admin
/// tenant (development), and `strata serve` refuses a non-loopback --listen address unless
/// given --insecure-no-auth.
#[derive(Clone, Default, Args, Deserialize)]
#[command(next_help_heading = "Auth")]
#[serde(default)]
pub struct AuthFlags {
    /// Secret for HS256 bearer tokens (at least 32 bytes): `sub` is the tenant, `role`
    /// (`admin` | `user`) the role, `exp` required. `strata token` mints one. Never printed.
    #[arg(long, env = "STRATA_JWT_SECRET", global = true, hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Public keys for RS256 / PS256 / ES256 / EdDSA bearer tokens: a PEM file (one or more
    /// public key blocks) or a JWKS document (keys chosen by `kid`); reloaded when the file
    /// changes or on SIGHUP.
    #[arg(long, env = "STRATA_JWT_KEYS", global = true)]
    pub jwt_keys: Option<PathBuf>,
    /// The `iss` every token must carry [default: not checked].
    #[arg(long, env = "STRATA_JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,
    /// An `aud` every token must carry [default: not checked].
    #[arg(long, env = "STRATA_JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf` [default: 30].
    #[arg(long, env = "STRATA_JWT_LEEWAY_SECS", global = true)]
    pub jwt_leeway_secs: Option<u64>,
    /// Operator key for scripts and the dashboard (at least 16 characters), sent as
    /// `Authorization: Bearer <key>`: the admin role, acting as its own tenant. Compared in
    /// constant time; never printed.
    #[arg(long, env = "STRATA_ADMIN_KEY", global = true, hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Take each request's tenant from this header, set by an authenticating proxy in front
    /// of strata (e.g. `X-Forwarded-User`); requests without it get 401. Not with the JWT
    /// settings or --admin-key [default: unset].
    #[arg(long, env = "STRATA_TENANT_HEADER", global = true)]
    pub tenant_header: Option<String>,

    /// Tenants with the admin role in tenant-header mode, comma-separated: they may clear
    /// the cache, optimise the database and read its table statistics. In development mode
    /// the single local tenant is the admin [default: none].
    #[arg(
        long,
        env = "STRATA_ADMIN_TENANTS",
        global = true,
        value_delimiter = ','
    )]
    pub admin_tenants: Option<Vec<String>>,
    /// Serve without authentication on a non-loopback address (every caller is the local
    /// admin tenant). For a private network you trust, never for the internet.
    #[arg(
        long,
        env = "STRATA_INSECURE_NO_AUTH",
        global = true,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub insecure_no_auth: Option<bool>,
}

layered!(AuthFlags {
    jwt_secret,
    jwt_keys,
    jwt_issuer,
    jwt_audience,
    jwt_leeway_secs,
    admin_key,
    tenant_header,
    admin_tenants,
    insecure_no_auth
});

/// What a request must pass before a handler runs, and how long it may take.
/// `[admission]` in `strata.toml`.
#[derive(Clone, Default, Args, Deserialize)]
#[command(next_help_heading = "Admission")]
#[serde(default)]
pub struct AdmissionFlags {
    /// Most requests waiting inside strata (one answered at once, as a cache hit is, never
    /// counts) before new ones are answered 503 `overloaded` with Retry-After at once; health,
    /// metrics and operator routes are never shed; 0 for no bound [default: 512].
    #[arg(long, env = "STRATA_MAX_IN_FLIGHT", global = true)]
    pub max_in_flight: Option<usize>,
    /// Requests per second each tenant may make, sustained; over it, 429 `rate_limited` with
    /// Retry-After and RateLimit headers; 0 for no limit [default: 0].
    #[arg(long, env = "STRATA_RATE_LIMIT", global = true)]
    pub rate_limit: Option<u32>,
    /// Requests a tenant may make at once after a quiet spell (with --rate-limit)
    /// [default: twice the rate].
    #[arg(long, env = "STRATA_RATE_BURST", global = true)]
    pub rate_burst: Option<u32>,
    /// Seconds a request may take before it is answered 504 `timeout` [default: 30].
    #[arg(long, env = "STRATA_REQUEST_TIMEOUT_SECS", global = true)]
    pub request_timeout_secs: Option<u64>,
    /// Seconds an upload may take, its body included [default: 300].
    #[arg(long, env = "STRATA_UPLOAD_TIMEOUT_SECS", global = true)]
    pub upload_timeout_secs: Option<u64>,
    /// Searches and embedding requests that may wait for the model; more are answered 503
    /// with Retry-After at once instead of waiting [default: 512].
    #[arg(long, env = "STRATA_SEARCH_QUEUE", global = true)]
    pub search_queue: Option<usize>,
    /// Milliseconds a search may expect to wait for the local model (the texts of admitted
    /// searches still waiting, times the recent cost of one text); a search that would wait
    /// longer is answered 503 with Retry-After at once, so the ones admitted stay fast under
    /// overload. Raise it to trade latency for throughput (fuller batches); 0 turns it off
    /// [default: 15].
    #[arg(long, env = "STRATA_SEARCH_QUEUE_WAIT_MS", global = true)]
    pub search_queue_wait_ms: Option<u64>,
}

layered!(AdmissionFlags {
    max_in_flight,
    rate_limit,
    rate_burst,
    request_timeout_secs,
    upload_timeout_secs,
    search_queue,
    search_queue_wait_ms
});
