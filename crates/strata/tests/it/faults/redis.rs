//! Redis killed with SIGKILL under a read/write load through two instances, then restarted.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Load, Outcome, OwnRedis, Request, report};
use crate::helpers::TestServer;

async fn instance(root: &std::path::Path, db: &str, redis: &str) -> TestServer {
    let (db, redis) = (db.to_owned(), redis.to_owned());
    let dir = tempfile::tempdir_in(root).unwrap();
    TestServer::start_custom(
        dir,
        move |e| {
            e.database_url = Some(db.into());
            let mut r = strata_engine::RedisSettings::new(redis);
            r.namespace = crate::helpers::redis_namespace().to_owned();
            e.cache.redis = Some(r);
            e.jobs.workers = 0;
        },
        |_| {},
    )
    .await
}

async fn metric(s: &TestServer, name: &str) -> f64 {
    let text = s.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

async fn title_of(s: &TestServer, id: &str) -> String {
    s.get_json(&format!("/v1/documents/{id}")).await["title"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn rename(s: &TestServer, id: &str, title: &str) {
    let r = s
        .patch_url(
            &s.url(&format!("/v1/documents/{id}")),
            json!({ "title": title }),
        )
        .await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_fails_nothing_and_serves_nothing_stale() {
    let mut redis = OwnRedis::start();
    let root = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", root.path().join("shared.db").display());
    let a = instance(root.path(), &db, &redis.url()).await;
    let b = instance(root.path(), &db, &redis.url()).await;
    let doc = a.create_text("A document both instances read.", &[]).await;
    let id = doc["id"].as_str().unwrap().to_owned();
    let other = a.create_text("A document the load renames.", &[]).await;
    let other = other["id"].as_str().unwrap().to_owned();

    // Four tasks read through both instances (both documents), one renames the other one
    // through both; the checks below rename `id` alone.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let request: Request = {
        let (urls, ids) = ([a.url(""), b.url("")], [id.clone(), other]);
        Arc::new(move |task, n| {
            let client = client.clone();
            let id = if task == 4 {
                ids[1].clone()
            } else {
                ids[n as usize % 2].clone()
            };
            let base = urls[(task + n as usize) % 2].clone();
            Box::pin(async move {
                let r = if task == 4 {
                    client
                        .patch(format!("{base}/v1/documents/{id}"))
                        .json(&json!({ "title": format!("load {n}") }))
                        .send()
                        .await
                } else {
                    client.get(format!("{base}/v1/documents/{id}")).send().await
                };
                match r {
                    Ok(r) if r.status().is_success() => Outcome::Ok,
                    _ => Outcome::Failed,
                }
            })
        })
    };
    let load = Load::start(5, Duration::from_millis(5), request);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(metric(&a, "strata_cache_l2_bus_healthy").await, 1.0);

    redis.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The outage is visible, and reads go to the source while it lasts.
    assert_eq!(metric(&a, "strata_cache_l2_bus_healthy").await, 0.0);
    assert_eq!(metric(&b, "strata_cache_l2_bus_healthy").await, 0.0);
    for i in 0..5 {
        let title = format!("written during the outage {i}");
        rename(&a, &id, &title).await;
        assert_eq!(title_of(&b, &id).await, title, "b serves a's write at once");
        assert_eq!(title_of(&a, &id).await, title);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;

    redis.restart();
    for s in [&a, &b] {
        let mut healthy = false;
        for _ in 0..200 {
            if metric(s, "strata_cache_l2_bus_healthy").await == 1.0 {
                healthy = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            healthy,
            "the instance trusts its caches again once Redis is back"
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let samples = load.finish().await;
    let (ok, _, failed, _) = report("redis SIGKILL and restart, 2 instances", &samples);
    assert_eq!(failed, 0, "no request failed while Redis was away");
    assert!(ok > 100);

    // After it returns, nothing is served stale by either instance: writes made during and
    // after the outage are read back through the other one, twice (the second read is a hit).
    let last: Value = a.get_json(&format!("/v1/documents/{id}")).await;
    for s in [&a, &b] {
        for _ in 0..2 {
            assert_eq!(title_of(s, &id).await, last["title"].as_str().unwrap());
        }
    }
    for i in 0..5 {
        let title = format!("written after the outage {i}");
        let (w, r) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        rename(w, &id, &title).await;
        assert_eq!(
            title_of(r, &id).await,
            title,
            "no stale read after the return"
        );
        assert_eq!(title_of(r, &id).await, title);
    }
    assert!(metric(&a, "strata_cache_l2_breaker_opened").await >= 1.0);
    a.stop().await;
    b.stop().await;
}
