//! Sliding windows over the registry's counters, for `GET /v1/performance/metrics/summary`
//! and the dashboard: latency percentiles, throughput and error rates per route, cache hit
//! ratios per kind, the model's utilisation and job failures over the last 1, 5 and 15
//! minutes.
//!
//! Prometheus' way, without Prometheus: every counter here only grows, so a window is the
//! difference between now and a sample taken at the window's start, and a percentile is
//! read from the difference of two histograms (`histogram_quantile` over a `rate`). A
//! sample is taken every [`SAMPLE_EVERY`] (by [`run`], and by any summary that finds the
//! newest sample old); 15 minutes of them are kept (about 180 samples, a few hundred KB at
//! most). A summary costs one walk of the counters and three subtractions: cheap enough to
//! poll every second.
//!
//! Must not import: the store or SQL (the caller passes the queue's depth in).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::metrics::{LATENCY_BUCKETS, RouteTotals};

/// How often a sample is taken.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// The windows a summary reports, by name and length.
pub const WINDOWS: [(&str, Duration); 3] = [
    ("1m", Duration::from_secs(60)),
    ("5m", Duration::from_secs(300)),
    ("15m", Duration::from_secs(900)),
];

/// Every counter a window is computed from, at one instant.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counters {
    /// Per matched route.
    pub routes: HashMap<Box<str>, RouteTotals>,
    /// Per cache kind: (hits in L1 or L2, lookups).
    pub cache: HashMap<&'static str, (u64, u64)>,
    /// Seconds the local model spent in forward passes.
    pub model_busy_seconds: f64,
    /// Job attempts that failed (for good or to be retried), every kind.
    pub job_failures: u64,
    /// Job attempts that ended, every kind.
    pub job_attempts: u64,
}

/// A window's figures for one route (or for all of them).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RouteWindow {
    /// The matched route pattern (`all` for every route together).
    pub route: String,
    /// Requests answered in the window.
    pub requests: u64,
    /// Requests per second over the window.
    pub throughput_rps: f64,
    /// Share of requests answered 5xx (`null` with no requests).
    pub error_rate: Option<f64>,
    /// Share of requests answered 4xx (`null` with no requests).
    pub client_error_rate: Option<f64>,
    /// Latency percentiles, milliseconds, interpolated within histogram buckets (`null`
    /// with no requests).
    pub p50_ms: Option<f64>,
    /// 95th percentile.
    pub p95_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// Mean latency.
    pub mean_ms: Option<f64>,
}

/// One cache kind over a window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CacheWindow {
    /// The kind.
    pub kind: &'static str,
    /// Lookups in the window.
    pub lookups: u64,
    /// L1 or L2 hits / lookups (`null` with no lookups).
    pub hit_ratio: Option<f64>,
}

/// Everything a summary says about one window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Window {
    /// The window's name (`1m`, `5m`, `15m`).
    pub name: &'static str,
    /// Seconds the window covers: its length, or less while the process is younger.
    pub seconds: f64,
    /// Every route together.
    pub total: RouteWindow,
    /// Each route that answered in the window, busiest first.
    pub routes: Vec<RouteWindow>,
    /// Each cache kind looked up in the window.
    pub cache: Vec<CacheWindow>,
    /// Every kind together.
    pub cache_hit_ratio: Option<f64>,
    /// Share of the window the local model spent in forward passes (0..1).
    pub model_utilisation: f64,
    /// Job attempts that ended in the window, and those that failed.
    pub job_attempts: u64,
    /// Failed job attempts.
    pub job_failures: u64,
}

/// The samples (see the module doc).
#[derive(Debug, Default)]
pub struct Windows {
    samples: Mutex<VecDeque<(Instant, Counters)>>,
}

impl Windows {
    /// Keeps `now` as a sample when the newest is at least [`SAMPLE_EVERY`] old, and drops
    /// samples the longest window no longer needs.
    pub(crate) fn offer(&self, at: Instant, counters: &Counters) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let due = samples
            .back()
            .is_none_or(|(t, _)| at.saturating_duration_since(*t) >= SAMPLE_EVERY);
        if due {
            samples.push_back((at, counters.clone()));
        }
        let keep = WINDOWS[WINDOWS.len() - 1].1 + SAMPLE_EVERY;
        while samples.len() > 1
            && samples
                .get(1)
                .is_some_and(|(t, _)| at.saturating_duration_since(*t) >= keep)
        {
            samples.pop_front();
        }
    }

    /// Every window, from the samples and the counters `now`.
    pub(crate) fn windows(&self, at: Instant, now: &Counters) -> Vec<Window> {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        WINDOWS
            .iter()
            .map(|&(name, length)| {
                // The newest sample at least `length` old; else the oldest there is.
                let base = samples
                    .iter()
                    .rev()
                    .find(|(t, _)| at.saturating_duration_since(*t) >= length)
                    .or_else(|| samples.front());
                match base {
                    Some((t, then)) => window(name, at.saturating_duration_since(*t), then, now),
                    None => window(name, Duration::ZERO, now, now),
                }
            })
            .collect()
    }
}

/// The differences between two sets of counters `elapsed` apart.
fn window(name: &'static str, elapsed: Duration, then: &Counters, now: &Counters) -> Window {
    let seconds = elapsed.as_secs_f64();
    let mut all = RouteTotals::default();
    let mut routes = Vec::new();
    for (route, t) in &now.routes {
        let d = minus(t, then.routes.get(route));
        let requests: u64 = d.buckets.iter().sum();
        if requests == 0 {
            continue;
        }
        for (a, b) in all.buckets.iter_mut().zip(d.buckets) {
            *a += b;
        }
        all.sum_nanos += d.sum_nanos;
        all.server_errors += d.server_errors;
        all.client_errors += d.client_errors;
        routes.push(route_window(route, &d, seconds));
    }
    routes.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.route.cmp(&b.route)));
    let mut cache: Vec<CacheWindow> = now
        .cache
        .iter()
        .filter_map(|(kind, &(hits, lookups))| {
            let (h0, l0) = then.cache.get(kind).copied().unwrap_or_default();
            let (hits, lookups) = (hits.saturating_sub(h0), lookups.saturating_sub(l0));
            (lookups > 0).then(|| CacheWindow {
                kind,
                lookups,
                hit_ratio: ratio(hits, lookups),
            })
        })
        .collect();
    cache.sort_by(|a, b| a.kind.cmp(b.kind));
    let (hits, lookups) = cache.iter().fold((0.0, 0), |(h, l), c| {
        (
            h + c.hit_ratio.unwrap_or(0.0) * c.lookups as f64,
            l + c.lookups,
        )
    });
    Window {
        name,
        seconds,
        total: route_window("all", &all, seconds),
        routes,
        cache_hit_ratio: (lookups > 0).then(|| hits / lookups as f64),
        cache,
        model_utilisation: if seconds > 0.0 {
            ((now.model_busy_seconds - then.model_busy_seconds) / seconds).clamp(0.0, 1.0)
        } else {
            0.0
        },
        job_attempts: now.job_attempts.saturating_sub(then.job_attempts),
        job_failures: now.job_failures.saturating_sub(then.job_failures),
    }
}

/// `now - then` for one route (a route first seen after `then` counts from zero).
fn minus(now: &RouteTotals, then: Option<&RouteTotals>) -> RouteTotals {
    let Some(then) = then else { return *now };
    let mut d = *now;
    for (a, b) in d.buckets.iter_mut().zip(then.buckets) {
        *a = a.saturating_sub(b);
    }
    d.sum_nanos = d.sum_nanos.saturating_sub(then.sum_nanos);
    d.server_errors = d.server_errors.saturating_sub(then.server_errors);
    d.client_errors = d.client_errors.saturating_sub(then.client_errors);
    d
}

fn route_window(route: &str, d: &RouteTotals, seconds: f64) -> RouteWindow {
    let requests: u64 = d.buckets.iter().sum();
    let ms = |q| quantile(&d.buckets, q).map(|s| s * 1000.0);
    RouteWindow {
        route: route.to_owned(),
        requests,
        throughput_rps: if seconds > 0.0 {
            requests as f64 / seconds
        } else {
            0.0
        },
        error_rate: ratio(d.server_errors, requests),
        client_error_rate: ratio(d.client_errors, requests),
        p50_ms: ms(0.50),
        p95_ms: ms(0.95),
        p99_ms: ms(0.99),
        mean_ms: (requests > 0).then(|| d.sum_nanos as f64 / requests as f64 / 1e6),
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// The `q` quantile of a histogram (per-bucket counts over [`LATENCY_BUCKETS`], the last
/// past them all), in seconds: Prometheus' `histogram_quantile`, interpolating linearly
/// inside the bucket the rank falls in (from 0 for the first); a rank past the last bound
/// reads as that bound.
pub fn quantile(buckets: &[u64], q: f64) -> Option<f64> {
    let count: u64 = buckets.iter().sum();
    if count == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * count as f64;
    let mut below = 0u64;
    for (i, &n) in buckets.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let Some(&upper) = LATENCY_BUCKETS.get(i) else {
                return LATENCY_BUCKETS.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { LATENCY_BUCKETS[i - 1] };
            return Some(lower + (upper - lower) * ((rank - below as f64) / n as f64));
        }
        below += n;
    }
    LATENCY_BUCKETS.last().copied()
}

/// Takes a sample every [`SAMPLE_EVERY`] until `shutdown`, so the windows are whole even
/// when nobody asks for a summary.
pub async fn run(state: crate::AppState, shutdown: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let counters = crate::routes::summary::counters(&state);
                state.windows.offer(Instant::now(), &counters);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(cells: &[(usize, u64)]) -> [u64; LATENCY_BUCKETS.len() + 1] {
        let mut b = [0; LATENCY_BUCKETS.len() + 1];
        for &(i, n) in cells {
            b[i] = n;
        }
        b
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket_like_histogram_quantile() {
        // 100 requests: 50 in (0.1 ms, 0.25 ms], 50 in (1 ms, 2.5 ms].
        let b = buckets(&[(1, 50), (4, 50)]);
        let p50 = quantile(&b, 0.5).unwrap();
        assert!((p50 - 0.00025).abs() < 1e-12, "{p50}");
        let p95 = quantile(&b, 0.95).unwrap();
        assert!((p95 - (0.001 + 0.0015 * 0.9)).abs() < 1e-12, "{p95}");
        assert_eq!(quantile(&[0; 18], 0.5), None);
        // Past the last bound reads as the last bound.
        assert_eq!(quantile(&buckets(&[(17, 3)]), 0.99), Some(30.0));
        // The first bucket interpolates from zero.
        let low = quantile(&buckets(&[(0, 4)]), 0.5).unwrap();
        assert!((low - 0.00005).abs() < 1e-12, "{low}");
    }

    fn counters(route_requests: u64, slow: u64, errors: u64, hits: u64, lookups: u64) -> Counters {
        let mut routes = HashMap::new();
        routes.insert(
            "/v1/search".into(),
            RouteTotals {
                buckets: buckets(&[(1, route_requests - slow), (12, slow)]),
                sum_nanos: 0,
                server_errors: errors,
                client_errors: 0,
            },
        );
        Counters {
            routes,
            cache: HashMap::from([("search", (hits, lookups))]),
            model_busy_seconds: 0.0,
            job_failures: 0,
            job_attempts: 0,
        }
    }

    #[test]
    fn a_window_is_the_difference_from_the_sample_at_its_start() {
        let w = Windows::default();
        let t0 = Instant::now();
        // 15 minutes ago: 1000 fast requests; 5 minutes ago: 100 more slow ones, 10 errors.
        w.offer(t0, &counters(1000, 0, 0, 900, 1000));
        w.offer(
            t0 + Duration::from_secs(600),
            &counters(1100, 100, 10, 900, 1100),
        );
        let now = t0 + Duration::from_secs(900);
        let windows = w.windows(now, &counters(1200, 100, 10, 1000, 1200));
        let (m1, m5, m15) = (&windows[0], &windows[1], &windows[2]);
        // 1m and 5m both reach back to the sample 5 minutes old: 100 fast requests since.
        assert_eq!((m1.seconds, m1.total.requests), (300.0, 100));
        assert_eq!(m5.total.error_rate, Some(0.0));
        assert_eq!(m5.cache_hit_ratio, Some(1.0));
        assert!(m5.total.p99_ms.unwrap() < 0.25, "{:?}", m5.total);
        // 15m: 200 requests, half of them slow, 10 of them failed.
        assert_eq!((m15.seconds, m15.total.requests), (900.0, 200));
        assert_eq!(m15.total.error_rate, Some(0.05));
        assert!(m15.total.p99_ms.unwrap() > 500.0, "{:?}", m15.total);
        assert_eq!(m15.routes[0].route, "/v1/search");
        assert_eq!(m15.cache[0].lookups, 200);
        assert_eq!(m15.cache_hit_ratio, Some(0.5));
    }

    #[test]
    fn samples_are_spaced_and_old_ones_dropped() {
        let w = Windows::default();
        let t0 = Instant::now();
        for s in 0..=2000 {
            w.offer(t0 + Duration::from_secs(s), &Counters::default());
        }
        let n = w.samples.lock().unwrap().len();
        // 15 minutes and one sample, every 5 s.
        assert!((181..=183).contains(&n), "{n} samples kept");
    }
}
