//! `/v1/memories`: add (one or a batch), list, read, patch, delete, history, search and
//! preload of the tenant's long-term memories.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use strata_engine::memory::{
    AddMemory, Added, Memory, MemoryFilter, MemoryHistory, MemoryPatch, MemorySearch,
    MemorySearchResults, Preloaded,
};
use strata_engine::{ListMemories, MemoryId};

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Preconditions, Tenant};
use crate::{AppState, cached};

/// A batch of memories to add.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchAdd {
    /// 1 to 100 memories, added in order.
    memories: Vec<AddMemory>,
}

/// `POST /v1/memories` takes one memory or a batch.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum AddBody {
    /// One memory.
    One(AddMemory),
    /// `{"memories": [...]}`.
    Batch(BatchAdd),
}

/// A 200 answer to an add: one merged memory, or a batch's results.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum AddAnswer {
    /// One memory, merged into a near-duplicate.
    One(Box<Added>),
    /// `{"results": [...]}` for a batch.
    Batch(BatchAdded),
}

/// The answer to a batch add.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct BatchAdded {
    /// One per memory sent, in order.
    results: Vec<Added>,
}

/// `POST /v1/memories`
#[utoipa::path(
    post,
    path = "/v1/memories",
    operation_id = "add_memories",
    tag = "memories",
    summary = "Add a memory, or a batch",
    description = "Embeds each text (no LLM involved) and stores it for the tenant. An add \
                   whose embedding is nearly identical to a current memory (cosine at or above \
                   the server's merge threshold, default 0.95; with the same `key` when one is \
                   given) updates that memory instead of adding a duplicate (`merged`, its \
                   earlier state kept in its history). A `supersedes` id, or a `key` a current \
                   memory holds with a different text, replaces that memory and keeps it as \
                   history (`superseded`). One memory answers 201 (`created`, `superseded`) or \
                   200 (`merged`); a batch `{\"memories\": [...]}` answers 200 with a result \
                   per memory, in order.",
    request_body = AddBody,
    responses(
        (status = 201, description = "Created or superseded", body = Added),
        (status = 200, description = "Merged into a near-duplicate, or a batch's results", body = AddAnswer),
        (status = 400, description = "`malformed_json`"),
        (status = 404, description = "`not_found`: `supersedes` names no memory of the tenant's"),
        (status = 413, description = "`payload_too_large`"),
        (status = 415, description = "`unsupported_media_type`: not JSON"),
        (status = 422, description = "`validation_failed`"),
        (status = 503, description = "`overloaded`: the embedding model is at capacity"),
    ),
)]
pub async fn add(
    State(app): State<AppState>,
    tenant: Tenant,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let batch = body.get("memories").is_some();
    let items = if batch {
        serde_json::from_value::<BatchAdd>(body)
            .map_err(|e| ApiError::invalid("body", e.to_string()))?
            .memories
    } else {
        vec![
            serde_json::from_value::<AddMemory>(body)
                .map_err(|e| ApiError::invalid("body", e.to_string()))?,
        ]
    };
    let mut results = app.engine.memories().add(&tenant.0, items).await?;
    if batch {
        return Ok(Json(BatchAdded { results }).into_response());
    }
    let one = results.remove(0);
    let status = match one.status {
        strata_engine::memory::AddStatus::Merged => StatusCode::OK,
        _ => StatusCode::CREATED,
    };
    Ok((status, Json(one)).into_response())
}

/// Query of `GET /v1/memories`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Only this session's memories.
    session: Option<String>,
    /// Only memories under this key.
    key: Option<String>,
    /// Only memories of (`occurred_at`, else creation) this time or later (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only memories of before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<chrono::DateTime<chrono::Utc>>,
    /// Superseded memories too.
    include_superseded: Option<bool>,
    /// Only memories whose metadata has these fields with these values: a JSON object, as
    /// text (`{"topic":"travel"}`).
    metadata: Option<String>,
}

/// A page of memories.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct MemoryPage {
    /// Newest first.
    items: Vec<Memory>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// `GET /v1/memories` (cached per tenant; any memory write of the tenant's invalidates it).
#[utoipa::path(
    get,
    path = "/v1/memories",
    operation_id = "list_memories",
    tag = "memories",
    summary = "List memories",
    description = "Newest first, by cursor; filter by session, key, time and metadata fields; \
                   current memories only unless `include_superseded`.",
    params(ListQuery, crate::openapi::IfNoneMatch),
    responses(
        (status = 200, description = "A page", body = MemoryPage, headers(("etag" = String))),
        (status = 304, description = "Unchanged since the given ETag"),
        (status = 400, description = "`validation_failed`: an unknown query parameter"),
        (status = 422, description = "`validation_failed`: a bad limit, cursor or filter"),
    ),
)]
pub async fn list(
    State(app): State<AppState>,
    tenant: Tenant,
    inm: Preconditions,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.map(|l| l.to_string()).unwrap_or_default();
    let since = q.since.map(|t| t.to_rfc3339()).unwrap_or_default();
    let until = q.until.map(|t| t.to_rfc3339()).unwrap_or_default();
    let all = q.include_superseded.unwrap_or(false);
    let cursor = q.cursor.filter(|c| !c.is_empty());
    let metadata = match q.metadata.as_deref().filter(|m| !m.is_empty()) {
        None => serde_json::Map::new(),
        Some(raw) => match strata_engine::validate::metadata_str(raw)? {
            Value::Object(m) => m,
            _ => return Err(ApiError::invalid("metadata", "must be a JSON object")),
        },
    };
    let metadata_key = Value::Object(metadata.clone()).to_string();
    let read = app.engine.cache_policy().memory(
        &tenant.0,
        &[
            "list",
            &limit,
            cursor.as_deref().unwrap_or(""),
            q.session.as_deref().unwrap_or(""),
            q.key.as_deref().unwrap_or(""),
            &since,
            &until,
            if all { "all" } else { "" },
            &metadata_key,
        ],
    );
    let query = ListMemories {
        limit: q.limit,
        cursor,
        filter: MemoryFilter {
            session: q.session,
            key: q.key,
            include_superseded: all,
            since: q.since,
            until: q.until,
        },
        metadata,
    };
    cached::json(&app, &inm, read, || async {
        let page = app.engine.memories().list(&tenant.0, query).await?;
        cached::body(&MemoryPage {
            items: page.items,
            next_cursor: page.next_cursor,
        })
    })
    .await
}

/// The `{id}` of memory routes.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(
    dead_code,
    reason = "describes the path parameter for the OpenAPI document"
)]
pub struct MemoryPath {
    /// The memory's id (a UUID; anything else is not found).
    id: String,
}

/// `GET /v1/memories/{id}` (cached per tenant).
#[utoipa::path(
    get,
    path = "/v1/memories/{id}",
    operation_id = "get_memory",
    tag = "memories",
    summary = "Read a memory",
    params(MemoryPath, crate::openapi::IfNoneMatch),
    responses(
        (status = 200, description = "The memory", body = Memory, headers(("etag" = String))),
        (status = 304, description = "Unchanged since the given ETag"),
        (status = 404, description = "`not_found`"),
    ),
)]
pub async fn get(
    State(app): State<AppState>,
    tenant: Tenant,
    inm: Preconditions,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = MemoryId::parse_or_not_found(&id)?;
    let read = app
        .engine
        .cache_policy()
        .memory(&tenant.0, &["memory", &id.to_string()]);
    cached::json(&app, &inm, read, || async {
        cached::body(&app.engine.memories().get(&tenant.0, id).await?)
    })
    .await
}

/// `PATCH /v1/memories/{id}`
#[utoipa::path(
    patch,
    path = "/v1/memories/{id}",
    operation_id = "update_memory",
    tag = "memories",
    summary = "Change a current memory in place",
    description = "Changes its text (re-embedded), importance, metadata (replaced), session or \
                   time; its earlier state goes to its history. A superseded memory is history \
                   and cannot be changed (422).",
    params(MemoryPath),
    request_body = MemoryPatch,
    responses(
        (status = 200, description = "The memory as it now is", body = Memory),
        (status = 400, description = "`malformed_json`"),
        (status = 404, description = "`not_found`"),
        (status = 415, description = "`unsupported_media_type`: not JSON"),
        (status = 422, description = "`validation_failed`"),
    ),
)]
pub async fn patch(
    State(app): State<AppState>,
    tenant: Tenant,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<MemoryPatch>,
) -> Result<Json<Memory>, ApiError> {
    let id = MemoryId::parse_or_not_found(&id)?;
    Ok(Json(
        app.engine.memories().patch(&tenant.0, id, patch).await?,
    ))
}

/// `DELETE /v1/memories/{id}`
#[utoipa::path(
    delete,
    path = "/v1/memories/{id}",
    operation_id = "delete_memory",
    tag = "memories",
    summary = "Delete a memory and its history",
    params(MemoryPath),
    responses(
        (status = 204, description = "Deleted, with every memory it replaced"),
        (status = 404, description = "`not_found`"),
    ),
)]
pub async fn delete(
    State(app): State<AppState>,
    tenant: Tenant,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = MemoryId::parse_or_not_found(&id)?;
    app.engine.memories().delete(&tenant.0, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/memories/{id}/history` (cached per tenant).
#[utoipa::path(
    get,
    path = "/v1/memories/{id}/history",
    operation_id = "memory_history",
    tag = "memories",
    summary = "A memory's history",
    description = "The memory, then every memory it replaced (newest first), and the earlier \
                   states of each (merged near-duplicates, patches), newest first.",
    params(MemoryPath, crate::openapi::IfNoneMatch),
    responses(
        (status = 200, description = "Its history", body = MemoryHistory, headers(("etag" = String))),
        (status = 304, description = "Unchanged since the given ETag"),
        (status = 404, description = "`not_found`"),
    ),
)]
pub async fn history(
    State(app): State<AppState>,
    tenant: Tenant,
    inm: Preconditions,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = MemoryId::parse_or_not_found(&id)?;
    let read = app
        .engine
        .cache_policy()
        .memory(&tenant.0, &["history", &id.to_string()]);
    cached::json(&app, &inm, read, || async {
        cached::body(&app.engine.memories().history(&tenant.0, id).await?)
    })
    .await
}

/// `POST /v1/memories/search`
#[utoipa::path(
    post,
    path = "/v1/memories/search",
    operation_id = "search_memories",
    tag = "memories",
    summary = "Recall the tenant's memories for a query",
    description = "Hybrid recall (exact cosine over the tenant's embeddings and BM25 over its \
                   texts, the best of each side), then a ranking of the candidates by \
                   similarity, recency, importance and access frequency. Every hit carries \
                   each component and the final score, all in 0..1, higher is better: `score = \
                   similarity x (1 - w_recency (1 - recency)) x (1 - w_importance (1 - \
                   importance)) x (1 - w_access (1 - access))`, so recency and the others can \
                   reorder memories of similar relevance but never bury a relevant old fact \
                   under an unrelated new one. Superseded memories are left out unless \
                   `filter.include_superseded`. Hits count as accesses (written in batches, \
                   off the request path) unless `record_access` is false. Answers are not \
                   cached (the ranking moves with time and use); the tenant's memories are \
                   held in process after the first search or a preload, and query embeddings \
                   are cached.",
    request_body = MemorySearch,
    responses(
        (status = 200, description = "The hits", body = MemorySearchResults),
        (status = 400, description = "`malformed_json`"),
        (status = 415, description = "`unsupported_media_type`: not JSON"),
        (status = 422, description = "`validation_failed`"),
        (status = 503, description = "`overloaded`: the embedding model is at capacity"),
    ),
)]
pub async fn search(
    State(app): State<AppState>,
    tenant: Tenant,
    ApiJson(req): ApiJson<MemorySearch>,
) -> Result<Json<MemorySearchResults>, ApiError> {
    Ok(Json(app.engine.memories().search(&tenant.0, req).await?))
}

/// `POST /v1/memories/preload` body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreloadRequest {
    /// How many recent and how many frequently recalled memories to return (default 20,
    /// at most 100).
    working: Option<usize>,
}

/// `POST /v1/memories/preload`
#[utoipa::path(
    post,
    path = "/v1/memories/preload",
    operation_id = "preload_memories",
    tag = "memories",
    summary = "Warm the tenant's memories for searching",
    description = "Loads the tenant's working set (every memory and its vector) into this \
                   process and the embeddings of the tenant's frequent queries into the \
                   cache, so the next searches touch neither the database nor the model; \
                   returns the most recent and most often recalled memories, for an agent's \
                   context.",
    request_body = PreloadRequest,
    responses(
        (status = 200, description = "What was warmed", body = Preloaded),
        (status = 400, description = "`malformed_json`"),
        (status = 415, description = "`unsupported_media_type`: not JSON"),
        (status = 422, description = "`validation_failed`"),
    ),
)]
pub async fn preload(
    State(app): State<AppState>,
    tenant: Tenant,
    ApiJson(req): ApiJson<PreloadRequest>,
) -> Result<Json<Preloaded>, ApiError> {
    Ok(Json(
        app.engine
            .memories()
            .preload(&tenant.0, req.working.unwrap_or(20))
            .await?,
    ))
}
