//! A conversation turn: the tenant's question answered by the upstream from the last
//! messages of the conversation and the passages of the tenant's documents that search
//! finds for it, both appended to the conversation, the answer citing the passages by number.
//!
//! The context sent upstream is bounded twice: at most `context_messages` earlier messages,
//! and the oldest of them dropped until the prompt's estimate fits `context_tokens`. The call
//! goes through [`Gateway::chat`], so it is cached, shared, budgeted and metered like any
//! other.

use serde_json::{Value, json};
use strata_engine::TenantId;
use strata_engine::conversation::{Citation, Message, NewMessage};

use crate::{CacheStatus, Chat, Gateway, GatewayError, Reply};

/// One turn, as the caller asks for it.
#[derive(Debug, Clone)]
pub struct Turn {
    /// The question.
    pub content: String,
    /// The model (else the conversation's).
    pub model: Option<String>,
    /// Passages of the tenant's documents to ground the answer in (0: none).
    pub k: usize,
    /// Most earlier messages sent as context.
    pub context_messages: u32,
    /// Most tokens (estimated) of the whole prompt.
    pub context_tokens: usize,
    /// Passed upstream when given.
    pub max_tokens: Option<u64>,
    /// Passed upstream when given.
    pub temperature: Option<f64>,
}

/// Default [`Turn::context_messages`].
pub const DEFAULT_CONTEXT_MESSAGES: u32 = 20;
/// Default [`Turn::context_tokens`].
pub const DEFAULT_CONTEXT_TOKENS: usize = 8000;
/// Default [`Turn::k`].
pub const DEFAULT_K: usize = 5;
/// Longest question, in bytes.
pub const MAX_CONTENT: usize = 32 * 1024;

/// What a turn answered.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TurnReply {
    /// The question, as stored.
    pub question: Message,
    /// The answer, as stored, with its citations.
    pub answer: Message,
    /// Earlier messages sent as context.
    pub context_messages: usize,
    /// Whether the answer came from the gateway's cache.
    pub cached: bool,
}

const GROUNDING: &str = "Answer the user's last message using the numbered passages from their \
documents below when they are relevant, citing them as [1], [2]. If the passages do not \
contain the answer, say so rather than guessing.";

fn estimate(text: &str) -> usize {
    text.len().div_ceil(4) + 4
}

impl Gateway {
    /// Answers `turn` in conversation `id` of `tenant` (see the module doc).
    pub async fn converse(
        &self,
        tenant: &TenantId,
        id: &str,
        turn: Turn,
    ) -> Result<TurnReply, GatewayError> {
        let engine = &self.inner.engine;
        let conversations = engine.conversations();
        let conversation = conversations.get(tenant, id).await?;
        if turn.content.trim().is_empty() || turn.content.len() > MAX_CONTENT {
            return Err(GatewayError::invalid(
                "content",
                format!("must be 1 to {MAX_CONTENT} bytes of text"),
            ));
        }
        let Some(model) = turn.model.clone().or(conversation.model.clone()) else {
            return Err(GatewayError::invalid(
                "model",
                "name a model here or when creating the conversation",
            ));
        };
        let mut citations = Vec::new();
        let mut passages = String::new();
        if turn.k > 0 {
            let query: String = turn.content.chars().take(4096).collect();
            let req = serde_json::from_value(json!({"query": query, "k": turn.k.min(20)}))
                .map_err(|e| GatewayError::invalid("content", e.to_string()))?;
            let found = engine.retrieval().search(tenant, req).await?;
            for (i, hit) in found.hits.iter().enumerate() {
                let n = i as u32 + 1;
                passages.push_str(&format!("\n\n[{n}] {}\n{}", hit.title, hit.text));
                citations.push(Citation {
                    n,
                    document_id: hit.document_id.to_string(),
                    chunk_ordinal: hit.chunk_ordinal,
                    title: hit.title.clone(),
                    score: hit.score,
                });
            }
        }
        let mut system = conversation.system.clone().unwrap_or_default();
        if turn.k > 0 {
            if !system.is_empty() {
                system.push_str("\n\n");
            }
            system.push_str(GROUNDING);
            if passages.is_empty() {
                system.push_str("\n\n(No passage of their documents matched.)");
            } else {
                system.push_str(&passages);
            }
        }
        // The newest earlier messages that fit beside the system prompt and the question.
        let history = conversations
            .recent(tenant, id, turn.context_messages)
            .await?;
        let mut budget = turn
            .context_tokens
            .saturating_sub(estimate(&system) + estimate(&turn.content));
        let mut kept = Vec::new();
        for m in history.iter().rev() {
            let cost = estimate(&m.content);
            if cost > budget {
                break;
            }
            budget -= cost;
            kept.push(m);
        }
        kept.reverse();
        let mut messages = Vec::with_capacity(kept.len() + 2);
        if !system.is_empty() {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.extend(
            kept.iter()
                .map(|m| json!({"role": m.role, "content": m.content})),
        );
        messages.push(json!({"role": "user", "content": turn.content}));
        let mut body = json!({"model": model, "messages": messages});
        if let Some(t) = turn.max_tokens {
            body["max_tokens"] = json!(t);
        }
        if let Some(t) = turn.temperature {
            body["temperature"] = json!(t);
        }
        let chat = Chat::parse(body.to_string().as_bytes(), None)?;
        let (answer, cache) = match self.chat(tenant, chat).await? {
            Reply::Json { body, cache, .. } => (body, cache),
            Reply::Stream { .. } => {
                return Err(GatewayError::Broken(
                    "the upstream answered a stream".into(),
                ));
            }
        };
        let parsed: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        let text = parsed["choices"][0]["message"]["content"]
            .as_str()
            .ok_or_else(|| GatewayError::Broken("the upstream's answer has no text".into()))?
            .to_owned();
        let answered_by = parsed["model"].as_str().map_or(model, str::to_owned);
        let stored = conversations
            .append(
                tenant,
                id,
                &[
                    NewMessage {
                        role: "user".into(),
                        content: turn.content,
                        citations: Vec::new(),
                        model: None,
                    },
                    NewMessage {
                        role: "assistant".into(),
                        content: text,
                        citations,
                        model: Some(answered_by),
                    },
                ],
            )
            .await?;
        let mut stored = stored.into_iter();
        let (Some(question), Some(answer)) = (stored.next(), stored.next()) else {
            return Err(GatewayError::Engine(strata_engine::EngineError::Internal(
                "a turn stored fewer than two messages".into(),
            )));
        };
        Ok(TurnReply {
            question,
            answer,
            context_messages: kept.len(),
            cached: matches!(cache, CacheStatus::HitL1 | CacheStatus::HitL2),
        })
    }
}

#[async_trait::async_trait]
impl strata_engine::Completer for Gateway {
    async fn complete(
        &self,
        owner: &TenantId,
        model: &str,
        prompt: String,
        max_tokens: u32,
    ) -> Result<String, strata_engine::CompleteError> {
        let fail =
            |message: String, retryable: bool| strata_engine::CompleteError { message, retryable };
        let body = json!({"model": model, "temperature": 0, "max_tokens": max_tokens,
                          "messages": [{"role": "user", "content": prompt}]});
        let chat = Chat::parse(body.to_string().as_bytes(), None)
            .map_err(|e| fail(e.to_string(), false))?;
        let reply = self.chat(owner, chat).await.map_err(|e| match e {
            GatewayError::Invalid { .. } | GatewayError::ModelNotFound(_) => {
                fail(e.to_string(), false)
            }
            GatewayError::Upstream { status, .. } if status != 429 && status < 500 => fail(
                format!("the upstream refused the request ({status})"),
                false,
            ),
            other => fail(other.to_string(), true),
        })?;
        let Reply::Json { body, .. } = reply else {
            return Err(fail("the upstream answered a stream".into(), true));
        };
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        v["choices"][0]["message"]["content"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| fail("the upstream's answer has no text".into(), true))
    }
}

impl Gateway {
    /// The model used when a caller names none: the first model the first upstream lists.
    pub fn default_model(&self) -> Option<String> {
        self.inner
            .settings
            .upstreams
            .first()
            .and_then(|u| u.models.first().cloned())
    }
}
