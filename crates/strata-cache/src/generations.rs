//! Generations per scope, as this process knows them. Without Redis they are the truth;
//! with Redis they are a copy of the shared counters, kept current by the invalidation bus
//! (`remote.rs`), and forgotten whenever this process may have missed a message.
//!
//! Every cache read looks its scope up here, from every worker thread at once, so the read
//! takes no lock and writes nothing shared: the scope map is an immutable snapshot behind an
//! [`ArcSwap`], replaced (under a writers' mutex) only when a scope is first seen or all are
//! forgotten, and each scope's generation is an atomic cell that a bump increments in place.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

// A fast hasher: this map is read on every cache lookup.
type Cells = HashMap<String, Arc<AtomicU64>, crate::FastHashBuilder>;

#[derive(Default)]
pub(crate) struct Generations {
    map: ArcSwap<Cells>,
    /// Serialises replacements of `map`, so no insert is lost to a concurrent one.
    writers: Mutex<()>,
    /// Scopes bumped here while Redis could not be told; replayed when it can.
    pending: Mutex<HashSet<String>>,
    pub(crate) bumps: AtomicU64,
}

impl Generations {
    pub(crate) fn known(&self, scope: &str) -> Option<u64> {
        self.map
            .load()
            .get(scope)
            .map(|g| g.load(Ordering::Acquire))
    }

    /// The scope's cell, created (at `initial`) if this process has not seen the scope.
    fn cell(&self, scope: &str, initial: u64) -> Arc<AtomicU64> {
        if let Some(c) = self.map.load().get(scope) {
            return Arc::clone(c);
        }
        let _w = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.map.load_full();
        if let Some(c) = current.get(scope) {
            return Arc::clone(c);
        }
        let cell = Arc::new(AtomicU64::new(initial));
        let mut next = Cells::clone(&current);
        next.insert(scope.to_owned(), Arc::clone(&cell));
        self.map.store(Arc::new(next));
        cell
    }

    /// Records `generation` for `scope` unless a later one is already known; returns the
    /// generation now in force.
    pub(crate) fn observe(&self, scope: &str, generation: u64) -> u64 {
        let cell = self.cell(scope, generation);
        cell.fetch_max(generation, Ordering::AcqRel).max(generation)
    }

    /// Moves `scope` to its next generation here.
    pub(crate) fn bump_local(&self, scope: &str) -> u64 {
        self.bumps.fetch_add(1, Ordering::Relaxed);
        self.cell(scope, 0).fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Forgets every generation (they are fetched again from Redis on next use).
    pub(crate) fn forget_all(&self) {
        let _w = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        self.map.store(Arc::default());
    }

    pub(crate) fn add_pending(&self, scope: &str) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        p.insert(scope.to_owned());
    }

    pub(crate) fn take_pending(&self) -> Vec<String> {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        p.drain().collect()
    }

    pub(crate) fn pending_len(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bumps_observations_and_forgetting() {
        let g = Generations::default();
        assert_eq!(g.known("a"), None);
        assert_eq!(g.bump_local("a"), 1);
        assert_eq!(g.bump_local("a"), 2);
        // An older generation from Redis never moves a scope back.
        assert_eq!(g.observe("a", 1), 2);
        assert_eq!(g.observe("a", 7), 7);
        assert_eq!(g.observe("b", 3), 3);
        assert_eq!((g.known("a"), g.known("b")), (Some(7), Some(3)));
        g.forget_all();
        assert_eq!((g.known("a"), g.known("b")), (None, None));
        assert_eq!(g.bump_local("b"), 1);
        assert_eq!(g.bumps.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn concurrent_first_sightings_lose_no_bump() {
        let g = Arc::new(Generations::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let g = Arc::clone(&g);
                std::thread::spawn(move || {
                    for i in 0..200 {
                        g.bump_local(&format!("scope-{}", (i + t) % 50));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let total: u64 = (0..50)
            .map(|i| g.known(&format!("scope-{i}")).unwrap())
            .sum();
        assert_eq!(total, 800);
    }
}
