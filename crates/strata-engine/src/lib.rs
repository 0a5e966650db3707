//! strata's domain: documents, chunks, tags, a generic durable job queue (ingestion is one
//! kind), hybrid search and agents' memories, as services ([`DocumentService`],
//! [`SearchService`], [`JobService`], [`MemoryService`], [`AdminService`]) wired once by [`Engine::open`], over storage by
//! aggregate ([`store`]: SQLite or PostgreSQL, the SQL of each aggregate written once), a
//! content-addressed blob directory, an embedder (`strata-embed`) and a vector index.
//!
//! Owns: validation, tenancy (every operation takes the owner), extraction, chunking, the job
//! queue and its workers, and the cache policy (what each read is keyed by and each write
//! invalidates). Must not import: HTTP (axum, hyper), the cache, anything of the
//! server. The HTTP layer maps [`EngineError`] to responses; this crate never decides a status.

mod ann;
pub mod blobs;
pub mod bm25;
pub mod budget;
pub mod chunk;
pub mod conversation;
pub mod cursor;
mod engine;
pub mod error;
pub mod extract;
#[cfg(test)]
mod fuzz;
pub mod heap;
pub mod ids;
pub mod jobs;
mod lexical;
pub mod memory;
pub mod model;
pub mod policy;
#[cfg(feature = "qdrant")]
pub mod qdrant;
pub mod search;
pub mod session;
pub mod slowlog;
pub mod store;
pub mod timing;
pub mod validate;
pub mod vectors;

pub use engine::{
    AccessRecorder, AdminService, BudgetService, BudgetView, CompleteError, Completer,
    ConversationService, CreateConversation, DEFAULT_MEMORY_K, DEFAULT_MODEL_DIR, DEFAULT_PAGE,
    DatabaseStats, DocumentService, Engine, EngineSettings, INTERACTIVE_TEXTS, IngestOutcome,
    JobService, LimitSpec, ListDocuments, ListJobs, ListMemories, MAX_MEMORY_BATCH, MAX_PAGE,
    MemoryService, MemorySettings, ModelLoad, SearchService, SessionEvent, SessionService,
    SessionView, StartSession, UploadMeta,
};
pub use error::{EngineError, Result};
pub use ids::{DocumentId, IdKind, JobId, MemoryId, TenantId};
pub use policy::{
    KIND_BUDGET, KIND_CONVERSATION, KIND_DOCUMENT, KIND_DOCUMENT_LIST, KIND_EMBEDDING, KIND_JOB,
    KIND_LLM_RESPONSE, KIND_MEMORY, KIND_SEARCH, KIND_TAGS, KIND_USER_SESSION, Scopes,
    default_cache_kinds,
};
pub use strata_cache::{
    Cache, CacheError, CacheSettings, KindSpec, Lookup, RedisSettings, SecretUrl, Source,
    redact_url,
};
pub use strata_embed::{
    BATCH_SIZE_BUCKETS, BatchSettings, HttpSettings, LocalRuntime, ModelStats, PASS_SECONDS_BUCKETS,
};
