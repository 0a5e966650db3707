//! The local model loaded on its first forward pass instead of at start: for processes that
//! may never embed (tests of the document library, administration commands). Its id, its
//! dimensions and its tokenizer are known without the weights, so everything built from
//! them (chunk sizes, the vector index, cache keys) is the same either way; the first pass
//! pays the load, on the batcher's own thread, and a load that fails fails that pass and is
//! not retried (the error names the file).
//!
//! Must not import: anything of strata's.

use std::sync::{Arc, OnceLock};

use crate::files::{ModelFiles, TOKENIZER};
use crate::onnx::{DIMS, MODEL_ID};
use crate::{BatchModel, CandleMiniLm, EmbedError, LocalRuntime, OnnxMiniLm, TextTokenizer};

/// A [`BatchModel`] whose weights load on the first [`BatchModel::embed_batch`].
pub(crate) struct LazyModel {
    files: ModelFiles,
    runtime: LocalRuntime,
    threads: usize,
    loaded: OnceLock<Result<Arc<dyn BatchModel>, String>>,
}

impl LazyModel {
    /// The model in `files`, not loaded yet; the tokenizer is checked and loaded now.
    pub(crate) fn new(
        files: &ModelFiles,
        runtime: LocalRuntime,
        threads: usize,
    ) -> Result<(Self, Arc<TextTokenizer>), EmbedError> {
        let path = files.path(TOKENIZER.0);
        crate::files::check(&path, "the tokenizer", TOKENIZER.1)?;
        let tokenizer = Arc::new(TextTokenizer::load(&path)?);
        let model = Self {
            files: files.clone(),
            runtime,
            threads,
            loaded: OnceLock::new(),
        };
        Ok((model, tokenizer))
    }
}

impl BatchModel for LazyModel {
    fn model(&self) -> &str {
        MODEL_ID
    }

    fn dims(&self) -> usize {
        DIMS
    }

    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let loaded = self.loaded.get_or_init(|| {
            let model: Result<Arc<dyn BatchModel>, EmbedError> = match self.runtime {
                LocalRuntime::Onnx => {
                    OnnxMiniLm::load(&self.files, self.threads).map(|m| Arc::new(m) as _)
                }
                LocalRuntime::Candle => CandleMiniLm::load(&self.files).map(|m| Arc::new(m) as _),
            };
            model.map_err(|e| e.to_string())
        });
        match loaded {
            Ok(model) => model.embed_batch(texts),
            Err(why) => Err(EmbedError::Runtime(format!(
                "the embedding model could not be loaded: {why}"
            ))),
        }
    }
}
