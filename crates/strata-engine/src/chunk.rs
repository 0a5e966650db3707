//! Token-based chunking with overlap that prefers natural boundaries.
//!
//! The extracted blocks are joined with blank lines and tokenized once. Each chunk takes at
//! most `max_tokens` tokens; when the text goes on, the cut falls at the latest heading in
//! the second half of the window, else the latest paragraph start, else the latest sentence
//! end, else exactly at `max_tokens`. The next chunk repeats the last `overlap` tokens,
//! except after a heading cut: a new section starts clean.
//!
//! Owns: chunk boundaries. Must not import: the store, the embedder, HTTP.

use std::ops::Range;

use crate::error::EngineError;
use crate::extract::Extracted;

/// Splits text into tokens, as byte ranges. The word tokenizer is the default; the embedding
/// model's own tokenizer plugs in here so chunks fit its context.
pub trait Tokenizer: Send + Sync {
    /// Byte ranges of the tokens of `text`, in order, non-overlapping.
    fn token_spans(&self, text: &str) -> Vec<Range<usize>>;
}

/// Words and punctuation: every maximal run of alphanumeric characters is one token, and so
/// is every other non-space character.
#[derive(Debug, Clone, Copy, Default)]
pub struct WordTokenizer;

impl Tokenizer for WordTokenizer {
    fn token_spans(&self, text: &str) -> Vec<Range<usize>> {
        let mut spans = Vec::with_capacity(text.len() / 5);
        let mut word_start: Option<usize> = None;
        for (i, ch) in text.char_indices() {
            if ch.is_alphanumeric() {
                word_start.get_or_insert(i);
                continue;
            }
            if let Some(s) = word_start.take() {
                spans.push(s..i);
            }
            if !ch.is_whitespace() {
                spans.push(i..i + ch.len_utf8());
            }
        }
        if let Some(s) = word_start {
            spans.push(s..text.len());
        }
        spans
    }
}

/// Chunk size limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkConfig {
    /// Most tokens in one chunk.
    pub max_tokens: usize,
    /// Tokens repeated at the start of the next chunk.
    pub overlap: usize,
}

impl ChunkConfig {
    /// Validates: `max_tokens` in 16..=8192, `overlap` below half of it.
    pub fn new(max_tokens: usize, overlap: usize) -> Result<Self, EngineError> {
        if !(16..=8192).contains(&max_tokens) {
            return Err(EngineError::Config(
                "chunk_tokens must be in 16..=8192".into(),
            ));
        }
        if overlap * 2 >= max_tokens {
            return Err(EngineError::Config(
                "chunk_overlap must be less than half of chunk_tokens".into(),
            ));
        }
        Ok(Self {
            max_tokens,
            overlap,
        })
    }
}

impl Default for ChunkConfig {
    fn default() -> Self {
        Self {
            max_tokens: 200,
            overlap: 40,
        }
    }
}

/// One chunk of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkText {
    /// The text, a contiguous slice of the joined document.
    pub text: String,
    /// Its token count.
    pub token_count: u32,
    /// Index of its first token in the document.
    pub first_token: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cut {
    Hard,
    Sentence,
    Paragraph,
    Heading,
}

/// Splits `doc` into chunks under `cfg`.
pub fn chunk(doc: &Extracted, cfg: ChunkConfig, tokenizer: &dyn Tokenizer) -> Vec<ChunkText> {
    let mut joined = String::with_capacity(doc.char_len() + doc.blocks.len() * 2);
    let mut block_starts = Vec::with_capacity(doc.blocks.len());
    for b in &doc.blocks {
        if !joined.is_empty() {
            joined.push_str("\n\n");
        }
        block_starts.push((joined.len(), b.heading));
        joined.push_str(&b.text);
    }
    let spans = tokenizer.token_spans(&joined);
    let n = spans.len();
    // The best cut *before* token i, by the kind of boundary found there.
    let mut cut_before = vec![Cut::Hard; n + 1];
    let mut bi = 0;
    for (i, span) in spans.iter().enumerate() {
        while bi < block_starts.len() && block_starts[bi].0 < span.start {
            bi += 1;
        }
        if bi < block_starts.len() && block_starts[bi].0 == span.start {
            cut_before[i] = if block_starts[bi].1 {
                Cut::Heading
            } else {
                Cut::Paragraph
            };
        }
        if i > 0
            && cut_before[i] == Cut::Hard
            && matches!(&joined[spans[i - 1].clone()], "." | "!" | "?")
        {
            cut_before[i] = Cut::Sentence;
        }
    }

    let mut chunks = Vec::new();
    let mut start = 0;
    while start < n {
        let hard_end = (start + cfg.max_tokens).min(n);
        let (end, kind) = if hard_end == n {
            (n, Cut::Hard)
        } else {
            let lo = start + cfg.max_tokens / 2;
            let mut best = (hard_end, Cut::Hard);
            for i in (lo.max(start + 1)..=hard_end).rev() {
                if cut_before[i] > best.1 {
                    best = (i, cut_before[i]);
                    if best.1 == Cut::Heading {
                        break;
                    }
                }
            }
            best
        };
        chunks.push(ChunkText {
            text: joined[spans[start].start..spans[end - 1].end].to_owned(),
            token_count: (end - start) as u32,
            first_token: start,
        });
        if end == n {
            break;
        }
        start = if kind == Cut::Heading {
            end
        } else {
            end - cfg.overlap
        };
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::Block;
    use proptest::prelude::*;

    fn doc(blocks: &[(&str, bool)]) -> Extracted {
        Extracted {
            blocks: blocks
                .iter()
                .map(|(t, h)| Block {
                    text: (*t).to_owned(),
                    heading: *h,
                })
                .collect(),
            unreadable: 0,
        }
    }

    #[test]
    fn short_document_is_one_chunk() {
        let c = chunk(
            &doc(&[("Hello world.", false)]),
            ChunkConfig::default(),
            &WordTokenizer,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].text, "Hello world.");
        assert_eq!(c[0].token_count, 3);
    }

    #[test]
    fn cuts_at_heading_without_overlap() {
        let body = "word ".repeat(20);
        let d = doc(&[(&body, false), ("Section two", true), (&body, false)]);
        let cfg = ChunkConfig::new(30, 5).unwrap();
        let c = chunk(&d, cfg, &WordTokenizer);
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(c[1].text.starts_with("Section two"), "{c:?}");
        assert_eq!(c[1].first_token, 20);
    }

    #[test]
    fn prefers_sentence_end_over_hard_cut() {
        let text = format!("{}. {}", "a ".repeat(12).trim(), "b ".repeat(30).trim());
        let cfg = ChunkConfig::new(20, 2).unwrap();
        let c = chunk(&doc(&[(&text, false)]), cfg, &WordTokenizer);
        assert!(c[0].text.ends_with('.'), "{:?}", c[0].text);
    }

    proptest! {
        #[test]
        fn chunks_cover_every_token_within_limits(
            blocks in prop::collection::vec(("[a-z .!?]{0,80}", any::<bool>()), 0..30),
            max in 16usize..64,
            overlap_frac in 0usize..50,
        ) {
            let overlap = (max / 2 - 1) * overlap_frac / 50;
            let cfg = ChunkConfig::new(max, overlap).unwrap();
            let refs: Vec<(&str, bool)> = blocks.iter().map(|(t, h)| (t.as_str(), *h)).collect();
            let d = doc(&refs);
            let mut d2 = Extracted::default();
            for b in &d.blocks { d2.push(&b.text, b.heading); }
            let total = {
                let joined: Vec<&str> = d2.blocks.iter().map(|b| b.text.as_str()).collect();
                WordTokenizer.token_spans(&joined.join("\n\n")).len()
            };
            let chunks = chunk(&d2, cfg, &WordTokenizer);
            let mut covered_to = 0usize;
            for c in &chunks {
                prop_assert!(c.token_count as usize <= max);
                prop_assert!(c.token_count > 0);
                prop_assert!(c.first_token <= covered_to, "gap before token {}", c.first_token);
                prop_assert!(covered_to - c.first_token <= overlap, "overlap too large");
                covered_to = c.first_token + c.token_count as usize;
                prop_assert_eq!(WordTokenizer.token_spans(&c.text).len(), c.token_count as usize);
            }
            prop_assert_eq!(covered_to, total);
        }
    }
}
