//! Per-thread memos of a hot path's lookups: a repeat is answered from the thread's own map,
//! writing no line another core reads. Kept per owner (an authenticator, a rate limiter, each
//! with an id from [`owner_id`]) and tagged with the owner's generation when remembered, so
//! an owner voids every thread's entries at once by bumping its generation. Owns: the
//! bounded maps and their lookups. Must not: know what is remembered.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};

/// Owner id -> that owner's entries on this thread, each with the generation it was
/// remembered under.
pub(crate) type PerOwner<K, V> = HashMap<u64, HashMap<K, (u64, V), strata_cache::FastHashBuilder>>;

/// A new owner's id, distinct from every other in the process.
pub(crate) fn owner_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// What `owner` remembered under `key` at `generation` (nothing from another generation).
pub(crate) fn recall<'m, K, Q, V>(
    memo: &'m PerOwner<K, V>,
    owner: u64,
    key: &Q,
    generation: u64,
) -> Option<&'m V>
where
    K: Borrow<Q> + Hash + Eq,
    Q: Hash + Eq + ?Sized,
{
    memo.get(&owner)?
        .get(key)
        .filter(|(g, _)| *g == generation)
        .map(|(_, v)| v)
}

/// Remembers `value` under `key` for `owner` at `generation`, starting over when this
/// thread holds `owners` owners already (and not this one) or `per_owner` entries of this one.
pub(crate) fn remember<K: Hash + Eq, V>(
    memo: &mut PerOwner<K, V>,
    owner: u64,
    key: K,
    generation: u64,
    value: V,
    (owners, per_owner): (usize, usize),
) {
    if memo.len() >= owners && !memo.contains_key(&owner) {
        memo.clear();
    }
    insert_bounded(
        memo.entry(owner).or_default(),
        key,
        (generation, value),
        per_owner,
    );
}

/// Inserts into a map that starts over when it holds `max` entries.
pub(crate) fn insert_bounded<K: Hash + Eq, V, S: BuildHasher>(
    map: &mut HashMap<K, V, S>,
    key: K,
    value: V,
    max: usize,
) {
    if map.len() >= max {
        map.clear();
    }
    map.insert(key, value);
}
