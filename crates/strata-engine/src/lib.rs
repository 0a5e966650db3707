//! strata's domain: documents, chunks, tags and durable ingestion jobs, over a pluggable
//! [`store::Store`] (SQLite today) and a content-addressed blob directory.
//!
//! Owns: validation, tenancy (every operation takes the owner), extraction, chunking, the job
//! queue and its workers. Must not import: HTTP (axum, hyper), the cache, anything of the
//! server. The HTTP layer maps [`EngineError`] to responses; this crate never decides a status.

pub mod blobs;
pub mod chunk;
pub mod cursor;
mod engine;
pub mod error;
pub mod extract;
pub mod ids;
pub mod jobs;
pub mod model;
pub mod store;
pub mod validate;

pub use engine::{
    DEFAULT_PAGE, Engine, EngineSettings, IngestOutcome, ListDocuments, ListJobs, MAX_PAGE,
    UploadMeta,
};
pub use error::{EngineError, Result};
pub use ids::{DocumentId, IdKind, JobId, TenantId};
