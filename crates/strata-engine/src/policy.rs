//! Cache policy: what every cached read is keyed by, and what every write invalidates, in
//! one place.
//!
//! A cached read is a [`Read`]: its kind (which sets its TTLs), the scope whose generation
//! the writes that change it bump, and the canonical bytes of the request (every parameter
//! that changes the answer). Routes and warming ask [`CachePolicy`] for the read they serve;
//! the engine and the job runner tell it what a write [`Changed`], and it bumps exactly the
//! scopes that write can change. A new cached read is one method here, written beside the
//! invalidation that keeps it true.
//!
//! Must not import: HTTP types, the store.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use strata_cache::{Cache, CacheError, Digest, Lookup};

use crate::ids::{DocumentId, JobId, TenantId};
use crate::model::{DocumentStatus, JobStatus};
use crate::search::SearchRequest;
use crate::{ListDocuments, ListJobs};

mod scopes;
pub use scopes::{Scope, Scopes};

/// Cache kinds strata uses, with their default TTLs (DESIGN.md's table where it has one):
/// (kind, L1 seconds, L2 seconds, compute once across processes).
pub fn default_cache_kinds() -> Vec<strata_cache::KindSpec> {
    use std::time::Duration;
    let k = |name, l1, l2, distributed| strata_cache::KindSpec {
        name,
        l1_ttl: Duration::from_secs(l1),
        l2_ttl: Duration::from_secs(l2),
        distributed,
    };
    vec![
        // A model call: worth a Redis lock so N processes missing at once embed once.
        k(KIND_EMBEDDING, 3600, 86_400, true),
        // Query embedding + ANN: the same.
        k(KIND_SEARCH, 600, 600, true),
        k(KIND_DOCUMENT, 1800, 1800, false),
        k(KIND_DOCUMENT_LIST, 300, 300, false),
        k(KIND_TAGS, 300, 300, false),
        k(KIND_JOB, 60, 60, false),
        k(KIND_MEMORY, 300, 300, false),
        // Seed 003's TTL; every change to a tenant's sessions invalidates them.
        k(KIND_USER_SESSION, 3600, 3600, false),
        // Seed 003's TTL; every reservation, settlement and limit change invalidates it.
        k(KIND_BUDGET, 60, 60, false),
        // Every append or delete of the tenant's invalidates them.
        k(KIND_CONVERSATION, 300, 300, false),
        // DESIGN.md's 30 minutes; one upstream call per key across processes.
        k(KIND_LLM_RESPONSE, 1800, 1800, true),
    ]
}

/// Query embeddings, by model and text; shared by every tenant.
pub const KIND_EMBEDDING: &str = "embedding";
/// Search responses.
pub const KIND_SEARCH: &str = "search_results";
/// One document's metadata.
pub const KIND_DOCUMENT: &str = "document_meta";
/// Pages of the document list.
pub const KIND_DOCUMENT_LIST: &str = "document_list";
/// Tag counts.
pub const KIND_TAGS: &str = "tag_counts";
/// Job status and job lists.
pub const KIND_JOB: &str = "job_status";

/// One memory, a page of memories, or a memory's history.
pub const KIND_MEMORY: &str = "memory";

/// A session, or a page of sessions.
pub const KIND_USER_SESSION: &str = "user_session";

/// A tenant's budget windows as `GET /v1/budget` shows them.
pub const KIND_BUDGET: &str = "budget_status";

/// A conversation, a page of conversations, or a page of a conversation's messages.
pub const KIND_CONVERSATION: &str = "conversation";

/// The gateway's answers to chat completions.
pub const KIND_LLM_RESPONSE: &str = "llm_response";

/// One cached read: what the cache needs to find or compute it.
#[derive(Debug, Clone)]
pub struct Read {
    /// Its kind: TTLs and statistics.
    pub kind: &'static str,
    /// The scope whose generation the writes that change it bump.
    pub scope: Scope,
    /// The canonical request: every parameter that changes the answer.
    pub material: Vec<u8>,
}

impl Read {
    /// The read with its material hashed, as [`CachePolicy::get_or_compute`] takes it.
    pub fn keyed(&self) -> KeyedRead {
        KeyedRead {
            kind: self.kind,
            scope: self.scope,
            digest: Digest::of(&self.material),
        }
    }
}

/// A [`Read`] whose material is already hashed: the same cache entry, found without
/// writing or hashing the material again.
#[derive(Debug, Clone, Copy)]
pub struct KeyedRead {
    /// Its kind: TTLs and statistics.
    pub kind: &'static str,
    /// The scope whose generation the writes that change it bump.
    pub scope: Scope,
    /// The hash of the canonical request.
    pub digest: Digest,
}

/// A search request's key digest, remembered beside the request by a caller that keeps
/// parsed requests (the search route keeps them per thread, by body): a repeat of the
/// request then finds its cache entry without writing and hashing its material again.
/// Tagged with the engine settings it was made under, so one made under other settings
/// (another engine in the same process) is never used.
#[derive(Debug, Default)]
pub struct SearchKeyMemo(OnceLock<(Arc<str>, Digest)>);

/// What a write changed, so the policy can bump exactly the scopes it affects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    /// A document's content, status or title (upload, delete, ingestion, a title change):
    /// search answers and the catalogue.
    Documents,
    /// A document's tags or metadata only: the catalogue, and search answers with a tag
    /// filter (which live in the catalogue scope); hits carry titles, never tags.
    Catalog,
    /// A job's state or progress.
    Jobs,
    /// A memory's content, history or existence.
    Memories,
    /// A session's start, end or activity.
    Sessions,
    /// A budget's limits, reservations or spend.
    Budget,
    /// A conversation's messages or existence.
    Conversations,
    /// A document came or went with its job: search answers, the catalogue and job
    /// statuses (not memories).
    Library,
    /// Anything of the tenant's (an operator's clear).
    Everything,
}

/// The one place that knows cache kinds, scopes and keys (see the module doc).
#[derive(Clone)]
pub struct CachePolicy {
    cache: Cache,
    scopes: Scopes,
    search_fingerprint: Arc<str>,
}

impl CachePolicy {
    /// The policy over `cache` for the store whose tenants `scopes` names; `search_fingerprint`
    /// is what besides the request decides a search's answer in this process (model, index
    /// settings), so processes configured differently never share answers.
    pub fn new(cache: Cache, scopes: Scopes, search_fingerprint: String) -> Self {
        Self {
            cache,
            scopes,
            search_fingerprint: Arc::from(search_fingerprint),
        }
    }

    /// The cache itself: statistics, clearing.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// `read`'s value from the cache, or `compute`d once and cached for its kind's TTLs
    /// (see [`Cache::get_or_compute`]); a [`Read`] becomes one with [`Read::keyed`]. Not an
    /// `async fn`: the returned future is the cache's own, so a caller's hit path holds no
    /// extra state.
    pub fn get_or_compute<'a, E, F, Fut>(
        &'a self,
        read: &'a KeyedRead,
        compute: F,
    ) -> impl Future<Output = Result<Lookup, E>> + 'a
    where
        F: FnOnce() -> Fut + 'a,
        Fut: Future<Output = Result<Bytes, E>> + 'a,
        E: From<CacheError> + 'a,
    {
        self.cache
            .get_or_compute_digest(read.kind, &read.scope, read.digest, compute)
    }

    /// One document's metadata, shown with `fields` (all when `None`).
    pub fn document(&self, owner: &TenantId, id: DocumentId, fields: Option<&[String]>) -> Read {
        Read {
            kind: KIND_DOCUMENT,
            scope: self.scopes.catalog(owner),
            material: canonical(&["doc", &id.to_string(), &fields_key(fields)]),
        }
    }

    /// A document's summary: in the catalogue scope, so any change of the document (and
    /// the summary job's own write) invalidates it.
    pub fn summary(&self, owner: &TenantId, id: DocumentId) -> Read {
        Read {
            kind: KIND_DOCUMENT,
            scope: self.scopes.catalog(owner),
            material: canonical(&["summary", &id.to_string()]),
        }
    }

    /// A page of the document list, shown with `fields` (all when `None`).
    pub fn document_list(
        &self,
        owner: &TenantId,
        q: &ListDocuments,
        fields: Option<&[String]>,
    ) -> Read {
        Read {
            kind: KIND_DOCUMENT_LIST,
            scope: self.scopes.catalog(owner),
            material: canonical(&[
                "list",
                &q.limit.map(|l| l.to_string()).unwrap_or_default(),
                q.cursor.as_deref().unwrap_or(""),
                q.filter.tag.as_deref().unwrap_or(""),
                q.filter.status.map(DocumentStatus::as_str).unwrap_or(""),
                &fields_key(fields),
            ]),
        }
    }

    /// The tenant's tag counts.
    pub fn tags(&self, owner: &TenantId) -> Read {
        Read {
            kind: KIND_TAGS,
            scope: self.scopes.catalog(owner),
            material: b"tags".to_vec(),
        }
    }

    /// One job.
    pub fn job(&self, owner: &TenantId, id: JobId) -> Read {
        Read {
            kind: KIND_JOB,
            scope: self.scopes.jobs(owner),
            material: canonical(&["job", &id.to_string()]),
        }
    }

    /// A page of the job list.
    pub fn job_list(&self, owner: &TenantId, q: &ListJobs) -> Read {
        Read {
            kind: KIND_JOB,
            scope: self.scopes.jobs(owner),
            material: canonical(&[
                "jobs",
                &q.limit.map(|l| l.to_string()).unwrap_or_default(),
                q.cursor.as_deref().unwrap_or(""),
                q.filter.status.map(JobStatus::as_str).unwrap_or(""),
            ]),
        }
    }

    /// A search's answer. Without a tag filter it follows the search scope, which tag and
    /// metadata edits leave alone; a tag filter makes the answer depend on tags, which only
    /// the catalogue scope follows.
    pub fn search(&self, owner: &TenantId, req: &SearchRequest) -> Read {
        Read {
            kind: KIND_SEARCH,
            scope: self.search_scope(owner, req),
            material: search_material(req, &self.search_fingerprint),
        }
    }

    /// [`CachePolicy::search`], keyed: the digest comes from `memo` when it was made under
    /// this engine's settings, and is made and left there otherwise.
    pub fn search_keyed(
        &self,
        owner: &TenantId,
        req: &SearchRequest,
        memo: &SearchKeyMemo,
    ) -> KeyedRead {
        let fp = &self.search_fingerprint;
        let digest = match memo.0.get() {
            // `Arc<str>`'s equality checks the pointer before the bytes.
            Some((made_under, d)) if made_under == fp => *d,
            _ => {
                let d = Digest::of(&search_material(req, fp));
                // Taken by the first engine to key the request; another computes its own.
                let _ = memo.0.set((Arc::clone(fp), d));
                d
            }
        };
        KeyedRead {
            kind: KIND_SEARCH,
            scope: self.search_scope(owner, req),
            digest,
        }
    }

    fn search_scope(&self, owner: &TenantId, req: &SearchRequest) -> Scope {
        if req.filter.tags.is_empty() {
            self.scopes.search(owner)
        } else {
            self.scopes.catalog(owner)
        }
    }

    /// The scope of the tenant's memories, whose generation a working set is checked against.
    pub fn memory_scope(&self, owner: &TenantId) -> Scope {
        self.scopes.memories(owner)
    }

    /// One memory, a page of memories, or a history: `parts` name the read and its
    /// parameters (the route's canonical query).
    pub fn memory(&self, owner: &TenantId, parts: &[&str]) -> Read {
        Read {
            kind: KIND_MEMORY,
            scope: self.scopes.memories(owner),
            material: canonical(parts),
        }
    }

    /// A session or a page of sessions: `parts` name the read and its parameters.
    pub fn session(&self, owner: &TenantId, parts: &[&str]) -> Read {
        Read {
            kind: KIND_USER_SESSION,
            scope: self.scopes.sessions(owner),
            material: canonical(parts),
        }
    }

    /// A conversation read: `parts` name the read and its parameters.
    pub fn conversation(&self, owner: &TenantId, parts: &[&str]) -> Read {
        Read {
            kind: KIND_CONVERSATION,
            scope: self.scopes.conversations(owner),
            material: canonical(parts),
        }
    }

    /// The tenant's budget status.
    pub fn budget_status(&self, owner: &TenantId) -> Read {
        Read {
            kind: KIND_BUDGET,
            scope: self.scopes.budget(owner),
            material: canonical(&["budget"]),
        }
    }

    /// Whether the tenant has any budget limit (one byte, 0 or 1), so a tenant without one
    /// (most) is admitted without a database read. In the `budget` scope: a limit set on
    /// any instance bumps it, and reservations (which only limited tenants make) too.
    pub fn budget_limited(&self, owner: &TenantId) -> Read {
        Read {
            kind: KIND_BUDGET,
            scope: self.scopes.budget(owner),
            material: canonical(&["limited"]),
        }
    }

    /// A gateway answer of the tenant's: `material` is the canonical request (upstream model
    /// and every parameter that shapes the answer; the gateway builds it).
    pub fn llm_response(&self, owner: &TenantId, material: Vec<u8>) -> Read {
        Read {
            kind: KIND_LLM_RESPONSE,
            scope: self.scopes.gateway(owner),
            material,
        }
    }

    /// `read`'s cached value, without computing it (see [`Cache::get`]).
    pub async fn get(&self, read: &Read) -> Result<Option<Lookup>, CacheError> {
        self.cache.get(read.kind, &read.scope, &read.material).await
    }

    /// Stores `value` as `read`'s (see [`Cache::put`]).
    pub async fn put(&self, read: &Read, value: Bytes) -> Result<(), CacheError> {
        self.cache
            .put(read.kind, &read.scope, &read.material, value)
            .await
    }

    /// A query's embedding by `model`: content-addressed, shared by every tenant, never
    /// invalidated.
    pub(crate) fn query_embedding(model: &str, text: &str) -> Read {
        let mut material = Vec::with_capacity(model.len() + 1 + text.len());
        material.extend_from_slice(model.as_bytes());
        material.push(0);
        material.extend_from_slice(text.as_bytes());
        Read {
            kind: KIND_EMBEDDING,
            scope: Scope::GLOBAL,
            material,
        }
    }

    /// Makes every cached read a write of `owner`'s could change unreachable, in every tier
    /// and (with Redis) every process, before it returns.
    pub async fn changed(&self, owner: &TenantId, what: Changed) {
        let s = &self.scopes;
        match what {
            Changed::Documents => self.cache.invalidate_all(&s.documents(owner)).await,
            Changed::Catalog => self.cache.invalidate(&s.catalog(owner)).await,
            Changed::Jobs => self.cache.invalidate(&s.jobs(owner)).await,
            Changed::Memories => self.cache.invalidate(&s.memories(owner)).await,
            Changed::Sessions => self.cache.invalidate(&s.sessions(owner)).await,
            Changed::Budget => self.cache.invalidate(&s.budget(owner)).await,
            Changed::Conversations => self.cache.invalidate(&s.conversations(owner)).await,
            Changed::Library => {
                let [search, catalog] = s.documents(owner);
                self.cache
                    .invalidate_all(&[search, catalog, s.jobs(owner)])
                    .await
            }
            Changed::Everything => {
                let [search, catalog] = s.documents(owner);
                self.cache
                    .invalidate_all(&[
                        search,
                        catalog,
                        s.jobs(owner),
                        s.memories(owner),
                        s.sessions(owner),
                        s.budget(owner),
                        s.gateway(owner),
                        s.conversations(owner),
                    ])
                    .await
            }
        }
    }
}

fn fields_key(fields: Option<&[String]>) -> String {
    fields.map(|f| f.join(",")).unwrap_or_default()
}

/// Key material: the parts, length-prefixed so no two requests share bytes.
fn canonical(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        push_field(&mut out, p.as_bytes());
    }
    out
}

/// Appends `b` prefixed by its length: fields written so can never run into each other.
fn push_field(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Every parameter that changes a search's answer, canonicalised (trimmed query, sorted
/// filters), so equivalent requests share an entry and different ones never do.
///
/// Written as length-prefixed fields in a fixed order rather than serialised: every field
/// is either fixed-width or prefixed by its length, so two different requests can never
/// produce the same bytes, and a cache hit does not pay for a serializer.
pub fn search_material(req: &SearchRequest, engine: &str) -> Vec<u8> {
    let query = req.query.trim();
    let mut out = Vec::with_capacity(64 + engine.len() + query.len());
    // The form's version: a change of layout must never read as an old key.
    out.push(1);
    push_field(&mut out, engine.as_bytes());
    push_field(&mut out, query.as_bytes());
    let k = req.k.unwrap_or(crate::search::DEFAULT_K) as u64;
    out.extend_from_slice(&k.to_le_bytes());
    let mut tags: Vec<&str> = req.filter.tags.iter().map(|t| t.trim()).collect();
    tags.sort_unstable();
    tags.dedup();
    out.extend_from_slice(&(tags.len() as u64).to_le_bytes());
    for t in tags {
        push_field(&mut out, t.as_bytes());
    }
    let mut document_ids = req.filter.document_ids.clone();
    document_ids.sort_unstable();
    document_ids.dedup();
    out.extend_from_slice(&(document_ids.len() as u64).to_le_bytes());
    for id in document_ids {
        out.extend_from_slice(id.as_uuid().as_bytes());
    }
    match req.min_score {
        Some(m) => {
            out.push(1);
            out.extend_from_slice(&(m as f32).to_bits().to_le_bytes());
        }
        None => out.push(0),
    }
    push_field(&mut out, req.effective_mode().as_str().as_bytes());
    match req.effective_fusion() {
        Some((ratio, fusion)) => {
            out.push(1);
            out.extend_from_slice(&ratio.to_bits().to_le_bytes());
            push_field(&mut out, fusion.as_str().as_bytes());
        }
        None => out.push(0),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn req(v: Value) -> SearchRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn every_parameter_that_changes_the_answer_changes_the_key() {
        let base = json!({"query": "cats", "k": 5, "filter": {"tags": ["a"]}, "min_score": 0.2});
        let m = search_material(&req(base.clone()), "m/ef64");
        assert_ne!(m, search_material(&req(base.clone()), "other-model/ef64"));
        assert_ne!(m, search_material(&req(base.clone()), "m/ef128"));
        for changed in [
            json!({"query": "dogs", "k": 5, "filter": {"tags": ["a"]}, "min_score": 0.2}),
            json!({"query": "cats", "k": 6, "filter": {"tags": ["a"]}, "min_score": 0.2}),
            json!({"query": "cats", "k": 5, "filter": {"tags": ["b"]}, "min_score": 0.2}),
            json!({"query": "cats", "k": 5, "filter": {"tags": ["a"], "document_ids": ["01a212e0-4342-7472-9d1f-3378d36fcc05"]}, "min_score": 0.2}),
            json!({"query": "cats", "k": 5, "filter": {"tags": ["a"]}, "min_score": 0.3}),
            json!({"query": "cats", "k": 5, "filter": {"tags": ["a"]}}),
            json!({"query": "cats", "k": 5, "filter": {"tags": ["a"]}, "min_score": 0.2, "mode": "semantic"}),
            json!({"query": "cats", "k": 5, "filter": {"tags": ["a"]}, "min_score": 0.2, "semantic_ratio": 0.7}),
            json!({"query": "cats", "k": 5, "filter": {"tags": ["a"]}, "min_score": 0.2, "fusion": "rrf"}),
        ] {
            assert_ne!(
                m,
                search_material(&req(changed.clone()), "m/ef64"),
                "{changed}"
            );
        }
    }

    #[test]
    fn equivalent_requests_share_the_key() {
        let a = json!({"query": " cats ", "filter": {"tags": ["b", "a", "a"]}, "stream": true});
        let b = json!({"query": "cats", "k": 10, "filter": {"tags": ["a", "b"]}});
        assert_eq!(search_material(&req(a), "m"), search_material(&req(b), "m"));
        // The defaults, named or not, are the same request.
        let a = json!({"query": "cats"});
        let b =
            json!({"query": "cats", "mode": "hybrid", "semantic_ratio": 0.5, "fusion": "blend"});
        assert_eq!(search_material(&req(a), "m"), search_material(&req(b), "m"));
    }

    fn policy(fingerprint: &str) -> CachePolicy {
        let cache = strata_cache::Cache::new(strata_cache::CacheSettings {
            l1_bytes: 1 << 20,
            kinds: default_cache_kinds(),
            redis: None,
        })
        .unwrap();
        CachePolicy::new(cache, Scopes::new("store"), fingerprint.to_owned())
    }

    #[test]
    fn a_remembered_search_key_is_the_key_and_only_under_its_own_settings() {
        let owner = TenantId::parse("t").unwrap();
        let (a, b) = (policy("m/ef64"), policy("m/ef128"));
        let cats = req(json!({"query": "cats", "k": 5}));
        let memo = SearchKeyMemo::default();
        let first = a.search_keyed(&owner, &cats, &memo);
        let plain = a.search(&owner, &cats).keyed();
        assert_eq!((first.digest, first.scope), (plain.digest, plain.scope));
        // Remembered: the same digest again (and still the read's own).
        assert_eq!(a.search_keyed(&owner, &cats, &memo).digest, plain.digest);
        // An engine with other settings never takes it: its answers differ.
        let other = b.search_keyed(&owner, &cats, &memo).digest;
        assert_eq!(other, b.search(&owner, &cats).keyed().digest);
        assert_ne!(other, plain.digest);
        // Equal settings in another policy share it, as they share entries.
        let same = policy("m/ef64").search_keyed(&owner, &cats, &memo).digest;
        assert_eq!(same, plain.digest);
        // A tag filter moves the answer to the catalogue scope, memo or not.
        let tagged = req(json!({"query": "cats", "k": 5, "filter": {"tags": ["a"]}}));
        let keyed = a.search_keyed(&owner, &tagged, &SearchKeyMemo::default());
        assert_eq!(keyed.scope, a.search(&owner, &tagged).scope);
        assert_ne!(keyed.scope, first.scope);
    }
}
