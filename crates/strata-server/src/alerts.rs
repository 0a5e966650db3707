//! The alert rules: one table that both the shipped Prometheus rules (`docs/alerts.yml`,
//! checked against it by a test below and by `promtool` in CI) and the dashboard's breach
//! flags come from, so the two never disagree about what a breach is.
//!
//! The summary evaluates each rule on the same figures Prometheus would (the 5- and
//! 15-minute windows of [`crate::summary`], the pool, the queue, the process) and says
//! whether its condition holds *now*; Prometheus additionally waits for the rule's `for`
//! before it fires. Nothing here is per tenant.
//!
//! Must not import: the engine, the store.

use serde::Serialize;

/// One alert rule.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The alert's name, as in `docs/alerts.yml`.
    pub name: &'static str,
    /// `warning` or `critical`.
    pub severity: &'static str,
    /// How long the condition must hold before Prometheus fires it.
    pub hold: &'static str,
    /// The bound the value is compared with.
    pub threshold: f64,
    /// Whether the condition is `value < threshold` (else `value > threshold`).
    pub below: bool,
    /// The PromQL expression of `docs/alerts.yml`, exactly.
    pub expr: &'static str,
    /// What it means, for a person.
    pub summary: &'static str,
    /// The figure the summary judges it on.
    pub value: fn(&Inputs) -> Option<f64>,
}

/// Every rule, in the order `docs/alerts.yml` lists them.
pub const RULES: [Rule; 7] = [
    Rule {
        name: "StrataLatencyP95High",
        severity: "warning",
        hold: "5m",
        threshold: 0.5,
        below: false,
        expr: "histogram_quantile(0.95, sum by (le) (rate(strata_http_request_duration_seconds_bucket[5m]))) > 0.5",
        summary: "95% of requests over the last 5 minutes took longer than 0.5 s",
        value: |i| i.p95_seconds_5m,
    },
    Rule {
        name: "StrataErrorRateHigh",
        severity: "critical",
        hold: "5m",
        threshold: 0.05,
        below: false,
        expr: "sum(rate(strata_http_requests_total{status=~\"5..\"}[5m])) / sum(rate(strata_http_requests_total[5m])) > 0.05",
        summary: "More than 5% of requests over the last 5 minutes were answered 5xx",
        value: |i| i.error_rate_5m,
    },
    Rule {
        name: "StrataCacheHitRatioDrop",
        severity: "warning",
        hold: "5m",
        threshold: 0.5,
        below: true,
        expr: "(sum(rate(strata_cache_requests_total{outcome=~\"hit_l1|hit_l2\"}[5m])) / sum(rate(strata_cache_requests_total{outcome=~\"hit_l1|hit_l2|miss|coalesced|bypass\"}[5m]))) / (sum(rate(strata_cache_requests_total{outcome=~\"hit_l1|hit_l2\"}[15m])) / sum(rate(strata_cache_requests_total{outcome=~\"hit_l1|hit_l2|miss|coalesced|bypass\"}[15m]))) < 0.5 and sum(rate(strata_cache_requests_total{outcome=~\"hit_l1|hit_l2|miss|coalesced|bypass\"}[5m])) >= 1",
        summary: "The cache hit ratio of the last 5 minutes fell below half that of the last 15 (at 1+ lookups/s)",
        value: |i| i.hit_ratio_change,
    },
    Rule {
        name: "StrataDbPoolSaturated",
        severity: "warning",
        hold: "2m",
        threshold: 0.9,
        below: false,
        expr: "max(strata_db_pool_in_use_connections / strata_db_pool_max_connections) > 0.9",
        summary: "More than 90% of the connections of the database pool are in use",
        value: |i| i.pool_utilisation,
    },
    Rule {
        name: "StrataJobBacklog",
        severity: "warning",
        hold: "10m",
        threshold: 100.0,
        below: false,
        expr: "max(sum by (instance) (strata_jobs_queue_depth{state=\"queued\"})) > 100",
        summary: "More than 100 jobs are due and waiting for a worker",
        value: |i| i.jobs_queued,
    },
    Rule {
        name: "StrataJobFailures",
        severity: "warning",
        hold: "0m",
        threshold: 0.0,
        below: false,
        expr: "sum(increase(strata_jobs_attempts_total{outcome=\"failed\"}[15m])) > 0",
        summary: "A job failed for good in the last 15 minutes",
        value: |i| i.job_failures_15m,
    },
    Rule {
        name: "StrataMemoryHigh",
        severity: "warning",
        hold: "10m",
        threshold: 4294967296.0,
        below: false,
        expr: "max(process_resident_memory_bytes) > 4294967296",
        summary: "A strata process holds more than 4 GiB of resident memory",
        value: |i| i.resident_memory_bytes,
    },
];

/// The figures the rules are evaluated on; `None` where there is nothing to judge (no
/// requests in the window, no lookups, no queue reading).
#[derive(Debug, Clone, Copy, Default)]
pub struct Inputs {
    /// p95 latency over 5 minutes, seconds.
    pub p95_seconds_5m: Option<f64>,
    /// 5xx share over 5 minutes.
    pub error_rate_5m: Option<f64>,
    /// Hit ratio over 5 minutes / over 15 minutes, when lookups ran at 1+/s.
    pub hit_ratio_change: Option<f64>,
    /// Pool connections in use / the pool's maximum.
    pub pool_utilisation: Option<f64>,
    /// Jobs due and waiting.
    pub jobs_queued: Option<f64>,
    /// Job attempts failed for good over 15 minutes.
    pub job_failures_15m: Option<f64>,
    /// Resident memory, bytes.
    pub resident_memory_bytes: Option<f64>,
}

/// A rule's state now.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AlertState {
    /// The rule.
    pub name: &'static str,
    /// `warning` or `critical`.
    pub severity: &'static str,
    /// What it means.
    pub summary: &'static str,
    /// Whether its condition holds now.
    pub breached: bool,
    /// The value compared (`null` when there is nothing to judge).
    pub value: Option<f64>,
    /// The bound.
    pub threshold: f64,
    /// `above` or `below`: which side of the bound is a breach.
    pub direction: &'static str,
    /// How long Prometheus waits before firing it.
    pub hold: &'static str,
}

/// Every rule's state for `inputs`.
pub fn evaluate(inputs: &Inputs) -> Vec<AlertState> {
    RULES
        .iter()
        .map(|rule| (rule, (rule.value)(inputs)))
        .map(|(rule, value)| AlertState {
            name: rule.name,
            severity: rule.severity,
            summary: rule.summary,
            breached: value.is_some_and(|v| {
                if rule.below {
                    v < rule.threshold
                } else {
                    v > rule.threshold
                }
            }),
            value,
            threshold: rule.threshold,
            direction: if rule.below { "below" } else { "above" },
            hold: rule.hold,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/alerts.yml`, which Prometheus loads.
    const SHIPPED: &str = include_str!("../../../docs/alerts.yml");

    /// The value of `key:` in the rule named `name`, from the YAML text.
    fn field(name: &str, key: &str) -> Option<String> {
        let start = SHIPPED.find(&format!("- alert: {name}\n"))?;
        let rest = &SHIPPED[start..];
        let end = rest[1..].find("- alert: ").map_or(rest.len(), |e| e + 1);
        rest[..end].lines().find_map(|l| {
            l.trim()
                .strip_prefix(&format!("{key}: "))
                .map(|v| v.trim().trim_matches('\'').replace("''", "'"))
        })
    }

    #[test]
    fn the_shipped_rules_are_this_table() {
        let shipped = SHIPPED.matches("- alert: ").count();
        assert_eq!(shipped, RULES.len(), "docs/alerts.yml has {shipped} rules");
        for rule in RULES {
            assert_eq!(
                field(rule.name, "expr").as_deref(),
                Some(rule.expr),
                "{}",
                rule.name
            );
            assert_eq!(
                field(rule.name, "for").as_deref(),
                Some(rule.hold),
                "{}",
                rule.name
            );
            assert_eq!(
                field(rule.name, "severity").as_deref(),
                Some(rule.severity),
                "{}",
                rule.name
            );
            // The expression compares with the table's threshold.
            let bound = if rule.threshold.fract() == 0.0 {
                format!("{}", rule.threshold as u64)
            } else {
                format!("{}", rule.threshold)
            };
            let op = if rule.below { "<" } else { ">" };
            assert!(
                rule.expr.contains(&format!("{op} {bound}")),
                "{}: {} does not compare {op} {bound}",
                rule.name,
                rule.expr
            );
        }
    }

    #[test]
    fn each_rule_breaches_on_its_own_side_of_the_bound() {
        let quiet = Inputs {
            p95_seconds_5m: Some(0.01),
            error_rate_5m: Some(0.0),
            hit_ratio_change: Some(1.0),
            pool_utilisation: Some(0.1),
            jobs_queued: Some(3.0),
            job_failures_15m: Some(0.0),
            resident_memory_bytes: Some(3e8),
        };
        assert!(evaluate(&quiet).iter().all(|a| !a.breached));
        assert!(evaluate(&Inputs::default()).iter().all(|a| !a.breached));
        let loud = Inputs {
            p95_seconds_5m: Some(0.8),
            error_rate_5m: Some(0.2),
            hit_ratio_change: Some(0.3),
            pool_utilisation: Some(1.0),
            jobs_queued: Some(500.0),
            job_failures_15m: Some(1.0),
            resident_memory_bytes: Some(5e9),
        };
        let states = evaluate(&loud);
        assert!(states.iter().all(|a| a.breached), "{states:?}");
    }
}
