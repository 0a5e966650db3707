//! Budgets and usage of the LLM gateway, as data: a tenant's limits per window (minute, day,
//! month) on tokens and cost, what a window has used and holds reserved, and the daily usage
//! ledger. Costs are integer micro-dollars everywhere below the API, so sums never drift.
//!
//! Must not import: the store, the cache, HTTP types.

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};

/// The window a budget resets over.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// A calendar minute (UTC).
    Minute,
    /// A calendar day (UTC).
    Day,
    /// A calendar month (UTC).
    Month,
}

impl Period {
    /// Every period.
    pub const ALL: [Period; 3] = [Period::Minute, Period::Day, Period::Month];

    /// Its name in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Minute => "minute",
            Period::Day => "day",
            Period::Month => "month",
        }
    }

    /// The period named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The window containing `at`: its start and end, in Unix milliseconds.
    pub fn window(self, at: DateTime<Utc>) -> (i64, i64) {
        let start = match self {
            Period::Minute => at
                .with_second(0)
                .and_then(|t| t.with_nanosecond(0))
                .unwrap_or(at),
            Period::Day => Utc
                .with_ymd_and_hms(at.year(), at.month(), at.day(), 0, 0, 0)
                .single()
                .unwrap_or(at),
            Period::Month => Utc
                .with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0)
                .single()
                .unwrap_or(at),
        };
        let end = match self {
            Period::Minute => start + chrono::Duration::minutes(1),
            Period::Day => start + chrono::Duration::days(1),
            Period::Month => {
                let (y, m) = if start.month() == 12 {
                    (start.year() + 1, 1)
                } else {
                    (start.year(), start.month() + 1)
                };
                Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0)
                    .single()
                    .unwrap_or(start + chrono::Duration::days(31))
            }
        };
        (start.timestamp_millis(), end.timestamp_millis())
    }
}

/// Tokens and cost together: what a call spends, a window uses or a reservation holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spend {
    /// Prompt and completion tokens.
    pub tokens: i64,
    /// Cost in micro-dollars.
    pub cost_micros: i64,
}

/// One limit of a tenant's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    /// The window it resets over.
    pub period: Period,
    /// Most tokens per window, if limited.
    pub max_tokens: Option<i64>,
    /// Most micro-dollars per window, if limited.
    pub max_cost_micros: Option<i64>,
}

/// A window's state, as `GET /v1/budget` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WindowStatus {
    /// The window's period.
    pub period: Period,
    /// When the window began.
    pub window_start: DateTime<Utc>,
    /// When it resets.
    pub resets_at: DateTime<Utc>,
    /// Most tokens per window (null: not limited).
    pub max_tokens: Option<i64>,
    /// Most US dollars per window (null: not limited).
    pub max_cost_usd: Option<f64>,
    /// Tokens settled in this window.
    pub used_tokens: i64,
    /// Dollars settled in this window.
    pub used_cost_usd: f64,
    /// Tokens held by calls in flight (estimates, settled when they end).
    pub reserved_tokens: i64,
    /// Dollars held by calls in flight.
    pub reserved_cost_usd: f64,
}

/// What a reservation attempt decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// The tenant has no budget: nothing was reserved.
    Unlimited,
    /// Reserved under this id; settle or release it exactly once.
    Held(String),
    /// The estimate does not fit the window of `period`, which resets at `resets_at_ms`.
    Denied {
        /// The window that is full.
        period: Period,
        /// When it resets (Unix milliseconds).
        resets_at_ms: i64,
    },
}

/// One finished gateway call, for the daily ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEntry {
    /// The upstream model that answered (or would have).
    pub model: String,
    /// Tokens the prompt took.
    pub prompt_tokens: i64,
    /// Tokens the answer took.
    pub completion_tokens: i64,
    /// What it cost (zero when served from the cache).
    pub cost_micros: i64,
    /// Served from a cache: its tokens and cost are savings, not spend.
    pub cached: bool,
}

/// Calls added up for one tenant, day and model: what one ledger write adds to its row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UsageDelta {
    /// Calls answered.
    pub requests: i64,
    /// Of which from a cache.
    pub cached_requests: i64,
    /// Prompt tokens sent upstream.
    pub prompt_tokens: i64,
    /// Completion tokens received.
    pub completion_tokens: i64,
    /// Micro-dollars spent.
    pub cost_micros: i64,
    /// Tokens a cache answered.
    pub saved_tokens: i64,
    /// Micro-dollars a cache saved.
    pub saved_cost_micros: i64,
}

impl UsageDelta {
    /// Adds one call.
    pub fn add(&mut self, e: &UsageEntry) {
        self.requests += 1;
        if e.cached {
            self.cached_requests += 1;
            self.saved_tokens += e.prompt_tokens + e.completion_tokens;
            self.saved_cost_micros += e.cost_micros;
        } else {
            self.prompt_tokens += e.prompt_tokens;
            self.completion_tokens += e.completion_tokens;
            self.cost_micros += e.cost_micros;
        }
    }
}

/// A tenant's usage of one model on one day.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct UsageRow {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// The upstream model.
    pub model: String,
    /// Calls answered, from the upstream or a cache.
    pub requests: i64,
    /// Of which were served from a cache.
    pub cached_requests: i64,
    /// Prompt tokens sent upstream.
    pub prompt_tokens: i64,
    /// Completion tokens received from upstream.
    pub completion_tokens: i64,
    /// Dollars spent upstream.
    pub cost_usd: f64,
    /// Tokens the cache answered instead of the upstream.
    pub saved_tokens: i64,
    /// Dollars the cache saved.
    pub saved_cost_usd: f64,
}

/// Micro-dollars as dollars.
pub fn usd(micros: i64) -> f64 {
    micros as f64 / 1e6
}

/// Dollars as micro-dollars (rounded).
pub fn micros(usd: f64) -> i64 {
    (usd * 1e6).round() as i64
}

/// The UTC day of `at`, `YYYY-MM-DD`.
pub fn day_of(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_their_instant_and_end_where_the_next_begins() {
        let at = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 30).unwrap();
        for p in Period::ALL {
            let (start, end) = p.window(at);
            assert!(
                start <= at.timestamp_millis() && at.timestamp_millis() < end,
                "{p:?}"
            );
            let next = Utc.timestamp_millis_opt(end).unwrap();
            assert_eq!(p.window(next).0, end, "{p:?}");
        }
        let (start, end) = Period::Month.window(at);
        assert_eq!(end - start, 31 * 86_400_000);
        assert_eq!(Period::parse("day"), Some(Period::Day));
        assert_eq!(Period::parse("week"), None);
    }

    #[test]
    fn money_round_trips() {
        assert_eq!(micros(0.000_15), 150);
        assert!((usd(micros(12.345_678)) - 12.345_678).abs() < 1e-9);
    }
}
