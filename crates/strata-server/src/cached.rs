//! Cached JSON responses: a read handler asks the engine's cache policy for its
//! [`Read`] (kind, scope, canonical request) and never builds a key itself; the body comes
//! from the cache or from the computation, and the response says which (`X-Cache`,
//! `Server-Timing`), with an `ETag` that answers `If-None-Match` with 304. Search answers
//! are computed here too ([`search`]), for the route and for warming alike.
//!
//! A cached value is the body's quoted ETag (26 bytes) followed by the body: the tag is
//! hashed once, when the body is computed, and every hit serves both as zero-copy slices.

use std::future::Future;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use strata_cache::Source;
use strata_engine::TenantId;
use strata_engine::policy::Read;
use strata_engine::search::SearchRequest;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::IfNoneMatch;

/// Serves `compute`'s JSON body through the cache.
pub(crate) async fn json<F, Fut>(
    app: &AppState,
    inm: &IfNoneMatch,
    read: Read,
    compute: F,
) -> Result<Response, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Bytes, ApiError>>,
{
    let lookup = app
        .engine
        .cache_policy()
        .get_or_compute(&read, || async { compute().await.map(seal) })
        .await?;
    Ok(respond(inm, lookup))
}

/// A search answer (sealed JSON body) through the cache: what the route serves and what
/// warming recomputes. `read` is the policy's read for `req`.
pub(crate) async fn search(
    app: &AppState,
    tenant: &TenantId,
    read: Read,
    req: SearchRequest,
) -> Result<strata_cache::Lookup, ApiError> {
    app.engine
        .cache_policy()
        .get_or_compute(&read, || async {
            body(&app.engine.retrieval().search(tenant, req).await?).map(seal)
        })
        .await
}

const TAG: usize = 26;

/// Prefixes a body with its quoted ETag, for caching.
pub(crate) fn seal(body: Bytes) -> Bytes {
    let mut v = Vec::with_capacity(TAG + body.len());
    v.push(b'"');
    v.extend_from_slice(&blake3::hash(&body).to_hex().as_bytes()[..24]);
    v.push(b'"');
    v.extend_from_slice(&body);
    Bytes::from(v)
}

/// Splits a sealed value into its ETag and body (hashing a value that is not sealed).
fn unseal(value: Bytes) -> (HeaderValue, Bytes) {
    if value.len() >= TAG
        && value[0] == b'"'
        && value[TAG - 1] == b'"'
        && let Ok(tag) = HeaderValue::from_maybe_shared(value.slice(..TAG))
    {
        return (tag, value.slice(TAG..));
    }
    let tag = format!("\"{}\"", &blake3::hash(&value).to_hex()[..24]);
    (
        HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"\"")),
        value,
    )
}

/// The response for a cached (or just computed) sealed JSON body.
pub(crate) fn respond(inm: &IfNoneMatch, lookup: strata_cache::Lookup) -> Response {
    let (etag, body) = unseal(lookup.value);
    let (x_cache, desc) = match lookup.source {
        Source::L1 => ("HIT-L1", "l1-hit"),
        Source::L2 => ("HIT-L2", "l2-hit"),
        Source::Computed => ("MISS", "miss"),
        Source::Joined => ("MISS", "coalesced"),
        Source::Bypassed => ("MISS", "bypass"),
    };
    let mut resp = if inm.matches(etag.to_str().unwrap_or_default()) {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Body::from(body));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    let h = resp.headers_mut();
    h.insert("x-cache", HeaderValue::from_static(x_cache));
    h.insert(header::ETAG, etag);
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    crate::middleware::cache_timing(resp.headers_mut(), desc, lookup.elapsed);
    resp
}

/// Serialises a value as a JSON body.
pub(crate) fn body<T: serde::Serialize>(value: &T) -> Result<Bytes, ApiError> {
    serde_json::to_vec(value).map(Bytes::from).map_err(|e| {
        tracing::error!(error = %e, "response serialisation failed");
        ApiError::new(
            crate::error::Code::Internal,
            "an internal error occurred; it has been logged",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_carry_their_etag() {
        let (tag, body) = unseal(seal(Bytes::from_static(b"{\"a\":1}")));
        assert_eq!(body, Bytes::from_static(b"{\"a\":1}"));
        let again = format!("\"{}\"", &blake3::hash(b"{\"a\":1}").to_hex()[..24]);
        assert_eq!(tag.to_str().unwrap(), again);
        // A value cached before sealing existed still gets a correct tag.
        let (tag2, body2) = unseal(Bytes::from_static(b"{\"a\":1}"));
        assert_eq!(
            (tag2.to_str().unwrap(), body2.as_ref()),
            (again.as_str(), &b"{\"a\":1}"[..])
        );
    }
}
