//! strata's cache: a domain-free, tiered cache. L1 is in-process and bounded in bytes; L2
//! is Redis (optional), shared by every process; both keep a TTL per kind of data.
//! Invalidation is by generation per scope, single-flight coalesces concurrent misses (across
//! processes too, for kinds marked `distributed`), and statistics are kept per kind and tier.
//!
//! Keys are `{namespace}:{kind}:{scope}:{generation}:{hash}`, where `namespace` is
//! [`RedisSettings::namespace`] (`strata` by default) and `hash` is the blake3 of the
//! caller's canonical request bytes (every parameter that changes the answer must be in
//! them). Invalidating a scope bumps its generation: every key derived from it becomes
//! unreachable at once, in O(1), in every tier and every process, and the old entries age
//! out. The scope [`GLOBAL_SCOPE`] is for content-addressed values (the key determines the
//! value), which are never invalidated and stay cached even while Redis is unreachable; an
//! L1 hit on one late in its life renews it, so only unread ones expire.
//!
//! Owns: keys, expiry, tiers, invalidation, coalescing, counting. Must not import: the
//! engine, the server, or any domain type; values are bytes.

mod breaker;
mod codec;
mod flight;
mod generations;
pub mod guard;
mod l1;
mod remote;
mod secret;
pub mod semantic;
mod settings;
pub mod shared_log;
mod stats;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use l1::entry_weight;
pub use remote::{RedisSettings, RemoteStats};
pub use secret::{SecretUrl, redact_url};
pub use semantic::{Candidate, Found, Probe, SemanticSettings, SemanticStats, SemanticTier};
pub use stats::{KindStats, StatsSnapshot};

/// The hasher of the cache's own maps, for callers' maps on the same hot path: fast on short
/// keys (foldhash, randomly seeded per process), unlike std's SipHash.
pub type FastHashBuilder = quick_cache::DefaultHashBuilder;

/// The hash of a read's key material: what a cache key holds of the request. Computed from
/// the material once ([`Digest::of`]), so a caller that sees the same request often can keep
/// it and skip both writing the material and hashing it ([`Cache::get_or_compute_digest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 16]);

impl Digest {
    /// The first 128 bits of the material's BLAKE3 hash: a key's identity across instances
    /// (Redis holds it), so collisions must be out of reach of anyone choosing requests.
    pub fn of(material: &[u8]) -> Self {
        let mut d = [0; 16];
        d.copy_from_slice(&blake3::hash(material).as_bytes()[..16]);
        Self(d)
    }

    /// The 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

/// The scope of content-addressed values: never invalidated.
pub const GLOBAL_SCOPE: &str = "global";

/// A kind of cached data and its times to live.
#[derive(Debug, Clone)]
pub struct KindSpec {
    /// Short name used in keys and statistics (`search_results`).
    pub name: &'static str,
    /// How long an entry lives in L1.
    pub l1_ttl: Duration,
    /// How long an entry lives in L2.
    pub l2_ttl: Duration,
    /// Whether concurrent misses in different processes should compute once (a short Redis
    /// lock; worth it for expensive computations such as model calls).
    pub distributed: bool,
}

/// Cache settings.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// L1 budget in bytes (keys and values).
    pub l1_bytes: u64,
    /// The kinds this cache serves.
    pub kinds: Vec<KindSpec>,
    /// The L2 tier and cross-process invalidation; `None` for a single process.
    pub redis: Option<RedisSettings>,
}

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Found in the in-process tier.
    L1,
    /// Found in Redis (possibly after waiting for another process's computation).
    L2,
    /// Computed by this caller.
    Computed,
    /// Computed by a concurrent caller this one waited for.
    Joined,
    /// Computed without consulting the cache: Redis is configured but this process cannot
    /// currently be sure its cached copies are current.
    Bypassed,
}

impl Source {
    /// Whether the value was served from a cache tier.
    pub fn is_hit(self) -> bool {
        matches!(self, Source::L1 | Source::L2)
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
    kinds: HashMap<&'static str, KindSpec, FastHashBuilder>,
    generations: Arc<generations::Generations>,
    remote: Option<Arc<remote::Remote>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    flights: flight::Flights,
    stats: stats::Stats,
    /// The first part of every key (see [`RedisSettings::namespace`]).
    namespace: Box<str>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Errors of the cache itself (never of the computation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheError {
    /// The kind was not declared in [`CacheSettings`].
    UnknownKind(String),
    /// The Redis settings cannot be used (a malformed URL, say).
    Config(String),
}

impl std::fmt::Display for CacheError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheError::UnknownKind(k) => write!(f, "cache kind {k:?} is not configured"),
            CacheError::Config(m) => write!(f, "cache configuration: {m}"),
        }
    }
}

impl std::error::Error for CacheError {}

/// What [`Cache::take_rate`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateTake {
    /// Taken; this many more fit in the burst now.
    Taken {
        /// Requests left in the burst.
        remaining: u64,
    },
    /// Refused; this much later it fits.
    Refused {
        /// How long until it fits.
        retry_after: Duration,
    },
}

/// What [`Cache::clear`] removed.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Cleared {
    /// Entries removed from L1.
    pub l1: u64,
    /// Keys removed from L2.
    pub l2: u64,
}

impl Cache {
    /// Creates the cache. With Redis settings it must be called inside a Tokio runtime: it
    /// starts connecting and the invalidation bus in the background; a Redis that is not
    /// reachable yet is no error (tenant reads bypass the cache until it is).
    pub fn new(settings: CacheSettings) -> Result<Self, CacheError> {
        let names: Vec<&'static str> = settings.kinds.iter().map(|k| k.name).collect();
        let generations = Arc::new(generations::Generations::default());
        let namespace: Box<str> = settings
            .redis
            .as_ref()
            .map_or(settings::DEFAULT_NAMESPACE, |r| r.namespace.as_str())
            .into();
        let (remote, tasks) = match settings.redis {
            Some(r) => {
                let remote =
                    remote::Remote::connect(r, generations.clone()).map_err(CacheError::Config)?;
                let tasks = remote.start();
                (Some(remote), tasks)
            }
            None => (None, Vec::new()),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                l1: l1::L1::new(settings.l1_bytes),
                kinds: settings.kinds.into_iter().map(|k| (k.name, k)).collect(),
                generations,
                remote,
                tasks,
                flights: flight::Flights::default(),
                stats: stats::Stats::new(&names),
                namespace,
            }),
        })
    }

    /// Takes `cost` requests from the rate `name` that every instance over this Redis shares
    /// (GCRA: `per_second` sustained, `burst` at once), on Redis's clock. `None` without Redis
    /// or when it cannot answer in time: the caller then limits on its own.
    pub async fn take_rate(
        &self,
        name: &str,
        per_second: u32,
        burst: u32,
        cost: u32,
    ) -> Option<RateTake> {
        let remote = self.inner.remote.as_ref()?;
        let interval = 1_000_000 / u64::from(per_second.max(1));
        let window = interval.max(1) * u64::from(burst.max(1));
        let (taken, micros) = remote
            .take_rate(name, interval.max(1), window, u64::from(cost.max(1)))
            .await?;
        Some(if taken {
            RateTake::Taken {
                remaining: micros / interval.max(1),
            }
        } else {
            RateTake::Refused {
                retry_after: Duration::from_micros(micros),
            }
        })
    }

    /// The round trip of a `PING` to Redis, or why it failed; `None` without Redis.
    pub async fn ping_remote(&self) -> Option<Result<Duration, String>> {
        Some(self.inner.remote.as_ref()?.ping().await)
    }

    /// Whether Redis is configured.
    pub fn has_remote(&self) -> bool {
        self.inner.remote.is_some()
    }

    /// Waits (at most `within`) until the cache can serve tenant data from its tiers: at once
    /// without Redis; with Redis, once the invalidation bus has answered. Returns whether it can.
    pub async fn ready(&self, within: Duration) -> bool {
        match &self.inner.remote {
            Some(r) => r.ready(within).await,
            None => true,
        }
    }

    /// The generation of a scope in force here, or `None` when this process cannot know it
    /// (Redis configured but unreachable, or the bus may have missed a message).
    pub async fn generation(&self, scope: &str) -> Option<u64> {
        match self.local_generation(scope) {
            Generation::Known(g) => Some(g),
            Generation::Unknowable => None,
            Generation::Fetch(remote) => {
                let g = remote.fetch_generation(scope).await?;
                // A bump may have arrived while fetching: keep the later one.
                let g = self.inner.generations.observe(scope, g);
                remote.healthy().then_some(g)
            }
        }
    }

    /// What this process knows of a scope's generation without asking Redis.
    fn local_generation(&self, scope: &str) -> Generation<'_> {
        if scope == GLOBAL_SCOPE {
            return Generation::Known(0);
        }
        let Some(remote) = &self.inner.remote else {
            return Generation::Known(self.inner.generations.known(scope).unwrap_or(0));
        };
        if !remote.healthy() {
            return Generation::Unknowable;
        }
        match self.inner.generations.known(scope) {
            Some(g) => Generation::Known(g),
            None => Generation::Fetch(remote),
        }
    }

    /// Makes everything cached under `scope` unreachable in every tier and process: bumps its
    /// generation. With Redis, returns once every connected process has applied the bump
    /// (bounded by the acknowledgement timeout); if Redis cannot be told, the bump is kept and
    /// sent when it returns, and this process bypasses its caches until then.
    pub async fn invalidate(&self, scope: &str) {
        self.invalidate_all(&[scope]).await;
    }

    /// [`Cache::invalidate`] for several scopes at once: with Redis, one script bumps them
    /// all and one wait covers every process's acknowledgement of all of them.
    pub async fn invalidate_all<S: AsRef<str>>(&self, scopes: &[S]) {
        let scopes: Vec<&str> = scopes.iter().map(AsRef::as_ref).collect();
        for scope in &scopes {
            self.inner.generations.bump_local(scope);
        }
        if let Some(remote) = &self.inner.remote
            && remote.bump(&scopes).await.is_none()
        {
            for scope in &scopes {
                self.inner.generations.add_pending(scope);
            }
            remote.mark_unhealthy_after_failed_bump();
        }
    }

    /// The full key of a request, or `None` when the scope's generation is unknown.
    pub async fn key(&self, kind: &str, scope: &str, material: &[u8]) -> Option<String> {
        let g = self.generation(scope).await?;
        Some(make_key(
            &self.inner.namespace,
            kind,
            scope,
            g,
            &Digest::of(material),
        ))
    }

    /// Returns the cached value for (`kind`, `scope`, `material`), or computes it once however
    /// many callers ask at the same moment, caches it for the kind's TTLs and returns it.
    /// A failed computation is not cached; its error goes to the caller that ran it, and
    /// waiting callers compute for themselves.
    pub fn get_or_compute<'a, E, F, Fut>(
        &'a self,
        kind: &'a str,
        scope: &'a str,
        material: &[u8],
        compute: F,
    ) -> impl Future<Output = Result<Lookup, E>> + use<'a, E, F, Fut>
    where
        F: FnOnce() -> Fut + 'a,
        Fut: Future<Output = Result<Bytes, E>> + 'a,
        E: From<CacheError> + 'a,
    {
        // Hashed before the future is made, so it borrows nothing of `material`.
        self.get_or_compute_digest(kind, scope, Digest::of(material), compute)
    }

    /// [`Cache::get_or_compute`] for material already hashed: the same key, the same tiers.
    pub async fn get_or_compute_digest<E, F, Fut>(
        &self,
        kind: &str,
        scope: &str,
        digest: Digest,
        compute: F,
    ) -> Result<Lookup, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
        E: From<CacheError>,
    {
        let start = Instant::now();
        let spec = self.spec(kind)?;
        let stats = self.inner.stats.kind(spec.name);
        // The hit path, kept free of awaits: a caller's future holds only this much state.
        let key = match self.local_generation(scope) {
            Generation::Known(generation) => {
                let key = make_key(&self.inner.namespace, spec.name, scope, generation, &digest);
                let hit = if scope == GLOBAL_SCOPE {
                    self.inner.l1.get_renewing(&key, spec.l1_ttl)
                } else {
                    self.inner.l1.get(&key)
                };
                if let Some(v) = hit {
                    return Ok(served(stats, v, Source::L1, start));
                }
                Some(key)
            }
            Generation::Unknowable | Generation::Fetch(_) => None,
        };
        // Everything else (Redis, locks, the computation) lives in its own allocation, so
        // the futures of the handlers that await a cache read stay small: a hit does not
        // move kilobytes of miss-path state around.
        Box::pin(self.get_or_compute_slow(spec, stats, scope, digest, key, compute, start)).await
    }

    /// [`Cache::get_or_compute`] past an L1 miss (or when the generation must be fetched).
    #[allow(clippy::too_many_arguments)]
    async fn get_or_compute_slow<E, F, Fut>(
        &self,
        spec: &KindSpec,
        stats: &stats::Counters,
        scope: &str,
        digest: Digest,
        key: Option<String>,
        compute: F,
        start: Instant,
    ) -> Result<Lookup, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
        E: From<CacheError>,
    {
        let key = match key {
            Some(key) => key,
            None => {
                let Some(generation) = self.generation(scope).await else {
                    let v = compute().await.inspect_err(|_| stats.failed())?;
                    return Ok(served(stats, v, Source::Bypassed, start));
                };
                make_key(&self.inner.namespace, spec.name, scope, generation, &digest)
            }
        };
        let mut compute = Some(compute);
        loop {
            // Again here: the key's generation may have just been fetched, or a leader we
            // waited for failed.
            if let Some(v) = self.inner.l1.get(&key) {
                return Ok(served(stats, v, Source::L1, start));
            }
            match self.inner.flights.join_or_lead(&key) {
                flight::Role::Follower(mut rx) => {
                    if let Some(v) = flight::wait(&mut rx).await {
                        return Ok(served(stats, v, Source::Joined, start));
                    }
                }
                flight::Role::Leader(guard) => {
                    let Some(f) = compute.take() else {
                        // Unreachable in practice: a caller leads at most once.
                        continue;
                    };
                    let mut lock = None;
                    // A kind whose L2 TTL is zero is not kept in Redis (nor locked there).
                    let remote = self
                        .inner
                        .remote
                        .as_ref()
                        .filter(|_| !spec.l2_ttl.is_zero());
                    if let Some(remote) = remote {
                        if let Some(v) = remote.get(&key).await {
                            self.inner.l1.insert(key.clone(), v.clone(), spec.l1_ttl);
                            guard.complete(v.clone());
                            return Ok(served(stats, v, Source::L2, start));
                        }
                        if spec.distributed {
                            match remote.try_lock(&key).await {
                                Some(remote::Lock::Held(token)) => lock = Some(token),
                                Some(remote::Lock::Busy) => {
                                    if let Some(v) = remote.wait_for(&key).await {
                                        self.inner.l1.insert(key.clone(), v.clone(), spec.l1_ttl);
                                        guard.complete(v.clone());
                                        return Ok(served(stats, v, Source::L2, start));
                                    }
                                }
                                None => {}
                            }
                        }
                    }
                    let result = f().await;
                    if let Ok(v) = &result {
                        // A zero L1 TTL turns the tier off for the kind: nothing to keep.
                        if !spec.l1_ttl.is_zero() {
                            self.inner.l1.insert(key.clone(), v.clone(), spec.l1_ttl);
                        }
                        guard.complete(v.clone());
                    }
                    if let Some(remote) = remote {
                        if let Ok(v) = &result {
                            remote.set(&key, v, spec.l2_ttl).await;
                        }
                        if let Some(token) = lock {
                            remote.unlock(&key, &token).await;
                        }
                    }
                    return match result {
                        Ok(v) => Ok(served(stats, v, Source::Computed, start)),
                        Err(e) => {
                            stats.failed();
                            Err(e)
                        }
                    };
                }
            }
        }
    }

    /// The settings of `kind`.
    fn spec(&self, kind: &str) -> Result<&KindSpec, CacheError> {
        self.inner
            .kinds
            .get(kind)
            .ok_or_else(|| CacheError::UnknownKind(kind.to_owned()))
    }

    /// The cached value for (`kind`, `scope`, `material`), from L1 then L2, without computing
    /// anything: for values that are produced elsewhere and stored with [`Cache::put`] (a
    /// stream assembled while it was relayed). A miss is counted as one; `None` also when
    /// the scope's generation cannot be known.
    pub async fn get(
        &self,
        kind: &str,
        scope: &str,
        material: &[u8],
    ) -> Result<Option<Lookup>, CacheError> {
        let start = Instant::now();
        let spec = self.spec(kind)?;
        let stats = self.inner.stats.kind(spec.name);
        let Some(key) = self.key(spec.name, scope, material).await else {
            stats.bypassed(start.elapsed());
            return Ok(None);
        };
        if let Some(v) = self.inner.l1.get(&key) {
            return Ok(Some(served(stats, v, Source::L1, start)));
        }
        if let Some(remote) = self
            .inner
            .remote
            .as_ref()
            .filter(|_| !spec.l2_ttl.is_zero())
            && let Some(v) = remote.get(&key).await
        {
            if !spec.l1_ttl.is_zero() {
                self.inner.l1.insert(key, v.clone(), spec.l1_ttl);
            }
            return Ok(Some(served(stats, v, Source::L2, start)));
        }
        stats.miss(start.elapsed(), 0);
        Ok(None)
    }

    /// Stores `value` for (`kind`, `scope`, `material`) in every tier for the kind's TTLs;
    /// nothing when the scope's generation cannot be known (it could be stale at once).
    pub async fn put(
        &self,
        kind: &str,
        scope: &str,
        material: &[u8],
        value: Bytes,
    ) -> Result<(), CacheError> {
        let spec = self.spec(kind)?;
        let Some(key) = self.key(spec.name, scope, material).await else {
            return Ok(());
        };
        if let Some(remote) = self
            .inner
            .remote
            .as_ref()
            .filter(|_| !spec.l2_ttl.is_zero())
        {
            remote.set(&key, &value, spec.l2_ttl).await;
        }
        if !spec.l1_ttl.is_zero() {
            self.inner.l1.insert(key, value, spec.l1_ttl);
        }
        Ok(())
    }

    /// Removes every entry of `kind`, or of every kind when `None`, from L1 and L2.
    /// Generations are kept, so nothing stale can come back.
    pub async fn clear(&self, kind: Option<&str>) -> Cleared {
        let ns = &*self.inner.namespace;
        let l1 = match kind {
            Some(k) => self.inner.l1.retain(|key| !key_has_kind(ns, key, k)),
            None => self.inner.l1.clear(),
        };
        let l2 = match &self.inner.remote {
            Some(r) => match kind {
                Some(k) => r.delete_matching(&format!("{ns}:{k}:*"), |_| false).await,
                None => {
                    let (generations, locks) = (format!("{ns}:gen:"), format!("{ns}:lock:"));
                    r.delete_matching(&format!("{ns}:*"), |key| {
                        key.starts_with(&generations) || key.starts_with(&locks)
                    })
                    .await
                }
            },
            None => 0,
        };
        self.inner
            .stats
            .cleared
            .fetch_add(l1 + l2, std::sync::atomic::Ordering::Relaxed);
        Cleared { l1, l2 }
    }

    /// Hit, miss and size counters, per kind and tier.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot(
            &self.inner.l1,
            &self.inner.generations,
            self.inner.remote.as_ref().map(|r| r.stats()),
        )
    }

    /// Closes the Redis connections (no-op without Redis).
    pub async fn close(&self) {
        if let Some(r) = &self.inner.remote {
            r.quit().await;
        }
    }
}

/// A scope's generation as far as this process knows it without a round trip.
enum Generation<'a> {
    /// In force here.
    Known(u64),
    /// Redis is configured but cannot vouch for any generation: bypass the tiers.
    Unknowable,
    /// Not seen yet: ask Redis.
    Fetch(&'a remote::Remote),
}

/// `value` as `source` found or made it, counted in the kind's statistics: the clock is
/// read once, for the statistics and the answer alike.
fn served(stats: &stats::Counters, value: Bytes, source: Source, start: Instant) -> Lookup {
    let elapsed = start.elapsed();
    match source {
        Source::L1 => stats.hit_l1(elapsed),
        Source::L2 => stats.hit_l2(elapsed),
        Source::Joined => stats.joined(elapsed),
        Source::Computed => stats.miss(elapsed, value.len()),
        Source::Bypassed => stats.bypassed(elapsed),
    }
    Lookup {
        value,
        source,
        elapsed,
    }
}

fn make_key(namespace: &str, kind: &str, scope: &str, generation: u64, digest: &Digest) -> String {
    // Built in one allocation and without the formatter: this runs on every cache hit.
    let mut key = String::with_capacity(namespace.len() + 2 + kind.len() + scope.len() + 21 + 33);
    for part in [namespace, ":", kind, ":", scope, ":"] {
        key.push_str(part);
    }
    key.push_str(itoa::Buffer::new().format(generation));
    key.push(':');
    // Written as bytes and pushed once: a char at a time was half of this function's work.
    let mut hex = [0u8; 32];
    hex::encode_to_slice(digest.as_bytes(), &mut hex).unwrap_or_default();
    key.push_str(std::str::from_utf8(&hex).unwrap_or_default());
    key
}

fn key_has_kind(namespace: &str, key: &str, kind: &str) -> bool {
    key.strip_prefix(namespace)
        .and_then(|rest| rest.strip_prefix(':'))
        .and_then(|rest| rest.strip_prefix(kind))
        .is_some_and(|rest| rest.starts_with(':'))
}

#[cfg(test)]
mod tests;
