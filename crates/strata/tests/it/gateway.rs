//! The LLM gateway end to end, against a local server speaking OpenAI's protocol
//! ([`super::upstream`]): pass-through, the exact cache in both forms, single-flight with
//! stream fan-out, cancellation, errors in OpenAI's shape, fallback, budgets and usage.

use std::time::Duration;

use serde_json::{Value, json};

use super::helpers::TestServer;
use super::upstream::Upstream;

async fn gateway(upstreams: &[&Upstream]) -> TestServer {
    let list: Vec<_> = upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| u.settings(&format!("u{i}")))
        .collect();
    TestServer::start_custom(
        tempfile::tempdir().unwrap(),
        |_| {},
        move |srv| {
            srv.gateway.upstreams = list;
            srv.gateway.first_byte_timeout = Duration::from_secs(2);
            srv.gateway.idle_timeout = Duration::from_secs(2);
            srv.gateway.backoff = Duration::from_millis(10);
            // The breaker has its own test; here failures must not open it.
            srv.gateway.breaker_failures = 1000;
        },
    )
    .await
}

fn ask(content: &str) -> Value {
    json!({"model": "mock-1", "temperature": 0, "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": content}]})
}

async fn chat(s: &TestServer, body: &Value) -> reqwest::Response {
    s.client
        .post(s.url("/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The `data` payloads of an SSE body, `[DONE]` included.
fn events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

async fn stream(s: &TestServer, mut body: Value) -> (String, Vec<String>) {
    body["stream"] = json!(true);
    let r = chat(s, &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let cache = r.headers()["x-cache"].to_str().unwrap().to_owned();
    (cache, events(&r.text().await.unwrap()))
}

#[tokio::test]
async fn json_answers_pass_through_and_are_cached_for_either_form() {
    let up = Upstream::start().await;
    let s = gateway(&[&up]).await;
    let r = chat(&s, &ask("hello there")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "MISS");
    assert!(
        r.headers().get("x-upstream-only").is_none(),
        "upstream headers are not replayed"
    );
    let first: Value = r.json().await.unwrap();
    assert_eq!(
        first["choices"][0]["message"]["content"],
        "echo: hello there"
    );
    assert_eq!(
        first["x_custom"]["kept"], true,
        "unknown fields pass through"
    );

    // Same request, keys reordered and a transport-only field added: a hit, same body.
    let reordered = json!({"messages": [
        {"content": "be brief", "role": "system"},
        {"role": "user", "content": "hello there"}], "user": "someone", "temperature": 0, "model": "mock-1"});
    let r = chat(&s, &reordered).await;
    assert_eq!(r.headers()["x-cache"], "HIT-L1");
    assert_eq!(r.json::<Value>().await.unwrap(), first);

    // A stream of the cached JSON answer: chunks that assemble to the same message.
    let (cache, ev) = stream(&s, ask("hello there")).await;
    assert_eq!(cache, "HIT-L1");
    assert_eq!(ev.last().unwrap(), "[DONE]");
    let text: String = ev[..ev.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "echo: hello there");
    assert!(
        ev.iter().all(|e| !e.contains("\"usage\"")),
        "no usage chunk unless asked"
    );
    assert_eq!(up.calls(), 1);

    // A different system prompt is a different question.
    let mut other = ask("hello there");
    other["messages"][0]["content"] = json!("be verbose");
    assert_eq!(chat(&s, &other).await.headers()["x-cache"], "MISS");
    assert_eq!(up.calls(), 2);

    // The upstream got strata's key, not the client's headers, and a stream asked for usage.
    let (headers, _) = up.seen.requests.lock().unwrap()[0].clone();
    assert_eq!(headers["authorization"], "Bearer sk-upstream-secret");
    s.stop().await;
}

#[tokio::test]
async fn streams_relay_every_fragment_and_replay_chunk_for_chunk() {
    let up = Upstream::start().await;
    let s = gateway(&[&up]).await;
    let q = ask("weather [reasoning] [tools]");
    let (cache, live) = stream(&s, q.clone()).await;
    assert_eq!(cache, "MISS");
    assert_eq!(live.last().unwrap(), "[DONE]");
    assert!(live.iter().any(|e| e.contains("reasoning_content")));
    assert!(
        live.iter()
            .any(|e| e.contains("\"arguments\":\"{\\\"q\\\":\""))
    );
    assert!(
        live.iter().all(|e| !e.contains("\"usage\":{")),
        "usage chunk stripped: not asked for"
    );
    let (_, body) = up.seen.requests.lock().unwrap()[0].clone();
    assert_eq!(
        body["stream_options"]["include_usage"], true,
        "strata meters every stream"
    );

    // Replayed from the cache: the same chunks in the same order.
    let (cache, again) = stream(&s, q.clone()).await;
    assert_eq!(cache, "HIT-L1");
    assert_eq!(again, live);

    // With usage asked for, the usage chunk comes back too.
    let mut with_usage = q.clone();
    with_usage["stream_options"] = json!({"include_usage": true});
    let (_, ev) = stream(&s, with_usage).await;
    assert!(ev.iter().any(|e| e.contains("\"usage\":{")));

    // A JSON client gets the assembled completion, reasoning and tool call included.
    let r = chat(&s, &q).await;
    assert_eq!(r.headers()["x-cache"], "HIT-L1");
    let v: Value = r.json().await.unwrap();
    let m = &v["choices"][0]["message"];
    assert_eq!(m["reasoning_content"], "thinking it over");
    assert_eq!(m["tool_calls"][0]["function"]["arguments"], "{\"q\":\"x\"}");
    assert_eq!(m["content"], "echo: weather [reasoning] [tools]");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(up.calls(), 1);
    s.stop().await;
}

#[tokio::test]
async fn identical_concurrent_streams_make_one_upstream_call() {
    let up = Upstream::start().await;
    let s = gateway(&[&up]).await;
    let q = ask("shared [slow] [drip]");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (client, url, mut body) = (s.client.clone(), s.url("/v1/chat/completions"), q.clone());
        body["stream"] = json!(i % 4 != 0);
        tasks.push(tokio::spawn(async move {
            // Late joiners arrive while the leader is mid-stream.
            tokio::time::sleep(Duration::from_millis(20 * i)).await;
            client
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }));
    }
    let mut streams = Vec::new();
    for t in tasks {
        streams.push(t.await.unwrap());
    }
    assert_eq!(up.calls(), 1, "one upstream call for 20 identical requests");
    let reference: Vec<String> = events(&streams[1]);
    assert_eq!(reference.last().unwrap(), "[DONE]");
    for (i, body) in streams.iter().enumerate() {
        if i % 4 == 0 {
            let v: Value = serde_json::from_str(body).unwrap();
            assert_eq!(
                v["choices"][0]["message"]["content"],
                "echo: shared [slow] [drip]"
            );
        } else {
            assert_eq!(
                events(body),
                reference,
                "stream {i} got every chunk in order"
            );
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_call() {
    let up = Upstream::start().await;
    let s = gateway(&[&up]).await;
    let mut body = ask("long answer [drip] with many many chunks to come");
    body["stream"] = json!(true);
    let mut r = chat(&s, &body).await;
    let first = r.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    drop(r);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while up.seen.dropped.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream stream was not dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Nothing was cached: the next request calls the upstream again.
    let (cache, ev) = stream(&s, body).await;
    assert_eq!(
        (cache.as_str(), ev.last().map(String::as_str)),
        ("MISS", Some("[DONE]"))
    );
    assert_eq!(up.calls(), 2);
    s.stop().await;
}

#[tokio::test]
async fn failures_are_forwarded_and_never_cached() {
    let up = Upstream::start().await;
    let s = gateway(&[&up]).await;
    // An upstream error passes through in OpenAI's shape with its status, after retries.
    let r = chat(&s, &ask("boom [fail500]")).await;
    assert_eq!(r.status(), 500);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "mock_failed");
    let calls = up.calls();
    assert_eq!(calls, 3, "the first try and two retries");
    assert_eq!(chat(&s, &ask("boom [fail500]")).await.status(), 500);
    assert!(
        up.calls() > calls,
        "an error is never served from the cache"
    );

    // A transient failure is retried before the first byte.
    let r = chat(&s, &ask("flaky [fail-once]")).await;
    assert_eq!(r.status(), 200);

    // A mid-stream error object is forwarded as sent, and nothing is cached.
    let (_, ev) = stream(&s, ask("partial [midstream-error]")).await;
    assert!(
        ev.last()
            .unwrap()
            .contains("upstream overloaded mid-stream"),
        "{ev:?}"
    );
    assert!(!ev.contains(&"[DONE]".to_owned()));
    // A cut stream ends with an error event.
    let (_, ev) = stream(&s, ask("partial [cut]")).await;
    assert!(
        ev.last().unwrap().contains("upstream_stream_broken"),
        "{ev:?}"
    );
    let before = up.calls();
    stream(&s, ask("partial [cut]")).await;
    assert_eq!(up.calls(), before + 1, "a broken stream is never cached");
    s.stop().await;
}

#[tokio::test]
async fn a_failing_upstream_falls_back_to_the_next() {
    let (bad, good) = (Upstream::start().await, Upstream::start().await);
    let mut dead = bad.settings("dead");
    dead.base_url = "http://127.0.0.1:9/v1".into();
    let list = vec![dead, good.settings("good")];
    let s = TestServer::start_custom(
        tempfile::tempdir().unwrap(),
        |_| {},
        move |srv| {
            srv.gateway.upstreams = list;
            srv.gateway.backoff = Duration::from_millis(5);
        },
    )
    .await;
    for i in 0..3 {
        let r = chat(&s, &ask(&format!("fallback {i}"))).await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(good.calls(), 3);
    s.stop().await;
}

#[tokio::test]
async fn an_upstream_that_keeps_failing_is_skipped_until_its_breaker_cools() {
    let up = Upstream::start().await;
    let u = up.settings("flaky");
    let s = TestServer::start_custom(
        tempfile::tempdir().unwrap(),
        |_| {},
        move |srv| {
            srv.gateway.upstreams = vec![u];
            srv.gateway.retries = 0;
            srv.gateway.breaker_failures = 2;
            srv.gateway.breaker_cooldown = Duration::from_millis(500);
        },
    )
    .await;
    for _ in 0..2 {
        assert_eq!(chat(&s, &ask("down [fail500]")).await.status(), 500);
    }
    // Open: refused at once, without calling the upstream, and retryable.
    let r = chat(&s, &ask("healthy")).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "upstream_unavailable"
    );
    assert_eq!(up.calls(), 2);
    let stats = s.get_json("/v1/performance/gateway/stats").await;
    assert_eq!(stats["upstreams"][0]["breaker_open"], true, "{stats}");
    // Cooled: a probe goes through and closes it.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(chat(&s, &ask("healthy")).await.status(), 200);
    assert_eq!(chat(&s, &ask("healthy again")).await.status(), 200);
    s.stop().await;
}

#[tokio::test]
async fn openai_routes_answer_errors_in_openai_shape() {
    let up = Upstream::start().await;
    let mut only = up.settings("u");
    only.models = vec!["mock-1".into()];
    let s = TestServer::start_custom(
        tempfile::tempdir().unwrap(),
        |_| {},
        move |srv| {
            srv.gateway.upstreams = vec![only];
        },
    )
    .await;
    let mut q = ask("x");
    q["model"] = json!("gpt-nope");
    let r = chat(&s, &q).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(v["error"]["type"], "invalid_request_error");

    let r = chat(&s, &json!({"model": "mock-1", "messages": []})).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["param"], "messages");

    let r = s
        .client
        .post(s.url("/v1/chat/completions"))
        .body("{")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"].is_string());

    let r = s
        .post_json(
            "/v1/embeddings",
            json!({"input": "x", "model": "text-embedding-3-small"}),
        )
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "model_not_found"
    );

    let models = s.get_json("/v1/models").await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"mock-1") && ids.len() == 2, "{ids:?}");
    // Other routes keep problem+json.
    let r = s.get("/v1/documents/nope").await;
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    s.stop().await;
}

#[tokio::test]
async fn cache_control_decides_reads_and_stores() {
    let up = Upstream::start().await;
    let s = gateway(&[&up]).await;
    let q = ask("controlled");
    let send = |cc: &'static str| {
        let (client, url, q) = (s.client.clone(), s.url("/v1/chat/completions"), q.clone());
        async move {
            let r = client
                .post(url)
                .header("cache-control", cc)
                .json(&q)
                .send()
                .await
                .unwrap();
            r.headers()["x-cache"].to_str().unwrap().to_owned()
        }
    };
    assert_eq!(send("no-store").await, "MISS");
    assert_eq!(send("max-age=60").await, "MISS", "no-store kept nothing");
    assert_eq!(send("max-age=60").await, "HIT-L1");
    assert_eq!(send("no-cache").await, "MISS");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(send("max-age=0").await, "MISS", "older than max-age");
    let mut body = q.clone();
    body["strata"] = json!({"cache_control": "no-cache"});
    assert_eq!(chat(&s, &body).await.headers()["x-cache"], "MISS");
    let (_, last) = up.seen.requests.lock().unwrap().last().unwrap().clone();
    assert!(
        last.get("strata").is_none(),
        "strata's controls never go upstream"
    );
    // n > 1 with sampling is not stored.
    let sampled = json!({"model": "mock-1", "n": 2, "temperature": 0.8, "messages": [{"role": "user", "content": "sampled"}]});
    chat(&s, &sampled).await;
    assert_eq!(chat(&s, &sampled).await.headers()["x-cache"], "MISS");
    s.stop().await;
}

#[tokio::test]
async fn concurrent_first_requests_never_spend_past_the_budget() {
    let up = Upstream::start().await;
    let s = gateway(&[&up]).await;
    // A call before any limit: the tenant is known to be unlimited (cached); setting a
    // limit must end that at once.
    assert_eq!(chat(&s, &ask("before the budget")).await.status(), 200);
    // Each call reserves its prompt estimate plus max_tokens 100: about 5 fit in 600.
    let r = s
        .client
        .put(s.url("/v1/budgets/local"))
        .json(&json!({"limits": [{"period": "day", "max_tokens": 600}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (client, url) = (s.client.clone(), s.url("/v1/chat/completions"));
        tasks.push(tokio::spawn(async move {
            let body = json!({"model": "mock-1", "max_tokens": 100,
                "messages": [{"role": "user", "content": format!("q{i:02} [slow]")}]});
            let r = client.post(url).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            let retry = r
                .headers()
                .get("x-should-retry")
                .map(|v| v.to_str().unwrap().to_owned());
            let v: Value = r.json().await.unwrap();
            (status, retry, v)
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let (status, retry, v) = t.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                assert_eq!(retry.as_deref(), Some("false"));
                assert_eq!(v["error"]["code"], "budget_exceeded");
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    // Reservations bound what is spent at once: never more than 5 calls upstream together.
    // More than 5 may be admitted in all when a call settles (to its real, smaller usage)
    // before the last requests arrive, as on a loaded machine.
    assert!(ok >= 1, "none admitted");
    assert!(
        up.most_in_flight() <= 5,
        "{} calls upstream at once ({ok} admitted)",
        up.most_in_flight()
    );
    assert_eq!(up.calls(), ok + 1);
    // Settled to the real usage, nothing left reserved, never past the limit.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let b = s.get_json("/v1/budget").await;
        let w = &b["windows"][0];
        if w["reserved_tokens"] == 0 {
            assert!(w["used_tokens"].as_i64().unwrap() <= 600, "{b}");
            assert!(w["used_tokens"].as_i64().unwrap() > 0, "{b}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reservations not settled: {b}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop().await;
}

#[tokio::test]
async fn usage_is_accounted_with_what_the_cache_saved() {
    let up = Upstream::start().await;
    let mut u = up.settings("u");
    u.prices.insert(
        "mock-1".into(),
        strata_server::GatewayPrice {
            input: 1.0,
            output: 2.0,
        },
    );
    let s = TestServer::start_custom(
        tempfile::tempdir().unwrap(),
        |_| {},
        move |srv| {
            srv.gateway.upstreams = vec![u];
        },
    )
    .await;
    for _ in 0..3 {
        assert_eq!(chat(&s, &ask("count me")).await.status(), 200);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let page = s.get_json("/v1/usage").await;
        let row = &page["items"][0];
        if row["requests"] == 3 {
            assert_eq!(row["model"], "mock-1");
            assert_eq!(row["cached_requests"], 2);
            let (p, c) = (
                row["prompt_tokens"].as_i64().unwrap(),
                row["completion_tokens"].as_i64().unwrap(),
            );
            assert!(p > 0 && c > 0);
            assert_eq!(row["saved_tokens"].as_i64().unwrap(), 2 * (p + c));
            let cost = row["cost_usd"].as_f64().unwrap();
            assert!(
                (cost - (p as f64 + 2.0 * c as f64) / 1e6).abs() < 1e-6,
                "{row}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = s.get("/v1/usage?from=yesterday").await;
    assert_eq!(r.status(), 422);

    // The process's totals: in the gateway's statistics and in the metrics registry.
    let stats = s.get_json("/v1/performance/gateway/stats").await;
    let total = &stats["usage"]["mock-1"];
    assert_eq!(total["requests"], 3, "{stats}");
    assert_eq!(total["cached_requests"], 2, "{stats}");
    let (p, c) = (
        total["prompt_tokens"].as_i64().unwrap(),
        total["completion_tokens"].as_i64().unwrap(),
    );
    assert_eq!(total["saved_tokens"].as_i64().unwrap(), 2 * (p + c));
    let metrics = s.get("/metrics").await.text().await.unwrap();
    for line in [
        r#"strata_gateway_answers_total{model="mock-1"} 3"#.to_owned(),
        r#"strata_gateway_cached_answers_total{model="mock-1"} 2"#.to_owned(),
        format!(r#"strata_gateway_prompt_tokens_total{{model="mock-1"}} {p}"#),
        format!(
            r#"strata_gateway_saved_tokens_total{{model="mock-1"}} {}"#,
            2 * (p + c)
        ),
        format!(
            r#"strata_gateway_cost_micro_dollars_total{{model="mock-1"}} {}"#,
            p + 2 * c
        ),
        "strata_gateway_cache_hits_total 2".to_owned(),
        "strata_gateway_upstream_calls_total 1".to_owned(),
    ] {
        assert!(metrics.contains(&line), "missing {line:?} in\n{metrics}");
    }
    s.stop().await;
}

/// Three `strata serve` processes over one PostgreSQL and one Redis, configured from the
/// command line: 50 concurrent first requests spread over them against a budget that admits
/// about 5 never spend past it.
#[tokio::test]
async fn budgets_hold_across_instances_over_postgres() {
    let up = Upstream::start().await;
    let redis = crate::helpers::redis_url();
    let db = crate::helpers::fresh_postgres().await;
    let root = tempfile::tempdir().unwrap();
    let args = [
        "--redis-url",
        redis.as_str(),
        "--redis-namespace",
        crate::helpers::redis_namespace(),
        "--database-url",
        db.as_str(),
        "--cache-warm-queries",
        "0",
        "--upstream-url",
        up.base.as_str(),
        "--upstream-models",
        "mock-1",
    ];
    let mut procs = Vec::new();
    for name in ["a", "b", "c"] {
        procs.push(crate::process::Proc::start(&root.path().join(name), &args).await);
    }
    let client = reqwest::Client::new();
    let r = client
        .put(format!("{}/v1/budgets/local", procs[0].base))
        .json(&json!({"limits": [{"period": "day", "max_tokens": 600}, {"period": "minute", "max_tokens": 100000}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let url = format!("{}/v1/chat/completions", procs[i % 3].base);
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"model": "mock-1", "max_tokens": 100,
                "messages": [{"role": "user", "content": format!("fleet {i:02} [slow]")}]});
            client
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert!((1..=5).contains(&ok), "{ok} admitted");
    assert_eq!(up.calls(), ok);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        // Any instance reports the shared windows.
        let b: Value = client
            .get(format!("{}/v1/budget", procs[2].base))
            .header("cache-control", "no-cache")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let day = b["windows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["period"] == "day")
            .unwrap()
            .clone();
        if day["reserved_tokens"] == 0 && day["used_tokens"].as_i64().unwrap() > 0 {
            assert!(day["used_tokens"].as_i64().unwrap() <= 600, "{b}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
