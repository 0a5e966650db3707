//! What this process's workers did, per job kind: attempts by outcome, attempts running now,
//! and the time spent in them. In-process counters (atomics), read by `/metrics`; the queue
//! itself (what waits, in every process) is the store's.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

/// How an attempt ended, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    Succeeded,
    Failed,
    Retried,
    /// The worker stopped it (shutdown) and gave the job back.
    Released,
    /// Its lease went to another worker.
    LeaseLost,
}

#[derive(Debug, Default)]
struct Counters {
    outcomes: [AtomicU64; 5],
    running: AtomicI64,
    busy_micros: AtomicU64,
    abandoned: AtomicU64,
}

/// One kind's counts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KindJobStats {
    /// The job kind.
    pub kind: &'static str,
    /// Attempts that succeeded.
    pub succeeded: u64,
    /// Attempts that failed the job for good.
    pub failed: u64,
    /// Attempts that failed and left the job to a later retry.
    pub retried: u64,
    /// Attempts stopped by shutdown, the job given back.
    pub released: u64,
    /// Attempts whose lease another worker took.
    pub lease_lost: u64,
    /// Jobs failed for good because their workers kept losing them.
    pub abandoned: u64,
    /// Attempts running now.
    pub running: i64,
    /// Seconds spent in attempts that ended.
    pub busy_seconds: f64,
}

/// The counters of every registered kind.
#[derive(Debug, Clone, Default)]
pub(crate) struct JobStats {
    kinds: Arc<HashMap<&'static str, Counters>>,
}

impl JobStats {
    pub(crate) fn new(names: &[&'static str]) -> Self {
        Self {
            kinds: Arc::new(names.iter().map(|n| (*n, Counters::default())).collect()),
        }
    }

    /// Counts an attempt as running until the returned guard is ended (or dropped: a panic
    /// or a cancelled worker still leaves the running count right).
    pub(crate) fn start(&self, kind: &str) -> Running {
        let key = self.kinds.get_key_value(kind).map(|(k, _)| *k);
        if let Some(c) = key.and_then(|k| self.kinds.get(k)) {
            c.running.fetch_add(1, Ordering::Relaxed);
        }
        Running {
            stats: self.clone(),
            kind: key,
            started: Instant::now(),
            ended: false,
        }
    }

    pub(crate) fn abandoned(&self, kind: &str) {
        if let Some(c) = self.kinds.get(kind) {
            c.abandoned.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every kind's counts, by name.
    pub(crate) fn snapshot(&self) -> Vec<KindJobStats> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out: Vec<KindJobStats> = self
            .kinds
            .iter()
            .map(|(kind, c)| KindJobStats {
                kind,
                succeeded: get(&c.outcomes[Ended::Succeeded as usize]),
                failed: get(&c.outcomes[Ended::Failed as usize]),
                retried: get(&c.outcomes[Ended::Retried as usize]),
                released: get(&c.outcomes[Ended::Released as usize]),
                lease_lost: get(&c.outcomes[Ended::LeaseLost as usize]),
                abandoned: get(&c.abandoned),
                running: c.running.load(Ordering::Relaxed),
                busy_seconds: get(&c.busy_micros) as f64 / 1e6,
            })
            .collect();
        out.sort_by_key(|k| k.kind);
        out
    }
}

/// An attempt being counted as running.
pub(crate) struct Running {
    stats: JobStats,
    kind: Option<&'static str>,
    started: Instant,
    ended: bool,
}

impl Running {
    /// Counts the attempt's outcome and time.
    pub(crate) fn end(mut self, how: Ended) {
        self.ended = true;
        if let Some(c) = self.kind.and_then(|k| self.stats.kinds.get(k)) {
            c.outcomes[how as usize].fetch_add(1, Ordering::Relaxed);
            c.busy_micros
                .fetch_add(self.started.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.kind.and_then(|k| self.stats.kinds.get(k)) {
            c.running.fetch_sub(1, Ordering::Relaxed);
            if !self.ended {
                c.busy_micros
                    .fetch_add(self.started.elapsed().as_micros() as u64, Ordering::Relaxed);
            }
        }
    }
}
