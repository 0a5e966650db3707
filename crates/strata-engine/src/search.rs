//! Semantic search: embed the query, find the nearest chunks of the caller's tenant, and
//! return them with their documents' titles.
//!
//! A filter that matches few chunks (at most `exact_limit`) is searched exactly over the
//! filtered set, so a selective filter never comes back short; a broad one goes through the
//! ANN index with the filter as a predicate, and falls back to the exact path if the index
//! returns fewer hits than exist. The response says which path answered (`exhaustive`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::ann::Ann;
use crate::error::{EngineError, Result};
use crate::ids::{DocumentId, TenantId};
use crate::store::{ChunkFilter, Store};
use crate::validate;

/// Default number of hits.
pub const DEFAULT_K: usize = 10;
/// Most hits one search returns.
pub const MAX_K: usize = 100;
/// Longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 4096;
/// Most document ids in one filter.
pub const MAX_FILTER_DOCUMENTS: usize = 1000;

/// Which chunks a search may return.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchFilter {
    /// Documents carrying any of these tags (at most 64 distinct).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Only these documents.
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub document_ids: Vec<DocumentId>,
}

/// A search, as callers give it.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// What to look for.
    #[schema(min_length = 1, max_length = 4096)]
    pub query: String,
    /// How many hits (default 10, max 100).
    #[schema(minimum = 1, maximum = 100)]
    pub k: Option<usize>,
    /// Restrictions.
    #[serde(default, deserialize_with = "crate::validate::object")]
    pub filter: SearchFilter,
    /// Drop hits scoring below this cosine similarity.
    // f64, so a bound just past 1 is refused rather than rounded to 1 as an f32.
    #[schema(minimum = -1, maximum = 1)]
    pub min_score: Option<f64>,
    /// Answer as NDJSON, one hit per line (the HTTP layer's concern).
    #[serde(default)]
    pub stream: bool,
}

/// One result.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct SearchHit {
    /// The document.
    pub document_id: DocumentId,
    /// Its title.
    pub title: String,
    /// The chunk's position in it.
    pub chunk_ordinal: u32,
    /// The chunk's text.
    pub text: String,
    /// Cosine similarity to the query, -1..1.
    pub score: f32,
}

/// The results.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SearchResults {
    /// Best first.
    pub hits: Vec<SearchHit>,
    /// True when every candidate chunk was scored (exact search); false for the ANN path.
    pub exhaustive: bool,
    /// The embedding model.
    pub model: String,
}

/// A validated search.
pub(crate) struct Plan {
    pub(crate) query: String,
    pub(crate) k: usize,
    pub(crate) filter: ChunkFilter,
    pub(crate) min_score: Option<f32>,
}

impl SearchRequest {
    /// Checks every parameter without running anything. Callers that answer from a cache
    /// keyed by the canonical request (whose duplicates and whitespace are folded away) check
    /// first, so an invalid request is refused even when a valid twin's answer is cached.
    pub fn check(&self) -> Result<()> {
        self.checked_tags().map(drop)
    }

    /// Every check; the normalised tags on success.
    fn checked_tags(&self) -> Result<Vec<String>> {
        // The limit applies to the query as sent, before trimming, as the API documents it.
        if self.query.chars().count() > MAX_QUERY_CHARS {
            return Err(EngineError::invalid(
                "query",
                format!("must be at most {MAX_QUERY_CHARS} characters"),
            ));
        }
        if self.query.trim().is_empty() {
            return Err(EngineError::invalid("query", "must not be empty"));
        }
        let k = self.k.unwrap_or(DEFAULT_K);
        if !(1..=MAX_K).contains(&k) {
            return Err(EngineError::invalid(
                "k",
                format!("must be between 1 and {MAX_K}"),
            ));
        }
        if let Some(m) = self.min_score
            && !(-1.0..=1.0).contains(&m)
        {
            return Err(EngineError::invalid(
                "min_score",
                "must be between -1 and 1",
            ));
        }
        if self.filter.document_ids.len() > MAX_FILTER_DOCUMENTS {
            return Err(EngineError::invalid(
                "filter.document_ids",
                format!("at most {MAX_FILTER_DOCUMENTS} ids"),
            ));
        }
        validate::tags(&self.filter.tags).map_err(|e| match e {
            EngineError::Invalid { field, message } => {
                EngineError::invalid(format!("filter.{field}"), message)
            }
            other => other,
        })
    }

    pub(crate) fn validate(self) -> Result<Plan> {
        let tags = self.checked_tags()?;
        let query = self.query.trim().to_owned();
        let k = self.k.unwrap_or(DEFAULT_K);
        let mut document_ids = self.filter.document_ids;
        document_ids.sort();
        document_ids.dedup();
        Ok(Plan {
            query,
            k,
            filter: ChunkFilter { tags, document_ids },
            min_score: self.min_score.map(|m| m as f32),
        })
    }
}

/// Runs a validated plan for `owner` with an already-embedded query.
pub(crate) async fn run(
    store: &dyn Store,
    ann: &Ann,
    exact_limit: u64,
    model: &str,
    owner: &TenantId,
    plan: &Plan,
    query: &[f32],
) -> Result<SearchResults> {
    let filter = &plan.filter;
    let known = if filter.is_empty() {
        ann.tenant_count(owner)
    } else {
        Some(store.count_candidates(owner, model, filter).await?)
    };
    let nearest = |exact| ann.nearest(store, owner, model, query, plan.k, filter, exact);
    let (mut scored, exhaustive) = match known {
        Some(0) => (Vec::new(), true),
        Some(n) if !filter.is_empty() && n <= exact_limit => (nearest(true).await?, true),
        _ => {
            let hits = nearest(false).await?;
            if hits.len() >= plan.k {
                (hits, false)
            } else {
                // Short: either the tenant has fewer candidates, or the graph walk could
                // not reach enough of them. Count, and score them all in the second case.
                let candidates = match known {
                    Some(n) => n,
                    None => store.count_candidates(owner, model, filter).await?,
                };
                if (hits.len() as u64) < candidates.min(plan.k as u64) {
                    (nearest(true).await?, true)
                } else {
                    (hits, false)
                }
            }
        }
    };
    if let Some(min) = plan.min_score {
        scored.retain(|(_, s)| *s >= min);
    }
    let ids: Vec<u64> = scored.iter().map(|(id, _)| *id).collect();
    let rows: HashMap<u64, _> = store
        .hit_rows(owner, &ids)
        .await?
        .into_iter()
        .map(|r| (r.id, r))
        .collect();
    let hits = scored
        .into_iter()
        .filter_map(|(id, score)| {
            // A vector whose chunk was deleted a moment ago has no row: skip it.
            rows.get(&id).map(|r| SearchHit {
                document_id: r.document_id,
                title: r.title.clone(),
                chunk_ordinal: r.ordinal,
                text: r.text.clone(),
                score,
            })
        })
        .collect();
    Ok(SearchResults {
        hits,
        exhaustive,
        model: model.to_owned(),
    })
}
