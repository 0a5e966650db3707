//! Counters per kind and tier, read as a [`StatsSnapshot`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Stripes per kind: each thread adds to one, a read sums them all.
const STRIPES: usize = 8;

/// One stripe of a kind's counters, alone on its cache lines: two threads counting hits
/// never write the same line (a shared line bounced between cores is a measurable share of
/// an L1 hit's cost under load).
#[derive(Default)]
#[repr(align(128))]
struct Stripe {
    hits_l1: AtomicU64,
    hits_l2: AtomicU64,
    bypassed: AtomicU64,
    misses: AtomicU64,
    joined: AtomicU64,
    failures: AtomicU64,
    bytes_computed: AtomicU64,
    hit_micros: AtomicU64,
    l2_hit_micros: AtomicU64,
    miss_micros: AtomicU64,
}

/// The stripe this thread writes to, picked round-robin the first time it counts.
fn stripe_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    INDEX.with(|i| *i)
}

/// A kind's counters.
#[derive(Default)]
pub(crate) struct Counters {
    stripes: [Stripe; STRIPES],
}

impl Counters {
    fn mine(&self) -> &Stripe {
        &self.stripes[stripe_index()]
    }

    fn sum(&self, field: impl Fn(&Stripe) -> &AtomicU64) -> u64 {
        self.stripes
            .iter()
            .map(|s| field(s).load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    pub(crate) fn hit_l1(&self, took: Duration) {
        let s = self.mine();
        s.hits_l1.fetch_add(1, Ordering::Relaxed);
        s.hit_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) fn hit_l2(&self, took: Duration) {
        let s = self.mine();
        s.hits_l2.fetch_add(1, Ordering::Relaxed);
        s.l2_hit_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) fn bypassed(&self, took: Duration) {
        let s = self.mine();
        s.bypassed.fetch_add(1, Ordering::Relaxed);
        s.miss_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) fn joined(&self, took: Duration) {
        let s = self.mine();
        s.joined.fetch_add(1, Ordering::Relaxed);
        s.miss_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) fn miss(&self, took: Duration, bytes: usize) {
        let s = self.mine();
        s.misses.fetch_add(1, Ordering::Relaxed);
        s.bytes_computed.fetch_add(bytes as u64, Ordering::Relaxed);
        s.miss_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self) {
        self.mine().failures.fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) struct Stats {
    kinds: HashMap<&'static str, Counters, crate::FastHashBuilder>,
    fallback: Counters,
    pub(crate) cleared: AtomicU64,
}

impl Stats {
    pub(crate) fn new(kinds: &[&'static str]) -> Self {
        Self {
            kinds: kinds.iter().map(|k| (*k, Counters::default())).collect(),
            fallback: Counters::default(),
            cleared: AtomicU64::new(0),
        }
    }

    pub(crate) fn kind(&self, kind: &str) -> &Counters {
        self.kinds.get(kind).unwrap_or(&self.fallback)
    }

    pub(crate) fn snapshot(
        &self,
        l1: &crate::l1::L1,
        generations: &crate::generations::Generations,
        l2: Option<crate::RemoteStats>,
    ) -> StatsSnapshot {
        let mut kinds: Vec<KindStats> = self
            .kinds
            .iter()
            .map(|(name, c)| {
                let hits = c.sum(|s| &s.hits_l1);
                let hits_l2 = c.sum(|s| &s.hits_l2);
                let bypassed = c.sum(|s| &s.bypassed);
                let misses = c.sum(|s| &s.misses);
                let joined = c.sum(|s| &s.joined);
                let lookups = hits + hits_l2 + misses + joined + bypassed;
                KindStats {
                    kind: name,
                    hits_l1: hits,
                    hits_l2,
                    misses,
                    joined,
                    bypassed,
                    failures: c.sum(|s| &s.failures),
                    hit_ratio: if lookups == 0 {
                        0.0
                    } else {
                        (hits + hits_l2) as f64 / lookups as f64
                    },
                    bytes_computed: c.sum(|s| &s.bytes_computed),
                    mean_l1_hit_micros: mean(c.sum(|s| &s.hit_micros), hits),
                    mean_l2_hit_micros: mean(c.sum(|s| &s.l2_hit_micros), hits_l2),
                    mean_miss_micros: mean(c.sum(|s| &s.miss_micros), misses + joined + bypassed),
                }
            })
            .collect();
        kinds.sort_by_key(|k| k.kind);
        StatsSnapshot {
            l1_entries: l1.entries(),
            l1_bytes: l1.bytes(),
            l1_capacity_bytes: l1.capacity(),
            l1_evictions: l1.evictions(),
            l1_expirations: l1.expirations(),
            invalidations: generations.bumps.load(Ordering::Relaxed),
            cleared: self.cleared.load(Ordering::Relaxed),
            kinds,
            l2,
        }
    }
}

fn mean(total: u64, n: u64) -> f64 {
    if n == 0 { 0.0 } else { total as f64 / n as f64 }
}

/// Counters of one kind.
#[derive(Debug, Clone, Serialize)]
pub struct KindStats {
    /// The kind.
    pub kind: &'static str,
    /// Served from L1.
    pub hits_l1: u64,
    /// Served from L2 (Redis).
    pub hits_l2: u64,
    /// Computed.
    pub misses: u64,
    /// Waited for a concurrent computation of the same key.
    pub joined: u64,
    /// Computed without the cache while Redis could not vouch for it.
    pub bypassed: u64,
    /// Computations that failed (not cached).
    pub failures: u64,
    /// (L1 + L2 hits) / all lookups.
    pub hit_ratio: f64,
    /// Bytes produced by computations.
    pub bytes_computed: u64,
    /// Mean time of an L1 hit, in microseconds.
    pub mean_l1_hit_micros: f64,
    /// Mean time of an L2 hit, in microseconds.
    pub mean_l2_hit_micros: f64,
    /// Mean time of a miss (including the computation), in microseconds.
    pub mean_miss_micros: f64,
}

/// All counters.
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    /// Entries in L1.
    pub l1_entries: u64,
    /// Bytes held in L1 (keys, values, bookkeeping).
    pub l1_bytes: u64,
    /// L1's byte budget.
    pub l1_capacity_bytes: u64,
    /// Entries evicted for space.
    pub l1_evictions: u64,
    /// Entries dropped at read because their TTL had passed.
    pub l1_expirations: u64,
    /// Scope generation bumps.
    pub invalidations: u64,
    /// Entries removed by clear.
    pub cleared: u64,
    /// Per kind.
    pub kinds: Vec<KindStats>,
    /// The Redis tier, when configured.
    pub l2: Option<crate::RemoteStats>,
}
