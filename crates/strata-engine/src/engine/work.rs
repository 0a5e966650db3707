//! The jobs service: a tenant's jobs (one, a page, live changes), and draining the queue in
//! the calling task (the CLI and tests).
//!
//! Holds only what it uses: the store's queue, the runner and the change channel.

use std::sync::Arc;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::paged;
use crate::error::{EngineError, Result};
use crate::ids::{IdKind, JobId, TenantId};
use crate::jobs::{JobEvent, Runner, Step};
use crate::model::{Job, JobFilter, JobStatus, Page};
use crate::store::Store;

/// Listing parameters for jobs.
#[derive(Debug, Clone, Default)]
pub struct ListJobs {
    /// Page size (default 50, max 500).
    pub limit: Option<u32>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// Row filter.
    pub filter: JobFilter,
}

/// Jobs (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct JobService {
    pub(super) store: Arc<dyn Store>,
    pub(super) runner: Runner,
    pub(super) events: broadcast::Sender<JobEvent>,
}

impl JobService {
    /// What this process's workers did, per job kind: attempts by outcome, running now,
    /// seconds spent.
    pub fn stats(&self) -> Vec<crate::jobs::stats::KindJobStats> {
        self.runner.stats()
    }

    /// Unfinished jobs of every process by kind and state (`queued`, `delayed`,
    /// `running`); read at most once a second, however many callers ask.
    pub async fn queue_depth(&self) -> crate::Result<Vec<crate::store::QueueDepth>> {
        self.runner.queue_depth().await
    }

    /// One job of the owner's.
    pub async fn get_job(&self, owner: &TenantId, id: JobId) -> Result<Job> {
        self.store
            .get_job(owner, id)
            .await?
            .ok_or_else(|| EngineError::not_found(IdKind::Job, id))
    }

    /// A page of the owner's jobs, newest first.
    pub async fn list_jobs(&self, owner: &TenantId, q: ListJobs) -> Result<Page<Job>> {
        let fingerprint = ["jobs", q.filter.status.map(JobStatus::as_str).unwrap_or("")];
        paged(
            q.limit,
            q.cursor.as_deref(),
            &fingerprint,
            |before: Option<JobId>, n| self.store.list_jobs(owner, &q.filter, before, n),
            |j: &Job| j.id.to_string(),
        )
        .await
    }

    /// Live job changes of every tenant; filter by owner before showing them.
    pub fn subscribe_jobs(&self) -> broadcast::Receiver<JobEvent> {
        self.events.subscribe()
    }

    /// Runs due jobs in the calling task until none is left (CLI ingestion, tests).
    /// Returns how many attempts ran.
    pub async fn drain_jobs(&self) -> Result<usize> {
        let token = CancellationToken::new();
        let mut ran = 0;
        while self.runner.run_one(&token).await? != Step::Idle {
            ran += 1;
        }
        Ok(ran)
    }

    /// The job runner, for tests that need single steps.
    pub fn runner(&self) -> &Runner {
        &self.runner
    }
}
