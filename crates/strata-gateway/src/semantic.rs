//! The gateway's semantic cache: after an exact miss, the nearest earlier prompt of the same
//! tenant, model and shaping parameters (system prompt, earlier turns and tools matched
//! exactly; the last user message by meaning), through [`strata_cache::SemanticTier`] and
//! its guard. Its entries point at exact cache keys, so an answer gone from the exact tiers
//! (expired, invalidated, cleared) is a miss here too.
//!
//! Shadow mode looks up and, when the upstream has answered, compares what it would have
//! served with what the upstream said (equal text, or answer embeddings at cosine 0.9 or
//! more), counted per similarity bucket, so an operator picks a threshold from data.
//!
//! Must not import: HTTP types, SQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde_json::Value;
use strata_cache::{Found, Probe, SemanticSettings, SemanticStats, SemanticTier};
use strata_engine::{Engine, TenantId};
use tracing::warn;

use crate::answer::Answer;
use crate::request::SemanticParts;
use crate::settings::SemanticMode;

/// What a reply says of the semantic cache, for headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SemanticNote {
    /// The matched entry's similarity to the request.
    pub similarity: f32,
    /// The matched entry's id.
    pub entry: [u8; 16],
    /// Whether the answer was served from it (`false`: shadow mode, not served).
    pub served: bool,
}

impl SemanticNote {
    /// The entry id in hex.
    pub fn entry_hex(&self) -> String {
        self.entry.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A request's part in the semantic cache, from lookup to the entry its answer adds.
pub(crate) struct Pending {
    pub(crate) scope: [u8; 32],
    pub(crate) text: String,
    pub(crate) vector: Vec<f32>,
    /// In shadow mode, what would have been served and how near it was.
    pub(crate) shadow: Option<(Answer, f32)>,
}

/// The least answer-embedding similarity shadow mode counts as agreement.
const AGREEMENT: f32 = 0.9;
/// Shadow buckets: similarity `0.80 + i/100` up to the next, the last up to 1.
const BUCKETS: usize = 20;
const BUCKET_FLOOR: f32 = 0.80;

/// One similarity bucket of shadow mode.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShadowBucket {
    /// The bucket's least similarity.
    pub similarity_from: f32,
    /// Lookups whose match fell in the bucket, compared with the upstream's answer.
    pub compared: u64,
    /// Of those, the answers that agreed.
    pub agreed: u64,
}

/// What `GET /v1/performance/gateway/stats` shows of the semantic cache.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SemanticReport {
    /// The tier's counters and size.
    #[serde(flatten)]
    pub tier: SemanticStats,
    /// Answers served from a semantic match.
    pub served: u64,
    /// Shadow comparisons by similarity (buckets with none left out).
    pub shadow: Vec<ShadowBucket>,
}

/// The gateway's semantic cache.
pub(crate) struct Semantic {
    tier: SemanticTier,
    served: AtomicU64,
    compared: [AtomicU64; BUCKETS],
    agreed: [AtomicU64; BUCKETS],
}

impl Semantic {
    pub(crate) fn new(settings: SemanticSettings) -> Self {
        Self {
            tier: SemanticTier::new(settings),
            served: AtomicU64::new(0),
            compared: Default::default(),
            agreed: Default::default(),
        }
    }

    /// Embeds the request's text and looks it up (unless `read` is false: `no-cache`).
    /// `None` when the model could not embed it: the request goes on without the tier.
    pub(crate) async fn prepare(
        &self,
        engine: &Engine,
        tenant: &TenantId,
        parts: SemanticParts,
        probe: (f32, bool),
        read: bool,
    ) -> Option<(Pending, Found)> {
        let vector = match engine.retrieval().embed_query(&parts.text).await {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "embedding a prompt for the semantic cache failed");
                return None;
            }
        };
        let scope =
            *blake3::hash(&[tenant.as_str().as_bytes(), b"\0", &parts.scope].concat()).as_bytes();
        let found = if read {
            self.tier.lookup(
                &scope,
                Probe {
                    text: &parts.text,
                    vector: &vector,
                    threshold: probe.0,
                    guard: probe.1,
                },
            )
        } else {
            Found::Miss
        };
        Some((
            Pending {
                scope,
                text: parts.text,
                vector,
                shadow: None,
            },
            found,
        ))
    }

    pub(crate) fn served(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds the entry of a stored answer (`pointer`: its exact key material); in shadow mode,
    /// compares the answer with what would have been served.
    pub(crate) fn complete(
        self: &Arc<Self>,
        engine: &Engine,
        pending: Pending,
        pointer: Option<Bytes>,
        answer: &Answer,
    ) {
        let Pending {
            scope,
            text,
            vector,
            shadow,
        } = pending;
        if let Some(pointer) = pointer {
            self.tier.insert(scope, &text, &vector, pointer);
        }
        let Some((would, similarity)) = shadow else {
            return;
        };
        let (fresh, old) = (answer_text(answer), answer_text(&would));
        let this = self.clone();
        let engine = engine.clone();
        tokio::spawn(async move {
            let agreed = if normalized(&fresh) == normalized(&old) {
                true
            } else {
                match engine.retrieval().embed_texts(vec![fresh, old]).await {
                    Ok(v) if v.len() == 2 => dot(&v[0], &v[1]) >= AGREEMENT,
                    _ => return,
                }
            };
            let i =
                (((similarity - BUCKET_FLOOR) * 100.0).floor().max(0.0) as usize).min(BUCKETS - 1);
            this.compared[i].fetch_add(1, Ordering::Relaxed);
            if agreed {
                this.agreed[i].fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    pub(crate) fn clear(&self) -> u64 {
        self.tier.clear()
    }

    pub(crate) fn report(&self) -> SemanticReport {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SemanticReport {
            tier: self.tier.stats(),
            served: get(&self.served),
            shadow: (0..BUCKETS)
                .filter(|&i| get(&self.compared[i]) > 0)
                .map(|i| ShadowBucket {
                    similarity_from: BUCKET_FLOOR + i as f32 / 100.0,
                    compared: get(&self.compared[i]),
                    agreed: get(&self.agreed[i]),
                })
                .collect(),
        }
    }
}

/// The mode a request runs in: its own, else the gateway's.
pub(crate) fn mode(asked: Option<SemanticMode>, default: SemanticMode) -> SemanticMode {
    asked.unwrap_or(default)
}

/// The first choice's message text of an answer.
fn answer_text(answer: &Answer) -> String {
    serde_json::from_slice::<Value>(&answer.to_json())
        .ok()
        .and_then(|v| {
            v.pointer("/choices/0/message/content")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

fn normalized(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
