//! The gateway's semantic cache end to end, with the real embedding model and the local
//! OpenAI-protocol server: a paraphrase is answered from the earlier prompt's answer with its
//! similarity and entry in headers, the guard refuses a differing number, scopes keep
//! tenants, system prompts and parameters apart, shadow mode serves nothing and records
//! agreement, and the whole thing is off unless asked.

use std::time::Duration;

use serde_json::{Value, json};

use super::helpers::TestServer;
use super::upstream::Upstream;

async fn server(up: &Upstream, mode: strata_server::SemanticMode) -> TestServer {
    let upstream = up.settings("u0");
    TestServer::start_custom(
        tempfile::tempdir().unwrap(),
        |_| {},
        move |srv| {
            srv.gateway.upstreams = vec![upstream];
            srv.gateway.semantic = mode;
            srv.identity = strata_server::caller::Identity::Header {
                name: strata_server::HeaderName::from_static("x-tenant"),
                admins: std::sync::Arc::new(
                    [strata_engine::TenantId::parse("ops").unwrap()]
                        .into_iter()
                        .collect(),
                ),
            };
        },
    )
    .await
}

fn ask(system: &str, content: &str) -> Value {
    json!({"model": "mock-1", "temperature": 0, "messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": content}]})
}

async fn chat(s: &TestServer, tenant: &str, body: Value) -> (reqwest::header::HeaderMap, Value) {
    let r = s
        .request_as(
            tenant,
            reqwest::Method::POST,
            "/v1/chat/completions",
            Some(body),
        )
        .await;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    (h, r.json().await.unwrap())
}

fn cache(h: &reqwest::header::HeaderMap) -> &str {
    h["x-cache"].to_str().unwrap()
}

#[tokio::test]
async fn a_paraphrase_is_answered_from_the_earlier_prompt_and_a_different_number_is_not() {
    let up = Upstream::start().await;
    let s = server(&up, strata_server::SemanticMode::On).await;
    let (h, first) = chat(
        &s,
        "acme",
        ask("be brief", "How do I increase my learning speed?"),
    )
    .await;
    assert_eq!(cache(&h), "MISS");
    assert_eq!(up.calls(), 1);

    let (h, again) = chat(
        &s,
        "acme",
        ask("be brief", "How can I increase my learning speed?"),
    )
    .await;
    assert_eq!(cache(&h), "HIT-SEMANTIC", "{h:?}");
    assert_eq!(up.calls(), 1, "served without calling the upstream");
    assert_eq!(
        again["choices"][0]["message"]["content"],
        first["choices"][0]["message"]["content"]
    );
    let similarity: f32 = h["x-semantic-similarity"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((0.96..=1.0).contains(&similarity), "{similarity}");
    assert_eq!(h["x-semantic-entry"].to_str().unwrap().len(), 32);

    // Near in meaning, but a different quantity: the guard refuses it.
    // (A threshold low enough that similarity alone would match them.)
    let loose = |q: &str| {
        let mut b = ask("be brief", q);
        b["strata"] = json!({"semantic_threshold": 0.8});
        b
    };
    chat(&s, "acme", loose("How do I lose weight in 2 months?")).await;
    let (h, _) = chat(&s, "acme", loose("How do I lose weight in 3 months?")).await;
    assert_eq!(cache(&h), "MISS");
    assert_eq!(up.calls(), 3);

    // The scope: another tenant, another system prompt, other parameters never match.
    let q = "How can I increase my learning speed?";
    let (h, _) = chat(&s, "other", ask("be brief", q)).await;
    assert_eq!(cache(&h), "MISS", "another tenant");
    let (h, _) = chat(&s, "acme", ask("answer in French", q)).await;
    assert_eq!(cache(&h), "MISS", "another system prompt");
    let mut hot = ask("be brief", q);
    hot["temperature"] = json!(0.9);
    let (h, _) = chat(&s, "acme", hot).await;
    assert_eq!(cache(&h), "MISS", "another temperature");
    assert_eq!(up.calls(), 6);

    // A request may turn it off, or ask for a threshold no paraphrase reaches.
    let mut off = ask("be brief", "How can one increase learning speed?");
    off["strata"] = json!({"semantic_cache": "off"});
    let (h, _) = chat(&s, "acme", off).await;
    assert_eq!(cache(&h), "MISS");
    let mut strict = ask("be brief", "How do I increase my speed of learning?");
    strict["strata"] = json!({"semantic_threshold": 1.0});
    let (h, _) = chat(&s, "acme", strict).await;
    assert_eq!(cache(&h), "MISS");

    let stats = s.get_json_as("/v1/performance/gateway/stats", "ops").await;
    let sem = &stats["semantic"];
    assert_eq!(sem["served"], 1, "{stats}");
    assert!(sem["guarded"]["number"].as_u64().unwrap() >= 1, "{stats}");

    // Clearing the answer cache empties the tier with it.
    let r = s
        .request_as(
            "ops",
            reqwest::Method::POST,
            "/v1/performance/cache/clear",
            Some(json!({"kind": "llm_response"})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let stats = s.get_json_as("/v1/performance/gateway/stats", "ops").await;
    assert_eq!(stats["semantic"]["entries"], 0, "{stats}");
}

#[tokio::test]
async fn shadow_mode_serves_the_upstream_and_records_what_it_would_have_served() {
    let up = Upstream::start().await;
    let s = server(&up, strata_server::SemanticMode::Shadow).await;
    chat(
        &s,
        "acme",
        ask("be brief", "How do I increase my learning speed?"),
    )
    .await;
    let (h, body) = chat(
        &s,
        "acme",
        ask("be brief", "How can I increase my learning speed?"),
    )
    .await;
    assert_eq!(cache(&h), "MISS");
    assert_eq!(up.calls(), 2, "shadow mode always asks the upstream");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "echo: How can I increase my learning speed?"
    );
    let shadow = h["x-semantic-shadow"].to_str().unwrap();
    assert!(
        shadow.starts_with("similarity=0.9") && shadow.contains("entry="),
        "{shadow}"
    );
    assert!(h.get("x-semantic-similarity").is_none());

    // The comparison runs after the answer; wait for it.
    let mut buckets = Value::Null;
    for _ in 0..100 {
        let stats = s.get_json_as("/v1/performance/gateway/stats", "ops").await;
        buckets = stats["semantic"]["shadow"].clone();
        if buckets.as_array().is_some_and(|b| !b.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = &buckets[0];
    assert_eq!(b["compared"], 1, "{buckets}");
    // The echoes differ in one word: their embeddings agree.
    assert_eq!(b["agreed"], 1, "{buckets}");
    assert!(b["similarity_from"].as_f64().unwrap() >= 0.9, "{buckets}");
}

#[tokio::test]
async fn the_semantic_cache_is_off_unless_asked_and_bad_controls_are_refused() {
    let up = Upstream::start().await;
    let s = server(&up, strata_server::SemanticMode::Off).await;
    chat(
        &s,
        "acme",
        ask("be brief", "How do I increase my learning speed?"),
    )
    .await;
    let (h, _) = chat(
        &s,
        "acme",
        ask("be brief", "How can I increase my learning speed?"),
    )
    .await;
    assert_eq!(cache(&h), "MISS");
    let stats = s.get_json_as("/v1/performance/gateway/stats", "ops").await;
    assert_eq!(
        stats["semantic"]["lookups"], 0,
        "no embedding, no lookup: {stats}"
    );

    // Opted in per request: this one is stored, the next finds it.
    let mut on = ask("be brief", "What is the capital of France?");
    on["strata"] = json!({"semantic_cache": "on"});
    chat(&s, "acme", on.clone()).await;
    on["messages"][1]["content"] = json!("What's the capital of France?");
    let (h, _) = chat(&s, "acme", on).await;
    assert_eq!(cache(&h), "HIT-SEMANTIC");

    for (ext, param) in [
        (json!({"semantic_cache": "maybe"}), "strata.semantic_cache"),
        (json!({"semantic_cache": true}), "strata.semantic_cache"),
        (
            json!({"semantic_threshold": 1.5}),
            "strata.semantic_threshold",
        ),
        (
            json!({"semantic_threshold": "high"}),
            "strata.semantic_threshold",
        ),
    ] {
        let mut b = ask("be brief", "x");
        b["strata"] = ext.clone();
        let r = s
            .request_as(
                "acme",
                reqwest::Method::POST,
                "/v1/chat/completions",
                Some(b),
            )
            .await;
        assert_eq!(r.status(), 400, "{ext}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["param"], param, "{e}");
    }
}
