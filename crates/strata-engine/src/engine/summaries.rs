//! Document summaries as background jobs: `POST /v1/documents/{id}/summary` queues a
//! `summarise_document` job whose attempt summarises the document's chunks in parts of about
//! [`PART_TOKENS`] tokens (the map stage, one model call a part) and then the parts' summaries
//! into one (the reduce stage), reporting progress per stage on the job's event stream. The
//! summary is stored with its document, removed when the document is deleted (and a queued
//! job with it: its subject is the document), and read through the cache in the document's
//! catalogue scope, which every change of the document bumps.
//!
//! The model is reached through [`Completer`], which the LLM gateway implements: the engine
//! knows nothing of upstreams. Without one (no gateway configured) a summary job fails at
//! once, saying so.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use chrono::Utc;
use serde_json::json;

use crate::error::{EngineError, Result};
use crate::ids::{DocumentId, IdKind, JobId, TenantId};
use crate::jobs::{Attempt, JobError, JobKind};
use crate::model::{DocumentStatus, Job, StageProgress};
use crate::policy::{CachePolicy, Changed};
use crate::store::documents::document_subject;
use crate::store::{ClaimedJob, NewJob, Store, Summary};

/// The kind's name in the queue.
pub const SUMMARISE_DOCUMENT: &str = "summarise_document";

/// About how many tokens of the document each map-stage call reads.
pub const PART_TOKENS: u64 = 1500;

/// A language model, as summaries need one: a prompt in, text out.
#[async_trait]
pub trait Completer: Send + Sync + 'static {
    /// Answers `prompt` with `model` on `owner`'s account (budgets and usage apply), in at
    /// most `max_tokens`. `Err` says why not; `retryable` errors are retried with backoff.
    async fn complete(
        &self,
        owner: &TenantId,
        model: &str,
        prompt: String,
        max_tokens: u32,
    ) -> std::result::Result<String, CompleteError>;
}

/// Why a completion failed.
#[derive(Debug, Clone)]
pub struct CompleteError {
    /// What happened.
    pub message: String,
    /// Whether trying again later may succeed.
    pub retryable: bool,
}

/// Where the completer is set once the gateway exists.
pub(crate) type CompleterSlot = Arc<RwLock<Option<Arc<dyn Completer>>>>;

fn completer(slot: &CompleterSlot) -> Option<Arc<dyn Completer>> {
    slot.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The summary service. Cheap to clone.
#[derive(Clone)]
pub struct SummaryService {
    pub(super) store: Arc<dyn Store>,
    pub(super) completer: CompleterSlot,
    pub(super) wake: Arc<tokio::sync::Notify>,
    pub(super) max_attempts: u32,
}

impl SummaryService {
    /// Makes `completer` the model summaries are written with.
    pub fn set_completer(&self, completer: Arc<dyn Completer>) {
        *self.completer.write().unwrap_or_else(|p| p.into_inner()) = Some(completer);
    }

    /// Queues a summary of a ready document with `model`, each model call answering in at
    /// most `max_tokens`; the job.
    pub async fn request(
        &self,
        owner: &TenantId,
        id: DocumentId,
        model: &str,
        max_tokens: u32,
    ) -> Result<Job> {
        crate::validate::label("model", model, 256)?;
        if !(16..=8192).contains(&max_tokens) {
            return Err(EngineError::invalid("max_tokens", "from 16 to 8192"));
        }
        let doc = self
            .store
            .get_document(owner, id)
            .await?
            .ok_or_else(|| EngineError::not_found(IdKind::Document, id))?;
        if doc.status != DocumentStatus::Ready {
            return Err(EngineError::invalid(
                "document",
                format!(
                    "is {}, not ready: summarise it once its ingestion finishes",
                    doc.status.as_str()
                ),
            ));
        }
        let job_id = JobId::new();
        self.store
            .enqueue(&NewJob {
                id: job_id,
                owner: owner.clone(),
                kind: SUMMARISE_DOCUMENT,
                subject: Some(document_subject(id)),
                payload: json!({"document_id": id, "model": model, "max_tokens": max_tokens}),
                max_attempts: self.max_attempts,
                run_after: Utc::now(),
            })
            .await?;
        self.wake.notify_one();
        self.store
            .get_job(owner, job_id)
            .await?
            .ok_or_else(|| EngineError::Internal("a queued job vanished".into()))
    }

    /// The document's summary; not found when none was written (or the document is gone).
    pub async fn get(&self, owner: &TenantId, id: DocumentId) -> Result<Summary> {
        self.store
            .get_document(owner, id)
            .await?
            .ok_or_else(|| EngineError::not_found(IdKind::Document, id))?;
        self.store
            .get_summary(owner, id)
            .await?
            .ok_or_else(|| EngineError::NotFound {
                kind: IdKind::Document,
                id: format!("{id} has no summary yet (POST /v1/documents/{id}/summary)"),
            })
    }
}

/// The `summarise_document` job kind.
pub(crate) struct SummariseDocument {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) policy: CachePolicy,
    pub(crate) completer: CompleterSlot,
}

fn permanent(e: impl std::fmt::Display) -> JobError {
    JobError::Permanent(e.to_string())
}

#[async_trait]
impl JobKind for SummariseDocument {
    fn name(&self) -> &'static str {
        SUMMARISE_DOCUMENT
    }

    async fn run(
        &self,
        job: &ClaimedJob,
        attempt: &Attempt<'_>,
    ) -> std::result::Result<(), JobError> {
        let p = &job.payload;
        let id: DocumentId = p["document_id"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| permanent(format!("summary payload without a document: {p}")))?;
        let model = p["model"].as_str().unwrap_or_default().to_owned();
        let max_tokens = p["max_tokens"].as_u64().unwrap_or(512) as u32;
        let owner = &job.owner;
        let Some(completer) = completer(&self.completer) else {
            return Err(permanent(
                "no LLM upstream is configured (strata serve --upstream-url ...)",
            ));
        };
        let doc = self
            .store
            .get_document(owner, id)
            .await?
            .ok_or_else(|| permanent("the document was deleted"))?;
        // The document's text in parts of about PART_TOKENS tokens.
        let mut parts: Vec<String> = vec![String::new()];
        let mut tokens = 0u64;
        let mut from = 0u32;
        loop {
            let page = self.store.list_chunks(owner, id, from, 500).await?;
            let Some(last) = page.last() else { break };
            from = last.ordinal + 1;
            for c in &page {
                if tokens > 0 && tokens + u64::from(c.token_count) > PART_TOKENS {
                    parts.push(String::new());
                    tokens = 0;
                }
                let part = parts.last_mut().expect("parts is never empty");
                if !part.is_empty() {
                    part.push(' ');
                }
                part.push_str(&c.text);
                tokens += u64::from(c.token_count);
            }
            if page.len() < 500 {
                break;
            }
        }
        if parts.len() == 1 && parts[0].is_empty() {
            return Err(permanent("the document has no text to summarise"));
        }
        let total = parts.len() as u64;
        let call = |prompt: String| {
            let (completer, model) = (completer.clone(), model.clone());
            async move {
                completer
                    .complete(owner, &model, prompt, max_tokens)
                    .await
                    .map_err(|e| {
                        if e.retryable {
                            JobError::Transient(e.message)
                        } else {
                            JobError::Permanent(e.message)
                        }
                    })
            }
        };
        let stages = |map: u64, reduce: u64| {
            vec![
                StageProgress {
                    stage: "map".into(),
                    done: map,
                    total,
                },
                StageProgress {
                    stage: "reduce".into(),
                    done: reduce,
                    total: 1,
                },
            ]
        };
        attempt.progress("map", &stages(0, 0)).await?;
        let mut partials = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            attempt.checkpoint()?;
            let prompt = if total == 1 {
                format!(
                    "Summarise the document \"{}\" in a few sentences.\n\n{part}",
                    doc.title
                )
            } else {
                format!(
                    "Summarise part {} of {total} of the document \"{}\" in a few sentences.\n\n{part}",
                    i + 1,
                    doc.title
                )
            };
            partials.push(call(prompt).await?);
            attempt.progress("map", &stages(i as u64 + 1, 0)).await?;
        }
        attempt.checkpoint()?;
        let summary = if partials.len() == 1 {
            partials.remove(0)
        } else {
            let joined = partials
                .iter()
                .enumerate()
                .map(|(i, s)| format!("Part {}: {s}", i + 1))
                .collect::<Vec<_>>()
                .join("\n\n");
            call(format!(
                "These are summaries of the consecutive parts of the document \"{}\". Combine \
                 them into one summary of the whole document.\n\n{joined}",
                doc.title
            ))
            .await?
        };
        attempt.progress("reduce", &stages(total, 1)).await?;
        attempt.checkpoint()?;
        // The document may have been deleted while the model worked: keep no orphan.
        if self.store.get_document(owner, id).await?.is_none() {
            return Err(permanent("the document was deleted"));
        }
        self.store
            .put_summary(
                owner,
                &Summary {
                    document_id: id.to_string(),
                    model,
                    summary,
                    parts: total as u32,
                    created_at: Utc::now(),
                },
            )
            .await?;
        self.policy.changed(owner, Changed::Catalog).await;
        Ok(())
    }
}
