//! Per-thread memos of a hot path's lookups, kept per owner (an authenticator, a rate
//! limiter): a repeat is answered from the thread's own map, writing no line another core
//! reads. Owns: the bounded map and its insert. Must not: know what is remembered or when it
//! stops being valid (each owner stores its own generation beside the value).

use std::collections::HashMap;
use std::hash::Hash;

/// Owner id -> that owner's entries on this thread.
pub(crate) type PerOwner<K, V> = HashMap<u64, HashMap<K, V, strata_cache::FastHashBuilder>>;

/// Remembers `value` under `key` for `owner`, starting over when this thread holds
/// `owners` owners already (and not this one) or `per_owner` entries of this one.
pub(crate) fn remember<K: Hash + Eq, V>(
    memo: &mut PerOwner<K, V>,
    owner: u64,
    key: K,
    value: V,
    owners: usize,
    per_owner: usize,
) {
    if memo.len() >= owners && !memo.contains_key(&owner) {
        memo.clear();
    }
    let mine = memo.entry(owner).or_default();
    if mine.len() >= per_owner {
        mine.clear();
    }
    mine.insert(key, value);
}
