//! Lexical queries, and BM25 retrieval in the database.
//!
//! [`LexicalQuery`] reduces a query to plain words before any engine sees it, so no operator
//! syntax (`tsquery`'s) can be injected and every query is valid. The embedded default ranks
//! them in process ([`crate::bm25`]); PostgreSQL, whose rows every instance shares, keeps a
//! `tsvector` per chunk (English Snowball stemming, `unaccent`) under a GIN index and
//! computes BM25 in SQL ([`LexicalStore`]) from per-term document frequencies and the corpus
//! totals its triggers maintain (`ts_rank` is not BM25). Both use k1 = 1.2, b = 0.75 and the
//! idf `ln((N - n + 0.5) / (n + 0.5))` floored at 1e-6, with N and n counted over the whole
//! index (as a search engine's shard statistics are): a score reveals how common a word is
//! overall, never whose text has it. The tenant, model and filter are conditions of the same
//! statement that matches.
//!
//! Must not import: HTTP types, the cache, the embedder.

use async_trait::async_trait;

use crate::error::Result;
use crate::ids::TenantId;

use super::ChunkFilter;

/// Most distinct words of a query that are matched (the rest are ignored).
pub const MAX_QUERY_WORDS: usize = 32;
/// Longest word kept, in characters (longer runs are not words anyone searches for).
const MAX_WORD_CHARS: usize = 64;

/// English stop words (PostgreSQL's and Snowball's list): they carry no ranking weight, and
/// left in a query they would make it score nearly every chunk.
const STOP_WORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "did",
    "do",
    "does",
    "doing",
    "don",
    "down",
    "during",
    "each",
    "few",
    "for",
    "from",
    "further",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "itself",
    "just",
    "me",
    "more",
    "most",
    "my",
    "myself",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "on",
    "once",
    "only",
    "or",
    "other",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "s",
    "same",
    "she",
    "should",
    "so",
    "some",
    "such",
    "t",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "very",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

/// Whether `word` (lower case) is an English stop word.
pub(crate) fn is_stop_word(word: &str) -> bool {
    STOP_WORDS.binary_search(&word).is_ok()
}

/// A query reduced to the words the lexical index matches: runs of letters and digits,
/// lower-cased, stop words dropped, each once, at most [`MAX_QUERY_WORDS`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LexicalQuery {
    words: Vec<String>,
}

impl LexicalQuery {
    /// The words of `text`.
    pub fn parse(text: &str) -> Self {
        let mut words: Vec<String> = Vec::new();
        for run in text.split(|c: char| !c.is_alphanumeric()) {
            if run.is_empty() || run.chars().count() > MAX_WORD_CHARS {
                continue;
            }
            let word = run.to_lowercase();
            if is_stop_word(&word) || words.contains(&word) {
                continue;
            }
            words.push(word);
            if words.len() == MAX_QUERY_WORDS {
                break;
            }
        }
        Self { words }
    }

    /// Whether nothing is left to match.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The words.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The words as one text for `to_tsvector`, which stems and folds them as it did the
    /// chunks.
    pub fn text(&self) -> String {
        self.words.join(" ")
    }
}

/// BM25 retrieval over a tenant's embedded chunks.
#[async_trait]
pub trait LexicalStore: Send + Sync + 'static {
    /// The owner's `limit` best chunks embedded by `model` passing `filter`, by BM25 (higher
    /// is better), ties by id; only chunks matching at least one word.
    async fn lexical(
        &self,
        owner: &TenantId,
        model: &str,
        query: &LexicalQuery,
        filter: &ChunkFilter,
        limit: usize,
    ) -> Result<Vec<(u64, f32)>> {
        if query.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let mut best = self.bm25_top(owner, model, query, filter, limit).await?;
        best.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(best)
    }

    /// The backend's half of [`LexicalStore::lexical`]: the same `limit` best chunks, in any
    /// order; called only with at least one word and a limit above 0.
    async fn bm25_top(
        &self,
        owner: &TenantId,
        model: &str,
        query: &LexicalQuery,
        filter: &ChunkFilter,
        limit: usize,
    ) -> Result<Vec<(u64, f32)>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_words_are_sorted_for_binary_search() {
        assert!(STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn queries_become_plain_distinct_words() {
        let q = LexicalQuery::parse("What is the role of IL-6 in \"sepsis\"? OR NEAR(x) il");
        assert_eq!(q.words(), ["role", "il", "6", "sepsis", "near", "x"]);
        assert_eq!(q.text(), "role il 6 sepsis near x");
    }

    #[test]
    fn unicode_words_are_kept_and_folded_to_lower_case() {
        let q = LexicalQuery::parse("Café ÉCOLE naïve 東京");
        assert_eq!(q.words(), ["café", "école", "naïve", "東京"]);
    }

    #[test]
    fn nothing_matchable_is_empty() {
        assert!(LexicalQuery::parse("?? -- the of").is_empty());
        assert!(LexicalQuery::parse(&"x".repeat(65)).is_empty());
    }

    #[test]
    fn words_are_capped() {
        let text: String = (0..100).map(|i| format!("w{i} ")).collect();
        assert_eq!(LexicalQuery::parse(&text).words().len(), MAX_QUERY_WORDS);
    }
}
