//! Conversations, as data: a tenant's chat threads and their messages, with the citations an
//! answer grounded in the tenant's documents carries.
//!
//! Must not import: the store, the cache, HTTP types.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A stored conversation.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Conversation {
    /// Its id.
    pub id: String,
    /// A title for lists.
    pub title: String,
    /// The model its answers come from (null: each message names one).
    pub model: Option<String>,
    /// An instruction sent first with every turn (null: strata's grounding instruction only).
    pub system: Option<String>,
    /// Caller metadata.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// Messages in it.
    pub message_count: u64,
    /// When it began.
    pub created_at: DateTime<Utc>,
    /// When its last message was added.
    pub updated_at: DateTime<Utc>,
}

/// A conversation to store.
#[derive(Debug, Clone)]
pub struct NewConversation {
    /// Its id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Default model.
    pub model: Option<String>,
    /// Standing instruction.
    pub system: Option<String>,
    /// Caller metadata (an object).
    pub metadata: serde_json::Value,
    /// When.
    pub at: DateTime<Utc>,
}

/// A passage of the tenant's documents an answer was grounded in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Citation {
    /// Its number in the answer's context (`[1]`, `[2]`...).
    pub n: u32,
    /// The document.
    pub document_id: String,
    /// The chunk's position in it (`GET /v1/documents/{id}/chunks`).
    pub chunk_ordinal: u32,
    /// The document's title.
    pub title: String,
    /// The search score that chose it.
    pub score: f32,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Message {
    /// Its position in the conversation, from 1.
    pub seq: u64,
    /// `user` or `assistant`.
    pub role: String,
    /// Its text.
    pub content: String,
    /// For an answer: the passages it was given (empty otherwise).
    pub citations: Vec<Citation>,
    /// For an answer: the model that gave it.
    pub model: Option<String>,
    /// When it was added.
    pub created_at: DateTime<Utc>,
}

/// A message to append.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// `user` or `assistant`.
    pub role: String,
    /// Text.
    pub content: String,
    /// Passages (answers).
    pub citations: Vec<Citation>,
    /// Model (answers).
    pub model: Option<String>,
}
