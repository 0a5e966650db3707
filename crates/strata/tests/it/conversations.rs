//! Conversations end to end: turns answered through the gateway (a local upstream speaking
//! OpenAI's protocol), grounded in the tenant's documents with citations, the context bounded,
//! messages paged, deletion.

use std::time::Duration;

use serde_json::{Value, json};

use super::helpers::TestServer;
use super::upstream::Upstream;

async fn wait_ready(s: &TestServer, id: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while s.get_json(&format!("/v1/documents/{id}")).await["status"] != "ready" {
        assert!(
            std::time::Instant::now() < deadline,
            "document {id} not ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn turns_are_grounded_in_the_tenants_documents_and_keep_their_context() {
    let up = Upstream::start().await;
    let u = up.settings("u");
    let s = TestServer::start_custom(
        tempfile::tempdir().unwrap(),
        |_| {},
        move |srv| {
            srv.gateway.upstreams = vec![u];
        },
    )
    .await;
    let lighthouse = s
        .create_text(
            "The harbour lighthouse was built in 1874 and its lamp burns paraffin.",
            &[],
        )
        .await;
    let bakery = s
        .create_text(
            "The bakery on Mill Street sells rye bread every Tuesday morning.",
            &[],
        )
        .await;
    for d in [&lighthouse, &bakery] {
        wait_ready(&s, d["id"].as_str().unwrap()).await;
    }
    let r = s
        .post_json(
            "/v1/conversations",
            json!({"title": "town", "model": "mock-1", "system": "Be brief."}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let conv: Value = r.json().await.unwrap();
    let id = conv["id"].as_str().unwrap().to_owned();
    let ask = |content: &str, extra: Value| {
        let mut body = json!({"content": content});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (client, url) = (
            s.client.clone(),
            s.url(&format!("/v1/conversations/{id}/messages")),
        );
        async move { client.post(url).json(&body).send().await.unwrap() }
    };

    let r = ask("When was the harbour lighthouse built?", json!({"k": 1})).await;
    assert_eq!(r.status(), 200);
    let turn: Value = r.json().await.unwrap();
    assert_eq!(turn["question"]["seq"], 1);
    assert_eq!(turn["answer"]["seq"], 2);
    assert_eq!(turn["answer"]["role"], "assistant");
    assert_eq!(
        turn["answer"]["content"],
        "echo: When was the harbour lighthouse built?"
    );
    let cited = &turn["answer"]["citations"][0];
    assert_eq!(cited["document_id"], lighthouse["id"], "{turn}");
    assert_eq!(cited["n"], 1);
    // The upstream got the standing instruction, the numbered passage, then the question.
    let (_, sent) = up.seen.requests.lock().unwrap().last().unwrap().clone();
    let system = sent["messages"][0]["content"].as_str().unwrap();
    assert!(system.starts_with("Be brief."), "{system}");
    assert!(
        system.contains("[1]") && system.contains("1874"),
        "{system}"
    );
    assert!(
        !system.contains("rye bread"),
        "only the passage search chose: {system}"
    );

    // The next turn carries the conversation so far.
    ask("And what does its lamp burn?", json!({})).await;
    let (_, sent) = up.seen.requests.lock().unwrap().last().unwrap().clone();
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(
        sent["messages"][1]["content"],
        "When was the harbour lighthouse built?"
    );

    // Bounded context: one earlier message, and no grounding.
    ask("Anything else?", json!({"context_messages": 1, "k": 0})).await;
    let (_, sent) = up.seen.requests.lock().unwrap().last().unwrap().clone();
    let msgs = sent["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "{sent}");
    assert_eq!(msgs[1]["role"], "assistant");
    assert!(!msgs[0]["content"].as_str().unwrap().contains("[1]"));

    // Messages page newest first; the conversation counts them.
    let page = s
        .get_json(&format!("/v1/conversations/{id}/messages?limit=4"))
        .await;
    let seqs: Vec<u64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [6, 5, 4, 3]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = s
        .get_json(&format!(
            "/v1/conversations/{id}/messages?limit=4&cursor={cursor}"
        ))
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 2);
    assert!(rest["next_cursor"].is_null());
    assert_eq!(
        s.get_json(&format!("/v1/conversations/{id}")).await["message_count"],
        6
    );
    let list = s.get_json("/v1/conversations").await;
    assert_eq!(list["items"][0]["id"], id.as_str());

    // Errors.
    let r = s.post_json("/v1/conversations", json!({})).await;
    let bare: Value = r.json().await.unwrap();
    let r = s
        .post_json(
            &format!(
                "/v1/conversations/{}/messages",
                bare["id"].as_str().unwrap()
            ),
            json!({"content": "hi"}),
        )
        .await;
    assert_eq!(r.status(), 422, "no model anywhere");
    let r = s
        .post_json(
            "/v1/conversations/nope/messages",
            json!({"content": "hi", "model": "mock-1"}),
        )
        .await;
    assert_eq!(r.status(), 404);
    let r = ask("", json!({})).await;
    assert_eq!(r.status(), 422);

    assert_eq!(
        s.delete(&format!("/v1/conversations/{id}")).await.status(),
        204
    );
    assert_eq!(
        s.get(&format!("/v1/conversations/{id}")).await.status(),
        404
    );
    assert_eq!(
        s.get(&format!("/v1/conversations/{id}/messages"))
            .await
            .status(),
        404
    );
    s.stop().await;
}

#[tokio::test]
async fn documents_are_summarised_in_the_background_through_the_gateway() {
    let up = Upstream::start().await;
    let mut u = up.settings("u");
    u.models = vec!["mock-1".into()];
    let s = TestServer::start_custom(
        tempfile::tempdir().unwrap(),
        |_| {},
        move |srv| {
            srv.gateway.upstreams = vec![u];
        },
    )
    .await;
    let text: String = (0..700)
        .map(|i| format!("Sentence number {i} describes the old harbour and its ships. "))
        .collect();
    let doc = s.create_text(&text, &[]).await;
    let id = doc["id"].as_str().unwrap().to_owned();
    wait_ready(&s, &id).await;
    assert_eq!(
        s.get(&format!("/v1/documents/{id}/summary")).await.status(),
        404,
        "none yet"
    );

    let r = s
        .post_json(&format!("/v1/documents/{id}/summary"), json!({}))
        .await;
    assert_eq!(r.status(), 202);
    let first: Value = r.json().await.unwrap();
    let r = s
        .post_json(
            &format!("/v1/documents/{id}/summary"),
            json!({"max_tokens": 200}),
        )
        .await;
    let job: Value = r.json().await.unwrap();
    // Both jobs end before the summary is read: the one that ends last writes it (and a
    // write after the first read would make the second a miss).
    s.wait_job(first["id"].as_str().unwrap()).await;
    let done = s.wait_job(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let stages = done["stages"].as_array().unwrap();
    let map = stages.iter().find(|st| st["stage"] == "map").unwrap();
    let parts = map["total"].as_u64().unwrap();
    assert!(parts >= 2, "{done}");
    assert_eq!(map["done"], parts);

    let r = s.get(&format!("/v1/documents/{id}/summary")).await;
    assert_eq!(r.status(), 200);
    let summary: Value = r.json().await.unwrap();
    assert_eq!(summary["parts"].as_u64().unwrap(), parts);
    assert_eq!(summary["model"], "mock-1");
    assert!(
        summary["summary"]
            .as_str()
            .unwrap()
            .starts_with("echo: These are summaries"),
        "the reduce step's answer: {summary}"
    );
    let r = s.get(&format!("/v1/documents/{id}/summary")).await;
    assert_eq!(r.headers()["x-cache"], "HIT-L1");
    // Every model call went through the gateway and was metered.
    let asked: Vec<Value> = up
        .seen
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| b["max_tokens"].clone())
        .collect();
    assert!(
        asked.contains(&json!(200)) && asked.contains(&json!(512)),
        "{asked:?}"
    );

    // Deleting the document deletes its summary.
    assert_eq!(s.delete(&format!("/v1/documents/{id}")).await.status(), 204);
    assert_eq!(
        s.get(&format!("/v1/documents/{id}/summary")).await.status(),
        404
    );
    s.stop().await;

    // Without an upstream the job fails at once, saying why.
    let bare = TestServer::start().await;
    // And a conversation's message names the field at fault: the model no upstream serves
    // (the conversation itself exists, so not 404).
    let c = bare.post_json("/v1/conversations", json!({})).await;
    assert_eq!(c.status(), 201);
    let c: Value = c.json().await.unwrap();
    let r = bare
        .post_json(
            &format!("/v1/conversations/{}/messages", c["id"].as_str().unwrap()),
            json!({ "content": "hello" }),
        )
        .await;
    let problem = crate::helpers::assert_problem(r, 422, "validation_failed").await;
    assert_eq!(problem["field"], "model", "{problem}");
    let doc = bare
        .create_text("A short note about nothing in particular.", &[])
        .await;
    let id = doc["id"].as_str().unwrap();
    wait_ready(&bare, id).await;
    let r = bare
        .post_json(&format!("/v1/documents/{id}/summary"), json!({}))
        .await;
    assert_eq!(r.status(), 422, "no model to default to");
    let r = bare
        .post_json(
            &format!("/v1/documents/{id}/summary"),
            json!({"model": "m"}),
        )
        .await;
    let job: Value = r.json().await.unwrap();
    let done = bare.wait_job(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed");
    assert!(
        done["error"].as_str().unwrap().contains("no LLM upstream"),
        "{done}"
    );
    bare.stop().await;
}
