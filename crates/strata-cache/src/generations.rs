//! Generations per scope, as this process knows them. Without Redis they are the truth;
//! with Redis they are a copy of the shared counters, kept current by the invalidation bus
//! (`remote.rs`), and forgotten whenever this process may have missed a message.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

#[derive(Default)]
pub(crate) struct Generations {
    map: RwLock<HashMap<String, u64>>,
    /// Scopes bumped here while Redis could not be told; replayed when it can.
    pending: Mutex<HashSet<String>>,
    pub(crate) bumps: AtomicU64,
}

impl Generations {
    pub(crate) fn known(&self, scope: &str) -> Option<u64> {
        let m = self.map.read().unwrap_or_else(|p| p.into_inner());
        m.get(scope).copied()
    }

    /// Records `generation` for `scope` unless a later one is already known; returns the
    /// generation now in force.
    pub(crate) fn observe(&self, scope: &str, generation: u64) -> u64 {
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        let g = m.entry(scope.to_owned()).or_insert(generation);
        *g = (*g).max(generation);
        *g
    }

    /// Moves `scope` to its next generation here.
    pub(crate) fn bump_local(&self, scope: &str) -> u64 {
        self.bumps.fetch_add(1, Ordering::Relaxed);
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        let g = m.entry(scope.to_owned()).or_insert(0);
        *g += 1;
        *g
    }

    /// Forgets every generation (they are fetched again from Redis on next use).
    pub(crate) fn forget_all(&self) {
        self.map.write().unwrap_or_else(|p| p.into_inner()).clear();
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
