//! strata's metrics: one `prometheus-client` registry, built once with the app's state and
//! read by `GET /metrics` (and, later, the dashboard).
//!
//! Two kinds of metric live in it:
//! - **recorded** metrics, owned by structs that keep them in atomic cells and encode them
//!   as registered collectors: [`HttpMetrics`], recorded for every response by
//!   [`HttpMetricsLayer`] with one read-locked route lookup and two atomic adds
//!   (prometheus-client's own `Family` and `Histogram` take two map read locks and a write
//!   lock, and allocate, per response: too much for a cache hit);
//! - **observed** metrics, read at scrape time from the snapshots the components already
//!   keep for their JSON endpoints (the cache's counters, the pool, the local model, the
//!   warmer): [`Snapshots`], a registered collector. They keep the names they had before the
//!   registry (`strata_cache_*`, `strata_db_pool_*`, `strata_model_*`).
//!
//! Must not import: the store or SQL; nothing here is per tenant (no label names one).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;
use axum::http::{Method, Request, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use strata_engine::Engine;
use strata_engine::store::QueueDepth;

use crate::warm::Warmer;

/// Latency buckets, in seconds: a cache hit answers in 50-300 µs, an uncached search in
/// 5-20 ms, an upload or a database optimisation in seconds. Three buckets a decade from
/// 100 µs to 10 s (1-2.5-5), then 30 s for the slowest writes: 17 buckets (and +Inf), fine
/// enough to read a p99 within a factor of 2.5 wherever it falls.
pub const LATENCY_BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// The bucket bounds in nanoseconds, for comparing an elapsed time without floats.
const BUCKET_NANOS: [u64; 17] = {
    let mut out = [0; 17];
    let mut i = 0;
    while i < 17 {
        out[i] = (LATENCY_BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    out
};

/// The methods strata serves, in label order; anything else is `other`.
const METHODS: [&str; 8] = [
    "GET", "POST", "PATCH", "PUT", "DELETE", "HEAD", "OPTIONS", "other",
];

/// Status codes a series can carry: 100-599, the range `http::StatusCode` allows.
const STATUSES: usize = 500;

/// One series: the latency buckets (whose sum is the request count) and the latency sum,
/// updated with relaxed atomic adds (a scrape reads them one by one, so a sum may include a
/// request its buckets do not yet).
struct Cells {
    sum_nanos: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
}

impl Cells {
    fn new() -> Self {
        Self {
            sum_nanos: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn observe(&self, nanos: u64) {
        let bucket = BUCKET_NANOS
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// The series of one matched route: one table of status codes per method, each allocated
/// the first time that method answers on the route, each cell the first time that status
/// does. Reading a cell is an atomic load: recording takes no lock.
struct RouteSeries {
    by_method: [OnceLock<StatusCells>; METHODS.len()],
}

/// One method's cells on a route, by status code - 100.
type StatusCells = Box<[OnceLock<Box<Cells>>]>;

impl RouteSeries {
    fn new() -> Self {
        Self {
            by_method: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    fn cells(&self, method: usize, status: u16) -> &Cells {
        let statuses =
            self.by_method[method].get_or_init(|| (0..STATUSES).map(|_| OnceLock::new()).collect());
        let slot = usize::from(status).clamp(100, 100 + STATUSES - 1) - 100;
        statuses[slot].get_or_init(|| Box::new(Cells::new()))
    }
}

/// What every HTTP response adds: `strata_http_requests_total` and
/// `strata_http_request_duration_seconds`, by matched route, method and status.
///
/// The route is the pattern axum matched (`/v1/documents/{id}`, never the raw path, so ids
/// do not multiply series; `unmatched` for the 404 fallback); the method comes from a fixed
/// set, so no client can mint series. Recording is one read-locked map lookup of the route
/// (when the request arrives) and two relaxed atomic adds (when it is answered): it sits
/// on every cache hit's path, so it must cost next to nothing.
pub struct HttpMetrics {
    routes: RwLock<HashMap<Box<str>, Arc<RouteSeries>>>,
    /// Responses slower than this many nanoseconds are logged at warn (`u64::MAX`: none).
    slow_nanos: AtomicU64,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            routes: RwLock::default(),
            slow_nanos: AtomicU64::new(u64::MAX),
        }
    }
}

/// HELP of `strata_http_requests_total`.
const REQUESTS_HELP: &str = "HTTP requests answered, by matched route, method and status";
/// HELP of `strata_http_request_duration_seconds`.
const DURATION_HELP: &str =
    "Seconds from a request's arrival to its response, by matched route, method and status";

impl HttpMetrics {
    /// Logs every response slower than `slow` at warn (`None`: none).
    pub fn log_slower_than(&self, slow: Option<std::time::Duration>) {
        let nanos = slow.map_or(u64::MAX, |d| {
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
        });
        self.slow_nanos.store(nanos, Ordering::Relaxed);
    }

    fn series_of(&self, pattern: &str) -> Arc<RouteSeries> {
        let known = self
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(pattern)
            .cloned();
        known.unwrap_or_else(|| {
            self.routes
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(pattern.into())
                .or_insert_with(|| Arc::new(RouteSeries::new()))
                .clone()
        })
    }

    /// Every series with its labels, sorted so the exposition is stable.
    fn series(&self) -> Vec<(HttpLabels, usize, u16, Arc<RouteSeries>)> {
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        for (pattern, series) in routes.iter() {
            for (m, statuses) in series.by_method.iter().enumerate() {
                let Some(statuses) = statuses.get() else {
                    continue;
                };
                for (i, cell) in statuses.iter().enumerate() {
                    if cell.get().is_some() {
                        let status = (100 + i) as u16;
                        let labels = HttpLabels {
                            route: pattern.to_string(),
                            method: METHODS[m],
                            status,
                        };
                        out.push((labels, m, status, series.clone()));
                    }
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

impl HttpMetrics {
    /// Each route's totals so far, summed over methods and statuses (for the sliding
    /// windows of `crate::summary`).
    pub(crate) fn totals(&self) -> HashMap<Box<str>, RouteTotals> {
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        let mut out = HashMap::with_capacity(routes.len());
        for (pattern, series) in routes.iter() {
            let mut t = RouteTotals::default();
            for statuses in series.by_method.iter().filter_map(OnceLock::get) {
                for (i, cell) in statuses.iter().enumerate() {
                    let Some(c) = cell.get() else { continue };
                    let mut n = 0;
                    for (b, v) in t.buckets.iter_mut().zip(&c.buckets) {
                        let v = v.load(Ordering::Relaxed);
                        *b += v;
                        n += v;
                    }
                    t.sum_nanos += c.sum_nanos.load(Ordering::Relaxed);
                    match 100 + i {
                        500.. => t.server_errors += n,
                        400..=499 => t.client_errors += n,
                        _ => {}
                    }
                }
            }
            out.insert(pattern.clone(), t);
        }
        out
    }
}

/// One route's requests so far: latency buckets (not cumulative; the last is past 30 s),
/// their latency sum, and how many were answered 5xx and 4xx.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RouteTotals {
    pub buckets: [u64; LATENCY_BUCKETS.len() + 1],
    pub sum_nanos: u64,
    pub server_errors: u64,
    pub client_errors: u64,
}

impl std::fmt::Debug for HttpMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpMetrics")
    }
}

/// Labels of the HTTP metrics.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: &'static str,
    status: u16,
}

impl Collector for HttpMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::MetricType;
        let series = self.series();
        let read = |s: &RouteSeries, method, status| {
            let c = s.cells(method, status);
            let counts: Vec<u64> = c
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect();
            // The encoder adds the +Inf bucket from the count: the last cell is in the count only.
            let count = counts.iter().sum::<u64>();
            let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS.iter().copied().zip(counts).collect();
            let sum = c.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            (count, sum, buckets)
        };
        let mut family = encoder.encode_descriptor(
            "strata_http_requests",
            REQUESTS_HELP,
            None,
            MetricType::Counter,
        )?;
        for (labels, method, status, s) in &series {
            let (count, _, _) = read(s, *method, *status);
            ConstCounter::new(count).encode(family.encode_family(labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "strata_http_request_duration_seconds",
            DURATION_HELP,
            None,
            MetricType::Histogram,
        )?;
        for (labels, method, status, s) in &series {
            let (count, sum, buckets) = read(s, *method, *status);
            family
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }
}

/// The registry and the metrics recorded into it. Built once; cheap to share.
pub struct Metrics {
    registry: Registry,
    /// HTTP request counts and latencies.
    pub http: Arc<HttpMetrics>,
    /// The job queue's depth as last read (see [`Metrics::set_queue_depth`]).
    queue: QueueCell,
}

/// The job queue's depth as last read from the store; `None` when the read failed, so a
/// scrape shows no family rather than a stale one.
type QueueCell = Arc<Mutex<Option<Vec<QueueDepth>>>>;

impl Metrics {
    /// A registry with the HTTP metrics and, when given, the observed ones.
    pub fn new(observed: Option<Snapshots>) -> Self {
        let mut registry = Registry::default();
        let http = Arc::new(HttpMetrics::default());
        registry.register_collector(Box::new(Shared(http.clone())));
        let mut queue = QueueCell::default();
        if let Some(s) = observed {
            queue = s.queue.clone();
            registry.register_collector(Box::new(s));
        }
        Self {
            registry,
            http,
            queue,
        }
    }

    /// Records the queue's depth for the next encoding (the store is read asynchronously,
    /// before encoding; a collector cannot await).
    pub fn set_queue_depth(&self, depth: Option<Vec<QueueDepth>>) {
        *self.queue.lock().unwrap_or_else(PoisonError::into_inner) = depth;
    }

    /// The Prometheus text exposition (version 0.0.4) of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        out
    }

    /// The layer that records [`HttpMetrics`] for every response.
    pub fn layer(&self) -> HttpMetricsLayer {
        HttpMetricsLayer {
            metrics: self.http.clone(),
        }
    }
}

/// A registered collector sharing the recorded metrics with the layer.
#[derive(Debug)]
struct Shared(Arc<HttpMetrics>);

impl Collector for Shared {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
}

/// Records a response's route, method, status and latency into [`HttpMetrics`].
#[derive(Clone)]
pub struct HttpMetricsLayer {
    metrics: Arc<HttpMetrics>,
}

impl<S> tower::Layer<S> for HttpMetricsLayer {
    type Service = HttpMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        HttpMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service of [`HttpMetricsLayer`].
#[derive(Clone)]
pub struct HttpMetricsService<S> {
    inner: S,
    metrics: Arc<HttpMetrics>,
}

impl<S, B, ResBody> tower::Service<Request<B>> for HttpMetricsService<S>
where
    S: tower::Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Recorded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let pattern = req
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", MatchedPath::as_str);
        let route = self.metrics.series_of(pattern);
        let method = method_index(req.method());
        Recorded {
            inner: self.inner.call(req),
            started: Instant::now(),
            series: Some((route, method)),
            slow_nanos: self.metrics.slow_nanos.load(Ordering::Relaxed),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`HttpMetricsService`]: records when the response is ready.
    pub struct Recorded<F> {
        #[pin]
        inner: F,
        started: Instant,
        series: Option<(Arc<RouteSeries>, usize)>,
        slow_nanos: u64,
    }
}

impl<F, ResBody, E> std::future::Future for Recorded<F>
where
    F: std::future::Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        if let (Ok(resp), Some((route, method))) = (&out, this.series.take()) {
            let nanos = u64::try_from(this.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            route.cells(method, resp.status().as_u16()).observe(nanos);
            if nanos > *this.slow_nanos {
                // The log line carries the route, method and request id (logging.rs).
                tracing::warn!(
                    status = resp.status().as_u16(),
                    elapsed_ms = nanos as f64 / 1e6,
                    "slow request"
                );
            }
        }
        Poll::Ready(out)
    }
}

/// A method's index in [`METHODS`], so a client cannot mint series.
fn method_index(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::POST => 1,
        Method::PATCH => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// The metrics observed at scrape time from the components' own snapshots.
#[derive(Clone)]
pub struct Snapshots {
    /// The engine: cache, pool and model statistics.
    pub engine: Engine,
    /// Cache warming.
    pub warmer: Arc<Warmer>,
    /// The LLM gateway: its counters, semantic tier and the usage it metered.
    pub gateway: strata_gateway::Gateway,
    /// The job queue's depth, read from the store before each encoding.
    pub queue: QueueCell,
}

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Snapshots")
    }
}

/// Writes families of observed values.
struct Families<'a, 'b>(&'a mut DescriptorEncoder<'b>);

type Fmt = Result<(), std::fmt::Error>;

impl Families<'_, '_> {
    /// One family of samples (a counter's `name` without `_total`, which the encoder adds).
    fn family(
        &mut self,
        kind: Kind,
        name: &str,
        help: &str,
        samples: &[(&[(&str, &str)], f64)],
    ) -> Fmt {
        use prometheus_client::metrics::MetricType;
        let metric_type = match kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
        };
        let mut family = self.0.encode_descriptor(name, help, None, metric_type)?;
        for (labels, v) in samples {
            let sample = family.encode_family(labels)?;
            match (kind, whole(*v)) {
                (Kind::Counter, Some(n)) => ConstCounter::new(n).encode(sample)?,
                (Kind::Counter, None) => ConstCounter::new(*v).encode(sample)?,
                (Kind::Gauge, Some(n)) => ConstGauge::new(n).encode(sample)?,
                (Kind::Gauge, None) => ConstGauge::new(*v).encode(sample)?,
            }
        }
        Ok(())
    }
}

/// A count held as `f64` printed as the integer it is (`1`, not `1.0`).
fn whole(v: f64) -> Option<u64> {
    (v.fract() == 0.0 && (0.0..9.0e15).contains(&v)).then_some(v as u64)
}

impl Collector for Snapshots {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut f = Families(&mut encoder);
        crate::routes::metrics::observed(self, &mut |kind, name, help, samples| {
            f.family(kind, name, help, samples)
        })?;
        crate::routes::metrics::observed_histograms(self, &mut |h| f.histogram(h))
    }
}

/// One observed histogram (a single series).
pub struct Observed<'a> {
    /// Its name (without `_bucket`, `_sum`, `_count`).
    pub name: &'a str,
    /// Its HELP.
    pub help: &'a str,
    /// Its labels.
    pub labels: &'a [(&'a str, &'a str)],
    /// Upper bounds of the finite buckets.
    pub bounds: &'a [f64],
    /// Observations per bucket (not cumulative), one more than `bounds` (the last is +Inf).
    pub counts: &'a [u64],
    /// The sum of the observed values.
    pub sum: f64,
}

impl Families<'_, '_> {
    /// One histogram family with one series.
    fn histogram(&mut self, h: Observed<'_>) -> Fmt {
        use prometheus_client::metrics::MetricType;
        let mut family = self
            .0
            .encode_descriptor(h.name, h.help, None, MetricType::Histogram)?;
        // The encoder accumulates the buckets and adds +Inf from the count.
        let count = h.counts.iter().sum::<u64>();
        let buckets: Vec<(f64, u64)> = h
            .bounds
            .iter()
            .copied()
            .zip(h.counts.iter().copied())
            .collect();
        family
            .encode_family(&h.labels)?
            .encode_histogram::<NoLabelSet>(h.sum, count, &buckets, None)
    }
}

/// Whether an observed family counts up or goes both ways.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Only grows (the encoder appends `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(http: Arc<HttpMetrics>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Shared(http)));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn series_count_sum_and_cumulative_buckets() {
        let http = Arc::new(HttpMetrics::default());
        let route = http.series_of("/v1/search");
        route.cells(1, 200).observe(200_000); // 0.2 ms
        route.cells(1, 200).observe(2_000_000_000); // 2 s
        route.cells(1, 429).observe(50_000);
        http.series_of("unmatched").cells(7, 404).observe(1);
        let text = exposition(http);
        let ok = r#"route="/v1/search",method="POST",status="200""#;
        for line in [
            format!("strata_http_requests_total{{{ok}}} 2"),
            format!("strata_http_request_duration_seconds_count{{{ok}}} 2"),
            format!("strata_http_request_duration_seconds_sum{{{ok}}} 2.0002"),
            format!(r#"strata_http_request_duration_seconds_bucket{{{ok},le="0.0001"}} 0"#),
            format!(r#"strata_http_request_duration_seconds_bucket{{{ok},le="0.00025"}} 1"#),
            format!(r#"strata_http_request_duration_seconds_bucket{{{ok},le="1"}} 1"#),
            format!(r#"strata_http_request_duration_seconds_bucket{{{ok},le="2.5"}} 2"#),
            format!(r#"strata_http_request_duration_seconds_bucket{{{ok},le="+Inf"}} 2"#),
            r#"strata_http_requests_total{route="/v1/search",method="POST",status="429"} 1"#
                .to_owned(),
            r#"strata_http_requests_total{route="unmatched",method="other",status="404"} 1"#
                .to_owned(),
        ] {
            assert!(text.contains(&line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains(r#"method="GET""#), "{text}");
        assert!(!text.contains("e+308"), "{text}");
    }
}
