//! Cross-cutting HTTP behaviour: timing and security headers, CORS, tracing spans, panic
//! containment.

use std::any::Any;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Response, header};
use axum::middleware::Next;
use axum::response::IntoResponse;
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{MakeSpan, TraceLayer};
use tracing::Span;

use crate::error::{ApiError, Code};

/// Headers every response carries unless its handler set its own: no MIME sniffing, no
/// framing, no referrer, and a content policy that lets a JSON answer load nothing.
const SECURITY_HEADERS: [(HeaderName, HeaderValue); 4] = [
    (
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    ),
    (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    (
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    ),
    (
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    ),
];

/// Writes `Server-Timing`: the entry a handler already put there (a cached read's
/// `cache;desc=...;dur=...`, see [`cache_timing`]), then `app;dur=<ms>` (time spent inside
/// strata), as one header value; and the [`SECURITY_HEADERS`].
pub(crate) async fn server_timing(req: Request, next: Next) -> axum::response::Response {
    use std::fmt::Write as _;
    let start = Instant::now();
    let mut resp = next.run(req).await;
    let mut value = String::with_capacity(64);
    if let Some(cache) = resp
        .headers()
        .get(SERVER_TIMING)
        .and_then(|v| v.to_str().ok())
    {
        value.push_str(cache);
        value.push_str(", ");
    }
    let _ = write!(value, "app;dur={}", Millis(start.elapsed()));
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::try_from(value) {
        headers.insert(SERVER_TIMING, v);
    }
    for (name, value) in SECURITY_HEADERS {
        headers.entry(name).or_insert(value);
    }
    resp
}

/// Compression of responses from `min` bytes on, negotiated from `Accept-Encoding` with its
/// q-values (zstd, br, gzip; `Vary: Accept-Encoding` added). A response that already has a
/// `Content-Encoding` (a cached body served in its stored gzip form) passes untouched, as do
/// event streams, images, and any response with an `ETag`: those are cached reads, which
/// carry their own compressed form with its own tag, and stored files, whose tag names the
/// bytes as stored; compressing them here would leave one tag on two representations.
pub(crate) fn compression(
    min: usize,
) -> tower_http::compression::CompressionLayer<impl tower_http::compression::Predicate> {
    use tower_http::compression::predicate::{NotForContentType, Predicate as _, SizeAbove};
    // SizeAbove compresses bodies strictly larger than its bound.
    let bound = u16::try_from(min.saturating_sub(1)).unwrap_or(u16::MAX);
    let untagged =
        |_: axum::http::StatusCode,
         _: axum::http::Version,
         headers: &axum::http::HeaderMap,
         _: &axum::http::Extensions| !headers.contains_key(header::ETAG);
    tower_http::compression::CompressionLayer::new()
        .quality(tower_http::CompressionLevel::Default)
        .compress_when(
            SizeAbove::new(bound)
                .and(NotForContentType::GRPC)
                .and(NotForContentType::IMAGES)
                .and(NotForContentType::SSE)
                .and(untagged),
        )
}

/// Cross-origin access for browsers: off unless origins are configured. Preflights are
/// answered here, before the caller is resolved (a preflight carries no credentials).
pub(crate) fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::Method;
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_NONE_MATCH,
                HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([
                header::ETAG,
                header::RETRY_AFTER,
                header::WWW_AUTHENTICATE,
                HeaderName::from_static("x-cache"),
                HeaderName::from_static("x-request-id"),
                SERVER_TIMING,
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// A cached read's `Server-Timing` entry: `desc` is `l1-hit`, `l2-hit`, `miss`,
/// `coalesced` or `bypass`; `dur` the time spent in the lookup (and the computation on a
/// miss). [`server_timing`] appends strata's total.
pub(crate) fn cache_timing(
    headers: &mut axum::http::HeaderMap,
    desc: &str,
    dur: std::time::Duration,
) {
    if let Ok(v) = HeaderValue::try_from(format!("cache;desc={desc};dur={}", Millis(dur))) {
        headers.insert(SERVER_TIMING, v);
    }
}

/// A duration as milliseconds with three decimals, formatted with integer arithmetic
/// (float formatting is a measurable share of a cache hit).
pub(crate) struct Millis(pub(crate) std::time::Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let micros = self.0.as_micros();
        write!(f, "{}.{:03}", micros / 1000, micros % 1000)
    }
}

/// A panic in a handler becomes a logged 500 problem, never a dropped connection.
pub(crate) fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let msg = err
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| err.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown".into());
    tracing::error!(panic = %msg, "handler panicked");
    ApiError::new(
        Code::Internal,
        "an internal error occurred; it has been logged",
    )
    .into_response()
}

#[derive(Clone)]
pub(crate) struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, req: &Request<B>) -> Span {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
        let id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        tracing::info_span!("http", method = %req.method(), route, request_id = id)
    }
}

pub(crate) fn trace_layer() -> TraceLayer<SharedClassifier<ServerErrorsAsFailures>, RequestSpan> {
    TraceLayer::new_for_http().make_span_with(RequestSpan)
}
