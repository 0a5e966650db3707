//! The slow statement log: sqlx reports every statement slower than the configured threshold
//! (`--db-slow-statement-ms`) as a tracing event; [`SlowStatementLayer`], installed in the
//! process's subscriber, keeps the most recent ones in a [`SlowLog`] that the binary hands to
//! the engine (`EngineSettings::slow_log`) for `GET /v1/performance/database/stats`. No
//! global: a process (or a test) that installs no layer has an empty log of its own. The
//! engine asks the store to explain each new slow statement ([`SlowLog::unplanned`],
//! `Store::explain`) and logs it again at warn with its plan, which stays on the entry.
//!
//! Must not import: HTTP types, the store.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// How many slow statements are kept.
pub const KEPT: usize = 50;

/// One statement that ran past the threshold.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SlowStatement {
    /// When it finished (RFC 3339).
    pub at: String,
    /// Its first words.
    pub summary: String,
    /// The whole SQL text, when longer than the summary.
    pub statement: String,
    /// How long it ran, in milliseconds.
    pub elapsed_ms: f64,
    /// Rows it returned.
    pub rows_returned: u64,
    /// Rows it changed.
    pub rows_affected: u64,
    /// The plan the database uses for it, one line per node, once the engine has asked
    /// (see [`SlowLog::unplanned`]); empty until then, and for statements that have none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<String>,
}

/// How many statements' plans are remembered (a slow statement seen again gets its plan
/// without asking the database again).
const PLANS_KEPT: usize = 200;

/// The most recent slow statements, shared by the layer that records them and the engine
/// that reports them (and explains them). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct SlowLog(Arc<Mutex<Kept>>);

#[derive(Debug, Default)]
struct Kept {
    recent: VecDeque<SlowStatement>,
    /// Plans by statement text, and the order they were learnt in (oldest evicted).
    plans: std::collections::HashMap<String, Vec<String>>,
    learnt: VecDeque<String>,
}

impl SlowLog {
    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recent slow statements, newest first.
    pub fn recent(&self) -> Vec<SlowStatement> {
        self.kept().recent.iter().rev().cloned().collect()
    }

    /// Empties the log, returning what it held, oldest first (a test that captures every
    /// statement of one operation, with a zero threshold, reads them this way).
    pub fn take(&self) -> Vec<SlowStatement> {
        self.kept().recent.drain(..).collect()
    }

    /// The distinct explainable statements in the log that have no plan yet.
    pub fn unplanned(&self) -> Vec<String> {
        let kept = self.kept();
        let mut out: Vec<String> = Vec::new();
        for s in &kept.recent {
            if s.plan.is_empty()
                && explainable(&s.statement)
                && !kept.plans.contains_key(&s.statement)
                && !out.contains(&s.statement)
            {
                out.push(s.statement.clone());
            }
        }
        out
    }

    /// Records the plan of `statement`: on every entry of it now, and on the next ones.
    pub fn set_plan(&self, statement: &str, plan: Vec<String>) {
        let mut kept = self.kept();
        for s in kept.recent.iter_mut().filter(|s| s.statement == statement) {
            s.plan.clone_from(&plan);
        }
        if kept.plans.insert(statement.to_owned(), plan).is_none() {
            kept.learnt.push_back(statement.to_owned());
            if kept.learnt.len() > PLANS_KEPT
                && let Some(old) = kept.learnt.pop_front()
            {
                kept.plans.remove(&old);
            }
        }
    }

    /// The tracing layer that records into this log; install it with [`filter`].
    pub fn layer(&self) -> SlowStatementLayer {
        SlowStatementLayer(self.clone())
    }

    fn record(&self, mut s: SlowStatement) {
        let mut kept = self.kept();
        if let Some(plan) = kept.plans.get(&s.statement) {
            s.plan.clone_from(plan);
        }
        if kept.recent.len() >= KEPT {
            kept.recent.pop_front();
        }
        kept.recent.push_back(s);
    }
}

/// The highest `$n` in `sql`, or the number of `?`s (outside quotes) when it has none.
pub fn parameters(sql: &str) -> usize {
    let bytes = sql.as_bytes();
    let mut max = 0;
    let mut questions = 0;
    let mut quoted = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => quoted = !quoted,
            b'?' if !quoted => questions += 1,
            b'$' if !quoted => {
                let digits: String = sql[i + 1..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                if let Ok(n) = digits.parse::<usize>() {
                    max = max.max(n);
                }
            }
            _ => {}
        }
        i += 1;
    }
    if max > 0 { max } else { questions }
}

/// Whether a statement can be explained: one statement that reads or writes rows (not a
/// transaction's control, a `SET`, a migration's batch).
pub fn explainable(sql: &str) -> bool {
    let head = sql.trim_start().to_ascii_uppercase();
    let body = sql.trim().trim_end_matches(';');
    ["SELECT", "WITH", "INSERT", "UPDATE", "DELETE"]
        .iter()
        .any(|k| head.starts_with(k))
        && !body.contains(';')
}

/// The events [`SlowStatementLayer`] needs: sqlx's statement log at warning level or above.
fn wanted(meta: &tracing::Metadata<'_>) -> bool {
    meta.target() == "sqlx::query" && *meta.level() <= tracing::Level::WARN
}

/// The per-layer filter to install [`SlowStatementLayer`] with: only sqlx's statement log at
/// warning level or above, so that enabling the layer does not turn on sqlx's per-statement
/// debug logging. It says which levels it can enable (warnings and above): without that
/// hint the subscriber's maximum level is TRACE whatever `--log` says, and the `log` bridge,
/// which takes its maximum from it, then turns every debug and trace record of every library
/// (per statement, per forward pass) into a dynamically filtered event.
pub fn filter() -> tracing_subscriber::filter::FilterFn<fn(&tracing::Metadata<'_>) -> bool> {
    tracing_subscriber::filter::FilterFn::new(wanted as fn(&tracing::Metadata<'_>) -> bool)
        .with_max_level_hint(tracing::Level::WARN)
}

/// A tracing layer that keeps sqlx's slow statement events in its [`SlowLog`].
#[derive(Debug, Clone)]
pub struct SlowStatementLayer(SlowLog);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SlowStatementLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let mut v = Fields::default();
        event.record(&mut v);
        if v.message.contains("slow statement") {
            v.out.at = chrono::Utc::now().to_rfc3339();
            v.out.statement = v.out.statement.trim().to_owned();
            self.0.record(v.out);
        }
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    out: SlowStatement,
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.out.elapsed_ms = value * 1000.0;
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "rows_returned" => self.out.rows_returned = value,
            "rows_affected" => self.out.rows_affected = value,
            _ => {}
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => self.out.summary = value.to_owned(),
            "db.statement" => self.out.statement = value.to_owned(),
            "message" => self.message = value.to_owned(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::store::StoreMeta;
    use crate::store::sqlite::{SqliteOptions, SqliteStore};

    #[test]
    fn the_layer_leaves_the_process_log_level_to_the_log_filter() {
        use tracing::Subscriber as _;
        use tracing_subscriber::filter::{EnvFilter, LevelFilter};
        let subscriber = tracing_subscriber::registry()
            .with(SlowLog::default().layer().with_filter(filter()))
            .with(tracing_subscriber::fmt::layer().with_filter(EnvFilter::new("info")));
        assert_eq!(subscriber.max_level_hint(), Some(LevelFilter::INFO));
        let quiet = tracing_subscriber::registry()
            .with(SlowLog::default().layer().with_filter(filter()))
            .with(tracing_subscriber::fmt::layer().with_filter(EnvFilter::new("error")));
        assert_eq!(
            quiet.max_level_hint(),
            Some(LevelFilter::WARN),
            "slow statements are warnings"
        );
    }

    #[tokio::test]
    async fn statements_past_the_threshold_are_kept_and_faster_ones_are_not() {
        let log = SlowLog::default();
        let subscriber = tracing_subscriber::registry().with(log.layer().with_filter(filter()));
        // Global: SQLite statements run on sqlx's worker thread, which a thread-local default
        // would not reach. Only this test of the binary installs a subscriber.
        tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
        let dir = tempfile::tempdir().expect("tempdir");
        let fast = SqliteStore::open(&dir.path().join("a.db"), &SqliteOptions::default())
            .await
            .expect("open");
        let before = log.recent().len();
        fast.ping().await.expect("ping");
        assert_eq!(log.recent().len(), before, "a fast statement is not slow");
        let slow = SqliteStore::open(
            &dir.path().join("b.db"),
            &SqliteOptions {
                slow_statement: std::time::Duration::ZERO,
                ..SqliteOptions::default()
            },
        )
        .await
        .expect("open");
        slow.ping().await.expect("ping");
        let kept = log.recent();
        assert!(kept.len() > before, "{kept:?}");
        assert_eq!(kept[0].summary, "SELECT 1");
        assert!(kept.len() <= KEPT);
    }
}
