//! Per-thread memos of a hot path's lookups: a repeat is answered from the thread's own map,
//! writing no line another core reads. Kept per owner (an authenticator, a rate limiter, each
//! with an id from [`owner_id`]) and tagged with the owner's generation when remembered, so
//! an owner voids every thread's entries at once by bumping its generation. Owns: the
//! bounded maps and their lookups. Must not: know what is remembered.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Owner id -> that owner's entries on this thread, each with the generation it was
/// remembered under. Both levels hash with a fast hasher: the std one (SipHash) on the
/// owner id cost more than the lookup it guards, on every request.
pub(crate) type PerOwner<K, V, S = strata_cache::FastHashBuilder> =
    HashMap<u64, HashMap<K, (u64, V), S>, strata_cache::FastHashBuilder>;

/// Hashes a byte key by its length and its last [`TAIL`] bytes only: for credentials, whose
/// tail (a JWT's signature, a random key) varies as much as the whole, so a 150-byte token
/// costs a 32-byte hash. Equality still compares whole keys; the maps hashed this way hold
/// only credentials already verified, so keys made to share a tail cannot crowd them.
#[derive(Clone, Default)]
pub(crate) struct TailHash(strata_cache::FastHashBuilder);

/// Bytes of a key [`TailHash`] hashes.
const TAIL: usize = 32;

impl BuildHasher for TailHash {
    type Hasher = Tail<<strata_cache::FastHashBuilder as BuildHasher>::Hasher>;

    fn build_hasher(&self) -> Self::Hasher {
        Tail(self.0.build_hasher())
    }
}

/// [`TailHash`]'s hasher.
pub(crate) struct Tail<H>(H);

impl<H: Hasher> Hasher for Tail<H> {
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(&bytes[bytes.len().saturating_sub(TAIL)..]);
    }

    fn write_usize(&mut self, n: usize) {
        self.0.write_usize(n);
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// A new owner's id, distinct from every other in the process.
pub(crate) fn owner_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// What `owner` remembered under `key` at `generation` (nothing from another generation).
pub(crate) fn recall<'m, K, Q, V, S: BuildHasher>(
    memo: &'m PerOwner<K, V, S>,
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
pub(crate) fn remember<K: Hash + Eq, V, S: BuildHasher + Default>(
    memo: &mut PerOwner<K, V, S>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_hashing_finds_whole_keys_and_tells_apart_keys_sharing_a_tail() {
        let mut memo: PerOwner<Box<[u8]>, u32, TailHash> = HashMap::default();
        let tail = [b'x'; TAIL];
        let a: Vec<u8> = [&b"header-a."[..], &tail].concat();
        let b: Vec<u8> = [&b"header-b."[..], &tail].concat();
        remember(&mut memo, 1, a.clone().into(), 7, 10, (8, 16));
        assert_eq!(recall(&memo, 1, &a[..], 7), Some(&10));
        // The same tail and length, another key: not the remembered one.
        assert_eq!(recall(&memo, 1, &b[..], 7), None);
        remember(&mut memo, 1, b.clone().into(), 7, 20, (8, 16));
        assert_eq!(
            (recall(&memo, 1, &a[..], 7), recall(&memo, 1, &b[..], 7)),
            (Some(&10), Some(&20))
        );
        // Short keys hash whole; another generation or owner sees nothing.
        remember(&mut memo, 1, b"k"[..].into(), 7, 30, (8, 16));
        assert_eq!(recall(&memo, 1, &b"k"[..], 7), Some(&30));
        assert_eq!(recall(&memo, 1, &a[..], 8), None);
        assert_eq!(recall(&memo, 2, &a[..], 7), None);
    }
}
