//! Embedding errors.

use std::path::PathBuf;

/// Why an embedding could not be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    /// A model file is missing or does not match its pinned checksum.
    #[error("{what} at {} is {problem}; run `scripts/fetch-model` (or set STRATA_MODEL_DIR to where it put the files)", path.display())]
    ModelFiles {
        /// Which file.
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// `missing`, `corrupt (sha256 mismatch)`, ...
        problem: String,
    },
    /// ONNX Runtime or the tokenizer failed.
    #[error("model runtime error: {0}")]
    Runtime(String),
    /// Too many requests are queued, or the wait for the model would pass its budget;
    /// retry shortly.
    #[error("the embedding model has more work waiting than it may take now")]
    Overloaded,
    /// A remote embedder is unreachable or its circuit is open; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The batcher has stopped (shutdown).
    #[error("the embedder is shutting down")]
    Closed,
}
