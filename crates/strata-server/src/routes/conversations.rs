//! `/v1/conversations`: a tenant's chat threads. A message posted to one is answered by the
//! gateway, grounded in the tenant's documents and citing them (see
//! `strata_gateway::conversation`); reads are cached per tenant in the `conversation` kind.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use serde::Deserialize;
use strata_engine::CreateConversation;
use strata_engine::conversation::{Conversation, Message};
use strata_gateway::conversation::{
    DEFAULT_CONTEXT_MESSAGES, DEFAULT_CONTEXT_TOKENS, DEFAULT_K, Turn, TurnReply,
};

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Preconditions, Tenant};
use crate::routes::gateway::gateway_error;
use crate::{AppState, cached};

/// `POST /v1/conversations`
#[utoipa::path(
    post,
    path = "/v1/conversations",
    operation_id = "create_conversation",
    tag = "gateway",
    summary = "Start a conversation",
    request_body = CreateConversation,
    responses(
        (status = 201, description = "Started", body = Conversation),
        (status = 400, description = "`malformed_json`"),
        (status = 415, description = "`unsupported_media_type`: not JSON"),
        (status = 422, description = "`validation_failed`: a bad field, or the id is taken"),
    ),
)]
pub async fn create(
    State(app): State<AppState>,
    tenant: Tenant,
    ApiJson(req): ApiJson<CreateConversation>,
) -> Result<Response, ApiError> {
    let c = app.engine.conversations().create(&tenant.0, req).await?;
    Ok((StatusCode::CREATED, Json(c)).into_response())
}

/// Query of the list routes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A page of conversations.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ConversationPage {
    /// By id, descending (newest first for generated ids).
    items: Vec<Conversation>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// `GET /v1/conversations`
#[utoipa::path(
    get,
    path = "/v1/conversations",
    operation_id = "list_conversations",
    tag = "gateway",
    summary = "List conversations",
    params(PageQuery, crate::openapi::IfNoneMatch),
    responses(
        (status = 200, description = "A page", body = ConversationPage, headers(("etag" = String))),
        (status = 304, description = "Unchanged since the given ETag"),
        (status = 400, description = "`validation_failed`: an unknown query parameter"),
        (status = 422, description = "`validation_failed`: a bad limit or cursor"),
    ),
)]
pub async fn list(
    State(app): State<AppState>,
    tenant: Tenant,
    inm: Preconditions,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.map(|l| l.to_string()).unwrap_or_default();
    let cursor = q.cursor.filter(|c| !c.is_empty());
    let read = app.engine.cache_policy().conversation(
        &tenant.0,
        &["list", &limit, cursor.as_deref().unwrap_or("")],
    );
    cached::json(&app, &inm, read, || async {
        let page = app
            .engine
            .conversations()
            .list(&tenant.0, q.limit, cursor.as_deref())
            .await?;
        cached::body(&ConversationPage {
            items: page.items,
            next_cursor: page.next_cursor,
        })
    })
    .await
}

/// The `{id}` of conversation routes.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(
    dead_code,
    reason = "describes the path parameter for the OpenAPI document"
)]
pub struct ConversationPath {
    /// The conversation's id.
    id: String,
}

/// `GET /v1/conversations/{id}`
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}",
    operation_id = "get_conversation",
    tag = "gateway",
    summary = "Read a conversation",
    params(ConversationPath, crate::openapi::IfNoneMatch),
    responses(
        (status = 200, description = "The conversation", body = Conversation, headers(("etag" = String))),
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
    let read = app
        .engine
        .cache_policy()
        .conversation(&tenant.0, &["one", &id]);
    cached::json(&app, &inm, read, || async {
        cached::body(&app.engine.conversations().get(&tenant.0, &id).await?)
    })
    .await
}

/// `DELETE /v1/conversations/{id}`
#[utoipa::path(
    delete,
    path = "/v1/conversations/{id}",
    operation_id = "delete_conversation",
    tag = "gateway",
    summary = "Delete a conversation and its messages",
    params(ConversationPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`"),
    ),
)]
pub async fn delete(
    State(app): State<AppState>,
    tenant: Tenant,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    app.engine.conversations().delete(&tenant.0, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A page of messages.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct MessagePage {
    /// Newest first.
    items: Vec<Message>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// `GET /v1/conversations/{id}/messages`
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/messages",
    operation_id = "list_messages",
    tag = "gateway",
    summary = "List a conversation's messages",
    params(ConversationPath, PageQuery, crate::openapi::IfNoneMatch),
    responses(
        (status = 200, description = "A page, newest first", body = MessagePage, headers(("etag" = String))),
        (status = 304, description = "Unchanged since the given ETag"),
        (status = 400, description = "`validation_failed`: an unknown query parameter"),
        (status = 404, description = "`not_found`"),
        (status = 422, description = "`validation_failed`: a bad limit or cursor"),
    ),
)]
pub async fn messages(
    State(app): State<AppState>,
    tenant: Tenant,
    inm: Preconditions,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.map(|l| l.to_string()).unwrap_or_default();
    let cursor = q.cursor.filter(|c| !c.is_empty());
    let read = app.engine.cache_policy().conversation(
        &tenant.0,
        &["messages", &id, &limit, cursor.as_deref().unwrap_or("")],
    );
    cached::json(&app, &inm, read, || async {
        let page = app
            .engine
            .conversations()
            .messages(&tenant.0, &id, q.limit, cursor.as_deref())
            .await?;
        cached::body(&MessagePage {
            items: page.items,
            next_cursor: page.next_cursor,
        })
    })
    .await
}

/// `POST /v1/conversations/{id}/messages` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    /// The question.
    content: String,
    /// The model (default: the conversation's).
    model: Option<String>,
    /// Passages of the tenant's documents to ground the answer in (default 5, 0 for none,
    /// at most 20).
    #[schema(minimum = 0, maximum = 20)]
    k: Option<usize>,
    /// Most earlier messages sent as context (default 20, at most 200).
    #[schema(minimum = 0, maximum = 200)]
    context_messages: Option<u32>,
    /// Most tokens (estimated) of the prompt; the oldest context is dropped first
    /// (default 8000).
    #[schema(minimum = 256, maximum = 1000000)]
    context_tokens: Option<usize>,
    /// Passed upstream.
    max_tokens: Option<u64>,
    /// Passed upstream.
    temperature: Option<f64>,
}

/// `POST /v1/conversations/{id}/messages`
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/messages",
    operation_id = "post_message",
    tag = "gateway",
    summary = "Ask in a conversation",
    description = "The question and the upstream's answer are appended to the conversation. \
                   The upstream gets the conversation's standing instruction, the passages of \
                   the tenant's documents hybrid search finds for the question (numbered; the \
                   answer's `citations` name their documents and chunks), the last \
                   `context_messages` messages that fit `context_tokens`, and the question. \
                   The call goes through the gateway: cached, budgeted and metered.",
    params(ConversationPath),
    request_body = PostMessage,
    responses(
        (status = 200, description = "The stored question and answer", body = Object),
        (status = 400, description = "`malformed_json`"),
        (status = 404, description = "`not_found`: no such conversation"),
        (status = 415, description = "`unsupported_media_type`: not JSON"),
        (status = 422, description = "`validation_failed` (`model`: no configured upstream serves the model)"),
        (status = 429, description = "`budget_exceeded`"),
        (status = 502, description = "`upstream_error`"),
        (status = 503, description = "`upstream_unavailable`"),
        (status = 504, description = "`upstream_timeout`"),
    ),
)]
pub async fn post(
    State(app): State<AppState>,
    tenant: Tenant,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<PostMessage>,
) -> Result<Json<TurnReply>, ApiError> {
    if req.k.is_some_and(|k| k > 20) {
        return Err(ApiError::invalid("k", "at most 20"));
    }
    if req.context_messages.is_some_and(|n| n > 200) {
        return Err(ApiError::invalid("context_messages", "at most 200"));
    }
    if req
        .context_tokens
        .is_some_and(|n| !(256..=1_000_000).contains(&n))
    {
        return Err(ApiError::invalid("context_tokens", "from 256 to 1000000"));
    }
    let turn = Turn {
        content: req.content,
        model: req.model,
        k: req.k.unwrap_or(DEFAULT_K),
        context_messages: req.context_messages.unwrap_or(DEFAULT_CONTEXT_MESSAGES),
        context_tokens: req.context_tokens.unwrap_or(DEFAULT_CONTEXT_TOKENS),
        max_tokens: req.max_tokens,
        temperature: req.temperature,
    };
    // The conversation exists: a model no upstream serves is the request's (or the stored
    // conversation's) field at fault, not a missing resource.
    app.gateway
        .converse(&tenant.0, &id, turn)
        .await
        .map(Json)
        .map_err(|e| match e {
            strata_gateway::GatewayError::ModelNotFound(why) => ApiError::invalid("model", why),
            other => gateway_error(other),
        })
}
