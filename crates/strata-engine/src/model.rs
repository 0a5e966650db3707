//! The domain's data types, shared by the engine and its storage backends.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::ids::{DocumentId, JobId, TenantId};

/// Processing state of a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DocumentStatus {
    /// Waiting for a worker.
    Queued,
    /// A worker is extracting and chunking it.
    Processing,
    /// Fully processed.
    Ready,
    /// Processing failed for good; `error` says why.
    Failed,
}

impl DocumentStatus {
    /// The stored/wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Ready => "ready",
            Self::Failed => "failed",
        }
    }

    /// Parses a stored/wire name.
    pub fn parse(s: &str) -> Result<Self, EngineError> {
        Ok(match s {
            "queued" => Self::Queued,
            "processing" => Self::Processing,
            "ready" => Self::Ready,
            "failed" => Self::Failed,
            _ => {
                return Err(EngineError::invalid(
                    "status",
                    "must be one of queued, processing, ready, failed",
                ));
            }
        })
    }
}

/// The media types strata can extract text from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum MediaType {
    /// `text/plain`
    #[serde(rename = "text/plain")]
    Text,
    /// `text/markdown`
    #[serde(rename = "text/markdown")]
    Markdown,
    /// `text/html`
    #[serde(rename = "text/html")]
    Html,
    /// `application/pdf`
    #[serde(rename = "application/pdf")]
    Pdf,
}

impl MediaType {
    /// The MIME type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text/plain",
            Self::Markdown => "text/markdown",
            Self::Html => "text/html",
            Self::Pdf => "application/pdf",
        }
    }

    /// Parses a MIME type, ignoring parameters such as `; charset=utf-8`.
    pub fn from_mime(mime: &str) -> Option<Self> {
        let essence = mime
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        Some(match essence.as_str() {
            "text/plain" => Self::Text,
            "text/markdown" | "text/x-markdown" => Self::Markdown,
            "text/html" | "application/xhtml+xml" => Self::Html,
            "application/pdf" => Self::Pdf,
            _ => return None,
        })
    }

    /// Guesses from a file name's extension.
    pub fn from_filename(name: &str) -> Option<Self> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        Some(match ext.as_str() {
            "txt" | "text" => Self::Text,
            "md" | "markdown" => Self::Markdown,
            "html" | "htm" | "xhtml" => Self::Html,
            "pdf" => Self::Pdf,
            _ => return None,
        })
    }
}

/// A stored document, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Document {
    /// Its id.
    pub id: DocumentId,
    /// Its title (defaults to the file name).
    pub title: String,
    /// The uploaded file's name, if any.
    pub filename: Option<String>,
    /// What kind of content it is.
    pub media_type: MediaType,
    /// Size of the original in bytes.
    pub byte_size: u64,
    /// Hex sha256 of the original; unique per owner.
    pub sha256: String,
    /// Tags, sorted and unique.
    pub tags: Vec<String>,
    /// Caller-supplied JSON object.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// Processing state.
    pub status: DocumentStatus,
    /// Why processing failed, when it did.
    pub error: Option<String>,
    /// Number of chunks produced.
    pub chunk_count: u32,
    /// The job that processes (or processed) it.
    pub job_id: Option<JobId>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A document to insert, after validation.
#[derive(Debug, Clone)]
pub struct NewDocument {
    /// Owner.
    pub owner: TenantId,
    /// Title.
    pub title: String,
    /// Uploaded file name.
    pub filename: Option<String>,
    /// Media type.
    pub media_type: MediaType,
    /// Byte size.
    pub byte_size: u64,
    /// Hex sha256.
    pub sha256: String,
    /// Normalised tags.
    pub tags: Vec<String>,
    /// JSON object.
    pub metadata: serde_json::Value,
}

/// A partial update of a document; `None` leaves the field alone.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentPatch {
    /// New title.
    #[schema(min_length = 1, max_length = 512)]
    pub title: Option<String>,
    /// Replacement tag set: at most 64 distinct, each 1-64 characters without commas.
    pub tags: Option<Vec<String>>,
    /// Replacement metadata object.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

/// A stored chunk of a document's text.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Chunk {
    /// The document it belongs to.
    pub document_id: DocumentId,
    /// Position in the document, from 0.
    pub ordinal: u32,
    /// The text.
    pub text: String,
    /// Token count under the chunker's tokenizer.
    pub token_count: u32,
    /// Whether its embedding is stored.
    pub embedded: bool,
}

/// A document listing filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocumentFilter {
    /// Only documents carrying this tag.
    pub tag: Option<String>,
    /// Only documents in this state.
    pub status: Option<DocumentStatus>,
}

/// A page of results with an opaque cursor to the next one.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// The items, newest first.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A tag and how many of the tenant's documents carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TagCount {
    /// The tag.
    pub tag: String,
    /// Number of documents.
    pub count: u64,
}

/// Lifecycle of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting to be claimed (possibly after a backoff).
    Queued,
    /// Claimed by a worker holding a lease.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Failed for good (attempts exhausted or a permanent error).
    Failed,
    /// Its subject was deleted before it finished.
    Cancelled,
}

impl JobStatus {
    /// The stored/wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses a stored/wire name.
    pub fn parse(s: &str) -> Result<Self, EngineError> {
        Ok(match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => {
                return Err(EngineError::invalid(
                    "status",
                    "must be one of queued, running, succeeded, failed, cancelled",
                ));
            }
        })
    }

    /// Whether the job will never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// A stage of document ingestion (the `ingest_document` job kind's stages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Turn the original into text.
    Extract,
    /// Split the text into token-bounded chunks.
    Chunk,
    /// Embed each chunk (reusing vectors of text the model already embedded).
    Embed,
    /// Add the vectors to the nearest-neighbour index.
    Index,
}

impl Stage {
    /// The stage's name in a job's `stage` and `stages`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Extract => "extract",
            Stage::Chunk => "chunk",
            Stage::Embed => "embed",
            Stage::Index => "index",
        }
    }
}

/// Progress of one stage of a job; each job kind names its own stages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StageProgress {
    /// Which stage.
    pub stage: String,
    /// Units done.
    pub done: u64,
    /// Units in all (0 until known).
    pub total: u64,
}

/// A durable background job.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// What it does: the name of its job kind (`ingest_document`).
    pub kind: String,
    /// What it works on, as the owning aggregate names it (`document:{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The document it processes, for jobs of documents (taken from the payload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_id: Option<DocumentId>,
    /// Lifecycle state.
    pub status: JobStatus,
    /// The stage being worked on (or last worked on).
    pub stage: Option<String>,
    /// Per-stage progress, in pipeline order.
    pub stages: Vec<StageProgress>,
    /// How many times it has been claimed.
    pub attempts: u32,
    /// The claim limit.
    pub max_attempts: u32,
    /// The last error, if any.
    pub error: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it reached a terminal state.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A job listing filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub status: Option<JobStatus>,
}

/// The title of a document uploaded without a title or file name: `untitled-` and the first
/// 8 hex digits of its content hash.
pub fn generated_title(sha256: &str) -> String {
    format!("untitled-{}", &sha256[..8.min(sha256.len())])
}

/// Longest title prefixed to a chunk for the model, in characters.
const MAX_TITLE_CHARS: usize = 200;

/// What the model embeds for a chunk: its document's title (at most [`MAX_TITLE_CHARS`]),
/// a blank line, then its text, so a query naming the document finds its chunks (the
/// title-and-text input BEIR evaluates with).
pub fn embedding_input(title: &str, text: &str) -> String {
    let title = title.trim();
    if title.is_empty() {
        return text.to_owned();
    }
    let title: String = title.chars().take(MAX_TITLE_CHARS).collect();
    format!("{title}\n\n{text}")
}

/// The title a document's chunks are embedded and indexed with: its own, or none when it
/// was generated (`untitled-...` says nothing a model or a query could use).
pub fn given_title<'a>(title: &'a str, sha256: &str) -> &'a str {
    if title == generated_title(sha256) {
        ""
    } else {
        title
    }
}
