//! The budget service: tenants' token and cost limits per window, reservations made at
//! admission and settled (or released) when a call ends, and the daily usage ledger. The
//! gateway asks it before every upstream call; the atomicity lives in the store (see
//! [`crate::store::budgets`]), so any number of processes over one database share limits.
//!
//! A reservation carries a lease: a process that dies mid-call leaves it to the sweep of any
//! process, which releases it once the lease ends.
//!
//! Holds only what it uses: the store, the cache policy (`budget_status` reads are
//! invalidated by every reservation, settlement and limit change), and the tracker of
//! writes that must finish even if their caller goes away.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::{Writes, paged};
use crate::budget::{Limit, Period, Reservation, Spend, UsageEntry, UsageRow, WindowStatus, usd};
use crate::error::{EngineError, Result};
use crate::ids::TenantId;
use crate::model::Page;
use crate::policy::{CachePolicy, Changed};
use crate::store::{Store, UsageFilter};

/// How long a reservation holds before any process may release it (longer than any call).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(900);

/// How often counted calls are written to the usage ledger.
pub const LEDGER_FLUSH: Duration = Duration::from_millis(250);

/// Calls counted but not yet written, by tenant, day and model.
pub(super) type PendingLedger = std::sync::Mutex<
    std::collections::HashMap<(TenantId, String, String), crate::budget::UsageDelta>,
>;

/// One limit as the API sets it: dollars, not micro-dollars.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    /// The window it resets over.
    pub period: Period,
    /// Most tokens (prompt and completion) per window; null: not limited.
    pub max_tokens: Option<i64>,
    /// Most US dollars per window; null: not limited.
    pub max_cost_usd: Option<f64>,
}

/// A tenant's budget as `GET /v1/budget` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BudgetView {
    /// Whose.
    pub tenant: String,
    /// One per limit; empty when the tenant is not limited.
    pub windows: Vec<WindowStatus>,
}

/// The budget service (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct BudgetService {
    pub(super) store: Arc<dyn Store>,
    pub(super) policy: CachePolicy,
    pub(super) writes: Arc<Writes>,
    pub(super) lease: Duration,
    pub(super) ledger: Arc<PendingLedger>,
    pub(super) totals: Arc<UsageTotals>,
}

/// Calls this process answered since it started, by upstream model (at most
/// [`MAX_TOTAL_MODELS`]; later models count under `other`), for the metrics registry.
pub(super) type UsageTotals =
    std::sync::Mutex<std::collections::BTreeMap<String, crate::budget::UsageDelta>>;

/// Models the process totals keep apart: metrics labels must stay few.
pub const MAX_TOTAL_MODELS: usize = 64;

impl BudgetService {
    /// Replaces the owner's limits for the periods given (a limit with neither maximum
    /// removes that period's).
    pub async fn set_limits(&self, owner: &TenantId, limits: &[LimitSpec]) -> Result<()> {
        for (i, l) in limits.iter().enumerate() {
            if l.max_tokens.is_some_and(|t| t < 0) {
                return Err(EngineError::invalid(
                    format!("limits[{i}].max_tokens"),
                    "must not be negative",
                ));
            }
            if l.max_cost_usd.is_some_and(|c| !(0.0..=1e9).contains(&c)) {
                return Err(EngineError::invalid(
                    format!("limits[{i}].max_cost_usd"),
                    "must be between 0 and 1e9",
                ));
            }
            if limits[..i].iter().any(|o| o.period == l.period) {
                return Err(EngineError::invalid(
                    format!("limits[{i}].period"),
                    "is given twice",
                ));
            }
        }
        for l in limits {
            let limit = Limit {
                period: l.period,
                max_tokens: l.max_tokens,
                max_cost_micros: l.max_cost_usd.map(crate::budget::micros),
            };
            self.store.set_limit(owner, &limit).await?;
        }
        self.policy.changed(owner, Changed::Budget).await;
        Ok(())
    }

    /// Reserves `estimate` in every window of the owner's limits. [`Reservation::Held`] must
    /// be ended by [`BudgetService::settle`] (or released) exactly once.
    pub async fn reserve(&self, owner: &TenantId, estimate: Spend) -> Result<Reservation> {
        // Most tenants have no limit: say so from the cache, not the database. The store
        // reads the limits again inside its transaction for the others.
        let read = self.policy.budget_limited(owner).keyed();
        let limited = self
            .policy
            .get_or_compute(&read, || async {
                let any = !self.store.limits(owner).await?.is_empty();
                Ok::<_, EngineError>(bytes::Bytes::from_static(if any { b"1" } else { b"0" }))
            })
            .await?;
        if limited.value.as_ref() == b"0" {
            return Ok(Reservation::Unlimited);
        }
        let now = Utc::now().timestamp_millis();
        let id = uuid::Uuid::now_v7().to_string();
        let lease = now.saturating_add(self.lease.as_millis() as i64);
        let r = self.store.reserve(owner, &id, estimate, now, lease).await?;
        if matches!(r, Reservation::Held(_)) {
            self.policy.changed(owner, Changed::Budget).await;
        }
        Ok(r)
    }

    /// Ends reservation `id` with what the call really spent (zero to release it), off the
    /// caller's path: it completes even if the caller goes away.
    pub fn settle(&self, owner: &TenantId, id: String, spent: Spend) {
        let (store, policy, owner) = (self.store.clone(), self.policy.clone(), owner.clone());
        self.writes.spawn(async move {
            match store.settle(&id, spent).await {
                Ok(Some(_)) => policy.changed(&owner, Changed::Budget).await,
                Ok(None) => {}
                Err(e) => warn!(error = %e, reservation = %id, "settling a reservation failed; its lease will release it"),
            }
        });
    }

    /// Adds a finished call to the owner's ledger: counted in memory at once, written with
    /// the other calls of the same tenant, day and model by the ledger's next flush (every
    /// [`LEDGER_FLUSH`], and at shutdown), so a cache hit costs no database write.
    pub fn record(&self, owner: &TenantId, entry: UsageEntry) {
        let day = crate::budget::day_of(Utc::now());
        {
            let mut totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
            let known = totals.contains_key(&entry.model) || totals.len() < MAX_TOTAL_MODELS;
            let model = if known { entry.model.as_str() } else { "other" };
            if let Some(t) = totals.get_mut(model) {
                t.add(&entry);
            } else {
                totals.entry(model.to_owned()).or_default().add(&entry);
            }
        }
        let mut pending = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        pending
            .entry((owner.clone(), day, entry.model.clone()))
            .or_default()
            .add(&entry);
    }

    /// Calls this process answered since it started, by upstream model: what the ledger
    /// gets, summed, for the metrics registry and the gateway's statistics.
    pub fn totals(&self) -> Vec<(String, crate::budget::UsageDelta)> {
        let totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        totals.iter().map(|(m, d)| (m.clone(), *d)).collect()
    }

    /// Writes the calls counted since the last flush.
    pub async fn flush_ledger(&self) {
        let batch = std::mem::take(&mut *self.ledger.lock().unwrap_or_else(|p| p.into_inner()));
        for ((owner, day, model), delta) in batch {
            if let Err(e) = self.store.record_usage(&owner, &day, &model, &delta).await {
                warn!(error = %e, requests = delta.requests, "recording usage failed; those calls are not in the ledger");
            }
        }
    }

    /// Flushes the ledger every [`LEDGER_FLUSH`] until `shutdown`, then once more.
    pub fn spawn_ledger(&self, tracker: &TaskTracker, shutdown: &CancellationToken) {
        let (this, shutdown) = (self.clone(), shutdown.clone());
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(LEDGER_FLUSH) => this.flush_ledger().await,
                }
            }
            this.flush_ledger().await;
        });
    }

    /// The owner's windows now.
    pub async fn status(&self, owner: &TenantId) -> Result<BudgetView> {
        let now = Utc::now();
        let windows = self
            .store
            .windows(owner, now.timestamp_millis())
            .await?
            .into_iter()
            .map(|(limit, start, used, reserved)| {
                let (_, end) = limit
                    .period
                    .window(Utc.timestamp_millis_opt(start).single().unwrap_or(now));
                WindowStatus {
                    period: limit.period,
                    window_start: Utc.timestamp_millis_opt(start).single().unwrap_or(now),
                    resets_at: Utc.timestamp_millis_opt(end).single().unwrap_or(now),
                    max_tokens: limit.max_tokens,
                    max_cost_usd: limit.max_cost_micros.map(usd),
                    used_tokens: used.tokens,
                    used_cost_usd: usd(used.cost_micros),
                    reserved_tokens: reserved.tokens,
                    reserved_cost_usd: usd(reserved.cost_micros),
                }
            })
            .collect();
        Ok(BudgetView {
            tenant: owner.as_str().to_owned(),
            windows,
        })
    }

    /// A page of the owner's usage ledger, newest day first.
    pub async fn usage(
        &self,
        owner: &TenantId,
        filter: &UsageFilter,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<UsageRow>> {
        for (field, day) in [("from", &filter.from), ("to", &filter.to)] {
            if let Some(d) = day
                && chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_err()
            {
                return Err(EngineError::invalid(field, "must be a day, YYYY-MM-DD"));
            }
        }
        let fingerprint = [
            filter.from.as_deref().unwrap_or(""),
            filter.to.as_deref().unwrap_or(""),
            filter.model.as_deref().unwrap_or(""),
        ];
        paged(
            limit,
            cursor,
            &fingerprint,
            |before: Option<String>, limit| async move {
                let before = before.as_deref().and_then(|b| b.split_once('\u{1f}'));
                self.store.usage(owner, filter, before, limit).await
            },
            |r: &UsageRow| format!("{}\u{1f}{}", r.day, r.model),
        )
        .await
    }

    /// Releases reservations whose lease ended (their process died mid-call), every
    /// `every`, until `shutdown`.
    pub fn spawn_sweeper(
        &self,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
        every: Duration,
    ) {
        let (this, shutdown) = (self.clone(), shutdown.clone());
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
                let now = Utc::now().timestamp_millis();
                let ids = match this.store.expired_reservations(now, 500).await {
                    Ok(ids) => ids,
                    Err(e) => {
                        warn!(error = %e, "listing expired reservations failed");
                        continue;
                    }
                };
                for id in ids {
                    match this.store.settle(&id, Spend::default()).await {
                        Ok(Some(owner)) => {
                            warn!(reservation = %id, "released a reservation whose lease ended (its call's process stopped)");
                            this.policy.changed(&owner, Changed::Budget).await;
                        }
                        Ok(None) => {}
                        Err(e) => warn!(error = %e, "releasing an expired reservation failed"),
                    }
                }
            }
        });
    }
}
