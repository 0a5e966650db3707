//! `/mcp`: a Model Context Protocol server over the streamable HTTP transport, so agent
//! frameworks and desktop assistants use strata as their memory and document search without
//! glue code.
//!
//! Stateless: each `POST` carries one JSON-RPC message (batches, dropped from the transport
//! in its 2025-06-18 revision, are refused with 400) and a request is answered with one
//! `application/json` response; notifications and responses are accepted
//! with 202. No session id is issued and no server-initiated stream is offered (`GET`
//! is not routed, so it answers 405, as the transport allows). The caller is authenticated like every other
//! route (bearer token or trusted header), so a tool acts for the caller's tenant only.
//! Tools: `memory_add`, `memory_search`, `memory_delete` and `document_search`; their
//! arguments are the HTTP API's request bodies, validated the same way, and a refused
//! argument is a tool result with `isError`, as MCP asks, not a protocol error.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use strata_engine::memory::{AddMemory, MemorySearch};
use strata_engine::search::SearchRequest;
use strata_engine::{MemoryId, TenantId};

use crate::error::{ApiError, Code};
use crate::extract::Tenant;
use crate::{AppState, cached};

/// Protocol revisions this server speaks, newest first.
const VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// JSON-RPC error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;

/// `POST /mcp`
#[utoipa::path(
    post,
    path = "/mcp",
    operation_id = "mcp",
    tag = "memories",
    summary = "Model Context Protocol (streamable HTTP)",
    description = "One JSON-RPC 2.0 message per request: `initialize`, `ping`, \
                   `tools/list`, `tools/call` with the tools `memory_add`, `memory_search`, \
                   `memory_delete` and `document_search`, acting for the caller's tenant. \
                   Requests are answered with `application/json`; notifications and responses \
                   with 202 and no body. A request from a browser page of another origin is \
                   refused (403).",
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, description = "The JSON-RPC response", body = Object),
        (status = 202, description = "A notification or response, accepted"),
        (status = 400, description = "Not JSON, or not one JSON-RPC message: a JSON-RPC error", body = Object),
        (status = 403, description = "`forbidden`: an Origin other than this server's"),
        (status = 415, description = "`unsupported_media_type`: not JSON"),
    ),
)]
pub async fn post(
    State(app): State<AppState>,
    tenant: Tenant,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_origin(&headers)?;
    if !headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        })
    {
        return Err(ApiError::new(
            Code::UnsupportedMediaType,
            "send JSON-RPC messages as application/json",
        ));
    }
    let message: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            let err = rpc_error(Value::Null, PARSE_ERROR, &format!("not JSON: {e}"));
            return Ok((StatusCode::BAD_REQUEST, Json(err)).into_response());
        }
    };
    let Value::Object(message) = message else {
        // Batches were dropped from the transport (2025-06-18); anything else is no message.
        let err = rpc_error(
            Value::Null,
            INVALID_REQUEST,
            "send one JSON-RPC message, an object",
        );
        return Ok((StatusCode::BAD_REQUEST, Json(err)).into_response());
    };
    Ok(match handle(&app, &tenant.0, message).await {
        Some(r) => Json(r).into_response(),
        None => StatusCode::ACCEPTED.into_response(),
    })
}

/// Refuses a browser page of another origin (DNS rebinding): an `Origin`, when sent, must
/// name the host the request was sent to.
fn check_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .split_once("://")
        .map_or("", |(_, rest)| rest.trim_end_matches('/'));
    if !host.is_empty() && origin_host.eq_ignore_ascii_case(host) {
        return Ok(());
    }
    Err(ApiError::new(
        Code::Forbidden,
        "MCP requests from a page of another origin are refused",
    ))
}

/// Answers one message: `None` for a notification or a response.
async fn handle(
    app: &AppState,
    tenant: &TenantId,
    m: serde_json::Map<String, Value>,
) -> Option<Value> {
    let id = m.get("id").cloned();
    let Some(method) = m.get("method").and_then(Value::as_str) else {
        // A response to a request strata never sends, or garbage without an id.
        return id.map(|id| rpc_error(id, INVALID_REQUEST, "a request needs a method"));
    };
    let id = id?; // A notification: nothing to answer.
    if m.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Some(rpc_error(id, INVALID_REQUEST, "jsonrpc must be \"2.0\""));
    }
    let params = m.get("params").cloned().unwrap_or(Value::Null);
    let result = match method {
        "initialize" => Ok(initialize(&params)),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({ "tools": tools() })),
        "tools/call" => call(app, tenant, params).await,
        other => Err((METHOD_NOT_FOUND, format!("unknown method {other:?}"))),
    };
    Some(match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err((code, message)) => rpc_error(id, code, &message),
    })
}

fn rpc_error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn initialize(params: &Value) -> Value {
    let asked = params.get("protocolVersion").and_then(Value::as_str);
    let version = asked
        .filter(|v| VERSIONS.contains(v))
        .unwrap_or(VERSIONS[0]);
    json!({
        "protocolVersion": version,
        "capabilities": { "tools": { "listChanged": false } },
        "serverInfo": { "name": "strata", "version": env!("CARGO_PKG_VERSION") },
        "instructions": "Long-term memory and document search for the authenticated tenant. \
            Call memory_search before answering questions about the user; call memory_add \
            when the user states a lasting fact or preference (give a key such as \
            'home_city' for facts that can change, so a new value replaces the old one)."
    })
}

/// The tools and their input schemas (the HTTP API's bodies, in brief).
fn tools() -> Value {
    json!([
        {
            "name": "memory_add",
            "description": "Remember a fact about the user. Near-duplicates merge into the \
                existing memory; a new text under an existing key replaces the old memory \
                (kept as history). Returns whether it was created, merged or superseded.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "text": {"type": "string", "minLength": 1, "maxLength": 4000},
                    "importance": {"type": "number", "minimum": 0, "maximum": 1},
                    "metadata": {"type": "object"},
                    "session": {"type": "string"},
                    "occurred_at": {"type": "string", "format": "date-time"},
                    "key": {"type": "string"},
                    "supersedes": {"type": "string", "description": "id of the memory this replaces"}
                },
                "required": ["text"],
                "additionalProperties": false
            }
        },
        {
            "name": "memory_search",
            "description": "Recall the user's memories most relevant to a query, ranked by \
                similarity, recency, importance and use; each hit explains its score.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "minLength": 1, "maxLength": 2000},
                    "k": {"type": "integer", "minimum": 1, "maximum": 100},
                    "session": {"type": "string"},
                    "filter": {"type": "object"},
                    "weights": {"type": "object"},
                    "min_score": {"type": "number", "minimum": 0, "maximum": 1},
                    "record_access": {"type": "boolean"}
                },
                "required": ["query"],
                "additionalProperties": false
            }
        },
        {
            "name": "memory_delete",
            "description": "Forget a memory (and the memories it replaced).",
            "inputSchema": {
                "type": "object",
                "properties": {"id": {"type": "string"}},
                "required": ["id"],
                "additionalProperties": false
            }
        },
        {
            "name": "document_search",
            "description": "Search the tenant's documents (hybrid semantic and lexical by \
                default); returns the best passages with their document ids and titles.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "minLength": 1, "maxLength": 4096},
                    "k": {"type": "integer", "minimum": 1, "maximum": 100},
                    "mode": {"type": "string", "enum": ["hybrid", "semantic", "lexical"]},
                    "filter": {"type": "object"}
                },
                "required": ["query"],
                "additionalProperties": false
            }
        }
    ])
}

/// Runs a tool: a protocol error for an unknown tool, else a tool result (with `isError`
/// when the tool refused its arguments or failed).
async fn call(app: &AppState, tenant: &TenantId, params: Value) -> Result<Value, (i64, String)> {
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .ok_or((INVALID_PARAMS, "tools/call needs a tool name".to_owned()))?;
    let args = match params.get("arguments") {
        None | Some(Value::Null) => json!({}),
        Some(a) => a.clone(),
    };
    let outcome: Result<Value, String> = match name {
        "memory_add" => match serde_json::from_value::<AddMemory>(args) {
            Ok(m) => app
                .engine
                .memories()
                .add(tenant, vec![m])
                .await
                .map(|mut r| to_value(r.remove(0)))
                .map_err(|e| message(ApiError::from(e))),
            Err(e) => Err(format!("arguments: {e}")),
        },
        "memory_search" => match serde_json::from_value::<MemorySearch>(args) {
            Ok(q) => app
                .engine
                .memories()
                .search(tenant, q)
                .await
                .map(to_value)
                .map_err(|e| message(ApiError::from(e))),
            Err(e) => Err(format!("arguments: {e}")),
        },
        "memory_delete" => match args.get("id").and_then(Value::as_str) {
            Some(id) => match MemoryId::parse_or_not_found(id) {
                Ok(id) => app
                    .engine
                    .memories()
                    .delete(tenant, id)
                    .await
                    .map(|()| json!({"deleted": id}))
                    .map_err(|e| message(ApiError::from(e))),
                Err(e) => Err(message(ApiError::from(e))),
            },
            None => Err("arguments: id is required".to_owned()),
        },
        "document_search" => match serde_json::from_value::<SearchRequest>(args) {
            Ok(req) => document_search(app, tenant, req).await.map_err(message),
            Err(e) => Err(format!("arguments: {e}")),
        },
        other => return Err((INVALID_PARAMS, format!("unknown tool {other:?}"))),
    };
    Ok(match outcome {
        Ok(v) => json!({
            "content": [{"type": "text", "text": v.to_string()}],
            "structuredContent": v,
            "isError": false
        }),
        Err(text) => json!({"content": [{"type": "text", "text": text}], "isError": true}),
    })
}

/// A document search through the cache, as `POST /v1/search` answers it.
async fn document_search(
    app: &AppState,
    tenant: &TenantId,
    mut req: SearchRequest,
) -> Result<Value, ApiError> {
    req.stream = false;
    req.check()?;
    let read = app.engine.cache_policy().search(tenant, &req).keyed();
    let lookup = cached::search(app, tenant, read, &req).await?;
    serde_json::from_slice(&cached::json_body(lookup.value))
        .map_err(|_| ApiError::new(Code::Internal, "cached body unreadable"))
}

fn to_value<T: serde::Serialize>(v: T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// A tool's error text: the problem's code and detail (internal detail is never in it).
fn message(e: ApiError) -> String {
    format!("{}: {}", e.code().as_str(), e.detail())
}
