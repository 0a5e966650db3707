//! The conversation service: a tenant's chat threads and their messages, stored and cached
//! per tenant (`conversation` kind; every append or delete invalidates the tenant's). The
//! gateway composes turns (context, grounding, the upstream call) and appends them here.
//!
//! Holds only what it uses: the store and the cache policy.

use std::sync::Arc;

use chrono::Utc;
use serde::Deserialize;

use super::paged;
use crate::conversation::{Conversation, Message, NewConversation, NewMessage};
use crate::error::{EngineError, Result};
use crate::ids::{IdKind, TenantId};
use crate::model::Page;
use crate::policy::{CachePolicy, Changed};
use crate::store::Store;
use crate::validate;

/// `POST /v1/conversations`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConversation {
    /// Its id, 1-128 characters (default: a new UUID).
    pub id: Option<String>,
    /// A title for lists (default: empty).
    pub title: Option<String>,
    /// The model its answers come from (each message may name another).
    pub model: Option<String>,
    /// An instruction sent first with every turn, before the grounding passages.
    pub system: Option<String>,
    /// A JSON object kept with it.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

/// Longest title, model name and standing instruction, in characters.
const MAX_TITLE: usize = 512;
const MAX_SYSTEM: usize = 32 * 1024;

/// The conversation service (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct ConversationService {
    pub(super) store: Arc<dyn Store>,
    pub(super) policy: CachePolicy,
}

impl ConversationService {
    /// Starts a conversation.
    pub async fn create(&self, owner: &TenantId, req: CreateConversation) -> Result<Conversation> {
        let id = match req.id {
            Some(id) => {
                validate::label("id", &id, 128)?;
                id
            }
            None => uuid::Uuid::now_v7().to_string(),
        };
        let title = req.title.unwrap_or_default();
        if title.chars().count() > MAX_TITLE {
            return Err(EngineError::invalid(
                "title",
                format!("at most {MAX_TITLE} characters"),
            ));
        }
        if let Some(m) = &req.model {
            validate::label("model", m, 256)?;
        }
        if req.system.as_ref().is_some_and(|s| s.len() > MAX_SYSTEM) {
            return Err(EngineError::invalid(
                "system",
                format!("at most {MAX_SYSTEM} bytes"),
            ));
        }
        let metadata = match req.metadata {
            Some(m) => validate::metadata(m)?,
            None => serde_json::json!({}),
        };
        let new = NewConversation {
            id: id.clone(),
            title,
            model: req.model,
            system: req.system,
            metadata,
            at: Utc::now(),
        };
        let c = self
            .store
            .create_conversation(owner, &new)
            .await?
            .ok_or_else(|| {
                EngineError::invalid("id", format!("conversation {id:?} already exists"))
            })?;
        self.policy.changed(owner, Changed::Conversations).await;
        Ok(c)
    }

    /// One conversation of the owner's.
    pub async fn get(&self, owner: &TenantId, id: &str) -> Result<Conversation> {
        self.store
            .get_conversation(owner, id)
            .await?
            .ok_or_else(|| EngineError::not_found(IdKind::Conversation, id))
    }

    /// A page of the owner's conversations, by id descending (newest first for generated ids).
    pub async fn list(
        &self,
        owner: &TenantId,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<Conversation>> {
        paged(
            limit,
            cursor,
            &["conversations"],
            |before: Option<String>, limit| async move {
                self.store
                    .list_conversations(owner, before.as_deref(), limit)
                    .await
            },
            |c: &Conversation| c.id.clone(),
        )
        .await
    }

    /// Deletes a conversation and its messages.
    pub async fn delete(&self, owner: &TenantId, id: &str) -> Result<()> {
        if !self.store.delete_conversation(owner, id).await? {
            return Err(EngineError::not_found(IdKind::Conversation, id));
        }
        self.policy.changed(owner, Changed::Conversations).await;
        Ok(())
    }

    /// A page of a conversation's messages, newest first.
    pub async fn messages(
        &self,
        owner: &TenantId,
        id: &str,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<Message>> {
        self.get(owner, id).await?;
        paged(
            limit,
            cursor,
            &["messages", id],
            |before: Option<u64>, limit| async move {
                self.store.list_messages(owner, id, before, limit).await
            },
            |m: &Message| m.seq.to_string(),
        )
        .await
    }

    /// The conversation's last `n` messages, oldest first.
    pub async fn recent(&self, owner: &TenantId, id: &str, n: u32) -> Result<Vec<Message>> {
        let mut m = self.store.list_messages(owner, id, None, n).await?;
        m.reverse();
        Ok(m)
    }

    /// Appends messages in order; the messages as stored.
    pub async fn append(
        &self,
        owner: &TenantId,
        id: &str,
        messages: &[NewMessage],
    ) -> Result<Vec<Message>> {
        let stored = self
            .store
            .append_messages(owner, id, messages, Utc::now().timestamp_millis())
            .await?
            .ok_or_else(|| EngineError::not_found(IdKind::Conversation, id))?;
        self.policy.changed(owner, Changed::Conversations).await;
        Ok(stored)
    }
}
