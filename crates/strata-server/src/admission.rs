//! Admission control: what a request must pass before a handler runs, and how long it may
//! take there.
//!
//! - **Load shedding**: a global bound on requests in flight. One over it is answered 503
//!   `overloaded` with `Retry-After` at once, instead of queueing until every caller times
//!   out. Health, metrics and operator routes are never shed, so an overloaded server can
//!   still be watched and mended.
//! - **Rate limits** per tenant: GCRA (a token bucket kept as one timestamp per tenant,
//!   updated by compare-and-swap), answering 429 `rate_limited` with `Retry-After`, and the
//!   IETF httpapi draft's `RateLimit-Policy` and `RateLimit` headers on every answer to a
//!   limited tenant. Local to the process.
//! - **Timeouts** per route class: a request past its deadline is answered 504 `timeout`
//!   (its handler is dropped; writes already acknowledged by the store stay).
//!
//! The layer runs after routing and after [`crate::caller::CallerLayer`], so it sees the
//! matched route and the caller. Owns: the in-flight count, the tenants' rate state, the
//! deadlines. Must not: reach the engine or the store.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::MatchedPath;
use axum::http::{HeaderName, HeaderValue, Request};
use axum::response::IntoResponse;
use strata_engine::TenantId;

use crate::caller::Caller;
use crate::error::{ApiError, Code};

/// Admission settings.
#[derive(Debug, Clone)]
pub struct AdmissionSettings {
    /// Most requests in flight before new ones are shed (0: no bound). Exempt routes do not
    /// count.
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
        "/healthz" | "/readyz" | "/metrics" => Class::Exempt,
        r if r.starts_with("/v1/performance/") => Class::Exempt,
        "/v1/jobs/{id}/events" | "/v1/documents/{id}/file" => Class::Stream,
        "/v1/documents" if method == axum::http::Method::POST => Class::Upload,
        _ => Class::Ordinary,
    }
}

/// Per-tenant GCRA state: the theoretical arrival time of the next request, in nanoseconds
/// since `epoch`.
struct Limiter {
    limit: RateLimit,
    interval: u64,
    window: u64,
    epoch: Instant,
    tenants: RwLock<HashMap<TenantId, Arc<AtomicU64>>>,
    policy: HeaderValue,
}

/// A rate check's outcome.
enum Verdict {
    /// Admitted, with this many requests left in the burst.
    Allow { remaining: u64, reset_secs: u64 },
    /// Refused; retry after this long.
    Deny { retry_after: Duration },
}

/// Tenants kept before idle ones are forgotten (an idle tenant's state equals a new one's).
const MAX_TENANTS: usize = 100_000;

impl Limiter {
    fn new(limit: RateLimit) -> Self {
        let per_second = u64::from(limit.per_second.max(1));
        let interval = 1_000_000_000 / per_second;
        let burst = u64::from(limit.burst.max(1));
        Self {
            limit,
            interval,
            window: interval * burst,
            epoch: Instant::now(),
            tenants: RwLock::new(HashMap::new()),
            policy: HeaderValue::try_from(format!(
                "\"tenant\";q={};w=1;burst={}",
                limit.per_second.max(1),
                burst
            ))
            .unwrap_or_else(|_| HeaderValue::from_static("\"tenant\"")),
        }
    }

    fn cell(&self, tenant: &TenantId) -> Arc<AtomicU64> {
        let known = self
            .tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .cloned();
        if let Some(cell) = known {
            return cell;
        }
        let mut tenants = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
        if tenants.len() >= MAX_TENANTS {
            let now = self.now();
            tenants.retain(|_, tat| tat.load(Ordering::Relaxed) > now);
        }
        tenants
            .entry(tenant.clone())
            .or_insert_with(|| Arc::new(AtomicU64::new(0)))
            .clone()
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn check(&self, tenant: &TenantId) -> Verdict {
        let cell = self.cell(tenant);
        let now = self.now();
        let mut tat = cell.load(Ordering::Acquire);
        loop {
            let next = tat.max(now) + self.interval;
            let ahead = next - now;
            if ahead > self.window {
                return Verdict::Deny {
                    retry_after: Duration::from_nanos(ahead - self.window),
                };
            }
            match cell.compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    return Verdict::Allow {
                        remaining: (self.window - ahead) / self.interval,
                        reset_secs: ahead.div_ceil(1_000_000_000),
                    };
                }
                Err(actual) => tat = actual,
            }
        }
    }
}

/// The admission state shared by every request.
pub struct Admission {
    settings: AdmissionSettings,
    in_flight: AtomicUsize,
    limiter: Option<Limiter>,
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
    /// Admission by `settings`.
    pub fn new(settings: AdmissionSettings) -> Self {
        Self {
            limiter: settings.rate.map(Limiter::new),
            settings,
            in_flight: AtomicUsize::new(0),
        }
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
pub struct Slot(Arc<Admission>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
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
            return Admitted::Pass(Box::pin(self.inner.call(req)));
        }
        let slot = if class == Class::Stream {
            None
        } else {
            let max = a.settings.max_in_flight;
            let before = a.in_flight.fetch_add(1, Ordering::Relaxed);
            let slot = Slot(a.clone());
            if max > 0 && before >= max {
                return Admitted::Refused(Some(refusal(
                    Code::Overloaded,
                    "the server is at capacity; retry shortly",
                    Duration::from_secs(1),
                )));
            }
            Some(slot)
        };
        let mut rate = None;
        if let (Some(limiter), Some(caller)) = (&a.limiter, req.extensions().get::<Caller>()) {
            match limiter.check(&caller.tenant) {
                Verdict::Allow {
                    remaining,
                    reset_secs,
                } => rate = Some((limiter.policy.clone(), remaining, reset_secs)),
                Verdict::Deny { retry_after } => {
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
                    if let Ok(v) = HeaderValue::try_from(format!(
                        "\"tenant\";r=0;t={}",
                        retry_after.as_secs().max(1)
                    )) {
                        h.insert(RATELIMIT, v);
                    }
                    return Admitted::Refused(Some(resp));
                }
            }
        }
        let deadline = match class {
            Class::Stream => None,
            Class::Upload => Some(a.settings.upload_timeout),
            _ => Some(a.settings.timeout),
        };
        Admitted::Run {
            inner: Box::pin(self.inner.call(req)),
            sleep: deadline.map(|d| Box::pin(tokio::time::sleep(d))),
            rate,
            _slot: slot,
        }
    }
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
pub enum Admitted<E> {
    /// Exempt: the inner future as it is.
    Pass(Handler<E>),
    /// Answered without running the handler.
    Refused(Option<axum::response::Response>),
    /// Admitted: the handler, its deadline, the rate headers to add, and the in-flight slot.
    Run {
        /// The handler's future.
        inner: Handler<E>,
        /// The deadline.
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
        /// `RateLimit-Policy`, remaining, reset seconds.
        rate: Option<(HeaderValue, u64, u64)>,
        /// Held until the response is produced (none for streams).
        _slot: Option<Slot>,
    },
}

impl<E> Future for Admitted<E> {
    type Output = Result<axum::response::Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Admitted::Pass(f) => f.as_mut().poll(cx),
            Admitted::Refused(resp) => Poll::Ready(Ok(resp.take().unwrap_or_else(|| {
                ApiError::new(Code::Internal, "polled after completion").into_response()
            }))),
            Admitted::Run {
                inner, sleep, rate, ..
            } => {
                if let Poll::Ready(out) = inner.as_mut().poll(cx) {
                    let mut resp = out?;
                    if let Some((policy, remaining, reset)) = rate.take() {
                        let h = resp.headers_mut();
                        h.insert(RATELIMIT_POLICY, policy);
                        if let Ok(v) =
                            HeaderValue::try_from(format!("\"tenant\";r={remaining};t={reset}"))
                        {
                            h.insert(RATELIMIT, v);
                        }
                    }
                    return Poll::Ready(Ok(resp));
                }
                if let Some(s) = sleep
                    && s.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Ok(ApiError::new(
                        Code::Timeout,
                        "the request took longer than its deadline and was abandoned",
                    )
                    .into_response()));
                }
                Poll::Pending
            }
        }
    }
}
