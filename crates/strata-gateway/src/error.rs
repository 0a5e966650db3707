//! The gateway's errors. The HTTP layer maps each to OpenAI's error shape and status.

use bytes::Bytes;
use strata_engine::EngineError;

use crate::upstream::Failure;

/// Why a gateway call did not answer.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request is malformed (400, `invalid_request_error`).
    #[error("{param}: {message}")]
    Invalid {
        /// The field at fault.
        param: String,
        /// What is wrong.
        message: String,
    },
    /// No upstream serves the model (404, `model_not_found`).
    #[error("{0}")]
    ModelNotFound(String),
    /// The tenant's budget has no room for the call (429, `budget_exceeded`; not retried).
    #[error("the {period} budget is spent; it resets in {retry_after_secs} s")]
    Budget {
        /// The full window.
        period: &'static str,
        /// Seconds until it resets.
        retry_after_secs: u64,
    },
    /// The upstream refused the request: its status and body, passed through.
    #[error("the upstream answered {status}")]
    Upstream {
        /// Its status.
        status: u16,
        /// Its body.
        body: Bytes,
    },
    /// No upstream could be reached (503).
    #[error("{0}")]
    Unavailable(String),
    /// The upstream did not answer in time (504).
    #[error("{0}")]
    Timeout(String),
    /// The upstream's answer broke off before it was complete (502).
    #[error("{0}")]
    Broken(String),
    /// The engine failed (budgets, cache).
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl GatewayError {
    /// A malformed request naming `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            param: param.into(),
            message: message.into(),
        }
    }
}

impl From<Failure> for GatewayError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::NoUpstream(m) => GatewayError::ModelNotFound(format!(
                "no configured upstream serves the model {m:?}"
            )),
            Failure::Rejected { status, body } => GatewayError::Upstream { status, body },
            Failure::Unavailable(why) => GatewayError::Unavailable(why),
            Failure::Timeout(why) => GatewayError::Timeout(why),
        }
    }
}

impl From<strata_engine::CacheError> for GatewayError {
    fn from(e: strata_engine::CacheError) -> Self {
        GatewayError::Engine(EngineError::from(e))
    }
}
