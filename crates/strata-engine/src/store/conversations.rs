//! The conversations aggregate: a tenant's conversations and their messages; its SQL written
//! once for both backends (see [`super::queue`] for how).
//!
//! Appending is one transaction that numbers the new messages after the last one and bumps
//! the conversation's count, so two turns racing on one conversation never share a number
//! (the second waits for the first's write lock, or fails its insert and is retried by
//! nobody: the primary key refuses the duplicate). Deleting removes the messages with it.
//!
//! Must not import: HTTP types, the cache, the job runner.

use async_trait::async_trait;

use crate::conversation::{Conversation, Message, NewConversation, NewMessage};
use crate::error::Result;
use crate::ids::TenantId;

/// Columns of a conversation row, in the order [`conversation_from_row`] reads them.
macro_rules! conversation_columns {
    () => {
        "id, title, model, system, metadata, message_count, created_at, updated_at"
    };
}

pub(crate) use conversation_columns;

/// Conversations and their messages.
#[async_trait]
pub trait ConversationStore: Send + Sync + 'static {
    /// Stores a new conversation; `None` (nothing written) when the owner has one with its id.
    async fn create_conversation(
        &self,
        owner: &TenantId,
        new: &NewConversation,
    ) -> Result<Option<Conversation>>;

    /// One of the owner's conversations.
    async fn get_conversation(&self, owner: &TenantId, id: &str) -> Result<Option<Conversation>>;

    /// Up to `limit` of the owner's conversations by id descending, strictly before `before`.
    async fn list_conversations(
        &self,
        owner: &TenantId,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Conversation>>;

    /// Deletes a conversation and its messages; whether it existed.
    async fn delete_conversation(&self, owner: &TenantId, id: &str) -> Result<bool>;

    /// Appends messages in order at `at_ms`; the messages as stored, `None` when the
    /// conversation does not exist.
    async fn append_messages(
        &self,
        owner: &TenantId,
        id: &str,
        messages: &[NewMessage],
        at_ms: i64,
    ) -> Result<Option<Vec<Message>>>;

    /// Up to `limit` messages by position descending, strictly before `before_seq`.
    async fn list_messages(
        &self,
        owner: &TenantId,
        id: &str,
        before_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Message>>;
}

/// Reads a conversation row.
pub(crate) fn conversation_from_row<'r, R>(row: &'r R) -> Result<Conversation>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    use super::rows::{corrupt, from_ms};
    let metadata: String = row.try_get("metadata")?;
    Ok(Conversation {
        id: row.try_get("id")?,
        title: row.try_get("title")?,
        model: row.try_get("model")?,
        system: row.try_get("system")?,
        metadata: serde_json::from_str(&metadata).map_err(|e| corrupt("metadata", e))?,
        message_count: row.try_get::<i64, _>("message_count")? as u64,
        created_at: from_ms(row.try_get("created_at")?)?,
        updated_at: from_ms(row.try_get("updated_at")?)?,
    })
}

/// Reads a message row (`seq, role, content, citations, model, created_at`).
pub(crate) fn message_from_row<'r, R>(row: &'r R) -> Result<Message>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    use super::rows::{corrupt, from_ms};
    let citations: String = row.try_get("citations")?;
    Ok(Message {
        seq: row.try_get::<i64, _>("seq")? as u64,
        role: row.try_get("role")?,
        content: row.try_get("content")?,
        citations: serde_json::from_str(&citations).map_err(|e| corrupt("citations", e))?,
        model: row.try_get("model")?,
        created_at: from_ms(row.try_get("created_at")?)?,
    })
}

/// [`ConversationStore`] over one backend's store type (`conn()` and `begin()`).
macro_rules! conversations_sql {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::conversations::ConversationStore for $store {
            async fn create_conversation(
                &self,
                owner: &$crate::ids::TenantId,
                new: &$crate::conversation::NewConversation,
            ) -> $crate::error::Result<Option<$crate::conversation::Conversation>> {
                let at = $crate::store::rows::ms(new.at);
                let done = sqlx::query(
                    "INSERT INTO conversations (owner, id, title, model, system, metadata, \
                     message_count, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $7) \
                     ON CONFLICT (owner, id) DO NOTHING",
                )
                .bind(owner.as_str())
                .bind(&new.id)
                .bind(&new.title)
                .bind(new.model.as_deref())
                .bind(new.system.as_deref())
                .bind(new.metadata.to_string())
                .bind(at)
                .execute(&mut *self.conn().await?)
                .await?;
                if done.rows_affected() == 0 {
                    return Ok(None);
                }
                self.get_conversation(owner, &new.id).await
            }

            async fn get_conversation(
                &self,
                owner: &$crate::ids::TenantId,
                id: &str,
            ) -> $crate::error::Result<Option<$crate::conversation::Conversation>> {
                let sql = concat!(
                    "SELECT ",
                    $crate::store::conversations::conversation_columns!(),
                    " FROM conversations WHERE owner = $1 AND id = $2"
                );
                let row = sqlx::query(sql)
                    .bind(owner.as_str())
                    .bind(id)
                    .fetch_optional(&mut *self.conn().await?)
                    .await?;
                row.as_ref()
                    .map($crate::store::conversations::conversation_from_row)
                    .transpose()
            }

            async fn list_conversations(
                &self,
                owner: &$crate::ids::TenantId,
                before: Option<&str>,
                limit: u32,
            ) -> $crate::error::Result<Vec<$crate::conversation::Conversation>> {
                let sql = concat!(
                    "SELECT ",
                    $crate::store::conversations::conversation_columns!(),
                    " FROM conversations WHERE owner = $1 AND ($2 IS NULL OR id < $2) \
                     ORDER BY id DESC LIMIT $3"
                );
                let rows = sqlx::query(sql)
                    .bind(owner.as_str())
                    .bind(before)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *self.conn().await?)
                    .await?;
                rows.iter()
                    .map($crate::store::conversations::conversation_from_row)
                    .collect()
            }

            async fn delete_conversation(
                &self,
                owner: &$crate::ids::TenantId,
                id: &str,
            ) -> $crate::error::Result<bool> {
                let mut tx = self.begin().await?;
                sqlx::query(
                    "DELETE FROM conversation_messages WHERE owner = $1 AND conversation_id = $2",
                )
                .bind(owner.as_str())
                .bind(id)
                .execute(&mut *tx)
                .await?;
                let done = sqlx::query("DELETE FROM conversations WHERE owner = $1 AND id = $2")
                    .bind(owner.as_str())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected() > 0)
            }

            async fn append_messages(
                &self,
                owner: &$crate::ids::TenantId,
                id: &str,
                messages: &[$crate::conversation::NewMessage],
                at_ms: i64,
            ) -> $crate::error::Result<Option<Vec<$crate::conversation::Message>>> {
                use sqlx::Row as _;
                let mut tx = self.begin().await?;
                // Claims the numbers: the conversation's row is locked until commit.
                let row = sqlx::query(
                    "UPDATE conversations SET message_count = message_count + $1, updated_at = $2 \
                     WHERE owner = $3 AND id = $4 RETURNING message_count",
                )
                .bind(messages.len() as i64)
                .bind(at_ms)
                .bind(owner.as_str())
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let count: i64 = row.try_get("message_count")?;
                let first = count - messages.len() as i64 + 1;
                let mut stored = Vec::with_capacity(messages.len());
                for (i, m) in messages.iter().enumerate() {
                    let citations = serde_json::to_string(&m.citations)
                        .map_err(|e| $crate::error::EngineError::Internal(e.to_string()))?;
                    sqlx::query(
                        "INSERT INTO conversation_messages (owner, conversation_id, seq, role, \
                         content, citations, model, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(owner.as_str())
                    .bind(id)
                    .bind(first + i as i64)
                    .bind(&m.role)
                    .bind(&m.content)
                    .bind(citations)
                    .bind(m.model.as_deref())
                    .bind(at_ms)
                    .execute(&mut *tx)
                    .await?;
                    stored.push($crate::conversation::Message {
                        seq: (first + i as i64) as u64,
                        role: m.role.clone(),
                        content: m.content.clone(),
                        citations: m.citations.clone(),
                        model: m.model.clone(),
                        created_at: $crate::store::rows::from_ms(at_ms)?,
                    });
                }
                tx.commit().await?;
                Ok(Some(stored))
            }

            async fn list_messages(
                &self,
                owner: &$crate::ids::TenantId,
                id: &str,
                before_seq: Option<u64>,
                limit: u32,
            ) -> $crate::error::Result<Vec<$crate::conversation::Message>> {
                let rows = sqlx::query(
                    "SELECT seq, role, content, citations, model, created_at \
                     FROM conversation_messages WHERE owner = $1 AND conversation_id = $2 \
                     AND seq < $3 ORDER BY seq DESC LIMIT $4",
                )
                .bind(owner.as_str())
                .bind(id)
                .bind(before_seq.map_or(i64::MAX, |s| s as i64))
                .bind(i64::from(limit))
                .fetch_all(&mut *self.conn().await?)
                .await?;
                rows.iter()
                    .map($crate::store::conversations::message_from_row)
                    .collect()
            }
        }
    };
}

pub(crate) use conversations_sql;
