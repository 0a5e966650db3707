//! strata's cache: a domain-free, in-process tier (L1) bounded in bytes, with a TTL per
//! kind of data, generation-based invalidation per scope, single-flight for concurrent
//! misses, and statistics per kind.
//!
//! Keys are `strata:{kind}:{scope}:{generation}:{hash}`, where `hash` is the blake3 of the
//! caller's canonical request bytes (every parameter that changes the answer must be in
//! them). Invalidating a scope bumps its generation: every key derived from it becomes
//! unreachable at once, in O(1), and the old entries age out of the byte budget.
//!
//! Owns: keys, expiry, invalidation, coalescing, counting. Must not import: the engine, the
//! server, or any domain type; values are bytes.
//!
//! Not here yet: the Redis L2, cross-instance invalidation over pub/sub, and the circuit
//! breaker around L2 (the cache issue's next step).

mod flight;
mod l1;
mod stats;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use stats::{KindStats, StatsSnapshot};

/// A kind of cached data and its time to live.
#[derive(Debug, Clone)]
pub struct KindSpec {
    /// Short name used in keys and statistics (`search_results`).
    pub name: &'static str,
    /// How long an entry lives in L1.
    pub l1_ttl: Duration,
}

/// Cache settings.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// L1 budget in bytes (keys and values).
    pub l1_bytes: u64,
    /// The kinds this cache serves.
    pub kinds: Vec<KindSpec>,
}

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Found in the in-process tier.
    L1,
    /// Computed by this caller.
    Computed,
    /// Computed by a concurrent caller this one waited for.
    Joined,
}

impl Source {
    /// Whether the value was served without computing it here.
    pub fn is_hit(self) -> bool {
        matches!(self, Source::L1)
    }
}

/// A cached (or just computed) value.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The bytes.
    pub value: Bytes,
    /// Where they came from.
    pub source: Source,
    /// Time spent in the cache and in computing, end to end.
    pub elapsed: Duration,
}

/// The cache. Clone freely.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    l1: l1::L1,
    kinds: HashMap<&'static str, KindSpec>,
    generations: RwLock<HashMap<String, u64>>,
    flights: flight::Flights,
    stats: stats::Stats,
}

/// Errors of the cache itself (never of the computation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheError {
    /// The kind was not declared in [`CacheSettings`].
    UnknownKind(String),
}

impl std::fmt::Display for CacheError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheError::UnknownKind(k) => write!(f, "cache kind {k:?} is not configured"),
        }
    }
}

impl std::error::Error for CacheError {}

impl Cache {
    /// Creates the cache.
    pub fn new(settings: CacheSettings) -> Self {
        let names: Vec<&'static str> = settings.kinds.iter().map(|k| k.name).collect();
        Self {
            inner: Arc::new(Inner {
                l1: l1::L1::new(settings.l1_bytes),
                kinds: settings.kinds.into_iter().map(|k| (k.name, k)).collect(),
                generations: RwLock::default(),
                flights: flight::Flights::default(),
                stats: stats::Stats::new(&names),
            }),
        }
    }

    /// The current generation of a scope.
    pub fn generation(&self, scope: &str) -> u64 {
        let g = self
            .inner
            .generations
            .read()
            .unwrap_or_else(|p| p.into_inner());
        g.get(scope).copied().unwrap_or(0)
    }

    /// Makes everything cached under `scope` unreachable (O(1)): bumps its generation.
    pub fn invalidate(&self, scope: &str) -> u64 {
        let mut g = self
            .inner
            .generations
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let next = g.get(scope).copied().unwrap_or(0) + 1;
        g.insert(scope.to_owned(), next);
        self.inner
            .stats
            .invalidations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        next
    }

    /// The full key of a request.
    pub fn key(&self, kind: &str, scope: &str, material: &[u8]) -> String {
        let hash = blake3::hash(material).to_hex();
        format!(
            "strata:{kind}:{scope}:{}:{}",
            self.generation(scope),
            &hash[..32]
        )
    }

    /// Returns the cached value for (`kind`, `scope`, `material`), or computes it once however
    /// many callers ask at the same moment, caches it for the kind's TTL and returns it.
    /// A failed computation is not cached; its error goes to the caller that ran it, and
    /// waiting callers compute for themselves.
    pub async fn get_or_compute<E, F, Fut>(
        &self,
        kind: &str,
        scope: &str,
        material: &[u8],
        compute: F,
    ) -> Result<Lookup, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
        E: From<CacheError>,
    {
        let start = Instant::now();
        let spec = self
            .inner
            .kinds
            .get(kind)
            .ok_or_else(|| CacheError::UnknownKind(kind.to_owned()))?;
        let stats = self.inner.stats.kind(spec.name);
        let key = self.key(spec.name, scope, material);
        let mut compute = Some(compute);
        loop {
            // First the fast path; again after a leader we waited for failed.
            if let Some(v) = self.inner.l1.get(&key) {
                stats.hit_l1(start.elapsed());
                return Ok(Lookup {
                    value: v,
                    source: Source::L1,
                    elapsed: start.elapsed(),
                });
            }
            match self.inner.flights.join_or_lead(&key) {
                flight::Role::Follower(mut rx) => {
                    if let Some(v) = flight::wait(&mut rx).await {
                        stats.joined(start.elapsed());
                        return Ok(Lookup {
                            value: v,
                            source: Source::Joined,
                            elapsed: start.elapsed(),
                        });
                    }
                }
                flight::Role::Leader(guard) => {
                    let Some(f) = compute.take() else {
                        // Unreachable in practice: a caller leads at most once.
                        continue;
                    };
                    let result = f().await;
                    return match result {
                        Ok(v) => {
                            self.inner.l1.insert(key.clone(), v.clone(), spec.l1_ttl);
                            guard.complete(v.clone());
                            stats.miss(start.elapsed(), v.len());
                            Ok(Lookup {
                                value: v,
                                source: Source::Computed,
                                elapsed: start.elapsed(),
                            })
                        }
                        Err(e) => {
                            stats.failed();
                            Err(e)
                        }
                    };
                }
            }
        }
    }

    /// Removes every entry of `kind`, or of every kind when `None` (L1 only: generations
    /// are kept, so nothing stale can come back).
    pub fn clear(&self, kind: Option<&str>) -> u64 {
        let removed = match kind {
            Some(k) => self.inner.l1.retain(|key| !key_has_kind(key, k)),
            None => self.inner.l1.clear(),
        };
        self.inner
            .stats
            .cleared
            .fetch_add(removed, std::sync::atomic::Ordering::Relaxed);
        removed
    }

    /// Hit, miss and size counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot(&self.inner.l1)
    }
}

fn key_has_kind(key: &str, kind: &str) -> bool {
    key.strip_prefix("strata:")
        .and_then(|rest| rest.strip_prefix(kind))
        .is_some_and(|rest| rest.starts_with(':'))
}

#[cfg(test)]
mod tests;
