//! Request extractors whose rejections are problem+json, and the caller's tenant.

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;
use strata_engine::TenantId;

use crate::caller::Caller;
use crate::error::ApiError;

/// `Json<T>` with problem+json rejections.
///
/// Parses with plain `serde_json` (axum's `Json` tracks the path of every field on the way,
/// a measurable share of a cached search); a body that fails is parsed again by axum's
/// `Json`, so the problem names the failing field's path exactly as before.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        if !json_content_type(req.headers()) {
            return Err(axum::extract::rejection::JsonRejection::from(
                axum::extract::rejection::MissingJsonContentType::default(),
            )
            .into());
        }
        let bytes = bytes::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::from(axum::extract::rejection::JsonRejection::from(e)))?;
        match serde_json::from_slice(&bytes) {
            Ok(v) => Ok(ApiJson(v)),
            Err(_) => axum::Json::<T>::from_bytes(&bytes)
                .map(|axum::Json(v)| ApiJson(v))
                .map_err(ApiError::from),
        }
    }
}

/// `application/json` or `application/<anything>+json`, parameters allowed (what axum's
/// `Json` accepts), without parsing a full media type.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && !subtype.is_empty()
        && !subtype.contains(char::is_whitespace)
        && (subtype.eq_ignore_ascii_case("json")
            || subtype.len() > 5
                && subtype.is_char_boundary(subtype.len() - 5)
                && subtype[subtype.len() - 5..].eq_ignore_ascii_case("+json"))
}

/// `Query<T>` with problem+json rejections.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// `Path<T>` with problem+json rejections.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// The tenant a request acts for: its [`Caller`]'s tenant (401 when the request names
/// none; see [`crate::caller`]).
#[derive(Debug, Clone)]
pub struct Tenant(pub TenantId);

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Caller::from_request_parts(parts, state)
            .await
            .map(|c| Tenant(c.tenant))
    }
}

/// The `If-None-Match` values of a request (only those: cloning every header of every
/// request would cost more than the cache hit it guards).
#[derive(Debug, Clone, Default)]
pub struct IfNoneMatch(Vec<axum::http::HeaderValue>);

impl IfNoneMatch {
    /// Whether `etag` (quoted) is among the values, or they say `*`.
    pub fn matches(&self, etag: &str) -> bool {
        self.0
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|v| v == "*" || v == etag || v.strip_prefix("W/") == Some(etag))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(IfNoneMatch(
            parts
                .headers
                .get_all(axum::http::header::IF_NONE_MATCH)
                .iter()
                .cloned()
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognised_as_axum_recognises_them() {
        let check = |v: &str| {
            let mut h = axum::http::HeaderMap::new();
            h.insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_str(v).unwrap(),
            );
            json_content_type(&h)
        };
        for yes in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json ;charset=utf-8",
            "application/problem+json",
            "application/vnd.api+JSON",
        ] {
            assert!(check(yes), "{yes}");
        }
        for no in [
            "text/json",
            "application/jsonx",
            "application/xml",
            "application/+json",
            "application/ json",
            "json",
            "",
        ] {
            assert!(!check(no), "{no}");
        }
        assert!(!json_content_type(&axum::http::HeaderMap::new()));
    }
}
