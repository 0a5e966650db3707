//! Sessions: a user's visit, ended by the user or by an idle timeout that adapts to that
//! user. The types the storage layer reads and writes, and how a timeout is learned.
//!
//! A user's gaps between requests inside a session are summarised as the mean and variance
//! of their logarithms (gaps are skewed: many seconds-long pauses, a few minutes-long ones),
//! updated as an exponentially weighted average so that habits can change. The idle timeout
//! is `exp(mean + 2.5 * sd)` (about the 99th percentile of such a user's gaps), bounded by a
//! minimum and a maximum; until five gaps are known it is the default. A gap longer than the
//! session's timeout ended the session, so it is not a gap inside one and is not learned.
//!
//! Must not import: HTTP types, the cache, the store.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Gaps needed before the timeout is learned rather than the default.
pub const MIN_GAPS: u64 = 5;
/// How many standard deviations above the typical gap the timeout sits.
const SPREAD: f64 = 2.5;
/// The weight of a new gap once the summary has 20 behind it.
const NEWEST_WEIGHT: f64 = 0.05;

/// A stored session.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Session {
    /// Its id (the tenant's name for it; memories name it in their `session`).
    pub id: String,
    /// Caller metadata.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it last saw a request.
    pub last_seen_at: DateTime<Utc>,
    /// Requests it saw (memory adds and searches naming it).
    pub requests: u64,
    /// Its idle timeout when last touched, in seconds.
    pub timeout_secs: f64,
    /// When it ended; null while active.
    pub ended_at: Option<DateTime<Utc>>,
    /// `idle` (the timeout passed) or `closed` (the caller ended it).
    pub end_reason: Option<String>,
}

/// A session to store.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Its id.
    pub id: String,
    /// Caller metadata (an object).
    pub metadata: serde_json::Value,
    /// Start time.
    pub at: DateTime<Utc>,
    /// Its first timeout.
    pub timeout: Duration,
}

/// A user's gaps between requests, summarised (see the module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Habits {
    /// Gaps learned.
    pub gaps: u64,
    /// Weighted mean of ln(gap in seconds).
    pub log_mean: f64,
    /// Weighted variance of ln(gap in seconds).
    pub log_var: f64,
}

/// Bounds and default of the adaptive timeout.
#[derive(Debug, Clone, Copy)]
pub struct SessionSettings {
    /// Shortest timeout.
    pub min: Duration,
    /// Longest timeout.
    pub max: Duration,
    /// Timeout until enough gaps are known.
    pub default: Duration,
    /// How often ended sessions are looked for.
    pub sweep_every: Duration,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            min: Duration::from_secs(5 * 60),
            max: Duration::from_secs(4 * 3600),
            default: Duration::from_secs(30 * 60),
            sweep_every: Duration::from_secs(5),
        }
    }
}

/// A timeout and why it is what it is.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Timeout {
    /// The idle timeout, seconds.
    pub secs: f64,
    /// Whether it was learned from the user's gaps (else it is the default).
    pub learned: bool,
    /// Gaps it was learned from.
    pub gaps_observed: u64,
    /// The user's typical gap (geometric mean), seconds; null before any gap.
    pub typical_gap_secs: Option<f64>,
    /// How much the gaps vary, as a factor (geometric standard deviation).
    pub spread: Option<f64>,
    /// The computation in words.
    pub why: String,
}

impl Habits {
    /// Learns one gap (seconds; under a tenth of a second counts as a tenth).
    pub fn observe(&mut self, gap_secs: f64) {
        let x = gap_secs.max(0.1).ln();
        self.gaps += 1;
        let w = (1.0 / self.gaps as f64).max(NEWEST_WEIGHT);
        let d = x - self.log_mean;
        self.log_mean += w * d;
        // West's weighted update of the variance.
        self.log_var = (1.0 - w) * (self.log_var + w * d * d);
    }

    /// The timeout these habits give, explained.
    pub fn timeout(&self, s: &SessionSettings) -> Timeout {
        let (min, max, default) = (
            s.min.as_secs_f64(),
            s.max.as_secs_f64(),
            s.default.as_secs_f64(),
        );
        let known = self.gaps > 0;
        let typical = known.then(|| self.log_mean.exp());
        let sd = self.log_var.max(0.0).sqrt();
        let spread = known.then(|| sd.exp());
        if self.gaps < MIN_GAPS {
            return Timeout {
                secs: default,
                learned: false,
                gaps_observed: self.gaps,
                typical_gap_secs: typical,
                spread,
                why: format!(
                    "the default {default:.0} s: {} of the {MIN_GAPS} gaps between requests \
                     needed to learn this user's pace are known",
                    self.gaps
                ),
            };
        }
        let raw = (self.log_mean + SPREAD * sd).exp();
        let secs = raw.clamp(min, max);
        let bound = if raw < min {
            format!(", raised to the minimum {min:.0} s")
        } else if raw > max {
            format!(", lowered to the maximum {max:.0} s")
        } else {
            String::new()
        };
        Timeout {
            secs,
            learned: true,
            gaps_observed: self.gaps,
            typical_gap_secs: typical,
            spread,
            why: format!(
                "typical gap {:.1} s x spread {:.2} ^ {SPREAD} = {raw:.0} s{bound} \
                 (learned from {} gaps)",
                typical.unwrap_or_default(),
                spread.unwrap_or(1.0),
                self.gaps
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SessionSettings {
        SessionSettings {
            min: Duration::from_secs(60),
            max: Duration::from_secs(3600),
            default: Duration::from_secs(1800),
            sweep_every: Duration::from_secs(5),
        }
    }

    #[test]
    fn the_default_holds_until_enough_gaps_are_known() {
        let mut h = Habits::default();
        for _ in 0..MIN_GAPS - 1 {
            h.observe(20.0);
        }
        let t = h.timeout(&settings());
        assert!(!t.learned && t.secs == 1800.0, "{t:?}");
        h.observe(20.0);
        assert!(h.timeout(&settings()).learned);
    }

    #[test]
    fn a_quick_user_gets_a_short_timeout_and_a_slow_one_a_long_one_within_bounds() {
        let s = settings();
        let mut quick = Habits::default();
        let mut slow = Habits::default();
        for i in 0..50 {
            quick.observe(5.0 + (i % 5) as f64);
            slow.observe(300.0 + 60.0 * (i % 4) as f64);
        }
        let (q, l) = (quick.timeout(&s), slow.timeout(&s));
        assert_eq!(q.secs, 60.0, "raised to the minimum: {q:?}");
        assert!(q.why.contains("minimum"));
        assert!(l.secs > 400.0 && l.secs < 3600.0, "{l:?}");
        assert!((l.typical_gap_secs.unwrap() - 380.0).abs() < 60.0, "{l:?}");
        let mut wild = Habits::default();
        for i in 0..50 {
            wild.observe(if i % 2 == 0 { 2.0 } else { 3000.0 });
        }
        assert_eq!(wild.timeout(&s).secs, 3600.0);
    }

    #[test]
    fn habits_follow_a_change_of_pace() {
        let s = settings();
        let mut h = Habits::default();
        for _ in 0..200 {
            h.observe(600.0);
        }
        let before = h.timeout(&s).secs;
        for _ in 0..100 {
            h.observe(90.0);
        }
        let after = h.timeout(&s).secs;
        assert!(after < before / 3.0, "{before} -> {after}");
    }
}
