//! What an add or a patch may carry: the checks of their fields, before anything is embedded
//! or stored.

use crate::error::{EngineError, Result};
use crate::ids::MemoryId;
use crate::memory::AddMemory;
use crate::validate;

use super::MAX_MEMORY_CHARS;

/// An add after validation.
pub(super) struct Valid {
    pub(super) text: String,
    pub(super) importance: f32,
    pub(super) metadata: Option<serde_json::Value>,
    pub(super) session: Option<String>,
    pub(super) occurred_at: Option<chrono::DateTime<chrono::Utc>>,
    pub(super) key: Option<String>,
    pub(super) supersedes: Option<MemoryId>,
}

pub(super) fn validate_add(m: AddMemory) -> Result<Valid> {
    let text = memory_text("text", m.text)?;
    for (field, v, max) in [("session", &m.session, 128), ("key", &m.key, 256)] {
        if let Some(v) = v {
            validate::label(field, v, max)?;
        }
    }
    let supersedes = m
        .supersedes
        .map(|s| MemoryId::parse_or_not_found(&s))
        .transpose()?;
    Ok(Valid {
        text,
        importance: importance(m.importance)?,
        metadata: m.metadata.map(validate::metadata).transpose()?,
        session: m.session,
        occurred_at: m.occurred_at,
        key: m.key,
        supersedes,
    })
}

pub(super) fn memory_text(field: &str, text: String) -> Result<String> {
    let t = text.trim();
    if t.is_empty() || t.chars().count() > MAX_MEMORY_CHARS {
        return Err(EngineError::invalid(
            field,
            format!("must be 1 to {MAX_MEMORY_CHARS} characters"),
        ));
    }
    Ok(t.to_owned())
}

pub(super) fn importance(raw: Option<f32>) -> Result<f32> {
    match raw {
        None => Ok(0.5),
        Some(i) if i.is_finite() && (0.0..=1.0).contains(&i) => Ok(i),
        Some(_) => Err(EngineError::invalid(
            "importance",
            "must be between 0 and 1",
        )),
    }
}
