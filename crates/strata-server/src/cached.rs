//! Cached JSON responses: a read handler asks the engine's cache policy for its
//! [`Read`] (kind, scope, canonical request) and never builds a key itself; the body comes
//! from the cache or from the computation, and the response says which (`X-Cache`,
//! `Server-Timing`), with an `ETag` that answers `If-None-Match` with 304. Search answers
//! are computed here too ([`search`]), for the route and for warming alike.
//!
//! A cached value is the body's quoted ETag (26 bytes) followed by the body: the tag is
//! hashed once, when the body is computed, and every hit serves both as zero-copy slices.
//! A body of [`GZIP_MIN`] bytes or more is stored with its gzip form beside it
//! (`"tag"`, `z`, the identity length as 4 bytes little-endian, the identity body, the gzip
//! body), so a hit for a client that takes gzip does no compression work: it is compressed
//! once, when computed, and served as a slice with its own ETag (`"tag-gzip"`).

use std::future::Future;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use strata_cache::Source;
use strata_engine::TenantId;
use strata_engine::policy::{KeyedRead, Read};
use strata_engine::search::SearchRequest;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::Preconditions;

/// Serves `compute`'s JSON body through the cache.
pub(crate) async fn json<F, Fut>(
    app: &AppState,
    inm: &Preconditions,
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
        .get_or_compute(&read.keyed(), || async { compute().await.map(seal) })
        .await?;
    Ok(respond(inm, lookup))
}

/// A search answer (sealed JSON body) through the cache: what the route serves and what
/// warming recomputes. `read` is the policy's read for `req`.
pub(crate) async fn search(
    app: &AppState,
    tenant: &TenantId,
    read: KeyedRead,
    req: &SearchRequest,
) -> Result<strata_cache::Lookup, ApiError> {
    app.engine
        .cache_policy()
        .get_or_compute(&read, || async {
            body(&app.engine.retrieval().search(tenant, req.clone()).await?).map(seal)
        })
        .await
}

const TAG: usize = 26;

/// Bodies this large or larger are cached with their gzip form (and the compression layer
/// compresses other responses from the same size on).
pub const GZIP_MIN: usize = 1024;

/// Marks a sealed value that carries a gzip form (no JSON body starts with `z`).
const WITH_GZIP: u8 = b'z';

/// Prefixes a body with its quoted ETag (and, from [`GZIP_MIN`] bytes, adds its gzip form),
/// for caching.
pub(crate) fn seal(body: Bytes) -> Bytes {
    let gzip = (body.len() >= GZIP_MIN).then(|| gzip(&body)).flatten();
    let mut v = Vec::with_capacity(TAG + 5 + body.len() + gzip.as_ref().map_or(0, Vec::len));
    v.push(b'"');
    v.extend_from_slice(&blake3::hash(&body).to_hex().as_bytes()[..24]);
    v.push(b'"');
    match (gzip, u32::try_from(body.len())) {
        (Some(gz), Ok(len)) => {
            v.push(WITH_GZIP);
            v.extend_from_slice(&len.to_le_bytes());
            v.extend_from_slice(&body);
            v.extend_from_slice(&gz);
        }
        _ => v.extend_from_slice(&body),
    }
    Bytes::from(v)
}

fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 3),
        flate2::Compression::default(),
    );
    enc.write_all(body).ok()?;
    enc.finish().ok()
}

/// The identity JSON body of a sealed value.
pub(crate) fn json_body(value: Bytes) -> Bytes {
    unseal(value).body
}

/// A sealed value taken apart.
struct Unsealed {
    tag: HeaderValue,
    body: Bytes,
    gzip: Option<Bytes>,
}

/// Splits a sealed value into its ETag, body and gzip form (hashing a value that is not
/// sealed).
fn unseal(value: Bytes) -> Unsealed {
    if value.len() >= TAG
        && value[0] == b'"'
        && value[TAG - 1] == b'"'
        && let Ok(tag) = HeaderValue::from_maybe_shared(value.slice(..TAG))
    {
        if value.len() >= TAG + 5 && value[TAG] == WITH_GZIP {
            let len = u32::from_le_bytes([
                value[TAG + 1],
                value[TAG + 2],
                value[TAG + 3],
                value[TAG + 4],
            ]) as usize;
            let start = TAG + 5;
            if let Some(end) = start.checked_add(len).filter(|e| *e <= value.len()) {
                return Unsealed {
                    tag,
                    body: value.slice(start..end),
                    gzip: Some(value.slice(end..)),
                };
            }
        }
        return Unsealed {
            tag,
            body: value.slice(TAG..),
            gzip: None,
        };
    }
    let tag = format!("\"{}\"", &blake3::hash(&value).to_hex()[..24]);
    Unsealed {
        tag: HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"\"")),
        body: value,
        gzip: None,
    }
}

/// The ETag of a body's gzip form: the identity tag with `-gzip` inside the quotes.
fn gzip_tag(tag: &HeaderValue) -> Option<HeaderValue> {
    let t = tag.to_str().ok()?.strip_suffix('"')?;
    HeaderValue::try_from(format!("{t}-gzip\"")).ok()
}

/// The response for a cached (or just computed) sealed JSON body.
pub(crate) fn respond(inm: &Preconditions, lookup: strata_cache::Lookup) -> Response {
    let Unsealed { tag, body, gzip } = unseal(lookup.value);
    // The representation chosen (gzip when the client takes it and the body has that
    // form) decides the ETag that If-None-Match is compared with.
    // The gzip tag is written only when it is served: most clients of a JSON API (and
    // every cached hit they make) never ask for gzip.
    let gz = gzip
        .filter(|_| inm.gzip)
        .and_then(|gz| Some((gz, gzip_tag(&tag)?)));
    let (etag, body, encoded) = match gz {
        Some((gz, gz_tag)) => (gz_tag, gz, true),
        None => (tag, body, false),
    };
    let (x_cache, desc) = labels(lookup.source);
    if inm.matches(etag.to_str().unwrap_or_default()) {
        return not_modified(etag, lookup.source, lookup.elapsed);
    }
    let mut r = Response::new(Body::from(body));
    let h = r.headers_mut();
    // Room for every header the response will carry (these, the middleware's timing,
    // security and request-id headers, the length): grown from empty, the map was
    // reallocated and rehashed twice on every hit.
    *h = axum::http::HeaderMap::with_capacity(RESPONSE_HEADERS);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if encoded {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    finish(r, etag, x_cache, desc, lookup.elapsed)
}

fn not_modified(etag: HeaderValue, source: Source, elapsed: std::time::Duration) -> Response {
    let (x_cache, desc) = labels(source);
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NOT_MODIFIED;
    finish(r, etag, x_cache, desc, elapsed)
}

fn labels(source: Source) -> (&'static str, &'static str) {
    match source {
        Source::L1 => ("HIT-L1", "l1-hit"),
        Source::L2 => ("HIT-L2", "l2-hit"),
        Source::Computed => ("MISS", "miss"),
        Source::Joined => ("MISS", "coalesced"),
        Source::Bypassed => ("MISS", "bypass"),
    }
}

/// How many headers a cached answer ends up with, at most.
const RESPONSE_HEADERS: usize = 16;

/// Parsed once: a `&str` name is validated again on every insert.
pub(crate) const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

fn finish(
    mut resp: Response,
    etag: HeaderValue,
    x_cache: &'static str,
    desc: &'static str,
    elapsed: std::time::Duration,
) -> Response {
    let h = resp.headers_mut();
    h.insert(X_CACHE, HeaderValue::from_static(x_cache));
    h.insert(header::ETAG, etag);
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    strata_engine::timing::cache_lookup(desc, elapsed);
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
    fn large_bodies_are_sealed_with_their_gzip_form() {
        let body = Bytes::from(serde_json::to_vec(&vec!["some repeated text"; 200]).unwrap());
        let u = unseal(seal(body.clone()));
        assert_eq!(u.body, body);
        let gz = u.gzip.expect("a gzip form");
        assert!(gz.len() < body.len() / 4, "{} of {}", gz.len(), body.len());
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut back).unwrap();
        assert_eq!(back, body);
        let tag = u.tag.to_str().unwrap();
        assert_eq!(
            gzip_tag(&u.tag).unwrap().to_str().unwrap(),
            format!("{}-gzip\"", &tag[..tag.len() - 1])
        );
        let small = unseal(seal(Bytes::from_static(b"{}")));
        assert!(small.gzip.is_none());
    }

    #[test]
    fn sealed_values_carry_their_etag() {
        let u = unseal(seal(Bytes::from_static(b"{\"a\":1}")));
        let (tag, body) = (u.tag, u.body);
        assert_eq!(body, Bytes::from_static(b"{\"a\":1}"));
        let again = format!("\"{}\"", &blake3::hash(b"{\"a\":1}").to_hex()[..24]);
        assert_eq!(tag.to_str().unwrap(), again);
        // A value cached before sealing existed still gets a correct tag.
        let u2 = unseal(Bytes::from_static(b"{\"a\":1}"));
        let (tag2, body2) = (u2.tag, u2.body);
        assert_eq!(
            (tag2.to_str().unwrap(), body2.as_ref()),
            (again.as_str(), &b"{\"a\":1}"[..])
        );
    }
}
