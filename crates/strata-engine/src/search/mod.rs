//! Search over a tenant's chunks in three modes: semantic (embed the query, nearest
//! vectors), lexical (BM25 over titles and text) and hybrid (both, fused; the default).
//!
//! The semantic side: a filter that matches few chunks (at most `exact_limit`) is searched
//! exactly over the filtered set, so a selective filter never comes back short; a broad one
//! goes through the ANN index with the filter as a predicate, and falls back to the exact
//! path if the index returns fewer hits than exist. The response says which path answered
//! (`exhaustive`). The lexical side is always exact.
//!
//! Hybrid search takes each side's best [`hybrid_candidates`] chunks at once, computes the
//! cosine of the chunks only the lexical side proposed from their stored vectors, and fuses
//! the two rankings ([`fusion`]). Every hit reports the components it was ranked by beside
//! its score.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::ann::Ann;
use crate::error::{EngineError, Result};
use crate::ids::{DocumentId, TenantId};
use crate::lexical::Lexical;
use crate::store::{ChunkFilter, LexicalQuery, Store};
use crate::timing::{Phase, timed};
use crate::validate;

pub mod fusion;

use fusion::Candidate;
pub use fusion::Fusion;

/// Default number of hits.
pub const DEFAULT_K: usize = 10;
/// Most hits one search returns.
pub const MAX_K: usize = 100;
/// Longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 4096;
/// Most document ids in one filter.
pub const MAX_FILTER_DOCUMENTS: usize = 1000;
/// The mode of a search that names none.
pub const DEFAULT_MODE: SearchMode = SearchMode::Hybrid;
/// The weight of the semantic ranking in a hybrid search that names none.
pub const DEFAULT_SEMANTIC_RATIO: f64 = 0.5;
/// The fusion of a hybrid search that names none.
pub const DEFAULT_FUSION: Fusion = Fusion::Blend;

/// How many chunks each side of a hybrid search proposes for `k` hits.
pub fn hybrid_candidates(k: usize) -> usize {
    (2 * k).max(50)
}

/// How a search finds its hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Both rankings, fused.
    Hybrid,
    /// Nearest vectors to the query's embedding.
    Semantic,
    /// BM25 over the chunks' titles and text; the model is not used.
    Lexical,
}

impl SearchMode {
    /// The name used in requests and cache keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hybrid => "hybrid",
            Self::Semantic => "semantic",
            Self::Lexical => "lexical",
        }
    }
}

impl std::str::FromStr for SearchMode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "hybrid" => Ok(Self::Hybrid),
            "semantic" => Ok(Self::Semantic),
            "lexical" => Ok(Self::Lexical),
            other => Err(format!(
                "unknown mode {other:?}: expected hybrid, semantic or lexical"
            )),
        }
    }
}

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
    /// Drop hits whose cosine similarity to the query is below this (semantic and hybrid
    /// modes).
    // f64, so a bound just past 1 is refused rather than rounded to 1 as an f32.
    #[schema(minimum = -1, maximum = 1)]
    pub min_score: Option<f64>,
    /// Answer as NDJSON, one hit per line (the HTTP layer's concern).
    #[serde(default)]
    pub stream: bool,
    /// `hybrid` (default), `semantic` or `lexical`.
    pub mode: Option<SearchMode>,
    /// Hybrid mode: the weight of the semantic ranking, 0 (lexical only) to 1 (semantic
    /// only); default 0.5.
    #[schema(minimum = 0, maximum = 1)]
    pub semantic_ratio: Option<f64>,
    /// Hybrid mode: `blend` (default) or `rrf`.
    pub fusion: Option<Fusion>,
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
    /// What the hits are ranked by, higher is better: the cosine similarity (-1..1) in
    /// semantic mode, the BM25 score (0 and up) in lexical mode, the fused score in hybrid
    /// mode (0..1 for `blend`; for `rrf`, at most 1/61).
    pub score: f32,
    /// Cosine similarity to the query, -1..1 (null in lexical mode, which does not embed
    /// the query).
    pub semantic_score: Option<f32>,
    /// BM25 score (above 0): null in semantic mode, and in hybrid mode for a chunk outside
    /// the lexical side's best candidates (its BM25 is below theirs; fusion counts it as 0).
    pub lexical_score: Option<f32>,
}

/// The results.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SearchResults {
    /// Best first.
    pub hits: Vec<SearchHit>,
    /// True when every candidate chunk was scored (exact search); false when the semantic
    /// side went through the ANN index.
    pub exhaustive: bool,
    /// The embedding model.
    pub model: String,
    /// The mode that answered.
    pub mode: SearchMode,
}

/// A validated search.
pub(crate) struct Plan {
    pub(crate) query: String,
    pub(crate) k: usize,
    pub(crate) filter: ChunkFilter,
    pub(crate) min_score: Option<f32>,
    pub(crate) mode: SearchMode,
    pub(crate) ratio: f32,
    pub(crate) fusion: Fusion,
    pub(crate) words: LexicalQuery,
}

impl SearchRequest {
    /// Checks every parameter without running anything. Callers that answer from a cache
    /// keyed by the canonical request (whose duplicates and whitespace are folded away) check
    /// first, so an invalid request is refused even when a valid twin's answer is cached.
    pub fn check(&self) -> Result<()> {
        self.checked_tags().map(drop)
    }

    /// The mode, the default applied.
    pub fn effective_mode(&self) -> SearchMode {
        self.mode.unwrap_or(DEFAULT_MODE)
    }

    /// Hybrid mode's ratio and fusion, defaults applied (`None` in the other modes).
    pub fn effective_fusion(&self) -> Option<(f64, Fusion)> {
        (self.effective_mode() == SearchMode::Hybrid).then(|| {
            (
                self.semantic_ratio.unwrap_or(DEFAULT_SEMANTIC_RATIO),
                self.fusion.unwrap_or(DEFAULT_FUSION),
            )
        })
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
        let mode = self.effective_mode();
        if let Some(m) = self.min_score {
            if !(-1.0..=1.0).contains(&m) {
                return Err(EngineError::invalid(
                    "min_score",
                    "must be between -1 and 1",
                ));
            }
            if mode == SearchMode::Lexical {
                return Err(EngineError::invalid(
                    "min_score",
                    "bounds the cosine similarity, which lexical mode does not compute",
                ));
            }
        }
        if let Some(r) = self.semantic_ratio
            && !(0.0..=1.0).contains(&r)
        {
            return Err(EngineError::invalid(
                "semantic_ratio",
                "must be between 0 and 1",
            ));
        }
        if mode != SearchMode::Hybrid {
            for (field, set) in [
                ("semantic_ratio", self.semantic_ratio.is_some()),
                ("fusion", self.fusion.is_some()),
            ] {
                if set {
                    return Err(EngineError::invalid(
                        field,
                        format!("applies to hybrid mode only, not {}", mode.as_str()),
                    ));
                }
            }
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
        let mode = self.effective_mode();
        let (ratio, fusion) = self
            .effective_fusion()
            .unwrap_or((DEFAULT_SEMANTIC_RATIO, DEFAULT_FUSION));
        let query = self.query.trim().to_owned();
        let k = self.k.unwrap_or(DEFAULT_K);
        let mut document_ids = self.filter.document_ids;
        document_ids.sort();
        document_ids.dedup();
        Ok(Plan {
            words: LexicalQuery::parse(&query),
            query,
            k,
            filter: ChunkFilter { tags, document_ids },
            min_score: self.min_score.map(|m| m as f32),
            mode,
            ratio: ratio as f32,
            fusion,
        })
    }
}

/// What a search runs against.
pub(crate) struct Corpus<'a> {
    pub(crate) store: &'a dyn Store,
    pub(crate) ann: &'a Ann,
    pub(crate) lexical: &'a Lexical,
    /// Filters matching at most this many chunks are searched exactly.
    pub(crate) exact_limit: u64,
    /// The embedding model's id.
    pub(crate) model: &'a str,
}

/// Runs a validated plan for `owner`; `embed` yields the query's embedding, which every
/// mode but lexical awaits (hybrid mode while its lexical side runs).
pub(crate) async fn run(
    corpus: &Corpus<'_>,
    owner: &TenantId,
    plan: &Plan,
    embed: impl std::future::Future<Output = Result<Vec<f32>>>,
) -> Result<SearchResults> {
    let (store, model) = (corpus.store, corpus.model);
    let embed = timed(Phase::Embed, embed);
    // (candidate, the score it is ranked by), best first.
    let (ranked, exhaustive): (Vec<(Candidate, f32)>, bool) = match plan.mode {
        SearchMode::Semantic => {
            let query = embed.await?;
            let (mut nearest, exhaustive) =
                timed(Phase::Index, semantic(corpus, owner, plan, &query, plan.k)).await?;
            if let Some(min) = plan.min_score {
                nearest.retain(|(_, s)| *s >= min);
            }
            let ranked = nearest
                .into_iter()
                .map(|(id, s)| {
                    let c = Candidate {
                        id,
                        semantic: s,
                        lexical: None,
                    };
                    (c, s)
                })
                .collect();
            (ranked, exhaustive)
        }
        SearchMode::Lexical => {
            let best = timed(
                Phase::Index,
                corpus
                    .lexical
                    .top(store, owner, model, &plan.words, &plan.filter, plan.k),
            )
            .await?;
            let ranked = best
                .into_iter()
                .map(|(id, l)| {
                    let c = Candidate {
                        id,
                        semantic: f32::NAN,
                        lexical: Some(l),
                    };
                    (c, l)
                })
                .collect();
            (ranked, true)
        }
        SearchMode::Hybrid => {
            let n = hybrid_candidates(plan.k);
            // The lexical side needs no embedding: it runs while the model embeds the query.
            let ((query, (nearest, exhaustive)), best) = tokio::try_join!(
                async {
                    let query = embed.await?;
                    let nearest =
                        timed(Phase::Index, semantic(corpus, owner, plan, &query, n)).await?;
                    Ok::<_, EngineError>((query, nearest))
                },
                timed(
                    Phase::Index,
                    corpus
                        .lexical
                        .top(store, owner, model, &plan.words, &plan.filter, n)
                ),
            )?;
            let query = query.as_slice();
            let mut cands: HashMap<u64, Candidate> = nearest
                .iter()
                .map(|&(id, s)| {
                    let c = Candidate {
                        id,
                        semantic: s,
                        lexical: None,
                    };
                    (id, c)
                })
                .collect();
            // The cosine of the chunks only the lexical side proposed, from their vectors.
            let lexical_only: Vec<u64> = best
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| !cands.contains_key(id))
                .collect();
            let vectors = timed(Phase::Db, store.vectors_of(owner, model, &lexical_only)).await?;
            for (id, s) in crate::vectors::exact_top_k(query, &vectors, usize::MAX) {
                let c = Candidate {
                    id,
                    semantic: s,
                    lexical: None,
                };
                cands.insert(id, c);
            }
            for (id, l) in best {
                if let Some(c) = cands.get_mut(&id) {
                    c.lexical = Some(l);
                }
            }
            let mut cands: Vec<Candidate> = cands.into_values().collect();
            if let Some(min) = plan.min_score {
                cands.retain(|c| c.semantic >= min);
            }
            let mut fused = fusion::fuse(cands, plan.ratio, plan.fusion);
            fused.truncate(plan.k);
            (fused, exhaustive)
        }
    };
    let ids: Vec<u64> = ranked.iter().map(|(c, _)| c.id).collect();
    let rows: HashMap<u64, _> = timed(Phase::Db, store.hit_rows(owner, &ids))
        .await?
        .into_iter()
        .map(|r| (r.id, r))
        .collect();
    let hits = ranked
        .into_iter()
        .filter_map(|(c, score)| {
            // A chunk deleted a moment ago has no row: skip it.
            rows.get(&c.id).map(|r| SearchHit {
                document_id: r.document_id,
                title: r.title.clone(),
                chunk_ordinal: r.ordinal,
                text: r.text.clone(),
                score,
                semantic_score: (!c.semantic.is_nan()).then_some(c.semantic),
                lexical_score: c.lexical,
            })
        })
        .collect();
    Ok(SearchResults {
        hits,
        exhaustive,
        model: model.to_owned(),
        mode: plan.mode,
    })
}

/// The owner's `k` chunks nearest to `query` passing the plan's filter, and whether every
/// candidate was scored.
async fn semantic(
    corpus: &Corpus<'_>,
    owner: &TenantId,
    plan: &Plan,
    query: &[f32],
    k: usize,
) -> Result<(Vec<(u64, f32)>, bool)> {
    let Corpus {
        store,
        ann,
        exact_limit,
        model,
        ..
    } = *corpus;
    let filter = &plan.filter;
    let known = if filter.is_empty() {
        ann.tenant_count(owner)
    } else {
        Some(store.count_candidates(owner, model, filter).await?)
    };
    let nearest = |exact| ann.nearest(store, owner, model, query, k, filter, exact);
    Ok(match known {
        Some(0) => (Vec::new(), true),
        Some(n) if !filter.is_empty() && n <= exact_limit => (nearest(true).await?, true),
        _ => {
            let hits = nearest(false).await?;
            if hits.len() >= k {
                (hits, false)
            } else {
                // Short: either the tenant has fewer candidates, or the graph walk could
                // not reach enough of them. Count, and score them all in the second case.
                let candidates = match known {
                    Some(n) => n,
                    None => store.count_candidates(owner, model, filter).await?,
                };
                if (hits.len() as u64) < candidates.min(k as u64) {
                    (nearest(true).await?, true)
                } else {
                    (hits, false)
                }
            }
        }
    })
}
