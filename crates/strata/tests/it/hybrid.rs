//! Hybrid, semantic and lexical search with the real model, on whichever backend the run
//! uses: the lexical index follows every write, the tenant and filters apply inside it, the
//! modes are validated and cached apart.

use serde_json::{Value, json};

use crate::helpers::{TestServer, assert_problem};

/// Uploads `(title, text, tags)` as `tenant` and waits for ingestion; the document ids.
async fn load(s: &TestServer, tenant: &str, docs: &[(&str, &str, &[&str])]) -> Vec<String> {
    let mut out = Vec::new();
    for (title, text, tags) in docs {
        let r = s
            .client
            .post(s.url("/v1/documents"))
            .header("x-tenant", tenant)
            .json(&json!({"text": text, "title": title, "tags": tags}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let v: Value = r.json().await.unwrap();
        out.push(v["document"]["id"].as_str().unwrap().to_owned());
    }
    // Until none of the tenant's jobs is waiting or running.
    for _ in 0..600 {
        let mut pending = 0;
        for status in ["queued", "running"] {
            let page = s
                .client
                .get(s.url(&format!("/v1/jobs?status={status}")))
                .header("x-tenant", tenant)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap();
            pending += page["items"].as_array().map_or(0, Vec::len);
        }
        if pending == 0 {
            return out;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("ingestion did not finish");
}

/// A server whose tenants are named by the `x-tenant` header; `acme` is an admin.
async fn start() -> TestServer {
    TestServer::with_tenant_header(&["acme"]).await
}

async fn post_as(s: &TestServer, tenant: &str, path: &str, body: Value) -> reqwest::Response {
    s.client
        .post(s.url(path))
        .header("x-tenant", tenant)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn search_as(s: &TestServer, tenant: &str, body: Value) -> Value {
    let r = post_as(s, tenant, "/v1/search", body.clone()).await;
    assert_eq!(r.status(), 200, "{body}");
    r.json().await.unwrap()
}

fn titles(res: &Value) -> Vec<String> {
    res["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["title"].as_str().unwrap().to_owned())
        .collect()
}

const DOCS: &[(&str, &str, &[&str])] = &[
    (
        "Pump maintenance",
        "Replace the impeller of the XR-7720 circulation pump every 5,000 hours and check the \
         seals for leaks.",
        &["manuals"],
    ),
    (
        "Garden water features",
        "A small fountain needs a submersible pump; clean its filter every few weeks in summer.",
        &["home"],
    ),
    (
        "Quarterly report",
        "Revenue grew in every region; operating costs fell after the move to the new plant.",
        &["finance"],
    ),
    (
        "Zephyrine protocol",
        "The committee met twice and agreed the schedule for the next audit.",
        &["finance"],
    ),
];

#[tokio::test]
async fn every_mode_reports_both_components_and_names_find_their_documents() {
    let s = start().await;
    load(&s, "acme", DOCS).await;
    // A part number only the lexical side can see as such.
    let res = search_as(&s, "acme", json!({"query": "XR-7720 impeller", "k": 4})).await;
    assert_eq!(res["mode"], "hybrid");
    assert_eq!(titles(&res)[0], "Pump maintenance", "{res}");
    assert!(
        res["hits"][0]["lexical_score"].as_f64().unwrap() > 0.0,
        "{res}"
    );
    for hit in res["hits"].as_array().unwrap() {
        assert!(hit["semantic_score"].is_number(), "{hit}");
        // Null only for a chunk the lexical side did not propose.
        assert!(
            hit["lexical_score"].is_null() || hit["lexical_score"].as_f64().unwrap() > 0.0,
            "{hit}"
        );
        let score = hit["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score), "blend scores are 0..1: {hit}");
    }
    crate::helpers::assert_best_first(&res);

    let lexical = search_as(&s, "acme", json!({"query": "XR-7720", "mode": "lexical"})).await;
    assert_eq!(titles(&lexical), ["Pump maintenance"], "{lexical}");
    let hit = &lexical["hits"][0];
    assert!(
        hit["semantic_score"].is_null(),
        "lexical mode does not embed: {hit}"
    );
    assert_eq!(hit["score"], hit["lexical_score"]);
    assert!(hit["lexical_score"].as_f64().unwrap() > 0.0);

    let semantic = search_as(
        &s,
        "acme",
        json!({"query": "fountain pump", "mode": "semantic"}),
    )
    .await;
    assert_eq!(semantic["mode"], "semantic");
    let hit = &semantic["hits"][0];
    assert_eq!(hit["score"], hit["semantic_score"]);
    assert!(
        hit["lexical_score"].is_null(),
        "semantic mode does not rank by BM25: {hit}"
    );

    // The title is indexed with the chunks: a word only the title has finds the document,
    // in both the lexical and the semantic ranking.
    for mode in ["lexical", "hybrid"] {
        let res = search_as(
            &s,
            "acme",
            json!({"query": "zephyrine", "mode": mode, "k": 1}),
        )
        .await;
        assert_eq!(titles(&res), ["Zephyrine protocol"], "{mode}: {res}");
    }
    let res = search_as(
        &s,
        "acme",
        json!({"query": "Zephyrine protocol", "mode": "semantic", "k": 1}),
    )
    .await;
    assert_eq!(
        titles(&res),
        ["Zephyrine protocol"],
        "the title is embedded: {res}"
    );

    // semantic_ratio moves the ranking: 0 is the lexical order, 1 the semantic order.
    let q = "pump filter leaks";
    let lex = search_as(&s, "acme", json!({"query": q, "mode": "lexical"})).await;
    let sem = search_as(&s, "acme", json!({"query": q, "mode": "semantic", "k": 10})).await;
    let at0 = search_as(&s, "acme", json!({"query": q, "semantic_ratio": 0.0})).await;
    let at1 = search_as(&s, "acme", json!({"query": q, "semantic_ratio": 1.0})).await;
    let lexical_titles = titles(&lex);
    assert_eq!(titles(&at0)[..lexical_titles.len()], lexical_titles[..]);
    assert_eq!(titles(&at1), titles(&sem));
    s.stop().await;
}

#[tokio::test]
async fn the_lexical_index_follows_writes_and_keeps_tenants_and_filters_inside() {
    let s = start().await;
    let ids = load(&s, "acme", DOCS).await;
    load(
        &s,
        "globex",
        &[(
            "Globex pumps",
            "The XR-7720 pump is ours too.",
            &["manuals"],
        )],
    )
    .await;

    // Another tenant's identical words are never returned, in any mode.
    for mode in ["lexical", "hybrid", "semantic"] {
        let res = search_as(&s, "acme", json!({"query": "XR-7720 pump", "mode": mode})).await;
        assert!(
            !titles(&res).contains(&"Globex pumps".to_owned()),
            "{mode}: {res}"
        );
        let res = search_as(&s, "globex", json!({"query": "XR-7720 pump", "mode": mode})).await;
        assert_eq!(titles(&res), ["Globex pumps"], "{mode}: {res}");
    }
    // Filters apply inside the lexical query: the best match is excluded, the next returned.
    let res = search_as(
        &s,
        "acme",
        json!({"query": "pump", "mode": "lexical", "filter": {"tags": ["home"]}}),
    )
    .await;
    assert_eq!(titles(&res), ["Garden water features"], "{res}");
    let res = search_as(
        &s,
        "acme",
        json!({"query": "pump", "mode": "lexical", "filter": {"document_ids": [ids[0]]}}),
    )
    .await;
    assert_eq!(titles(&res), ["Pump maintenance"], "{res}");

    // A new title is searchable at once; the old one is gone.
    let r = s
        .client
        .patch(s.url(&format!("/v1/documents/{}", ids[2])))
        .header("x-tenant", "acme")
        .json(&json!({"title": "Kestrel figures"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let res = search_as(&s, "acme", json!({"query": "kestrel", "mode": "lexical"})).await;
    assert_eq!(titles(&res), ["Kestrel figures"], "{res}");
    let res = search_as(&s, "acme", json!({"query": "quarterly", "mode": "lexical"})).await;
    assert!(res["hits"].as_array().unwrap().is_empty(), "{res}");

    // A deleted document's chunks leave the lexical index with it.
    let r = s
        .client
        .delete(s.url(&format!("/v1/documents/{}", ids[0])))
        .header("x-tenant", "acme")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let res = search_as(&s, "acme", json!({"query": "impeller", "mode": "lexical"})).await;
    assert!(res["hits"].as_array().unwrap().is_empty(), "{res}");
    // The database's own optimisation copes with the lexical index.
    let r = post_as(&s, "acme", "/v1/performance/database/optimize", json!({})).await;
    assert!(r.status().is_success(), "{:?}", r.text().await);

    // After a restart the index is what the database holds: the new title, not the deleted
    // document, and each tenant's own chunks.
    let dir = s.stop_keep().await;
    let s = TestServer::with_tenant_header_in(dir, &["acme"]).await;
    let res = search_as(&s, "acme", json!({"query": "kestrel", "mode": "lexical"})).await;
    assert_eq!(titles(&res), ["Kestrel figures"], "{res}");
    for query in ["impeller", "quarterly"] {
        let res = search_as(&s, "acme", json!({"query": query, "mode": "lexical"})).await;
        assert!(res["hits"].as_array().unwrap().is_empty(), "{query}: {res}");
    }
    let res = search_as(
        &s,
        "globex",
        json!({"query": "XR-7720 pump", "mode": "lexical"}),
    )
    .await;
    assert_eq!(titles(&res), ["Globex pumps"], "{res}");
    s.stop().await;
}

#[tokio::test]
async fn modes_are_validated_and_cached_apart() {
    let s = start().await;
    load(&s, "acme", &DOCS[..2]).await;
    for (body, field) in [
        (json!({"query": "pump", "mode": "fuzzy"}), None),
        (
            json!({"query": "pump", "semantic_ratio": 1.5}),
            Some("semantic_ratio"),
        ),
        (
            json!({"query": "pump", "mode": "semantic", "semantic_ratio": 0.3}),
            Some("semantic_ratio"),
        ),
        (
            json!({"query": "pump", "mode": "lexical", "fusion": "rrf"}),
            Some("fusion"),
        ),
        (
            json!({"query": "pump", "mode": "lexical", "min_score": 0.2}),
            Some("min_score"),
        ),
        (json!({"query": "pump", "fusion": "max"}), None),
    ] {
        let problem = assert_problem(
            post_as(&s, "acme", "/v1/search", body.clone()).await,
            422,
            "validation_failed",
        )
        .await;
        if let Some(field) = field {
            assert!(problem.to_string().contains(field), "{body} -> {problem}");
        }
    }
    // Queries with nothing to match lexically are valid and find nothing lexically.
    let res = search_as(&s, "acme", json!({"query": "?!", "mode": "lexical"})).await;
    assert!(res["hits"].as_array().unwrap().is_empty());
    // Query syntax (FTS5's, tsquery's) in a query is text, not syntax.
    let res = search_as(
        &s,
        "acme",
        json!({"query": "pump OR NEAR(\"x\" AND", "mode": "lexical"}),
    )
    .await;
    assert!(!res["hits"].as_array().unwrap().is_empty());

    // The same query in each mode is its own cache entry.
    let mut seen = Vec::new();
    for mode in ["hybrid", "semantic", "lexical", "hybrid"] {
        let res = search_as(&s, "acme", json!({"query": "pump", "mode": mode})).await;
        assert_eq!(res["mode"], mode);
        seen.push(res);
    }
    assert_eq!(seen[0], seen[3]);
    let rrf = search_as(&s, "acme", json!({"query": "pump", "fusion": "rrf"})).await;
    assert_ne!(rrf["hits"][0]["score"], seen[0]["hits"][0]["score"]);
    // NDJSON streaming in lexical mode.
    let body = json!({"query": "pump", "mode": "lexical", "stream": true});
    let r = post_as(&s, "acme", "/v1/search", body).await;
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let body = r.text().await.unwrap();
    assert!(!body.is_empty());
    for line in body.lines() {
        let hit: Value = serde_json::from_str(line).unwrap();
        assert!(hit["lexical_score"].as_f64().unwrap() > 0.0);
    }
    s.stop().await;
}
