//! The HTTP error model: RFC 9457 problem+json with a stable machine-readable `code`.
//!
//! Every error a client can see is one row of [`Code`]: its name, HTTP status and title live
//! together in one table, so codes never drift between handlers. Internal and database detail
//! is logged with the request id, never sent.

use axum::Json;
use axum::extract::multipart::MultipartError;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use strata_engine::EngineError;

macro_rules! codes {
    ($($variant:ident => ($name:literal, $status:ident, $title:literal)),+ $(,)?) => {
        /// Every problem a client can receive. The `code` string is a stable API contract.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum Code { $(#[doc = $title] $variant),+ }

        impl Code {
            /// Every code, for documentation and tests.
            pub const ALL: &'static [Code] = &[$(Code::$variant),+];

            /// The stable code string.
            pub fn as_str(self) -> &'static str { match self { $(Code::$variant => $name),+ } }

            /// The HTTP status.
            pub fn status(self) -> StatusCode { match self { $(Code::$variant => StatusCode::$status),+ } }

            /// A short, fixed, human-readable summary.
            pub fn title(self) -> &'static str { match self { $(Code::$variant => $title),+ } }
        }
    };
}

codes! {
    Unauthenticated => ("unauthenticated", UNAUTHORIZED, "The request does not say which tenant it acts for"),
    InvalidToken => ("invalid_token", UNAUTHORIZED, "The bearer credential is not valid"),
    TokenExpired => ("token_expired", UNAUTHORIZED, "The bearer token has expired"),
    Forbidden => ("forbidden", FORBIDDEN, "The caller's role does not allow this"),
    NotFound => ("not_found", NOT_FOUND, "The resource does not exist"),
    RouteNotFound => ("route_not_found", NOT_FOUND, "No such endpoint"),
    MethodNotAllowed => ("method_not_allowed", METHOD_NOT_ALLOWED, "Method not allowed on this endpoint"),
    ValidationFailed => ("validation_failed", UNPROCESSABLE_ENTITY, "The request has an invalid field"),
    MalformedJson => ("malformed_json", BAD_REQUEST, "The body is not valid JSON"),
    MalformedMultipart => ("malformed_multipart", BAD_REQUEST, "The multipart body could not be read"),
    PayloadTooLarge => ("payload_too_large", PAYLOAD_TOO_LARGE, "The body exceeds the size limit"),
    UnsupportedMediaType => ("unsupported_media_type", UNSUPPORTED_MEDIA_TYPE, "The content type is not supported"),
    RateLimited => ("rate_limited", TOO_MANY_REQUESTS, "The tenant is over its request rate"),
    ServiceUnavailable => ("service_unavailable", SERVICE_UNAVAILABLE, "Temporarily unavailable; retry later"),
    Overloaded => ("overloaded", SERVICE_UNAVAILABLE, "The server is at capacity; retry shortly"),
    InsufficientStorage => ("insufficient_storage", INSUFFICIENT_STORAGE, "The server's disk is full; nothing was stored"),
    Timeout => ("timeout", GATEWAY_TIMEOUT, "The request took longer than its deadline"),
    ModelNotFound => ("model_not_found", NOT_FOUND, "No upstream serves the model"),
    BudgetExceeded => ("budget_exceeded", TOO_MANY_REQUESTS, "The tenant's budget has no room for the call"),
    UpstreamError => ("upstream_error", BAD_GATEWAY, "The upstream's answer broke off"),
    UpstreamUnavailable => ("upstream_unavailable", SERVICE_UNAVAILABLE, "No upstream could be reached"),
    UpstreamTimeout => ("upstream_timeout", GATEWAY_TIMEOUT, "The upstream did not answer in time"),
    Internal => ("internal", INTERNAL_SERVER_ERROR, "Internal error"),
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    code: Code,
    detail: String,
    field: Option<String>,
    retry_after_secs: Option<u32>,
    challenge: Option<String>,
    /// An upstream's own error, sent as it came (status, OpenAI-shaped JSON body).
    passthrough: Option<Box<(StatusCode, bytes::Bytes)>>,
}

/// The body of every error: an RFC 9457 problem with strata's stable `code`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:strata:problem:{code}`.
    #[serde(rename = "type")]
    type_: String,
    /// A fixed summary of the code.
    title: &'static str,
    /// The HTTP status.
    status: u16,
    /// What went wrong in this request.
    detail: String,
    /// The stable machine-readable code.
    code: &'static str,
    /// The request field at fault, for `validation_failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

impl ApiError {
    /// An error with a code and a detail message.
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            field: None,
            retry_after_secs: None,
            challenge: None,
            passthrough: None,
        }
    }

    /// An OpenAI-compatible upstream's refusal, passed through with its status: its body
    /// when it is an OpenAI error object, otherwise one that says what the upstream
    /// answered (never its raw text, which may echo anything).
    pub fn passthrough(status: u16, body: bytes::Bytes) -> Self {
        let status = StatusCode::from_u16(status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .unwrap_or(StatusCode::BAD_GATEWAY);
        let openai = serde_json::from_slice::<serde_json::Value>(&body)
            .is_ok_and(|v| v.get("error").is_some_and(serde_json::Value::is_object));
        let body = if openai {
            body
        } else {
            bytes::Bytes::from(
                serde_json::json!({"error": {
                    "message": format!("the upstream answered {status} without an error object"),
                    "type": "upstream_error", "param": null, "code": "upstream_error"}})
                .to_string(),
            )
        };
        Self {
            passthrough: Some(Box::new((status, body))),
            ..Self::new(Code::UpstreamError, "the upstream refused the request")
        }
    }

    /// The same error with `Retry-After: secs`.
    pub fn retry_after(self, secs: u32) -> Self {
        Self {
            retry_after_secs: Some(secs),
            ..self
        }
    }

    /// The same error with a `WWW-Authenticate` challenge.
    pub fn with_challenge(self, challenge: String) -> Self {
        Self {
            challenge: Some(challenge),
            ..self
        }
    }

    /// A validation error naming `field`.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        let field = field.into();
        let detail = detail.into();
        Self {
            code: Code::ValidationFailed,
            detail: format!("{field}: {detail}"),
            field: Some(field),
            retry_after_secs: None,
            challenge: None,
            passthrough: None,
        }
    }

    /// The error's code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// What went wrong, as the problem's `detail` says it.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(raw) = self.passthrough {
            let (status, body) = *raw;
            let mut resp = (status, body).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return resp;
        }
        let status = self.code.status();
        let body = Problem {
            type_: format!("urn:strata:problem:{}", self.code.as_str()),
            title: self.code.title(),
            status: status.as_u16(),
            detail: self.detail,
            code: self.code.as_str(),
            field: self.field,
        };
        let mut resp = (status, Json(body)).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(c) = self.challenge.and_then(|c| HeaderValue::try_from(c).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, c);
        }
        resp
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound { .. } => ApiError::new(Code::NotFound, e.to_string()),
            EngineError::Invalid { field, message } => ApiError::invalid(field, message),
            EngineError::UnsupportedMediaType(why) => {
                ApiError::new(Code::UnsupportedMediaType, why)
            }
            EngineError::TooLarge { limit } => ApiError::new(
                Code::PayloadTooLarge,
                format!("the upload exceeds the limit of {limit} bytes"),
            ),
            EngineError::Overloaded(why) => ApiError::new(Code::Overloaded, why).retry_after(1),
            EngineError::StorageFull(why) => {
                tracing::error!(%why, "an upload was refused: no space left");
                ApiError::new(Code::InsufficientStorage, why).retry_after(60)
            }
            EngineError::Unavailable(why) => {
                tracing::warn!(%why, "dependency unavailable");
                ApiError {
                    retry_after_secs: Some(1),
                    ..ApiError::new(Code::ServiceUnavailable, why)
                }
            }
            other => {
                tracing::error!(error = %other, "internal error");
                ApiError::new(
                    Code::Internal,
                    "an internal error occurred; it has been logged",
                )
            }
        }
    }
}

impl From<strata_cache::CacheError> for ApiError {
    fn from(e: strata_cache::CacheError) -> Self {
        tracing::error!(error = %e, "cache misconfigured");
        ApiError::new(
            Code::Internal,
            "an internal error occurred; it has been logged",
        )
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => {
                // The source is "path: message" when the error is inside a field (serde's
                // message names unknown and missing fields itself).
                let msg = std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_else(|| e.body_text());
                match msg.split_once(": ") {
                    Some((path, rest)) if !path.is_empty() && !path.contains(' ') => {
                        ApiError::invalid(path, rest)
                    }
                    _ => ApiError::invalid("body", msg),
                }
            }
            JsonRejection::JsonSyntaxError(e) => ApiError::new(Code::MalformedJson, e.body_text()),
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                Code::UnsupportedMediaType,
                "expected Content-Type: application/json",
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(
                    Code::PayloadTooLarge,
                    "the JSON body exceeds the size limit",
                )
            }
            other => ApiError::new(Code::MalformedJson, other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        let msg = match &r {
            QueryRejection::FailedToDeserializeQueryString(e) => std::error::Error::source(e)
                .map(ToString::to_string)
                .unwrap_or_else(|| r.body_text()),
            _ => r.body_text(),
        };
        ApiError::invalid("query", msg)
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::new(Code::NotFound, r.body_text())
    }
}

impl From<MultipartError> for ApiError {
    fn from(e: MultipartError) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(Code::PayloadTooLarge, "the upload exceeds the size limit")
        } else {
            ApiError::new(Code::MalformedMultipart, e.body_text())
        }
    }
}
