//! The engine's one error type. The HTTP layer maps each variant to a problem+json code;
//! nothing here knows about status codes.

use crate::ids::IdKind;

/// Everything an engine operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The entity does not exist *for this tenant* (another tenant's id is indistinguishable).
    #[error("{kind} {id} not found")]
    NotFound {
        /// What was looked up.
        kind: IdKind,
        /// The id as given.
        id: String,
    },
    /// Caller input failed validation; `field` names the offending field.
    #[error("{field}: {message}")]
    Invalid {
        /// Dotted path of the field (`tags[2]`, `metadata`, `cursor`).
        field: String,
        /// Human-readable reason.
        message: String,
    },
    /// The content is of a type strata cannot ingest, or does not match its declared type.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// The upload exceeds the configured size limit.
    #[error("upload exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// strata is at capacity for this kind of work (the embedding model's queue is full, or
    /// the wait for it would pass its budget); retry shortly. Expected under overload, so
    /// not an incident worth a log line each.
    #[error("at capacity: {0}")]
    Overloaded(&'static str),
    /// A dependency (database pool, disk) is temporarily unable to serve; retry later.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// Database failure. The detail is logged, never shown to clients.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// The disk (or the database's disk) is full: nothing was stored; retry once space is
    /// freed.
    #[error("insufficient storage: {0}")]
    StorageFull(String),
    /// Filesystem failure in the blob store.
    #[error("storage I/O error: {0}")]
    Io(std::io::Error),
    /// A migration failed at startup.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Configuration is unusable (bad URL, unsupported backend).
    #[error("configuration error: {0}")]
    Config(String),
    /// A bug or corrupted state; logged in full, reported as an internal error.
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// Shorthand for a validation error on `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Shorthand for a not-found error.
    pub fn not_found(kind: IdKind, id: impl ToString) -> Self {
        Self::NotFound {
            kind,
            id: id.to_string(),
        }
    }
}

/// A full disk (or quota) becomes [`EngineError::StorageFull`].
impl From<std::io::Error> for EngineError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::StorageFull
            || e.kind() == std::io::ErrorKind::QuotaExceeded
        {
            return Self::StorageFull(format!("the data directory's disk is full ({e})"));
        }
        Self::Io(e)
    }
}

/// Pool exhaustion and a lost connection become [`EngineError::Unavailable`], so callers
/// answer 503 with `Retry-After` (and the PostgreSQL store's breaker probes the database);
/// every other database error is internal.
impl From<sqlx::Error> for EngineError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut => Self::Unavailable("database pool exhausted".into()),
            sqlx::Error::PoolClosed => Self::Unavailable("database pool closed".into()),
            sqlx::Error::Io(e) if e.kind() == std::io::ErrorKind::StorageFull => {
                Self::StorageFull(format!("the database's disk is full ({e})"))
            }
            sqlx::Error::Io(e) => Self::Unavailable(format!("lost the database connection: {e}")),
            sqlx::Error::Database(db) if db.code().is_some_and(|c| connection_lost(&c)) => {
                Self::Unavailable(format!("lost the database connection: {}", db.message()))
            }
            // SQLITE_FULL (13, and its extended codes), PostgreSQL's disk_full (53100).
            sqlx::Error::Database(db) if db.code().is_some_and(|c| c == "13" || c == "53100") => {
                Self::StorageFull(format!("the database's disk is full ({})", db.message()))
            }

            other => Self::Database(other),
        }
    }
}

/// PostgreSQL's SQLSTATE classes for a connection that failed or was ended by the server
/// (class 08), and an administrator's shutdown or a server starting up (57P01-57P03).
fn connection_lost(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
}

impl From<strata_cache::CacheError> for EngineError {
    fn from(e: strata_cache::CacheError) -> Self {
        EngineError::Internal(e.to_string())
    }
}

/// The message a panic carried (`panic!("...")` with a literal or a formatted string), if
/// any: for contained panics that become an error or a log line.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> Option<String> {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
}

/// Result alias used throughout the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
