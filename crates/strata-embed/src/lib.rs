//! strata's embedders: turning text into vectors.
//!
//! - [`Embedder`]: the abstraction the engine uses (model id, dimensions, embed a batch).
//! - [`LocalEmbedder`]: sentence-transformers all-MiniLM-L6-v2 (384 dimensions, mean pooling
//!   over the attention mask, L2-normalised), int8 ONNX export run by ONNX Runtime, loaded
//!   from files fetched offline by `scripts/fetch-model` (see [`ModelFiles`]).
//! - [`Batcher`]: coalesces concurrent requests (queries and ingestion) into batches run one
//!   at a time on the model's own thread, never on the async reactor.
//!
//! Owns: models, tokenization for them, batching. Must not import: the engine, the server,
//! the cache, or any storage.
//!
//! - [`HttpEmbedder`]: any OpenAI-compatible `/embeddings` endpoint, with retries and a
//!   circuit breaker.
//! - [`CandleMiniLm`]: the same model in f32 through candle, pure Rust: the reference the
//!   ONNX route is tested against, and the fallback (`--embedder candle`).

mod batcher;
mod candle;
mod error;
mod files;
mod graph;
mod http;
mod lazy;
mod onnx;
mod tokenizer;

use async_trait::async_trait;

pub use batcher::{BatchSettings, Batcher};
pub use candle::CandleMiniLm;
pub use error::EmbedError;
pub use files::{MODEL_ONNX, ModelFiles};
pub use http::{BreakerState, HttpEmbedder, HttpSettings};
pub use onnx::{MODEL_ID, OnnxMiniLm};
pub use tokenizer::TextTokenizer;

/// Something that turns texts into unit-length vectors.
#[async_trait]
pub trait Embedder: Send + Sync + 'static {
    /// A stable model id; vectors of different ids are never compared.
    fn model(&self) -> &str;
    /// Vector length.
    fn dims(&self) -> usize;
    /// One vector per text, in order.
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError>;
    /// The same for background work (ingestion), which may wait behind callers who are
    /// waiting; by default no different from [`Embedder::embed`].
    async fn embed_bulk(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed(texts).await
    }
    /// The model's tokenizer, when it has one, so chunks can be sized in its tokens.
    fn tokenizer(&self) -> Option<std::sync::Arc<TextTokenizer>>;
    /// What a model run by this process has done; `None` for a model run elsewhere.
    fn stats(&self) -> Option<ModelStats> {
        None
    }
}

/// What a local model has done since it loaded: its forward passes and the time inside them.
/// `busy_seconds` over a wall-clock interval is how busy the model was (at most 1: passes run
/// one at a time).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ModelStats {
    /// Forward passes run (each one batch of texts, tokenising included).
    pub passes: u64,
    /// Texts embedded by passes that succeeded.
    pub texts: u64,
    /// Passes that failed (an error or a panic).
    pub failed_passes: u64,
    /// Seconds spent inside passes.
    pub busy_seconds: f64,
    /// Requests waiting for a pass now.
    pub queued: usize,
    /// Passes by duration: `pass_seconds[i]` ran at most [`PASS_SECONDS_BUCKETS`]`[i]`
    /// seconds and more than the bound before it; the last cell counts the slower ones.
    #[serde(skip)]
    pub pass_seconds: [u64; PASS_SECONDS_BUCKETS.len() + 1],
    /// Passes by texts in them, bucketed the same way by [`BATCH_SIZE_BUCKETS`].
    #[serde(skip)]
    pub batch_sizes: [u64; BATCH_SIZE_BUCKETS.len() + 1],
    /// Texts in every pass, failed ones included (the batch-size histogram's sum).
    #[serde(skip)]
    pub pass_texts: u64,
}

/// Upper bounds of the pass-duration histogram, in seconds: a one-text pass of MiniLM takes
/// about 2-5 ms here, a full bulk pass of 64 chunks a few hundred.
pub const PASS_SECONDS_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Upper bounds of the batch-size histogram, in texts per pass.
pub const BATCH_SIZE_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// A model that embeds a batch synchronously (CPU work; call it off the reactor).
pub trait BatchModel: Send + Sync + 'static {
    /// Model id.
    fn model(&self) -> &str;
    /// Vector length.
    fn dims(&self) -> usize;
    /// One vector per text.
    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// Which implementation of the local model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LocalRuntime {
    /// int8 ONNX export through ONNX Runtime (fast; the default).
    #[default]
    Onnx,
    /// f32 weights through candle (pure Rust, exact, slower).
    Candle,
}

/// The default embedder: the local MiniLM model behind a [`Batcher`].
pub struct LocalEmbedder {
    batcher: Batcher,
    model: std::sync::Arc<dyn BatchModel>,
    tokenizer: std::sync::Arc<TextTokenizer>,
}

impl LocalEmbedder {
    /// Loads the model from `files` and starts its batcher.
    pub fn load(
        files: &ModelFiles,
        runtime: LocalRuntime,
        threads: usize,
        batch: BatchSettings,
    ) -> Result<Self, EmbedError> {
        let (model, tokenizer): (std::sync::Arc<dyn BatchModel>, _) = match runtime {
            LocalRuntime::Onnx => {
                let m = OnnxMiniLm::load(files, threads)?;
                let t = m.tokenizer();
                (std::sync::Arc::new(m), t)
            }
            LocalRuntime::Candle => {
                let m = CandleMiniLm::load(files)?;
                let t = m.tokenizer();
                (std::sync::Arc::new(m), t)
            }
        };
        Ok(Self {
            batcher: Batcher::start(model.clone(), batch),
            model,
            tokenizer,
        })
    }

    /// The model in `files` with its batcher, loaded on its first forward pass rather than
    /// now (see `lazy.rs`): for processes that may never embed. The tokenizer, the model's
    /// id and its dimensions are available at once.
    pub fn load_on_first_use(
        files: &ModelFiles,
        runtime: LocalRuntime,
        threads: usize,
        batch: BatchSettings,
    ) -> Result<Self, EmbedError> {
        let (model, tokenizer) = lazy::LazyModel::new(files, runtime, threads)?;
        let model: std::sync::Arc<dyn BatchModel> = std::sync::Arc::new(model);
        Ok(Self {
            batcher: Batcher::start(model.clone(), batch),
            model,
            tokenizer,
        })
    }
}

#[async_trait]
impl Embedder for LocalEmbedder {
    fn model(&self) -> &str {
        BatchModel::model(self.model.as_ref())
    }

    fn dims(&self) -> usize {
        BatchModel::dims(self.model.as_ref())
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.batcher.embed(texts).await
    }

    async fn embed_bulk(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.batcher.embed_bulk(texts).await
    }

    fn tokenizer(&self) -> Option<std::sync::Arc<TextTokenizer>> {
        Some(self.tokenizer.clone())
    }

    fn stats(&self) -> Option<ModelStats> {
        Some(self.batcher.stats())
    }
}

/// Cosine similarity of two unit vectors (their dot product).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
