//! The model's WordPiece tokenizer, configured for embedding (longest-in-batch padding,
//! truncation at 256 tokens) and for chunking (no truncation, byte offsets).

use std::ops::Range;

use tokenizers::{Tokenizer, TruncationParams};

use crate::EmbedError;

/// Most tokens the model sees of one text (including `[CLS]` and `[SEP]`).
pub const MAX_TOKENS: usize = 256;

/// Tokenizer for one model.
pub struct TextTokenizer {
    embed: Tokenizer,
    spans: Tokenizer,
}

/// A padded batch of token ids, row-major `[batch, len]`.
pub struct EncodedBatch {
    /// Rows.
    pub batch: usize,
    /// Columns (the longest row).
    pub len: usize,
    /// Token ids.
    pub ids: Vec<i64>,
    /// 1 for real tokens, 0 for padding.
    pub mask: Vec<i64>,
    /// Segment ids (all 0 for one sentence).
    pub type_ids: Vec<i64>,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`, replacing its shipped fixed-128 padding and truncation.
    pub fn load(path: &std::path::Path) -> Result<Self, EmbedError> {
        let load = || {
            Tokenizer::from_file(path).map_err(|e| EmbedError::Runtime(format!("tokenizer: {e}")))
        };
        let mut embed = load()?;
        // Padding is done per length group (see `pad`), not by the tokenizer.
        embed.with_padding(None);
        embed
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| EmbedError::Runtime(format!("tokenizer: {e}")))?;
        let mut spans = load()?;
        spans.with_padding(None);
        spans
            .with_truncation(None)
            .map_err(|e| EmbedError::Runtime(format!("tokenizer: {e}")))?;
        Ok(Self { embed, spans })
    }

    /// Token ids of each text (with special tokens, truncated, unpadded).
    pub fn encode_each(&self, texts: &[String]) -> Result<Vec<Vec<u32>>, EmbedError> {
        let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let enc = self
            .embed
            .encode_batch(inputs, true)
            .map_err(|e| EmbedError::Runtime(format!("tokenize: {e}")))?;
        Ok(enc.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Encodes a batch for the model, padded to its longest text.
    pub fn encode_batch(&self, texts: &[String]) -> Result<EncodedBatch, EmbedError> {
        let rows = self.encode_each(texts)?;
        let refs: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        Ok(pad(&refs))
    }

    /// Tokens the model sees of each text (with special tokens, after truncation).
    pub fn count_tokens(&self, texts: &[String]) -> Result<Vec<usize>, EmbedError> {
        texts
            .iter()
            .map(|t| {
                self.embed
                    .encode(t.as_str(), true)
                    .map(|e| e.get_attention_mask().iter().filter(|&&m| m == 1).count())
                    .map_err(|e| EmbedError::Runtime(format!("tokenize: {e}")))
            })
            .collect()
    }

    /// Byte ranges of the model's tokens in `text` (no special tokens, no truncation).
    pub fn token_spans(&self, text: &str) -> Vec<Range<usize>> {
        match self.spans.encode(text, false) {
            Ok(enc) => {
                let mut out: Vec<Range<usize>> = Vec::with_capacity(enc.get_offsets().len());
                for &(s, e) in enc.get_offsets() {
                    // Word pieces of one word share no bytes; keep ranges ordered and disjoint.
                    match out.last() {
                        Some(last) if s < last.end => {}
                        _ if s < e => out.push(s..e),
                        _ => {}
                    }
                }
                out
            }
            Err(_) => Vec::new(),
        }
    }
}

/// Pads rows of token ids (pad id 0) into one batch.
pub fn pad(rows: &[&[u32]]) -> EncodedBatch {
    let len = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut out = EncodedBatch {
        batch: rows.len(),
        len,
        ids: Vec::with_capacity(rows.len() * len),
        mask: Vec::with_capacity(rows.len() * len),
        type_ids: vec![0; rows.len() * len],
    };
    for r in rows {
        out.ids.extend(r.iter().map(|&v| i64::from(v)));
        out.ids.extend(std::iter::repeat_n(0, len - r.len()));
        out.mask.extend(std::iter::repeat_n(1, r.len()));
        out.mask.extend(std::iter::repeat_n(0, len - r.len()));
    }
    out
}

/// Splits a batch into groups of similar length so padding wastes little compute: texts are
/// ordered by length, and a group closes when padding would exceed `slack` of its real tokens.
/// Returns groups of indices into `lens`.
pub fn length_groups(lens: &[usize], slack: f64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| lens[i]);
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let mut real = 0usize;
    for i in order {
        let l = lens[i];
        let padded = l * (cur.len() + 1);
        if !cur.is_empty() && padded as f64 > (real + l) as f64 * (1.0 + slack) {
            groups.push(std::mem::take(&mut cur));
            real = 0;
        }
        cur.push(i);
        real += l;
    }
    if !cur.is_empty() {
        groups.push(cur);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_bound_padding_and_cover_everything() {
        let lens = [5, 40, 6, 7, 38, 5, 12];
        let groups = length_groups(&lens, 0.25);
        let mut seen: Vec<usize> = groups.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..lens.len()).collect::<Vec<_>>());
        for g in &groups {
            let max = g.iter().map(|&i| lens[i]).max().unwrap();
            let real: usize = g.iter().map(|&i| lens[i]).sum();
            assert!((max * g.len()) as f64 <= real as f64 * 1.25 + 1e-9 || g.len() == 1);
        }
        assert!(
            groups.len() < lens.len(),
            "similar lengths share a group: {groups:?}"
        );
    }

    #[test]
    fn padding_masks_the_tail() {
        let a = [101u32, 7, 102];
        let b = [101u32, 102];
        let p = pad(&[&a, &b]);
        assert_eq!((p.batch, p.len), (2, 3));
        assert_eq!(p.ids, vec![101, 7, 102, 101, 102, 0]);
        assert_eq!(p.mask, vec![1, 1, 1, 1, 1, 0]);
    }
}
