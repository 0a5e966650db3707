//! Semantic search and the OpenAI-compatible embeddings endpoint, with the real model.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::helpers::{TestServer, assert_problem};

/// A small corpus the test writes: one topic per document.
const CORPUS: &[(&str, &str, &[&str])] = &[
    (
        "Sourdough",
        "Sourdough bread rises with a starter of wild yeast and lactobacilli. Feed the starter flour and water daily, and bake the loaf in a hot Dutch oven for a crisp crust.",
        &["food"],
    ),
    (
        "Tides",
        "Ocean tides are caused mainly by the gravitational pull of the Moon, with a smaller contribution from the Sun. Spring tides happen at new and full moon.",
        &["science"],
    ),
    (
        "Rust ownership",
        "In Rust every value has a single owner; when the owner goes out of scope the value is dropped. Borrowing lets code use a value without taking ownership.",
        &["programming"],
    ),
    (
        "Marathon training",
        "Marathon runners build mileage gradually, mix long slow runs with interval sessions, and taper for two weeks before race day.",
        &["sport"],
    ),
    (
        "Photosynthesis",
        "Plants convert sunlight, water and carbon dioxide into glucose and oxygen in their chloroplasts; this process is called photosynthesis.",
        &["science"],
    ),
    (
        "Chess openings",
        "The Sicilian Defence answers 1.e4 with c5 and leads to sharp, unbalanced positions favoured by aggressive players.",
        &["games"],
    ),
    (
        "Beekeeping",
        "A beekeeper inspects the hive for the queen, brood and honey stores, and adds supers in spring when the colony grows.",
        &["food", "nature"],
    ),
    (
        "Volcanoes",
        "Volcanoes erupt when magma from the mantle rises through the crust; pressure from dissolved gases drives explosive eruptions.",
        &["science"],
    ),
];

/// Paraphrased questions and the document that answers each.
const QUESTIONS: &[(&str, &str)] = &[
    ("How do I keep my bread starter alive?", "Sourdough"),
    (
        "Why does the sea level go up and down twice a day?",
        "Tides",
    ),
    (
        "What happens to a variable when it leaves its scope in Rust?",
        "Rust ownership",
    ),
    (
        "How should I prepare for running 42 kilometres?",
        "Marathon training",
    ),
    ("How do leaves make sugar from light?", "Photosynthesis"),
    (
        "What is a good reply to king's pawn as black?",
        "Chess openings",
    ),
    ("What causes a mountain to explode with lava?", "Volcanoes"),
    (
        "When should I add more boxes to my bee colony?",
        "Beekeeping",
    ),
];

async fn load_corpus(s: &TestServer) {
    let mut jobs = Vec::new();
    for (title, text, tags) in CORPUS {
        let r = s
            .upload_json(json!({"text": text, "title": title, "tags": tags}))
            .await;
        assert_eq!(r.status(), 202);
        let v: Value = r.json().await.unwrap();
        jobs.push(v["job"]["id"].as_str().unwrap().to_owned());
    }
    for j in jobs {
        assert_eq!(s.wait_job(&j).await["status"], "succeeded");
    }
}

async fn search(s: &TestServer, body: Value) -> Value {
    let r = s.post_json("/v1/search", body).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn paraphrased_questions_rank_the_right_document_first() {
    let s = TestServer::start().await;
    load_corpus(&s).await;
    for (question, expected) in QUESTIONS {
        // Semantic ranking alone: lexically these questions share no word with their
        // documents, and hybrid mode may put a document sharing one first.
        let res = search(&s, json!({"query": question, "k": 3, "mode": "semantic"})).await;
        let top = &res["hits"][0];
        assert_eq!(top["title"], *expected, "{question} -> {res}");
        assert!(top["score"].as_f64().unwrap() > 0.2, "{top}");
        assert_eq!(res["model"], "all-MiniLM-L6-v2");
        crate::helpers::assert_best_first(&res);
    }
    s.stop().await;
}

#[tokio::test]
async fn the_local_model_reports_its_passes_and_busy_time() {
    let s = TestServer::start().await;
    let before = s.get_json("/v1/performance/model/stats").await;
    assert_eq!(
        (before["model"].as_str(), before["local"].as_bool()),
        (Some("all-MiniLM-L6-v2"), Some(true))
    );
    load_corpus(&s).await;
    let ingested = s.get_json("/v1/performance/model/stats").await["stats"].clone();
    let texts = |v: &Value| v["texts"].as_u64().unwrap();
    assert!(
        texts(&ingested) >= texts(&before["stats"]) + CORPUS.len() as u64,
        "every document's chunks went through the model: {before} -> {ingested}"
    );
    assert!(ingested["busy_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(ingested["failed_passes"], 0);
    // An uncached query is one more pass of one text.
    search(
        &s,
        json!({"query": "a question nobody asked before", "k": 1}),
    )
    .await;
    let after = s.get_json("/v1/performance/model/stats").await["stats"].clone();
    assert_eq!(
        (
            after["passes"].as_u64().unwrap() - ingested["passes"].as_u64().unwrap(),
            texts(&after) - texts(&ingested)
        ),
        (1, 1)
    );
    let page = s.get("/metrics").await.text().await.unwrap();
    let line = page
        .lines()
        .find(|l| l.starts_with("strata_model_texts_total{model=\"all-MiniLM-L6-v2\"}"))
        .unwrap_or_else(|| panic!("no model texts in /metrics:\n{page}"));
    assert_eq!(
        line.rsplit(' ').next(),
        Some(texts(&after).to_string().as_str())
    );
    s.stop().await;
}

#[tokio::test]
async fn results_are_identical_after_a_restart_and_after_a_rebuild() {
    let s = TestServer::start().await;
    load_corpus(&s).await;
    let query = json!({"query": "natural science of the earth", "k": 5});
    let before = search(&s, query.clone()).await;
    let dir = s.stop_keep().await;
    let index = if crate::helpers::on_qdrant() {
        dir.path().join("data/vectors.qdrant.json")
    } else {
        dir.path().join("data/vectors.usearch")
    };
    // On PostgreSQL the index is pgvector's, inside the database.
    assert_eq!(
        index.exists(),
        !crate::helpers::on_postgres(),
        "the in-process index is saved on shutdown"
    );

    let s = TestServer::start_in(dir, |_| {}).await;
    let after_restart = search(&s, query.clone()).await;
    assert_eq!(before["hits"], after_restart["hits"]);
    let dir = s.stop_keep().await;

    // A missing (or corrupt) index is rebuilt from the stored vectors.
    if crate::helpers::on_qdrant() {
        std::fs::remove_dir_all(dir.path().join("data/vectors.qdrant/segments")).unwrap();
    } else {
        std::fs::write(dir.path().join("data/vectors.usearch"), b"not an index").unwrap();
    }
    let s = TestServer::start_in(dir, |_| {}).await;
    let after_rebuild = search(&s, query).await;
    let ids = |v: &Value| -> Vec<(String, u64)> {
        v["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["document_id"].as_str().unwrap().to_owned(),
                    h["chunk_ordinal"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(ids(&before), ids(&after_rebuild));
    s.stop().await;
}

#[tokio::test]
async fn filters_restrict_and_selective_filters_are_exhaustive() {
    let s = TestServer::start().await;
    load_corpus(&s).await;
    let res = search(
        &s,
        json!({"query": "bread", "k": 10, "filter": {"tags": ["science"]}}),
    )
    .await;
    assert_eq!(res["exhaustive"], true);
    let titles: Vec<&str> = res["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles.len(),
        3,
        "all three science documents, however unrelated: {titles:?}"
    );
    assert!(
        titles
            .iter()
            .all(|t| ["Tides", "Photosynthesis", "Volcanoes"].contains(t))
    );

    let docs = s.get_json("/v1/documents?tag=games&fields=id").await;
    let chess = docs["items"][0]["id"].as_str().unwrap().to_owned();
    let res = search(
        &s,
        json!({"query": "anything", "filter": {"document_ids": [chess]}}),
    )
    .await;
    assert_eq!(res["hits"].as_array().unwrap().len(), 1);
    assert_eq!(res["hits"][0]["title"], "Chess openings");

    let res = search(
        &s,
        json!({"query": "bees and honey", "k": 8, "min_score": 0.3}),
    )
    .await;
    let hits = res["hits"].as_array().unwrap();
    assert!(
        !hits.is_empty() && hits.len() < 8,
        "min_score drops weak hits: {res}"
    );
    assert!(hits.iter().all(|h| h["score"].as_f64().unwrap() >= 0.3));

    let none = search(
        &s,
        json!({"query": "x", "filter": {"tags": ["no-such-tag"]}}),
    )
    .await;
    assert_eq!(none["hits"], json!([]));
    s.stop().await;
}

#[tokio::test]
async fn stream_answers_ndjson_one_hit_per_line() {
    let s = TestServer::start().await;
    load_corpus(&s).await;
    let r = s
        .post_json(
            "/v1/search",
            json!({"query": "ocean", "k": 4, "stream": true}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    assert!(r.headers().contains_key("x-search-exhaustive"));
    let body = r.text().await.unwrap();
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["title"], "Tides");
    assert!(
        lines
            .iter()
            .all(|h| h["text"].is_string() && h["score"].is_number())
    );
    s.stop().await;
}

#[tokio::test]
async fn deleted_documents_disappear_from_search() {
    let s = TestServer::start().await;
    load_corpus(&s).await;
    let docs = s.get_json("/v1/documents?tag=games&fields=id").await;
    let chess = docs["items"][0]["id"].as_str().unwrap().to_owned();
    let r = s.delete(&format!("/v1/documents/{chess}")).await;
    assert_eq!(r.status(), 204);
    let res = search(
        &s,
        json!({"query": "Sicilian Defence chess opening", "k": 10}),
    )
    .await;
    assert!(
        res["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["title"] != "Chess openings")
    );
    assert_eq!(res["hits"].as_array().unwrap().len(), CORPUS.len() - 1);
    s.stop().await;
}

#[tokio::test]
async fn search_validation_errors_name_the_field() {
    let s = TestServer::start().await;
    for (body, field) in [
        (json!({"query": ""}), "query"),
        (json!({"query": "x", "k": 0}), "k"),
        (json!({"query": "x", "k": 101}), "k"),
        (json!({"query": "x", "min_score": 2.0}), "min_score"),
        (
            json!({"query": "x", "filter": {"tags": [""]}}),
            "filter.tags[0]",
        ),
    ] {
        let r = s.post_json("/v1/search", body.clone()).await;
        assert_eq!(
            assert_problem(r, 422, "validation_failed").await["field"],
            field,
            "{body}"
        );
    }
    let r = s
        .post_json(
            "/v1/search",
            json!({"query": "x", "filter": {"document_ids": ["nope"]}}),
        )
        .await;
    assert_problem(r, 422, "validation_failed").await;
    let r = s.post_json("/v1/search", json!({"q": "typo"})).await;
    assert_problem(r, 422, "validation_failed").await;
    s.stop().await;
}

#[tokio::test]
async fn embeddings_endpoint_speaks_openai() {
    let s = TestServer::start().await;
    let r = s
        .post_json("/v1/embeddings", json!({"input": ["A man is eating food.", "A man is eating a piece of bread."], "model": "all-MiniLM-L6-v2"}))
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "all-MiniLM-L6-v2");
    let a: Vec<f64> = serde_json::from_value(v["data"][0]["embedding"].clone()).unwrap();
    let b: Vec<f64> = serde_json::from_value(v["data"][1]["embedding"].clone()).unwrap();
    assert_eq!(a.len(), 384);
    assert_eq!(v["data"][1]["index"], 1);
    let cos: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    assert!((cos - 0.755).abs() < 0.03, "{cos}");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 10);
    assert_eq!(v["usage"]["prompt_tokens"], v["usage"]["total_tokens"]);

    // The OpenAI SDKs ask for base64 by default: little-endian f32.
    let r = s
        .post_json(
            "/v1/embeddings",
            json!({"input": "A man is eating food.", "encoding_format": "base64"}),
        )
        .await;
    let v: Value = r.json().await.unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f64> = bytes
        .chunks_exact(4)
        .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    assert_eq!(decoded.len(), 384);
    assert!(decoded.iter().zip(&a).all(|(x, y)| (x - y).abs() < 1e-4));

    // Errors in OpenAI's shape, with OpenAI's statuses: the official SDKs raise their typed
    // errors with strata's message.
    let r = s
        .post_json(
            "/v1/embeddings",
            json!({"input": "x", "model": "text-embedding-3-small"}),
        )
        .await;
    assert_eq!(r.status(), 404);
    let e = r.json::<serde_json::Value>().await.unwrap();
    assert_eq!(e["error"]["code"], "model_not_found", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("text-embedding-3-small")
    );
    for (body, field) in [
        (json!({"input": [[1, 2, 3]]}), "input"),
        (json!({"input": []}), "input"),
        (json!({"input": ["ok", ""]}), "input[1]"),
        (json!({"input": "x", "dimensions": 1536}), "dimensions"),
        (
            json!({"input": "x", "encoding_format": "int8"}),
            "encoding_format",
        ),
    ] {
        let r = s.post_json("/v1/embeddings", body.clone()).await;
        assert_eq!(r.status(), 400, "{body}");
        let e = r.json::<serde_json::Value>().await.unwrap();
        assert_eq!(e["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(e["error"]["param"], field, "{body}");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_remote_openai_compatible_embedder_can_replace_the_local_model() {
    // The provider is another strata server: its /v1/embeddings speaks the OpenAI protocol.
    let provider = TestServer::start().await;
    let url = format!("{}/v1", provider.base);
    let s = TestServer::start_with(move |e| {
        e.remote_embedder = Some(strata_engine::HttpSettings::new(url, "all-MiniLM-L6-v2"));
    })
    .await;
    load_corpus(&s).await;
    let res = search(
        &s,
        json!({"query": "How do leaves make sugar from light?", "k": 2}),
    )
    .await;
    assert_eq!(res["hits"][0]["title"], "Photosynthesis");
    assert_eq!(res["model"], "all-MiniLM-L6-v2");
    s.stop().await;
    provider.stop().await;
}

/// A stand-in embedding provider that counts the texts it is asked to embed.
async fn counting_provider() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::routing::post;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let state = seen.clone();
    let app = axum::Router::new().route(
        "/v1/embeddings",
        post(move |axum::Json(body): axum::Json<Value>| {
            let seen = state.clone();
            async move {
                let inputs: Vec<String> = serde_json::from_value(body["input"].clone()).unwrap();
                seen.lock().unwrap().extend(inputs.iter().cloned());
                let data: Vec<Value> = inputs
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        let v: Vec<f32> = (0..16)
                            .map(|d| ((t.len() + d * 7) % 11) as f32 + 0.5)
                            .collect();
                        json!({"index": i, "embedding": v})
                    })
                    .collect();
                axum::Json(json!({"data": data}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// A server whose embedder is [`counting_provider`], with chunks of 16 tokens.
async fn server_with_counting_provider()
-> (TestServer, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let (url, seen) = counting_provider().await;
    let s = TestServer::start_with(move |e| {
        e.remote_embedder = Some(strata_engine::HttpSettings::new(url, "counting"));
        e.jobs.chunk = strata_engine::chunk::ChunkConfig::new(16, 0).unwrap();
    })
    .await;
    (s, seen)
}

#[tokio::test]
async fn a_text_repeated_across_a_long_document_is_embedded_once() {
    let (s, seen) = server_with_counting_provider().await;
    // Hundreds of identical chunks: several embedding groups, each computed while the one
    // before it is stored.
    let text = "Tides rise and fall twice every day along the coast.\n\n".repeat(300);
    let d = s.create_text(&text, &[]).await;
    let job = s.wait_job(d["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let chunks = crate::helpers::all_chunks(&s, d["id"].as_str().unwrap()).await;
    assert!(chunks.len() >= 200, "{} chunks", chunks.len());
    assert!(chunks.iter().all(|c| c["embedded"] == true));
    let texts = seen.lock().unwrap().clone();
    let tides = texts.iter().filter(|t| t.starts_with("Tides")).count();
    // The provider also saw the start-up probe of the model's dimensions.
    assert_eq!(
        (tides, texts.len()),
        (1, 2),
        "one distinct text, embedded once: {texts:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_chunk_whose_text_was_embedded_before_is_not_embedded_again() {
    let (s, seen) = server_with_counting_provider().await;
    let shared = "The shared paragraph appears in both documents word for word.";
    let a = s
        .create_text(
            &format!("{shared}\n\nOnly the first document says this sentence."),
            &[],
        )
        .await;
    s.wait_job(a["job_id"].as_str().unwrap()).await;
    let after_first = seen.lock().unwrap().len();
    let b = s
        .create_text(
            &format!("{shared}\n\nThe second document ends differently here."),
            &[],
        )
        .await;
    let job = s.wait_job(b["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded");
    let texts = seen.lock().unwrap().clone();
    let second: Vec<&String> = texts[after_first..].iter().collect();
    assert_eq!(
        second.len(),
        1,
        "only the new paragraph is embedded: {second:?}"
    );
    assert!(second[0].contains("ends differently"));
    assert_eq!(
        texts
            .iter()
            .filter(|t| t.contains("shared paragraph"))
            .count(),
        1
    );
    // Both documents' chunks are embedded and searchable.
    let chunks = crate::helpers::all_chunks(&s, b["id"].as_str().unwrap()).await;
    assert!(chunks.iter().all(|c| c["embedded"] == true));
    s.stop().await;
}
