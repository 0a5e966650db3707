//! Cached JSON responses: a read handler asks the engine's cache policy for its
//! [`Read`] (kind, scope, canonical request) and never builds a key itself; the body comes
//! from the cache or from the computation, and the response says which (`X-Cache`,
//! `Server-Timing`), with an `ETag` that answers `If-None-Match` with 304. Search answers
//! are computed here too ([`search`]), for the route and for warming alike.
//!
//! A cached value is the body's quoted ETag (26 bytes) followed by the body: the tag is
//! hashed once, when the body is computed, and every hit serves both as zero-copy slices.
//! A body of [`GZIP_MIN`] bytes or more is stored with its gzip form beside it
//! (`"tag"`, `g`, the identity length as 4 bytes little-endian, the gzip form's own ETag
//! `"tag-gzip"`, the identity body, the gzip body), so a hit for a client that takes gzip
//! does no compression work and formats nothing: both were made once, when computed, and
//! are served as slices. (Values sealed by earlier versions, marked `z` and without the
//! gzip tag, are still read, the tag then written per hit.)

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

/// Marks a sealed value that carries a gzip form and its ETag (no JSON body starts with `g`).
const WITH_GZIP: u8 = b'g';

/// Marks a value sealed by an earlier version: a gzip form without its ETag.
const WITH_GZIP_UNTAGGED: u8 = b'z';

/// The gzip form's ETag: the identity tag with `-gzip` inside the quotes.
const GZIP_TAG: usize = TAG + 5;

/// Prefixes a body with its quoted ETag (and, from [`GZIP_MIN`] bytes, adds its gzip form
/// and that form's ETag), for caching.
pub(crate) fn seal(body: Bytes) -> Bytes {
    let gzip = (body.len() >= GZIP_MIN).then(|| gzip(&body)).flatten();
    let gz_len = gzip.as_ref().map_or(0, |g| g.len() + 5 + GZIP_TAG);
    let mut v = Vec::with_capacity(TAG + body.len() + gz_len);
    let hex = blake3::hash(&body).to_hex();
    let hex = &hex.as_bytes()[..TAG - 2];
    push_tag(&mut v, hex, false);
    match (gzip, u32::try_from(body.len())) {
        (Some(gz), Ok(len)) => {
            v.push(WITH_GZIP);
            v.extend_from_slice(&len.to_le_bytes());
            push_tag(&mut v, hex, true);
            v.extend_from_slice(&body);
            v.extend_from_slice(&gz);
        }
        _ => v.extend_from_slice(&body),
    }
    Bytes::from(v)
}

/// Writes the quoted ETag of a body whose hash (hex, cut to 24) is `hex`: `"hex"`, or
/// `"hex-gzip"` for its gzip form. The one place the tags' spelling is decided.
fn push_tag(out: &mut Vec<u8>, hex: &[u8], gzip: bool) {
    out.push(b'"');
    out.extend_from_slice(hex);
    out.extend_from_slice(if gzip { b"-gzip\"" } else { b"\"" });
}

/// A tag written by [`push_tag`] as a header value.
fn tag_value(tag: Vec<u8>) -> HeaderValue {
    HeaderValue::from_maybe_shared(Bytes::from(tag)).unwrap_or(HeaderValue::from_static("\"\""))
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
    unseal(value, false).body
}

/// The representation of a sealed value a response serves.
struct Unsealed {
    /// Its ETag.
    tag: HeaderValue,
    body: Bytes,
    /// Whether `body` is the gzip form.
    gzip: bool,
}

/// Takes from a sealed value the representation to serve: the gzip form when `gzip` (the
/// client takes it) and the value has one, else the identity body (hashing a value that is
/// not sealed). Only what is served is sliced: each slice is a reference count another core
/// shares.
fn unseal(value: Bytes, gzip: bool) -> Unsealed {
    if value.len() < TAG || value[0] != b'"' || value[TAG - 1] != b'"' {
        return unsealed_legacy(value);
    }
    let marker = value.get(TAG).copied();
    let header = match marker {
        Some(WITH_GZIP) => TAG + 5 + GZIP_TAG,
        Some(WITH_GZIP_UNTAGGED) => TAG + 5,
        _ => 0,
    };
    if header > 0 && value.len() >= header {
        let len = u32::from_le_bytes([
            value[TAG + 1],
            value[TAG + 2],
            value[TAG + 3],
            value[TAG + 4],
        ]) as usize;
        if let Some(end) = header.checked_add(len).filter(|e| *e <= value.len()) {
            if !gzip {
                return Unsealed {
                    tag: tag_at(&value, 0, TAG),
                    body: value.slice(header..end),
                    gzip: false,
                };
            }
            let tag = if marker == Some(WITH_GZIP) {
                tag_at(&value, TAG + 5, GZIP_TAG)
            } else {
                gzip_tag(&value[..TAG])
            };
            return Unsealed {
                tag,
                body: value.slice(end..),
                gzip: true,
            };
        }
    }
    Unsealed {
        tag: tag_at(&value, 0, TAG),
        body: value.slice(TAG..),
        gzip: false,
    }
}

/// The quoted tag of `len` bytes at `at` in a sealed value, as a header value.
fn tag_at(value: &Bytes, at: usize, len: usize) -> HeaderValue {
    HeaderValue::from_maybe_shared(value.slice(at..at + len))
        .unwrap_or(HeaderValue::from_static("\"\""))
}

/// A value cached before sealing existed: its tag is hashed now.
fn unsealed_legacy(value: Bytes) -> Unsealed {
    let mut tag = Vec::with_capacity(TAG);
    push_tag(
        &mut tag,
        &blake3::hash(&value).to_hex().as_bytes()[..TAG - 2],
        false,
    );
    Unsealed {
        tag: tag_value(tag),
        body: value,
        gzip: false,
    }
}

/// The ETag of a body's gzip form from the identity tag (`"tag"` -> `"tag-gzip"`), for values
/// sealed without it.
fn gzip_tag(tag: &[u8]) -> HeaderValue {
    let mut t = Vec::with_capacity(GZIP_TAG);
    push_tag(&mut t, &tag[1..tag.len() - 1], true);
    tag_value(t)
}

/// The response for a cached (or just computed) sealed JSON body.
pub(crate) fn respond(inm: &Preconditions, lookup: strata_cache::Lookup) -> Response {
    // The representation chosen (gzip when the client takes it and the body has that
    // form) decides the ETag that If-None-Match is compared with.
    let Unsealed {
        tag: etag,
        body,
        gzip: encoded,
    } = unseal(lookup.value, inm.gzip);
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

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut back).unwrap();
        back
    }

    #[test]
    fn large_bodies_are_sealed_with_their_gzip_form_and_its_tag() {
        let body = Bytes::from(serde_json::to_vec(&vec!["some repeated text"; 200]).unwrap());
        let sealed = seal(body.clone());
        let plain = unseal(sealed.clone(), false);
        assert_eq!(plain.body, body);
        assert!(!plain.gzip);
        let gz = unseal(sealed, true);
        assert!(gz.gzip);
        assert!(
            gz.body.len() < body.len() / 4,
            "{} of {}",
            gz.body.len(),
            body.len()
        );
        assert_eq!(gunzip(&gz.body), body);
        let tag = plain.tag.to_str().unwrap();
        assert_eq!(
            gz.tag.to_str().unwrap(),
            format!("{}-gzip\"", &tag[..tag.len() - 1])
        );
        // A small body has no gzip form: a gzip-taking client gets the identity body.
        let small = unseal(seal(Bytes::from_static(b"{}")), true);
        assert!(!small.gzip);
        assert_eq!(small.body, Bytes::from_static(b"{}"));
    }

    #[test]
    fn values_sealed_by_an_earlier_version_still_read() {
        // `"tag"`, `z`, the identity length, the identity body, the gzip body.
        let body = Bytes::from(serde_json::to_vec(&vec!["older text"; 300]).unwrap());
        let tag = format!("\"{}\"", &blake3::hash(&body).to_hex()[..24]);
        let gz = gzip(&body).unwrap();
        let mut v = tag.as_bytes().to_vec();
        v.push(b'z');
        v.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
        v.extend_from_slice(&body);
        v.extend_from_slice(&gz);
        let old = Bytes::from(v);
        let plain = unseal(old.clone(), false);
        assert_eq!(
            (plain.tag.to_str().unwrap(), &plain.body),
            (tag.as_str(), &body)
        );
        let zipped = unseal(old, true);
        assert!(zipped.gzip);
        assert_eq!(gunzip(&zipped.body), body);
        assert_eq!(
            zipped.tag.to_str().unwrap(),
            format!("{}-gzip\"", &tag[..tag.len() - 1])
        );
        // The new layout tags both forms exactly as the old one did.
        let new = unseal(seal(body.clone()), true);
        assert_eq!(new.tag, zipped.tag);
    }

    #[test]
    fn sealed_values_carry_their_etag() {
        let u = unseal(seal(Bytes::from_static(b"{\"a\":1}")), false);
        let (tag, body) = (u.tag, u.body);
        assert_eq!(body, Bytes::from_static(b"{\"a\":1}"));
        let again = format!("\"{}\"", &blake3::hash(b"{\"a\":1}").to_hex()[..24]);
        assert_eq!(tag.to_str().unwrap(), again);
        // A value cached before sealing existed still gets a correct tag.
        let u2 = unseal(Bytes::from_static(b"{\"a\":1}"), true);
        let (tag2, body2) = (u2.tag, u2.body);
        assert_eq!(
            (tag2.to_str().unwrap(), body2.as_ref()),
            (again.as_str(), &b"{\"a\":1}"[..])
        );
    }
}
