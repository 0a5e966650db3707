//! Typed identifiers. Every id is a UUIDv7: time-ordered, so keyset pagination by id is
//! also pagination by creation time, and ids from many instances never collide.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::EngineError;

/// Which kind of entity an id names; used in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// A document.
    Document,
    /// A background job.
    Job,
    /// A memory.
    Memory,
    /// A session.
    Session,
    /// A conversation.
    Conversation,
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdKind::Document => "document",
            IdKind::Job => "job",
            IdKind::Memory => "memory",
            IdKind::Session => "session",
            IdKind::Conversation => "conversation",
        })
    }
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// The underlying UUID.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }

            /// Parses an id supplied by a caller; a malformed id is reported as not found,
            /// exactly like an id that does not exist.
            pub fn parse_or_not_found(s: &str) -> Result<Self, EngineError> {
                s.parse().map_err(|_| EngineError::not_found($kind, s))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.as_hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::try_parse(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// Identifies a document.
    DocumentId,
    IdKind::Document
);
uuid_id!(
    /// Identifies a background job.
    JobId,
    IdKind::Job
);
uuid_id!(
    /// Identifies a memory.
    MemoryId,
    IdKind::Memory
);

/// The tenant that owns a row (development mode's is [`TenantId::local`]). Shared, not
/// copied: a request's caller, its rate cell and its cache reads each hold the tenant, and a
/// clone is a reference count, not an allocation (a cached read made three of them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

impl Serialize for TenantId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Self(Arc::from(s)))
    }
}

impl TenantId {
    /// The single tenant of development mode (one shared name: every request clones it).
    pub fn local() -> Self {
        static LOCAL: std::sync::LazyLock<TenantId> =
            std::sync::LazyLock::new(|| TenantId(Arc::from("local")));
        LOCAL.clone()
    }

    /// The tenant of requests made with the operator key. Its name has a space, so no
    /// [`parse`](Self::parse)d name (a JWT `sub`, a tenant header) can be it.
    pub fn operator() -> Self {
        static OPERATOR: std::sync::LazyLock<TenantId> =
            std::sync::LazyLock::new(|| TenantId(Arc::from("operator key")));
        OPERATOR.clone()
    }

    /// Validates a tenant name: 1-128 visible ASCII characters.
    pub fn parse(s: &str) -> Result<Self, EngineError> {
        if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(EngineError::invalid(
                "tenant",
                "must be 1-128 visible ASCII characters",
            ));
        }
        Ok(Self(Arc::from(s)))
    }

    /// A tenant name read back from the store: any [`parse`](Self::parse)able name, or the
    /// [`operator`](Self::operator)'s, which rows written with the operator key carry.
    pub fn from_stored(s: &str) -> Result<Self, EngineError> {
        if s == "operator key" {
            return Ok(Self::operator());
        }
        Self::parse(s)
    }

    /// The tenant name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_is_a_json_string_and_clones_share_its_name() {
        let t = TenantId::parse("alice").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), r#""alice""#);
        let back: TenantId = serde_json::from_str(r#""alice""#).unwrap();
        assert_eq!(back, t);
        assert!(serde_json::from_str::<TenantId>("7").is_err());
        let c = t.clone();
        assert!(std::ptr::eq(c.as_str(), t.as_str()));
    }
}
