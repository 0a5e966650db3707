//! How a memory search ranks its candidates: a pure function of each candidate's
//! similarity to the query, its age, its importance and how often searches returned it.
//!
//! Every component is in 0..1, higher is better:
//!
//! - `semantic`: the cosine similarity of the query's and the memory's embeddings, below 0
//!   counted as 0 (an absolute measure: a memory unrelated to the query stays near 0 however
//!   few memories there are);
//! - `lexical`: the memory's BM25 score for the query, saturated as `bm25 / (bm25 + 4)` (0
//!   when it shares no index term with the query; a strong match on one rare term is about
//!   0.5);
//! - `similarity`: `semantic_ratio * semantic + (1 - semantic_ratio) * lexical`;
//! - `recency`: `0.5 ^ (age / half_life)`, the age counted from `occurred_at`, else from
//!   creation (a memory dated in the future counts as new);
//! - `importance`: as stored;
//! - `access`: `1 - 1 / (1 + ln(1 + access_count))` (0 never returned, 0.41 once, 0.7 ten
//!   times, 0.82 a hundred times).
//!
//! The final score multiplies similarity by one bounded factor per other component:
//! `score = similarity * (1 - w_r (1 - recency)) * (1 - w_i (1 - importance)) *
//! (1 - w_a (1 - access))`. With every other component at 1 the score is the similarity; a
//! component at 0 takes away at most its weight's share. So recency (default weight 0.3: an
//! old memory keeps at least 70% of its similarity) lets a newer statement of a fact outrank
//! an older one of similar similarity, but can never lift an unrelated memory over a relevant
//! one or bury an old fact that still answers the question: additive recency boosts do the
//! first, which is what costs them recall on replayed conversation history. The defaults
//! were chosen on the written corpus of `tests/it/memories.rs` (the newer of two statements
//! of a fact first, every paraphrased question's fact first) and are each overridable per
//! search.
//!
//! Must not import: the store, the cache, HTTP types.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// The saturation constant of the lexical component.
const LEXICAL_HALF: f32 = 4.0;

/// How much each component counts (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    /// Share of the embedding's similarity in `similarity` (the rest is lexical), 0..1.
    pub semantic_ratio: f32,
    /// Most of the score an old memory can lose to a new one, 0..1.
    pub recency: f32,
    /// Most of the score an unimportant memory can lose to an important one, 0..1.
    pub importance: f32,
    /// Most of the score a never-returned memory can lose to a frequently returned one, 0..1.
    pub access: f32,
    /// The age at which recency is one half, in days (> 0).
    pub half_life_days: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            semantic_ratio: 0.7,
            recency: 0.3,
            importance: 0.15,
            access: 0.05,
            half_life_days: 30.0,
        }
    }
}

impl Weights {
    /// Refuses weights outside their ranges.
    pub fn validate(&self) -> Result<()> {
        for (name, w) in [
            ("semantic_ratio", self.semantic_ratio),
            ("recency", self.recency),
            ("importance", self.importance),
            ("access", self.access),
        ] {
            if !(0.0..=1.0).contains(&w) {
                return Err(EngineError::invalid(
                    format!("weights.{name}"),
                    "must be between 0 and 1",
                ));
            }
        }
        if !(self.half_life_days.is_finite() && self.half_life_days > 0.0) {
            return Err(EngineError::invalid(
                "weights.half_life_days",
                "must be a positive number of days",
            ));
        }
        Ok(())
    }
}

/// A memory's score and its parts (see the module doc for each).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Components {
    /// The final score, 0..1: the similarity, reduced by the other components' factors.
    pub score: f32,
    /// Similarity to the query, 0..1: semantic and lexical blended.
    pub similarity: f32,
    /// Cosine similarity of the embeddings, 0..1.
    pub semantic: f32,
    /// Saturated BM25, 0..1.
    pub lexical: f32,
    /// 1 for a memory of now, 0.5 at one half-life, towards 0 for old ones.
    pub recency: f32,
    /// As stored, 0..1.
    pub importance: f32,
    /// 0 for never returned, towards 1 for often returned.
    pub access: f32,
}

/// What the ranking needs of one candidate.
#[derive(Debug, Clone, Copy)]
pub struct Signals {
    /// Cosine similarity to the query.
    pub cosine: f32,
    /// BM25, when the lexical side found it.
    pub bm25: Option<f32>,
    /// `occurred_at`, else creation.
    pub at: DateTime<Utc>,
    /// 0..1.
    pub importance: f32,
    /// Times returned by searches.
    pub access_count: u64,
}

/// Scores one candidate at `now`.
pub fn score(s: &Signals, w: &Weights, now: DateTime<Utc>) -> Components {
    let semantic = s.cosine.clamp(0.0, 1.0);
    let lexical = s
        .bm25
        .filter(|b| *b > 0.0)
        .map_or(0.0, |b| b / (b + LEXICAL_HALF));
    let similarity = w.semantic_ratio * semantic + (1.0 - w.semantic_ratio) * lexical;
    let age_days = (now - s.at).num_milliseconds().max(0) as f64 / 86_400_000.0;
    let recency = 0.5f64.powf(age_days / w.half_life_days) as f32;
    let importance = s.importance.clamp(0.0, 1.0);
    let access = 1.0 - 1.0 / (1.0 + (s.access_count as f32).ln_1p());
    let factor = |weight: f32, c: f32| 1.0 - weight * (1.0 - c);
    let score = similarity
        * factor(w.recency, recency)
        * factor(w.importance, importance)
        * factor(w.access, access);
    Components {
        score,
        similarity,
        semantic,
        lexical,
        recency,
        importance,
        access,
    }
}

/// Scores candidates and keeps the best `k` (ties by the caller's order key, ascending):
/// `(key, components)`, best first.
pub fn rank<K: Ord + Copy>(
    candidates: impl IntoIterator<Item = (K, Signals)>,
    w: &Weights,
    now: DateTime<Utc>,
    k: usize,
) -> Vec<(K, Components)> {
    let mut scored: Vec<(K, Components)> = candidates
        .into_iter()
        .map(|(key, s)| (key, score(&s, w, now)))
        .collect();
    scored.sort_by(|a, b| b.1.score.total_cmp(&a.1.score).then(a.0.cmp(&b.0)));
    scored.truncate(k);
    scored
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn at(days_ago: i64) -> DateTime<Utc> {
        Utc::now() - Duration::days(days_ago)
    }

    fn sig(cosine: f32, days_ago: i64) -> Signals {
        Signals {
            cosine,
            bm25: None,
            at: at(days_ago),
            importance: 0.5,
            access_count: 0,
        }
    }

    #[test]
    fn every_component_is_in_range_and_the_score_never_exceeds_the_similarity() {
        let w = Weights::default();
        for cosine in [-1.0, -0.2, 0.0, 0.3, 1.0] {
            for bm25 in [None, Some(0.0), Some(2.5), Some(40.0)] {
                for days in [-3, 0, 30, 3650] {
                    for access_count in [0, 1, 1_000_000] {
                        let s = Signals {
                            cosine,
                            bm25,
                            at: at(days),
                            importance: 0.3,
                            access_count,
                        };
                        let c = score(&s, &w, Utc::now());
                        for v in [
                            c.score,
                            c.similarity,
                            c.semantic,
                            c.lexical,
                            c.recency,
                            c.importance,
                            c.access,
                        ] {
                            assert!((0.0..=1.0).contains(&v), "{c:?}");
                        }
                        assert!(c.score <= c.similarity + 1e-6, "{c:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn recency_breaks_near_ties_but_cannot_bury_a_clearly_better_old_memory() {
        let w = Weights::default();
        let now = Utc::now();
        // The same fact said twice: the newer statement wins.
        let old = score(&sig(0.80, 400), &w, now);
        let new = score(&sig(0.78, 1), &w, now);
        assert!(new.score > old.score, "{new:?} vs {old:?}");
        // An old fact that answers the question beats a fresh unrelated one.
        let relevant_old = score(&sig(0.70, 3650), &w, now);
        let unrelated_new = score(&sig(0.45, 0), &w, now);
        assert!(relevant_old.score > unrelated_new.score);
        // The half-life is where recency is one half.
        let half = score(&sig(0.5, 30), &w, now);
        assert!((half.recency - 0.5).abs() < 0.01, "{half:?}");
    }

    #[test]
    fn weights_of_zero_leave_the_similarity_alone() {
        let w = Weights {
            recency: 0.0,
            importance: 0.0,
            access: 0.0,
            semantic_ratio: 1.0,
            ..Weights::default()
        };
        let c = score(&sig(0.61, 9999), &w, Utc::now());
        assert!((c.score - 0.61).abs() < 1e-6);
    }

    #[test]
    fn out_of_range_weights_are_refused() {
        for bad in [
            Weights {
                recency: 1.5,
                ..Weights::default()
            },
            Weights {
                semantic_ratio: -0.1,
                ..Weights::default()
            },
            Weights {
                half_life_days: 0.0,
                ..Weights::default()
            },
            Weights {
                half_life_days: f64::NAN,
                ..Weights::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        Weights::default().validate().unwrap();
    }

    #[test]
    fn rank_keeps_the_best_k_in_order_with_ties_by_key() {
        let w = Weights::default();
        let now = Utc::now();
        let ranked = rank(
            [
                (3u64, sig(0.5, 0)),
                (1, sig(0.9, 0)),
                (2, sig(0.5, 0)),
                (4, sig(0.1, 0)),
            ],
            &w,
            now,
            3,
        );
        let keys: Vec<u64> = ranked.iter().map(|r| r.0).collect();
        assert_eq!(keys, vec![1, 2, 3]);
    }
}
