//! `POST /v1/search` and the OpenAI-compatible `POST /v1/embeddings`.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use strata_engine::search::SearchRequest;

use crate::error::ApiError;
use crate::extract::{ApiJson, Preconditions, Tenant};
use crate::{AppState, cached};

/// `POST /v1/search` {query, k, filter{tags, document_ids}, min_score, stream}.
/// Cached per tenant by every parameter that changes the answer; any write of the tenant's
/// invalidates it. With `stream: true` the answer is NDJSON, one hit per line.
pub async fn search(
    State(app): State<AppState>,
    tenant: Tenant,
    inm: Preconditions,
    ApiJson(req): ApiJson<SearchRequest>,
) -> Result<Response, ApiError> {
    let stream = req.stream;
    let read = app.engine.cache_policy().search(&tenant.0, &req);
    app.warmer.record(&tenant.0, &read.material, &req);
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
    let (model, dims) = app.engine.retrieval().embedding_model();
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
    let tokens: usize = app.engine.retrieval().count_tokens(&texts)?.iter().sum();
    let vectors = app.engine.retrieval().embed_texts(texts).await?;
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
