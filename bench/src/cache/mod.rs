//! Cache benchmarks: cached search over HTTP against a ceiling server (same middleware, a
//! precomputed body of the same size, nothing else), L2-hit throughput, and the tiers' hit
//! ratio on a Zipf(1.0) workload.
//!
//! `serve` starts the contenders, `seed` the Python stack, `hit_path` measures a hit without
//! sockets, `zipf` the tiers' hit ratio.

mod hit_path;
mod seed;
mod serve;
mod zipf;

pub use hit_path::hit_path;
pub use seed::Seed;
pub(crate) use serve::*;
pub use zipf::zipf;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use serde_json::json;
use strata_engine::RedisSettings;
use strata_server::ServerSettings;

use crate::read_lines;

/// The corpus's first `sentences` lines (the documents) followed by 256 more, and a search
/// body for each of those 256 distinct queries: cycled by every connection, they keep the L2
/// contender reading Redis on (nearly) every request instead of joining one in-flight read.
pub(crate) fn search_bodies(
    corpus: &Path,
    sentences: usize,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    const QUERIES: usize = 256;
    let texts = read_lines(corpus, 0, sentences + QUERIES)?;
    let bodies = texts[sentences..]
        .iter()
        .map(|q| json!({"query": q, "k": 10}).to_string())
        .collect();
    Ok((texts, bodies))
}

/// What [`http`] runs.
pub struct HttpRun {
    /// Alternation rounds.
    pub rounds: usize,
    /// Seconds per wrk run.
    pub seconds: f64,
    /// Concurrent keep-alive connections.
    pub connections: usize,
    /// Sentences ingested into each server.
    pub sentences: usize,
    /// Connection counts of the scaling runs.
    pub scale: Vec<usize>,
    /// The `strata` binary: when given, it is started as a new user starts it (`strata
    /// serve`, default settings and logging) and its L1 hit is measured too.
    pub strata_bin: Option<std::path::PathBuf>,
}

/// Cached search over HTTP: the ceiling, strata serving from L1, strata serving from L2
/// (an L1 too small to hold the answer, Redis holding it), a bare axum server, the shipped
/// binary, each with a k=10 answer and some with a small (k=1) one, alternated over rounds.
pub async fn http(
    model_dir: &Path,
    corpus: &Path,
    data: &Path,
    redis: Option<String>,
    run: HttpRun,
    seed: Option<Seed>,
) -> anyhow::Result<serde_json::Value> {
    let HttpRun {
        rounds,
        seconds,
        connections,
        sentences,
        scale,
        strata_bin,
    } = run;
    let (texts, bodies) = search_bodies(corpus, sentences)?;
    let (docs, queries) = texts.split_at(sentences);
    let l1 = start_strata(model_dir, &data.join("l1"), docs, None, |_| {}).await?;
    let l2 = match &redis {
        Some(url) => Some(
            start_strata(model_dir, &data.join("l2"), docs, None, |e| {
                e.cache.redis = Some(RedisSettings::new(url.clone()));
                // Too small for any answer: every read goes to Redis.
                e.cache.l1_bytes = 1024;
            })
            .await?,
        ),
        None => None,
    };
    // The edge contender: JWT authentication, a per-tenant rate limit (far above what two
    // cores can serve, so it is checked on every request and never refuses), compression.
    let secret = "bench-secret-bench-secret-bench-secret";
    let auth = strata_server::auth::AuthSettings {
        secret: Some(strata_server::auth::Secret::new(secret)),
        ..Default::default()
    };
    let token = strata_server::auth::mint(
        &auth,
        &strata_engine::TenantId::parse("bench")?,
        strata_server::caller::Role::User,
        Duration::from_secs(24 * 3600),
    )?;
    let bearer = format!("Bearer {token}");
    let mut auth_headers = reqwest::header::HeaderMap::new();
    auth_headers.insert(reqwest::header::AUTHORIZATION, bearer.parse()?);
    let edge_client = reqwest::Client::builder()
        .default_headers(auth_headers)
        .build()?;
    let authenticator = Arc::new(strata_server::auth::Authenticator::new(&auth)?);
    let edge = start_custom(
        model_dir,
        &data.join("edge"),
        docs,
        |srv| {
            srv.identity = strata_server::caller::Identity::Token(authenticator);
            srv.admission.rate = Some(strata_server::admission::RateLimit {
                per_second: 100_000_000,
                burst: 100_000_000,
            });
        },
        |_| {},
        &edge_client,
    )
    .await?;
    let client = reqwest::Client::new();
    let post = |base: &str, body: &str| {
        client
            .post(format!("{base}/v1/search"))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
    };
    // Fill the caches (each query computed once), then check what a repeat is served from.
    let mut answer = Bytes::new();
    let mut answers = Vec::new();
    let mut answer_gz = Bytes::new();
    let (mut identity_bytes, mut gzip_bytes) = (0usize, 0usize);
    for (i, b) in bodies.iter().enumerate() {
        let a = post(&l1.base, b).await?.bytes().await?;
        // The same answer as a gzip-accepting client gets it: the cached gzip form.
        let gz = client
            .post(format!("{}/v1/search", l1.base))
            .header("content-type", "application/json")
            .header("accept-encoding", "gzip")
            .body(b.clone())
            .send()
            .await?;
        let encoded = gz.headers().get("content-encoding").is_some();
        let gz = gz.bytes().await?;
        identity_bytes += a.len();
        gzip_bytes += if encoded { gz.len() } else { a.len() };
        answers.push(json!({"query": queries[i], "k": 10, "body": String::from_utf8_lossy(&a)}));
        if i == 0 {
            answer = a;
            if !encoded {
                bail!("a gzip-accepting client got an uncompressed answer");
            }
            answer_gz = gz;
        }
        if let Some(s) = &l2 {
            post(&s.base, b).await?;
        }
        edge_client
            .post(format!("{}/v1/search", edge.base))
            .header("content-type", "application/json")
            .body(b.clone())
            .send()
            .await?;
    }
    let x_cache = |r: &reqwest::Response| {
        r.headers()
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    if let Some(s) = &l2 {
        let x = x_cache(&post(&s.base, &bodies[1]).await?);
        if x != "HIT-L2" {
            bail!("the L2 contender answered {x:?}, not HIT-L2");
        }
    }
    let x = x_cache(&post(&l1.base, &bodies[1]).await?);
    if x != "HIT-L1" {
        bail!("the L1 contender answered {x:?}, not HIT-L1");
    }
    let edge_check = edge_client
        .post(format!("{}/v1/search", edge.base))
        .header("content-type", "application/json")
        .header("accept-encoding", "gzip")
        .body(bodies[1].clone())
        .send()
        .await?;
    let (x, enc, limited) = (
        x_cache(&edge_check),
        edge_check.headers().get("content-encoding").cloned(),
        edge_check.headers().get("ratelimit").is_some(),
    );
    if x != "HIT-L1" || enc.is_none() || !limited {
        bail!("the edge contender answered {x:?}, encoding {enc:?}, rate limited {limited}");
    }

    // Small answers (k=1) from the L1 contender: the size the "new user" compared.
    let small_bodies: Vec<String> = queries
        .iter()
        .map(|q| json!({"query": q, "k": 1}).to_string())
        .collect();
    let mut small_answer = Bytes::new();
    for b in &small_bodies {
        let a = post(&l1.base, b).await?.bytes().await?;
        if small_answer.is_empty() {
            small_answer = a;
        }
    }
    // The shipped binary, started as a new user starts it: `strata serve` with the default
    // settings and logging (no auth, so one local tenant; rate limits and compression as
    // they ship), the same documents, every answer cached once.
    let binary = match &strata_bin {
        Some(bin) => {
            let model = model_dir.to_string_lossy();
            let dir = data.join("binary");
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            let inst = crate::scale::launch(bin, &dir, &["--model-dir", &model]).await?;
            crate::ingest(&client, &inst.base, docs, 0, Duration::from_secs(600)).await?;
            for b in bodies.iter().chain(&small_bodies) {
                post(&inst.base, b).await?.bytes().await?;
            }
            let x = x_cache(&post(&inst.base, &small_bodies[1]).await?);
            if x != "HIT-L1" {
                bail!("the binary answered {x:?}, not HIT-L1");
            }
            Some(inst)
        }
        None => None,
    };

    // The ceiling: the same middleware, a precomputed body of the same size.
    // It reads the request body, as any handler of a POST must (without parsing it); a
    // second ceiling that leaves the body unread is measured too, for reference.
    let precomputed = answer.clone();
    let unread = strata_server::with_middleware(
        axum::Router::new().route(
            "/v1/search",
            axum::routing::post(move || {
                let b = precomputed.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], b) }
            }),
        ),
        strata_server::metrics::Metrics::new(None).layer(),
        ServerSettings::default().compress_min_bytes,
    );
    let mut tasks = Vec::new();
    let mut url = |(u, t): (String, tokio::task::JoinHandle<std::io::Result<()>>)| {
        tasks.push(t);
        u
    };
    let ceiling_url = url(serve_router(ceiling_router(answer.clone(), false)).await?);
    let ceiling_small_url = url(serve_router(ceiling_router(small_answer.clone(), false)).await?);
    let unread_url = url(serve_router(unread).await?);
    // Bare axum: the same answers with no middleware at all; strata's L1 hit is reported
    // against it too (issue 19).
    let bare_url = url(serve_router(bare_router(answer.clone())).await?);
    let bare_small_url = url(serve_router(bare_router(small_answer.clone())).await?);
    let gz_ceiling_url = url(serve_router(ceiling_router(answer_gz.clone(), true)).await?);

    std::fs::create_dir_all(data)?;
    let script = post_script(&data.join("post.lua"), &bodies, &[])?;
    let small_script = post_script(&data.join("post-small.lua"), &small_bodies, &[])?;
    let gzip_script = post_script(
        &data.join("post-gzip.lua"),
        &bodies,
        &[("Accept-Encoding", "gzip")],
    )?;
    let edge_script = post_script(
        &data.join("post-edge.lua"),
        &bodies,
        &[("Accept-Encoding", "gzip"), ("Authorization", &bearer)],
    )?;
    let mut contenders = vec![
        ("ceiling", ceiling_url, script.clone()),
        (
            "strata_l1_hit",
            format!("{}/v1/search", l1.base),
            script.clone(),
        ),
    ];
    if let Some(s) = &l2 {
        contenders.push((
            "strata_l2_hit",
            format!("{}/v1/search", s.base),
            script.clone(),
        ));
    }
    contenders.push(("ceiling_body_unread", unread_url, script.clone()));
    contenders.push(("bare_axum", bare_url, script.clone()));
    contenders.push(("ceiling_small", ceiling_small_url, small_script.clone()));
    contenders.push((
        "strata_l1_hit_small",
        format!("{}/v1/search", l1.base),
        small_script.clone(),
    ));
    contenders.push(("bare_axum_small", bare_small_url, small_script.clone()));
    if let Some(b) = &binary {
        contenders.push((
            "strata_binary_l1_hit",
            format!("{}/v1/search", b.base),
            script.clone(),
        ));
        contenders.push((
            "strata_binary_l1_hit_small",
            format!("{}/v1/search", b.base),
            small_script.clone(),
        ));
    }
    contenders.push(("ceiling_gzip", gz_ceiling_url.clone(), gzip_script.clone()));
    contenders.push((
        "strata_l1_hit_gzip",
        format!("{}/v1/search", l1.base),
        gzip_script,
    ));
    // The gzip ceiling sent the edge contender's own requests (the bearer token too, which it
    // does not read): the same bytes in and the same work in the load generator, so the
    // ratio counts what strata does with them, as bench/count-hit counts it.
    contenders.push((
        "ceiling_gzip_edge_requests",
        gz_ceiling_url,
        edge_script.clone(),
    ));
    contenders.push((
        "strata_l1_hit_edge",
        format!("{}/v1/search", edge.base),
        edge_script,
    ));
    let mut seeds = Vec::new();
    if let Some(seed) = &seed {
        let file = data.join("seed-answers.json");
        std::fs::write(&file, serde_json::to_vec(&answers)?)?;
        seed.load(&file)?;
        for (name, fix) in [
            ("seed_stack_as_shipped", false),
            ("seed_stack_nodelay_fix", true),
        ] {
            let proc = seed.start(fix)?;
            // Every query once: the first read of each misses into PostgreSQL and fills Redis.
            let url = format!("http://127.0.0.1:{}", proc.port);
            for b in &bodies {
                let r = post(&url, b).await?;
                if !r.status().is_success() {
                    bail!("the seed stack answered {}", r.status());
                }
            }
            contenders.push((name, format!("{url}/v1/search"), script.clone()));
            seeds.push(proc);
        }
    }
    let mut runs = Vec::new();
    for round in 1..=rounds {
        for (name, url, script) in &contenders {
            let (script, url, name) = (script.clone(), url.clone(), *name);
            let w = tokio::task::spawn_blocking(move || wrk(&url, &script, seconds, connections))
                .await??;
            runs.push(json!({
                "round": round, "contender": name, "requests_per_s": w.rps,
                "p50_ms": w.p50_ms, "p99_ms": w.p99_ms, "errors": w.errors,
            }));
        }
    }
    // Connection scaling: the ceiling and strata's L1 hit at each count of keep-alive
    // connections (every one opened at the start and kept for the whole run).
    let mut scaling = Vec::new();
    for &c in &scale {
        for (name, url, script) in contenders.iter().take(2) {
            let (script, url, name) = (script.clone(), url.clone(), *name);
            let w = tokio::task::spawn_blocking(move || wrk(&url, &script, seconds, c)).await??;
            scaling.push(json!({
                "connections": c, "contender": name, "requests_per_s": w.rps,
                "p50_ms": w.p50_ms, "p99_ms": w.p99_ms, "errors": w.errors,
            }));
        }
    }
    // What each server actually served (proves the L2 contender was answered from Redis).
    let mut served = serde_json::Map::new();
    let mut servers = vec![("strata_l1_hit", &l1)];
    if let Some(s) = &l2 {
        servers.push(("strata_l2_hit", s));
    }
    for (name, s) in servers {
        let stats: serde_json::Value = client
            .get(format!("{}/v1/performance/cache/stats", s.base))
            .send()
            .await?
            .json()
            .await?;
        let kind = stats["cache"]["kinds"]
            .as_array()
            .and_then(|k| k.iter().find(|k| k["kind"] == "search_results"))
            .cloned()
            .unwrap_or_default();
        served.insert(
            name.to_owned(),
            json!({"hits_l1": kind["hits_l1"], "hits_l2": kind["hits_l2"],
                   "coalesced": kind["joined"], "misses": kind["misses"]}),
        );
    }
    for t in tasks {
        t.abort();
    }
    drop(seeds);
    drop(binary);
    l1.stop().await?;
    edge.stop().await?;
    if let Some(s) = l2 {
        s.stop().await?;
    }
    Ok(json!({
        "body_bytes": answer.len(),
        "body_bytes_gzip": answer_gz.len(),
        "small_body_bytes": small_answer.len(),
        "answers_identity_bytes": identity_bytes,
        "answers_gzip_bytes": gzip_bytes,
        "answers": bodies.len(),
        "connections": connections,
        "seconds": seconds,
        "runs": runs,
        "scaling": scaling,
        "served": served,
    }))
}
