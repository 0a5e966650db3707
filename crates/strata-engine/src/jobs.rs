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

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, info_span, warn};

use sha2::{Digest, Sha256};
use strata_embed::Embedder;

use crate::ann::Ann;
use crate::blobs::BlobStore;
use crate::chunk::{ChunkConfig, Tokenizer, chunk};
use crate::error::EngineError;
use crate::extract::{Extracted, extract};
use crate::ids::TenantId;
use crate::model::{Job, Stage, StageProgress};
use crate::policy::Changed;
use crate::store::{ClaimedJob, JobOutcome, Lease, NewChunk, Store};

/// Chunks embedded (and recorded) per step of the embed stage.
const EMBED_BATCH: usize = 64;

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

/// The engine's components a runner works with.
pub(crate) struct RunnerDeps {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) blobs: BlobStore,
    pub(crate) events: broadcast::Sender<JobEvent>,
    pub(crate) embedder: Arc<dyn Embedder>,
    pub(crate) vectors: Ann,
    pub(crate) tokenizer: Arc<dyn Tokenizer>,
    pub(crate) policy: crate::policy::CachePolicy,
}

/// Shared handles a worker needs.
#[derive(Clone)]
pub struct Runner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) blobs: BlobStore,
    pub(crate) settings: Arc<JobSettings>,
    pub(crate) events: broadcast::Sender<JobEvent>,
    pub(crate) wake: Arc<Notify>,
    pub(crate) sandbox: Sandbox,
    pub(crate) tokenizer: Arc<dyn Tokenizer>,
    pub(crate) embedder: Arc<dyn Embedder>,
    pub(crate) vectors: Ann,
    pub(crate) policy: crate::policy::CachePolicy,
}

impl Runner {
    pub(crate) fn new(deps: RunnerDeps, settings: JobSettings) -> Self {
        let slots = settings.workers.max(1);
        Self {
            sandbox: Sandbox::new(slots, settings.extract_timeout),
            store: deps.store,
            blobs: deps.blobs,
            settings: Arc::new(settings),
            events: deps.events,
            wake: Arc::new(Notify::new()),
            tokenizer: deps.tokenizer,
            embedder: deps.embedder,
            vectors: deps.vectors,
            policy: deps.policy,
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
        // The document's status changed (queued -> processing), and will again at the end.
        let owner = &claimed.owner;
        let documents_changed = || self.policy.changed(owner, Changed::Documents);
        documents_changed().await;
        self.publish(&lease).await;
        info!("job claimed");
        // The attempt is stopped cooperatively, at a point between two store writes: dropping
        // it mid-transaction would leave SQLite's write lock held until the pool noticed.
        let stop = CancellationToken::new();
        let work = self.process(&claimed, &stop);
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
        let result = match result {
            Err(JobError::Interrupted) if lease_lost => Err(JobError::LeaseLost),
            Err(JobError::Interrupted) => {
                let released = self.store.release_job(&lease).await?;
                documents_changed().await;
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
        documents_changed().await;
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

    /// Announces a job change, here and to every process sharing the store; cached job
    /// statuses of its owner become stale.
    async fn publish(&self, lease: &Lease) {
        if let Err(e) = self
            .store
            .announce(crate::store::StoreChange::JobChanged(lease.job_id))
            .await
        {
            debug!(error = %e, "could not announce job change");
        }
        match self.store.get_job_any_owner(lease.job_id).await {
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

    /// The vectors of a group of written chunks (id, text, text hash), by text hash: those
    /// `known` already, those stored for the model before, and the rest from the model (each
    /// distinct text once).
    async fn embed_group(
        &self,
        model: &str,
        group: &[(u64, String, String)],
        mut known: HashMap<String, Vec<f32>>,
    ) -> Result<HashMap<String, Vec<f32>>, JobError> {
        let wanted: Vec<String> = group
            .iter()
            .filter(|(_, _, h)| !known.contains_key(h))
            .map(|(_, _, h)| h.clone())
            .collect();
        if !wanted.is_empty() {
            known.extend(self.store.find_embeddings(model, &wanted).await?);
        }
        let mut todo: Vec<(String, String)> = Vec::new();
        for (_, text, hash) in group {
            if !known.contains_key(hash) && !todo.iter().any(|(h, _)| h == hash) {
                todo.push((hash.clone(), text.clone()));
            }
        }
        if !todo.is_empty() {
            let texts = todo.iter().map(|(_, t)| t.clone()).collect();
            let fresh = self
                .embedder
                .embed_bulk(texts)
                .await
                .map_err(|e| JobError::Transient(e.to_string()))?;
            known.extend(todo.into_iter().map(|(h, _)| h).zip(fresh));
        }
        Ok(known)
    }

    /// extract -> chunk -> embed -> index. Returns the chunk count.
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
        let stage = |stage, total| StageProgress {
            stage,
            done: 0,
            total,
        };
        let mut stages = [
            stage(Stage::Extract, 1),
            stage(Stage::Chunk, 0),
            stage(Stage::Embed, 0),
            stage(Stage::Index, 0),
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
            .sandbox
            .run("extraction", stop, move || {
                extract(media, &bytes).map_err(|e| e.to_string())
            })
            .await?;
        stages[0].done = 1;

        let cfg = self.settings.chunk;
        let tokenizer = self.tokenizer.clone();
        let pieces = self
            .sandbox
            .run("chunking", stop, move || {
                Ok(chunk(&extracted, cfg, tokenizer.as_ref()))
            })
            .await?;
        let n = pieces.len() as u64;
        stages[1].total = n;
        stages[2].total = n;
        stages[3].total = n;
        self.progress(lease, Stage::Chunk, &stages).await?;

        // An interrupted earlier attempt may have left chunks (and vectors) behind.
        let stale = self
            .store
            .clear_chunks(lease, doc.id)
            .await?
            .ok_or(JobError::LeaseLost)?;
        self.vectors.remove(stale).await?;
        let batch = self.settings.chunk_batch.max(1);
        let mut written: Vec<(u64, String, String)> = Vec::with_capacity(pieces.len());
        for (b, group) in pieces.chunks(batch).enumerate() {
            checkpoint()?;
            let rows: Vec<NewChunk> = group
                .iter()
                .enumerate()
                .map(|(i, p)| NewChunk {
                    ordinal: (b * batch + i) as u32,
                    text_sha256: hex::encode(Sha256::digest(p.text.as_bytes())),
                    text: p.text.clone(),
                    token_count: p.token_count,
                })
                .collect();
            let ids = self
                .store
                .write_chunks(lease, &claimed.owner, doc.id, &rows)
                .await?
                .ok_or(JobError::LeaseLost)?;
            written.extend(
                ids.into_iter()
                    .zip(rows)
                    .map(|(id, r)| (id, r.text, r.text_sha256)),
            );
            stages[1].done = written.len() as u64;
            self.progress(lease, Stage::Chunk, &stages).await?;
        }

        // The next group's vectors are computed while this group's are stored, so the model
        // never waits for the database between groups (one job alone keeps it busy).
        let model = self.embedder.model().to_owned();
        let mut vectors: Vec<(u64, TenantId, Vec<f32>)> = Vec::with_capacity(written.len());
        let mut groups = written.chunks(EMBED_BATCH);
        let mut current = match groups.next() {
            Some(g) => Some((g, self.embed_group(&model, g, HashMap::new()).await?)),
            None => None,
        };
        while let Some((group, known)) = current.take() {
            checkpoint()?;
            let rows: Vec<(u64, Vec<f32>)> = group
                .iter()
                .filter_map(|(id, _, h)| known.get(h).map(|v| (*id, v.clone())))
                .collect();
            let next = groups.next();
            // Texts this group just embedded are not looked up (or embedded) again.
            let carried: HashMap<String, Vec<f32>> = next
                .into_iter()
                .flatten()
                .filter_map(|(_, _, h)| known.get(h).map(|v| (h.clone(), v.clone())))
                .collect();
            stages[2].done = (vectors.len() + rows.len()) as u64;
            let (stored, embedded) = tokio::join!(
                async {
                    if !self.store.set_embeddings(lease, &model, &rows).await? {
                        return Err(JobError::LeaseLost);
                    }
                    self.progress(lease, Stage::Embed, &stages).await
                },
                async {
                    match next {
                        Some(g) => Some(self.embed_group(&model, g, carried).await),
                        None => None,
                    }
                }
            );
            stored?;
            vectors.extend(
                rows.into_iter()
                    .map(|(id, v)| (id, claimed.owner.clone(), v)),
            );
            current = match (next, embedded) {
                (Some(g), Some(known)) => Some((g, known?)),
                _ => None,
            };
        }

        let mut vectors = vectors.into_iter();
        loop {
            let group: Vec<_> = vectors.by_ref().take(batch).collect();
            if group.is_empty() {
                break;
            }
            checkpoint()?;
            let n = group.len() as u64;
            self.vectors.add(group).await?;
            stages[3].done += n;
            self.progress(lease, Stage::Index, &stages).await?;
        }
        Ok(pieces.len() as u32)
    }
}

/// Where untrusted CPU work (extraction, chunking) runs: the blocking pool, bounded by a
/// number of slots, under a time limit, with panics contained.
#[derive(Clone)]
pub(crate) struct Sandbox {
    slots: Arc<Semaphore>,
    limit: Duration,
}

impl Sandbox {
    pub(crate) fn new(slots: usize, limit: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            limit,
        }
    }

    /// Runs CPU work on the blocking pool, bounded by the extraction slots, under the
    /// extraction time limit, with panics turned into a permanent failure of this job only.
    async fn run<T: Send + 'static>(
        &self,
        what: &'static str,
        stop: &CancellationToken,
        f: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Result<T, JobError> {
        let permit = self
            .slots
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
        let limit = self.limit;
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

    fn sandbox() -> Sandbox {
        Sandbox::new(2, Duration::from_millis(100))
    }

    #[tokio::test]
    async fn runaway_extraction_fails_at_the_time_limit() {
        let r = sandbox();
        let stop = CancellationToken::new();
        let start = std::time::Instant::now();
        let res = r
            .run("extraction", &stop, || {
                std::thread::sleep(Duration::from_secs(2));
                Ok(())
            })
            .await;
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(matches!(res, Err(JobError::Permanent(m)) if m.contains("longer than the limit")));
    }

    #[tokio::test]
    async fn a_panicking_extractor_fails_only_its_job() {
        // A generous limit: printing the panic's backtrace on a loaded machine can take
        // longer than `sandbox()`'s 100 ms, which would turn the panic into a timeout.
        let r = Sandbox::new(2, Duration::from_secs(30));
        let stop = CancellationToken::new();
        let res: Result<(), _> = r.run("extraction", &stop, || panic!("bad xref")).await;
        assert!(
            matches!(&res, Err(JobError::Permanent(m)) if m.contains("malformed") && m.contains("bad xref")),
            "{res:?}"
        );
        let ok = r.run("extraction", &stop, || Ok(7)).await.unwrap();
        assert_eq!(ok, 7);
    }

    #[tokio::test]
    async fn stop_interrupts_a_wait_on_the_blocking_pool() {
        let r = sandbox();
        let stop = CancellationToken::new();
        stop.cancel();
        let res = r
            .run("extraction", &stop, || {
                std::thread::sleep(Duration::from_millis(50));
                Ok(())
            })
            .await;
        assert!(matches!(res, Err(JobError::Interrupted)));
    }
}
