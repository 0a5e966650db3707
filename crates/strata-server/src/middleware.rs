//! Cross-cutting HTTP behaviour: timing and security headers, CORS, tracing spans, panic
//! containment.

use std::any::Any;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Response, header};
use axum::response::IntoResponse;
use strata_engine::timing::Phases;
use tokio::task::futures::TaskLocalFuture;
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

/// Writes `Server-Timing`: a cached read's `cache;desc=...;dur=...` (`l1-hit`, `l2-hit`,
/// `miss`, `coalesced` or `bypass`, recorded by `cached::respond` in the engine's
/// [`strata_engine::timing`] stopwatch), the phases the request
/// ran (`db`, `embed`, `index`: the engine's [`strata_engine::timing`] stopwatch, scoped
/// around the request here), then `app;dur=<ms>`
/// (time spent inside strata), as one header value; `X-Process-Time` (the same time in
/// seconds, as FastAPI services name it); and the [`SECURITY_HEADERS`].
///
/// A hand-written layer rather than `axum::middleware::from_fn`, which clones and boxes the
/// inner service and boxes its future on every request; the value is formatted into a stack
/// buffer with integer arithmetic (together a few percent of a cache hit).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ServerTimingLayer;

impl<S> tower::Layer<S> for ServerTimingLayer {
    type Service = ServerTiming<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerTiming { inner }
    }
}

/// See [`ServerTimingLayer`].
#[derive(Clone, Debug)]
pub(crate) struct ServerTiming<S> {
    inner: S,
}

impl<S, B, R> tower::Service<Request<B>> for ServerTiming<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Timed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        Timed {
            start: Instant::now(),
            inner: strata_engine::timing::scope(self.inner.call(req)),
        }
    }
}

pin_project_lite::pin_project! {
    /// A response future that stamps [`ServerTimingLayer`]'s headers on its response.
    pub(crate) struct Timed<F> {
        start: Instant,
        #[pin]
        inner: TaskLocalFuture<Phases, F>,
    }
}

impl<F, R, E> Future for Timed<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = Result<Response<R>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut resp = std::task::ready!(this.inner.as_mut().poll(cx))?;
        let phases = this.inner.take_value();
        stamp(&mut resp, this.start.elapsed(), phases.as_ref());
        Poll::Ready(Ok(resp))
    }
}

/// Writes the `Server-Timing` value and the security headers onto `resp`.
fn stamp<R>(resp: &mut Response<R>, app: Duration, phases: Option<&Phases>) {
    let mut v = Stack::default();
    if let Some((desc, dur)) = phases.and_then(Phases::cache) {
        v.push(b"cache;desc=");
        v.push(desc.as_bytes());
        v.push(b";dur=");
        v.millis(dur);
        v.push(b", ");
    }
    for (phase, dur) in phases.into_iter().flat_map(Phases::ran) {
        v.push(phase.name().as_bytes());
        v.push(b";dur=");
        v.millis(dur);
        v.push(b", ");
    }
    v.push(b"app;dur=");
    v.millis(app);
    let mut secs = Stack::default();
    secs.seconds(app);
    let headers = resp.headers_mut();
    if let Ok(value) = HeaderValue::from_bytes(v.as_bytes()) {
        headers.insert(SERVER_TIMING, value);
    }
    if let Ok(value) = HeaderValue::from_bytes(secs.as_bytes()) {
        headers.insert(PROCESS_TIME, value);
    }
    for (name, value) in SECURITY_HEADERS {
        headers.entry(name).or_insert(value);
    }
}

/// A small byte buffer on the stack (longer input is cut, never a panic).
struct Stack {
    buf: [u8; 160],
    len: usize,
}

impl Default for Stack {
    fn default() -> Self {
        Self {
            buf: [0; 160],
            len: 0,
        }
    }
}

impl Stack {
    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    /// `d` in milliseconds with three decimals (`12.345`).
    fn millis(&mut self, d: Duration) {
        let micros = d.as_micros().min(u128::from(u64::MAX)) as u64;
        self.whole(micros / 1000);
        let frac = micros % 1000;
        self.push(&[
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ]);
    }

    /// `d` in seconds with six decimals (`0.012345`).
    fn seconds(&mut self, d: Duration) {
        let micros = d.as_micros().min(u128::from(u64::MAX)) as u64;
        self.whole(micros / 1_000_000);
        let mut frac = [b'.', 0, 0, 0, 0, 0, 0];
        let mut rest = micros % 1_000_000;
        for slot in frac[1..].iter_mut().rev() {
            *slot = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        self.push(&frac);
    }

    /// An unsigned integer in decimal.
    fn whole(&mut self, whole: u64) {
        self.push(itoa::Buffer::new().format(whole).as_bytes());
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
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
                REQUEST_ID,
            ])
            .expose_headers([
                header::ETAG,
                header::RETRY_AFTER,
                header::WWW_AUTHENTICATE,
                HeaderName::from_static("x-cache"),
                REQUEST_ID,
                SERVER_TIMING,
                PROCESS_TIME,
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// The time spent inside strata, in seconds (seed 001's name for it).
const PROCESS_TIME: HeaderName = HeaderName::from_static("x-process-time");

/// The header a request's id travels in, both ways.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A panic in a handler becomes a logged 500 problem, never a dropped connection.
pub(crate) fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let msg = strata_engine::error::panic_message(err.as_ref()).unwrap_or_else(|| "unknown".into());
    tracing::error!(panic = %msg, "handler panicked");
    ApiError::new(
        Code::Internal,
        "an internal error occurred; it has been logged",
    )
    .into_response()
}

/// Request ids for requests that arrive without one: this process's random 64-bit prefix
/// (so two instances never share an id) and a counter, as 32 hex digits. tower-http's
/// `MakeRequestUuid` asks the kernel for 16 random bytes and formats a UUID through two
/// allocations on every request; this formats into a stack buffer.
#[derive(Clone, Copy)]
pub(crate) struct MakeRequestId;

impl tower_http::request_id::MakeRequestId for MakeRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<tower_http::request_id::RequestId> {
        use std::hash::{BuildHasher as _, Hasher as _};
        use std::sync::OnceLock;
        use std::sync::atomic::{AtomicU64, Ordering};
        static PREFIX: OnceLock<u64> = OnceLock::new();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // The standard library seeds every `RandomState` from the OS once per process.
        let prefix = *PREFIX.get_or_init(|| std::hash::RandomState::new().build_hasher().finish());
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 32];
        hex_into(&mut buf[..16], prefix);
        hex_into(&mut buf[16..], n);
        HeaderValue::from_bytes(&buf)
            .ok()
            .map(tower_http::request_id::RequestId::new)
    }
}

/// `v` as 16 lowercase hex digits into `out`.
fn hex_into(out: &mut [u8], v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().enumerate() {
        *b = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

#[derive(Clone)]
pub(crate) struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, req: &Request<B>) -> Span {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| req.uri().path(), |p| p.as_str());
        let id = req
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        tracing::debug_span!("http", method = %req.method(), route, request_id = id)
    }
}

pub(crate) fn trace_layer() -> TraceLayer<SharedClassifier<ServerErrorsAsFailures>, RequestSpan> {
    TraceLayer::new_for_http().make_span_with(RequestSpan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_in_milliseconds_and_seconds() {
        for (d, ms, s) in [
            (Duration::from_micros(0), "0.000", "0.000000"),
            (Duration::from_micros(1_234), "1.234", "0.001234"),
            (Duration::from_micros(12_345_678), "12345.678", "12.345678"),
            (Duration::from_nanos(999), "0.000", "0.000000"),
        ] {
            let (mut a, mut b) = (Stack::default(), Stack::default());
            a.millis(d);
            b.seconds(d);
            assert_eq!(std::str::from_utf8(a.as_bytes()).unwrap(), ms);
            assert_eq!(std::str::from_utf8(b.as_bytes()).unwrap(), s);
        }
    }
}
