//! strata's embedders: the `Embedder` abstraction, the local all-MiniLM-L6-v2 model (ONNX
//! Runtime int8 by default, candle f32 as the pure-Rust reference), an OpenAI-compatible
//! HTTP client, and a batcher that coalesces concurrent requests into one forward pass.
//!
//! Owns: turning text into vectors. Must not import: the engine, the server, the cache.
//!
//! Nothing is implemented here yet: embeddings arrive with the search issue. Until then
//! ingestion stops after chunking, and no endpoint embeds or searches.
