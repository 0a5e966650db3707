//! The durable job runner: workers claim jobs from the store, hold a lease with heartbeats,
//! run the ingestion stages, retry transient failures with exponential backoff, and publish
//! every state change on a broadcast channel for live progress.
//!
//! Crash safety comes from the store: a worker that dies stops heartbeating, its lease
//! expires, and another worker (after a restart, possibly in another process) claims the job
//! again. Each attempt starts its chunk stage by clearing what an interrupted attempt wrote,
//! and every write is fenced by the lease token, so a document is never ingested twice.
//!
//! Must not import: HTTP types.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::blobs::BlobStore;
use crate::chunk::{ChunkConfig, Tokenizer, WordTokenizer, chunk};
use crate::error::EngineError;
use crate::extract::{Extracted, extract};
use crate::ids::TenantId;
use crate::model::{Chunk, Job, Stage, StageProgress};
use crate::store::{ClaimedJob, JobOutcome, Lease, Store};

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

/// Shared handles a worker needs.
#[derive(Clone)]
pub struct Runner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) blobs: BlobStore,
    pub(crate) settings: Arc<JobSettings>,
    pub(crate) events: broadcast::Sender<JobEvent>,
    pub(crate) wake: Arc<Notify>,
    pub(crate) extract_slots: Arc<Semaphore>,
    pub(crate) tokenizer: Arc<dyn Tokenizer>,
}

impl Runner {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        blobs: BlobStore,
        settings: JobSettings,
        events: broadcast::Sender<JobEvent>,
    ) -> Self {
        let slots = settings.workers.max(1);
        Self {
            store,
            blobs,
            settings: Arc::new(settings),
            events,
            wake: Arc::new(Notify::new()),
            extract_slots: Arc::new(Semaphore::new(slots)),
            tokenizer: Arc::new(WordTokenizer),
        }
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
        while !shutdown.is_cancelled() {
            match self.run_one(&shutdown).await {
                Ok(Step::Idle) => {
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(self.settings.poll_interval) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
                Ok(_) => {}
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

    /// Claims and runs at most one job.
    pub async fn run_one(&self, shutdown: &CancellationToken) -> Result<Step, EngineError> {
        let now = Utc::now();
        let lease_until = now + self.settings.lease;
        let Some(claimed) = self.store.claim_job(now, lease_until).await? else {
            return Ok(Step::Idle);
        };
        let span = info_span!("job", id = %claimed.job.id, doc = %claimed.document.id,
                              attempt = claimed.job.attempts);
        self.run_claimed(claimed, shutdown).instrument(span).await
    }

    async fn run_claimed(
        &self,
        claimed: ClaimedJob,
        shutdown: &CancellationToken,
    ) -> Result<Step, EngineError> {
        let lease = claimed.lease.clone();
        let attempts = claimed.job.attempts;
        self.publish(&lease).await;
        info!("job claimed");
        // The attempt is stopped cooperatively, at a point between two store writes: dropping
        // it mid-transaction would leave SQLite's write lock held until the pool noticed.
        let stop = CancellationToken::new();
        let work = self.process(&claimed, &stop);
        tokio::pin!(work);
        let mut heartbeat = tokio::time::interval(self.settings.lease / 3);
        heartbeat.tick().await;
        let mut grace: Option<tokio::time::Instant> = None;
        let mut lease_lost = false;
        let result = loop {
            let grace_sleep = async {
                match grace {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = &mut work => break r,
                _ = heartbeat.tick(), if !stop.is_cancelled() => {
                    let until = Utc::now() + self.settings.lease;
                    match self.store.heartbeat(&lease, until).await {
                        Ok(true) => {}
                        Ok(false) => {
                            lease_lost = true;
                            stop.cancel();
                        }
                        Err(e) => warn!(error = %e, "heartbeat failed; will retry"),
                    }
                }
                () = shutdown.cancelled(), if grace.is_none() => {
                    info!(grace = ?self.settings.shutdown_grace, "shutdown: letting the job finish");
                    grace = Some(tokio::time::Instant::now() + self.settings.shutdown_grace);
                }
                () = grace_sleep, if !stop.is_cancelled() => stop.cancel(),
            }
        };
        let result = match result {
            Err(JobError::Interrupted) if lease_lost => Err(JobError::LeaseLost),
            Err(JobError::Interrupted) => {
                let released = self.store.release_job(&lease).await?;
                info!(released, "shutdown: job returned to the queue");
                self.publish(&lease).await;
                return Ok(Step::Released);
            }
            other => other,
        };
        let outcome = match result {
            Ok(chunk_count) => JobOutcome::Succeeded { chunk_count },
            Err(JobError::LeaseLost | JobError::Interrupted) => {
                info!("lease lost; another worker owns the job, or it was cancelled");
                self.publish(&lease).await;
                return Ok(Step::LeaseLost);
            }
            Err(JobError::Permanent(error)) => JobOutcome::Failed { error },
            Err(JobError::Transient(error)) => JobOutcome::Retry {
                retry_at: Utc::now() + self.backoff(attempts),
                error,
            },
        };
        match &outcome {
            JobOutcome::Succeeded { chunk_count } => info!(chunk_count, "job succeeded"),
            JobOutcome::Failed { error } => warn!(%error, "job failed"),
            JobOutcome::Retry { error, retry_at } => warn!(%error, %retry_at, "job will retry"),
        }
        if !self.store.finish_job(&lease, outcome).await? {
            info!("lease lost before the outcome was recorded");
        }
        self.publish(&lease).await;
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

    async fn publish(&self, lease: &Lease) {
        if self.events.receiver_count() == 0 {
            return;
        }
        match self.store.get_job_any_owner(lease.job_id).await {
            Ok(Some((owner, job))) => {
                let _ = self.events.send(JobEvent { owner, job });
            }
            Ok(None) => {}
            Err(e) => debug!(error = %e, "could not publish job event"),
        }
    }

    async fn progress(
        &self,
        lease: &Lease,
        stage: Stage,
        stages: &[StageProgress],
    ) -> Result<(), JobError> {
        if !self.store.record_progress(lease, stage, stages).await? {
            return Err(JobError::LeaseLost);
        }
        self.publish(lease).await;
        Ok(())
    }

    /// extract -> chunk. Returns the chunk count.
    async fn process(
        &self,
        claimed: &ClaimedJob,
        stop: &CancellationToken,
    ) -> Result<u32, JobError> {
        let checkpoint = || {
            if stop.is_cancelled() {
                Err(JobError::Interrupted)
            } else {
                Ok(())
            }
        };
        let lease = &claimed.lease;
        let doc = &claimed.document;
        let mut stages = [
            StageProgress {
                stage: Stage::Extract,
                done: 0,
                total: 1,
            },
            StageProgress {
                stage: Stage::Chunk,
                done: 0,
                total: 0,
            },
        ];
        self.progress(lease, Stage::Extract, &stages).await?;

        let bytes = match self.blobs.read(&doc.sha256).await {
            Ok(b) => b,
            Err(EngineError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(JobError::Permanent("the original file is missing".into()));
            }
            Err(e) => return Err(JobError::Transient(e.to_string())),
        };
        let media = doc.media_type;
        let extracted: Extracted = self
            .blocking("extraction", stop, move || {
                extract(media, &bytes).map_err(|e| e.to_string())
            })
            .await?;
        stages[0].done = 1;

        let cfg = self.settings.chunk;
        let tokenizer = self.tokenizer.clone();
        let pieces = self
            .blocking("chunking", stop, move || {
                Ok(chunk(&extracted, cfg, tokenizer.as_ref()))
            })
            .await?;
        stages[1].total = pieces.len() as u64;
        self.progress(lease, Stage::Chunk, &stages).await?;

        if !self.store.clear_chunks(lease, doc.id).await? {
            return Err(JobError::LeaseLost);
        }
        let batch = self.settings.chunk_batch.max(1);
        for (b, group) in pieces.chunks(batch).enumerate() {
            checkpoint()?;
            let rows: Vec<Chunk> = group
                .iter()
                .enumerate()
                .map(|(i, p)| Chunk {
                    document_id: doc.id,
                    ordinal: (b * batch + i) as u32,
                    text: p.text.clone(),
                    token_count: p.token_count,
                })
                .collect();
            if !self
                .store
                .write_chunks(lease, &claimed.owner, &rows)
                .await?
            {
                return Err(JobError::LeaseLost);
            }
            stages[1].done += rows.len() as u64;
            self.progress(lease, Stage::Chunk, &stages).await?;
        }
        Ok(pieces.len() as u32)
    }

    /// Runs CPU work on the blocking pool, bounded by the extraction slots, under the
    /// extraction time limit, with panics turned into a permanent failure of this job only.
    async fn blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        stop: &CancellationToken,
        f: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Result<T, JobError> {
        let permit = self
            .extract_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| JobError::Transient("shutting down".into()))?;
        let handle = tokio::task::spawn_blocking(move || {
            // The permit lives as long as the thread does, even past a timeout: a runaway
            // file can occupy the extraction slots, never the async runtime.
            let _permit = permit;
            std::panic::catch_unwind(AssertUnwindSafe(f))
        });
        let limit = self.settings.extract_timeout;
        let outcome = tokio::select! {
            r = tokio::time::timeout(limit, handle) => r,
            // Abandoning the thread is safe: it holds no database state.
            () = stop.cancelled() => return Err(JobError::Interrupted),
        };
        match outcome {
            Err(_) => Err(JobError::Permanent(format!(
                "{what} took longer than the limit of {} s",
                limit.as_secs_f64()
            ))),
            Ok(Err(join)) => Err(JobError::Transient(format!("{what} task failed: {join}"))),
            Ok(Ok(Err(panic))) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                error!(what, panic = %msg, "extractor panicked on this file");
                Err(JobError::Permanent(format!(
                    "{what} failed: the file is malformed ({msg})"
                )))
            }
            Ok(Ok(Ok(Err(e)))) => Err(JobError::Permanent(e)),
            Ok(Ok(Ok(Ok(v)))) => Ok(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::{SqliteOptions, SqliteStore};

    async fn runner(dir: &tempfile::TempDir) -> Runner {
        let store = SqliteStore::open(&dir.path().join("t.db"), &SqliteOptions::default())
            .await
            .unwrap();
        let blobs = BlobStore::open(dir.path().join("blobs")).await.unwrap();
        let settings = JobSettings {
            extract_timeout: Duration::from_millis(100),
            ..JobSettings::default()
        };
        Runner::new(Arc::new(store), blobs, settings, broadcast::channel(4).0)
    }

    #[tokio::test]
    async fn runaway_extraction_fails_at_the_time_limit() {
        let dir = tempfile::tempdir().unwrap();
        let r = runner(&dir).await;
        let stop = CancellationToken::new();
        let start = std::time::Instant::now();
        let res = r
            .blocking("extraction", &stop, || {
                std::thread::sleep(Duration::from_secs(2));
                Ok(())
            })
            .await;
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(matches!(res, Err(JobError::Permanent(m)) if m.contains("longer than the limit")));
    }

    #[tokio::test]
    async fn a_panicking_extractor_fails_only_its_job() {
        let dir = tempfile::tempdir().unwrap();
        let r = runner(&dir).await;
        let stop = CancellationToken::new();
        let res: Result<(), _> = r.blocking("extraction", &stop, || panic!("bad xref")).await;
        assert!(
            matches!(res, Err(JobError::Permanent(m)) if m.contains("malformed") && m.contains("bad xref"))
        );
        let ok = r.blocking("extraction", &stop, || Ok(7)).await.unwrap();
        assert_eq!(ok, 7);
    }

    #[tokio::test]
    async fn stop_interrupts_a_wait_on_the_blocking_pool() {
        let dir = tempfile::tempdir().unwrap();
        let r = runner(&dir).await;
        let stop = CancellationToken::new();
        stop.cancel();
        let res = r
            .blocking("extraction", &stop, || {
                std::thread::sleep(Duration::from_millis(50));
                Ok(())
            })
            .await;
        assert!(matches!(res, Err(JobError::Interrupted)));
    }
}
