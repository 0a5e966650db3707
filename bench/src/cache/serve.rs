//! The servers the cache benchmarks measure: a strata server in process, the ceiling router
//! (strata's middleware around a precomputed answer), a bare axum router, and wrk to load them.
//!
//! Must not import: the benchmarks that use them.

use std::path::Path;
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use strata_engine::{Engine, EngineSettings};
use strata_server::{App, ServerSettings};
use tokio_util::sync::CancellationToken;

/// One running strata server with a few documents ingested.
pub(crate) struct Strata {
    pub(crate) base: String,
    /// The served engine (shared with any other router built over it).
    pub(crate) engine: Engine,
    /// The HTTP settings it was started with.
    pub(crate) settings: ServerSettings,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Starts a strata server on port 0 over a fresh data directory (warming off, fast job
/// polling; tenants named by `tenant_header` when given) and ingests `texts` into it.
pub(crate) async fn start_strata(
    model_dir: &Path,
    data: &Path,
    texts: &[String],
    tenant_header: Option<&str>,
    configure: impl FnOnce(&mut EngineSettings),
) -> anyhow::Result<Strata> {
    let identity = match tenant_header {
        Some(h) => strata_server::caller::Identity::Header {
            name: strata_server::HeaderName::from_str(h)?,
            admins: Default::default(),
        },
        None => strata_server::caller::Identity::Local,
    };
    start_custom(
        model_dir,
        data,
        texts,
        |srv| srv.identity = identity,
        configure,
        &reqwest::Client::new(),
    )
    .await
}

/// [`start_strata`] with the HTTP settings adjusted by `server`, ingesting through `client`
/// (which carries whatever credentials the server's identity mode wants).
pub(crate) async fn start_custom(
    model_dir: &Path,
    data: &Path,
    texts: &[String],
    server: impl FnOnce(&mut ServerSettings),
    configure: impl FnOnce(&mut EngineSettings),
    client: &reqwest::Client,
) -> anyhow::Result<Strata> {
    if data.exists() {
        std::fs::remove_dir_all(data)?;
    }
    let mut settings = EngineSettings {
        data_dir: data.to_owned(),
        model_dir: model_dir.to_owned(),
        ..EngineSettings::default()
    };
    settings.jobs.poll_interval = Duration::from_millis(20);
    configure(&mut settings);
    let engine = Engine::open(settings).await?;
    let mut server_settings = ServerSettings {
        listen: "127.0.0.1:0".parse()?,
        warm: strata_server::warm::WarmSettings {
            queries_per_tenant: 0,
            ..Default::default()
        },
        ..ServerSettings::default()
    };
    server(&mut server_settings);
    let app = App::build(engine.clone(), server_settings.clone()).await?;
    let base = format!("http://{}", app.local_addr()?);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run(shutdown.clone()));
    crate::ingest(client, &base, texts, 0, Duration::from_secs(600)).await?;
    Ok(Strata {
        base,
        engine,
        settings: server_settings,
        shutdown,
        task,
    })
}

impl Strata {
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await??;
        Ok(())
    }
}

/// What wrk measured.
pub(crate) struct Wrk {
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) errors: u64,
}

pub(crate) fn wrk(
    url: &str,
    script: &Path,
    seconds: f64,
    connections: usize,
) -> anyhow::Result<Wrk> {
    wrk_threads(url, script, seconds, connections, 2)
}

/// wrk with `threads` threads (`script`: a Lua request generator).
pub(crate) fn wrk_threads(
    url: &str,
    script: &Path,
    seconds: f64,
    connections: usize,
    threads: usize,
) -> anyhow::Result<Wrk> {
    let out = Command::new("wrk")
        .args([
            &format!("-t{threads}"),
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--timeout",
            "10s",
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .context("running wrk (apt package wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    let field = |prefix: &str| -> Option<&str> {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
    };
    let ms = |v: &str| -> f64 {
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
        let n: f64 = num.parse().unwrap_or(f64::NAN);
        match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            "m" => n * 60_000.0,
            _ => f64::NAN,
        }
    };
    let errors = text
        .lines()
        .find(|l| l.contains("Non-2xx or 3xx responses:"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
        + text
            .lines()
            .find(|l| l.contains("Socket errors:"))
            .map(|l| {
                l.split(',')
                    .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
    Ok(Wrk {
        rps: field("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .context("wrk printed no Requests/sec")?,
        p50_ms: field("50%").map(ms).unwrap_or(f64::NAN),
        p99_ms: field("99%").map(ms).unwrap_or(f64::NAN),
        errors,
    })
}

/// Writes a wrk Lua script that POSTs `bodies` in turn (each thread from its own offset)
/// with JSON and `headers`.
pub(crate) fn post_script(
    path: &Path,
    bodies: &[String],
    headers: &[(&str, &str)],
) -> anyhow::Result<std::path::PathBuf> {
    let mut lua = String::from("local bodies = {\n");
    for b in bodies {
        lua.push_str(&serde_json::to_string(b)?);
        lua.push_str(",\n");
    }
    let mut h = String::from("[\"Content-Type\"] = \"application/json\"");
    for (k, v) in headers {
        h.push_str(&format!(
            ", [{}] = {}",
            serde_json::to_string(k)?,
            serde_json::to_string(v)?
        ));
    }
    lua.push_str(&format!(
        "}}\nlocal threads = 0\nfunction setup(thread)\n  thread:set(\"offset\", threads * 131)\n  \
         threads = threads + 1\nend\nlocal i = 0\nlocal headers = {{{h}}}\n\
         request = function()\n  i = i + 1\n  \
         return wrk.format(\"POST\", nil, headers, bodies[((i + (offset or 0)) % #bodies) + 1])\nend\n"
    ));
    std::fs::write(path, lua)?;
    Ok(path.to_owned())
}

/// The ceiling: strata's middleware around a handler that reads the request body (as any
/// handler of a POST must, without parsing it) and returns `answer`, precomputed (with
/// `Content-Encoding: gzip` when `gzip`: the body is then the precompressed answer).
pub(crate) fn ceiling_router(answer: Bytes, gzip: bool) -> axum::Router {
    ceiling_router_at("/v1/search", answer, gzip)
}

/// [`ceiling_router`] answering POSTs at `path`.
pub(crate) fn ceiling_router_at(path: &str, answer: Bytes, gzip: bool) -> axum::Router {
    use axum::http::{HeaderValue, header};
    strata_server::with_middleware(
        axum::Router::new().route(
            path,
            axum::routing::post(move |_body: Bytes| {
                let b = answer.clone();
                async move {
                    let mut r = axum::response::Response::new(axum::body::Body::from(b));
                    let h = r.headers_mut();
                    h.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    if gzip {
                        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
                    }
                    r
                }
            }),
        ),
        strata_server::metrics::Metrics::new(None).layer(),
        ServerSettings::default().compress_min_bytes,
    )
}

/// Serves `router` on a free loopback port; the URL of its `/v1/search`.
pub(crate) async fn serve_router(
    router: axum::Router,
) -> anyhow::Result<(String, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/search", listener.local_addr()?);
    Ok((
        url,
        tokio::spawn(async move { axum::serve(listener, router).await }),
    ))
}

/// A router answering `POST /v1/search` with `answer` after reading the request body, with
/// no middleware at all: what a new user's first axum server is.
pub(crate) fn bare_router(answer: Bytes) -> axum::Router {
    axum::Router::new().route(
        "/v1/search",
        axum::routing::post(move |_body: Bytes| {
            let b = answer.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], b) }
        }),
    )
}
