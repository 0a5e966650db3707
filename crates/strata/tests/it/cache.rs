//! The cache on every read path: hits, ETags, invalidation by writes, statistics, clearing.

use serde_json::{Value, json};

use crate::helpers::{TestServer, assert_problem};

fn x_cache(r: &reqwest::Response) -> String {
    r.headers()["x-cache"].to_str().unwrap().to_owned()
}

/// How many hits a search response holds.
async fn hit_count(r: reqwest::Response) -> usize {
    r.json::<Value>().await.unwrap()["hits"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn reads_hit_the_cache_and_answer_if_none_match() {
    let s = TestServer::start_with(|e| e.jobs.workers = 0).await;
    let d = s.create_text("cached document", &["x"]).await;
    let id = d["id"].as_str().unwrap();
    for path in [
        "/v1/documents".to_owned(),
        format!("/v1/documents/{id}"),
        "/v1/tags".to_owned(),
        format!("/v1/jobs/{}", d["job_id"].as_str().unwrap()),
        "/v1/jobs".to_owned(),
    ] {
        let first = s.get(&path).await;
        assert_eq!(x_cache(&first), "MISS", "{path}");
        let etag = first.headers()["etag"].to_str().unwrap().to_owned();
        let body1 = first.text().await.unwrap();
        let second = s.get(&path).await;
        assert_eq!(x_cache(&second), "HIT-L1", "{path}");
        assert_eq!(second.headers()["etag"].to_str().unwrap(), etag);
        let timing = second.headers()["server-timing"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(timing.contains("cache;desc=l1-hit"), "{timing}");
        assert_eq!(second.text().await.unwrap(), body1);
        let r = s
            .client
            .get(s.url(&path))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 304, "{path}");
        assert!(r.text().await.unwrap().is_empty());
    }
    s.stop().await;
}

#[tokio::test]
async fn writes_invalidate_what_they_change() {
    let s = TestServer::start_with(|e| e.jobs.workers = 0).await;
    let d = s.create_text("first", &["a"]).await;
    let id = d["id"].as_str().unwrap().to_owned();
    assert_eq!(
        s.get_json("/v1/documents").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(x_cache(&s.get("/v1/documents").await), "HIT-L1");
    // Upload: the list and the tags change.
    s.create_text("second", &["b"]).await;
    let r = s.get("/v1/documents").await;
    assert_eq!(x_cache(&r), "MISS");
    assert_eq!(
        r.json::<Value>().await.unwrap()["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        s.get_json("/v1/tags").await["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Patch: the document reads back changed at once.
    s.get_json(&format!("/v1/documents/{id}")).await;
    let r = s
        .client
        .patch(s.url(&format!("/v1/documents/{id}")))
        .json(&json!({"title": "renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.get_json(&format!("/v1/documents/{id}")).await["title"],
        "renamed"
    );
    // Delete: gone from the list and the tags.
    let r = s.delete(&format!("/v1/documents/{id}")).await;
    assert_eq!(r.status(), 204);
    assert_problem(
        s.get(&format!("/v1/documents/{id}")).await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(
        s.get_json("/v1/documents").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        s.get_json("/v1/tags").await["items"],
        json!([{"tag": "b", "count": 1}])
    );
    s.stop().await;
}

#[tokio::test]
async fn search_results_and_query_embeddings_are_cached() {
    let s = TestServer::start().await;
    let d = s.create_text("Ocean tides follow the moon.", &[]).await;
    s.wait_job(d["job_id"].as_str().unwrap()).await;
    let q = json!({"query": "what moves the sea", "k": 3});
    let r1 = s.post_json("/v1/search", q.clone()).await;
    assert_eq!(x_cache(&r1), "MISS");
    let b1: Value = r1.json().await.unwrap();
    let r2 = s.post_json("/v1/search", q.clone()).await;
    assert_eq!(x_cache(&r2), "HIT-L1");
    assert_eq!(r2.json::<Value>().await.unwrap(), b1);
    // Another k is another answer, but the query's embedding is reused.
    let r3 = s
        .post_json("/v1/search", json!({"query": "what moves the sea", "k": 2}))
        .await;
    assert_eq!(x_cache(&r3), "MISS");
    let stats = s.get_json("/v1/performance/cache/stats").await;
    let kind = |name: &str| {
        stats["cache"]["kinds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kind"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(kind("embedding")["hits_l1"], 1, "{stats}");
    assert_eq!(kind("search_results")["hits_l1"], 1);
    assert!(stats["cache"]["l1_bytes"].as_u64().unwrap() > 0);
    // A new document makes earlier answers stale.
    let d2 = s
        .create_text("The moon's gravity raises the sea twice a day.", &[])
        .await;
    s.wait_job(d2["job_id"].as_str().unwrap()).await;
    let r4 = s.post_json("/v1/search", q).await;
    assert_eq!(x_cache(&r4), "MISS");
    assert_eq!(hit_count(r4).await, 2);
    s.stop().await;
}

#[tokio::test]
async fn a_tags_only_patch_keeps_unfiltered_search_answers_and_refreshes_the_rest() {
    let s = TestServer::start().await;
    let d = s
        .create_text("Glaciers carve valleys over thousands of years.", &["geo"])
        .await;
    s.wait_job(d["job_id"].as_str().unwrap()).await;
    let id = d["id"].as_str().unwrap().to_owned();
    let plain = json!({"query": "how are valleys formed", "k": 3});
    let by_old_tag =
        json!({"query": "how are valleys formed", "k": 3, "filter": {"tags": ["geo"]}});
    let by_new_tag =
        json!({"query": "how are valleys formed", "k": 3, "filter": {"tags": ["ice"]}});
    for q in [&plain, &by_old_tag, &by_new_tag] {
        s.post_json("/v1/search", q.clone()).await;
    }
    s.get_json(&format!("/v1/documents/{id}")).await;
    s.get_json("/v1/tags").await;
    let patch = |body: Value| {
        let (client, url) = (s.client.clone(), s.url(&format!("/v1/documents/{id}")));
        async move { client.patch(url).json(&body).send().await.unwrap() }
    };
    assert_eq!(patch(json!({"tags": ["ice"]})).await.status(), 200);
    // The plain answer cannot have changed (hits carry titles, not tags): still cached.
    let r = s.post_json("/v1/search", plain.clone()).await;
    assert_eq!(x_cache(&r), "HIT-L1");
    assert_eq!(hit_count(r).await, 1);
    // Everything that shows or filters by tags is recomputed.
    let r = s.post_json("/v1/search", by_old_tag).await;
    assert_eq!(x_cache(&r), "MISS");
    assert_eq!(hit_count(r).await, 0);
    let r = s.post_json("/v1/search", by_new_tag).await;
    assert_eq!(x_cache(&r), "MISS");
    assert_eq!(hit_count(r).await, 1);
    assert_eq!(
        s.get_json(&format!("/v1/documents/{id}")).await["tags"],
        json!(["ice"])
    );
    assert_eq!(
        s.get_json("/v1/tags").await["items"],
        json!([{"tag": "ice", "count": 1}])
    );
    // A title is in every hit: renaming recomputes the plain answer too.
    assert_eq!(patch(json!({"title": "Ice at work"})).await.status(), 200);
    let r = s.post_json("/v1/search", plain).await;
    assert_eq!(x_cache(&r), "MISS");
    assert_eq!(
        r.json::<Value>().await.unwrap()["hits"][0]["title"],
        "Ice at work"
    );
    s.stop().await;
}

#[tokio::test]
async fn clearing_by_kind_by_tenant_and_all() {
    let s = TestServer::start_with(|e| e.jobs.workers = 0).await;
    s.create_text("x", &[]).await;
    s.get("/v1/documents").await;
    s.get("/v1/tags").await;
    let r = s
        .post_json("/v1/performance/cache/clear", json!({"kind": "tag_counts"}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["removed_entries"], 1);
    assert_eq!(x_cache(&s.get("/v1/tags").await), "MISS");
    assert_eq!(x_cache(&s.get("/v1/documents").await), "HIT-L1");
    let r = s
        .post_json("/v1/performance/cache/clear", json!({"tenant": "local"}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(x_cache(&s.get("/v1/documents").await), "MISS");
    let r = s
        .client
        .post(s.url("/v1/performance/cache/clear"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(x_cache(&s.get("/v1/documents").await), "MISS");
    let r = s
        .post_json("/v1/performance/cache/clear", json!({"kind": "nope"}))
        .await;
    assert_eq!(
        assert_problem(r, 422, "validation_failed").await["field"],
        "kind"
    );
    s.stop().await;
}

fn with_redis(e: &mut strata_engine::EngineSettings) {
    e.cache.redis = Some(crate::helpers::redis_settings());
    e.jobs.workers = 0;
}

#[tokio::test]
async fn a_restarted_server_answers_from_redis_and_writes_still_invalidate() {
    let s = TestServer::start_with(with_redis).await;
    let d = s.create_text("kept in redis", &["r"]).await;
    let id = d["id"].as_str().unwrap().to_owned();
    let paths = [
        "/v1/documents".to_owned(),
        format!("/v1/documents/{id}"),
        "/v1/tags".to_owned(),
    ];
    let mut bodies = Vec::new();
    for p in &paths {
        let r = s.get(p).await;
        assert_eq!(x_cache(&r), "MISS", "{p}");
        bodies.push(r.text().await.unwrap());
    }
    // A new process over the same data: its L1 is empty, Redis still has every answer.
    let dir = s.stop_keep().await;
    let s = TestServer::start_in(dir, with_redis).await;
    for (p, body) in paths.iter().zip(&bodies) {
        let r = s.get(p).await;
        assert_eq!(x_cache(&r), "HIT-L2", "{p}");
        let timing = r.headers()["server-timing"].to_str().unwrap().to_owned();
        assert!(timing.contains("l2-hit"), "{timing}");
        assert_eq!(&r.text().await.unwrap(), body);
        assert_eq!(x_cache(&s.get(p).await), "HIT-L1", "{p}");
    }
    // A write invalidates both tiers.
    let r = s
        .patch_url(
            &s.url(&format!("/v1/documents/{id}")),
            json!({"title": "renamed"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = s.get(&format!("/v1/documents/{id}")).await;
    assert_eq!(x_cache(&r), "MISS");
    assert_eq!(r.json::<Value>().await.unwrap()["title"], "renamed");
    let stats = s.get_json("/v1/performance/cache/stats").await;
    let l2 = &stats["cache"]["l2"];
    assert_eq!(l2["breaker"], "closed", "{stats}");
    assert_eq!(l2["bus_healthy"], true);
    assert!(l2["bytes_read"].as_u64().unwrap() > 0);
    let meta = stats["cache"]["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "document_meta")
        .unwrap();
    assert_eq!(meta["hits_l2"], 1, "{stats}");
    s.stop().await;
}

#[tokio::test]
async fn every_list_parameter_is_part_of_the_key() {
    let s = TestServer::start_with(|e| e.jobs.workers = 0).await;
    s.create_text("one", &["a"]).await;
    s.create_text("two", &["b"]).await;
    let base = "/v1/documents?limit=5&tag=a&status=queued&fields=id,title";
    assert_eq!(x_cache(&s.get(base).await), "MISS");
    assert_eq!(x_cache(&s.get(base).await), "HIT-L1");
    let first = s.get_json("/v1/documents?limit=1").await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    for changed in [
        "/v1/documents?limit=4&tag=a&status=queued&fields=id,title".to_owned(),
        "/v1/documents?limit=5&tag=b&status=queued&fields=id,title".to_owned(),
        "/v1/documents?limit=5&tag=a&status=ready&fields=id,title".to_owned(),
        "/v1/documents?limit=5&tag=a&status=queued&fields=id".to_owned(),
        format!("/v1/documents?limit=1&cursor={cursor}"),
    ] {
        assert_eq!(x_cache(&s.get(&changed).await), "MISS", "{changed}");
    }
    assert_eq!(x_cache(&s.get(base).await), "HIT-L1");
    s.stop().await;
}

async fn warmed(s: &TestServer) -> u64 {
    s.get_json("/v1/performance/cache/stats").await["warming"]["warmed"]
        .as_u64()
        .unwrap()
}

async fn wait_warmed(s: &TestServer, above: u64) {
    for _ in 0..200 {
        if warmed(s).await > above {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no warming pass recomputed anything");
}

#[tokio::test]
async fn frequent_searches_are_warm_after_a_restart_and_after_a_write() {
    let s = TestServer::start().await;
    let d = s
        .create_text("Glaciers carve valleys over millennia.", &[])
        .await;
    s.wait_job(d["job_id"].as_str().unwrap()).await;
    let q = json!({"query": "how are valleys formed", "k": 3});
    assert_eq!(x_cache(&s.post_json("/v1/search", q.clone()).await), "MISS");
    assert_eq!(
        x_cache(&s.post_json("/v1/search", q.clone()).await),
        "HIT-L1"
    );
    // Restart: the hot list was saved; the new process warms it before the first user.
    let dir = s.stop_keep().await;
    let s = TestServer::start_in(dir, |_| {}).await;
    wait_warmed(&s, 0).await;
    assert_eq!(
        x_cache(&s.post_json("/v1/search", q.clone()).await),
        "HIT-L1"
    );
    // A write makes the cached answer unreachable; warming recomputes it with the change.
    let before = warmed(&s).await;
    let id = d["id"].as_str().unwrap();
    let r = s
        .patch_url(
            &s.url(&format!("/v1/documents/{id}")),
            json!({"title": "Ice"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    wait_warmed(&s, before).await;
    let r = s.post_json("/v1/search", q).await;
    assert_eq!(x_cache(&r), "HIT-L1");
    assert_eq!(r.json::<Value>().await.unwrap()["hits"][0]["title"], "Ice");
    s.stop().await;
}

#[tokio::test]
async fn metrics_export_the_cache_counters_for_prometheus() {
    let s = TestServer::start_with(with_redis).await;
    s.create_text("measured", &[]).await;
    s.get("/v1/documents").await;
    s.get("/v1/documents").await;
    let r = s.get("/metrics").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    for line in [
        "# TYPE strata_cache_requests_total counter",
        "strata_cache_requests_total{kind=\"document_list\",outcome=\"hit_l1\"} 1",
        "strata_cache_requests_total{kind=\"document_list\",outcome=\"miss\"} 1",
        "strata_cache_l2_breaker_open 0",
        "strata_cache_l2_bus_healthy 1",
        // Every response is counted and timed by its matched route, method and status.
        "# TYPE strata_http_requests_total counter",
        "strata_http_requests_total{route=\"/v1/documents\",method=\"GET\",status=\"200\"} 2",
        "strata_http_request_duration_seconds_count{route=\"/v1/documents\",method=\"GET\",status=\"200\"} 2",
        "strata_http_request_duration_seconds_bucket{route=\"/v1/documents\",method=\"GET\",status=\"200\",le=\"+Inf\"} 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    // Every sample line is `name{labels} number`.
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, v) = l.rsplit_once(' ').unwrap();
        assert!(v.parse::<f64>().is_ok(), "{l}");
    }
    // The process's own resources, under Prometheus' usual names (read from /proc).
    let sample = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("missing {name} in:\n{text}"))
    };
    assert!(sample("process_resident_memory_bytes") > 1e6);
    assert!(sample("process_open_fds") > 0.0);
    assert!(sample("process_threads") >= 1.0);
    assert!(sample("process_cpu_seconds_total") > 0.0);
    assert!(sample("process_start_time_seconds") > 1.7e9);

    s.stop().await;
}
