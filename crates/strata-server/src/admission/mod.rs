//! Admission control: what a request must pass before a handler runs, and how long it may
//! take there.
//!
//! - **Load shedding**: a global bound on requests in flight. One over it is answered 503
//!   `overloaded` with `Retry-After` at once, instead of queueing until every caller times
//!   out. Health, metrics and operator routes are never shed, so an overloaded server can
//!   still be watched and mended.
//! - **Rate limits** per tenant: GCRA ([`rate`]: local to the process, or shared by every
//!   instance through Redis by leases), answering 429 `rate_limited` with `Retry-After`, and
//!   the IETF httpapi draft's `RateLimit-Policy` and `RateLimit` headers on every answer to a
//!   limited tenant.
//! - **Timeouts** per route class: a request past its deadline is answered 504 `timeout`
//!   (its handler is dropped; writes already acknowledged by the store stay).
//!
//! The layer runs after routing and after [`crate::caller::CallerLayer`], so it sees the
//! matched route and the caller. Owns: the in-flight count, the tenants' rate state, the
//! deadlines. Must not: reach the engine or the store.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::MatchedPath;
use axum::http::{HeaderName, HeaderValue, Request};
use axum::response::IntoResponse;

use crate::caller::Caller;

mod rate;

use crate::error::{ApiError, Code};
use rate::{Check, Limiter, Verdict};

/// Admission settings.
#[derive(Debug, Clone)]
pub struct AdmissionSettings {
    /// Most requests waiting (past their first poll) before new ones are shed (0: no
    /// bound). Exempt routes and streams do not count.
    pub max_in_flight: usize,
    /// Per-tenant rate limit; `None` for none.
    pub rate: Option<RateLimit>,
    /// Deadline of an ordinary request.
    pub timeout: Duration,
    /// Deadline of an upload (the body arrives within it).
    pub upload_timeout: Duration,
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        Self {
            max_in_flight: 512,
            rate: None,
            timeout: Duration::from_secs(30),
            upload_timeout: Duration::from_secs(300),
        }
    }
}

/// A tenant's sustained rate and burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests per second, sustained.
    pub per_second: u32,
    /// Requests that may arrive at once after a quiet spell.
    pub burst: u32,
}

/// How a route is admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Health, metrics, operator endpoints: never shed, never rate limited.
    Exempt,
    /// Long-lived streams (SSE, file downloads): rate limited, but not counted in flight
    /// (a watcher holds its stream open by design) and without a deadline.
    Stream,
    /// Uploads: the long deadline.
    Upload,
    /// Everything else.
    Ordinary,
}

fn class(route: &str, method: &axum::http::Method) -> Class {
    match route {
        "/healthz" | "/readyz" | "/metrics" | "/openapi.json" | "/docs" => Class::Exempt,
        r if r.starts_with("/v1/performance/") || r.starts_with("/dashboard") => Class::Exempt,
        "/v1/jobs/{id}/events" | "/v1/documents/{id}/file" => Class::Stream,
        "/v1/documents" if method == axum::http::Method::POST => Class::Upload,
        _ => Class::Ordinary,
    }
}

/// The admission state shared by every request.
pub struct Admission {
    settings: AdmissionSettings,
    /// Leaked once per server (eight bytes), so a request that goes pending can count
    /// itself without cloning an `Arc`: on two cores every shared write per request is a
    /// cache line bouncing between them.
    in_flight: &'static AtomicUsize,
    limiter: Option<Arc<Limiter>>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("settings", &self.settings)
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish()
    }
}

impl Admission {
    /// Admission by `settings`; rate limits are shared through `cache`'s Redis when it has
    /// one.
    pub fn new(settings: AdmissionSettings, cache: Option<strata_cache::Cache>) -> Self {
        Self {
            limiter: settings.rate.map(|r| Arc::new(Limiter::new(r, cache))),
            settings,
            in_flight: Box::leak(Box::new(AtomicUsize::new(0))),
        }
    }

    /// Whether rate limits are shared by every instance through Redis.
    pub fn shares_rate_limits(&self) -> bool {
        self.limiter.as_ref().is_some_and(|l| l.is_shared())
    }

    /// Requests in flight now (exempt routes not counted).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The layer admitting requests by this state.
    pub fn layer(self: &Arc<Self>) -> AdmissionLayer {
        AdmissionLayer(self.clone())
    }
}

/// See the module doc.
#[derive(Debug, Clone)]
pub struct AdmissionLayer(Arc<Admission>);

impl<S> tower::Layer<S> for AdmissionLayer {
    type Service = AdmissionService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AdmissionService {
            inner,
            admission: self.0.clone(),
        }
    }
}

/// The service of [`AdmissionLayer`].
#[derive(Debug, Clone)]
pub struct AdmissionService<S> {
    inner: S,
    admission: Arc<Admission>,
}

/// Releases an in-flight slot when the response is done (or dropped).
#[derive(Debug)]
struct Slot(&'static AtomicUsize);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

impl<S, B> tower::Service<Request<B>> for AdmissionService<S>
where
    S: tower::Service<Request<B>, Response = axum::response::Response>,
    S::Future: Send + 'static,
{
    type Response = axum::response::Response;
    type Error = S::Error;
    type Future = Admitted<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let a = &self.admission;
        let class = req
            .extensions()
            .get::<MatchedPath>()
            .map_or(Class::Ordinary, |p| class(p.as_str(), req.method()));
        if class == Class::Exempt {
            return Admitted(State::Pass(Box::pin(self.inner.call(req))));
        }
        // Only a request that waits counts as in flight (it takes its slot when its first poll
        // returns pending): one that is answered in the poll that starts it, as a cache hit
        // is, costs the bound one read of the counter and no write.
        let counter = (class != Class::Stream).then_some(a.in_flight);
        let max = a.settings.max_in_flight;
        if max > 0 && counter.is_some_and(|c| c.load(Ordering::Relaxed) >= max) {
            return Admitted(State::Refused(Some(refusal(
                Code::Overloaded,
                "the server is at capacity; retry shortly",
                Duration::from_secs(1),
            ))));
        }
        let mut rate = None;
        let mut gate = None;
        if let (Some(limiter), Some(caller)) = (&a.limiter, req.extensions().get::<Caller>()) {
            match limiter.check(&caller.tenant) {
                Check::Now(Verdict::Allow {
                    remaining,
                    reset_secs,
                }) => rate = Some((limiter.policy.clone(), remaining, reset_secs)),
                Check::Now(Verdict::Deny { retry_after }) => {
                    return Admitted(State::Refused(Some(rate_limited(limiter, retry_after))));
                }
                Check::Ask(cell) => {
                    let asked = limiter.clone().ask(caller.tenant.clone(), cell);
                    gate = Some((limiter.clone(), Box::pin(asked) as Gate));
                }
            }
        }
        let deadline = match class {
            Class::Stream => None,
            Class::Upload => Some(a.settings.upload_timeout),
            _ => Some(a.settings.timeout),
        };
        Admitted(State::Run {
            gate,
            inner: Box::pin(self.inner.call(req)),
            deadline,
            sleep: None,
            rate,
            counter,
            slot: None,
        })
    }
}

thread_local! {
    /// The last `RateLimit` value this thread made. A tenant under its limit is answered
    /// the same remaining (the whole burst less one) and reset on every request, so the value
    /// is made once and cloned, not formatted, allocated and validated per answer.
    static LAST_RATE: std::cell::RefCell<Option<(u64, u64, HeaderValue)>> =
        const { std::cell::RefCell::new(None) };
}

/// `RateLimit: "tenant";r=<remaining>;t=<reset seconds>` (it is on every rate-limited
/// answer, cache hits included).
fn rate_header(remaining: u64, reset: u64) -> HeaderValue {
    LAST_RATE.with_borrow_mut(|last| match last {
        Some((r, t, value)) if *r == remaining && *t == reset => value.clone(),
        _ => {
            let value = format_rate_header(remaining, reset);
            *last = Some((remaining, reset, value.clone()));
            value
        }
    })
}

/// [`rate_header`]'s value, written without the formatter.
fn format_rate_header(remaining: u64, reset: u64) -> HeaderValue {
    let (mut r, mut t) = (itoa::Buffer::new(), itoa::Buffer::new());
    let (r, t) = (r.format(remaining), t.format(reset));
    let mut v = Vec::with_capacity(16 + r.len() + t.len());
    v.extend_from_slice(b"\"tenant\";r=");
    v.extend_from_slice(r.as_bytes());
    v.extend_from_slice(b";t=");
    v.extend_from_slice(t.as_bytes());
    // Quotes, letters, digits, `;` and `=`: always a valid header value.
    HeaderValue::from_maybe_shared(bytes::Bytes::from(v))
        .unwrap_or_else(|_| HeaderValue::from_static("\"tenant\""))
}

/// A shared rate check in progress.
type Gate = Pin<Box<dyn Future<Output = Verdict> + Send>>;

/// 429 `rate_limited` with `Retry-After` and the rate headers.
fn rate_limited(limiter: &Limiter, retry_after: Duration) -> axum::response::Response {
    let mut resp = refusal(
        Code::RateLimited,
        &format!(
            "over {} requests per second for this tenant",
            limiter.limit.per_second
        ),
        retry_after,
    );
    let h = resp.headers_mut();
    h.insert(RATELIMIT_POLICY, limiter.policy.clone());
    h.insert(RATELIMIT, rate_header(0, retry_after.as_secs().max(1)));
    resp
}

/// A 429/503 problem with `Retry-After` (whole seconds, at least one).
fn refusal(code: Code, detail: &str, retry_after: Duration) -> axum::response::Response {
    let secs = u32::try_from(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0))
        .unwrap_or(u32::MAX)
        .max(1);
    ApiError::new(code, detail)
        .retry_after(secs)
        .into_response()
}

/// A handler's boxed response future.
type Handler<E> = Pin<Box<dyn Future<Output = Result<axum::response::Response, E>> + Send>>;

/// The response future of [`AdmissionService`].
pub struct Admitted<E>(State<E>);

enum State<E> {
    /// Exempt: the inner future as it is.
    Pass(Handler<E>),
    /// Answered without running the handler.
    Refused(Option<axum::response::Response>),
    /// Admitted: the handler, its deadline, the rate headers to add, and the in-flight slot.
    Run {
        /// A shared rate check to pass before the handler runs.
        gate: Option<(Arc<Limiter>, Gate)>,
        /// The handler's future.
        inner: Handler<E>,
        /// How long it may take (none for streams).
        deadline: Option<Duration>,
        /// The deadline's timer, armed when the request first waits (a request answered in
        /// its first poll never touches the timer wheel).
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
        /// `RateLimit-Policy`, remaining, reset seconds.
        rate: Option<(HeaderValue, u64, u64)>,
        /// The in-flight count it joins when it first waits (none for streams).
        counter: Option<&'static AtomicUsize>,
        /// Its place in that count, held until the response is produced.
        slot: Option<Slot>,
    },
}

impl<E> Future for Admitted<E> {
    type Output = Result<axum::response::Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            State::Pass(f) => f.as_mut().poll(cx),
            State::Refused(resp) => Poll::Ready(Ok(resp.take().unwrap_or_else(|| {
                ApiError::new(Code::Internal, "polled after completion").into_response()
            }))),
            State::Run {
                gate,
                inner,
                deadline,
                sleep,
                rate,
                counter,
                slot,
            } => {
                if let Some((limiter, check)) = gate {
                    match check.as_mut().poll(cx) {
                        Poll::Pending => {
                            waits(counter, slot, deadline, sleep);
                            return poll_deadline(sleep, cx);
                        }
                        Poll::Ready(Verdict::Deny { retry_after }) => {
                            return Poll::Ready(Ok(rate_limited(limiter, retry_after)));
                        }
                        Poll::Ready(Verdict::Allow {
                            remaining,
                            reset_secs,
                        }) => {
                            *rate = Some((limiter.policy.clone(), remaining, reset_secs));
                            *gate = None;
                        }
                    }
                }
                if let Poll::Ready(out) = inner.as_mut().poll(cx) {
                    let mut resp = out?;
                    if let Some((policy, remaining, reset)) = rate.take() {
                        let h = resp.headers_mut();
                        h.insert(RATELIMIT_POLICY, policy);
                        h.insert(RATELIMIT, rate_header(remaining, reset));
                    }
                    return Poll::Ready(Ok(resp));
                }
                waits(counter, slot, deadline, sleep);
                poll_deadline(sleep, cx)
            }
        }
    }
}

/// A request that has to wait: it takes its in-flight slot and arms its deadline, once.
fn waits(
    counter: &Option<&'static AtomicUsize>,
    slot: &mut Option<Slot>,
    deadline: &Option<Duration>,
    sleep: &mut Option<Pin<Box<tokio::time::Sleep>>>,
) {
    if slot.is_none()
        && let Some(c) = counter
    {
        c.fetch_add(1, Ordering::Relaxed);
        *slot = Some(Slot(c));
    }
    if sleep.is_none()
        && let Some(d) = deadline
    {
        *sleep = Some(Box::pin(tokio::time::sleep(*d)));
    }
}

/// Pending, or the 504 when the deadline has passed.
fn poll_deadline<E>(
    sleep: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    cx: &mut Context<'_>,
) -> Poll<Result<axum::response::Response, E>> {
    let expired = sleep
        .as_mut()
        .is_some_and(|s| s.as_mut().poll(cx).is_ready());
    if !expired {
        return Poll::Pending;
    }
    Poll::Ready(Ok(ApiError::new(
        Code::Timeout,
        "the request took longer than its deadline and was abandoned",
    )
    .into_response()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_headers_are_reused_only_for_the_same_numbers() {
        let text = |v: HeaderValue| v.to_str().unwrap().to_owned();
        assert_eq!(text(rate_header(99, 1)), "\"tenant\";r=99;t=1");
        assert_eq!(text(rate_header(99, 1)), "\"tenant\";r=99;t=1");
        assert_eq!(text(rate_header(98, 1)), "\"tenant\";r=98;t=1");
        assert_eq!(text(rate_header(98, 2)), "\"tenant\";r=98;t=2");
        assert_eq!(text(rate_header(0, 30)), "\"tenant\";r=0;t=30");
    }
}
