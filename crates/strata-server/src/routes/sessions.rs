//! `/v1/sessions`: start, list, read and end the tenant's sessions, and follow their starts
//! and ends as Server-Sent Events.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse as _, Response};
use serde::Deserialize;
use strata_engine::{SessionView, StartSession};
use tokio::sync::broadcast::error::RecvError;

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Preconditions, Tenant};
use crate::{AppState, cached};

/// What starting a session answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Started {
    /// The session.
    #[serde(flatten)]
    session: SessionView,
    /// What the preload warmed, when asked for.
    preloaded: Option<strata_engine::memory::Preloaded>,
}

/// `POST /v1/sessions`
#[utoipa::path(
    post,
    path = "/v1/sessions",
    operation_id = "start_session",
    tag = "sessions",
    summary = "Start a session",
    description = "A visit of the tenant's. It ends when the caller ends it or after an idle \
                   timeout learned from the tenant's own gaps between requests (bounded; the \
                   default until five gaps are known), shown with its explanation. Memory adds \
                   and searches naming the session (`session`) keep it alive. With `preload`, \
                   the tenant's memories are warmed for searching at once.",
    request_body = StartSession,
    responses(
        (status = 201, description = "Started", body = Started),
        (status = 400, description = "`malformed_json`"),
        (status = 415, description = "`unsupported_media_type`: not JSON"),
        (status = 422, description = "`validation_failed`: a bad id or metadata, or the id is taken"),
    ),
)]
pub async fn start(
    State(app): State<AppState>,
    tenant: Tenant,
    ApiJson(req): ApiJson<StartSession>,
) -> Result<Response, ApiError> {
    let preload = req.preload;
    let session = app.engine.sessions().start(&tenant.0, req).await?;
    let preloaded = if preload {
        Some(app.engine.memories().preload(&tenant.0, 20).await?)
    } else {
        None
    };
    Ok((StatusCode::CREATED, Json(Started { session, preloaded })).into_response())
}

/// Query of `GET /v1/sessions`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Only active sessions.
    active: Option<bool>,
}

/// A page of sessions.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SessionPage {
    /// By id, descending (newest first for generated ids).
    items: Vec<SessionView>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// `GET /v1/sessions` (cached per tenant in the `user_session` kind).
#[utoipa::path(
    get,
    path = "/v1/sessions",
    operation_id = "list_sessions",
    tag = "sessions",
    summary = "List sessions",
    params(ListQuery, crate::openapi::IfNoneMatch),
    responses(
        (status = 200, description = "A page", body = SessionPage, headers(("etag" = String))),
        (status = 304, description = "Unchanged since the given ETag"),
        (status = 400, description = "`validation_failed`: an unknown query parameter"),
        (status = 422, description = "`validation_failed`: a bad limit or cursor"),
    ),
)]
pub async fn list(
    State(app): State<AppState>,
    tenant: Tenant,
    inm: Preconditions,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let active = q.active.unwrap_or(false);
    let limit = q.limit.map(|l| l.to_string()).unwrap_or_default();
    let cursor = q.cursor.filter(|c| !c.is_empty());
    let read = app.engine.cache_policy().session(
        &tenant.0,
        &[
            "list",
            &limit,
            cursor.as_deref().unwrap_or(""),
            if active { "active" } else { "" },
        ],
    );
    cached::json(&app, &inm, read, || async {
        let page = app
            .engine
            .sessions()
            .list(&tenant.0, active, q.limit, cursor.as_deref())
            .await?;
        cached::body(&SessionPage {
            items: page.items,
            next_cursor: page.next_cursor,
        })
    })
    .await
}

/// The `{id}` of session routes.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(
    dead_code,
    reason = "describes the path parameter for the OpenAPI document"
)]
pub struct SessionPath {
    /// The session's id.
    id: String,
}

/// `GET /v1/sessions/{id}` (cached in the `user_session` kind).
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}",
    operation_id = "get_session",
    tag = "sessions",
    summary = "Read a session",
    description = "Its state, when it expires if nothing comes first, and its idle timeout \
                   with the computation that gave it. A session past its timeout shows \
                   `ended` once the sweep (every few seconds) or its next request has ended it.",
    params(SessionPath, crate::openapi::IfNoneMatch),
    responses(
        (status = 200, description = "The session", body = SessionView, headers(("etag" = String))),
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
        .session(&tenant.0, &["session", &id]);
    cached::json(&app, &inm, read, || async {
        cached::body(&app.engine.sessions().get(&tenant.0, &id).await?)
    })
    .await
}

/// `POST /v1/sessions/{id}/end`
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/end",
    operation_id = "end_session",
    tag = "sessions",
    summary = "End a session",
    description = "Ends it now (`closed`); ending an ended session answers it as it is. An ended \
                   session stays readable (its requests, timeout and how it ended); it is not \
                   deleted, which is why this is not a DELETE.",
    params(SessionPath),
    responses(
        (status = 200, description = "The ended session", body = SessionView),
        (status = 404, description = "`not_found`"),
    ),
)]
pub async fn end(
    State(app): State<AppState>,
    tenant: Tenant,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SessionView>, ApiError> {
    Ok(Json(app.engine.sessions().end(&tenant.0, &id).await?))
}

/// One frame of `GET /v1/sessions/events`.
#[derive(utoipa::ToSchema)]
#[expect(
    dead_code,
    reason = "describes the event stream for the OpenAPI document"
)]
pub struct SessionEventFrame {
    /// `started`, `closed` or `expired`.
    event: String,
    /// The session, as JSON.
    data: strata_engine::session::Session,
}

/// `GET /v1/sessions/events`
#[utoipa::path(
    get,
    path = "/v1/sessions/events",
    operation_id = "follow_sessions",
    tag = "sessions",
    summary = "Follow the tenant's session starts and ends",
    description = "Server-Sent Events: `started`, `closed` (by the caller) and `expired` (idle \
                   past its timeout), each with the session as JSON, as this process sees \
                   them (the sweep of whichever instance ends an idle session announces it).",
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = SessionEventFrame),
    ),
)]
pub async fn events(
    State(app): State<AppState>,
    tenant: Tenant,
    accepts: Preconditions,
) -> Response {
    let rx = app.engine.sessions().subscribe();
    let owner = tenant.0;
    let shutdown = app.shutdown.clone();
    let stream = futures_util::stream::unfold(
        (rx, owner, shutdown),
        |(mut rx, owner, shutdown)| async move {
            loop {
                tokio::select! {
                    msg = rx.recv() => match msg {
                        Ok(ev) if ev.owner == owner => {
                            let event = Event::default()
                                .event(ev.kind)
                                .json_data(&ev.session)
                                .unwrap_or_else(|_| Event::default().comment("unserialisable session"));
                            return Some((Ok::<_, Infallible>(event), (rx, owner, shutdown)));
                        }
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return None,
                    },
                    () = shutdown.cancelled() => return None,
                }
            }
        },
    );
    let sse = Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)));
    crate::stream_gzip::frames(sse.into_response(), accepts.gzip)
}
