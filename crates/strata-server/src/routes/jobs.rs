//! `/v1/jobs`: job status, listing, and live progress as Server-Sent Events.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<u32>,
    cursor: Option<String>,
    status: Option<String>,
}

/// `GET /v1/jobs` (cached per tenant; every job change invalidates it).
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
pub async fn events(
    State(app): State<AppState>,
    tenant: Tenant,
    ApiPath(id): ApiPath<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
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
        Some((Ok(event), s))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
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
