//! The `ingest_document` job kind: extract -> chunk -> embed -> index one document.
//!
//! Each attempt starts its chunk stage by clearing what an interrupted attempt wrote, and
//! every write is fenced by the lease token, so a document is never ingested twice. The
//! document's status follows its job: processing when claimed; ready with its chunk count
//! (fenced) when the work is complete; queued again for a retry, failed for good, or queued
//! at shutdown through the kind's hooks, each before the queue records the job's own change.
//!
//! Must not import: HTTP types.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use sha2::{Digest, Sha256};
use strata_embed::Embedder;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::error;

use super::{Attempt, JobError, JobKind, JobSettings};
use crate::ann::Ann;
use crate::blobs::BlobStore;
use crate::chunk::{Tokenizer, chunk};
use crate::error::EngineError;
use crate::extract::{ChildError, ExtractSettings, Extracted, extract};
use crate::ids::{DocumentId, JobId, TenantId};
use crate::model::{DocumentStatus, MediaType, Stage, StageProgress, embedding_input, given_title};
use crate::policy::{CachePolicy, Changed};
use crate::store::documents::document_subject;
use crate::store::{Abandoned, ClaimedJob, JobOutcome, NewChunk, NewJob, Store};

/// The kind's name in the queue.
pub const INGEST_DOCUMENT: &str = "ingest_document";

/// Chunks embedded (and recorded) per step of the embed stage.
const EMBED_BATCH: usize = 64;

/// The queued job that ingests a newly stored document.
pub fn new_job(id: JobId, owner: &TenantId, document: DocumentId, max_attempts: u32) -> NewJob {
    NewJob {
        id,
        owner: owner.clone(),
        kind: INGEST_DOCUMENT,
        subject: Some(document_subject(document)),
        payload: json!({ "document_id": document }),
        max_attempts,
        run_after: chrono::Utc::now(),
    }
}

/// The document a job's payload names.
fn document_of(payload: &serde_json::Value) -> Result<DocumentId, EngineError> {
    payload["document_id"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| {
            EngineError::Internal(format!("ingestion payload without a document: {payload}"))
        })
}

/// What ingestion works with.
pub(crate) struct IngestDocument {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) blobs: BlobStore,
    pub(crate) sandbox: Sandbox,
    pub(crate) tokenizer: Arc<dyn Tokenizer>,
    pub(crate) embedder: Arc<dyn Embedder>,
    pub(crate) vectors: Ann,
    pub(crate) lexical: crate::lexical::Lexical,
    pub(crate) policy: CachePolicy,
    pub(crate) settings: JobSettings,
}

#[async_trait]
impl JobKind for IngestDocument {
    fn name(&self) -> &'static str {
        INGEST_DOCUMENT
    }

    async fn run(&self, job: &ClaimedJob, attempt: &Attempt<'_>) -> Result<(), JobError> {
        let id = document_of(&job.payload)?;
        let chunk_count = self.process(job, id, attempt).await?;
        if !self
            .store
            .finish_document(
                &job.lease,
                id,
                DocumentStatus::Ready,
                None,
                Some(chunk_count),
            )
            .await?
        {
            return Err(JobError::LeaseLost);
        }
        self.policy.changed(&job.owner, Changed::Documents).await;
        Ok(())
    }

    async fn claimed(&self, job: &ClaimedJob) -> Result<(), EngineError> {
        let id = document_of(&job.payload)?;
        self.store
            .set_document_status(&job.owner, id, DocumentStatus::Processing, None)
            .await?;
        self.policy.changed(&job.owner, Changed::Documents).await;
        Ok(())
    }

    async fn ended(&self, job: &ClaimedJob, outcome: &JobOutcome) -> Result<bool, EngineError> {
        let id = document_of(&job.payload)?;
        let (status, error) = match outcome {
            JobOutcome::Succeeded => (DocumentStatus::Ready, None),
            JobOutcome::Retry { error, .. } => (DocumentStatus::Queued, Some(error.as_str())),
            JobOutcome::Failed { error } => (DocumentStatus::Failed, Some(error.as_str())),
        };
        let held = self
            .store
            .finish_document(&job.lease, id, status, error, None)
            .await?;
        self.policy.changed(&job.owner, Changed::Documents).await;
        Ok(held)
    }

    async fn released(&self, job: &ClaimedJob) -> Result<(), EngineError> {
        let id = document_of(&job.payload)?;
        self.store
            .finish_document(&job.lease, id, DocumentStatus::Queued, None, None)
            .await?;
        self.policy.changed(&job.owner, Changed::Documents).await;
        Ok(())
    }

    async fn abandoned(&self, job: &Abandoned) -> Result<(), EngineError> {
        let id = document_of(&job.payload)?;
        self.store
            .set_document_status(
                &job.owner,
                id,
                DocumentStatus::Failed,
                Some("processing was interrupted too many times"),
            )
            .await?;
        self.policy.changed(&job.owner, Changed::Documents).await;
        Ok(())
    }
}

impl IngestDocument {
    /// The vectors of a group of written chunks (id, embedding input, its hash), by hash: those
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
        id: DocumentId,
        attempt: &Attempt<'_>,
    ) -> Result<u32, JobError> {
        let checkpoint = || attempt.checkpoint();
        let stop = attempt.stopped();
        let lease = &claimed.lease;
        // Deleting the document cancels the job and revokes its lease.
        let Some(doc) = self.store.get_document(&claimed.owner, id).await? else {
            return Err(JobError::LeaseLost);
        };
        let stage = |stage: Stage, total| StageProgress {
            stage: stage.as_str().to_owned(),
            done: 0,
            total,
        };
        let mut stages = [
            stage(Stage::Extract, 1),
            stage(Stage::Chunk, 0),
            stage(Stage::Embed, 0),
            stage(Stage::Index, 0),
        ];
        attempt.progress(Stage::Extract.as_str(), &stages).await?;

        let bytes = match self.blobs.read(&doc.sha256).await {
            Ok(b) => b,
            Err(EngineError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(JobError::Permanent("the original file is missing".into()));
            }
            Err(e) => return Err(JobError::Transient(e.to_string())),
        };
        let extracted = self.sandbox.extract(doc.media_type, bytes, stop).await?;
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
        attempt.progress(Stage::Chunk.as_str(), &stages).await?;

        // An interrupted earlier attempt may have left chunks (and vectors) behind.
        let stale = self
            .store
            .clear_chunks(lease, doc.id)
            .await?
            .ok_or(JobError::LeaseLost)?;
        self.vectors.remove(stale.clone()).await?;
        self.lexical.remove(stale).await?;
        let batch = self.settings.chunk_batch.max(1);
        let given_title = given_title(&doc.title, &doc.sha256);
        let mut written: Vec<(u64, String, String)> = Vec::with_capacity(pieces.len());
        for (b, group) in pieces.chunks(batch).enumerate() {
            checkpoint()?;
            let inputs: Vec<String> = group
                .iter()
                .map(|p| embedding_input(given_title, &p.text))
                .collect();
            let rows: Vec<NewChunk> = group
                .iter()
                .zip(&inputs)
                .enumerate()
                .map(|(i, (p, input))| NewChunk {
                    ordinal: (b * batch + i) as u32,
                    text_sha256: hex::encode(Sha256::digest(input.as_bytes())),
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
                    .zip(inputs)
                    .zip(rows)
                    .map(|((id, input), r)| (id, input, r.text_sha256)),
            );
            stages[1].done = written.len() as u64;
            attempt.progress(Stage::Chunk.as_str(), &stages).await?;
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
                    attempt.progress(Stage::Embed.as_str(), &stages).await
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
            attempt.progress(Stage::Index.as_str(), &stages).await?;
        }
        checkpoint()?;
        self.lexical
            .refresh_document(self.store.as_ref(), doc.id)
            .await?;
        Ok(pieces.len() as u32)
    }
}

/// Where untrusted CPU work (extraction, chunking) runs, bounded by a number of slots and
/// under a time limit: extraction in a child process when the settings name one (see
/// [`crate::extract::ExtractSettings`]), else like chunking on the blocking pool with panics
/// contained.
#[derive(Clone)]
pub(crate) struct Sandbox {
    slots: Arc<Semaphore>,
    limit: Duration,
    extract: ExtractSettings,
}

impl Sandbox {
    pub(crate) fn new(slots: usize, limit: Duration, extract: ExtractSettings) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            limit,
            extract,
        }
    }

    /// The text of a file of `media`.
    async fn extract(
        &self,
        media: MediaType,
        bytes: Vec<u8>,
        stop: &CancellationToken,
    ) -> Result<Extracted, JobError> {
        let Some(child) = self.extract.child_for(media) else {
            return self
                .run("extraction", stop, move || {
                    extract(media, &bytes).map_err(|e| e.to_string())
                })
                .await;
        };
        let _permit = self
            .slots
            .acquire()
            .await
            .map_err(|_| JobError::Transient("shutting down".into()))?;
        child
            .run(bytes, self.limit, stop)
            .await
            .map_err(|e| match e {
                ChildError::Interrupted => JobError::Interrupted,
                e @ ChildError::Spawn { .. } => {
                    error!(error = %e, "the extraction child could not start");
                    JobError::Transient(e.to_string())
                }
                e @ (ChildError::Extract(_) | ChildError::TimedOut(_)) => {
                    JobError::Permanent(e.to_string())
                }
            })
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
                let msg = crate::error::panic_message(panic.as_ref())
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
        Sandbox::new(2, Duration::from_millis(100), ExtractSettings::default())
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
        let r = Sandbox::new(2, Duration::from_secs(30), ExtractSettings::default());
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
