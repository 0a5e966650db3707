//! strata's benchmark harness. Each subcommand measures one thing and prints one JSON
//! object on stdout; `bench/run` alternates them over rounds and prints medians and ratios.
//!
//! Every load loop here is bounded in count and time, and talks only to loopback.

mod ann;
mod cache;
mod churn;
mod cli;
mod corpus;
mod gateway;
mod indexes;
mod l1;
mod l1_memory;
mod lexical;
mod memories;
mod mixed;
mod model;
mod overload;
mod scale;
mod search;
mod semantic;
mod soak;

/// mimalloc: glibc malloc's consolidation and cross-thread frees were a measurable share of
/// a cache hit's cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;

use anyhow::bail;
use clap::Parser;
use strata_embed::ModelFiles;

use ann::{ann, dataset, read_f32};
use cli::{Cli, Cmd, Load};
use corpus::{corpus, read_lines};
use l1::{Zipf, l1};
use model::model;
use search::{SearchRun, ingest, search, status_mb};

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
        Cmd::L1Memory {
            weigher,
            budget_mib,
            seconds,
            phase,
        } => l1_memory::run(&weigher, budget_mib << 20, seconds, phase.as_deref()),
        Cmd::Index {
            engine,
            data,
            ef,
            queries,
        } => indexes::run(&engine, &data, &ef, queries),
        Cmd::IndexChurn {
            index,
            work,
            corpus,
            live,
            ops,
            every,
            save_every,
        } => churn::run(
            &index,
            &work,
            corpus.as_deref(),
            live,
            ops,
            every,
            save_every,
        ),
        Cmd::Lexical {
            engine,
            scifact,
            work,
            distractors,
            distractor_count,
        } => lexical::run(
            &engine,
            &scifact,
            &work,
            distractors.as_deref().map(|d| (d, distractor_count)),
        ),
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
            clients,
            load:
                Load {
                    rounds,
                    seconds,
                    connections,
                },
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
            sentences,
            seed_python,
            seed_database_url,
            seed_workers,
            scale,
            strata_bin,
            load:
                Load {
                    rounds,
                    seconds,
                    connections,
                },
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
        Cmd::Ceiling { listen, body, gzip } => {
            let router = cache::ceiling_router(std::fs::read(&body)?.into(), gzip);
            let listener = tokio::net::TcpListener::bind(listen).await?;
            eprintln!("ceiling on http://{listen}/v1/search");
            axum::serve(listener, router).await?;
            Ok(serde_json::Value::Null)
        }
        Cmd::Mixed {
            corpus,
            data,
            postgres,
            redis,
            sentences,
            queries,
            tenants,
            write_percent,
            load:
                Load {
                    rounds,
                    seconds,
                    connections,
                },
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
            l1,
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
                l1.as_deref(),
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
            rates,
            fanout,
            streams,
            load:
                Load {
                    rounds,
                    seconds,
                    connections,
                },
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
