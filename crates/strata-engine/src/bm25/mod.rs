//! The in-process lexical index of the embedded default: an inverted index over texts keyed
//! by `u64` ids, one posting list per word and tenant, ranked by BM25.
//!
//! SQLite's FTS5 ranks by scoring every row that matches any query word (no dynamic
//! pruning); at 100k short chunks that was 1-1.5 us a match and 17 ms at the 95th
//! percentile for a search alone. Here a search walks the query words' posting lists of the
//! caller's tenant only, adding each posting's BM25 term into a dense accumulator: a few
//! nanoseconds a posting (BENCHMARKS.md, "Hybrid retrieval").
//!
//! The database is the source of truth, as for the vector index: the index is built from the
//! stored chunks when the engine opens and updated after each write commits, so a crash
//! costs a rebuild, never a wrong answer.
//!
//! Text analysis ([`analyze`]): runs of letters, digits and combining marks, lower-cased,
//! diacritics removed (canonical decomposition, marks dropped), English stop words dropped,
//! then the Snowball English stemmer (the one PostgreSQL's `english` configuration uses). A
//! document's length is the number of words kept, as PostgreSQL's lexeme count is.
//!
//! Scores are BM25 with k1 = 1.2, b = 0.75 and the idf `ln((N - n + 0.5) / (n + 0.5))`
//! floored at 1e-6, N, n and the average length counted over the whole index (every tenant),
//! as the PostgreSQL backend's are: a score reveals how common a word is overall, never whose
//! text has it. A removed text leaves N and the lengths at once; its postings, and with them
//! its words' n, stay until its tenant's postings are compacted, which happens as soon as an
//! eighth of them are dead (as a deleted document counts in Lucene's statistics until a merge).
//! A word no text holds any more leaves the dictionary and its id is reused, so an index
//! whose texts keep changing (new words in every upload: names, numbers, ids) stays the size
//! of what it holds: before this, a one-hour soak's BM25 dictionary grew by ~34 bytes an
//! upload for as long as it ran.
//!
//! Must not import: HTTP types, the cache, the store, the embedder.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Mutex, OnceLock, RwLock};

use rust_stemmers::{Algorithm, Stemmer};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use crate::error::{EngineError, Result};
use crate::ids::TenantId;
use crate::store::lexical::is_stop_word;

/// BM25's term-frequency saturation.
const K1: f32 = 1.2;
/// BM25's length normalisation.
const B: f32 = 0.75;
/// Longest word indexed, in characters (as [`crate::store::LexicalQuery`] keeps).
const MAX_WORD_CHARS: usize = 64;
/// Bits of a posting that hold the term frequency (saturated at 255); the rest is the slot.
const TF_BITS: u32 = 8;
/// Most live texts one tenant can hold in this index.
pub const MAX_TENANT_TEXTS: usize = (1 << (32 - TF_BITS)) - 1;

fn stemmer() -> &'static Stemmer {
    static STEMMER: OnceLock<Stemmer> = OnceLock::new();
    STEMMER.get_or_init(|| Stemmer::create(Algorithm::English))
}

/// The index terms of `text`, in order, repeats kept.
pub fn analyze(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || is_combining_mark(c)))
        .filter_map(term)
}

/// The index term of one word of a query or text: `None` for a stop word, a word longer
/// than the index keeps, or a run with no letter or digit.
pub fn term(word: &str) -> Option<String> {
    if word.is_empty() || word.chars().count() > MAX_WORD_CHARS {
        return None;
    }
    let lower = word.to_lowercase();
    let folded: String = if lower.is_ascii() {
        lower
    } else {
        lower.nfd().filter(|c| !is_combining_mark(*c)).collect()
    };
    if folded.is_empty() || is_stop_word(&folded) {
        return None;
    }
    Some(stemmer().stem(&folded).into_owned())
}

/// One tenant's postings.
#[derive(Default)]
struct Shard {
    /// Term id -> postings `slot << 8 | tf`, slots ascending.
    postings: HashMap<u32, Vec<u32>>,
    /// Slot -> id.
    ids: Vec<u64>,
    /// Slot -> length in terms; `u32::MAX` once removed.
    lens: Vec<u32>,
    /// Slots removed but still in the postings.
    dead: usize,
}

const DEAD: u32 = u32::MAX;

impl Shard {
    fn live(&self) -> usize {
        self.ids.len() - self.dead
    }
}

#[derive(Default)]
struct Inner {
    terms: HashMap<Box<str>, u32>,
    /// Term id -> texts whose postings hold it (removed ones until compaction).
    df: Vec<u32>,
    /// Terms still in `terms` whose `df` fell to 0.
    unused: usize,
    /// Term ids free for new words (taken out of `terms`).
    free_terms: Vec<u32>,
    /// Owner -> its shard's index in `shards`.
    owners: HashMap<TenantId, u32>,
    shards: Vec<Shard>,
    /// Id -> shard index << 32 | slot: one entry per live text.
    slots: HashMap<u64, u64>,
    /// The sum of the live texts' lengths.
    tokens: u64,
}

/// A BM25 index over texts, partitioned by tenant.
#[derive(Default)]
pub struct Bm25Index {
    inner: RwLock<Inner>,
    scratch: Mutex<Vec<Scratch>>,
}

/// A text's id, owner, term frequencies and length.
type Analysed<'a> = (u64, &'a TenantId, HashMap<String, u32>, u32);

/// Each text's term frequencies and length.
fn analyse(rows: &[(u64, TenantId, String)]) -> Vec<Analysed<'_>> {
    rows.iter()
        .map(|(id, owner, text)| {
            let mut tf: HashMap<String, u32> = HashMap::new();
            let mut len = 0u32;
            for t in analyze(text) {
                *tf.entry(t).or_default() += 1;
                len += 1;
            }
            (*id, owner, tf, len)
        })
        .collect()
}

/// Batches this large are analysed on several threads.
const PARALLEL_FROM: usize = 2048;

/// Accumulators kept for reuse (more searches at once allocate their own).
const SCRATCH_KEPT: usize = 4;

/// One search's accumulator: a score per slot (all zero between searches) and the slots
/// scored.
#[derive(Default)]
struct Scratch {
    acc: Vec<f32>,
    touched: Vec<u32>,
}

/// A scored text; greater is better: a higher score, then a lower id.
#[derive(Clone, Copy, PartialEq)]
struct Ranked(f32, u64);

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}

/// The size of an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Bm25Stats {
    /// Texts searchable.
    pub texts: u64,
    /// Distinct terms in the dictionary (those no text holds any more leave it in batches).
    pub terms: usize,
    /// Postings held (removed texts' included until compaction).
    pub postings: usize,
    /// An estimate of the heap the index holds, in bytes.
    pub heap_bytes: usize,
}

impl Bm25Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Indexes texts (replacing what an id held before). A large batch (a start-up build, a
    /// tenant's memories) is analysed on every core before the index is locked once.
    pub fn add(&self, rows: &[(u64, TenantId, String)]) -> Result<()> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let analysed: Vec<Analysed<'_>> = if rows.len() < PARALLEL_FROM || cores < 2 {
            analyse(rows)
        } else {
            let per = rows.len().div_ceil(cores);
            std::thread::scope(|scope| {
                let parts: Vec<_> = rows
                    .chunks(per)
                    .map(|part| scope.spawn(move || analyse(part)))
                    .collect();
                parts
                    .into_iter()
                    .flat_map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                    .collect()
            })
        };
        let mut inner = self.write();
        let replaced: Vec<u64> = rows
            .iter()
            .map(|(id, _, _)| *id)
            .filter(|id| inner.slots.contains_key(id))
            .collect();
        remove_locked(&mut inner, &replaced);
        for (id, owner, tf, len) in analysed {
            let Inner {
                terms,
                df,
                unused,
                free_terms,
                owners,
                shards,
                slots,
                ..
            } = &mut *inner;
            let s = *owners.entry(owner.clone()).or_insert_with(|| {
                shards.push(Shard::default());
                (shards.len() - 1) as u32
            });
            let shard = &mut shards[s as usize];
            if shard.live() >= MAX_TENANT_TEXTS {
                return Err(EngineError::Internal(format!(
                    "the lexical index holds at most {MAX_TENANT_TEXTS} texts per tenant"
                )));
            }
            if shard.ids.len() >= MAX_TENANT_TEXTS {
                *unused += compact(shard, s, df, slots);
            }
            let slot = shard.ids.len() as u32;
            shard.ids.push(id);
            shard.lens.push(len);
            for (word, n) in tf {
                let tid = match terms.get(word.as_str()) {
                    Some(&t) => {
                        *unused -= usize::from(df[t as usize] == 0);
                        t
                    }
                    None => {
                        let t = free_terms.pop().unwrap_or_else(|| {
                            df.push(0);
                            (df.len() - 1) as u32
                        });
                        terms.insert(word.into_boxed_str(), t);
                        t
                    }
                };
                df[tid as usize] += 1;
                shard
                    .postings
                    .entry(tid)
                    .or_default()
                    .push((slot << TF_BITS) | n.min(255));
            }
            slots.insert(id, (u64::from(s) << 32) | u64::from(slot));
            inner.tokens += u64::from(len);
        }
        forget_unused_terms(&mut inner);
        Ok(())
    }

    /// Forgets texts (ids not held are ignored).
    pub fn remove(&self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        remove_locked(&mut self.write(), ids);
    }

    /// Whether an id is indexed.
    pub fn contains(&self, id: u64) -> bool {
        self.read().slots.contains_key(&id)
    }

    /// Texts searchable.
    pub fn len(&self) -> usize {
        self.read().slots.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The owner's `limit` best texts for `terms` (index terms, see [`term`]; repeats
    /// count once), among `allowed` when given: (id, BM25), best first, ties by id.
    pub fn search(
        &self,
        owner: &TenantId,
        terms: &[String],
        limit: usize,
        allowed: Option<&HashSet<u64>>,
    ) -> Vec<(u64, f32)> {
        let inner = self.read();
        let Some(&s) = inner.owners.get(owner) else {
            return Vec::new();
        };
        let shard = &inner.shards[s as usize];
        if limit == 0 || inner.slots.is_empty() {
            return Vec::new();
        }
        let n = inner.slots.len() as f32;
        let avgdl = (inner.tokens as f32 / n).max(f32::MIN_POSITIVE);
        // Allowed slots, from the allowed ids this owner holds.
        let gate: Option<Vec<bool>> = allowed.map(|ids| {
            let mut gate = vec![false; shard.ids.len()];
            for id in ids {
                if let Some(&at) = inner.slots.get(id)
                    && (at >> 32) as u32 == s
                {
                    gate[at as u32 as usize] = true;
                }
            }
            gate
        });
        let mut seen: HashSet<u32> = HashSet::new();
        let mut scratch = self.take_scratch(shard.ids.len());
        let Scratch { acc, touched } = &mut scratch;
        for word in terms {
            let Some(&tid) = inner.terms.get(word.as_str()) else {
                continue;
            };
            if !seen.insert(tid) {
                continue;
            }
            let Some(list) = shard.postings.get(&tid) else {
                continue;
            };
            let df = inner.df[tid as usize] as f32;
            let idf = ((n - df + 0.5) / (df + 0.5)).ln().max(1e-6);
            for &p in list {
                let slot = (p >> TF_BITS) as usize;
                let len = shard.lens[slot];
                if len == DEAD || gate.as_ref().is_some_and(|g| !g[slot]) {
                    continue;
                }
                let tf = (p & 0xff) as f32;
                let s = idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len as f32 / avgdl));
                if acc[slot] == 0.0 {
                    touched.push(slot as u32);
                }
                acc[slot] += s;
            }
        }
        // The best `limit` in a min-heap (its top the worst kept), then best first.
        let mut best: BinaryHeap<Reverse<Ranked>> = BinaryHeap::with_capacity(limit + 1);
        for &slot in touched.iter() {
            let hit = Ranked(acc[slot as usize], shard.ids[slot as usize]);
            acc[slot as usize] = 0.0;
            if best.len() < limit {
                best.push(Reverse(hit));
            } else if best.peek().is_some_and(|w| hit > w.0) {
                best.pop();
                best.push(Reverse(hit));
            }
        }
        touched.clear();
        self.return_scratch(scratch);
        let mut hits: Vec<(u64, f32)> = best.into_iter().map(|Reverse(r)| (r.1, r.0)).collect();
        hits.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits
    }

    /// A zeroed accumulator of at least `len` slots, from the pool when one is free. Searches
    /// reuse them: a fresh shard-sized array per search, freed on whichever blocking thread
    /// ran it, left the allocator holding tens of MiB across threads.
    fn take_scratch(&self, len: usize) -> Scratch {
        let mut scratch = self
            .scratch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        if scratch.acc.len() < len {
            scratch.acc.resize(len, 0.0);
        }
        scratch
    }

    /// Returns an accumulator (zeroed again by the caller) to the pool.
    fn return_scratch(&self, scratch: Scratch) {
        let mut pool = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < SCRATCH_KEPT {
            pool.push(scratch);
        }
    }

    /// How big the index is.
    pub fn stats(&self) -> Bm25Stats {
        let inner = self.read();
        let mut postings = 0;
        let mut heap = inner.terms.keys().map(|k| k.len() + 24).sum::<usize>()
            + inner.df.capacity() * 4
            + inner.free_terms.capacity() * 4
            + inner.slots.capacity() * 17
            + inner.owners.capacity() * 40;
        for shard in &inner.shards {
            postings += shard.postings.values().map(Vec::len).sum::<usize>();
            heap += shard.postings.capacity() * 32
                + shard
                    .postings
                    .values()
                    .map(|v| v.capacity() * 4)
                    .sum::<usize>()
                + shard.ids.capacity() * 8
                + shard.lens.capacity() * 4;
        }
        Bm25Stats {
            texts: inner.slots.len() as u64,
            terms: inner.terms.len(),
            postings,
            heap_bytes: heap,
        }
    }
}

fn remove_locked(inner: &mut Inner, ids: &[u64]) {
    let Inner {
        df,
        unused,
        shards,
        slots,
        tokens,
        ..
    } = inner;
    let mut touched: HashSet<u32> = HashSet::new();
    for id in ids {
        let Some(at) = slots.remove(id) else {
            continue;
        };
        let (s, slot) = ((at >> 32) as u32, at as u32);
        let shard = &mut shards[s as usize];
        let len = std::mem::replace(&mut shard.lens[slot as usize], DEAD);
        shard.dead += 1;
        *tokens -= u64::from(len);
        touched.insert(s);
    }
    // An emptied shard keeps its place (owners map to indexes), holding nothing.
    for s in touched {
        let shard = &mut shards[s as usize];
        if shard.dead * 8 >= shard.ids.len() {
            *unused += compact(shard, s, df, slots);
        }
    }
    forget_unused_terms(inner);
}

/// Takes the words no text holds out of the dictionary and frees their ids, once they are a
/// quarter of it (so the scan costs O(1) per word forgotten).
fn forget_unused_terms(inner: &mut Inner) {
    if inner.unused < 64 || inner.unused * 4 < inner.terms.len() {
        return;
    }
    let Inner {
        terms,
        df,
        free_terms,
        ..
    } = inner;
    terms.retain(|_, &mut t| {
        let used = df[t as usize] != 0;
        if !used {
            free_terms.push(t);
        }
        used
    });
    inner.unused = 0;
}

/// Drops shard `s`'s removed slots: renumbers the live ones (order kept, so posting lists
/// stay ascending) in the shard and in `slots`, filters every posting list, and takes the
/// dropped postings out of `df`. Returns how many terms that left unused (`df` 0).
fn compact(shard: &mut Shard, s: u32, df: &mut [u32], slots: &mut HashMap<u64, u64>) -> usize {
    let mut emptied = 0;
    let mut renumber = vec![DEAD; shard.ids.len()];
    let mut ids = Vec::with_capacity(shard.live());
    let mut lens = Vec::with_capacity(shard.live());
    for (slot, (&id, &len)) in shard.ids.iter().zip(&shard.lens).enumerate() {
        if len != DEAD {
            renumber[slot] = ids.len() as u32;
            slots.insert(id, (u64::from(s) << 32) | ids.len() as u64);
            ids.push(id);
            lens.push(len);
        }
    }
    shard.postings.retain(|&tid, list| {
        let before = list.len();
        list.retain_mut(|p| {
            let new = renumber[(*p >> TF_BITS) as usize];
            if new == DEAD {
                return false;
            }
            *p = (new << TF_BITS) | (*p & 0xff);
            true
        });
        let n = &mut df[tid as usize];
        *n -= (before - list.len()) as u32;
        emptied += usize::from(before > list.len() && *n == 0);
        list.shrink_to_fit();
        !list.is_empty()
    });
    shard.ids = ids;
    shard.lens = lens;
    shard.dead = 0;
    emptied
}

#[cfg(test)]
mod tests;
