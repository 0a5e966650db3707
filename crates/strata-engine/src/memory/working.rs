//! Working sets: each active tenant's memories held in this process, with their embeddings
//! as one row-major matrix and a BM25 index of their texts, so a memory search is exact
//! cosine and BM25 over the tenant's own memories, with no database round trip and nothing
//! of another tenant's anywhere in reach.
//!
//! A set is loaded from the store on a tenant's first search or add (or by a preload) and
//! kept while the total stays within a byte budget, the least recently used sets evicted
//! first. It is only trusted at the cache generation of the tenant's memory scope it was
//! built at: a write through any process bumps that generation (acknowledged by every
//! process when Redis is configured), and a set at an older generation is rebuilt on next
//! use. A write through this process updates the set in place and adopts the new generation
//! only when its own bump was the only one; otherwise the set is dropped and rebuilt.
//!
//! Search is linear in the tenant's memories, in two passes: every passing memory is scored
//! against the query with 8-bit codes of the vectors (a quarter of the bytes to read; each
//! vector scaled by its largest component), the best `2n` by that estimate are scored again
//! exactly with their f32 vectors, and the best `n` of those are the semantic candidates, with
//! their exact cosines. At 384 dimensions the estimate errs by about 0.01, far inside the
//! margin the second pass leaves. An approximate index (HNSW) would cost more to keep in step
//! with every add than a scan of a user's memories costs.
//!
//! Must not import: the store, the cache, HTTP types.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};

use super::{Memory, MemoryFilter};
use crate::bm25::Bm25Index;
use crate::ids::{MemoryId, TenantId};

/// The lexical index's partition of current memories.
fn current() -> &'static TenantId {
    static T: std::sync::OnceLock<TenantId> = std::sync::OnceLock::new();
    T.get_or_init(|| TenantId::parse("current").expect("a valid tenant name"))
}

/// The lexical index's partition of superseded memories.
fn superseded() -> &'static TenantId {
    static T: std::sync::OnceLock<TenantId> = std::sync::OnceLock::new();
    T.get_or_init(|| TenantId::parse("superseded").expect("a valid tenant name"))
}

/// Rough bytes a memory costs besides its vector.
const ENTRY_OVERHEAD: usize = 320;

/// One memory in a set.
struct Entry {
    memory: Memory,
    alive: bool,
}

/// A tenant's memories in process (see the module doc).
pub struct TenantSet {
    /// The generation of the tenant's memory scope this set is true at.
    generation: AtomicU64,
    /// Serialises this process's writes to the tenant's memories (a near-duplicate check and
    /// the write it decides on must not interleave with another's).
    pub(crate) write: Arc<tokio::sync::Mutex<()>>,
    state: RwLock<State>,
}

struct State {
    dims: usize,
    entries: Vec<Entry>,
    /// Row-major, `dims` per entry; zeros for a memory embedded by another model.
    matrix: Vec<f32>,
    /// The same rows as 8-bit codes, and each row's scale (code * scale ~ component).
    codes: Vec<i8>,
    scales: Vec<f32>,
    /// Live entries by id.
    at: HashMap<MemoryId, usize>,
    /// Texts by entry index, in the `current` or `superseded` partition.
    lexical: Bm25Index,
    dead: usize,
    text_bytes: usize,
}

/// A search candidate: an entry's cosine similarity and, when the lexical side found it,
/// its BM25 score.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The memory.
    pub memory: Memory,
    /// Cosine similarity to the query.
    pub cosine: f32,
    /// BM25, when the lexical side proposed it.
    pub bm25: Option<f32>,
}

/// Extra conditions of a search beyond [`MemoryFilter`]: metadata fields that must equal.
pub type MetadataMatch = serde_json::Map<String, serde_json::Value>;

impl TenantSet {
    /// A set of these memories (with their vectors when the current model made them), true at
    /// `generation`.
    pub fn new(rows: Vec<(Memory, Option<Vec<f32>>)>, dims: usize, generation: u64) -> Self {
        let mut state = State {
            dims,
            entries: Vec::with_capacity(rows.len()),
            matrix: Vec::with_capacity(rows.len() * dims),
            codes: Vec::with_capacity(rows.len() * dims),
            scales: Vec::with_capacity(rows.len()),
            at: HashMap::with_capacity(rows.len()),
            lexical: Bm25Index::new(),
            dead: 0,
            text_bytes: 0,
        };
        let mut texts = Vec::with_capacity(rows.len());
        for (memory, vector) in rows {
            let i = state.push(memory, vector.as_deref());
            let m = &state.entries[i].memory;
            texts.push((i as u64, partition(m).clone(), m.text.clone()));
        }
        // Texts beyond the lexical index's per-partition limit stay searchable by vector.
        if let Err(e) = state.lexical.add(&texts) {
            tracing::warn!(error = %e, "memory working set: lexical index incomplete");
        }
        Self {
            generation: AtomicU64::new(generation),
            write: Arc::default(),
            state: RwLock::new(state),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The generation it is true at.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Marks it true at `g` (after this process's own write moved the scope there).
    pub fn adopt(&self, g: u64) {
        self.generation.store(g, Ordering::Release);
    }

    /// Live memories held.
    pub fn len(&self) -> usize {
        self.read().at.len()
    }

    /// Whether it holds no memory.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate bytes held.
    pub fn bytes(&self) -> usize {
        let s = self.read();
        s.entries.len() * (s.dims * 5 + ENTRY_OVERHEAD) + s.text_bytes
    }

    /// One memory by id.
    pub fn get(&self, id: MemoryId) -> Option<Memory> {
        let s = self.read();
        s.at.get(&id).map(|&i| s.entries[i].memory.clone())
    }

    /// Memories by id (unknown ones left out), in the order asked.
    pub fn get_many(&self, ids: &[MemoryId]) -> Vec<Memory> {
        let s = self.read();
        ids.iter()
            .filter_map(|id| s.at.get(id).map(|&i| s.entries[i].memory.clone()))
            .collect()
    }

    /// The current memory most similar to `vector` (among those with `key` when given):
    /// its id and cosine.
    pub fn nearest_current(&self, vector: &[f32], key: Option<&str>) -> Option<(MemoryId, f32)> {
        let s = self.read();
        let mut best: Option<(MemoryId, f32)> = None;
        for (i, e) in s.entries.iter().enumerate() {
            let m = &e.memory;
            if !e.alive || m.superseded_by.is_some() || (key.is_some() && m.key.as_deref() != key) {
                continue;
            }
            let c = dot(s.row(i), vector);
            if best.is_none_or(|(_, b)| c > b) {
                best = Some((m.id, c));
            }
        }
        best
    }

    /// Up to `limit` memories passing the filters, newest first, strictly older than
    /// `before`.
    pub fn list(
        &self,
        filter: &MemoryFilter,
        metadata: &MetadataMatch,
        before: Option<MemoryId>,
        limit: usize,
    ) -> Vec<Memory> {
        let s = self.read();
        let mut out: Vec<&Memory> = s
            .entries
            .iter()
            .filter(|e| e.alive && before.is_none_or(|b| e.memory.id < b))
            .map(|e| &e.memory)
            .filter(|m| passes(m, filter, metadata))
            .collect();
        out.sort_unstable_by_key(|m| std::cmp::Reverse(m.id));
        out.into_iter().take(limit).cloned().collect()
    }

    /// The current memory holding `key`, if any.
    pub fn current_with_key(&self, key: &str) -> Option<MemoryId> {
        let s = self.read();
        s.entries
            .iter()
            .find(|e| {
                e.alive && e.memory.superseded_by.is_none() && e.memory.key.as_deref() == Some(key)
            })
            .map(|e| e.memory.id)
    }

    /// The candidates of a search: the best `n` by cosine and the best `n` by BM25 among the
    /// memories passing the filters, merged.
    pub fn candidates(
        &self,
        vector: &[f32],
        terms: &[String],
        filter: &MemoryFilter,
        metadata: &MetadataMatch,
        n: usize,
    ) -> Vec<Candidate> {
        let s = self.read();
        let passes = |m: &Memory| passes(m, filter, metadata);
        // Semantic, first pass: the 8-bit estimate over the passing entries, the best 2n kept.
        let mut q = vec![0i8; vector.len()];
        let q_scale = quantize(vector, &mut q);
        let wide = n.saturating_mul(2).max(n + 16);
        let mut heap = std::collections::BinaryHeap::with_capacity(wide + 1);
        let mut passing: Option<HashSet<u64>> = needs_gate(filter, metadata).then(HashSet::default);
        for (i, e) in s.entries.iter().enumerate() {
            if !e.alive || !passes(&e.memory) {
                continue;
            }
            if let Some(p) = passing.as_mut() {
                p.insert(i as u64);
            }
            let estimate = dot_i8(s.code_row(i), &q) as f32 * s.scales[i] * q_scale;
            heap.push(std::cmp::Reverse((Score(estimate), std::cmp::Reverse(i))));
            if heap.len() > wide {
                heap.pop();
            }
        }
        // Second pass: exact cosines of those, the best n kept.
        let mut exact: Vec<(usize, f32)> = heap
            .into_iter()
            .map(|std::cmp::Reverse((_, std::cmp::Reverse(i)))| (i, dot(s.row(i), vector)))
            .collect();
        exact.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        exact.truncate(n);
        let mut found: HashMap<usize, (f32, Option<f32>)> =
            exact.into_iter().map(|(i, c)| (i, (c, None))).collect();
        // Lexical: BM25 in the partitions the filter allows.
        if !terms.is_empty() {
            let mut parts = vec![current()];
            if filter.include_superseded {
                parts.push(superseded());
            }
            for part in parts {
                for (i, bm25) in s.lexical.search(part, terms, n, passing.as_ref()) {
                    let i = i as usize;
                    let cosine = found.get(&i).map_or_else(|| dot(s.row(i), vector), |f| f.0);
                    found.insert(i, (cosine, Some(bm25)));
                }
            }
        }
        found
            .into_iter()
            .map(|(i, (cosine, bm25))| Candidate {
                memory: s.entries[i].memory.clone(),
                cosine,
                bm25,
            })
            .collect()
    }

    /// Adds or replaces a memory (and its vector; `None` keeps the vector it had).
    pub fn put(&self, memory: Memory, vector: Option<&[f32]>) {
        let mut s = self.write_state();
        if let Some(&i) = s.at.get(&memory.id) {
            let dims = s.dims;
            if let Some(v) = vector.filter(|v| v.len() == dims) {
                s.matrix[i * dims..(i + 1) * dims].copy_from_slice(v);
                let State { codes, scales, .. } = &mut *s;
                scales[i] = quantize(v, &mut codes[i * dims..(i + 1) * dims]);
            }
            let text = memory.text.clone();
            let part = partition(&memory).clone();
            s.text_bytes = s.text_bytes + text.len() - s.entries[i].memory.text.len();
            s.entries[i].memory = memory;
            let _ = s.lexical.add(&[(i as u64, part, text)]);
        } else {
            let i = s.push(memory, vector);
            let m = &s.entries[i].memory;
            let row = (i as u64, partition(m).clone(), m.text.clone());
            let _ = s.lexical.add(&[row]);
        }
    }

    /// Marks a memory superseded by another (moving it to the superseded partition).
    pub fn supersede(&self, id: MemoryId, by: MemoryId, at: DateTime<Utc>) {
        let memory = {
            let s = self.read();
            let Some(&i) = s.at.get(&id) else { return };
            let mut m = s.entries[i].memory.clone();
            m.superseded_by = Some(by);
            m.updated_at = at;
            m
        };
        self.put(memory, None);
    }

    /// Forgets memories (unknown ids are ignored); compacts when a quarter is dead.
    pub fn remove(&self, ids: &[MemoryId]) {
        let mut s = self.write_state();
        let mut gone = Vec::new();
        for id in ids {
            if let Some(i) = s.at.remove(id) {
                s.entries[i].alive = false;
                s.dead += 1;
                gone.push(i as u64);
            }
        }
        s.lexical.remove(&gone);
        if s.dead * 4 > s.entries.len().max(16) {
            s.compact();
        }
    }

    /// Counts searches that returned these memories.
    pub fn accessed(&self, hits: &[(MemoryId, u32)], at: DateTime<Utc>) {
        let mut s = self.write_state();
        for (id, times) in hits {
            if let Some(&i) = s.at.get(id) {
                let m = &mut s.entries[i].memory;
                m.access_count += u64::from(*times);
                if m.last_accessed_at.is_none_or(|t| t < at) {
                    m.last_accessed_at = Some(at);
                }
            }
        }
    }

    /// The live memories, for preloading: the `n` most recent and the `n` most accessed.
    pub fn working_memories(&self, n: usize) -> Vec<Memory> {
        let s = self.read();
        let mut live: Vec<&Memory> = s
            .entries
            .iter()
            .filter(|e| e.alive && e.memory.superseded_by.is_none())
            .map(|e| &e.memory)
            .collect();
        let mut out: Vec<Memory> = Vec::new();
        let mut seen = HashSet::new();
        live.sort_by_key(|m| std::cmp::Reverse(m.id));
        for m in live.iter().take(n) {
            seen.insert(m.id);
            out.push((*m).clone());
        }
        live.sort_by_key(|m| std::cmp::Reverse(m.access_count));
        for m in live.iter().take(n) {
            if seen.insert(m.id) {
                out.push((*m).clone());
            }
        }
        out
    }
}

impl State {
    fn row(&self, i: usize) -> &[f32] {
        &self.matrix[i * self.dims..(i + 1) * self.dims]
    }

    fn code_row(&self, i: usize) -> &[i8] {
        &self.codes[i * self.dims..(i + 1) * self.dims]
    }

    fn push(&mut self, memory: Memory, vector: Option<&[f32]>) -> usize {
        let i = self.entries.len();
        match vector.filter(|v| v.len() == self.dims) {
            Some(v) => self.matrix.extend_from_slice(v),
            None => self.matrix.extend(std::iter::repeat_n(0.0, self.dims)),
        }
        let at = self.codes.len();
        self.codes.resize(at + self.dims, 0);
        let row = &self.matrix[i * self.dims..(i + 1) * self.dims];
        self.scales.push(quantize(row, &mut self.codes[at..]));
        self.text_bytes += memory.text.len();
        self.at.insert(memory.id, i);
        self.entries.push(Entry {
            memory,
            alive: true,
        });
        i
    }

    /// Drops dead entries, renumbering the live ones (and rebuilding the lexical index).
    fn compact(&mut self) {
        let entries = std::mem::take(&mut self.entries);
        let matrix = std::mem::take(&mut self.matrix);
        self.codes.clear();
        self.scales.clear();
        let dims = self.dims;
        self.at.clear();
        self.lexical = Bm25Index::new();
        self.dead = 0;
        self.text_bytes = 0;
        let mut texts = Vec::new();
        for (old, e) in entries.into_iter().enumerate() {
            if !e.alive {
                continue;
            }
            let v = &matrix[old * dims..(old + 1) * dims];
            let i = self.push(e.memory, Some(v));
            let m = &self.entries[i].memory;
            texts.push((i as u64, partition(m).clone(), m.text.clone()));
        }
        let _ = self.lexical.add(&texts);
    }
}

fn partition(m: &Memory) -> &'static TenantId {
    if m.superseded_by.is_some() {
        superseded()
    } else {
        current()
    }
}

/// Whether a search must tell the lexical index which entries pass (anything beyond the
/// current/superseded split, which its partitions already make).
fn needs_gate(filter: &MemoryFilter, metadata: &MetadataMatch) -> bool {
    filter.session.is_some()
        || filter.key.is_some()
        || filter.since.is_some()
        || filter.until.is_some()
        || !metadata.is_empty()
}

fn passes(m: &Memory, filter: &MemoryFilter, metadata: &MetadataMatch) -> bool {
    if !filter.include_superseded && m.superseded_by.is_some() {
        return false;
    }
    if filter.session.is_some() && m.session != filter.session {
        return false;
    }
    if filter.key.is_some() && m.key != filter.key {
        return false;
    }
    let at = m.occurred_at.unwrap_or(m.created_at);
    if filter.since.is_some_and(|t| at < t) || filter.until.is_some_and(|t| at >= t) {
        return false;
    }
    metadata
        .iter()
        .all(|(k, v)| m.metadata.get(k).is_some_and(|have| have == v))
}

/// A cosine similarity, ordered totally.
#[derive(Clone, Copy, PartialEq)]
struct Score(f32);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Writes `v`'s 8-bit codes to `out` (each component over the largest, times 127) and returns
/// the scale that turns a code back into a component.
fn quantize(v: &[f32], out: &mut [i8]) -> f32 {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        out.fill(0);
        return 0.0;
    }
    let k = 127.0 / max;
    for (o, x) in out.iter_mut().zip(v) {
        *o = (x * k).round().clamp(-127.0, 127.0) as i8;
    }
    max / 127.0
}

/// Dot product of 8-bit codes. Sixteen lanes of 32-bit sums, so it vectorises.
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] += i32::from(x[l]) * i32::from(y[l]);
        }
    }
    let tail: i32 = ra
        .iter()
        .zip(rb)
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum();
    acc.iter().sum::<i32>() + tail
}

/// Dot product of unit vectors: their cosine similarity. Eight lanes, so it vectorises.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// The working sets of this process's active tenants, within a byte budget.
pub struct WorkingSets {
    budget: usize,
    sets: Mutex<HashMap<TenantId, Slot>>,
    clock: AtomicU64,
    loads: AtomicU64,
    hits: AtomicU64,
    evictions: AtomicU64,
}

struct Slot {
    set: Arc<TenantSet>,
    used: u64,
}

/// What `GET /v1/performance/cache/stats` shows of the working sets.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct WorkingSetStats {
    /// Tenants whose set is held.
    pub tenants: usize,
    /// Memories held.
    pub memories: usize,
    /// Approximate bytes held.
    pub bytes: usize,
    /// The budget.
    pub budget_bytes: usize,
    /// Sets built from the store.
    pub loads: u64,
    /// Uses of a held, current set.
    pub hits: u64,
    /// Sets dropped to stay within the budget.
    pub evictions: u64,
}

impl WorkingSets {
    /// Sets within `budget` bytes.
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            sets: Mutex::default(),
            clock: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Slot>> {
        self.sets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tenant's set when held and true at `generation`.
    pub fn get(&self, owner: &TenantId, generation: u64) -> Option<Arc<TenantSet>> {
        let mut sets = self.lock();
        let slot = sets.get_mut(owner)?;
        if slot.set.generation() != generation {
            return None;
        }
        slot.used = self.clock.fetch_add(1, Ordering::Relaxed);
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(slot.set.clone())
    }

    /// The tenant's set whatever its generation (for a write that updates it in place).
    pub fn held(&self, owner: &TenantId) -> Option<Arc<TenantSet>> {
        self.lock().get(owner).map(|s| s.set.clone())
    }

    /// Keeps a freshly built set, evicting the least recently used others past the budget
    /// (a set larger than the whole budget is used once and not kept).
    pub fn insert(&self, owner: &TenantId, set: Arc<TenantSet>) {
        self.loads.fetch_add(1, Ordering::Relaxed);
        let bytes = set.bytes();
        if bytes > self.budget {
            return;
        }
        let mut sets = self.lock();
        sets.insert(
            owner.clone(),
            Slot {
                set,
                used: self.clock.fetch_add(1, Ordering::Relaxed),
            },
        );
        let mut total: usize = sets.values().map(|s| s.set.bytes()).sum();
        while total > self.budget {
            let Some(oldest) = sets
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(t, _)| t.clone())
            else {
                break;
            };
            if let Some(gone) = sets.remove(&oldest) {
                total -= gone.set.bytes();
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Drops the tenant's set (it is rebuilt on next use).
    pub fn forget(&self, owner: &TenantId) {
        self.lock().remove(owner);
    }

    /// Drops every set.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Their statistics.
    pub fn stats(&self) -> WorkingSetStats {
        let sets = self.lock();
        WorkingSetStats {
            tenants: sets.len(),
            memories: sets.values().map(|s| s.set.len()).sum(),
            bytes: sets.values().map(|s| s.set.bytes()).sum(),
            budget_bytes: self.budget,
            loads: self.loads.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests;
