//! The MCP endpoint at the protocol level (the official SDK drives it in `scripts/mcp-check`):
//! JSON-RPC framing, notifications, errors, tools acting for the caller's tenant only, and
//! browser pages of other origins refused.

use serde_json::{Value, json};

use crate::helpers::TestServer;

async fn rpc(s: &TestServer, tenant: &str, body: Value) -> reqwest::Response {
    s.request_as(tenant, reqwest::Method::POST, "/mcp", Some(body))
        .await
}

async fn call_tool(s: &TestServer, tenant: &str, name: &str, args: Value) -> Value {
    let r = rpc(
        s,
        tenant,
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
               "params": {"name": name, "arguments": args}}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["id"], 7);
    v["result"].clone()
}

#[tokio::test]
async fn json_rpc_framing_tools_and_tenancy() {
    let s = TestServer::with_tenant_header(&[]).await;
    let r = rpc(
        &s,
        "ann",
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
               "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                          "clientInfo": {"name": "test", "version": "0"}}}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(v["result"]["serverInfo"]["name"], "strata");
    // A notification is accepted with no body.
    let r = rpc(
        &s,
        "ann",
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(r.status(), 202);
    assert!(r.bytes().await.unwrap().is_empty());
    // Framing errors.
    let r = s
        .client
        .post(s.url("/mcp"))
        .header("x-tenant", "ann")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32700);
    let r = rpc(
        &s,
        "ann",
        json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]),
    )
    .await;
    assert_eq!(r.status(), 400);
    let v: Value = rpc(
        &s,
        "ann",
        json!({"jsonrpc": "2.0", "id": 2, "method": "nope"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["error"]["code"], -32601);
    let v: Value = rpc(
        &s,
        "ann",
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let names: Vec<&str> = v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "memory_add",
            "memory_search",
            "memory_delete",
            "document_search"
        ]
    );
    // GET offers no stream.
    let r = s.get("/mcp").await;
    assert_eq!(r.status(), 405);

    // Tools act for the caller's tenant.
    let added = call_tool(
        &s,
        "ann",
        "memory_add",
        json!({"text": "Ann's bike is red"}),
    )
    .await;
    assert_eq!(added["isError"], false);
    assert_eq!(added["structuredContent"]["status"], "created");
    let found = call_tool(&s, "ann", "memory_search", json!({"query": "bike colour"})).await;
    assert_eq!(
        found["structuredContent"]["hits"][0]["memory"]["text"],
        "Ann's bike is red"
    );
    let other = call_tool(&s, "ben", "memory_search", json!({"query": "bike colour"})).await;
    assert_eq!(other["structuredContent"]["hits"], json!([]));
    let id = added["structuredContent"]["memory"]["id"].as_str().unwrap();
    let stolen = call_tool(&s, "ben", "memory_delete", json!({"id": id})).await;
    assert_eq!(stolen["isError"], true);
    assert!(
        stolen["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("not_found")
    );
    // Refused arguments are tool errors; an unknown tool is a protocol error.
    let bad = call_tool(
        &s,
        "ann",
        "memory_add",
        json!({"text": "x", "importance": 3}),
    )
    .await;
    assert_eq!(bad["isError"], true);
    let v: Value = rpc(
        &s,
        "ann",
        json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "nope"}}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["error"]["code"], -32602);

    // A page of another origin is refused; the server's own origin is not.
    let host = s.base.trim_start_matches("http://").to_owned();
    for (origin, status) in [
        ("http://evil.example".to_owned(), 403),
        (format!("http://{host}"), 200),
    ] {
        let r = s
            .client
            .post(s.url("/mcp"))
            .header("x-tenant", "ann")
            .header("origin", origin.as_str())
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{origin}");
    }
    s.stop().await;
}
