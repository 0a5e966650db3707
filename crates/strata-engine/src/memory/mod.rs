//! Memories: a tenant's facts for agents (what a user prefers, where they live, what changed),
//! each a short text with an importance, caller metadata, an optional session and key, and
//! its embedding. The types the storage layer reads and writes; validation and ranking live
//! with the memory service.
//!
//! A memory that is replaced (by an explicit `supersedes` or by a new text under the same
//! `key`) keeps its row as history: `superseded_by` names its replacement, and searches leave
//! it out unless asked.
//!
//! Requests ([`AddMemory`], [`MemoryPatch`], [`MemorySearch`]) are deserialised by the HTTP
//! layer and validated by the memory service; [`rank`] scores candidates and [`working`]
//! holds each active tenant's memories in process.
//!
//! Must not import: HTTP types, the cache, the store.

pub mod rank;
pub mod working;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{MemoryId, TenantId};

/// A stored memory.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Memory {
    /// Its id.
    pub id: MemoryId,
    /// The fact, as given.
    pub text: String,
    /// How much it matters, 0 (trivia) to 1 (never forget).
    pub importance: f32,
    /// Caller-supplied JSON object.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// The session it was recorded in, if any.
    pub session: Option<String>,
    /// The caller's name for the fact it states (at most one current memory per key).
    pub key: Option<String>,
    /// When the fact happened or was said, if the caller knows (else recency counts from
    /// `created_at`).
    pub occurred_at: Option<DateTime<Utc>>,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The memory that replaced it; null while it is current.
    pub superseded_by: Option<MemoryId>,
    /// How many searches returned it with access recording on.
    pub access_count: u64,
    /// When a search last returned it.
    pub last_accessed_at: Option<DateTime<Utc>>,
}

/// A memory to insert, validated and embedded.
#[derive(Debug, Clone)]
pub struct NewMemory {
    /// Its id.
    pub id: MemoryId,
    /// Owner.
    pub owner: TenantId,
    /// The fact.
    pub text: String,
    /// 0..1.
    pub importance: f32,
    /// A JSON object.
    pub metadata: serde_json::Value,
    /// Session, if any.
    pub session: Option<String>,
    /// Key, if any.
    pub key: Option<String>,
    /// When it happened, if known.
    pub occurred_at: Option<DateTime<Utc>>,
    /// The model that embedded `text`.
    pub model: String,
    /// Its embedding.
    pub embedding: Vec<f32>,
}

/// Which of a tenant's memories a listing returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryFilter {
    /// Only this session's.
    pub session: Option<String>,
    /// Only memories under this key.
    pub key: Option<String>,
    /// Superseded memories too (default: current ones only).
    pub include_superseded: bool,
    /// Only memories created (or, when given, occurred) at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only memories created (or, when given, occurred) before this time.
    pub until: Option<DateTime<Utc>>,
}

/// What inserting a memory did to an earlier one.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// A new memory; nothing replaced.
    Created(Memory),
    /// A new memory that replaced this current one (now its history).
    Superseded(Memory, MemoryId),
}

/// An in-place change to a current memory (a merged near-duplicate or a patch); absent
/// fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct MemoryChange {
    /// A new text with the model and embedding of it.
    pub text: Option<(String, String, Vec<f32>)>,
    /// A new importance.
    pub importance: Option<f32>,
    /// New metadata (replaces the old object).
    pub metadata: Option<serde_json::Value>,
    /// A new session, or none.
    pub session: Option<Option<String>>,
    /// A new time of occurrence, or none.
    pub occurred_at: Option<Option<DateTime<Utc>>>,
    /// Why it changed, recorded with the earlier state: `merged` or `patched`.
    pub reason: &'static str,
}

/// A memory's state before an in-place change.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MemoryVersion {
    /// The memory it belongs to.
    pub memory_id: MemoryId,
    /// Its text then.
    pub text: String,
    /// Its importance then.
    pub importance: f32,
    /// Its metadata then.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// When that state was replaced.
    pub replaced_at: DateTime<Utc>,
    /// Why: `merged` or `patched`.
    pub reason: String,
}

/// A memory's history: it and the memories it replaced (newest first), and their earlier
/// in-place states (newest first).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MemoryHistory {
    /// The memory, then each memory it replaced, directly or through others.
    pub chain: Vec<Memory>,
    /// Earlier states of the memories in `chain`.
    pub versions: Vec<MemoryVersion>,
}

/// A memory to add, as a caller sends it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemory {
    /// The fact, 1 to 4,000 characters.
    pub text: String,
    /// How much it matters, 0..1 (default 0.5).
    pub importance: Option<f32>,
    /// A JSON object kept with it (at most 64 KiB as JSON).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// The session it belongs to (1-128 characters).
    pub session: Option<String>,
    /// When it happened or was said (RFC 3339); recency counts from here when given.
    pub occurred_at: Option<DateTime<Utc>>,
    /// The caller's name for the fact it states (1-256 characters): a new text under a key
    /// replaces the tenant's current memory with that key and keeps it as history.
    pub key: Option<String>,
    /// The id of a current memory this one replaces (kept as history).
    #[schema(value_type = Option<String>)]
    pub supersedes: Option<String>,
}

/// What adding a memory did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AddStatus {
    /// A new memory.
    Created,
    /// A near-duplicate of a current memory: that memory was updated (its earlier state is
    /// in its history) and no new one was made.
    Merged,
    /// A new memory that replaced another (by `supersedes` or by `key`), kept as history.
    Superseded,
}

/// The answer to one add.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Added {
    /// What happened.
    pub status: AddStatus,
    /// The memory as it now is (for `merged`, the memory that absorbed the add).
    pub memory: Memory,
    /// For `superseded`, the memory replaced.
    #[schema(value_type = Option<String>)]
    pub superseded: Option<MemoryId>,
    /// For `merged`, the cosine similarity that made it a near-duplicate.
    pub similarity: Option<f32>,
}

/// An in-place change a caller asks for; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryPatch {
    /// A new text (re-embedded).
    pub text: Option<String>,
    /// A new importance, 0..1.
    pub importance: Option<f32>,
    /// New metadata (replaces the old object).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// A new session; null removes it.
    #[serde(default, deserialize_with = "crate::validate::nullable")]
    #[schema(value_type = Option<String>)]
    pub session: Option<Option<String>>,
    /// A new time of occurrence; null removes it.
    #[serde(default, deserialize_with = "crate::validate::nullable")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub occurred_at: Option<Option<DateTime<Utc>>>,
}

/// Which memories a search considers.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemorySearchFilter {
    /// Only memories whose metadata has these fields with these values.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Only memories under this key.
    pub key: Option<String>,
    /// Only memories of (`occurred_at`, else creation) this time or later.
    pub since: Option<DateTime<Utc>>,
    /// Only memories of before this time.
    pub until: Option<DateTime<Utc>>,
    /// Superseded memories too (default: current ones only).
    #[serde(default)]
    pub include_superseded: bool,
}

/// `POST /v1/memories/search`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemorySearch {
    /// What to recall, 1 to 2,000 characters.
    pub query: String,
    /// How many hits, 1-100 (default 10).
    pub k: Option<usize>,
    /// Which memories count.
    #[serde(default, deserialize_with = "crate::validate::object")]
    pub filter: MemorySearchFilter,
    /// Only this session's memories.
    pub session: Option<String>,
    /// How the ranking weighs its components (defaults: see [`rank::Weights`]).
    #[serde(default, deserialize_with = "crate::validate::object")]
    pub weights: rank::Weights,
    /// Hits with a lower final score are left out.
    pub min_score: Option<f32>,
    /// Count this search's hits as accesses (default true).
    #[serde(default = "yes")]
    pub record_access: bool,
}

fn yes() -> bool {
    true
}

/// One hit of a memory search.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MemoryHit {
    /// The memory.
    pub memory: Memory,
    /// Its final score (the same as `components.score`), 0..1, higher is better.
    pub score: f32,
    /// Every component of the score.
    pub components: rank::Components,
}

/// A memory search's answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MemorySearchResults {
    /// Best first.
    pub hits: Vec<MemoryHit>,
    /// Memories scored (the union of both sides' best).
    pub candidates: usize,
    /// Memories the search could see (after filters), over both sides.
    pub considered: usize,
    /// The weights the ranking used.
    pub weights: rank::Weights,
}

/// What a preload did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Preloaded {
    /// Memories in the tenant's working set.
    pub memories: usize,
    /// Its approximate size in bytes.
    pub bytes: usize,
    /// Whether it had to be read from the store (false: it was already held and current).
    pub loaded: bool,
    /// The tenant's frequent queries whose embeddings are now cached.
    pub queries_warmed: usize,
    /// The most recent and most often recalled memories.
    pub working: Vec<Memory>,
}
