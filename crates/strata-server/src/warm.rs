//! Cache warming: each tenant's most frequent recent searches are tracked cheaply and
//! recomputed into the cache on startup, shortly after the tenant's data changes (a write
//! makes its cached answers unreachable), and on a schedule (before their TTL runs out), so
//! the first user after a restart or a write gets a hit.
//!
//! Tracking is a bounded map per tenant, sampled (see [`Warmer::record`]) and updated under
//! `try_lock` (a busy map skips the sample rather than making a request wait); counts halve
//! on every scheduled pass, so "frequent" means frequent lately. The list survives restarts in the data directory.
//!
//! Owns: the hot-query list and the warming task. Must not import: route handlers other
//! than search's cached path.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_cache::{Digest, FastHashBuilder};
use strata_engine::TenantId;
use strata_engine::search::SearchRequest;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::AppState;

/// Tenants tracked at most.
const MAX_TENANTS: usize = 10_000;
/// Distinct queries tracked per tenant at most (the least frequent is dropped).
const MAX_PER_TENANT: usize = 256;
/// Of the searches of a query a thread has recorded before, one in this many is counted.
const SAMPLE: u32 = 16;
/// Queries a thread remembers having recorded (forgotten all at once when full).
const SEEN_PER_THREAD: usize = 4096;

/// What one thread knows of the searches it served (see [`Warmer::record`]).
#[derive(Default)]
struct Seen {
    /// Searches of queries this thread had already recorded.
    calls: u32,
    /// Hashes `recorded`'s keys. One per thread and kept: a hash builder made per call is
    /// seeded afresh, so the same query would hash differently every time.
    hasher: FastHashBuilder,
    /// The queries (hashed with their tenant) this thread has recorded.
    recorded: HashSet<u64>,
}

thread_local! {
    static SEEN: std::cell::RefCell<Seen> = std::cell::RefCell::default();
}

/// Wait after a write before warming, so a burst of writes warms once.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// How warming runs.
#[derive(Debug, Clone)]
pub struct WarmSettings {
    /// Searches recomputed per tenant; 0 turns warming (and tracking) off.
    pub queries_per_tenant: usize,
    /// Interval of the scheduled pass.
    pub interval: Duration,
}

impl Default for WarmSettings {
    fn default() -> Self {
        Self {
            queries_per_tenant: 20,
            interval: Duration::from_secs(300),
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct Hot {
    request: SearchRequest,
    count: u32,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    tenant: String,
    queries: Vec<Hot>,
}

/// Tracked searches per tenant, by their cache key's digest; hashed on every search, so with
/// the cache's fast hasher.
type HotMap = HashMap<TenantId, HashMap<Digest, Hot, FastHashBuilder>, FastHashBuilder>;

/// The hot-query tracker and warming state.
pub struct Warmer {
    settings: WarmSettings,
    hot: Mutex<HotMap>,
    touched: Mutex<HashSet<TenantId>>,
    wake: Notify,
    path: Option<PathBuf>,
    warmed: AtomicU64,
    passes: AtomicU64,
}

/// Warming counters, for the stats endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct WarmStats {
    /// Searches recomputed per tenant (0: off).
    pub queries_per_tenant: usize,
    /// Tenants with tracked searches.
    pub tenants: usize,
    /// Searches recomputed into the cache so far.
    pub warmed: u64,
    /// Warming passes run.
    pub passes: u64,
}

impl Warmer {
    /// A warmer persisting its list at `path` (none: not persisted).
    pub fn new(settings: WarmSettings, path: Option<PathBuf>) -> Self {
        let hot = path.as_deref().map(load).unwrap_or_default();
        Self {
            settings,
            hot: Mutex::new(hot),
            touched: Mutex::default(),
            wake: Notify::new(),
            path,
            warmed: AtomicU64::new(0),
            passes: AtomicU64::new(0),
        }
    }

    fn enabled(&self) -> bool {
        self.settings.queries_per_tenant > 0
    }

    /// Counts one search (cheap; skipped when the map is busy).
    ///
    /// The map is shared by every worker thread, so it is not touched on every search: a
    /// query a thread has not recorded yet is recorded (with a count of 1), and of the
    /// searches of queries it has, one in [`SAMPLE`] is counted, as [`SAMPLE`] (an unbiased
    /// estimate of each query's frequency). Taking the map's lock on every cache hit cost
    /// the shipped binary's hits 6-14% of their throughput on two cores (BENCHMARKS.md).
    pub fn record(&self, tenant: &TenantId, key: Digest, request: &SearchRequest) {
        use std::hash::{BuildHasher as _, Hash as _, Hasher as _};
        if !self.enabled() {
            return;
        }
        let weight = SEEN.with_borrow_mut(|seen| {
            let mut h = seen.hasher.build_hasher();
            tenant.as_str().hash(&mut h);
            key.hash(&mut h);
            let key = h.finish();
            if seen.recorded.insert(key) {
                if seen.recorded.len() > SEEN_PER_THREAD {
                    seen.recorded.clear();
                    seen.recorded.insert(key);
                }
                return Some(1);
            }
            seen.calls = seen.calls.wrapping_add(1);
            seen.calls.is_multiple_of(SAMPLE).then_some(SAMPLE)
        });
        let Some(weight) = weight else {
            return;
        };
        let Ok(mut hot) = self.hot.try_lock() else {
            return;
        };
        // The common case, a repeat of a known query, allocates nothing.
        if let Some(h) = hot.get_mut(tenant).and_then(|q| q.get_mut(&key)) {
            h.count = h.count.saturating_add(weight);
            return;
        }
        if !hot.contains_key(tenant) && hot.len() >= MAX_TENANTS {
            return;
        }
        let queries = hot.entry(tenant.clone()).or_default();
        if queries.len() >= MAX_PER_TENANT
            && let Some(coldest) = queries.iter().min_by_key(|(_, h)| h.count).map(|(k, _)| *k)
        {
            queries.remove(&coldest);
        }
        queries.insert(
            key,
            Hot {
                request: request.clone(),
                count: weight,
            },
        );
    }

    /// The tenant's data changed: warm its searches again soon.
    pub fn touch(&self, tenant: &TenantId) {
        if !self.enabled() {
            return;
        }
        self.touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.clone());
        self.wake.notify_one();
    }

    /// Counters.
    pub fn stats(&self) -> WarmStats {
        WarmStats {
            queries_per_tenant: self.settings.queries_per_tenant,
            tenants: self.hot.lock().map(|h| h.len()).unwrap_or(0),
            warmed: self.warmed.load(Ordering::Relaxed),
            passes: self.passes.load(Ordering::Relaxed),
        }
    }

    fn top(&self, tenant: &TenantId) -> Vec<SearchRequest> {
        let hot = self.hot.lock().unwrap_or_else(|p| p.into_inner());
        let Some(queries) = hot.get(tenant) else {
            return Vec::new();
        };
        let mut all: Vec<_> = queries.iter().collect();
        all.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(b.0)));
        all.into_iter()
            .take(self.settings.queries_per_tenant)
            .map(|(_, h)| h.request.clone())
            .collect()
    }

    fn tenants(&self) -> Vec<TenantId> {
        let hot = self.hot.lock().unwrap_or_else(|p| p.into_inner());
        hot.keys().cloned().collect()
    }

    /// Halves every count and forgets queries that fell to zero.
    fn decay(&self) {
        let mut hot = self.hot.lock().unwrap_or_else(|p| p.into_inner());
        for queries in hot.values_mut() {
            queries.retain(|_, h| {
                h.count /= 2;
                h.count > 0
            });
        }
        hot.retain(|_, q| !q.is_empty());
    }

    fn save(&self) {
        let Some(path) = &self.path else {
            return;
        };
        let saved: Vec<Saved> = {
            let hot = self.hot.lock().unwrap_or_else(|p| p.into_inner());
            hot.iter()
                .map(|(t, q)| Saved {
                    tenant: t.as_str().to_owned(),
                    queries: q.values().cloned().collect(),
                })
                .collect()
        };
        let tmp = path.with_extension("tmp");
        let written = serde_json::to_vec(&saved)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            warn!(error = %e, path = %path.display(), "could not save the hot-query list");
        }
    }
}

fn load(path: &std::path::Path) -> HotMap {
    let Ok(bytes) = std::fs::read(path) else {
        return HotMap::default();
    };
    let Ok(saved) = serde_json::from_slice::<Vec<Saved>>(&bytes) else {
        warn!(path = %path.display(), "ignoring an unreadable hot-query list");
        return HotMap::default();
    };
    saved
        .into_iter()
        .filter_map(|s| Some((TenantId::parse(&s.tenant).ok()?, s.queries)))
        .map(|(t, queries)| {
            // Keyed by the request's JSON until `rekey` computes each one's cache key.
            let by_request = queries
                .into_iter()
                .filter_map(|h| Some((Digest::of(&serde_json::to_vec(&h.request).ok()?), h)))
                .collect();
            (t, by_request)
        })
        .collect()
}

/// Runs warming until `shutdown`: a pass at start, after writes (debounced), and on the
/// schedule; saves the list on every scheduled pass and at the end.
pub(crate) async fn run(app: AppState, shutdown: CancellationToken) {
    let w = &app.warmer;
    if !w.enabled() {
        return;
    }
    rekey(&app);
    let mut jobs = app.engine.jobs().subscribe_jobs();
    let mut tick = tokio::time::interval(w.settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {
                if !first {
                    w.decay();
                }
                let tenants = w.tenants();
                pass(&app, &tenants, &shutdown).await;
                if first && !tenants.is_empty() {
                    info!(tenants = tenants.len(), "cache warmed from the hot-query list");
                }
                first = false;
                w.save();
            }
            () = w.wake.notified() => {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(DEBOUNCE) => {}
                }
                let tenants: Vec<TenantId> = w
                    .touched
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .drain()
                    .collect();
                pass(&app, &tenants, &shutdown).await;
            }
            ev = jobs.recv() => match ev {
                Ok(ev) if ev.job.status.is_terminal() => w.touch(&ev.owner),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => {}
            },
        }
    }
    w.save();
}

/// Loaded entries have no cache key yet (it depends on this process's engine settings).
fn rekey(app: &AppState) {
    let policy = app.engine.cache_policy();
    let mut hot = app.warmer.hot.lock().unwrap_or_else(|p| p.into_inner());
    for (tenant, queries) in hot.iter_mut() {
        *queries = std::mem::take(queries)
            .into_values()
            .map(|h| (policy.search(tenant, &h.request).keyed().digest, h))
            .collect();
    }
}

async fn pass(app: &AppState, tenants: &[TenantId], shutdown: &CancellationToken) {
    app.warmer.passes.fetch_add(1, Ordering::Relaxed);
    for tenant in tenants {
        for request in app.warmer.top(tenant) {
            if shutdown.is_cancelled() {
                return;
            }
            let read = app.engine.cache_policy().search(tenant, &request).keyed();
            match crate::cached::search(app, tenant, read, &request).await {
                Ok(l) if !l.source.is_hit() => {
                    app.warmer.warmed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => debug!(error = ?e, "warming a search failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(q: &str) -> SearchRequest {
        serde_json::from_value(serde_json::json!({ "query": q })).unwrap()
    }

    #[test]
    fn keeps_the_most_frequent_recent_queries_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hot.json");
        let w = Warmer::new(
            WarmSettings {
                queries_per_tenant: 2,
                interval: Duration::from_secs(60),
            },
            Some(path.clone()),
        );
        let t = TenantId::local();
        // One thread, so its counter decides: a is counted 1 + 9 x 16 (its 159 repeats
        // are calls 1-159: sampled at 16, 32 ... 144), b 1, c 1 + 3 x 16 (calls 160-206).
        for (q, n) in [("a", 160), ("b", 1), ("c", 48)] {
            for _ in 0..n {
                w.record(&t, Digest::of(q.as_bytes()), &req(q));
            }
        }
        let count = |q: &str| w.hot.lock().unwrap()[&t][&Digest::of(q.as_bytes())].count;
        assert_eq!((count("a"), count("b"), count("c")), (145, 1, 49));
        let top: Vec<String> = w.top(&t).into_iter().map(|r| r.query).collect();
        assert_eq!(top, ["a", "c"]);
        w.decay();
        let left: Vec<String> = w.top(&t).into_iter().map(|r| r.query).collect();
        assert_eq!(left, ["a", "c"], "b decayed to zero and was forgotten");
        w.save();
        let again = Warmer::new(w.settings.clone(), Some(path));
        assert_eq!(again.tenants(), vec![t]);
    }
}
