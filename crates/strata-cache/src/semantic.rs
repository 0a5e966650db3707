//! The semantic tier: the nearest earlier text of the same scope, by cosine similarity of
//! their embeddings, above a threshold and past the [`guard`](crate::guard).
//!
//! A scope is the caller's hash of everything that must match exactly (the tenant, the
//! model, the shaping parameters, the earlier turns of a conversation); within it one text
//! is compared by meaning. An entry holds no answer: it points (by the caller's `pointer`
//! bytes, the exact cache key's material) at the answer kept by the tiers of [`Cache`]
//! (crate::Cache), so an invalidated or expired answer makes its entry a miss, and the
//! tier never serves what the exact tiers would not.
//!
//! In-process and bounded: each scope keeps its newest `per_scope` entries, the whole tier
//! at most `max_bytes`, the scopes used least recently leaving first; an entry lives `ttl`.
//! Scans are exact (a flat matrix per scope, dot products of unit vectors), which at 384
//! dimensions costs about 0.1 ms per thousand entries.
//!
//! Must not import: anything of the domain; texts and vectors are the caller's.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::guard::{self, Conflict};

/// Limits of the tier.
#[derive(Debug, Clone)]
pub struct SemanticSettings {
    /// Bytes the whole tier may hold (vectors, texts, pointers).
    pub max_bytes: u64,
    /// Entries one scope keeps; the oldest leave first.
    pub per_scope: usize,
    /// How long an entry lives.
    pub ttl: Duration,
}

impl Default for SemanticSettings {
    fn default() -> Self {
        Self {
            max_bytes: 64 << 20,
            per_scope: 10_000,
            ttl: Duration::from_secs(30 * 60),
        }
    }
}

/// The nearest entry a lookup found.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The entry's id (the first 16 bytes of the blake3 of its pointer).
    pub id: [u8; 16],
    /// Cosine similarity to the query.
    pub similarity: f32,
    /// The caller's pointer (what to read from the exact tiers).
    pub pointer: Bytes,
    /// The entry's text.
    pub text: Arc<str>,
}

impl Candidate {
    /// The id in hex, for headers.
    pub fn id_hex(&self) -> String {
        self.id.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// What a lookup decided.
#[derive(Debug, Clone)]
pub enum Found {
    /// The nearest entry at or above the threshold that the guard let through.
    Hit(Candidate),
    /// Entries were at or above the threshold, and the guard refused them all: the nearest
    /// and why.
    Guarded(Candidate, Conflict),
    /// Nothing at or above the threshold.
    Miss,
}

/// How a lookup compares.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a> {
    /// The query text (for the guard).
    pub text: &'a str,
    /// Its embedding, unit length.
    pub vector: &'a [f32],
    /// The least similarity that may hit.
    pub threshold: f32,
    /// Whether the guard checks candidates.
    pub guard: bool,
}

/// How many candidates above the threshold the guard may look at before the lookup misses.
const GUARD_CANDIDATES: usize = 4;

struct Entry {
    id: [u8; 16],
    pointer: Bytes,
    text: Arc<str>,
    born: Instant,
}

#[derive(Default)]
struct Scope {
    /// Row-major, `dims` floats an entry, in the order of `entries`.
    vectors: VecDeque<f32>,
    entries: VecDeque<Entry>,
    dims: usize,
    bytes: u64,
    used: u64,
}

impl Scope {
    fn pop_oldest(&mut self) -> u64 {
        let Some(e) = self.entries.pop_front() else {
            return 0;
        };
        self.vectors.drain(..self.dims);
        let freed = entry_bytes(&e, self.dims);
        self.bytes -= freed;
        freed
    }
}

fn entry_bytes(e: &Entry, dims: usize) -> u64 {
    (dims * 4 + e.text.len() + e.pointer.len() + 64) as u64
}

#[derive(Default)]
struct State {
    scopes: HashMap<[u8; 32], Scope, crate::FastHashBuilder>,
    bytes: u64,
    tick: u64,
}

/// Counters of the tier.
#[derive(Debug, Default)]
struct Counters {
    lookups: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    guarded: [AtomicU64; Conflict::ALL.len()],
    inserts: AtomicU64,
}

/// What the tier holds and has done.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SemanticStats {
    /// Lookups made.
    pub lookups: u64,
    /// Lookups that found an entry the guard let through.
    pub hits: u64,
    /// Lookups with nothing at or above the threshold.
    pub misses: u64,
    /// Lookups whose candidates the guard refused, by the first conflict found.
    pub guarded: HashMap<&'static str, u64>,
    /// Entries added.
    pub inserts: u64,
    /// Entries held now.
    pub entries: u64,
    /// Scopes held now.
    pub scopes: u64,
    /// Bytes held now.
    pub bytes: u64,
}

/// The tier. Clone freely.
#[derive(Clone)]
pub struct SemanticTier {
    inner: Arc<Inner>,
}

struct Inner {
    settings: SemanticSettings,
    state: std::sync::Mutex<State>,
    counters: Counters,
}

impl SemanticTier {
    /// An empty tier.
    pub fn new(settings: SemanticSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                state: std::sync::Mutex::new(State::default()),
                counters: Counters::default(),
            }),
        }
    }

    /// Adds `text` (embedded as `vector`, unit length) to `scope`, pointing at `pointer`. An
    /// entry with the same pointer is replaced.
    pub fn insert(&self, scope: [u8; 32], text: &str, vector: &[f32], pointer: Bytes) {
        let id = id_of(&pointer);
        let settings = &self.inner.settings;
        let mut guard = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *guard;
        state.tick += 1;
        let tick = state.tick;
        let scope_entry = state.scopes.entry(scope).or_default();
        if scope_entry.dims != vector.len() {
            // A new model's vectors cannot be compared with the old ones: start over.
            state.bytes -= scope_entry.bytes;
            *scope_entry = Scope {
                dims: vector.len(),
                ..Scope::default()
            };
        }
        let dims = scope_entry.dims;
        if let Some(i) = scope_entry.entries.iter().position(|e| e.id == id) {
            let old = scope_entry.entries.remove(i).expect("position is in range");
            scope_entry.vectors.drain(i * dims..(i + 1) * dims);
            let freed = entry_bytes(&old, dims);
            scope_entry.bytes -= freed;
            state.bytes -= freed;
        }
        let entry = Entry {
            id,
            pointer,
            text: text.into(),
            born: Instant::now(),
        };
        let size = entry_bytes(&entry, dims);
        scope_entry.vectors.extend(vector.iter().copied());
        scope_entry.entries.push_back(entry);
        scope_entry.bytes += size;
        scope_entry.used = tick;
        state.bytes += size;
        while scope_entry.entries.len() > settings.per_scope.max(1) {
            state.bytes -= scope_entry.pop_oldest();
        }
        self.inner.counters.inserts.fetch_add(1, Ordering::Relaxed);
        evict(state, settings.max_bytes, &scope);
    }

    /// The nearest entries of `scope` to the probe, nearest first, at or above the threshold
    /// and at most `GUARD_CANDIDATES` of them; the first the guard lets through hits.
    pub fn lookup(&self, scope: &[u8; 32], probe: Probe<'_>) -> Found {
        let c = &self.inner.counters;
        c.lookups.fetch_add(1, Ordering::Relaxed);
        let candidates = self.nearest(scope, probe.vector, probe.threshold);
        let mut refused = None;
        for cand in candidates {
            let verdict = if probe.guard {
                guard::check(probe.text, &cand.text)
            } else {
                Ok(())
            };
            match verdict {
                Ok(()) => {
                    c.hits.fetch_add(1, Ordering::Relaxed);
                    return Found::Hit(cand);
                }
                Err(conflict) => {
                    refused.get_or_insert((cand, conflict));
                }
            }
        }
        match refused {
            Some((cand, conflict)) => {
                c.guarded[conflict as usize].fetch_add(1, Ordering::Relaxed);
                Found::Guarded(cand, conflict)
            }
            None => {
                c.misses.fetch_add(1, Ordering::Relaxed);
                Found::Miss
            }
        }
    }

    fn nearest(&self, scope: &[u8; 32], vector: &[f32], threshold: f32) -> Vec<Candidate> {
        let ttl = self.inner.settings.ttl;
        let mut guard = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *guard;
        state.tick += 1;
        let tick = state.tick;
        let Some(s) = state.scopes.get_mut(scope) else {
            return Vec::new();
        };
        s.used = tick;
        // Expired entries are the oldest: drop them from the front.
        while s.entries.front().is_some_and(|e| e.born.elapsed() > ttl) {
            state.bytes -= s.pop_oldest();
        }
        if s.dims != vector.len() || s.entries.is_empty() {
            return Vec::new();
        }
        let (a, b) = s.vectors.as_slices();
        let mut best: Vec<(f32, usize)> = Vec::new();
        let mut consider = |i: usize, row: &[f32]| {
            let sim = dot(row, vector);
            if sim >= threshold {
                best.push((sim, i));
            }
        };
        // The matrix may wrap around the deque's end: a row can straddle both slices.
        let dims = s.dims;
        let mut row = vec![0f32; dims];
        for i in 0..s.entries.len() {
            let start = i * dims;
            if start + dims <= a.len() {
                consider(i, &a[start..start + dims]);
            } else if start >= a.len() {
                let at = start - a.len();
                consider(i, &b[at..at + dims]);
            } else {
                let split = a.len() - start;
                row[..split].copy_from_slice(&a[start..]);
                row[split..].copy_from_slice(&b[..dims - split]);
                consider(i, &row);
            }
        }
        best.sort_by(|x, y| y.0.total_cmp(&x.0));
        best.truncate(GUARD_CANDIDATES);
        best.into_iter()
            .map(|(similarity, i)| {
                let e = &s.entries[i];
                Candidate {
                    id: e.id,
                    similarity,
                    pointer: e.pointer.clone(),
                    text: e.text.clone(),
                }
            })
            .collect()
    }

    /// Drops every entry.
    pub fn clear(&self) -> u64 {
        let mut state = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        let n = state.scopes.values().map(|s| s.entries.len() as u64).sum();
        *state = State::default();
        n
    }

    /// Counters and size.
    pub fn stats(&self) -> SemanticStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let state = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        SemanticStats {
            lookups: get(&c.lookups),
            hits: get(&c.hits),
            misses: get(&c.misses),
            guarded: Conflict::ALL
                .iter()
                .map(|k| (k.as_str(), get(&c.guarded[*k as usize])))
                .collect(),
            inserts: get(&c.inserts),
            entries: state.scopes.values().map(|s| s.entries.len() as u64).sum(),
            scopes: state.scopes.len() as u64,
            bytes: state.bytes,
        }
    }
}

/// Drops the scopes used least recently (never `keep`, just written) until the tier fits.
fn evict(state: &mut State, max_bytes: u64, keep: &[u8; 32]) {
    while state.bytes > max_bytes {
        let victim = state
            .scopes
            .iter()
            .filter(|(k, _)| *k != keep)
            .min_by_key(|(_, s)| s.used)
            .map(|(k, _)| *k);
        match victim {
            Some(k) => {
                let s = state.scopes.remove(&k).expect("the key was just found");
                state.bytes -= s.bytes;
            }
            None => {
                let s = state
                    .scopes
                    .get_mut(keep)
                    .expect("the scope was just written");
                if s.entries.len() <= 1 {
                    break;
                }
                state.bytes -= s.pop_oldest();
            }
        }
    }
}

fn id_of(pointer: &[u8]) -> [u8; 16] {
    let h = blake3::hash(pointer);
    let mut id = [0u8; 16];
    id.copy_from_slice(&h.as_bytes()[..16]);
    id
}

/// The dot product, in eight lanes so the compiler vectorizes it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, ra) = a.as_chunks::<8>();
    let (cb, rb) = b.as_chunks::<8>();
    for (x, y) in ca.iter().zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    fn probe<'a>(text: &'a str, vector: &'a [f32], threshold: f32) -> Probe<'a> {
        Probe {
            text,
            vector,
            threshold,
            guard: true,
        }
    }

    #[test]
    fn the_nearest_entry_above_the_threshold_hits_within_its_scope_only() {
        let tier = SemanticTier::new(SemanticSettings::default());
        let (s1, s2) = ([1u8; 32], [2u8; 32]);
        tier.insert(
            s1,
            "how do I reset my password",
            &unit(&[1.0, 0.1, 0.0]),
            Bytes::from_static(b"a"),
        );
        tier.insert(
            s1,
            "what is the weather",
            &unit(&[0.0, 1.0, 0.0]),
            Bytes::from_static(b"b"),
        );
        let q = unit(&[1.0, 0.12, 0.0]);
        match tier.lookup(&s1, probe("how can I reset my password", &q, 0.95)) {
            Found::Hit(c) => {
                assert_eq!(c.pointer.as_ref(), b"a");
                assert!(c.similarity > 0.99, "{}", c.similarity);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            tier.lookup(&s2, probe("how can I reset my password", &q, 0.5)),
            Found::Miss
        ));
        assert!(matches!(
            tier.lookup(&s1, probe("x", &unit(&[0.0, 0.0, 1.0]), 0.5)),
            Found::Miss
        ));
        let stats = tier.stats();
        assert_eq!(
            (stats.lookups, stats.hits, stats.misses, stats.entries),
            (3, 1, 2, 2)
        );
    }

    #[test]
    fn the_guard_refuses_a_near_vector_with_a_different_number_and_a_farther_one_may_hit() {
        let tier = SemanticTier::new(SemanticSettings::default());
        let s = [7u8; 32];
        tier.insert(
            s,
            "lose weight in 3 months",
            &unit(&[1.0, 0.0]),
            Bytes::from_static(b"three"),
        );
        tier.insert(
            s,
            "how to lose weight in two months",
            &unit(&[1.0, 0.2]),
            Bytes::from_static(b"two"),
        );
        let q = unit(&[1.0, 0.01]);
        match tier.lookup(&s, probe("lose weight in 2 months", &q, 0.9)) {
            Found::Hit(c) => assert_eq!(c.pointer.as_ref(), b"two"),
            other => panic!("{other:?}"),
        }
        let only_three = SemanticTier::new(SemanticSettings::default());
        only_three.insert(
            s,
            "lose weight in 3 months",
            &unit(&[1.0, 0.0]),
            Bytes::from_static(b"three"),
        );
        match only_three.lookup(&s, probe("lose weight in 2 months", &q, 0.9)) {
            Found::Guarded(c, Conflict::Number) => assert_eq!(c.pointer.as_ref(), b"three"),
            other => panic!("{other:?}"),
        }
        let unguarded = Probe {
            guard: false,
            ..probe("lose weight in 2 months", &q, 0.9)
        };
        assert!(matches!(only_three.lookup(&s, unguarded), Found::Hit(_)));
        assert_eq!(only_three.stats().guarded["number"], 1);
    }

    #[test]
    fn scopes_keep_their_newest_entries_the_tier_its_bytes_and_entries_expire() {
        let tier = SemanticTier::new(SemanticSettings {
            max_bytes: 10 * (3 * 4 + 1 + 8 + 64),
            per_scope: 4,
            ttl: Duration::from_secs(3600),
        });
        for i in 0..6u64 {
            let v = unit(&[1.0, i as f32, 0.5]);
            tier.insert([1u8; 32], "t", &v, Bytes::from(i.to_le_bytes().to_vec()));
        }
        assert_eq!(tier.stats().entries, 4, "the two oldest left the scope");
        // The matrix wrapped around the deque: every row still reads right.
        for i in 2..6u64 {
            let v = unit(&[1.0, i as f32, 0.5]);
            match tier.lookup(&[1u8; 32], probe("t", &v, 0.9999)) {
                Found::Hit(c) => assert_eq!(c.pointer.as_ref(), i.to_le_bytes()),
                other => panic!("{i}: {other:?}"),
            }
        }
        for s in 2..10u8 {
            tier.insert(
                [s; 32],
                "t",
                &unit(&[1.0, 0.0, 0.0]),
                Bytes::from_static(&[0; 8]),
            );
        }
        let st = tier.stats();
        assert!(st.bytes <= 10 * (3 * 4 + 1 + 8 + 64), "{st:?}");
        assert!(st.scopes < 9, "the least recently used scopes left: {st:?}");

        let short = SemanticTier::new(SemanticSettings {
            ttl: Duration::ZERO,
            ..SemanticSettings::default()
        });
        let v = unit(&[1.0, 0.0]);
        short.insert([1u8; 32], "t", &v, Bytes::from_static(b"x"));
        std::thread::sleep(Duration::from_millis(2));
        assert!(matches!(
            short.lookup(&[1u8; 32], probe("t", &v, 0.5)),
            Found::Miss
        ));
        assert_eq!(short.stats().entries, 0);
    }

    #[test]
    fn reinserting_a_pointer_replaces_its_entry_and_clear_empties_the_tier() {
        let tier = SemanticTier::new(SemanticSettings::default());
        let s = [3u8; 32];
        tier.insert(s, "old", &unit(&[1.0, 0.0]), Bytes::from_static(b"p"));
        tier.insert(s, "new", &unit(&[0.0, 1.0]), Bytes::from_static(b"p"));
        assert_eq!(tier.stats().entries, 1);
        match tier.lookup(&s, probe("new", &unit(&[0.0, 1.0]), 0.99)) {
            Found::Hit(c) => assert_eq!(&*c.text, "new"),
            other => panic!("{other:?}"),
        }
        assert_eq!(tier.clear(), 1);
        assert_eq!(tier.stats().bytes, 0);
    }
}
