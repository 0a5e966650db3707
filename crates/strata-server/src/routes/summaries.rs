//! `/v1/documents/{id}/summary`: a document's summary, written by a background job through
//! the LLM gateway (map over the document's parts, then reduce; progress on the job's event
//! stream) and read through the cache with the document's metadata.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use serde::Deserialize;
use strata_engine::DocumentId;
use strata_engine::model::Job;
use strata_engine::store::Summary;

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, Preconditions, Tenant};
use crate::{AppState, cached};

/// `POST /v1/documents/{id}/summary` body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SummaryRequest {
    /// The model (default: the first model the first upstream lists).
    model: Option<String>,
    /// Most tokens each model call answers with (default 512, 16 to 8192).
    #[schema(minimum = 16, maximum = 8192)]
    max_tokens: Option<u32>,
}

/// `POST /v1/documents/{id}/summary`
#[utoipa::path(
    post,
    path = "/v1/documents/{id}/summary",
    operation_id = "summarise_document",
    tag = "documents",
    summary = "Summarise a document (background job)",
    description = "Queues a `summarise_document` job: the document's chunks are summarised in \
                   parts of about 1,500 tokens through the LLM gateway (budgeted and metered \
                   like any call), then the parts' summaries into one. Follow it on \
                   `GET /v1/jobs/{id}/events` (stages `map` and `reduce`); read the result on \
                   `GET /v1/documents/{id}/summary`. The summary is deleted with its document.",
    params(crate::openapi::DocumentPath),
    request_body = SummaryRequest,
    responses(
        (status = 202, description = "Queued", body = Job),
        (status = 400, description = "`malformed_json`"),
        (status = 404, description = "`not_found`"),
        (status = 415, description = "`unsupported_media_type`: not JSON"),
        (status = 422, description = "`validation_failed`: no model, a bad max_tokens, or the document is not ready"),
    ),
)]
pub async fn request(
    State(app): State<AppState>,
    tenant: Tenant,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<SummaryRequest>,
) -> Result<Response, ApiError> {
    let id = DocumentId::parse_or_not_found(&id)?;
    let Some(model) = req.model.or_else(|| app.gateway.default_model()) else {
        return Err(ApiError::invalid(
            "model",
            "name a model (no upstream lists one to default to)",
        ));
    };
    let job = app
        .engine
        .summaries()
        .request(&tenant.0, id, &model, req.max_tokens.unwrap_or(512))
        .await?;
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

/// `GET /v1/documents/{id}/summary` (cached with the document's metadata)
#[utoipa::path(
    get,
    path = "/v1/documents/{id}/summary",
    operation_id = "get_document_summary",
    tag = "documents",
    summary = "Read a document's summary",
    params(crate::openapi::DocumentPath, crate::openapi::IfNoneMatch),
    responses(
        (status = 200, description = "The summary", body = Summary, headers(("etag" = String))),
        (status = 304, description = "Unchanged since the given ETag"),
        (status = 404, description = "`not_found`: no such document, or no summary yet"),
    ),
)]
pub async fn get(
    State(app): State<AppState>,
    tenant: Tenant,
    inm: Preconditions,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = DocumentId::parse_or_not_found(&id)?;
    let read = app.engine.cache_policy().summary(&tenant.0, id);
    cached::json(&app, &inm, read, || async {
        cached::body(&app.engine.summaries().get(&tenant.0, id).await?)
    })
    .await
}
