//! The model's WordPiece tokenizer, configured for embedding (longest-in-batch padding,
//! truncation at 256 tokens) and for chunking (no truncation, byte offsets).

use std::ops::Range;

use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

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
        embed.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
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

    /// Encodes a batch for the model.
    pub fn encode_batch(&self, texts: &[String]) -> Result<EncodedBatch, EmbedError> {
        let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let enc = self
            .embed
            .encode_batch(inputs, true)
            .map_err(|e| EmbedError::Runtime(format!("tokenize: {e}")))?;
        let len = enc.first().map_or(0, |e| e.get_ids().len());
        let mut out = EncodedBatch {
            batch: enc.len(),
            len,
            ids: Vec::with_capacity(enc.len() * len),
            mask: Vec::with_capacity(enc.len() * len),
            type_ids: Vec::with_capacity(enc.len() * len),
        };
        for e in &enc {
            out.ids.extend(e.get_ids().iter().map(|&v| i64::from(v)));
            out.mask
                .extend(e.get_attention_mask().iter().map(|&v| i64::from(v)));
            out.type_ids
                .extend(e.get_type_ids().iter().map(|&v| i64::from(v)));
        }
        Ok(out)
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
