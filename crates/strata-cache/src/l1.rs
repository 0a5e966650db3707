//! The in-process tier: quick_cache (CLOCK-Pro-like, sharded) weighted by bytes, with an
//! expiry instant stored in each entry and checked on read (quick_cache has no TTL of its own).
//!
//! Each entry lives between 90% and 100% of its kind's TTL, spread by a hash of its key and
//! how many entries came before it: entries filled together (a warm-up, a burst of new queries)
//! would otherwise expire together and recompute together. A soak found exactly that: an
//! hour after 500 query embeddings were warmed in a few seconds, they all expired in the same
//! second and the burst of model work was turned away as overload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

// tokio's clock: real time normally, pausable in tests.
use tokio::time::Instant;

use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter};

#[derive(Clone)]
struct Entry {
    value: Bytes,
    expires: Instant,
}

#[derive(Clone)]
struct ByBytes;

impl Weighter<String, Entry> for ByBytes {
    fn weight(&self, key: &String, val: &Entry) -> u64 {
        entry_weight(key.capacity(), val.value.len())
    }
}

/// What an L1 entry costs the process, as the byte budget counts it: its key's and its
/// value's heap blocks as a size-class allocator hands them out (four classes per doubling,
/// as mimalloc and jemalloc round), the shared header a value gains when it is first read,
/// and the entry's slot in the cache's table.
///
/// Counting only the key's and the value's lengths (and 64 bytes) under-counted: a soak's
/// resident memory kept rising while the cache, at its budget, filled with more and smaller
/// entries (`strata-bench l1-memory` measures the difference).
pub fn entry_weight(key_capacity: usize, value_len: usize) -> u64 {
    (size_class(key_capacity) + size_class(value_len) + ENTRY_OVERHEAD) as u64
}

/// The cache's slot (key and entry structs, state, table index) and a value's shared
/// header, measured by `strata-bench l1-memory` (its cost phase, 16-byte values).
const ENTRY_OVERHEAD: usize = 160;

/// `n` rounded up to the block a size-class allocator serves it from: 16-byte steps to
/// 64 bytes, then four classes per power of two.
fn size_class(n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let words = n.div_ceil(8);
    if words <= 8 {
        return words.next_multiple_of(2) * 8;
    }
    let w = words - 1;
    let shift = w.ilog2() - 2;
    (((w >> shift) + 1) << shift) * 8
}

#[derive(Clone, Default)]
struct CountEvictions;

impl Lifecycle<String, Entry> for CountEvictions {
    type RequestState = u64;

    fn on_evict(&self, state: &mut u64, _key: String, _val: Entry) {
        *state += 1;
    }
}

pub(crate) struct L1 {
    cache: Cache<String, Entry, ByBytes, DefaultHashBuilder, CountEvictions>,
    evictions: AtomicU64,
    expirations: AtomicU64,
}

impl L1 {
    pub(crate) fn new(bytes: u64) -> Self {
        let estimated_items = (bytes / 2048).clamp(64, 10_000_000) as usize;
        Self {
            cache: Cache::with(
                estimated_items,
                bytes.max(1),
                ByBytes,
                DefaultHashBuilder::default(),
                CountEvictions,
            ),
            evictions: AtomicU64::new(0),
            expirations: AtomicU64::new(0),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<Bytes> {
        self.live(key, Instant::now()).map(|e| e.value)
    }

    /// The entry under `key` if it has not expired by `now`; an expired one is dropped.
    fn live(&self, key: &str, now: Instant) -> Option<Entry> {
        let e = self.cache.get(key)?;
        if e.expires <= now {
            self.cache.remove(key);
            self.expirations.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(e)
    }

    /// [`L1::get`] for a value that cannot go stale (content-addressed: the key determines
    /// it): a hit in the last fifth of the entry's life gives it another `ttl`, so the values
    /// in use stay and only the unread ones age out. A soak found why: 500 query embeddings
    /// computed in the same minute expired in the same minutes an hour later, and the
    /// searches that needed them again met the model busy with ingestion and were shed.
    pub(crate) fn get_renewing(&self, key: &str, ttl: Duration) -> Option<Bytes> {
        let now = Instant::now();
        let e = self.live(key, now)?;
        if e.expires - now < ttl / 5 {
            self.insert(key.to_owned(), e.value.clone(), ttl);
        }
        Some(e.value)
    }

    pub(crate) fn insert(&self, key: String, value: Bytes, ttl: Duration) {
        let mut evicted = 0u64;
        let expires = Instant::now() + spread(ttl, &key);
        self.cache
            .insert_with_lifecycle(key, Entry { value, expires }, &mut evicted);
        if evicted > 0 {
            self.evictions.fetch_add(evicted, Ordering::Relaxed);
        }
    }

    /// Keeps entries whose key passes `keep`; returns how many were removed.
    pub(crate) fn retain(&self, keep: impl Fn(&str) -> bool) -> u64 {
        let before = self.cache.len() as u64;
        self.cache.retain(|k, _| keep(k));
        before.saturating_sub(self.cache.len() as u64)
    }

    pub(crate) fn clear(&self) -> u64 {
        let n = self.cache.len() as u64;
        self.cache.clear();
        n
    }

    pub(crate) fn entries(&self) -> u64 {
        self.cache.len() as u64
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.cache.weight()
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.cache.capacity()
    }

    pub(crate) fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    pub(crate) fn expirations(&self) -> u64 {
        self.expirations.load(Ordering::Relaxed)
    }
}

/// `ttl` less up to a tenth of it, chosen by a hash of `key` and of how many entries were
/// stored before it.
fn spread(ttl: Duration, key: &str) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    static STORED: AtomicU64 = AtomicU64::new(0);
    let tenth = u64::try_from(ttl.as_nanos() / 10).unwrap_or(u64::MAX);
    if tenth == 0 {
        return ttl;
    }
    let mut h = DefaultHashBuilder::default().build_hasher();
    h.write(key.as_bytes());
    h.write_u64(STORED.fetch_add(1, Ordering::Relaxed));
    ttl - Duration::from_nanos(h.finish() % tenth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_round_up_to_the_allocators_blocks() {
        for (n, block) in [
            (0, 0),
            (1, 16),
            (17, 32),
            (64, 64),
            (65, 80),
            (72, 80),
            (1536, 1536),
            (3000, 3072),
            (3100, 3584),
            (4097, 5120),
        ] {
            assert_eq!(size_class(n), block, "{n} bytes");
        }
        // Never below the request, never more than a quarter above it past 64 bytes.
        for n in 65..100_000 {
            let b = size_class(n);
            assert!(b >= n && b * 4 <= n * 5 + 32, "{n} -> {b}");
        }
    }

    #[test]
    fn an_entry_weighs_more_than_its_bytes() {
        assert!(entry_weight(80, 3000) >= (80 + 3000 + 64) as u64);
        assert_eq!(entry_weight(80, 0), (80 + ENTRY_OVERHEAD) as u64);
    }
}
