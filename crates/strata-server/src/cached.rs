//! Cached JSON responses: a read handler names the cache kind, the scope (whose generation
//! a write bumps) and the canonical request; the body comes from the cache or from the
//! computation, and the response says which (`X-Cache`, `Server-Timing`), with an `ETag`
//! that answers `If-None-Match` with 304.

use std::future::Future;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use strata_cache::Source;

use crate::AppState;
use crate::error::ApiError;

/// Serves `compute`'s JSON body through the cache.
pub(crate) async fn json<F, Fut>(
    app: &AppState,
    headers: &HeaderMap,
    kind: &str,
    scope: &str,
    material: &[u8],
    compute: F,
) -> Result<Response, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Bytes, ApiError>>,
{
    let lookup = app
        .engine
        .cache()
        .get_or_compute(kind, scope, material, compute)
        .await?;
    Ok(respond(headers, lookup))
}

/// The response for a cached (or just computed) JSON body.
pub(crate) fn respond(headers: &HeaderMap, lookup: strata_cache::Lookup) -> Response {
    let etag = format!("\"{}\"", &blake3::hash(&lookup.value).to_hex()[..24]);
    let (x_cache, desc) = match lookup.source {
        Source::L1 => ("HIT-L1", "l1-hit"),
        Source::L2 => ("HIT-L2", "l2-hit"),
        Source::Computed => ("MISS", "miss"),
        Source::Joined => ("MISS", "coalesced"),
        Source::Bypassed => ("MISS", "bypass"),
    };
    let timing = format!(
        "cache;desc={desc};dur={:.3}",
        lookup.elapsed.as_secs_f64() * 1000.0
    );
    let mut resp = if crate::etag_matches(headers, &etag) {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Body::from(lookup.value));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    let h = resp.headers_mut();
    h.insert("x-cache", HeaderValue::from_static(x_cache));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    if let Ok(v) = HeaderValue::from_str(&timing) {
        h.insert("server-timing", v);
    }
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
