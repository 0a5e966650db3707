//! Memories: a tenant's facts for agents (what a user prefers, where they live, what changed),
//! each a short text with an importance, caller metadata, an optional session and key, and
//! its embedding. The types the storage layer reads and writes; validation and ranking live
//! with the memory service.
//!
//! A memory that is replaced (by an explicit `supersedes` or by a new text under the same
//! `key`) keeps its row as history: `superseded_by` names its replacement, and searches leave
//! it out unless asked.
//!
//! Must not import: HTTP types, the cache, the store.

use chrono::{DateTime, Utc};
use serde::Serialize;

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
