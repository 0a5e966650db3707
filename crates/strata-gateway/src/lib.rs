//! strata's LLM gateway: an OpenAI-compatible chat completions proxy with an exact answer
//! cache, one upstream call for identical concurrent requests (a stream fans out chunk by
//! chunk to every waiter), race-free per-tenant budgets and a usage ledger.
//!
//! A call: parse the request ([`request`]), answer from the tenant's cache if a complete
//! answer is there ([`answer`]), otherwise reserve the estimate in the tenant's budget,
//! join or lead the flight for the key ([`flight`]), and (leading) open the upstream in
//! fallback order ([`upstream`]) in a task of its own that feeds the flight, stores a
//! complete answer, settles the reservation with the real usage and records the ledger.
//!
//! Owns: upstream calls, answer caching and replay, fan-out, metering. Must not import: HTTP
//! routing or response types (the server shapes responses and errors); SQL (budgets and the
//! ledger are the engine's [`strata_engine::BudgetService`]).

pub mod answer;
mod call;
pub mod conversation;
pub mod error;
pub mod flight;
pub mod remote;
pub mod request;
pub mod semantic;
pub mod settings;
pub mod sse;
pub mod upstream;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use serde_json::Value;
use strata_engine::budget::{Reservation, Spend, UsageEntry};
use strata_engine::policy::Read;
use strata_engine::{Engine, Source, TenantId};
use tracing::warn;

pub use error::GatewayError;
pub use request::{CacheControl, Chat};
pub use semantic::{SemanticNote, SemanticReport};
pub use settings::{GatewaySettings, Price, SemanticMode, UpstreamSettings};

use answer::{Answer, Usage};
use call::Call;
use flight::{End, Flight, Flights, Head, Joined, Next, Subscription};
use semantic::{Pending, Semantic};
use strata_cache::Found;
use strata_cache::shared_log::Claim;
use upstream::{Opened, Upstreams};

/// Where an answer came from, for `X-Cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// The in-process tier.
    HitL1,
    /// Redis.
    HitL2,
    /// The answer to an earlier prompt near in meaning (see [`semantic`]).
    HitSemantic,
    /// The upstream, called for this request.
    Miss,
    /// The upstream, through a call an identical concurrent request started.
    Joined,
    /// The upstream, through a call an identical request started on another instance.
    JoinedRemote,
}

impl CacheStatus {
    /// The `X-Cache` value.
    pub fn header(self) -> &'static str {
        match self {
            CacheStatus::HitL1 => "HIT-L1",
            CacheStatus::HitL2 => "HIT-L2",
            CacheStatus::HitSemantic => "HIT-SEMANTIC",
            CacheStatus::Miss | CacheStatus::Joined | CacheStatus::JoinedRemote => "MISS",
        }
    }
}

/// A gateway answer, for the server to send.
pub enum Reply {
    /// A `chat.completion` body.
    Json {
        /// The body.
        body: Bytes,
        /// Where it came from.
        cache: CacheStatus,
        /// The semantic match served or, in shadow mode, not served.
        semantic: Option<SemanticNote>,
    },
    /// Server-Sent Events, already framed, ending with `data: [DONE]` when complete.
    Stream {
        /// The events.
        events: BoxStream<'static, Bytes>,
        /// Where they come from.
        cache: CacheStatus,
        /// The semantic match served or, in shadow mode, not served.
        semantic: Option<SemanticNote>,
    },
}

/// Counters of the gateway's work.
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    hits: AtomicU64,
    joined: AtomicU64,
    upstream_calls: AtomicU64,
    upstream_failures: AtomicU64,
    broken_streams: AtomicU64,
    cancelled: AtomicU64,
    budget_denials: AtomicU64,
}

/// What `GET /v1/performance/...` and metrics show of the gateway.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GatewayStats {
    /// Chat requests answered or refused after parsing.
    pub requests: u64,
    /// Answered from the cache.
    pub cache_hits: u64,
    /// Answered by joining an identical call in flight.
    pub joined: u64,
    /// Upstream calls made.
    pub upstream_calls: u64,
    /// Upstream calls that did not answer with a success.
    pub upstream_failures: u64,
    /// Streams that broke off before they were complete.
    pub broken_streams: u64,
    /// Calls cancelled because every client went away.
    pub cancelled: u64,
    /// Requests refused by a budget.
    pub budget_denials: u64,
    /// Calls in flight now.
    pub in_flight: usize,
    /// Each upstream's breaker.
    pub upstreams: Vec<upstream::UpstreamState>,
    /// The semantic cache.
    pub semantic: SemanticReport,
    /// Calls this process metered since it started, by upstream model: requests, tokens and
    /// cost sent upstream, and the tokens and cost the caches saved.
    pub usage: std::collections::BTreeMap<String, strata_engine::budget::UsageDelta>,
}

/// The gateway. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    upstreams: Upstreams,
    flights: Flights,
    settings: GatewaySettings,
    counters: Counters,
    semantic: Arc<Semantic>,
}

/// A cached answer: when it was stored (Unix ms, 8 bytes LE), then [`Answer::encode`].
fn wrap(answer: &Answer, usage: Usage) -> Bytes {
    let now = now_ms();
    let body = answer.encode(usage);
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&now.to_le_bytes());
    out.extend_from_slice(&body);
    Bytes::from(out)
}

fn unwrap_entry(bytes: &Bytes) -> Option<(i64, Answer, Usage)> {
    let stored = i64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let (a, u) = Answer::decode(&bytes.slice(8..))?;
    Some((stored, a, u))
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Gateway {
    /// A gateway over `engine`'s cache and budgets, calling `settings.upstreams`.
    pub fn new(engine: Engine, settings: GatewaySettings) -> Result<Self, String> {
        Ok(Self {
            inner: Arc::new(Inner {
                upstreams: Upstreams::new(&settings)?,
                engine,
                flights: Flights::default(),
                settings,
                counters: Counters::default(),
                semantic: Arc::new(Semantic::new(strata_cache::SemanticSettings::default())),
            }),
        })
    }

    /// Whether any upstream is configured.
    pub fn is_configured(&self) -> bool {
        !self.inner.upstreams.is_empty()
    }

    /// Model ids clients may ask for, with the upstream serving each.
    pub async fn models(&self) -> Vec<(String, String)> {
        self.inner.upstreams.models().await
    }

    /// The gateway's counters and upstreams.
    pub fn stats(&self) -> GatewayStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        GatewayStats {
            requests: get(&c.requests),
            cache_hits: get(&c.hits),
            joined: get(&c.joined),
            upstream_calls: get(&c.upstream_calls),
            upstream_failures: get(&c.upstream_failures),
            broken_streams: get(&c.broken_streams),
            cancelled: get(&c.cancelled),
            budget_denials: get(&c.budget_denials),
            in_flight: self.inner.flights.len(),
            upstreams: self.inner.upstreams.states(),
            semantic: self.inner.semantic.report(),
            usage: self.inner.engine.budgets().totals().into_iter().collect(),
        }
    }

    /// Drops every entry of the semantic tier (the answers stay in the exact tiers); how
    /// many there were.
    pub fn clear_semantic(&self) -> u64 {
        self.inner.semantic.clear()
    }

    /// Answers a chat completion for `tenant` (see the crate doc).
    pub async fn chat(&self, tenant: &TenantId, chat: Chat) -> Result<Reply, GatewayError> {
        let inner = &self.inner;
        inner.counters.requests.fetch_add(1, Ordering::Relaxed);
        let Some((_, upstream_model, price)) = inner.upstreams.route(&chat.model) else {
            return Err(GatewayError::ModelNotFound(if inner.upstreams.is_empty() {
                "the gateway has no upstream configured (see `strata serve --help`, --upstream-url)"
                    .to_owned()
            } else {
                format!("no configured upstream serves the model {:?}", chat.model)
            }));
        };
        let material = chat.key_material(&upstream_model);
        let mut shadow_note = None;
        let policy = inner.engine.cache_policy();
        let read = policy.llm_response(tenant, material);
        if !chat.cache.no_read
            && let Some(hit) = policy.get(&read).await?
            && let Some((stored, answer, usage)) = unwrap_entry(&hit.value)
            && fresh(&chat, stored)
        {
            let cache = if hit.source == Source::L2 {
                CacheStatus::HitL2
            } else {
                CacheStatus::HitL1
            };
            let served = (answer, usage, cache, None);
            return Ok(self.serve(tenant, upstream_model, price, &chat, served));
        }
        let mut pending = None;
        let mode = semantic::mode(chat.semantic, inner.settings.semantic);
        if mode != SemanticMode::Off
            && let Some(parts) = chat.semantic_parts(&upstream_model)
        {
            let threshold = chat
                .semantic_threshold
                .unwrap_or(inner.settings.semantic_threshold);
            let probe = (threshold, inner.settings.semantic_guard);
            if let Some((mut p, found)) = inner
                .semantic
                .prepare(&inner.engine, tenant, parts, probe, !chat.cache.no_read)
                .await
            {
                if let Found::Hit(c) = found
                    && let Some(hit) = policy
                        .get(&policy.llm_response(tenant, c.pointer.to_vec()))
                        .await?
                    && let Some((stored, answer, usage)) = unwrap_entry(&hit.value)
                    && fresh(&chat, stored)
                {
                    let note = SemanticNote {
                        similarity: c.similarity,
                        entry: c.id,
                        served: mode == SemanticMode::On,
                    };
                    if note.served {
                        inner.semantic.served();
                        let served = (answer, usage, CacheStatus::HitSemantic, Some(note));
                        return Ok(self.serve(tenant, upstream_model, price, &chat, served));
                    }
                    p.shadow = Some((answer, c.similarity));
                    shadow_note = Some(note);
                }
                pending = Some(p);
            }
        }
        // Reserve before joining: a follower gives its reservation straight back.
        let (prompt, completion) = chat.estimate_tokens(inner.settings.default_completion_estimate);
        let estimate = Spend {
            tokens: prompt + completion,
            cost_micros: price.micros(prompt, completion),
        };
        let reservation = match inner.engine.budgets().reserve(tenant, estimate).await? {
            Reservation::Denied {
                period,
                resets_at_ms,
            } => {
                inner
                    .counters
                    .budget_denials
                    .fetch_add(1, Ordering::Relaxed);
                let secs = (resets_at_ms - now_ms()).max(0) as u64;
                return Err(GatewayError::Budget {
                    period: period.as_str(),
                    retry_after_secs: secs.div_ceil(1000).max(1),
                });
            }
            Reservation::Held(id) => Some(id),
            Reservation::Unlimited => None,
        };
        let key =
            *blake3::hash(&[tenant.as_str().as_bytes(), b"\0", &read.material].concat()).as_bytes();
        let (mut sub, cache) = match inner.flights.join(key) {
            Joined::Lead(flight, sub) => {
                let name = format!("gateway:{}", blake3::Hash::from_bytes(key).to_hex());
                let claim = policy
                    .cache()
                    .claim_log(&name, remote::LEASE, remote::KEEP)
                    .await;
                let (mirror, follow) = match claim {
                    Claim::Lead(leader) => (Some(remote::Mirror::new(leader)), None),
                    Claim::Follow(reader) => (None, Some(reader)),
                    Claim::Unavailable => (None, None),
                };
                let cache = if follow.is_some() {
                    inner.counters.joined.fetch_add(1, Ordering::Relaxed);
                    CacheStatus::JoinedRemote
                } else {
                    CacheStatus::Miss
                };
                let call = Call {
                    mirror,
                    follow,
                    gateway: self.clone(),
                    flight,
                    key,
                    tenant: tenant.clone(),
                    read: chat.storable().then_some(read),
                    reservation,
                    semantic: pending,
                    stream: chat.stream,
                    asked: chat.model.clone(),
                    body: chat.upstream_body(),
                };
                tokio::spawn(call.run());
                (sub, cache)
            }
            Joined::Follow(sub) => {
                inner.counters.joined.fetch_add(1, Ordering::Relaxed);
                if let Some(id) = reservation {
                    inner.engine.budgets().settle(tenant, id, Spend::default());
                }
                (sub, CacheStatus::Joined)
            }
        };
        match (sub.head().await, chat.stream) {
            (Head::Failed(f), _) => Err(f.into()),
            (Head::Stream, true) => Ok(Reply::Stream {
                events: relay(sub, chat.include_usage),
                cache,
                semantic: shadow_note,
            }),
            (Head::Stream, false) => match sub.collect().await {
                (frames, End::Complete) => Ok(Reply::Json {
                    body: Answer::Stream(frames).to_json(),
                    cache,
                    semantic: shadow_note,
                }),
                (_, End::Broken(why)) => Err(GatewayError::Broken(why)),
            },
            (Head::Json, _) => match sub.collect().await {
                (frames, End::Complete) => {
                    let answer = Answer::Json(frames.into_iter().next().unwrap_or_default());
                    Ok(complete(&answer, &chat, cache, shadow_note))
                }
                (_, End::Broken(why)) => Err(GatewayError::Broken(why)),
            },
        }
    }
}

/// A cached answer, its usage, where it came from and the semantic match that found it.
type Served = (Answer, Usage, CacheStatus, Option<SemanticNote>);

impl Gateway {
    /// Serves a cached answer: a hit, and in the ledger the tokens and cost it saved.
    fn serve(
        &self,
        tenant: &TenantId,
        model: String,
        price: Price,
        chat: &Chat,
        (answer, usage, cache, note): Served,
    ) -> Reply {
        let inner = &self.inner;
        inner.counters.hits.fetch_add(1, Ordering::Relaxed);
        inner.engine.budgets().record(
            tenant,
            UsageEntry {
                model,
                prompt_tokens: usage.prompt,
                completion_tokens: usage.completion,
                cost_micros: price.micros(usage.prompt, usage.completion),
                cached: true,
            },
        );
        complete(&answer, chat, cache, note)
    }
}

/// Whether an answer stored at `stored` (Unix ms) is young enough for the request's
/// `max-age`.
fn fresh(chat: &Chat, stored: i64) -> bool {
    chat.cache
        .max_age
        .is_none_or(|max| now_ms() - stored <= (max as i64).saturating_mul(1000))
}

/// A complete answer in the form `chat` asked for: JSON, or SSE events replayed.
fn complete(
    answer: &Answer,
    chat: &Chat,
    cache: CacheStatus,
    semantic: Option<SemanticNote>,
) -> Reply {
    if chat.stream {
        Reply::Stream {
            events: replay(answer.to_frames(chat.include_usage)),
            cache,
            semantic,
        }
    } else {
        Reply::Json {
            body: answer.to_json(),
            cache,
            semantic,
        }
    }
}

/// A complete answer's frames as SSE events, then `[DONE]`.
fn replay(frames: Vec<Bytes>) -> BoxStream<'static, Bytes> {
    futures_util::stream::iter(
        frames
            .into_iter()
            .map(|f| sse::frame(&f))
            .chain(std::iter::once(sse::frame(sse::DONE))),
    )
    .boxed()
}

/// A flight's frames as SSE events as they arrive: `[DONE]` after a complete answer; after a
/// broken one, an error event if the upstream did not send one itself.
fn relay(sub: Subscription, include_usage: bool) -> BoxStream<'static, Bytes> {
    futures_util::stream::unfold(Some((sub, false)), move |state| async move {
        let (mut sub, mut saw_error) = state?;
        loop {
            match sub.next().await {
                Next::Frame(f) => {
                    if !include_usage && answer::is_usage_only(&f) {
                        continue;
                    }
                    saw_error |= is_error(&f);
                    return Some((sse::frame(&f), Some((sub, saw_error))));
                }
                Next::End(End::Complete) => return Some((sse::frame(sse::DONE), None)),
                Next::End(End::Broken(_)) if saw_error => return None,
                Next::End(End::Broken(why)) => {
                    let e = serde_json::json!({"error": {"message": why, "type": "upstream_error", "param": null, "code": "upstream_stream_broken"}});
                    return Some((sse::frame(e.to_string().as_bytes()), None));
                }
            }
        }
    })
    .boxed()
}

/// Whether a stream payload is an error object (`{"error": ...}`).
fn is_error(frame: &[u8]) -> bool {
    frame.starts_with(b"{\"error\"")
        || serde_json::from_slice::<Value>(frame)
            .is_ok_and(|v| v.get("error").is_some_and(|e| !e.is_null()))
}
