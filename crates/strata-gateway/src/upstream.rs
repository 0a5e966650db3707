//! Calls to OpenAI-compatible upstreams: one pooled HTTP client; per upstream a circuit
//! breaker; per request the upstreams that serve its model in fallback order, each tried
//! with retries and exponential backoff until its first byte (never after: a stream that
//! began is never replayed), with connect, first-byte and (in [`crate::flight`]) idle
//! timeouts.
//!
//! Only strata's own headers go upstream (content type, the upstream's key): nothing of the
//! client's request, least of all its credentials.
//!
//! Must not import: the cache, the store.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, Value};
use tracing::warn;

use crate::settings::{GatewaySettings, Price, UpstreamSettings};

/// A response whose headers arrived with a success status: its body is still to read.
pub struct Opened {
    /// Which upstream answered.
    pub upstream: String,
    /// The upstream's model name.
    pub model: String,
    /// Its price.
    pub price: Price,
    /// The response.
    pub response: reqwest::Response,
}

/// Why no upstream answered with a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No configured upstream serves the model.
    NoUpstream(String),
    /// The upstream refused the request (its status and body, passed through).
    Rejected {
        /// Its HTTP status.
        status: u16,
        /// Its body.
        body: Bytes,
    },
    /// No upstream could be reached (or every breaker is open).
    Unavailable(String),
    /// The upstream did not answer in time.
    Timeout(String),
}

/// A consecutive-failure circuit breaker.
#[derive(Debug, Default)]
struct Breaker {
    failures: AtomicU32,
    open_until_ms: AtomicI64,
}

impl Breaker {
    /// Whether requests should skip the upstream now (open and cooling down).
    fn is_open(&self) -> bool {
        self.open_until_ms.load(Ordering::Relaxed) > crate::now_ms()
    }

    fn succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.open_until_ms.store(0, Ordering::Relaxed);
    }

    /// Counts a failure; opens (or, for a failed probe, reopens) after `threshold`.
    fn failed(&self, threshold: u32, cooldown: Duration) -> bool {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= threshold.max(1) {
            self.open_until_ms.store(
                crate::now_ms() + cooldown.as_millis() as i64,
                Ordering::Relaxed,
            );
            return true;
        }
        false
    }
}

struct Upstream {
    settings: UpstreamSettings,
    chat_url: String,
    models_url: String,
    breaker: Breaker,
}

/// The upstreams and the client that calls them.
pub struct Upstreams {
    list: Vec<Upstream>,
    client: reqwest::Client,
    settings: GatewaySettings,
}

/// An upstream's state for statistics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpstreamState {
    /// Its name.
    pub name: String,
    /// Whether its breaker is open.
    pub breaker_open: bool,
    /// Consecutive failures counted.
    pub failures: u32,
}

impl Upstreams {
    /// A client for `settings.upstreams`.
    pub fn new(settings: &GatewaySettings) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| format!("cannot build the upstream client: {e}"))?;
        let mut list = Vec::new();
        for u in &settings.upstreams {
            let base = u.base_url.trim_end_matches('/');
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                return Err(format!(
                    "upstream {:?}: base URL must start with http:// or https://",
                    u.name
                ));
            }
            list.push(Upstream {
                settings: u.clone(),
                chat_url: format!("{base}/chat/completions"),
                models_url: format!("{base}/models"),
                breaker: Breaker::default(),
            });
        }
        Ok(Self {
            list,
            client,
            settings: settings.clone(),
        })
    }

    /// Whether any upstream is configured.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The first upstream serving `asked`: its name, model name and price (for cache keys
    /// and estimates; the call itself may fall back to another).
    pub fn route(&self, asked: &str) -> Option<(String, String, Price)> {
        self.list.iter().find_map(|u| {
            let model = u.settings.resolve(asked)?;
            let price = u.settings.prices.get(&model).copied().unwrap_or_default();
            Some((u.settings.name.clone(), model, price))
        })
    }

    /// Sends `body` (its `model` replaced by each upstream's name for it) to the upstreams
    /// serving `asked`, in order, until one answers with a success status.
    pub async fn open(&self, asked: &str, body: &Map<String, Value>) -> Result<Opened, Failure> {
        let s = &self.settings;
        let mut last = None;
        let mut any = false;
        for u in &self.list {
            let Some(model) = u.settings.resolve(asked) else {
                continue;
            };
            any = true;
            if u.breaker.is_open() {
                last.get_or_insert(Failure::Unavailable(format!(
                    "upstream {:?} is failing; its breaker is open",
                    u.settings.name
                )));
                continue;
            }
            let mut body = body.clone();
            body.insert("model".into(), Value::String(model.clone()));
            let payload = Bytes::from(Value::Object(body).to_string());
            for attempt in 0..=s.retries {
                if attempt > 0 {
                    tokio::time::sleep(s.backoff * 2u32.saturating_pow(attempt - 1)).await;
                }
                let mut req = self
                    .client
                    .post(&u.chat_url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(payload.clone());
                if let Some(key) = &u.settings.api_key {
                    req = req.bearer_auth(key);
                }
                let started = Instant::now();
                let failure = match tokio::time::timeout(s.first_byte_timeout, req.send()).await {
                    Ok(Ok(resp)) if resp.status().is_success() => {
                        u.breaker.succeeded();
                        return Ok(Opened {
                            upstream: u.settings.name.clone(),
                            price: u.settings.prices.get(&model).copied().unwrap_or_default(),
                            model,
                            response: resp,
                        });
                    }
                    Ok(Ok(resp)) => {
                        let status = resp.status().as_u16();
                        let body = tokio::time::timeout(s.idle_timeout, resp.bytes())
                            .await
                            .ok()
                            .and_then(Result::ok)
                            .unwrap_or_default();
                        let rejected = Failure::Rejected { status, body };
                        if status != 429 && status < 500 {
                            // The request itself is wrong: another try or upstream would
                            // answer the same.
                            u.breaker.succeeded();
                            return Err(rejected);
                        }
                        rejected
                    }
                    Ok(Err(e)) => Failure::Unavailable(format!(
                        "upstream {:?} could not be reached: {}",
                        u.settings.name,
                        without_url(&e)
                    )),
                    Err(_) => Failure::Timeout(format!(
                        "upstream {:?} sent no response within {:?}",
                        u.settings.name, s.first_byte_timeout
                    )),
                };
                if u.breaker.failed(s.breaker_failures, s.breaker_cooldown) {
                    warn!(upstream = %u.settings.name, "upstream breaker opened");
                }
                warn!(upstream = %u.settings.name, attempt, took = ?started.elapsed(), failure = ?failure_kind(&failure), "upstream call failed");
                last = Some(failure);
                if u.breaker.is_open() {
                    break;
                }
            }
        }
        if !any {
            return Err(Failure::NoUpstream(asked.to_owned()));
        }
        Err(last.unwrap_or_else(|| Failure::Unavailable("no upstream answered".into())))
    }

    /// Model ids clients may ask for: every upstream's listed models and aliases, and the
    /// live lists of upstreams that serve any model.
    pub async fn models(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for u in &self.list {
            let owner = u.settings.name.clone();
            for m in u.settings.models.iter().chain(u.settings.aliases.keys()) {
                out.push((m.clone(), owner.clone()));
            }
            if u.settings.models.is_empty() && !u.breaker.is_open() {
                let mut req = self.client.get(&u.models_url);
                if let Some(key) = &u.settings.api_key {
                    req = req.bearer_auth(key);
                }
                let listed = async {
                    let v: Value = req.send().await.ok()?.json().await.ok()?;
                    Some(
                        v.get("data")?
                            .as_array()?
                            .iter()
                            .filter_map(|m| m.get("id")?.as_str().map(str::to_owned))
                            .collect::<Vec<_>>(),
                    )
                };
                if let Ok(Some(ids)) = tokio::time::timeout(
                    self.settings.first_byte_timeout.min(Duration::from_secs(5)),
                    listed,
                )
                .await
                {
                    out.extend(ids.into_iter().map(|m| (m, owner.clone())));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|(m, _)| seen.insert(m.clone()));
        out
    }

    /// Each upstream's breaker.
    pub fn states(&self) -> Vec<UpstreamState> {
        self.list
            .iter()
            .map(|u| UpstreamState {
                name: u.settings.name.clone(),
                breaker_open: u.breaker.is_open(),
                failures: u.breaker.failures.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// The idle timeout between chunks.
    pub fn idle_timeout(&self) -> Duration {
        self.settings.idle_timeout
    }

    /// The longest a call may take to its first byte: every upstream, every retry.
    pub fn first_byte_budget(&self) -> Duration {
        let s = &self.settings;
        let tries = (s.retries + 1) * s.upstreams.len().max(1) as u32;
        (s.first_byte_timeout + s.connect_timeout) * tries
    }
}

fn failure_kind(f: &Failure) -> String {
    match f {
        Failure::NoUpstream(_) => "no_upstream".into(),
        Failure::Rejected { status, .. } => format!("status {status}"),
        Failure::Unavailable(_) => "unreachable".into(),
        Failure::Timeout(_) => "timeout".into(),
    }
}

/// A client error's description without the URL (which may carry credentials).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connection failed"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "request failed"
    };
    kind.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_breaker_opens_after_its_threshold_and_closes_on_success() {
        let b = Breaker::default();
        assert!(!b.failed(2, Duration::from_secs(30)));
        assert!(!b.is_open());
        assert!(b.failed(2, Duration::from_secs(30)));
        assert!(b.is_open());
        b.succeeded();
        assert!(!b.is_open());
        assert!(
            b.failed(1, Duration::ZERO) && !b.is_open(),
            "a zero cooldown probes at once"
        );
    }
}
