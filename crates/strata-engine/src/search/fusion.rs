//! Fusing the semantic and lexical rankings of one search's candidates into one.
//!
//! Every candidate carries its cosine similarity (computed exactly from its stored vector
//! when only the lexical side proposed it) and, when the lexical side proposed it, its BM25
//! score; a candidate outside the lexical side's best N has no BM25 here (it is below the
//! N-th best, possibly 0) and counts as 0, as Weaviate, Elasticsearch and Meilisearch count
//! a document one side did not return. Two methods:
//!
//! - [`Fusion::Blend`]: each component normalised over the candidates (cosine by min-max,
//!   BM25 divided by the best BM25 so that "no match" stays 0), then
//!   `ratio * semantic + (1 - ratio) * lexical`; the fused score is in 0..1.
//! - [`Fusion::Rrf`]: reciprocal rank fusion, `ratio / (60 + semantic rank) + (1 - ratio) /
//!   (60 + lexical rank)`, ranks from 1 over the candidates, and no lexical term for a
//!   candidate without a BM25 score.
//!
//! Ties are broken by chunk id, so a ranking is a pure function of its inputs.
//!
//! Must not import: the store, the cache, HTTP types.

use serde::{Deserialize, Serialize};

/// The constant of reciprocal rank fusion (Cormack et al., as Elasticsearch and others use).
const RRF_K: f32 = 60.0;

/// How hybrid search combines its two rankings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Fusion {
    /// Weighted sum of the normalised scores.
    Blend,
    /// Weighted reciprocal rank fusion.
    Rrf,
}

impl Fusion {
    /// The name used in requests and cache keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blend => "blend",
            Self::Rrf => "rrf",
        }
    }
}

impl std::str::FromStr for Fusion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "blend" => Ok(Self::Blend),
            "rrf" => Ok(Self::Rrf),
            other => Err(format!("unknown fusion {other:?}: expected blend or rrf")),
        }
    }
}

/// One candidate chunk with both components.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Candidate {
    pub(crate) id: u64,
    /// Cosine similarity to the query.
    pub(crate) semantic: f32,
    /// BM25 score, when the lexical side proposed it.
    pub(crate) lexical: Option<f32>,
}

/// The candidates with their fused scores, best first (ties by id).
pub(crate) fn fuse(
    candidates: Vec<Candidate>,
    ratio: f32,
    fusion: Fusion,
) -> Vec<(Candidate, f32)> {
    let scores = match fusion {
        Fusion::Blend => blend(&candidates, ratio),
        Fusion::Rrf => rrf(&candidates, ratio),
    };
    let mut fused: Vec<(Candidate, f32)> = candidates.into_iter().zip(scores).collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.id.cmp(&b.0.id)));
    fused
}

fn blend(candidates: &[Candidate], ratio: f32) -> Vec<f32> {
    let (lo, hi) = candidates
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), c| {
            (lo.min(c.semantic), hi.max(c.semantic))
        });
    let best_lexical = candidates
        .iter()
        .fold(0.0f32, |m, c| m.max(c.lexical.unwrap_or(0.0)));
    candidates
        .iter()
        .map(|c| {
            // One candidate, or all equally similar: each is as similar as the best.
            let semantic = if hi > lo {
                (c.semantic - lo) / (hi - lo)
            } else {
                1.0
            };
            let lexical = if best_lexical > 0.0 {
                c.lexical.unwrap_or(0.0) / best_lexical
            } else {
                0.0
            };
            ratio * semantic + (1.0 - ratio) * lexical
        })
        .collect()
}

fn rrf(candidates: &[Candidate], ratio: f32) -> Vec<f32> {
    let semantic = ranks(candidates, |c| c.semantic);
    let lexical = ranks(candidates, |c| c.lexical.unwrap_or(f32::NEG_INFINITY));
    candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut score = ratio / (RRF_K + semantic[i] as f32);
            if c.lexical.is_some() {
                score += (1.0 - ratio) / (RRF_K + lexical[i] as f32);
            }
            score
        })
        .collect()
}

/// Each candidate's rank (from 1) by `key`, best first, ties by id.
fn ranks(candidates: &[Candidate], key: impl Fn(&Candidate) -> f32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| {
        key(&candidates[b])
            .total_cmp(&key(&candidates[a]))
            .then(candidates[a].id.cmp(&candidates[b].id))
    });
    let mut rank = vec![0; candidates.len()];
    for (r, i) in order.into_iter().enumerate() {
        rank[i] = r + 1;
    }
    rank
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: u64, semantic: f32, lexical: f32) -> Candidate {
        Candidate {
            id,
            semantic,
            lexical: (lexical > 0.0).then_some(lexical),
        }
    }

    fn order(fused: &[(Candidate, f32)]) -> Vec<u64> {
        fused.iter().map(|(c, _)| c.id).collect()
    }

    #[test]
    fn the_ratio_moves_the_ranking_between_the_two_sides() {
        let cands = vec![c(1, 0.9, 0.0), c(2, 0.5, 8.0), c(3, 0.8, 6.0)];
        for fusion in [Fusion::Blend, Fusion::Rrf] {
            assert_eq!(
                order(&fuse(cands.clone(), 1.0, fusion)),
                [1, 3, 2],
                "{fusion:?}"
            );
            assert_eq!(
                order(&fuse(cands.clone(), 0.0, fusion))[..2],
                [2, 3],
                "{fusion:?}"
            );
        }
        // Equal weight: the candidate good on both sides wins.
        assert_eq!(order(&fuse(cands.clone(), 0.5, Fusion::Blend))[0], 3);
    }

    #[test]
    fn blend_scores_are_normalised_and_exact() {
        let fused = fuse(vec![c(1, 0.8, 2.0), c(2, 0.4, 0.0)], 0.5, Fusion::Blend);
        assert_eq!(fused[0].1, 1.0);
        assert_eq!(fused[1].1, 0.0);
        let one = fuse(vec![c(7, 0.3, 0.0)], 0.25, Fusion::Blend);
        assert_eq!(one[0].1, 0.25);
    }

    #[test]
    fn rrf_gives_no_lexical_credit_without_a_bm25_score() {
        let fused = fuse(vec![c(1, 0.5, 0.0), c(2, 0.4, 0.0)], 0.5, Fusion::Rrf);
        assert_eq!(fused[0].1, 0.5 / 61.0);
        assert_eq!(fused[1].1, 0.5 / 62.0);
    }

    #[test]
    fn ties_go_to_the_lower_id() {
        let cands = vec![c(9, 0.5, 1.0), c(3, 0.5, 1.0), c(5, 0.5, 1.0)];
        for fusion in [Fusion::Blend, Fusion::Rrf] {
            let fused = fuse(cands.clone(), 0.5, fusion);
            if fusion == Fusion::Blend {
                assert_eq!(order(&fused), [3, 5, 9]);
            }
            assert!(fused.windows(2).all(|w| w[0].1 >= w[1].1));
        }
    }
}
