//! The in-process approximate nearest-neighbour index of the embedded default: usearch HNSW
//! over 8-bit vectors, keyed by chunk id, persisted beside the SQLite file.
//!
//! The index stores each vector as 384 signed bytes (a quarter of f32, half of f16): it walks
//! the graph twice as fast as with f16 and holds half the memory, but its scores misorder
//! near ties (recall@10 0.93 at ef 64 on 100k MiniLM vectors, against 0.97 for f16). It
//! therefore only proposes candidates; the caller re-scores them with the stored f32 vectors
//! (`ann.rs`), which restores the recall (0.973) at 4,969 queries/s against f16's 2,616 in
//! the same run.
//!
//! Vectors are brought to unit length on the way in (the local model's already are), so the
//! index ranks by inner product, which equals cosine similarity on unit vectors and costs
//! one accumulation per dimension instead of cosine's three: measured 12-14% more queries per
//! second on 20k vectors and ~20% on 100k at the same recall (`strata-bench ann --metric
//! ip|cos`).
//!
//! The database is the source of truth: every vector is also stored with its chunk. At
//! startup the saved index is used only if its sidecar fingerprint (model, count and sum of
//! keys) matches the database; otherwise, or if the file is missing or unreadable, it is
//! rebuilt from the stored vectors. A crash between a database write and a save therefore
//! costs a rebuild, never a wrong answer.
//!
//! Every key carries its owner, and every search is restricted to the caller's tenant.
//!
//! Must not import: HTTP types, the embedder.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::error::{EngineError, Result};
use crate::ids::TenantId;

/// HNSW parameters.
#[derive(Debug, Clone, Copy)]
pub struct AnnSettings {
    /// Graph degree (M).
    pub connectivity: usize,
    /// Candidate list size while inserting.
    pub expansion_add: usize,
    /// Candidate list size while searching (recall vs speed).
    pub expansion_search: usize,
    /// Filters matching at most this many chunks are searched exactly instead.
    pub exact_limit: u64,
    /// Which in-process index the embedded store keeps (over PostgreSQL, pgvector is used).
    pub local: LocalIndex,
}

/// The in-process index of the embedded store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LocalIndex {
    /// usearch HNSW over 8-bit vectors, re-ranked with the stored f32 vectors.
    #[default]
    Usearch,
    /// A qdrant-edge shard (f32 vectors, payload-aware filtered HNSW); present when strata
    /// is built with the `qdrant` feature.
    Qdrant,
}

impl LocalIndex {
    /// The name the configuration uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Usearch => "usearch",
            Self::Qdrant => "qdrant",
        }
    }
}

/// An in-process vector index of the embedded store: usearch (here) or a qdrant-edge shard
/// (`qdrant.rs`). Keys are chunk ids, each with its owner; the database holds every vector
/// too, so an index that does not match it (see `load`) is rebuilt from it.
pub trait InProcessIndex: Send + Sync + 'static {
    /// Loads the index saved at `path` if it matches the database fingerprint `(count,
    /// key_sum)`; `None` when it must be rebuilt.
    fn load(
        path: &Path,
        model: &str,
        dims: usize,
        settings: AnnSettings,
        fingerprint: (u64, u64),
    ) -> Result<Option<Self>>
    where
        Self: Sized;

    /// A fresh, empty index at `path` (whatever was there is replaced).
    fn new(path: &Path, model: &str, dims: usize, settings: AnnSettings) -> Result<Self>
    where
        Self: Sized;

    /// Records owners of keys already in a loaded index.
    fn register_owners(&self, rows: &[(u64, TenantId)]);

    /// Adds vectors (replacing any under the same key).
    fn add(&self, rows: &[(u64, TenantId, Vec<f32>)]) -> Result<()>;

    /// Removes vectors; unknown keys are ignored.
    fn remove(&self, keys: &[u64]) -> Result<()>;

    /// How many vectors the tenant has.
    fn tenant_count(&self, owner: &TenantId) -> u64;

    /// Vectors in the index.
    fn len(&self) -> usize;

    /// Whether the index is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `k` nearest of the tenant's vectors (restricted to `allowed` when given), as
    /// (key, cosine similarity), best first.
    fn search(
        &self,
        owner: &TenantId,
        query: &[f32],
        k: usize,
        allowed: Option<&HashSet<u64>>,
    ) -> Result<Vec<(u64, f32)>>;

    /// Whether [`InProcessIndex::search`]'s scores are the stored f32 vectors' own; if not
    /// they are estimates, and the caller re-ranks candidates with the stored vectors.
    fn exact_scores(&self) -> bool;

    /// Persists what changed since the last save; whether anything was written.
    fn save(&self) -> Result<bool>;
}

impl Default for AnnSettings {
    fn default() -> Self {
        Self {
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 64,
            exact_limit: 10_000,
            local: LocalIndex::Usearch,
        }
    }
}

/// The distance the index is built with, recorded in the sidecar: an index saved with
/// another (older versions used cosine) is rebuilt instead of loaded.
const METRIC: &str = "ip";

/// How vectors are stored, recorded in the sidecar like the metric (older versions stored f16).
const QUANTIZATION: ScalarKind = ScalarKind::I8;
const QUANTIZATION_NAME: &str = "i8";

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Sidecar {
    metric: String,
    quantization: String,
    model: String,
    dims: usize,
    count: u64,
    key_sum: u64,
}

/// Who owns which key of an in-process index, how many keys each tenant has, and the sum of
/// the keys (with the count, the fingerprint checked against the database at startup).
#[derive(Default)]
pub(crate) struct Owners {
    owner_of: HashMap<u64, u32>,
    tenants: HashMap<TenantId, u32>,
    per_tenant: HashMap<u32, u64>,
    key_sum: u64,
}

impl Owners {
    /// Records `key` as `owner`'s (the caller has made sure it was not recorded).
    pub(crate) fn insert(&mut self, key: u64, owner: &TenantId) {
        let next = self.tenants.len() as u32;
        let t = *self.tenants.entry(owner.clone()).or_insert(next);
        self.owner_of.insert(key, t);
        *self.per_tenant.entry(t).or_default() += 1;
        self.key_sum = self.key_sum.wrapping_add(key);
    }

    /// Forgets `key`; whether it was recorded.
    pub(crate) fn remove(&mut self, key: u64) -> bool {
        let Some(t) = self.owner_of.remove(&key) else {
            return false;
        };
        if let Some(n) = self.per_tenant.get_mut(&t) {
            *n = n.saturating_sub(1);
        }
        self.key_sum = self.key_sum.wrapping_sub(key);
        true
    }

    /// Whether `key` is recorded.
    pub(crate) fn contains(&self, key: u64) -> bool {
        self.owner_of.contains_key(&key)
    }

    /// The tenant's short number, if it has ever had a key.
    fn tenant(&self, owner: &TenantId) -> Option<u32> {
        self.tenants.get(owner).copied()
    }

    /// How many keys the tenant has.
    pub(crate) fn count(&self, owner: &TenantId) -> u64 {
        self.tenant(owner)
            .and_then(|t| self.per_tenant.get(&t))
            .copied()
            .unwrap_or(0)
    }

    /// Keys recorded, and their sum.
    pub(crate) fn fingerprint(&self) -> (u64, u64) {
        (self.owner_of.len() as u64, self.key_sum)
    }
}

struct Inner {
    index: Index,
    owners: Owners,
}

/// The index.
pub struct VectorIndex {
    inner: RwLock<Inner>,
    path: PathBuf,
    model: String,
    dims: usize,
    settings: AnnSettings,
    dirty: AtomicBool,
    slots: SearchSlots,
}

/// Search contexts usearch keeps: each running search holds one, and a search that finds
/// none free fails ("Reserve capacity ahead of searches!"; usearch reserves as many as the
/// machine has cores unless told). A one-hour soak hit that twice with four clients on two
/// cores. Searches past this many wait for a context ([`SearchSlots`]) instead.
const SEARCH_CONTEXTS: usize = 64;

/// Reserves room for `capacity` vectors and [`SEARCH_CONTEXTS`] concurrent searches.
fn reserve(index: &Index, capacity: usize) -> Result<()> {
    index
        .reserve_capacity_and_threads(capacity, SEARCH_CONTEXTS)
        .map_err(usearch_err)
}

/// At most [`SEARCH_CONTEXTS`] searches at once; the rest wait (searches take well under a
/// millisecond, on the blocking pool).
struct SearchSlots {
    free: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

struct SearchSlot<'a>(&'a SearchSlots);

impl SearchSlots {
    fn new() -> Self {
        Self {
            free: std::sync::Mutex::new(SEARCH_CONTEXTS),
            freed: std::sync::Condvar::new(),
        }
    }

    fn take(&self) -> SearchSlot<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        SearchSlot(self)
    }
}

impl Drop for SearchSlot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

fn usearch_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(format!("vector index: {e}"))
}

impl VectorIndex {
    fn empty(path: &Path, model: &str, dims: usize, settings: AnnSettings) -> Result<Self> {
        let index = Index::new(&IndexOptions {
            dimensions: dims,
            metric: MetricKind::IP,
            quantization: QUANTIZATION,
            connectivity: settings.connectivity,
            expansion_add: settings.expansion_add,
            expansion_search: settings.expansion_search,
            multi: false,
        })
        .map_err(usearch_err)?;
        reserve(&index, 1024)?;
        Ok(Self {
            inner: RwLock::new(Inner {
                index,
                owners: Owners::default(),
            }),
            path: path.to_owned(),
            model: model.to_owned(),
            dims,
            settings,
            dirty: AtomicBool::new(false),
            slots: SearchSlots::new(),
        })
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// HNSW settings in use.
    pub fn settings(&self) -> AnnSettings {
        self.settings
    }
}

impl InProcessIndex for VectorIndex {
    /// Loads the saved index at `path` if it matches the database fingerprint `(count,
    /// key_sum)`, registering owners from `owners`; returns `None` when it must be rebuilt.
    fn load(
        path: &Path,
        model: &str,
        dims: usize,
        settings: AnnSettings,
        fingerprint: (u64, u64),
    ) -> Result<Option<Self>> {
        let expected = Sidecar {
            metric: METRIC.to_owned(),
            quantization: QUANTIZATION_NAME.to_owned(),
            model: model.to_owned(),
            dims,
            count: fingerprint.0,
            key_sum: fingerprint.1,
        };
        if !sidecar_matches(&sidecar(path), &expected) {
            return Ok(None);
        }
        let this = Self::empty(path, model, dims, settings)?;
        {
            let inner = this.write();
            let Some(p) = path.to_str() else {
                return Ok(None);
            };
            if inner.index.load(p).is_err() || inner.index.size() as u64 != fingerprint.0 {
                return Ok(None);
            }
            // Loading replaces the reservation with one sized by the file.
            reserve(&inner.index, inner.index.capacity().max(1024))?;
            inner
                .index
                .change_expansion_search(settings.expansion_search);
        }
        Ok(Some(this))
    }

    /// A fresh, empty index to fill with [`InProcessIndex::add`].
    fn new(path: &Path, model: &str, dims: usize, settings: AnnSettings) -> Result<Self> {
        Self::empty(path, model, dims, settings)
    }

    /// Records owners of keys already in a loaded index.
    fn register_owners(&self, rows: &[(u64, TenantId)]) {
        let mut inner = self.write();
        for (key, owner) in rows {
            if !inner.owners.contains(*key) {
                inner.owners.insert(*key, owner);
            }
        }
    }

    /// Adds vectors (replacing any under the same key).
    fn add(&self, rows: &[(u64, TenantId, Vec<f32>)]) -> Result<()> {
        let mut inner = self.write();
        let needed = inner.index.size() + rows.len();
        if needed > inner.index.capacity() {
            reserve(&inner.index, (needed * 2).max(1024))?;
        }
        for (key, owner, v) in rows {
            if v.len() != self.dims {
                return Err(EngineError::Internal(format!(
                    "vector of {} dims, expected {}",
                    v.len(),
                    self.dims
                )));
            }
            if inner.index.contains(*key) {
                remove_locked(&mut inner, *key)?;
            }
            inner.index.add(*key, &unit(v)).map_err(usearch_err)?;
            inner.owners.insert(*key, owner);
        }
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Removes vectors; unknown keys are ignored.
    fn remove(&self, keys: &[u64]) -> Result<()> {
        let mut inner = self.write();
        for key in keys {
            remove_locked(&mut inner, *key)?;
        }
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// How many vectors the tenant has.
    fn tenant_count(&self, owner: &TenantId) -> u64 {
        self.read().owners.count(owner)
    }

    /// Vectors in the index.
    fn len(&self) -> usize {
        self.read().index.size()
    }

    /// Up to `k` nearest of the tenant's vectors (restricted to `allowed` when given), as
    /// (key, cosine similarity estimated from the 8-bit vectors), best first.
    fn search(
        &self,
        owner: &TenantId,
        query: &[f32],
        k: usize,
        allowed: Option<&HashSet<u64>>,
    ) -> Result<Vec<(u64, f32)>> {
        let _slot = self.slots.take();
        let inner = self.read();
        let Some(t) = inner.owners.tenant(owner) else {
            return Ok(Vec::new());
        };
        let query = unit(query);
        let query = query.as_ref();
        let everything =
            allowed.is_none() && inner.owners.count(owner) == inner.index.size() as u64;
        let matches = if everything {
            inner.index.search(query, k).map_err(usearch_err)?
        } else {
            let owner_of = &inner.owners.owner_of;
            inner
                .index
                .filtered_search(query, k, |key| {
                    owner_of.get(&key) == Some(&t) && allowed.is_none_or(|a| a.contains(&key))
                })
                .map_err(usearch_err)?
        };
        Ok(matches
            .keys
            .iter()
            .zip(&matches.distances)
            .map(|(k, d)| (*k, 1.0 - d))
            .collect())
    }

    /// Saves the index and its fingerprint if anything changed since the last save. Writes to
    /// temporary files and renames, so a crash never leaves a half-written index in place.
    fn save(&self) -> Result<bool> {
        save_if_changed(&self.dirty, || {
            let inner = self.read();
            let tmp = self.path.with_extension("usearch.tmp");
            let tmp_str = tmp
                .to_str()
                .ok_or_else(|| usearch_err("path is not UTF-8"))?;
            inner.index.save(tmp_str).map_err(usearch_err)?;
            let meta = Sidecar {
                metric: METRIC.to_owned(),
                quantization: QUANTIZATION_NAME.to_owned(),
                model: self.model.clone(),
                dims: self.dims,
                count: inner.index.size() as u64,
                key_sum: inner.owners.fingerprint().1,
            };
            let side_tmp = sidecar(&self.path).with_extension("json.tmp");
            std::fs::write(&side_tmp, serde_json::to_vec(&meta).map_err(usearch_err)?)?;
            std::fs::rename(&tmp, &self.path)?;
            std::fs::rename(&side_tmp, sidecar(&self.path))?;
            Ok(())
        })
    }

    fn exact_scores(&self) -> bool {
        false
    }
}

/// Runs `save` if `dirty` is set, clearing it first (a change made during the save sets it
/// again); a save that fails leaves it set, so the next one tries again. Whether it saved.
pub(crate) fn save_if_changed(
    dirty: &AtomicBool,
    save: impl FnOnce() -> Result<()>,
) -> Result<bool> {
    if !dirty.swap(false, Ordering::AcqRel) {
        return Ok(false);
    }
    let result = save();
    if result.is_err() {
        dirty.store(true, Ordering::Release);
    }
    result.map(|()| true)
}

fn remove_locked(inner: &mut Inner, key: u64) -> Result<()> {
    if inner.index.remove(key).map_err(usearch_err)? > 0 {
        inner.owners.remove(key);
    }
    Ok(())
}

fn sidecar(path: &Path) -> PathBuf {
    path.with_extension("usearch.json")
}

/// Whether the sidecar file at `path` holds exactly `expected`: a missing, unreadable or
/// different one means the saved index must not be trusted (usearch's and qdrant's alike).
pub(crate) fn sidecar_matches<T: serde::de::DeserializeOwned + PartialEq>(
    path: &Path,
    expected: &T,
) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str::<T>(&text).ok())
        .as_ref()
        == Some(expected)
}

/// Exact top-k by dot product (vectors are unit length: dot = cosine).
pub fn exact_top_k(query: &[f32], candidates: &[(u64, Vec<f32>)], k: usize) -> Vec<(u64, f32)> {
    let mut scored: Vec<(u64, f32)> = candidates
        .iter()
        .map(|(id, v)| (*id, v.iter().zip(query).map(|(a, b)| a * b).sum()))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(k);
    scored
}

/// `v` scaled to unit length (borrowed when it already is, as the local model's vectors are;
/// a zero vector stays as it is).
pub(crate) fn unit(v: &[f32]) -> std::borrow::Cow<'_, [f32]> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 || (norm - 1.0).abs() < 1e-4 {
        std::borrow::Cow::Borrowed(v)
    } else {
        std::borrow::Cow::Owned(v.iter().map(|x| x / norm).collect())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A pseudo-random unit vector, the same for the same seed (zero-centred components).
    pub(crate) fn unit(seed: u64, dims: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..dims)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        v.into_iter().map(|a| a / n).collect()
    }

    /// What every [`InProcessIndex`] must do with tenants, removals and allowed sets: run on
    /// an index made at `path`.
    pub(crate) fn tenants_never_see_each_other_and_removal_works_in<I: InProcessIndex>(
        path: &Path,
    ) {
        let idx = I::new(path, "m", 8, AnnSettings::default()).unwrap();
        let (a, b) = (TenantId::parse("a").unwrap(), TenantId::parse("b").unwrap());
        let rows: Vec<_> = (1..=50u64)
            .map(|k| {
                (
                    k,
                    if k % 2 == 0 { a.clone() } else { b.clone() },
                    unit(k, 8),
                )
            })
            .collect();
        idx.add(&rows).unwrap();
        let hits = idx.search(&a, &unit(3, 8), 10, None).unwrap();
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|(k, _)| k % 2 == 0), "{hits:?}");
        assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
        assert_eq!(idx.tenant_count(&a), 25);
        idx.remove(&[2, 4]).unwrap();
        assert_eq!(idx.tenant_count(&a), 23);
        let all = idx.search(&a, &unit(2, 8), 50, None).unwrap();
        assert_eq!(all.len(), 23);
        assert!(!all.iter().any(|(k, _)| *k == 2 || *k == 4));
        let allowed: HashSet<u64> = [6, 8, 9].into();
        let only = idx.search(&a, &unit(9, 8), 10, Some(&allowed)).unwrap();
        assert_eq!(
            only.iter().map(|h| h.0).collect::<HashSet<_>>(),
            [6, 8].into(),
            "an allowed key of another tenant stays out"
        );
        let nobody = TenantId::parse("c").unwrap();
        assert!(
            idx.search(&nobody, &unit(1, 8), 10, None)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn tenants_never_see_each_other_and_removal_works() {
        let dir = tempfile::tempdir().unwrap();
        tenants_never_see_each_other_and_removal_works_in::<VectorIndex>(
            &dir.path().join("i.usearch"),
        );
    }

    #[test]
    fn saved_index_loads_only_with_a_matching_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.usearch");
        let idx = VectorIndex::new(&path, "m", 8, AnnSettings::default()).unwrap();
        let t = TenantId::local();
        idx.add(&[(1, t.clone(), unit(1, 8)), (2, t.clone(), unit(2, 8))])
            .unwrap();
        assert!(idx.save().unwrap());
        assert!(!idx.save().unwrap(), "nothing changed since");
        let ok = VectorIndex::load(&path, "m", 8, AnnSettings::default(), (2, 3)).unwrap();
        assert!(ok.is_some());
        assert!(
            VectorIndex::load(&path, "m", 8, AnnSettings::default(), (3, 6))
                .unwrap()
                .is_none()
        );
        assert!(
            VectorIndex::load(&path, "other", 8, AnnSettings::default(), (2, 3))
                .unwrap()
                .is_none()
        );
        std::fs::write(&path, b"garbage").unwrap();
        assert!(
            VectorIndex::load(&path, "m", 8, AnnSettings::default(), (2, 3))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn exact_top_k_orders_by_similarity() {
        let q = unit(1, 8);
        let c: Vec<_> = (1..=5u64).map(|k| (k, unit(k, 8))).collect();
        let top = exact_top_k(&q, &c, 2);
        assert_eq!(top[0].0, 1);
        assert!((top[0].1 - 1.0).abs() < 1e-5);
        assert_eq!(top.len(), 2);
    }

    #[test]
    fn more_concurrent_searches_than_search_contexts_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let idx = std::sync::Arc::new(
            VectorIndex::new(
                &dir.path().join("v.usearch"),
                "m",
                8,
                AnnSettings::default(),
            )
            .unwrap(),
        );
        let a = TenantId::parse("a").unwrap();
        let rows: Vec<_> = (0..200u64).map(|k| (k, a.clone(), unit(k, 8))).collect();
        idx.add(&rows).unwrap();
        let threads: Vec<_> = (0..SEARCH_CONTEXTS * 2)
            .map(|i| {
                let (idx, a) = (idx.clone(), a.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        idx.search(&a, &unit(i as u64, 8), 10, None).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("every search succeeds");
        }
    }
}
