//! A mixed Zipf(1.0) workload of reads and writes over several tenants, through HTTP, on
//! the embedded default and on PostgreSQL + Redis, alternated over rounds.
//!
//! Every request picks a tenant uniformly, then one of:
//! - a write (`write_percent` of requests): `PATCH /v1/documents/{id}` with a new tag set,
//!   the document drawn Zipf(1.0) from the tenant's documents. Each write bumps the tenant's
//!   cache generation, so everything cached for that tenant is recomputed on its next read;
//! - a document read (10%): `GET /v1/documents/{id}`, the document drawn Zipf(1.0);
//! - a list page (5%): `GET /v1/documents?limit=20`;
//! - a search (the rest): `POST /v1/search`, the query drawn Zipf(1.0) from `queries`
//!   distinct queries.
//!
//! Query embeddings are computed once before measuring (they are shared by every tenant and
//! never invalidated by writes); what the run measures is the cache under invalidation
//! pressure plus the source behind it: ANN search and row fetches on each miss.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use strata_engine::RedisSettings;

use crate::cache::{Strata, start_strata, wrk_threads};
use crate::read_lines;

/// The header that names the tenant (strata's proxy-header tenant mode).
const TENANT_HEADER: &str = "x-tenant";

fn tenant_client(tenant: &str) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(TENANT_HEADER, tenant.parse()?);
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .build()?)
}

/// Search-result counters of one server: (L1 hits, L2 hits, coalesced, misses) summed over
/// the tenant-scoped kinds.
async fn counters(client: &reqwest::Client, base: &str) -> anyhow::Result<[u64; 4]> {
    let stats: Value = client
        .get(format!("{base}/v1/performance/cache/stats"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut sum = [0u64; 4];
    for k in stats["cache"]["kinds"].as_array().into_iter().flatten() {
        if k["kind"] == "embedding" {
            continue;
        }
        for (i, f) in ["hits_l1", "hits_l2", "joined", "misses"]
            .iter()
            .enumerate()
        {
            sum[i] += k[f].as_u64().unwrap_or(0);
        }
    }
    Ok(sum)
}

/// The wrk script: the request mix above, with `math.random` seeded per thread.
fn script(
    path: &Path,
    tenants: &[String],
    documents: &[Vec<String>],
    bodies: &[String],
    write_percent: f64,
) -> anyhow::Result<()> {
    let list = |items: &mut dyn Iterator<Item = String>| -> anyhow::Result<String> {
        let mut s = String::from("{");
        for i in items {
            s.push_str(&serde_json::to_string(&i)?);
            s.push(',');
        }
        s.push('}');
        Ok(s)
    };
    let mut lua = format!(
        "local tenants = {}\nlocal bodies = {}\nlocal docs = {{\n",
        list(&mut tenants.iter().cloned())?,
        list(&mut bodies.iter().cloned())?
    );
    for d in documents {
        lua.push_str(&list(&mut d.iter().cloned())?);
        lua.push_str(",\n");
    }
    lua.push_str("}\n");
    lua.push_str(&format!(
        "local write = {w}\nlocal header = \"{TENANT_HEADER}\"\n",
        w = write_percent / 100.0
    ));
    lua.push_str(
        r#"-- Zipf(1.0) over n ranks: the inverse CDF by binary search.
local function cdf(n)
  local c, s = {}, 0
  for k = 1, n do s = s + 1 / k; c[k] = s end
  for k = 1, n do c[k] = c[k] / s end
  return c
end
local function zipf(c)
  local u, lo, hi = math.random(), 1, #c
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if c[mid] < u then lo = mid + 1 else hi = mid end
  end
  return lo
end
local qcdf = cdf(#bodies)
local dcdf = {}
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("seed", threads * 7919)
end
function init(args)
  math.randomseed(seed or 1)
end
local n = 0
request = function()
  n = n + 1
  local t = math.random(#tenants)
  local h = {["Content-Type"] = "application/json", [header] = tenants[t]}
  local d = docs[t]
  if not dcdf[#d] then dcdf[#d] = cdf(#d) end
  local r = math.random()
  if r < write then
    local id = d[zipf(dcdf[#d])]
    return wrk.format("PATCH", "/v1/documents/" .. id, h,
      '{"tags":["mixed","w' .. (n % 97) .. '"]}')
  elseif r < write + 0.10 then
    return wrk.format("GET", "/v1/documents/" .. d[zipf(dcdf[#d])], h, nil)
  elseif r < write + 0.15 then
    return wrk.format("GET", "/v1/documents?limit=20", h, nil)
  end
  return wrk.format("POST", "/v1/search", h, bodies[zipf(qcdf)])
end
"#,
    );
    std::fs::write(path, lua)?;
    Ok(())
}

/// One contender: a server with every tenant's documents ingested, and their ids.
async fn prepare(
    model_dir: &Path,
    data: &Path,
    texts: &[String],
    tenants: &[String],
    bodies: &[String],
    configure: impl FnOnce(&mut strata_engine::EngineSettings),
) -> anyhow::Result<(Strata, Vec<Vec<String>>)> {
    let server = start_strata(model_dir, data, &[], Some(TENANT_HEADER), configure).await?;
    let mut ids = Vec::new();
    for t in tenants {
        let client = tenant_client(t)?;
        crate::ingest(&client, &server.base, texts, 0, Duration::from_secs(1800)).await?;
        let page: Value = client
            .get(format!("{}/v1/documents?limit=100&fields=id", server.base))
            .send()
            .await?
            .json()
            .await?;
        let docs: Vec<String> = page["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["id"].as_str().map(str::to_owned))
            .collect();
        if docs.is_empty() {
            bail!("tenant {t} has no documents after ingestion");
        }
        ids.push(docs);
    }
    // Every distinct query embedded once (embeddings are global: one tenant suffices).
    let client = tenant_client(&tenants[0])?;
    for b in bodies {
        let r = client
            .post(format!("{}/v1/search", server.base))
            .header("content-type", "application/json")
            .body(b.clone())
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("warm-up search answered {}", r.status());
        }
    }
    Ok((server, ids))
}

/// The mixed-workload benchmark.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    model_dir: &Path,
    corpus: &Path,
    data: &Path,
    postgres: Option<String>,
    redis: Option<String>,
    sentences: usize,
    queries: usize,
    tenants: usize,
    write_percent: f64,
    rounds: usize,
    seconds: f64,
    connections: usize,
) -> anyhow::Result<Value> {
    if !(0.0..=85.0).contains(&write_percent) {
        bail!("--write-percent must be between 0 and 85 (15% of requests are document reads)");
    }
    let all = read_lines(corpus, 0, sentences + queries)?;
    let (texts, query_text) = all.split_at(sentences);
    let bodies: Vec<String> = query_text
        .iter()
        .map(|q| json!({"query": q, "k": 10}).to_string())
        .collect();
    let tenant_names: Vec<String> = (0..tenants).map(|t| format!("bench-tenant-{t}")).collect();
    std::fs::create_dir_all(data)?;

    let mut contenders: Vec<(&str, Strata, Vec<Vec<String>>)> = Vec::new();
    let (s, ids) = prepare(
        model_dir,
        &data.join("embedded"),
        texts,
        &tenant_names,
        &bodies,
        |_| {},
    )
    .await?;
    contenders.push(("embedded", s, ids));
    let mut database = None;
    if let (Some(server), Some(redis)) = (&postgres, &redis) {
        let db = "strata_bench_mixed";
        let url = crate::scale::fresh_database(server, db)?;
        let redis = redis.clone();
        let (s, ids) = prepare(
            model_dir,
            &data.join("postgres"),
            texts,
            &tenant_names,
            &bodies,
            move |e| {
                e.database_url = Some(url.into());
                e.cache.redis = Some(RedisSettings::new(redis));
            },
        )
        .await
        .context("strata over PostgreSQL + Redis")?;
        contenders.push(("postgres_redis", s, ids));
        database = Some((server.clone(), db));
    }

    // The statistics endpoint, like every endpoint in tenant-header mode, names a tenant.
    let admin = tenant_client(&tenant_names[0])?;
    let mut runs = Vec::new();
    for round in 1..=rounds {
        for (name, server, ids) in &contenders {
            let path = data.join(format!("mixed-{name}.lua"));
            script(&path, &tenant_names, ids, &bodies, write_percent)?;
            let before = counters(&admin, &server.base).await?;
            let url = server.base.clone();
            let w = tokio::task::spawn_blocking(move || {
                wrk_threads(&url, &path, seconds, connections, 2)
            })
            .await??;
            let after = counters(&admin, &server.base).await?;
            let d: Vec<u64> = (0..4).map(|i| after[i] - before[i]).collect();
            let lookups = d.iter().sum::<u64>().max(1) as f64;
            runs.push(json!({
                "round": round, "contender": name, "requests_per_s": w.rps,
                "p50_ms": w.p50_ms, "p99_ms": w.p99_ms, "errors": w.errors,
                "hits_l1": d[0], "hits_l2": d[1], "coalesced": d[2], "misses": d[3],
                "hit_ratio": (d[0] + d[1] + d[2]) as f64 / lookups,
            }));
            eprintln!(
                "round {round}, {name}: {}",
                runs.last().unwrap_or(&Value::Null)
            );
        }
    }
    let documents = contenders
        .first()
        .map(|c| c.2.iter().map(Vec::len).sum::<usize>())
        .unwrap_or(0);
    for (_, server, _) in contenders {
        server.stop().await?;
    }
    if let Some((server, db)) = database {
        crate::scale::psql(&server, &format!("DROP DATABASE IF EXISTS {db}")).ok();
    }
    Ok(json!({
        "tenants": tenants,
        "documents": documents,
        "queries": queries,
        "write_percent": write_percent,
        "connections": connections,
        "seconds": seconds,
        "runs": runs,
    }))
}
