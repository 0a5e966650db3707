//! strata's metrics: one `prometheus-client` registry, built once with the app's state and
//! read by `GET /metrics` (and, later, the dashboard).
//!
//! Two kinds of metric live in it:
//! - **recorded** metrics, owned by structs declared with [`metric_set!`], whose field doc
//!   comments are the HELP text: [`HttpMetrics`], recorded for every response by
//!   [`HttpMetricsLayer`];
//! - **observed** metrics, read at scrape time from the snapshots the components already
//!   keep for their JSON endpoints (the cache's counters, the pool, the local model, the
//!   warmer): [`Snapshots`], a registered collector. They keep the names they had before the
//!   registry (`strata_cache_*`, `strata_db_pool_*`, `strata_model_*`).
//!
//! Must not import: the store or SQL; nothing here is per tenant (no label names one).

use std::borrow::Cow;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;
use axum::http::{Method, Request, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use strata_engine::Engine;

use crate::warm::Warmer;

/// Declares a struct of metrics whose field doc comments are their HELP text, with a
/// `register` that creates each one and registers it once under `strata_{field}`.
macro_rules! metric_set {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[doc = $doc:literal])+ $field:ident : $ty:ty = $init:expr, )+
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $(#[doc = $doc])+ pub $field: $ty, )+
        }

        impl $name {
            /// Creates every metric and registers it under `strata_{field}` with its doc
            /// comment as HELP.
            pub fn register(registry: &mut Registry) -> Self {
                $(
                    let $field: $ty = $init;
                    registry.register(
                        concat!("strata_", stringify!($field)),
                        help(&[$($doc),+]),
                        $field.clone(),
                    );
                )+
                Self { $($field),+ }
            }
        }
    };
}

/// A doc comment's lines as one HELP line, without its final period (the registry adds
/// one).
fn help(lines: &[&str]) -> String {
    let text = lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ");
    text.strip_suffix('.').unwrap_or(&text).to_owned()
}

/// Labels of the HTTP metrics: the route pattern axum matched (`/v1/documents/{id}`, never
/// the raw path, so ids do not multiply series; `unmatched` for the 404 fallback), the
/// method, and the status code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HttpLabels {
    /// The matched route pattern.
    pub route: Cow<'static, str>,
    /// GET, POST, ... (`other` for methods strata does not serve).
    pub method: &'static str,
    /// The response's status code.
    pub status: u16,
}

/// Latency buckets, in seconds: a cache hit answers in 50-300 µs, an uncached search in
/// 5-20 ms, an upload or a database optimisation in seconds. Three buckets a decade from
/// 100 µs to 10 s (1-2.5-5), then 30 s for the slowest writes: 17 buckets, fine enough to
/// read a p99 within a factor of 2.5 wherever it falls.
pub const LATENCY_BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

metric_set! {
    /// What every HTTP response adds.
    pub struct HttpMetrics {
        /// HTTP requests answered, by matched route, method and status.
        http_requests: Family<HttpLabels, Counter> = Family::default(),
        /// Seconds from a request's arrival to its response, by matched route, method and
        /// status.
        http_request_duration_seconds: Family<HttpLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram),
    }
}

impl HttpMetrics {
    fn record(&self, labels: &HttpLabels, seconds: f64) {
        self.http_requests.get_or_create(labels).inc();
        self.http_request_duration_seconds
            .get_or_create(labels)
            .observe(seconds);
    }
}

/// The registry and the metrics recorded into it. Built once; cheap to share.
pub struct Metrics {
    registry: Registry,
    /// HTTP request counts and latencies.
    pub http: Arc<HttpMetrics>,
}

impl Metrics {
    /// A registry with the HTTP metrics and, when given, the observed ones.
    pub fn new(observed: Option<Snapshots>) -> Self {
        let mut registry = Registry::default();
        let http = Arc::new(HttpMetrics::register(&mut registry));
        if let Some(s) = observed {
            registry.register_collector(Box::new(s));
        }
        Self { registry, http }
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
        let route: Cow<'static, str> = match req.extensions().get::<MatchedPath>() {
            Some(p) => Cow::Owned(p.as_str().to_owned()),
            None => Cow::Borrowed("unmatched"),
        };
        let method = method_label(req.method());
        Recorded {
            inner: self.inner.call(req),
            started: Instant::now(),
            labels: Some((route, method)),
            metrics: self.metrics.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`HttpMetricsService`]: records when the response is ready.
    pub struct Recorded<F> {
        #[pin]
        inner: F,
        started: Instant,
        labels: Option<(Cow<'static, str>, &'static str)>,
        metrics: Arc<HttpMetrics>,
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
        if let (Ok(resp), Some((route, method))) = (&out, this.labels.take()) {
            let labels = HttpLabels {
                route,
                method,
                status: resp.status().as_u16(),
            };
            this.metrics
                .record(&labels, this.started.elapsed().as_secs_f64());
        }
        Poll::Ready(out)
    }
}

/// A method as a label value from a fixed set, so a client cannot mint series.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The metrics observed at scrape time from the components' own snapshots.
#[derive(Clone)]
pub struct Snapshots {
    /// The engine: cache, pool and model statistics.
    pub engine: Engine,
    /// Cache warming.
    pub warmer: Arc<Warmer>,
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
        })
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
