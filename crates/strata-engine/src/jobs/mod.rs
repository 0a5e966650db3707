//! The durable job runner: workers claim jobs of the kinds this process runs from the
//! queue ([`crate::store::queue`]), hold a lease with heartbeats, run the job's kind, retry
//! transient failures with exponential backoff, and publish every state change on a
//! broadcast channel for live progress.
//!
//! A job kind is one type implementing [`JobKind`] (a name, `run`, and hooks for the
//! moments its own data should follow the job: claimed, ended, released, abandoned),
//! registered with the runner by the bootstrap; `ingest::IngestDocument` is one. The
//! runner knows nothing of what a kind does.
//!
//! Crash safety comes from the queue: a worker that dies stops heartbeating, its lease
//! expires, and another worker (after a restart, possibly in another process) claims the
//! job again; every write a kind makes under a lease is fenced by the lease token. A kind's
//! hooks run before the queue records the matching transition, so a crash in between
//! leaves a job that runs (or is failed) again, never data that disagrees with a finished
//! job.
//!
//! Must not import: HTTP types.

pub mod ingest;
pub mod stats;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::chunk::ChunkConfig;
use crate::error::EngineError;
use crate::ids::{JobId, TenantId};
use crate::model::{Job, StageProgress};
use crate::policy::{CachePolicy, Changed};
use crate::store::{Abandoned, ClaimedJob, JobOutcome, QueueDepth, Store, StoreChange};

/// Job runner settings.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Concurrent workers in this process (0 = this process runs no jobs).
    pub workers: usize,
    /// Claims before a job fails for good.
    pub max_attempts: u32,
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// First retry delay; doubles per attempt.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// How often an idle worker looks for due jobs (it is also woken on enqueue).
    pub poll_interval: Duration,
    /// Longest extraction of one file.
    pub extract_timeout: Duration,
    /// Chunks written per transaction (and per progress event).
    pub chunk_batch: usize,
    /// On shutdown, how long a running job may take to finish before it is returned to the
    /// queue.
    pub shutdown_grace: Duration,
    /// Chunk sizes.
    pub chunk: ChunkConfig,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            workers: 2,
            max_attempts: 5,
            lease: Duration::from_secs(30),
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(300),
            poll_interval: Duration::from_secs(1),
            extract_timeout: Duration::from_secs(60),
            chunk_batch: 256,
            shutdown_grace: Duration::from_secs(10),
            chunk: ChunkConfig::default(),
        }
    }
}

/// A job changed: the new snapshot and its owner (for per-tenant filtering).
#[derive(Debug, Clone)]
pub struct JobEvent {
    /// The job's owner.
    pub owner: TenantId,
    /// The job as stored after the change.
    pub job: Job,
}

/// Why an attempt stopped early.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Retrying cannot help (corrupt file, no text).
    #[error("{0}")]
    Permanent(String),
    /// May succeed later (I/O, database busy).
    #[error("{0}")]
    Transient(String),
    /// Another worker owns the job now (or it was cancelled): stop without writing.
    #[error("lease lost")]
    LeaseLost,
    /// Asked to stop (shutdown, or the lease was lost) and stopped at a safe point.
    #[error("interrupted")]
    Interrupted,
}

impl From<EngineError> for JobError {
    fn from(e: EngineError) -> Self {
        JobError::Transient(e.to_string())
    }
}

/// What a worker pass did, so callers (and tests) can drain the queue deterministically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// No job was due.
    Idle,
    /// A job attempt ran to an outcome (success, retry or failure).
    Ran,
    /// The attempt stopped because the lease was lost.
    LeaseLost,
    /// Shutdown interrupted the attempt; the job went back to the queue.
    Released,
}

/// One kind of job: what runs it, and how its own data follows the job's life. Every hook
/// but [`JobKind::run`] has a default that does nothing.
#[async_trait]
pub trait JobKind: Send + Sync + 'static {
    /// The name stored in the job's `kind` column; unique among kinds.
    fn name(&self) -> &'static str;

    /// Runs one attempt. Writes go through the attempt's lease; progress and cooperative
    /// stops through `attempt`. Success means the kind's data is complete (written, fenced,
    /// before returning); the queue records the success after.
    async fn run(&self, job: &ClaimedJob, attempt: &Attempt<'_>) -> Result<(), JobError>;

    /// The job was just claimed (its attempt counted).
    async fn claimed(&self, _job: &ClaimedJob) -> Result<(), EngineError> {
        Ok(())
    }

    /// An attempt failed (`outcome` is a retry or a failure; a retry with no attempt left
    /// arrives as a failure); called while the lease is still held, before the queue records
    /// it. `Ok(false)`: the lease was lost meanwhile.
    async fn ended(&self, _job: &ClaimedJob, _outcome: &JobOutcome) -> Result<bool, EngineError> {
        Ok(true)
    }

    /// Shutdown stopped the attempt: the job goes back to the queue right after.
    async fn released(&self, _job: &ClaimedJob) -> Result<(), EngineError> {
        Ok(())
    }

    /// A worker lost the job's lease with no attempt left: the job fails for good right
    /// after, without running again.
    async fn abandoned(&self, _job: &Abandoned) -> Result<(), EngineError> {
        Ok(())
    }
}

/// What a running attempt can do besides its kind's own work: report progress (fenced by
/// the lease, published live) and stop at safe points when asked to.
pub struct Attempt<'a> {
    runner: &'a Runner,
    job: &'a ClaimedJob,
    stop: &'a CancellationToken,
}

impl Attempt<'_> {
    /// Records the current stage and per-stage progress and publishes the change;
    /// [`JobError::LeaseLost`] when the lease is gone.
    pub async fn progress(&self, stage: &str, stages: &[StageProgress]) -> Result<(), JobError> {
        if !self
            .runner
            .store
            .record_progress(&self.job.lease, stage, stages)
            .await?
        {
            return Err(JobError::LeaseLost);
        }
        self.runner.publish(self.job.lease.job_id).await;
        Ok(())
    }

    /// A safe point between two writes: [`JobError::Interrupted`] once the attempt should
    /// stop (shutdown past its grace period, or a lost lease).
    pub fn checkpoint(&self) -> Result<(), JobError> {
        if self.stop.is_cancelled() {
            Err(JobError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Fires when the attempt should stop, for waits that can be abandoned safely.
    pub fn stopped(&self) -> &CancellationToken {
        self.stop
    }
}

/// Claims and runs jobs of the registered kinds. Cheap to clone.
#[derive(Clone)]
pub struct Runner {
    /// The queue (and `announce`, so other processes hear of changes).
    pub(crate) store: Arc<dyn Store>,
    pub(crate) settings: Arc<JobSettings>,
    pub(crate) events: broadcast::Sender<JobEvent>,
    pub(crate) wake: Arc<Notify>,
    pub(crate) policy: CachePolicy,
    kinds: Arc<HashMap<&'static str, Arc<dyn JobKind>>>,
    names: Arc<[&'static str]>,
    stats: stats::JobStats,
    depth: Arc<tokio::sync::Mutex<Option<DepthReading>>>,
}

/// The queue's depth and when it was read.
type DepthReading = (std::time::Instant, Vec<QueueDepth>);

/// How long a read of the queue's depth is reused: scrapes, the summary and the dashboard
/// may all ask every second, and one grouped count serves them all.
const DEPTH_FRESH: Duration = Duration::from_secs(1);

impl Runner {
    /// A runner of `kinds` over the store's queue.
    pub(crate) fn new(
        store: Arc<dyn Store>,
        settings: JobSettings,
        events: broadcast::Sender<JobEvent>,
        policy: CachePolicy,
        kinds: Vec<Arc<dyn JobKind>>,
    ) -> Self {
        let names: Arc<[&'static str]> = kinds.iter().map(|k| k.name()).collect();
        Self {
            store,
            settings: Arc::new(settings),
            events,
            wake: Arc::new(Notify::new()),
            policy,
            kinds: Arc::new(kinds.into_iter().map(|k| (k.name(), k)).collect()),
            stats: stats::JobStats::new(&names),
            names,
            depth: Arc::default(),
        }
    }

    /// Unfinished jobs by kind and state, across every process (read at most once a second;
    /// concurrent callers share one read).
    pub async fn queue_depth(&self) -> crate::error::Result<Vec<QueueDepth>> {
        let mut memo = self.depth.lock().await;
        if let Some((at, depth)) = memo.as_ref()
            && at.elapsed() < DEPTH_FRESH
        {
            return Ok(depth.clone());
        }
        let depth = self.store.queue_depth(Utc::now()).await?;
        *memo = Some((std::time::Instant::now(), depth.clone()));
        Ok(depth)
    }

    /// What this process's workers did, per kind (see [`stats`]).
    pub fn stats(&self) -> Vec<stats::KindJobStats> {
        self.stats.snapshot()
    }

    /// Starts the configured number of workers on `tracker`; they stop when `shutdown` fires.
    pub fn spawn_workers(&self, tracker: &TaskTracker, shutdown: &CancellationToken) {
        for n in 0..self.settings.workers {
            let runner = self.clone();
            let shutdown = shutdown.clone();
            tracker.spawn(
                async move { runner.worker_loop(shutdown).await }
                    .instrument(info_span!("worker", n)),
            );
        }
    }

    async fn worker_loop(self, shutdown: CancellationToken) {
        debug!("worker started");
        let mut worked = false;
        while !shutdown.is_cancelled() {
            match self.run_one(&shutdown).await {
                Ok(Step::Idle) => {
                    if std::mem::take(&mut worked) {
                        // The queue ran dry: hand back what the model's batches and the
                        // parsers freed, so a server at rest holds only what it uses.
                        let _ = tokio::task::spawn_blocking(crate::heap::release_free_memory).await;
                    }
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(self.settings.poll_interval) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
                Ok(_) => worked = true,
                Err(e) => {
                    warn!(error = %e, "job queue unavailable; backing off");
                    tokio::select! {
                        () = tokio::time::sleep(self.settings.poll_interval * 2) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
            }
        }
        debug!("worker stopped");
    }

    /// Fails the jobs whose workers lost their leases with no attempt left, then claims
    /// and runs at most one job.
    pub async fn run_one(&self, shutdown: &CancellationToken) -> Result<Step, EngineError> {
        let now = Utc::now();
        self.fail_abandoned(now).await?;
        let lease_until = now + self.settings.lease;
        let Some(claimed) = self.store.claim_job(&self.names, now, lease_until).await? else {
            return Ok(Step::Idle);
        };
        let Some(kind) = self.kinds.get(claimed.job.kind.as_str()).cloned() else {
            // Only registered kinds are claimed; this is a bug, not a job to lose.
            self.store.release_job(&claimed.lease).await?;
            return Err(EngineError::Internal(format!(
                "claimed a job of unregistered kind {}",
                claimed.job.kind
            )));
        };
        let span = info_span!("job", id = %claimed.job.id, kind = %claimed.job.kind,
                              attempt = claimed.job.attempts);
        self.run_claimed(kind.as_ref(), claimed, shutdown)
            .instrument(span)
            .await
    }

    async fn fail_abandoned(&self, now: chrono::DateTime<Utc>) -> Result<(), EngineError> {
        for job in self.store.abandoned_jobs(&self.names, now).await? {
            if let Some(kind) = self.kinds.get(job.kind.as_str()) {
                kind.abandoned(&job).await?;
            }
            if self.store.fail_abandoned(job.id, now).await? {
                self.stats.abandoned(&job.kind);
                warn!(job = %job.id, "job failed for good: its workers lost its lease too often");
                self.publish(job.id).await;
            }
        }
        Ok(())
    }

    async fn run_claimed(
        &self,
        kind: &dyn JobKind,
        claimed: ClaimedJob,
        shutdown: &CancellationToken,
    ) -> Result<Step, EngineError> {
        let lease = claimed.lease.clone();
        let job = &claimed.job;
        let running = self.stats.start(kind.name());
        let claimed_hook = kind.claimed(&claimed).await;
        self.publish(lease.job_id).await;
        info!("job claimed");
        // The attempt is stopped cooperatively, at a point between two store writes: dropping
        // it mid-transaction would leave SQLite's write lock held until the pool noticed.
        let stop = CancellationToken::new();
        let attempt = Attempt {
            runner: self,
            job: &claimed,
            stop: &stop,
        };
        let work = async {
            claimed_hook.map_err(JobError::from)?;
            kind.run(&claimed, &attempt).await
        };
        tokio::pin!(work);
        // Heartbeats run beside the work, never inside a select arm: awaited there, a heartbeat
        // waiting for SQLite's write lock would stop the work that holds it from being polled,
        // and both would stall until the busy timeout.
        let lease_lost = std::sync::atomic::AtomicBool::new(false);
        let heartbeats = async {
            let mut tick = tokio::time::interval(self.settings.lease / 3);
            tick.tick().await;
            loop {
                tick.tick().await;
                let until = Utc::now() + self.settings.lease;
                match self.store.heartbeat(&lease, until).await {
                    Ok(true) => {}
                    Ok(false) => {
                        lease_lost.store(true, std::sync::atomic::Ordering::SeqCst);
                        stop.cancel();
                        return;
                    }
                    Err(e) => warn!(error = %e, "heartbeat failed; will retry"),
                }
            }
        };
        tokio::pin!(heartbeats);
        let mut heartbeats_done = false;
        let mut grace: Option<tokio::time::Instant> = None;
        let result = loop {
            let grace_sleep = async {
                match grace {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = &mut work => break r,
                () = &mut heartbeats, if !heartbeats_done => heartbeats_done = true,
                () = shutdown.cancelled(), if grace.is_none() => {
                    info!(grace = ?self.settings.shutdown_grace, "shutdown: letting the job finish");
                    grace = Some(tokio::time::Instant::now() + self.settings.shutdown_grace);
                }
                () = grace_sleep, if !stop.is_cancelled() => stop.cancel(),
            }
        };
        let lease_lost = lease_lost.load(std::sync::atomic::Ordering::SeqCst);
        let outcome = match result {
            Ok(()) => JobOutcome::Succeeded,
            Err(JobError::Interrupted) if !lease_lost => {
                kind.released(&claimed).await?;
                let released = self.store.release_job(&lease).await?;
                info!(released, "shutdown: job returned to the queue");
                self.publish(lease.job_id).await;
                running.end(stats::Ended::Released);
                return Ok(Step::Released);
            }
            Err(JobError::LeaseLost | JobError::Interrupted) => {
                info!("lease lost; another worker owns the job, or it was cancelled");
                self.publish(lease.job_id).await;
                running.end(stats::Ended::LeaseLost);
                return Ok(Step::LeaseLost);
            }
            Err(JobError::Permanent(error)) => JobOutcome::Failed { error },
            // The queue fails a retry with no attempt left; the kind hears it as a failure.
            Err(JobError::Transient(error)) if job.attempts >= job.max_attempts => {
                JobOutcome::Failed {
                    error: format!("{error} (attempts exhausted)"),
                }
            }
            Err(JobError::Transient(error)) => JobOutcome::Retry {
                retry_at: Utc::now() + self.backoff(job.attempts),
                error,
            },
        };
        running.end(match &outcome {
            JobOutcome::Succeeded => stats::Ended::Succeeded,
            JobOutcome::Failed { .. } => stats::Ended::Failed,
            JobOutcome::Retry { .. } => stats::Ended::Retried,
        });
        match &outcome {
            JobOutcome::Succeeded => info!("job succeeded"),
            JobOutcome::Failed { error } => warn!(%error, "job failed"),
            JobOutcome::Retry { error, retry_at } => warn!(%error, %retry_at, "job will retry"),
        }
        let held = match outcome {
            JobOutcome::Succeeded => true,
            _ => kind.ended(&claimed, &outcome).await?,
        };
        if !held || !self.store.finish_job(&lease, &outcome).await? {
            info!("lease lost before the outcome was recorded");
        }
        self.publish(lease.job_id).await;
        Ok(Step::Ran)
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let exp = attempts.saturating_sub(1).min(20);
        let base = self.settings.backoff_base.saturating_mul(1 << exp);
        let capped = base.min(self.settings.backoff_max);
        // Up to 25% jitter so retries of many jobs do not land together.
        let jitter = u64::from(Utc::now().timestamp_subsec_nanos()) % 250;
        capped + capped * jitter as u32 / 1000
    }

    /// Announces a job change, here and to every process sharing the store; cached job
    /// statuses of its owner become stale.
    async fn publish(&self, id: JobId) {
        if let Err(e) = self.store.announce(StoreChange::JobChanged(id)).await {
            debug!(error = %e, "could not announce job change");
        }
        match self.store.get_job_any_owner(id).await {
            Ok(Some((owner, job))) => {
                self.policy.changed(&owner, Changed::Jobs).await;
                if self.events.receiver_count() > 0 {
                    let _ = self.events.send(JobEvent { owner, job });
                }
            }
            Ok(None) => {}
            Err(e) => debug!(error = %e, "could not publish job event"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::store::NewJob;
    use crate::store::sqlite::{SqliteOptions, SqliteStore};

    /// A kind made for the test: fails transiently while `failures` lasts, and records
    /// every hook it hears.
    struct Flaky {
        failures: Mutex<u32>,
        heard: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl JobKind for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }

        async fn run(&self, job: &ClaimedJob, attempt: &Attempt<'_>) -> Result<(), JobError> {
            attempt.checkpoint()?;
            let progress = [StageProgress {
                stage: "count".into(),
                done: job.payload["n"].as_u64().unwrap_or(0),
                total: 3,
            }];
            attempt.progress("count", &progress).await?;
            let mut left = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            if *left > 0 {
                *left -= 1;
                return Err(JobError::Transient("not yet".into()));
            }
            Ok(())
        }

        async fn claimed(&self, job: &ClaimedJob) -> Result<(), EngineError> {
            self.hear(format!("claimed {}", job.job.attempts));
            Ok(())
        }

        async fn ended(
            &self,
            _job: &ClaimedJob,
            outcome: &JobOutcome,
        ) -> Result<bool, EngineError> {
            self.hear(match outcome {
                JobOutcome::Succeeded => "succeeded".into(),
                JobOutcome::Retry { error, .. } => format!("retry: {error}"),
                JobOutcome::Failed { error } => format!("failed: {error}"),
            });
            Ok(true)
        }
    }

    impl Flaky {
        fn hear(&self, what: String) {
            self.heard
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(what);
        }
    }

    fn flaky_job(owner: &TenantId, id: JobId, payload: serde_json::Value, max: u32) -> NewJob {
        NewJob {
            id,
            owner: owner.clone(),
            kind: "flaky",
            subject: Some(format!("thing:{id}")),
            payload,
            max_attempts: max,
            run_after: Utc::now(),
        }
    }

    async fn runner(dir: &tempfile::TempDir, kind: Arc<Flaky>) -> (Runner, Arc<dyn Store>) {
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("q.db"), &SqliteOptions::default())
                .await
                .unwrap(),
        );
        let cache = strata_cache::Cache::new(strata_cache::CacheSettings {
            l1_bytes: 1 << 20,
            kinds: crate::policy::default_cache_kinds(),
            redis: None,
        })
        .unwrap();
        let policy = CachePolicy::new(cache, crate::policy::Scopes::new("t"), String::new());
        let settings = JobSettings {
            backoff_base: Duration::ZERO,
            ..JobSettings::default()
        };
        let (events, _) = broadcast::channel(16);
        let r = Runner::new(store.clone(), settings, events, policy, vec![kind]);
        (r, store)
    }

    #[tokio::test]
    async fn a_new_kind_is_one_type_and_the_runner_retries_it_until_it_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let kind = Arc::new(Flaky {
            failures: Mutex::new(2),
            heard: Mutex::default(),
        });
        let (r, store) = runner(&dir, kind.clone()).await;
        let owner = TenantId::parse("erin").unwrap();
        let id = JobId::new();
        store
            .enqueue(&flaky_job(&owner, id, json!({ "n": 2 }), 5))
            .await
            .unwrap();
        let stop = CancellationToken::new();
        let mut steps = Vec::new();
        loop {
            match r.run_one(&stop).await.unwrap() {
                Step::Idle => break,
                s => steps.push(s),
            }
        }
        assert_eq!(steps, vec![Step::Ran; 3]);
        let job = store.get_job(&owner, id).await.unwrap().unwrap();
        assert_eq!(
            (job.status, job.attempts),
            (crate::model::JobStatus::Succeeded, 3)
        );
        assert_eq!(job.stages[0].done, 2, "progress recorded under the lease");
        let heard = kind.heard.lock().unwrap().clone();
        assert_eq!(
            heard,
            vec![
                "claimed 1",
                "retry: not yet",
                "claimed 2",
                "retry: not yet",
                "claimed 3"
            ]
        );
    }

    #[tokio::test]
    async fn the_last_transient_failure_reaches_the_kind_as_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let kind = Arc::new(Flaky {
            failures: Mutex::new(10),
            heard: Mutex::default(),
        });
        let (r, store) = runner(&dir, kind.clone()).await;
        let owner = TenantId::parse("erin").unwrap();
        let id = JobId::new();
        store
            .enqueue(&flaky_job(&owner, id, json!({}), 2))
            .await
            .unwrap();
        let stop = CancellationToken::new();
        while r.run_one(&stop).await.unwrap() != Step::Idle {}
        let job = store.get_job(&owner, id).await.unwrap().unwrap();
        assert_eq!(job.status, crate::model::JobStatus::Failed);
        assert_eq!(job.error.as_deref(), Some("not yet (attempts exhausted)"));
        let heard = kind.heard.lock().unwrap().clone();
        assert_eq!(
            heard.last().unwrap(),
            "failed: not yet (attempts exhausted)"
        );
    }
}
