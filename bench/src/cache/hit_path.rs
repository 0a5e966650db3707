//! An L1 hit in process, without sockets: strata's router against the ceiling's.

use std::path::Path;
use std::time::Instant;

use anyhow::bail;
use bytes::Bytes;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::search_bodies;
use super::serve::*;

/// The in-process cost of one cached search: strata's router answering from L1 against the
/// ceiling's router (the same middleware and a precomputed body of the same size), each
/// called through tower on one task, with no sockets, alternated over `rounds`. HTTP parsing
/// and the socket writes are the same for both and absent here, so the difference is
/// strata's own work on a hit, which the HTTP benchmark only shows diluted.
pub async fn hit_path(
    model_dir: &Path,
    corpus: &Path,
    data: &Path,
    sentences: usize,
    rounds: usize,
    requests: usize,
) -> anyhow::Result<serde_json::Value> {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    let (texts, bodies) = search_bodies(corpus, sentences)?;
    let docs = &texts[..sentences];
    let bodies: Vec<Bytes> = bodies.into_iter().map(Bytes::from).collect();
    // The served instance runs the ingestion workers; the router measured shares its engine.
    let served = start_strata(model_dir, data, docs, None, |_| {}).await?;
    let strata = strata_server::router(
        served.engine.clone(),
        &served.settings,
        CancellationToken::new(),
    );

    let call = |router: axum::Router, body: Bytes| async move {
        let req = Request::post("/v1/search")
            .header("content-type", "application/json")
            .body(Body::from(body))?;
        let resp = router.oneshot(req).await?;
        let x_cache = resp.headers().get("x-cache").cloned();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await?;
        anyhow::Ok((x_cache, bytes))
    };
    let mut answer = Bytes::new();
    for b in &bodies {
        answer = call(strata.clone(), b.clone()).await?.1;
    }
    let (x_cache, _) = call(strata.clone(), bodies[0].clone()).await?;
    if x_cache.as_ref().and_then(|v| v.to_str().ok()) != Some("HIT-L1") {
        bail!("strata answered {x_cache:?}, not HIT-L1");
    }
    let ceiling = ceiling_router(answer, false);

    // One task measures the path's cost; two (one per worker thread) add what the two
    // threads' shared writes cost each other, as under a load tool.
    let mut runs: Vec<(&str, usize, f64)> = Vec::new();
    for _ in 0..rounds {
        for tasks in [1, 2] {
            for (name, router) in [("ceiling", &ceiling), ("strata_l1_hit", &strata)] {
                let per_task = requests / tasks;
                let start = Instant::now();
                let mut handles = Vec::new();
                for t in 0..tasks {
                    let (router, bodies) = (router.clone(), bodies.clone());
                    handles.push(tokio::spawn(async move {
                        for i in 0..per_task {
                            let body = bodies[(i + t * 131) % bodies.len()].clone();
                            call(router.clone(), body).await?;
                        }
                        anyhow::Ok(())
                    }));
                }
                for h in handles {
                    h.await??;
                }
                let ns = start.elapsed().as_nanos() as f64 / (per_task * tasks) as f64;
                runs.push((name, tasks, ns));
            }
        }
    }
    let median = |name: &str, tasks: usize| {
        let mut v: Vec<f64> = runs
            .iter()
            .filter(|(n, t, _)| *n == name && *t == tasks)
            .map(|(_, _, ns)| *ns)
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (c, s) = (median("ceiling", 1), median("strata_l1_hit", 1));
    let (c2, s2) = (median("ceiling", 2), median("strata_l1_hit", 2));
    drop(strata);
    served.stop().await?;
    Ok(json!({
        "requests_per_round": requests,
        "rounds": runs.iter().map(|(n, t, ns)| json!({"contender": n, "tasks": t, "ns_per_request": ns})).collect::<Vec<_>>(),
        "ceiling_ns": c,
        "strata_l1_hit_ns": s,
        "strata_extra_ns": s - c,
        "two_tasks": {
            "ceiling_wall_ns": c2,
            "strata_l1_hit_wall_ns": s2,
            "ratio": c2 / s2,
        },
    }))
}
