//! The `strata` binary: parses configuration and runs one subcommand. Everything it does is
//! a call into `strata-server` or `strata-engine`.

mod config;
mod extract;
mod progress;

/// mimalloc: glibc malloc's consolidation and cross-thread frees were a measurable share of
/// a cache hit's cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use strata_engine::{Engine, IngestOutcome, TenantId, UploadMeta};
use strata_server::App;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, LogFormat, Overrides};

/// strata: a self-hostable retrieval backend for AI applications.
///
/// With no configuration, everything lives under ./strata-data (SQLite + files) and the
/// server listens on 127.0.0.1:7733. Settings come from flags, then STRATA_* environment
/// variables, then ./strata.toml (or --config), then defaults.
#[derive(Parser)]
#[command(name = "strata", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    overrides: Overrides,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server and the background ingestion workers until SIGINT/SIGTERM.
    Serve,
    /// Add files (or every .txt/.md/.html/.pdf under a directory) to the library and process
    /// them now, without a server. Progress is drawn on stderr (a bar on a terminal, a line
    /// every 5 s otherwise: files, chunks embedded, rate, time left) and the run ends with
    /// counts and every failed file with its reason (exit status 1 if any failed or was
    /// rejected). Only warnings are logged unless --log / STRATA_LOG asks for more.
    Ingest {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Tag every ingested document (repeatable).
        #[arg(long = "tag", short = 't')]
        tags: Vec<String>,
        /// Only queue the documents; a running server's workers will process them.
        #[arg(long)]
        no_wait: bool,
    },
    /// Search the library without a server (hybrid by default) and print the best chunks.
    Search(SearchArgs),
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Print the text strata reads from a file, as ingestion sees it: blocks separated by
    /// blank lines (headings marked `# `), or JSON with --json. PDFs are read by poppler's
    /// pdftotext when it is installed (see --pdf-reader). The server runs this command in a
    /// child process for each file it ingests; exit status 1 with the reason on stderr when
    /// the file yields no text.
    Extract {
        /// The file, or - to read stdin.
        file: PathBuf,
        /// Its type (txt, md, html, pdf or a MIME type) when neither its name nor its bytes
        /// tell.
        #[arg(long)]
        media: Option<String>,
        /// Print the blocks as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a bearer token signed with the configured --jwt-secret (HS256), for a tenant.
    Token {
        /// The tenant the token acts for (its `sub`).
        #[arg(long)]
        sub: String,
        /// Give the token the admin role (`role: admin`); otherwise `user`.
        #[arg(long)]
        admin: bool,
        /// How long the token is valid: 90s, 30m, 12h, 7d [default: 1h].
        #[arg(long, default_value = "1h", value_parser = config::parse_duration)]
        ttl: std::time::Duration,
    },
}

fn main() -> std::process::ExitCode {
    // Before anything allocates much: resident memory must be what the allocators use (see
    // `strata_engine::heap`).
    strata_engine::heap::disable_huge_pages();
    let cli = Cli::parse();
    // Extraction needs no configuration: it is what the server's extraction children run.
    if let Command::Extract { file, media, json } = &cli.command {
        return match extract::run(file, media.as_deref(), *json, cli.overrides.jobs.pdf_reader) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("strata: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let config = match Config::resolve(&cli.overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("strata: configuration error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    // A waiting ingest draws its own progress: per-job INFO lines would break the bar, so
    // it logs warnings only unless --log / STRATA_LOG asks for more.
    let quiet = matches!(cli.command, Command::Ingest { no_wait: false, .. })
        && cli.overrides.server.log.is_none();
    init_logging(&config, quiet.then_some("warn"));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strata: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config, default_level: Option<&str>) {
    let mut filter = tracing_subscriber::EnvFilter::try_new(default_level.unwrap_or(&config.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // qdrant-edge warns on every open that its server's start-up steps never ran (a lazy
    // memory-map check, global feature flags) and goes on with its defaults, which is what
    // an embedded shard wants: only its errors show.
    for quiet in [
        "qdrant_edge::common::mmap::ops=error",
        "qdrant_edge::common::flags=error",
    ] {
        if let Ok(quiet) = quiet.parse() {
            filter = filter.add_directive(quiet);
        }
    }
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Slow statements are kept for the database stats whatever the log filter says.
    let registry = tracing_subscriber::registry().with(
        config
            .engine
            .slow_log
            .layer()
            .with_filter(strata_engine::slowlog::filter()),
    );
    // Lines written while serving a request carry its id, method and route (see
    // strata_server::logging); the formats set ANSI themselves, since the line is written to
    // a buffer first.
    use strata_server::logging::WithRequest;
    use tracing_subscriber::fmt::format;
    match config.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(format::JsonFields::new())
                    .event_format(WithRequest::json(format().json()))
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(WithRequest::text(format().with_ansi(ansi)))
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .init(),
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Token { sub, admin, ttl } => {
            let tenant = TenantId::parse(sub.trim()).map_err(|e| anyhow::anyhow!("--sub: {e}"))?;
            let role = if admin {
                strata_server::caller::Role::Admin
            } else {
                strata_server::caller::Role::User
            };
            println!(
                "{}",
                strata_server::auth::mint(&config.auth, &tenant, role, ttl)?
            );
            Ok(())
        }
        Command::Serve => serve(config).await,
        Command::Migrate => {
            // Migrating embeds nothing: the model's weights are not loaded.
            let mut settings = config.engine;
            settings.load_model = strata_engine::ModelLoad::OnFirstUse;
            let engine = Engine::open(settings).await.context("opening the store")?;
            engine.close().await;
            println!("database schema is up to date");
            Ok(())
        }
        Command::Ingest {
            paths,
            tags,
            no_wait,
        } => ingest(config, paths, tags, no_wait).await,
        Command::Search(args) => search(config, args).await,
        Command::Extract { .. } => unreachable!("handled before the configuration is read"),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    info!(
        "starting strata {} with:\n{}",
        env!("CARGO_PKG_VERSION"),
        config.describe()
    );
    config.check_exposure()?;
    match &config.server.identity {
        strata_server::caller::Identity::Header { name, .. } => info!(
            header = %name,
            "tenants come from a request header: only an authenticating proxy may reach this server"
        ),
        strata_server::caller::Identity::Token(auth) => {
            info!(accepts = %auth.describe(), "callers authenticate with bearer credentials")
        }
        strata_server::caller::Identity::Local => warn!(
            "NO AUTHENTICATION: every request acts as the single local tenant with the admin role. \
             Set --jwt-secret, --jwt-keys or --admin-key before anyone else can reach {}",
            config.server.listen
        ),
    }
    let engine = Engine::open(config.engine)
        .await
        .context("opening the store")?;
    let app = App::build(engine, config.server.clone())
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(wait_for_signal(shutdown.clone()));
    let result = app.run(shutdown.clone()).await;
    shutdown.cancel();
    let _ = signals.await;
    result.context("server failed")
}

async fn wait_for_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => info!("SIGINT received; shutting down"),
        () = term => info!("SIGTERM received; shutting down"),
        () = shutdown.cancelled() => {}
    }
    shutdown.cancel();
}

async fn ingest(
    config: Config,
    paths: Vec<PathBuf>,
    tags: Vec<String>,
    no_wait: bool,
) -> anyhow::Result<()> {
    let engine = Engine::open(config.engine)
        .await
        .context("opening the store")?;
    let owner = TenantId::local();
    let mut files = Vec::new();
    for p in &paths {
        collect_files(p, &mut files).with_context(|| format!("reading {}", p.display()))?;
    }
    let (mut duplicates, mut rejected) = (0, 0);
    let mut queued = std::collections::HashMap::new();
    for file in &files {
        match ingest_file(&engine, &owner, file, &tags).await {
            Ok(IngestOutcome::Created(d)) => {
                if let Some(job) = d.job_id {
                    queued.insert(job, file.display().to_string());
                }
            }
            Ok(IngestOutcome::Duplicate(_)) => duplicates += 1,
            Err(e) => {
                rejected += 1;
                eprintln!("rejected   {}: {e}", file.display());
            }
        }
    }
    let created = queued.len();
    let mut failed = Vec::new();
    if !no_wait && created > 0 {
        // The bar follows this run's jobs while this task runs them.
        let stop = CancellationToken::new();
        let follower = tokio::spawn(progress::follow(
            progress::Progress::new(queued),
            engine.jobs().subscribe_jobs(),
            stop.clone(),
        ));
        let drained = engine.jobs().drain_jobs().await;
        stop.cancel();
        let progress = follower.await.context("the progress display")?;
        drained.context("processing jobs")?;
        failed = progress.failures();
    }
    let waited = if no_wait {
        "queued for a server's workers"
    } else {
        "processed"
    };
    println!(
        "{created} new ({waited}), {duplicates} already present, {rejected} rejected, {} failed",
        failed.len()
    );
    for f in &failed {
        println!("failed     {}: {}", f.file, f.error);
    }
    engine.close().await;
    if rejected + failed.len() > 0 {
        anyhow::bail!(
            "{} file(s) were rejected or failed",
            rejected + failed.len()
        );
    }
    Ok(())
}

/// `strata search`.
#[derive(Debug, clap::Args)]
struct SearchArgs {
    /// What to look for.
    query: String,
    /// How many hits (1-100).
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// Only documents carrying this tag (repeatable: any of them).
    #[arg(long = "tag", short = 't')]
    tags: Vec<String>,
    /// hybrid: both rankings fused (default); semantic: nearest embeddings; lexical: BM25
    /// over titles and text, without the model.
    #[arg(long)]
    mode: Option<strata_engine::search::SearchMode>,
    /// Hybrid mode: weight of the semantic ranking, 0 (lexical only) to 1 (semantic only)
    /// [default: 0.5].
    #[arg(long)]
    semantic_ratio: Option<f64>,
    /// Hybrid mode: blend (normalised scores, default) or rrf (reciprocal rank fusion).
    #[arg(long)]
    fusion: Option<strata_engine::search::Fusion>,
    /// Drop hits whose cosine similarity is below this (not in lexical mode).
    #[arg(long)]
    min_score: Option<f64>,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

async fn search(config: Config, args: SearchArgs) -> anyhow::Result<()> {
    let engine = Engine::open(config.engine)
        .await
        .context("opening the store")?;
    let req = strata_engine::search::SearchRequest {
        query: args.query,
        k: Some(args.k),
        filter: strata_engine::search::SearchFilter {
            tags: args.tags,
            document_ids: Vec::new(),
        },
        min_score: args.min_score,
        stream: false,
        mode: args.mode,
        semantic_ratio: args.semantic_ratio,
        fusion: args.fusion,
    };
    let results = engine.retrieval().search(&TenantId::local(), req).await;
    engine.close().await;
    let results = results?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(());
    }
    if results.hits.is_empty() {
        println!("no matches");
    }
    for (i, hit) in results.hits.iter().enumerate() {
        let text: String = hit.text.chars().take(300).collect();
        // BM25 can be tiny (a word in half of a small library has an idf near 0).
        let shown = |v: Option<f32>| match v {
            None => "-".to_owned(),
            Some(s) if s != 0.0 && s.abs() < 0.001 => format!("{s:.1e}"),
            Some(s) => format!("{s:.3}"),
        };
        println!(
            "{:>2}. {}  {} (chunk {})  [semantic {}, lexical {}]\n    {}\n",
            i + 1,
            shown(Some(hit.score)),
            hit.title,
            hit.chunk_ordinal,
            shown(hit.semantic_score),
            shown(hit.lexical_score),
            text.replace('\n', " ")
        );
    }
    Ok(())
}

async fn ingest_file(
    engine: &Engine,
    owner: &TenantId,
    path: &Path,
    tags: &[String],
) -> strata_engine::Result<IngestOutcome> {
    use tokio::io::AsyncReadExt;
    let mut f = tokio::fs::File::open(path).await?;
    let mut w = engine.documents().begin_upload().await?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        w.write(&buf[..n]).await?;
    }
    let staged = w.finish().await?;
    let meta = UploadMeta {
        filename: path.file_name().map(|n| n.to_string_lossy().into_owned()),
        tags: tags.to_vec(),
        ..UploadMeta::default()
    };
    engine.documents().ingest(owner, staged, meta).await
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        out.push(path.to_owned());
        return Ok(());
    }
    let mut entries: Vec<_> = std::fs::read_dir(path)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, out)?;
        } else if strata_engine::model::MediaType::from_filename(&p.to_string_lossy()).is_some() {
            out.push(p);
        }
    }
    Ok(())
}
