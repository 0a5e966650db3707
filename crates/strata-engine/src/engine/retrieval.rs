//! The retrieval service: hybrid, semantic and lexical search over a tenant's chunks, query embeddings through
//! the cache, and the model's own facts (id, dimensions, token counts, statistics).
//!
//! Holds only what it uses: the store (candidates and stored vectors), the nearest-neighbour
//! and lexical indexes, the embedder and the cache policy.

use std::sync::Arc;

use strata_embed::Embedder;

use crate::INTERACTIVE_TEXTS;
use crate::ann::Ann;
use crate::error::{EngineError, Result};
use crate::ids::TenantId;
use crate::lexical::Lexical;
use crate::policy::CachePolicy;
use crate::search::{Corpus, SearchRequest, SearchResults};
use crate::store::Store;

/// Search and embeddings (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct SearchService {
    pub(super) store: Arc<dyn Store>,
    pub(super) ann: Ann,
    pub(super) lexical: Lexical,
    pub(super) embedder: Arc<dyn Embedder>,
    pub(super) policy: CachePolicy,
    pub(super) exact_limit: u64,
}

impl SearchService {
    /// Hybrid, semantic or lexical search over the owner's chunks (see [`crate::search`]).
    pub async fn search(&self, owner: &TenantId, req: SearchRequest) -> Result<SearchResults> {
        let plan = req.validate()?;
        let corpus = Corpus {
            store: self.store.as_ref(),
            ann: &self.ann,
            lexical: &self.lexical,
            exact_limit: self.exact_limit,
            model: self.embedder.model(),
        };
        // Polled only by the modes that use it: lexical search never waits for the model.
        let embed = self.embed_query(&plan.query);
        crate::search::run(&corpus, owner, &plan, embed).await
    }

    /// A query's embedding, from the cache when this model embedded this exact text before.
    pub async fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        let read = CachePolicy::query_embedding(self.embedder.model(), text).keyed();
        let lookup = self
            .policy
            .get_or_compute(&read, || async {
                let v = self.embed_texts(vec![text.to_owned()]).await?.remove(0);
                Ok::<_, EngineError>(bytes::Bytes::from(crate::store::vector_to_bytes(&v)))
            })
            .await?;
        crate::store::vector_from_bytes(&lookup.value)
            .ok_or_else(|| EngineError::Internal("corrupt cached embedding".into()))
    }

    /// Embeds texts with the configured model (one unit vector per text). A request of more
    /// than [`INTERACTIVE_TEXTS`] texts is throughput work (an `/v1/embeddings` batch of up
    /// to 2,048): it waits behind queries on the model's bulk queue, as ingestion does, so a
    /// large batch never delays the query embedding of a search.
    pub async fn embed_texts(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        let embedder = &self.embedder;
        let result = if texts.len() > INTERACTIVE_TEXTS {
            embedder.embed_bulk(texts).await
        } else {
            embedder.embed(texts).await
        };
        result.map_err(embed_error)
    }

    /// Embeds texts to be stored (memory adds and edits): on the model's bulk queue, behind
    /// every waiting query, in full passes, without the queries' wait budget; a write's
    /// throughput is bounded by the model, not turned away because queries are waiting.
    pub async fn embed_for_storage(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        self.embedder.embed_bulk(texts).await.map_err(embed_error)
    }

    /// Tokens the model sees of each text (after truncation), for usage accounting.
    pub fn count_tokens(&self, texts: &[String]) -> Result<Vec<usize>> {
        let Some(t) = self.embedder.tokenizer() else {
            return Ok(texts.iter().map(|s| s.split_whitespace().count()).collect());
        };
        t.count_tokens(texts)
            .map_err(|e| EngineError::Internal(e.to_string()))
    }

    /// The embedding model's id and dimensions.
    pub fn embedding_model(&self) -> (&str, usize) {
        (self.embedder.model(), self.embedder.dims())
    }

    /// The embedding model's id and, when it runs in this process, its passes and busy time.
    pub fn model_stats(&self) -> (&str, Option<strata_embed::ModelStats>) {
        (self.embedder.model(), self.embedder.stats())
    }
}

/// An embedding failure as the engine reports it.
fn embed_error(e: strata_embed::EmbedError) -> EngineError {
    match e {
        strata_embed::EmbedError::Overloaded => EngineError::Overloaded(
            "the embedding model has more work waiting than it can take now",
        ),
        strata_embed::EmbedError::Closed => EngineError::Unavailable("shutting down".into()),
        strata_embed::EmbedError::Unavailable(why) => EngineError::Unavailable(why),
        other => EngineError::Internal(other.to_string()),
    }
}
