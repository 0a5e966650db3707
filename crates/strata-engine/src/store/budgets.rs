//! The budgets aggregate: tenants' limits, the usage and reservations of each window, and
//! the daily usage ledger; its SQL written once for both backends (see [`super::queue`]).
//!
//! A reservation is one transaction: for every limit of the tenant, the window's row is made
//! if missing and then raised by the estimate with a guarded `UPDATE ... WHERE used +
//! reserved + estimate <= limit`; if any window refuses, nothing is kept. The guard is
//! evaluated under the row's write lock (SQLite's `BEGIN IMMEDIATE`, PostgreSQL's row lock,
//! which re-checks the condition on the row it waited for), so concurrent first requests
//! can never together pass a limit. A reservation row names its windows and carries a lease:
//! settling or releasing deletes the row first and adjusts the windows only if it was still
//! there, so each reservation is undone exactly once, whoever ends it (the call, or the sweep
//! of a crashed process's leases).
//!
//! Must not import: HTTP types, the cache, the job runner.

use async_trait::async_trait;

use crate::budget::{Limit, Period, Reservation, Spend, UsageDelta, UsageRow};
use crate::error::Result;
use crate::ids::TenantId;

/// Budgets, reservations and the usage ledger.
#[async_trait]
pub trait BudgetStore: Send + Sync + 'static {
    /// The owner's limits, by period.
    async fn limits(&self, owner: &TenantId) -> Result<Vec<Limit>>;

    /// Sets (or, with neither maximum, removes) the owner's limit for its period.
    async fn set_limit(&self, owner: &TenantId, limit: &Limit) -> Result<()>;

    /// Reserves `estimate` in every window of the owner's limits at `now_ms` (see the module
    /// doc), under `id`, until `lease_until_ms`.
    async fn reserve(
        &self,
        owner: &TenantId,
        id: &str,
        estimate: Spend,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<Reservation>;

    /// Ends reservation `id`: its estimate leaves the windows it was made in, and `spent`
    /// (the call's real usage) is added to them. Its owner, or `None` (nothing changed) when
    /// it had already ended.
    async fn settle(&self, id: &str, spent: Spend) -> Result<Option<TenantId>>;

    /// Ids of reservations whose lease ended before `now_ms` (at most `limit`).
    async fn expired_reservations(&self, now_ms: i64, limit: u32) -> Result<Vec<String>>;

    /// Adds calls to the owner's ledger row for `day` and `model`.
    async fn record_usage(
        &self,
        owner: &TenantId,
        day: &str,
        model: &str,
        delta: &UsageDelta,
    ) -> Result<()>;

    /// The owner's windows current at `now_ms`: (limit, window start, used, reserved).
    async fn windows(
        &self,
        owner: &TenantId,
        now_ms: i64,
    ) -> Result<Vec<(Limit, i64, Spend, Spend)>>;

    /// Up to `limit` ledger rows of the owner's, by (day, model) descending, strictly after
    /// the cursor `before` (day, model), within `[from, to]` days and of `model` if given.
    async fn usage(
        &self,
        owner: &TenantId,
        filter: &UsageFilter,
        before: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<Vec<UsageRow>>;
}

/// Which ledger rows `GET /v1/usage` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageFilter {
    /// First day, inclusive (`YYYY-MM-DD`).
    pub from: Option<String>,
    /// Last day, inclusive.
    pub to: Option<String>,
    /// Only this model.
    pub model: Option<String>,
}

/// No limit, as the guard compares it (far above any sum of i64 spends that fits).
pub(crate) const UNLIMITED: i64 = i64::MAX / 4;

/// A reservation's windows as stored: `period:start` pairs, comma separated.
pub(crate) fn windows_text(windows: &[(Period, i64)]) -> String {
    windows
        .iter()
        .map(|(p, s)| format!("{}:{s}", p.as_str()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Inverse of [`windows_text`] (unreadable pairs are skipped).
pub(crate) fn parse_windows(text: &str) -> Vec<(Period, i64)> {
    text.split(',')
        .filter_map(|pair| {
            let (p, s) = pair.split_once(':')?;
            Some((Period::parse(p)?, s.parse().ok()?))
        })
        .collect()
}

/// Reads a limit row (`period, max_tokens, max_cost`).
pub(crate) fn limit_from_row<'r, R>(row: &'r R) -> Result<Limit>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let period: String = row.try_get("period")?;
    Ok(Limit {
        period: Period::parse(&period)
            .ok_or_else(|| super::rows::corrupt("budget period", &period))?,
        max_tokens: row.try_get("max_tokens")?,
        max_cost_micros: row.try_get("max_cost")?,
    })
}

/// Reads a ledger row.
pub(crate) fn usage_from_row<'r, R>(row: &'r R) -> Result<UsageRow>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    use crate::budget::usd;
    Ok(UsageRow {
        day: row.try_get("day")?,
        model: row.try_get("model")?,
        requests: row.try_get("requests")?,
        cached_requests: row.try_get("cached_requests")?,
        prompt_tokens: row.try_get("prompt_tokens")?,
        completion_tokens: row.try_get("completion_tokens")?,
        cost_usd: usd(row.try_get("cost")?),
        saved_tokens: row.try_get("saved_tokens")?,
        saved_cost_usd: usd(row.try_get("saved_cost")?),
    })
}

/// [`BudgetStore`] over one backend's store type (`conn()` and `begin()`).
macro_rules! budgets_sql {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::budgets::BudgetStore for $store {
            async fn limits(
                &self,
                owner: &$crate::ids::TenantId,
            ) -> $crate::error::Result<Vec<$crate::budget::Limit>> {
                let rows = sqlx::query(
                    "SELECT period, max_tokens, max_cost FROM budgets WHERE owner = $1 \
                     ORDER BY period",
                )
                .bind(owner.as_str())
                .fetch_all(&mut *self.conn().await?)
                .await?;
                rows.iter()
                    .map($crate::store::budgets::limit_from_row)
                    .collect()
            }

            async fn set_limit(
                &self,
                owner: &$crate::ids::TenantId,
                limit: &$crate::budget::Limit,
            ) -> $crate::error::Result<()> {
                let mut conn = self.conn().await?;
                if limit.max_tokens.is_none() && limit.max_cost_micros.is_none() {
                    sqlx::query("DELETE FROM budgets WHERE owner = $1 AND period = $2")
                        .bind(owner.as_str())
                        .bind(limit.period.as_str())
                        .execute(&mut *conn)
                        .await?;
                    return Ok(());
                }
                sqlx::query(
                    "INSERT INTO budgets (owner, period, max_tokens, max_cost) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (owner, period) DO UPDATE SET \
                     max_tokens = excluded.max_tokens, max_cost = excluded.max_cost",
                )
                .bind(owner.as_str())
                .bind(limit.period.as_str())
                .bind(limit.max_tokens)
                .bind(limit.max_cost_micros)
                .execute(&mut *conn)
                .await?;
                Ok(())
            }

            async fn reserve(
                &self,
                owner: &$crate::ids::TenantId,
                id: &str,
                estimate: $crate::budget::Spend,
                now_ms: i64,
                lease_until_ms: i64,
            ) -> $crate::error::Result<$crate::budget::Reservation> {
                use $crate::budget::Reservation;
                use $crate::store::budgets::UNLIMITED;
                // Most tenants have no budget: answer them without a write transaction.
                let limits = self.limits(owner).await?;
                if limits.is_empty() {
                    return Ok(Reservation::Unlimited);
                }
                let now = $crate::store::rows::from_ms(now_ms)?;
                let mut tx = self.begin().await?;
                // Read again under the write lock: a limit set meanwhile counts.
                let rows = sqlx::query(
                    "SELECT period, max_tokens, max_cost FROM budgets WHERE owner = $1 \
                     ORDER BY period",
                )
                .bind(owner.as_str())
                .fetch_all(&mut *tx)
                .await?;
                let limits = rows
                    .iter()
                    .map($crate::store::budgets::limit_from_row)
                    .collect::<$crate::error::Result<Vec<_>>>()?;
                if limits.is_empty() {
                    return Ok(Reservation::Unlimited);
                }
                let mut windows = Vec::with_capacity(limits.len());
                for limit in &limits {
                    let (start, end) = limit.period.window(now);
                    sqlx::query(
                        "INSERT INTO budget_windows (owner, period, window_start, used_tokens, \
                         used_cost, reserved_tokens, reserved_cost) VALUES ($1, $2, $3, 0, 0, 0, 0) \
                         ON CONFLICT (owner, period, window_start) DO NOTHING",
                    )
                    .bind(owner.as_str())
                    .bind(limit.period.as_str())
                    .bind(start)
                    .execute(&mut *tx)
                    .await?;
                    let done = sqlx::query(
                        "UPDATE budget_windows SET reserved_tokens = reserved_tokens + $1, \
                         reserved_cost = reserved_cost + $2 \
                         WHERE owner = $3 AND period = $4 AND window_start = $5 \
                         AND used_tokens + reserved_tokens + $1 <= $6 \
                         AND used_cost + reserved_cost + $2 <= $7",
                    )
                    .bind(estimate.tokens)
                    .bind(estimate.cost_micros)
                    .bind(owner.as_str())
                    .bind(limit.period.as_str())
                    .bind(start)
                    .bind(limit.max_tokens.unwrap_or(UNLIMITED))
                    .bind(limit.max_cost_micros.unwrap_or(UNLIMITED))
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 0 {
                        tx.rollback().await?;
                        return Ok(Reservation::Denied {
                            period: limit.period,
                            resets_at_ms: end,
                        });
                    }
                    windows.push((limit.period, start));
                }
                sqlx::query(
                    "INSERT INTO budget_reservations (id, owner, windows, tokens, cost, \
                     lease_until) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(id)
                .bind(owner.as_str())
                .bind($crate::store::budgets::windows_text(&windows))
                .bind(estimate.tokens)
                .bind(estimate.cost_micros)
                .bind(lease_until_ms)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Reservation::Held(id.to_owned()))
            }

            async fn settle(
                &self,
                id: &str,
                spent: $crate::budget::Spend,
            ) -> $crate::error::Result<Option<$crate::ids::TenantId>> {
                use sqlx::Row as _;
                let mut tx = self.begin().await?;
                let row = sqlx::query(
                    "DELETE FROM budget_reservations WHERE id = $1 \
                     RETURNING owner, windows, tokens, cost",
                )
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let owner: String = row.try_get("owner")?;
                let windows: String = row.try_get("windows")?;
                let tokens: i64 = row.try_get("tokens")?;
                let cost: i64 = row.try_get("cost")?;
                for (period, start) in $crate::store::budgets::parse_windows(&windows) {
                    sqlx::query(
                        "UPDATE budget_windows SET reserved_tokens = reserved_tokens - $1, \
                         reserved_cost = reserved_cost - $2, used_tokens = used_tokens + $3, \
                         used_cost = used_cost + $4 \
                         WHERE owner = $5 AND period = $6 AND window_start = $7",
                    )
                    .bind(tokens)
                    .bind(cost)
                    .bind(spent.tokens)
                    .bind(spent.cost_micros)
                    .bind(&owner)
                    .bind(period.as_str())
                    .bind(start)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                $crate::ids::TenantId::from_stored(&owner)
                    .map(Some)
                    .map_err(|e| $crate::store::rows::corrupt("reservation owner", e))
            }

            async fn expired_reservations(
                &self,
                now_ms: i64,
                limit: u32,
            ) -> $crate::error::Result<Vec<String>> {
                let ids: Vec<String> = sqlx::query_scalar(
                    "SELECT id FROM budget_reservations WHERE lease_until < $1 LIMIT $2",
                )
                .bind(now_ms)
                .bind(i64::from(limit))
                .fetch_all(&mut *self.conn().await?)
                .await?;
                Ok(ids)
            }

            async fn record_usage(
                &self,
                owner: &$crate::ids::TenantId,
                day: &str,
                model: &str,
                d: &$crate::budget::UsageDelta,
            ) -> $crate::error::Result<()> {
                sqlx::query(
                    "INSERT INTO usage_daily (owner, day, model, requests, cached_requests, \
                     prompt_tokens, completion_tokens, cost, saved_tokens, saved_cost) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                     ON CONFLICT (owner, day, model) DO UPDATE SET \
                     requests = usage_daily.requests + excluded.requests, \
                     cached_requests = usage_daily.cached_requests + excluded.cached_requests, \
                     prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens, \
                     completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens, \
                     cost = usage_daily.cost + excluded.cost, \
                     saved_tokens = usage_daily.saved_tokens + excluded.saved_tokens, \
                     saved_cost = usage_daily.saved_cost + excluded.saved_cost",
                )
                .bind(owner.as_str())
                .bind(day)
                .bind(model)
                .bind(d.requests)
                .bind(d.cached_requests)
                .bind(d.prompt_tokens)
                .bind(d.completion_tokens)
                .bind(d.cost_micros)
                .bind(d.saved_tokens)
                .bind(d.saved_cost_micros)
                .execute(&mut *self.conn().await?)
                .await?;
                Ok(())
            }

            async fn windows(
                &self,
                owner: &$crate::ids::TenantId,
                now_ms: i64,
            ) -> $crate::error::Result<
                Vec<(
                    $crate::budget::Limit,
                    i64,
                    $crate::budget::Spend,
                    $crate::budget::Spend,
                )>,
            > {
                use sqlx::Row as _;
                let now = $crate::store::rows::from_ms(now_ms)?;
                let mut out = Vec::new();
                for limit in self.limits(owner).await? {
                    let (start, _) = limit.period.window(now);
                    let row = sqlx::query(
                        "SELECT used_tokens, used_cost, reserved_tokens, reserved_cost \
                         FROM budget_windows WHERE owner = $1 AND period = $2 AND window_start = $3",
                    )
                    .bind(owner.as_str())
                    .bind(limit.period.as_str())
                    .bind(start)
                    .fetch_optional(&mut *self.conn().await?)
                    .await?;
                    let (used, reserved) = match row {
                        Some(r) => (
                            $crate::budget::Spend {
                                tokens: r.try_get("used_tokens")?,
                                cost_micros: r.try_get("used_cost")?,
                            },
                            $crate::budget::Spend {
                                tokens: r.try_get("reserved_tokens")?,
                                cost_micros: r.try_get("reserved_cost")?,
                            },
                        ),
                        None => Default::default(),
                    };
                    out.push((limit, start, used, reserved));
                }
                Ok(out)
            }

            async fn usage(
                &self,
                owner: &$crate::ids::TenantId,
                filter: &$crate::store::budgets::UsageFilter,
                before: Option<(&str, &str)>,
                limit: u32,
            ) -> $crate::error::Result<Vec<$crate::budget::UsageRow>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(
                    "SELECT day, model, requests, cached_requests, prompt_tokens, \
                     completion_tokens, cost, saved_tokens, saved_cost FROM usage_daily \
                     WHERE owner = ",
                );
                qb.push_bind(owner.as_str().to_owned());
                if let Some(from) = &filter.from {
                    qb.push(" AND day >= ").push_bind(from.clone());
                }
                if let Some(to) = &filter.to {
                    qb.push(" AND day <= ").push_bind(to.clone());
                }
                if let Some(model) = &filter.model {
                    qb.push(" AND model = ").push_bind(model.clone());
                }
                if let Some((day, model)) = before {
                    qb.push(" AND (day < ")
                        .push_bind(day.to_owned())
                        .push(" OR (day = ")
                        .push_bind(day.to_owned())
                        .push(" AND model < ")
                        .push_bind(model.to_owned())
                        .push("))");
                }
                qb.push(" ORDER BY day DESC, model DESC LIMIT ")
                    .push_bind(i64::from(limit));
                let rows = qb.build().fetch_all(&mut *self.conn().await?).await?;
                rows.iter()
                    .map($crate::store::budgets::usage_from_row)
                    .collect()
            }
        }
    };
}

pub(crate) use budgets_sql;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_round_trip_through_their_text() {
        let w = vec![
            (Period::Minute, 1_700_000_040_000),
            (Period::Month, 1_698_796_800_000),
        ];
        assert_eq!(parse_windows(&windows_text(&w)), w);
        assert!(parse_windows("").is_empty());
    }
}
