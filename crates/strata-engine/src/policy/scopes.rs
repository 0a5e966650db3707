//! Cache scopes: the names whose generations a tenant's writes bump.
//!
//! A tenant's scope is `t`, 24 hex digits of the tenant hashed with the store's id, and one
//! letter for the kind of data (none for search answers). No tenant name can collide with
//! the key layout, processes over the same database share cached entries, and processes
//! over different databases never do, even through one Redis.
//!
//! Every cached read names its scope, so this sits on the cache-hit path of every route.
//! A [`Scope`] is held inline and `Copy`, and each thread remembers the scopes of the
//! tenants it has served: finding one touches no lock and no reference count that another
//! core also writes. (It was an `Arc<str>` from a map behind one `RwLock`: two atomic
//! read-modify-writes on the lock and two on the tenant's `Arc`, the same cache lines on
//! both cores, for every request.)
//!
//! Must not import: HTTP types, the store.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use strata_cache::FastHashBuilder;

use crate::ids::TenantId;

/// One scope's name, held inline (at most [`Scope::MAX`] bytes of ASCII).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scope {
    len: u8,
    bytes: [u8; Scope::MAX],
}

impl Scope {
    /// The longest name a scope holds.
    pub const MAX: usize = 30;

    /// The scope of content-addressed reads shared by every tenant (never invalidated).
    pub const GLOBAL: Scope = Scope::new(strata_cache::GLOBAL_SCOPE);

    /// A scope named `name`; panics (at compile time for a constant) past [`Scope::MAX`]
    /// bytes or on a byte that is not ASCII, which no name built here has.
    const fn new(name: &str) -> Self {
        let b = name.as_bytes();
        assert!(
            b.len() <= Self::MAX,
            "a scope name is at most Scope::MAX bytes"
        );
        let mut bytes = [0; Self::MAX];
        let mut i = 0;
        while i < b.len() {
            assert!(b[i].is_ascii(), "a scope name is ASCII");
            bytes[i] = b[i];
            i += 1;
        }
        Self {
            len: b.len() as u8,
            bytes,
        }
    }

    /// This scope with `suffix` appended.
    fn with_suffix(mut self, suffix: u8) -> Self {
        let at = usize::from(self.len);
        self.bytes[at] = suffix;
        self.len += 1;
        self
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Built from ASCII only (see `new`), so this never falls back.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl std::ops::Deref for Scope {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Scope {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Cache scopes of one store's tenants.
#[derive(Debug, Clone)]
pub struct Scopes {
    salt: Arc<str>,
}

/// A tenant's scopes: search answers, the catalogue (document metadata, list pages, tag
/// counts), job statuses, memories, sessions, budgets, gateway answers and conversations.
/// Each has its own generation, so a write bumps only what it can change: a tags- or
/// metadata-only PATCH leaves search answers without a tag filter cached (hits carry
/// titles, never tags or metadata).
#[derive(Debug, Clone, Copy)]
pub(super) struct ScopeSet {
    pub(super) search: Scope,
    pub(super) catalog: Scope,
    pub(super) jobs: Scope,
    pub(super) memories: Scope,
    pub(super) sessions: Scope,
    pub(super) budget: Scope,
    pub(super) gateway: Scope,
    pub(super) conversations: Scope,
}

/// Tenants a thread remembers per store before it forgets them all (about 300 bytes each).
const MEMO_PER_THREAD: usize = 1024;

/// Stores a thread remembers tenants of (a process has one; tests make many).
const STORES_PER_THREAD: usize = 8;

type Memo = Vec<(Arc<str>, HashMap<TenantId, ScopeSet, FastHashBuilder>)>;

thread_local! {
    static MEMO: RefCell<Memo> = const { RefCell::new(Vec::new()) };
}

impl Scopes {
    /// Scopes for the store with this id.
    pub fn new(store_id: &str) -> Self {
        Self {
            salt: Arc::from(store_id),
        }
    }

    /// The tenant's scopes: remembered by this thread, or computed (one hash) and then
    /// remembered.
    pub(super) fn of(&self, owner: &TenantId) -> ScopeSet {
        MEMO.with_borrow_mut(|memo| {
            let at = match memo
                .iter()
                .position(|(salt, _)| Arc::ptr_eq(salt, &self.salt) || **salt == *self.salt)
            {
                Some(at) => at,
                None => {
                    if memo.len() >= STORES_PER_THREAD {
                        memo.clear();
                    }
                    memo.push((Arc::clone(&self.salt), HashMap::default()));
                    memo.len() - 1
                }
            };
            let sets = &mut memo[at].1;
            if let Some(set) = sets.get(owner) {
                return *set;
            }
            if sets.len() >= MEMO_PER_THREAD {
                sets.clear();
            }
            let set = self.compute(owner);
            sets.insert(owner.clone(), set);
            set
        })
    }

    fn compute(&self, owner: &TenantId) -> ScopeSet {
        let mut h = blake3::Hasher::new();
        h.update(self.salt.as_bytes());
        h.update(b"\0");
        h.update(owner.as_str().as_bytes());
        // Once per tenant and thread, so blake3's own hex writer will do.
        let search = Scope::new(&format!("t{}", &h.finalize().to_hex()[..24]));
        ScopeSet {
            search,
            catalog: search.with_suffix(b'c'),
            jobs: search.with_suffix(b'j'),
            memories: search.with_suffix(b'm'),
            sessions: search.with_suffix(b's'),
            budget: search.with_suffix(b'b'),
            gateway: search.with_suffix(b'g'),
            conversations: search.with_suffix(b'v'),
        }
    }

    /// Search answers without a tag filter: they change when the tenant's chunks or titles
    /// do.
    pub fn search(&self, owner: &TenantId) -> Scope {
        self.of(owner).search
    }

    /// Everything else derived from the tenant's documents: metadata, list pages, tag counts,
    /// and search answers with a tag filter. Every document write bumps it.
    pub fn catalog(&self, owner: &TenantId) -> Scope {
        self.of(owner).catalog
    }

    /// Both document scopes: what a change of the tenant's chunks or titles invalidates.
    pub fn documents(&self, owner: &TenantId) -> [Scope; 2] {
        let s = self.of(owner);
        [s.search, s.catalog]
    }

    /// The tenant's job statuses, invalidated on every job change without touching its
    /// search results.
    pub fn jobs(&self, owner: &TenantId) -> Scope {
        self.of(owner).jobs
    }

    /// The tenant's memories: their reads and the in-process working set follow it.
    pub fn memories(&self, owner: &TenantId) -> Scope {
        self.of(owner).memories
    }

    /// The tenant's sessions.
    pub fn sessions(&self, owner: &TenantId) -> Scope {
        self.of(owner).sessions
    }

    /// The tenant's budget status.
    pub fn budget(&self, owner: &TenantId) -> Scope {
        self.of(owner).budget
    }

    /// The tenant's conversations.
    pub fn conversations(&self, owner: &TenantId) -> Scope {
        self.of(owner).conversations
    }

    /// The tenant's gateway answers: no write of the tenant's data changes them (only an
    /// operator's clear does).
    pub fn gateway(&self, owner: &TenantId) -> Scope {
        self.of(owner).gateway
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_the_salted_hash_with_a_letter_per_kind() {
        let s = Scopes::new("store-1");
        let t = TenantId::parse("acme").unwrap();
        let mut h = blake3::Hasher::new();
        h.update(b"store-1\0acme");
        let want = format!("t{}", &h.finalize().to_hex()[..24]);
        assert_eq!(s.search(&t).as_str(), want);
        assert_eq!(s.catalog(&t).as_str(), format!("{want}c"));
        assert_eq!(s.conversations(&t).as_str(), format!("{want}v"));
        // Remembered, the same again; another store's scopes differ.
        assert_eq!(s.search(&t), s.search(&t));
        assert_ne!(Scopes::new("store-2").search(&t), s.search(&t));
        assert_ne!(s.search(&TenantId::parse("other").unwrap()), s.search(&t));
        assert_eq!(Scope::GLOBAL.as_str(), strata_cache::GLOBAL_SCOPE);
    }

    #[test]
    fn a_thread_forgets_past_its_bounds_and_still_answers() {
        let stores: Vec<Scopes> = (0..STORES_PER_THREAD + 2)
            .map(|i| Scopes::new(&format!("store-{i}")))
            .collect();
        let t = TenantId::parse("acme").unwrap();
        let first: Vec<Scope> = stores.iter().map(|s| s.search(&t)).collect();
        for i in 0..MEMO_PER_THREAD + 5 {
            let _ = stores[0].search(&TenantId::parse(&format!("t{i}")).unwrap());
        }
        let again: Vec<Scope> = stores.iter().map(|s| s.search(&t)).collect();
        assert_eq!(first, again);
    }
}
