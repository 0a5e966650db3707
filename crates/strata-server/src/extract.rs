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
        let JsonBytes(bytes) = JsonBytes::from_request(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A JSON request's body, its media type checked and not yet parsed (for a route that
/// parses it once per distinct body: [`parse_json`] does what [`ApiJson`] does).
#[derive(Debug)]
pub struct JsonBytes(pub bytes::Bytes);

impl<S> FromRequest<S> for JsonBytes
where
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
        bytes::Bytes::from_request(req, state)
            .await
            .map(JsonBytes)
            .map_err(|e| ApiError::from(axum::extract::rejection::JsonRejection::from(e)))
    }
}

/// Parses a JSON object body as [`ApiJson`] does, with its rejections.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    require_object(bytes)?;
    match serde_json::from_slice(bytes) {
        Ok(v) => Ok(v),
        Err(_) => axum::Json::<T>::from_bytes(bytes)
            .map(|axum::Json(v)| v)
            .map_err(ApiError::from),
    }
}

/// Refuses a JSON body that is not an object: serde reads a struct from an array too
/// (`[null, null]` would be an empty request), and every strata body is an object. Looks at
/// the first byte that is not JSON whitespace; only a refused body is parsed, to tell
/// malformed JSON (400) from a well-formed non-object (422).
pub(crate) fn require_object(body: &[u8]) -> Result<(), ApiError> {
    let opens_object = body
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|b| *b == b'{');
    if opens_object {
        return Ok(());
    }
    Err(match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(_) => ApiError::invalid("body", "must be a JSON object"),
        Err(e) => ApiError::new(crate::error::Code::MalformedJson, e.to_string()),
    })
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
    // What nearly every client sends, answered without splitting.
    if value == "application/json" {
        return true;
    }
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

/// What a request's headers say about the representation it wants: its `If-None-Match`
/// values and whether it takes gzip. Only these are read: cloning every header of every
/// request would cost more than the cache hit they guard.
#[derive(Debug, Clone, Default)]
pub struct Preconditions {
    tags: Vec<axum::http::HeaderValue>,
    /// Whether `Accept-Encoding` admits gzip (named, or `*`, with a non-zero q).
    pub gzip: bool,
}

impl Preconditions {
    /// Whether `etag` (quoted) is among the values, or they say `*`.
    pub fn matches(&self, etag: &str) -> bool {
        self.tags
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|v| v == "*" || v == etag || v.strip_prefix("W/") == Some(etag))
    }

    /// The same, asking for the identity encoding.
    pub fn identity(self) -> Self {
        Self {
            gzip: false,
            ..self
        }
    }
}

/// Whether an `Accept-Encoding` header admits gzip (RFC 9110 12.5.3: a coding named with
/// q > 0, or `*` with q > 0 when gzip is not named).
pub fn accepts_gzip(headers: &axum::http::HeaderMap) -> bool {
    let (mut gzip, mut any) = (None, None);
    for value in headers.get_all(axum::http::header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        // What browsers' and HTTP clients' simplest forms send, answered without splitting.
        if value.eq_ignore_ascii_case("gzip") {
            gzip = Some(1.0);
            continue;
        }
        for item in value.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let q = parts
                .find_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    k.trim().eq_ignore_ascii_case("q").then(|| v.trim())
                })
                .map_or(Some(1.0), |q| q.parse::<f32>().ok())
                .unwrap_or(0.0);
            if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
                gzip = Some(q);
            } else if name == "*" {
                any = Some(q);
            }
        }
    }
    gzip.or(any).is_some_and(|q| q > 0.0)
}

impl<S: Send + Sync> FromRequestParts<S> for Preconditions {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Preconditions {
            tags: parts
                .headers
                .get_all(axum::http::header::IF_NONE_MATCH)
                .iter()
                .cloned()
                .collect(),
            gzip: accepts_gzip(&parts.headers),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_q_values_decide_gzip() {
        let check = |v: &str| {
            let mut h = axum::http::HeaderMap::new();
            h.insert(
                axum::http::header::ACCEPT_ENCODING,
                axum::http::HeaderValue::from_str(v).unwrap(),
            );
            accepts_gzip(&h)
        };
        for yes in [
            "gzip",
            "br, gzip",
            "gzip;q=0.5",
            "*",
            "br;q=1, *;q=0.1",
            "GZIP; Q=1",
        ] {
            assert!(check(yes), "{yes}");
        }
        for no in [
            "br",
            "identity",
            "gzip;q=0",
            "gzip;q=0.0, br",
            "*;q=0",
            "*, gzip;q=0",
            "",
        ] {
            assert!(!check(no), "{no}");
        }
        assert!(!accepts_gzip(&axum::http::HeaderMap::new()));
    }

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
