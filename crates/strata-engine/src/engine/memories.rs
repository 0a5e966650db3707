//! The memory service: a tenant's long-term memories for agents. Adds are embedded (no LLM)
//! and, against the tenant's working set, either create a memory, merge into a near-duplicate
//! or supersede another; searches are hybrid recall over the working set ranked by
//! [`crate::memory::rank`]; reads, pages and histories come from the store through the cache.
//!
//! Holds only what it uses: the store, the retrieval service (embeddings through the cache),
//! the cache policy (invalidation, and the generation a working set is checked against), the
//! working sets, the access recorder, the frequent queries, the session service (an add or
//! search naming a session touches it), and the tracker of writes that must finish even if
//! their caller goes away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::Utc;

use super::{SearchService, Writes, paged};
use crate::error::{EngineError, Result};
use crate::ids::{IdKind, MemoryId, TenantId};
use crate::memory::rank::{self, Signals};
use crate::memory::working::{TenantSet, WorkingSets};
use crate::memory::{
    Memory, MemoryChange, MemoryFilter, MemoryHistory, MemoryHit, MemoryPatch, MemorySearch,
    MemorySearchResults, Preloaded,
};
use crate::model::Page;
use crate::policy::{CachePolicy, Changed};
use crate::store::Store;
use crate::timing::{Phase, measure, timed};
use crate::validate;

mod access;
mod add;
mod queries;
mod valid;

pub use access::AccessRecorder;
use queries::FrequentQueries;
use valid::{importance, memory_text};

/// Longest memory text, in characters.
pub const MAX_MEMORY_CHARS: usize = 4000;
/// Longest memory query, in characters.
pub const MAX_QUERY_CHARS: usize = 2000;
/// Most memories one add request may carry.
pub const MAX_BATCH: usize = 100;
/// Most hits a search returns.
pub const MAX_K: usize = 100;
/// Hits a search returns by default.
pub const DEFAULT_K: usize = 10;
/// Candidates each side (vector, lexical) proposes, at least.
const MIN_CANDIDATES: usize = 50;

/// Tunables of the memory service.
#[derive(Debug, Clone)]
pub struct MemorySettings {
    /// An add whose cosine similarity to a current memory of the tenant (with the same key,
    /// when it has one) is at least this merges into it.
    pub merge_threshold: f32,
    /// Bytes of working sets kept in process.
    pub working_set_bytes: usize,
}

impl Default for MemorySettings {
    fn default() -> Self {
        Self {
            merge_threshold: 0.95,
            working_set_bytes: 1 << 30,
        }
    }
}

/// Listing parameters for memories.
#[derive(Debug, Clone, Default)]
pub struct ListMemories {
    /// Page size (default 50, max 500).
    pub limit: Option<u32>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// Row filter.
    pub filter: MemoryFilter,
    /// Only memories whose metadata has these fields with these values.
    pub metadata: crate::memory::working::MetadataMatch,
}

/// A write to a tenant's memories through this process: the tenant's working set when held,
/// locked until the write is done, and the generation it was true at before.
struct Writing {
    set: Option<Arc<TenantSet>>,
    _lock: Option<tokio::sync::OwnedMutexGuard<()>>,
    before: u64,
}

/// The memory service (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct MemoryService {
    pub(super) store: Arc<dyn Store>,
    pub(super) retrieval: SearchService,
    pub(super) policy: CachePolicy,
    pub(super) sets: Arc<WorkingSets>,
    pub(super) access: AccessRecorder,
    pub(super) queries: Arc<FrequentQueries>,
    pub(super) loading: Arc<Mutex<HashMap<TenantId, Arc<tokio::sync::Mutex<()>>>>>,
    pub(super) writes: Arc<Writes>,
    pub(super) settings: MemorySettings,
    pub(super) sessions: super::SessionService,
}

impl MemoryService {
    /// The settings in force.
    pub fn settings(&self) -> &MemorySettings {
        &self.settings
    }

    /// Starts a write through this process: locks the tenant's working set, when one is
    /// held, for the write and notes the generation the set is true at.
    async fn writing(&self, set: Option<Arc<TenantSet>>) -> Writing {
        let lock = match &set {
            Some(s) => Some(s.write.clone().lock_owned().await),
            None => None,
        };
        let before = set.as_ref().map_or(0, |s| s.generation());
        Writing {
            set,
            _lock: lock,
            before,
        }
    }

    /// After a write: bumps the memory scope (every process drops its cached reads and
    /// working set), and keeps this process's set, updated in place, when the bump was the
    /// only change since it was true; the set's lock is released after.
    async fn changed(&self, owner: &TenantId, writing: Writing) {
        self.policy.changed(owner, Changed::Memories).await;
        let Some(set) = &writing.set else { return };
        let now = self
            .policy
            .cache()
            .generation(&self.policy.memory_scope(owner))
            .await;
        match now {
            Some(g) if writing.before.checked_add(1) == Some(g) => set.adopt(g),
            _ => self.sets.forget(owner),
        }
    }

    /// The owner's working set, current at the scope's generation: held, or built from the
    /// store once however many callers ask at the same moment. With the generation unknowable
    /// (Redis unreachable) it is built for this call only.
    async fn set(&self, owner: &TenantId) -> Result<Arc<TenantSet>> {
        let scope = self.policy.memory_scope(owner);
        let cache = self.policy.cache();
        let Some(g) = cache.generation(&scope).await else {
            return Ok(Arc::new(self.load(owner, u64::MAX).await?));
        };
        if let Some(set) = self.sets.get(owner, g) {
            return Ok(set);
        }
        let gate = {
            let mut loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
            loading.entry(owner.clone()).or_default().clone()
        };
        let _one = gate.lock().await;
        // The generation is read before the rows: a write between the two makes it stale.
        let g = cache.generation(&scope).await.unwrap_or(u64::MAX);
        let result = match self.sets.get(owner, g) {
            Some(set) => Ok(set),
            None => {
                let set = Arc::new(self.load(owner, g).await?);
                if g != u64::MAX {
                    self.sets.insert(owner, set.clone());
                }
                Ok(set)
            }
        };
        let mut loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        if Arc::strong_count(&gate) <= 2 {
            loading.remove(owner);
        }
        result
    }

    async fn load(&self, owner: &TenantId, generation: u64) -> Result<TenantSet> {
        let (model, dims) = self.retrieval.embedding_model();
        let started = std::time::Instant::now();
        let rows = self.store.memory_set(owner, model).await?;
        let read = started.elapsed();
        let stale = rows.iter().filter(|(_, v)| v.is_none()).count();
        if stale > 0 {
            tracing::warn!(
                stale,
                "memories embedded by another model are found by their words only; \
                 re-add them to embed them with {model}"
            );
        }
        let set = tokio::task::spawn_blocking(move || TenantSet::new(rows, dims, generation))
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        tracing::debug!(
            memories = set.len(),
            read_ms = read.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "memory working set built"
        );
        Ok(set)
    }

    /// One memory of the owner's.
    pub async fn get(&self, owner: &TenantId, id: MemoryId) -> Result<Memory> {
        self.store
            .get_memory(owner, id)
            .await?
            .ok_or_else(|| EngineError::not_found(IdKind::Memory, id))
    }

    /// A page of the owner's memories, newest first.
    pub async fn list(&self, owner: &TenantId, q: ListMemories) -> Result<Page<Memory>> {
        let f = &q.filter;
        for (field, v, max) in [("session", &f.session, 128), ("key", &f.key, 256)] {
            if let Some(v) = v {
                validate::label(field, v, max)?;
            }
        }
        let since = f.since.map(|t| t.to_rfc3339());
        let until = f.until.map(|t| t.to_rfc3339());
        let metadata = serde_json::Value::Object(q.metadata.clone()).to_string();
        let fingerprint = [
            f.session.as_deref().unwrap_or(""),
            f.key.as_deref().unwrap_or(""),
            since.as_deref().unwrap_or(""),
            until.as_deref().unwrap_or(""),
            if f.include_superseded { "all" } else { "" },
            &metadata,
        ];
        // A metadata filter is answered from the working set (which holds every memory and
        // is as current as the cache), so pages stay full however few memories match.
        let set = if q.metadata.is_empty() {
            None
        } else {
            Some(self.set(owner).await?)
        };
        let (filter, metadata, set) = (&q.filter, &q.metadata, &set);
        paged(
            q.limit,
            q.cursor.as_deref(),
            &fingerprint,
            |before, limit| async move {
                match set {
                    Some(set) => Ok(set.list(filter, metadata, before, limit as usize)),
                    None => self.store.list_memories(owner, filter, before, limit).await,
                }
            },
            |m: &Memory| m.id.to_string(),
        )
        .await
    }

    /// A memory's history: the memories it replaced and its earlier states.
    pub async fn history(&self, owner: &TenantId, id: MemoryId) -> Result<MemoryHistory> {
        self.store
            .memory_history(owner, id)
            .await?
            .ok_or_else(|| EngineError::not_found(IdKind::Memory, id))
    }

    /// Changes a current memory in place (its earlier state goes to its history).
    pub async fn patch(&self, owner: &TenantId, id: MemoryId, p: MemoryPatch) -> Result<Memory> {
        let text = p.text.map(|t| memory_text("text", t)).transpose()?;
        let importance = p.importance.map(|i| importance(Some(i))).transpose()?;
        let metadata = p.metadata.map(validate::metadata).transpose()?;
        let session = p
            .session
            .map(|s| {
                s.map(|s| validate::label("session", &s, 128).map(|()| s))
                    .transpose()
            })
            .transpose()?;
        let vector = match &text {
            Some(t) => Some(
                self.retrieval
                    .embed_for_storage(vec![t.clone()])
                    .await?
                    .remove(0),
            ),
            None => None,
        };
        let model = self.retrieval.embedding_model().0.to_owned();
        let change = MemoryChange {
            text: text.zip(vector.clone()).map(|(t, v)| (t, model, v)),
            importance,
            metadata,
            session,
            occurred_at: p.occurred_at,
            reason: "patched",
        };
        let (this, owner) = (self.clone(), owner.clone());
        self.writes
            .detach(async move {
                let writing = this.writing(this.sets.held(&owner)).await;
                let Some(memory) = this.store.change_memory(&owner, id, &change).await? else {
                    return Err(match this.store.get_memory(&owner, id).await? {
                        Some(m) => EngineError::invalid(
                            "id",
                            format!(
                                "memory {id} was superseded by {}; change the current one",
                                m.superseded_by.map(|b| b.to_string()).unwrap_or_default()
                            ),
                        ),
                        None => EngineError::not_found(IdKind::Memory, id),
                    });
                };
                if let Some(s) = &writing.set {
                    s.put(memory.clone(), vector.as_deref());
                }
                this.changed(&owner, writing).await;
                Ok(memory)
            })
            .await
    }

    /// Deletes a memory and its history.
    pub async fn delete(&self, owner: &TenantId, id: MemoryId) -> Result<()> {
        let (this, owner) = (self.clone(), owner.clone());
        self.writes
            .detach(async move {
                let writing = this.writing(this.sets.held(&owner)).await;
                let gone = this
                    .store
                    .delete_memory(&owner, id)
                    .await?
                    .ok_or_else(|| EngineError::not_found(IdKind::Memory, id))?;
                if let Some(s) = &writing.set {
                    s.remove(&gone);
                }
                this.changed(&owner, writing).await;
                Ok(())
            })
            .await
    }

    /// Hybrid recall over the owner's working set, ranked (see [`crate::memory::rank`]).
    pub async fn search(&self, owner: &TenantId, req: MemorySearch) -> Result<MemorySearchResults> {
        let query = req.query.trim();
        if query.is_empty() || query.chars().count() > MAX_QUERY_CHARS {
            return Err(EngineError::invalid(
                "query",
                format!("must be 1 to {MAX_QUERY_CHARS} characters"),
            ));
        }
        let k = req.k.unwrap_or(DEFAULT_K);
        if !(1..=MAX_K).contains(&k) {
            return Err(EngineError::invalid(
                "k",
                format!("must be between 1 and {MAX_K}"),
            ));
        }
        req.weights.validate()?;
        if let Some(m) = req.min_score
            && !(m.is_finite() && (0.0..=1.0).contains(&m))
        {
            return Err(EngineError::invalid("min_score", "must be between 0 and 1"));
        }
        let f = req.filter;
        let session = match req.session {
            Some(s) => {
                validate::label("session", &s, 128)?;
                self.sessions.touch(owner, &s);
                Some(s)
            }
            None => None,
        };
        let filter = MemoryFilter {
            session,
            key: f.key,
            include_superseded: f.include_superseded,
            since: f.since,
            until: f.until,
        };
        let (set, vector) = tokio::try_join!(
            timed(Phase::Db, self.set(owner)),
            timed(Phase::Embed, self.retrieval.embed_query(query))
        )?;
        let terms: Vec<String> = {
            let mut t: Vec<String> = crate::bm25::analyze(query).collect();
            t.sort_unstable();
            t.dedup();
            t
        };
        let n = (k * 3).max(MIN_CANDIDATES);
        let candidates = measure(Phase::Index, || {
            set.candidates(&vector, &terms, &filter, &f.metadata, n)
        });
        let now = Utc::now();
        let count = candidates.len();
        let ranked = rank::rank(
            candidates.iter().map(|c| {
                let m = &c.memory;
                (
                    m.id,
                    Signals {
                        cosine: c.cosine,
                        bm25: c.bm25,
                        at: m.occurred_at.unwrap_or(m.created_at),
                        importance: m.importance,
                        access_count: m.access_count,
                    },
                )
            }),
            &req.weights,
            now,
            k,
        );
        let mut by_id: HashMap<MemoryId, Memory> = candidates
            .into_iter()
            .map(|c| (c.memory.id, c.memory))
            .collect();
        let hits: Vec<MemoryHit> = ranked
            .into_iter()
            .filter(|(_, c)| req.min_score.is_none_or(|m| c.score >= m))
            .filter_map(|(id, components)| {
                by_id.remove(&id).map(|memory| MemoryHit {
                    memory,
                    score: components.score,
                    components,
                })
            })
            .collect();
        self.queries.note(owner, query);
        if req.record_access && !hits.is_empty() {
            self.access
                .record(owner, hits.iter().map(|h| h.memory.id).collect(), now);
        }
        Ok(MemorySearchResults {
            considered: set.len(),
            hits,
            candidates: count,
            weights: req.weights,
        })
    }

    /// Warms the owner's working set (memories and vectors) and the embeddings of the
    /// owner's frequent queries, so the next searches need neither the store nor the model.
    pub async fn preload(&self, owner: &TenantId, working: usize) -> Result<Preloaded> {
        let before = self.sets.stats().loads;
        let set = self.set(owner).await?;
        let loaded = self.sets.stats().loads > before;
        let mut queries_warmed = 0;
        for q in self.queries.top(owner) {
            self.retrieval.embed_query(&q).await?;
            queries_warmed += 1;
        }
        Ok(Preloaded {
            memories: set.len(),
            bytes: set.bytes(),
            loaded,
            queries_warmed,
            working: set.working_memories(working.min(MAX_K)),
        })
    }

    /// The working sets' statistics.
    pub fn working_set_stats(&self) -> crate::memory::working::WorkingSetStats {
        self.sets.stats()
    }

    /// Drops every working set (an operator's cache clear).
    pub fn clear_working_sets(&self) {
        self.sets.clear();
    }

    /// Accesses dropped because the writer was behind (searches' hit lists), and written.
    pub fn access_counts(&self) -> (u64, u64) {
        self.access.counts()
    }

    /// Writes the access counts still buffered.
    pub async fn flush_access(&self) {
        self.access.flush(self.store.as_ref(), &self.sets).await;
    }
}
