//! `/v1/jobs`: job status, listing, and live progress as Server-Sent Events.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse as _, Response};
use serde::Deserialize;
use serde_json::json;
use strata_engine::jobs::JobEvent;
use strata_engine::model::{Job, JobFilter, JobStatus};
use strata_engine::{JobId, ListJobs, TenantId};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery, Preconditions, Tenant};
use crate::{AppState, cached};

/// Query of `GET /v1/jobs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Only jobs in this state.
    #[param(value_type = Option<JobStatus>)]
    status: Option<String>,
}

/// A page of jobs.
#[derive(utoipa::ToSchema)]
#[expect(
    dead_code,
    reason = "describes the cached JSON body for the OpenAPI document"
)]
pub struct JobPage {
    /// Newest first.
    items: Vec<Job>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// The name of a job event.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum JobEventName {
    /// The job changed.
    Progress,
    /// The job reached a terminal state; the stream ends after this event.
    Done,
}

/// One Server-Sent Event of `GET /v1/jobs/{id}/events`.
#[derive(utoipa::ToSchema)]
#[expect(
    dead_code,
    reason = "describes the event stream for the OpenAPI document"
)]
pub struct JobEventFrame {
    /// What happened.
    event: JobEventName,
    /// The job as JSON (the `Job` schema).
    #[schema(content_media_type = "application/json")]
    data: String,
}

/// `GET /v1/jobs` (cached per tenant; every job change invalidates it).
#[utoipa::path(
    get,
    path = "/v1/jobs",
    operation_id = "list_jobs",
    tag = "jobs",
    summary = "List jobs",
    params(ListQuery, crate::openapi::IfNoneMatch),
    responses(
        (status = 200, description = "A page", body = JobPage, headers(("etag" = String))),
        (status = 304, description = "Unchanged since the given ETag"),
        (status = 400, description = "`validation_failed`: an unknown or malformed query parameter"),
        (status = 422, description = "`validation_failed`: a bad limit, cursor or status"),
    ),
)]
pub async fn list(
    State(app): State<AppState>,
    tenant: Tenant,
    inm: Preconditions,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let status = q.status.as_deref().map(JobStatus::parse).transpose()?;
    let cursor = q.cursor.filter(|c| !c.is_empty());
    let query = ListJobs {
        limit: q.limit,
        cursor,
        filter: JobFilter { status },
    };
    let read = app.engine.cache_policy().job_list(&tenant.0, &query);
    cached::json(&app, &inm, read, || async {
        let page = app.engine.jobs().list_jobs(&tenant.0, query).await?;
        cached::body(&json!({ "items": page.items, "next_cursor": page.next_cursor }))
    })
    .await
}

/// `GET /v1/jobs/{id}` (cached per tenant; every job change invalidates it).
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    operation_id = "get_job",
    tag = "jobs",
    summary = "Read a job",
    params(crate::openapi::JobPath, crate::openapi::IfNoneMatch),
    responses(
        (status = 200, description = "The job", body = Job, headers(("etag" = String))),
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
    let id = JobId::parse_or_not_found(&id)?;
    let read = app.engine.cache_policy().job(&tenant.0, id);
    cached::json(&app, &inm, read, || async {
        cached::body(&app.engine.jobs().get_job(&tenant.0, id).await?)
    })
    .await
}

/// How often the event stream re-reads the job even without a notification (covers changes
/// made by other processes and dropped notifications).
const RESYNC: Duration = Duration::from_secs(1);

/// `GET /v1/jobs/{id}/events`: one `progress` event per change, then a final `done` event
/// when the job reaches a terminal state; the stream then ends.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/events",
    operation_id = "follow_job",
    tag = "jobs",
    summary = "Follow a job's progress",
    description = "Server-Sent Events: a `progress` event (the job as JSON) on every change, \
                   then one `done` event when it reaches a terminal state; the stream then ends.",
    params(crate::openapi::JobPath),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = JobEventFrame),
        (status = 404, description = "`not_found`"),
    ),
)]
pub async fn events(
    State(app): State<AppState>,
    tenant: Tenant,
    ApiPath(id): ApiPath<String>,
    accepts: Preconditions,
) -> Result<Response, ApiError> {
    let id = JobId::parse_or_not_found(&id)?;
    // Subscribe before the first read so no change between the two is missed.
    let rx = app.engine.jobs().subscribe_jobs();
    let first = app.engine.jobs().get_job(&tenant.0, id).await?;
    let state = Follow {
        app,
        owner: tenant.0,
        id,
        rx,
        pending: Some(first),
        last: None,
        ended: false,
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        let event = s.next_event().await?;
        Some((Ok::<_, Infallible>(event), s))
    });
    let sse = Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)));
    Ok(crate::stream_gzip::frames(
        sse.into_response(),
        accepts.gzip,
    ))
}

struct Follow {
    app: AppState,
    owner: TenantId,
    id: JobId,
    rx: broadcast::Receiver<JobEvent>,
    pending: Option<Job>,
    last: Option<Job>,
    ended: bool,
}

impl Follow {
    async fn next_event(&mut self) -> Option<Event> {
        if self.ended {
            return None;
        }
        loop {
            if let Some(job) = self.pending.take()
                && self.last.as_ref() != Some(&job)
            {
                let terminal = job.status.is_terminal();
                let event = Event::default()
                    .event(if terminal { "done" } else { "progress" })
                    .json_data(&job)
                    .unwrap_or_else(|_| Event::default().comment("unserialisable job"));
                self.ended = terminal;
                self.last = Some(job);
                return Some(event);
            }
            tokio::select! {
                msg = self.rx.recv() => match msg {
                    Ok(ev) if ev.job.id == self.id && ev.owner == self.owner => self.pending = Some(ev.job),
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => self.pending = self.reread().await,
                    Err(RecvError::Closed) => return None,
                },
                () = tokio::time::sleep(RESYNC) => self.pending = self.reread().await,
                () = self.app.shutdown.cancelled() => return None,
            }
        }
    }

    async fn reread(&self) -> Option<Job> {
        self.app
            .engine
            .jobs()
            .get_job(&self.owner, self.id)
            .await
            .ok()
    }
}
