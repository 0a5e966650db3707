//! Per-tenant rate limits: GCRA, local to the process or shared by every instance through
//! Redis.
//!
//! Locally a tenant's state is one theoretical arrival time (TAT), updated by
//! compare-and-swap. Shared, the TAT lives in Redis (one script, on Redis's clock), and an
//! instance takes a *lease* of requests at a time (a twentieth of the rate, at least one,
//! at most the burst) and spends it locally for up to a second: one Redis round trip per
//! lease, not per request, so a cache hit stays in process. A lease not spent within its
//! second lapses; across N instances the shared rate can be exceeded by at most N leases at
//! any moment. When Redis cannot answer in time the local limit decides.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use strata_engine::TenantId;

use super::RateLimit;

/// One tenant's state.
#[derive(Default)]
pub(super) struct Cell {
    /// Local GCRA: the theoretical arrival time, ns since the limiter's epoch.
    tat: AtomicU64,
    /// Shared mode: requests left in the current lease.
    lease: AtomicU64,
    /// Shared mode: when the lease lapses, ns since the epoch.
    lease_until: AtomicU64,
    /// Shared mode: the burst room Redis last reported.
    remaining: AtomicU64,
}

/// A rate check's outcome.
pub(super) enum Verdict {
    /// Admitted, with this many requests left in the burst.
    Allow { remaining: u64, reset_secs: u64 },
    /// Refused; retry after this long.
    Deny { retry_after: Duration },
}

/// What the fast path decided: a verdict, or that Redis must be asked for a lease.
pub(super) enum Check {
    Now(Verdict),
    Ask(Arc<Cell>),
}

/// Tenants kept before idle ones are forgotten (an idle tenant's state equals a new one's).
const MAX_TENANTS: usize = 100_000;

pub(super) struct Limiter {
    pub(super) limit: RateLimit,
    interval: u64,
    window: u64,
    lease: u64,
    epoch: Instant,
    tenants: RwLock<HashMap<TenantId, Arc<Cell>>>,
    pub(super) policy: HeaderValue,
    shared: Option<strata_cache::Cache>,
    /// This limiter among others in the process (the per-thread memo's key).
    id: u64,
    /// Bumped whenever idle tenants are forgotten: a thread's memo from before no longer
    /// counts (it could hold a cell the map dropped, and two cells would split one limit).
    generation: AtomicU64,
}

thread_local! {
    /// Cells a thread looked up lately, per limiter, with the generation they were read
    /// under: a repeat reaches its tenant's cell without the map's lock word and the cell's
    /// reference count, lines both cores would otherwise write on every request.
    static CELLS: RefCell<crate::memo::PerOwner<TenantId, Arc<Cell>>> =
        RefCell::new(HashMap::default());
}

/// Limiters a thread keeps memos for, and tenants per limiter (then it starts over).
const CELLS_BOUNDS: (usize, usize) = (8, 1024);

/// `RateLimit-Policy` values, made once per distinct policy: a static header value is cloned
/// without touching a reference count.
fn policy_header(text: String) -> HeaderValue {
    static MADE: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut made = MADE.lock().unwrap_or_else(PoisonError::into_inner);
    let text: &'static str = match made.iter().find(|t| **t == text) {
        Some(t) => t,
        None => {
            let t: &'static str = Box::leak(text.into_boxed_str());
            made.push(t);
            t
        }
    };
    // Built from a formatted policy of digits and ASCII only, so always a valid value.
    HeaderValue::from_static(text)
}

impl Limiter {
    pub(super) fn new(limit: RateLimit, shared: Option<strata_cache::Cache>) -> Self {
        let per_second = u64::from(limit.per_second.max(1));
        let interval = 1_000_000_000 / per_second;
        let burst = u64::from(limit.burst.max(1));
        Self {
            limit,
            interval,
            window: interval * burst,
            lease: (per_second / 20).clamp(1, burst),
            epoch: Instant::now(),
            tenants: RwLock::new(HashMap::new()),
            policy: policy_header(format!(
                "\"tenant\";q={};w=1;burst={}",
                limit.per_second.max(1),
                burst
            )),
            shared: shared.filter(strata_cache::Cache::has_remote),
            id: crate::memo::owner_id(),
            generation: AtomicU64::new(0),
        }
    }

    /// Whether the limit is shared through Redis.
    pub(super) fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Runs `f` on the tenant's cell: from this thread's memo when it is current (no shared
    /// write), else from the map, remembered for next time. `f` must not check a rate.
    fn with_cell<R>(&self, tenant: &TenantId, f: impl FnOnce(&Arc<Cell>) -> R) -> R {
        let generation = self.generation.load(Ordering::Acquire);
        // On a miss the memo hands `f` back, unrun.
        let remembered =
            CELLS.with_borrow(
                |c| match crate::memo::recall(c, self.id, tenant, generation) {
                    Some(cell) => Ok(f(cell)),
                    None => Err(f),
                },
            );
        let f = match remembered {
            Ok(r) => return r,
            Err(f) => f,
        };
        let cell = self.shared_cell(tenant);
        CELLS.with_borrow_mut(|c| {
            crate::memo::remember(
                c,
                self.id,
                tenant.clone(),
                generation,
                Arc::clone(&cell),
                CELLS_BOUNDS,
            );
        });
        f(&cell)
    }

    fn shared_cell(&self, tenant: &TenantId) -> Arc<Cell> {
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
            tenants.retain(|_, c| {
                c.tat.load(Ordering::Relaxed) > now || c.lease_until.load(Ordering::Relaxed) > now
            });
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        tenants.entry(tenant.clone()).or_default().clone()
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The in-process decision: the local GCRA, or a request from the current lease, or
    /// "ask Redis".
    pub(super) fn check(&self, tenant: &TenantId) -> Check {
        self.with_cell(tenant, |cell| {
            if self.shared.is_none() {
                return Check::Now(self.local(cell));
            }
            let now = self.now();
            if cell.lease_until.load(Ordering::Acquire) > now
                && cell
                    .lease
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                    .is_ok()
            {
                return Check::Now(Verdict::Allow {
                    remaining: cell.remaining.load(Ordering::Relaxed),
                    reset_secs: 1,
                });
            }
            Check::Ask(Arc::clone(cell))
        })
    }

    /// Takes a lease from the shared rate (the local limit decides when Redis cannot).
    pub(super) async fn ask(self: Arc<Self>, tenant: TenantId, cell: Arc<Cell>) -> Verdict {
        let Some(cache) = &self.shared else {
            return self.local(&cell);
        };
        let lease = u32::try_from(self.lease).unwrap_or(u32::MAX);
        let name = format!("tenant:{tenant}");
        match cache
            .take_rate(&name, self.limit.per_second, self.limit.burst, lease)
            .await
        {
            Some(strata_cache::RateTake::Taken { remaining }) => {
                cell.remaining.store(remaining, Ordering::Relaxed);
                cell.lease.store(self.lease - 1, Ordering::Release);
                cell.lease_until
                    .store(self.now() + 1_000_000_000, Ordering::Release);
                Verdict::Allow {
                    remaining,
                    reset_secs: 1,
                }
            }
            Some(strata_cache::RateTake::Refused { retry_after }) if self.lease > 1 => {
                // The whole lease does not fit; one request may.
                match cache
                    .take_rate(&name, self.limit.per_second, self.limit.burst, 1)
                    .await
                {
                    Some(strata_cache::RateTake::Taken { remaining }) => Verdict::Allow {
                        remaining,
                        reset_secs: 1,
                    },
                    Some(strata_cache::RateTake::Refused { retry_after }) => {
                        Verdict::Deny { retry_after }
                    }
                    None => Verdict::Deny { retry_after },
                }
            }
            Some(strata_cache::RateTake::Refused { retry_after }) => Verdict::Deny { retry_after },
            None => self.local(&cell),
        }
    }

    fn local(&self, cell: &Cell) -> Verdict {
        let now = self.now();
        let mut tat = cell.tat.load(Ordering::Acquire);
        loop {
            let next = tat.max(now) + self.interval;
            let ahead = next - now;
            if ahead > self.window {
                return Verdict::Deny {
                    retry_after: Duration::from_nanos(ahead - self.window),
                };
            }
            match cell
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
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
