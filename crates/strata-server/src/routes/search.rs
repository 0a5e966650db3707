//! `POST /v1/search` and the OpenAI-compatible `POST /v1/embeddings`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use strata_engine::policy::SearchKeyMemo;
use strata_engine::search::{SearchHit, SearchRequest, SearchResults};

use crate::error::ApiError;
use crate::extract::{ApiJson, JsonBytes, Preconditions, Tenant, parse_json};
use crate::{AppState, cached};

#[utoipa::path(
    post,
    path = "/v1/search",
    operation_id = "search",
    tag = "search",
    summary = "Hybrid, semantic or lexical search over the tenant's chunks",
    description = "Returns the tenant's best chunks for the query. `mode`: `hybrid` (default) \
                   fuses the nearest embeddings with BM25 over titles and text, weighted by \
                   `semantic_ratio` and combined by `fusion`; `semantic` ranks by cosine \
                   similarity only; `lexical` by BM25 only, without the model. Every hit \
                   reports `semantic_score` and `lexical_score` beside the `score` it is \
                   ranked by. Cached per tenant by every parameter that changes the answer; \
                   any write of the tenant's invalidates it. With `stream: true` the answer \
                   is NDJSON, one hit per line, and `x-search-exhaustive` says whether every \
                   candidate was scored.",
    request_body = SearchRequest,
    params(crate::openapi::IfNoneMatch),
    responses(
        (status = 200, description = "The hits", content(
            (SearchResults = "application/json"),
            (SearchHit = "application/x-ndjson"),
        ), headers(("etag" = String))),
        (status = 304, description = "Unchanged since the given ETag"),
        (status = 400, description = "`malformed_json`"),
        (status = 413, description = "`payload_too_large`"),
        (status = 415, description = "`unsupported_media_type`: not JSON"),
        (status = 422, description = "`validation_failed`"),
    ),
)]
/// `POST /v1/search` {query, k, filter{tags, document_ids}, min_score, stream, mode,
/// semantic_ratio, fusion}.
/// Cached per tenant by every parameter that changes the answer; any write of the tenant's
/// invalidates it. With `stream: true` the answer is NDJSON, one hit per line.
pub async fn search(
    State(app): State<AppState>,
    tenant: Tenant,
    inm: Preconditions,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let parsed = parsed(body)?;
    let req = &parsed.req;
    let stream = req.stream;
    let read = app
        .engine
        .cache_policy()
        .search_keyed(&tenant.0, req, &parsed.key);
    app.warmer.record(&tenant.0, read.digest, req);
    let lookup = cached::search(&app, &tenant.0, read, req).await?;
    // The NDJSON view re-reads the JSON body below, so it takes the identity form.
    let inm = if stream { inm.identity() } else { inm };
    let resp = cached::respond(&inm, lookup);
    if !stream || resp.status() != axum::http::StatusCode::OK {
        return Ok(resp);
    }
    // NDJSON view of the cached JSON answer.
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|_| ApiError::new(crate::error::Code::Internal, "cached body unreadable"))?;
    let results: Value = serde_json::from_slice(&bytes)
        .map_err(|_| ApiError::new(crate::error::Code::Internal, "cached body unreadable"))?;
    let mut out = Vec::with_capacity(bytes.len());
    for hit in results["hits"].as_array().into_iter().flatten() {
        serde_json::to_writer(&mut out, hit).unwrap_or_default();
        out.push(b'\n');
    }
    let exhaustive = if results["exhaustive"] == Value::Bool(true) {
        "true"
    } else {
        "false"
    };
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    parts
        .headers
        .insert("x-search-exhaustive", HeaderValue::from_static(exhaustive));
    parts.headers.remove(header::ETAG);
    Ok(Response::from_parts(parts, Body::from(out)))
}

thread_local! {
    /// Search bodies this thread has parsed and checked, by their bytes. A cached search is
    /// usually a body the thread has parsed before, and parsing it again was the largest
    /// part of strata's own work on an L1 hit; the bytes decide the request, so the same
    /// bytes may share it.
    static PARSED: RefCell<HashMap<Bytes, Arc<Parsed>, strata_cache::FastHashBuilder>> =
        RefCell::new(HashMap::default());
}

/// A search body parsed and checked, with its cache key's digest once a search has made it
/// (so a repeat neither writes nor hashes the key material again).
#[derive(Debug)]
struct Parsed {
    req: SearchRequest,
    key: SearchKeyMemo,
}

/// Bodies remembered per thread (the map starts over when full), and the largest one
/// remembered: queries in a search box are short, and a long body is not parsed often
/// enough to be worth the memory.
const PARSED_PER_THREAD: usize = 512;
const PARSED_MAX_BODY: usize = 1024;

/// The search request in `body`, parsed and checked (before the cache: its key folds
/// duplicates and whitespace, so an invalid request could share a valid one's key).
fn parsed(body: Bytes) -> Result<Arc<Parsed>, ApiError> {
    let remember = body.len() <= PARSED_MAX_BODY;
    if remember && let Some(req) = PARSED.with_borrow(|p| p.get(&body).cloned()) {
        return Ok(req);
    }
    let req: SearchRequest = parse_json(&body)?;
    req.check()?;
    let req = Arc::new(Parsed {
        req,
        key: SearchKeyMemo::default(),
    });
    if remember {
        PARSED.with_borrow_mut(|p| {
            // A copy: the body may be a slice of a much larger read buffer.
            let key = Bytes::copy_from_slice(&body);
            crate::memo::insert_bounded(p, key, Arc::clone(&req), PARSED_PER_THREAD);
        });
    }
    Ok(req)
}

/// OpenAI's `input`: a string or an array of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    One(String),
    /// Several texts.
    Many(Vec<String>),
    /// Token arrays (refused with 422: strata tokenizes itself).
    Tokens(Vec<Value>),
}

/// What the document says `input` takes: token arrays parse (to be refused with a clear
/// message) but are not part of the API.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum EmbeddingInputSchema {
    /// One text.
    One(String),
    /// Up to 2048 texts.
    Many(Vec<String>),
}

/// `POST /v1/embeddings` body, as the OpenAI SDKs send it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRequest {
    /// One text or up to 2048.
    #[schema(value_type = EmbeddingInputSchema)]
    input: EmbeddingInput,
    /// The served model's id, if given (another is refused).
    model: Option<String>,
    /// How vectors are written (default `float`).
    encoding_format: Option<EncodingFormat>,
    /// The model's dimensions, if given (others are refused).
    dimensions: Option<usize>,
    /// Accepted for compatibility.
    #[expect(
        dead_code,
        reason = "accepted for compatibility; strata does not log per-user ids yet"
    )]
    user: Option<String>,
}

/// Most texts in one embeddings request.
const MAX_INPUTS: usize = 2048;

/// How `POST /v1/embeddings` writes vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// A JSON array of numbers.
    Float,
    /// Base64 of the little-endian f32s.
    Base64,
}

/// A vector as `encoding_format` asked.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Vector {
    /// Numbers.
    Float(Vec<f32>),
    /// Base64 of little-endian f32s.
    Base64(String),
}

/// One embedding.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Embedding {
    /// Always `embedding`.
    object: &'static str,
    /// Position of its text in `input`.
    index: usize,
    /// The vector.
    embedding: Vector,
}

/// Token counts of an embeddings request.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct EmbeddingUsage {
    /// Tokens in the inputs.
    prompt_tokens: usize,
    /// The same (embeddings produce none).
    total_tokens: usize,
}

/// `POST /v1/embeddings`'s answer, as OpenAI's.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct EmbeddingsResponse {
    /// Always `list`.
    object: &'static str,
    /// One per input, in order.
    data: Vec<Embedding>,
    /// The model that embedded them.
    model: String,
    /// Token counts.
    usage: EmbeddingUsage,
}

/// `POST /v1/embeddings`, OpenAI-compatible: `input` string or array, `model`,
/// `encoding_format` (`float` or `base64`), `usage` in the response.
#[utoipa::path(
    post,
    path = "/v1/embeddings",
    operation_id = "create_embeddings",
    tag = "search",
    summary = "Embed texts (OpenAI-compatible)",
    request_body = EmbeddingsRequest,
    responses(
        (status = 200, description = "The embeddings", body = EmbeddingsResponse),
        (status = 400, description = "`malformed_json`"),
        (status = 413, description = "`payload_too_large`"),
        (status = 415, description = "`unsupported_media_type`: not JSON"),
        (status = 404, description = "`model_not_found`"),
        (status = 422, description = "`validation_failed`"),
    ),
)]
pub async fn embeddings(
    State(app): State<AppState>,
    _tenant: Tenant,
    ApiJson(req): ApiJson<EmbeddingsRequest>,
) -> Result<Json<EmbeddingsResponse>, ApiError> {
    let (model, dims) = app.engine.retrieval().embedding_model();
    let model = model.to_owned();
    if let Some(asked) = &req.model
        && asked != &model
    {
        return Err(ApiError::new(
            crate::error::Code::ModelNotFound,
            format!("unknown model {asked:?}; this server embeds with {model:?}"),
        ));
    }
    if let Some(d) = req.dimensions
        && d != dims
    {
        return Err(ApiError::invalid(
            "dimensions",
            format!("{model} produces {dims} dimensions"),
        ));
    }
    let base64 = req.encoding_format == Some(EncodingFormat::Base64);
    let texts = match req.input {
        EmbeddingInput::One(s) => vec![s],
        EmbeddingInput::Many(v) => v,
        EmbeddingInput::Tokens(_) => {
            return Err(ApiError::invalid(
                "input",
                "must be a string or an array of strings (token arrays are not supported)",
            ));
        }
    };
    if texts.is_empty() || texts.len() > MAX_INPUTS {
        return Err(ApiError::invalid(
            "input",
            format!("give 1 to {MAX_INPUTS} texts"),
        ));
    }
    if let Some(i) = texts.iter().position(|t| t.is_empty()) {
        return Err(ApiError::invalid(
            format!("input[{i}]"),
            "must not be empty",
        ));
    }
    let tokens: usize = app.engine.retrieval().count_tokens(&texts)?.iter().sum();
    let vectors = app.engine.retrieval().embed_texts(texts).await?;
    let data: Vec<Embedding> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Vector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Vector::Float(v)
            };
            Embedding {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    Ok(Json(EmbeddingsResponse {
        object: "list",
        data,
        model,
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_shapes() {
        let one: EmbeddingsRequest = serde_json::from_str(r#"{"input":"hi"}"#).unwrap();
        assert!(matches!(one.input, EmbeddingInput::One(_)));
        let many: EmbeddingsRequest = serde_json::from_str(r#"{"input":["a","b"]}"#).unwrap();
        assert!(matches!(many.input, EmbeddingInput::Many(v) if v.len() == 2));
        let toks: EmbeddingsRequest = serde_json::from_str(r#"{"input":[[1,2]]}"#).unwrap();
        assert!(matches!(toks.input, EmbeddingInput::Tokens(_)));
    }

    #[test]
    fn a_body_seen_before_is_the_same_request_and_a_bad_one_is_refused_every_time() {
        let body = |s: &'static str| Bytes::from_static(s.as_bytes());
        let a = parsed(body(r#"{"query":"solar cells","k":3}"#)).unwrap();
        let again = parsed(body(r#"{"query":"solar cells","k":3}"#)).unwrap();
        assert!(
            Arc::ptr_eq(&a, &again),
            "the second parse should be remembered"
        );
        // One byte apart is another request.
        let other = parsed(body(r#"{"query":"solar cells","k":4}"#)).unwrap();
        assert_eq!((a.req.k, other.req.k), (Some(3), Some(4)));
        // Refusals are never remembered: each attempt is parsed and checked again.
        for _ in 0..2 {
            let empty = parsed(body(r#"{"query":"   "}"#)).unwrap_err();
            assert_eq!(empty.code().as_str(), "validation_failed");
            let broken = parsed(body(r#"{"query":"#)).unwrap_err();
            assert_eq!(broken.code().as_str(), "malformed_json");
            let array = parsed(body(r#"["query"]"#)).unwrap_err();
            assert_eq!(array.code().as_str(), "validation_failed");
        }
        // Past the thread's bound the map starts over; what it answers stays right.
        for i in 0..PARSED_PER_THREAD + 10 {
            let b = Bytes::from(format!(r#"{{"query":"q{i}"}}"#));
            assert_eq!(parsed(b).unwrap().req.query, format!("q{i}"));
        }
        assert!(PARSED.with_borrow(HashMap::len) <= PARSED_PER_THREAD);
        // A long body is answered, not remembered.
        let long = Bytes::from(format!(r#"{{"query":"{}"}}"#, "x".repeat(PARSED_MAX_BODY)));
        let first = parsed(long.clone()).unwrap();
        assert!(!Arc::ptr_eq(&first, &parsed(long).unwrap()));
    }
}
