//! `POST /v1/search` and the OpenAI-compatible `POST /v1/embeddings`.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use strata_engine::KIND_SEARCH;
use strata_engine::search::SearchRequest;

use crate::error::ApiError;
use crate::extract::{ApiJson, IfNoneMatch, Tenant};
use crate::{AppState, cached};

/// `POST /v1/search` {query, k, filter{tags, document_ids}, min_score, stream}.
/// Cached per tenant by every parameter that changes the answer; any write of the tenant's
/// invalidates it. With `stream: true` the answer is NDJSON, one hit per line.
pub async fn search(
    State(app): State<AppState>,
    tenant: Tenant,
    inm: IfNoneMatch,
    ApiJson(req): ApiJson<SearchRequest>,
) -> Result<Response, ApiError> {
    let stream = req.stream;
    let material = search_material(&req, app.engine.search_fingerprint());
    app.warmer.record(&tenant.0, &material, &req);
    let lookup = cached_search(&app, &tenant.0, &material, req).await?;
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

/// A search answer (JSON body) through the cache: what the handler serves and what warming
/// recomputes.
pub(crate) async fn cached_search(
    app: &AppState,
    tenant: &strata_engine::TenantId,
    material: &[u8],
    req: SearchRequest,
) -> Result<strata_cache::Lookup, ApiError> {
    // A tag filter makes the answer depend on tags, which only the catalogue scope follows.
    let scope = if req.filter.tags.is_empty() {
        app.engine.scopes().search(tenant)
    } else {
        app.engine.scopes().catalog(tenant)
    };
    app.engine
        .cache()
        .get_or_compute(KIND_SEARCH, &scope, material, || async {
            cached::body(&app.engine.search(tenant, req).await?).map(cached::seal)
        })
        .await
}

/// Every parameter that changes a search's answer, canonicalised (trimmed query, sorted
/// filters), so equivalent requests share an entry and different ones never do.
pub(crate) fn search_material(req: &SearchRequest, engine: &str) -> Vec<u8> {
    /// Borrowed fields in a fixed order; serialised straight to bytes, no JSON tree.
    #[derive(serde::Serialize)]
    struct Canonical<'a> {
        engine: &'a str,
        query: &'a str,
        k: usize,
        tags: Vec<&'a str>,
        document_ids: Vec<strata_engine::DocumentId>,
        min_score: Option<u32>,
    }
    let mut tags: Vec<&str> = req.filter.tags.iter().map(|t| t.trim()).collect();
    tags.sort_unstable();
    tags.dedup();
    let mut document_ids = req.filter.document_ids.clone();
    document_ids.sort_unstable_by_key(ToString::to_string);
    document_ids.dedup();
    serde_json::to_vec(&Canonical {
        engine,
        query: req.query.trim(),
        k: req.k.unwrap_or(strata_engine::search::DEFAULT_K),
        tags,
        document_ids,
        min_score: req.min_score.map(f32::to_bits),
    })
    .unwrap_or_default()
}

/// OpenAI's `input`: a string or an array of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    One(String),
    /// Several texts.
    Many(Vec<String>),
    /// Token arrays (not supported: strata tokenizes itself).
    Tokens(Vec<Value>),
}

/// `POST /v1/embeddings` body, as the OpenAI SDKs send it.
#[derive(Debug, Deserialize)]
pub struct EmbeddingsRequest {
    input: EmbeddingInput,
    model: Option<String>,
    encoding_format: Option<String>,
    dimensions: Option<usize>,
    #[expect(
        dead_code,
        reason = "accepted for compatibility; strata does not log per-user ids yet"
    )]
    user: Option<String>,
}

/// Most texts in one embeddings request.
const MAX_INPUTS: usize = 2048;

/// `POST /v1/embeddings`, OpenAI-compatible: `input` string or array, `model`,
/// `encoding_format` (`float` or `base64`), `usage` in the response.
pub async fn embeddings(
    State(app): State<AppState>,
    _tenant: Tenant,
    ApiJson(req): ApiJson<EmbeddingsRequest>,
) -> Result<Json<Value>, ApiError> {
    let (model, dims) = app.engine.embedding_model();
    let model = model.to_owned();
    if let Some(asked) = &req.model
        && asked != &model
    {
        return Err(ApiError::invalid(
            "model",
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
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("{other:?} is not float or base64"),
            ));
        }
    };
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
    let tokens: usize = app.engine.count_tokens(&texts)?.iter().sum();
    let vectors = app.engine.embed_texts(texts).await?;
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    })))
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
}

#[cfg(test)]
mod material_tests {
    use super::*;

    fn req(v: Value) -> SearchRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn every_parameter_that_changes_the_answer_changes_the_key() {
        let base = json!({"query": "cats", "k": 5, "filter": {"tags": ["a"]}, "min_score": 0.2});
        let m = search_material(&req(base.clone()), "m/ef64");
        assert_ne!(m, search_material(&req(base.clone()), "other-model/ef64"));
        assert_ne!(m, search_material(&req(base.clone()), "m/ef128"));
        for changed in [
            json!({"query": "dogs", "k": 5, "filter": {"tags": ["a"]}, "min_score": 0.2}),
            json!({"query": "cats", "k": 6, "filter": {"tags": ["a"]}, "min_score": 0.2}),
            json!({"query": "cats", "k": 5, "filter": {"tags": ["b"]}, "min_score": 0.2}),
            json!({"query": "cats", "k": 5, "filter": {"tags": ["a"], "document_ids": ["01a212e0-4342-7472-9d1f-3378d36fcc05"]}, "min_score": 0.2}),
            json!({"query": "cats", "k": 5, "filter": {"tags": ["a"]}, "min_score": 0.3}),
            json!({"query": "cats", "k": 5, "filter": {"tags": ["a"]}}),
        ] {
            assert_ne!(
                m,
                search_material(&req(changed.clone()), "m/ef64"),
                "{changed}"
            );
        }
    }

    #[test]
    fn equivalent_requests_share_the_key() {
        let a = json!({"query": " cats ", "filter": {"tags": ["b", "a", "a"]}, "stream": true});
        let b = json!({"query": "cats", "k": 10, "filter": {"tags": ["a", "b"]}});
        assert_eq!(search_material(&req(a), "m"), search_material(&req(b), "m"));
    }
}
