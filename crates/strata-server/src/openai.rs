//! OpenAI's error shape on the OpenAI-compatible routes (`/v1/chat/completions`,
//! `/v1/embeddings`, `/v1/models`): every problem+json answer of theirs, whoever produced it
//! (a handler, an extractor, admission control), is rewritten into
//! `{"error": {"message", "type", "param", "code"}}` with OpenAI's status for it, so the
//! official SDKs raise their typed errors with strata's message. A budget refusal also
//! carries `x-should-retry: false`, which the SDKs honour instead of retrying a 429.
//!
//! Other routes pass through untouched, without an allocation.

use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Response, StatusCode, header};
use futures_util::future::{BoxFuture, Either};
use serde_json::{Value, json};

/// The routes that answer errors in OpenAI's shape.
pub const ROUTES: [&str; 3] = ["/v1/chat/completions", "/v1/embeddings", "/v1/models"];

/// An error in OpenAI's shape (the schema of the OpenAI-compatible routes' errors).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct OpenAiError {
    /// The error.
    error: OpenAiErrorBody,
}

/// The inside of [`OpenAiError`].
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct OpenAiErrorBody {
    /// What went wrong.
    message: String,
    /// OpenAI's error type: `invalid_request_error`, `authentication_error`,
    /// `permission_error`, `rate_limit_error`, `insufficient_quota`, `server_error`, or an
    /// upstream's own.
    #[serde(rename = "type")]
    kind: String,
    /// The request field at fault, if one is.
    param: Option<String>,
    /// strata's stable code (see `Problem`), or an upstream's own.
    code: Option<String>,
}

/// Largest problem body rewritten (problems are small; anything else passes as it is).
const MAX_PROBLEM: usize = 64 * 1024;

/// The layer (see the module doc).
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenAiErrorsLayer;

impl<S> tower::Layer<S> for OpenAiErrorsLayer {
    type Service = OpenAiErrors<S>;
    fn layer(&self, inner: S) -> Self::Service {
        OpenAiErrors { inner }
    }
}

/// See [`OpenAiErrorsLayer`].
#[derive(Clone, Debug)]
pub struct OpenAiErrors<S> {
    inner: S,
}

impl<S> tower::Service<Request> for OpenAiErrors<S>
where
    S: tower::Service<Request, Response = Response<Body>> + Send,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response<Body>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let path = req.uri().path();
        if !ROUTES.contains(&path.trim_end_matches('/')) {
            return Either::Left(self.inner.call(req));
        }
        let fut = self.inner.call(req);
        Either::Right(Box::pin(async move {
            let resp = fut.await?;
            Ok(rewrite(resp).await)
        }))
    }
}

/// A problem response in OpenAI's shape; anything else as it is.
pub async fn rewrite(resp: Response<Body>) -> Response<Body> {
    let problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !problem {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_PROBLEM).await else {
        parts.status = StatusCode::INTERNAL_SERVER_ERROR;
        return Response::from_parts(parts, Body::empty());
    };
    let p: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let code = p.get("code").and_then(Value::as_str).unwrap_or("internal");
    let status = match parts.status {
        // OpenAI answers a bad field with 400.
        StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
        s => s,
    };
    let kind = match (status.as_u16(), code) {
        (401, _) => "authentication_error",
        (403, _) => "permission_error",
        (429, "budget_exceeded") => "insufficient_quota",
        (429, _) => "rate_limit_error",
        (s, _) if s >= 500 => "server_error",
        _ => "invalid_request_error",
    };
    let message = p
        .get("detail")
        .and_then(Value::as_str)
        .unwrap_or("the request failed");
    let body = json!({"error": {
        "message": message,
        "type": kind,
        "param": p.get("field").cloned().unwrap_or(Value::Null),
        "code": code,
    }});
    parts.status = status;
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    if code == "budget_exceeded" {
        parts
            .headers
            .insert("x-should-retry", HeaderValue::from_static("false"));
    }
    Response::from_parts(parts, Body::from(body.to_string()))
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse as _;

    use super::*;
    use crate::error::{ApiError, Code};

    async fn shaped(e: ApiError) -> (StatusCode, Value, Option<HeaderValue>) {
        let r = rewrite(e.into_response()).await;
        let status = r.status();
        let retry = r.headers().get("x-should-retry").cloned();
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap(), retry)
    }

    #[tokio::test]
    async fn problems_become_openai_errors() {
        let (s, v, _) = shaped(ApiError::invalid("model", "unknown model \"x\"")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "model");
        assert_eq!(v["error"]["code"], "validation_failed");
        let (s, v, retry) = shaped(ApiError::new(Code::BudgetExceeded, "spent")).await;
        assert_eq!(
            (s.as_u16(), v["error"]["type"].as_str()),
            (429, Some("insufficient_quota"))
        );
        assert_eq!(retry, Some(HeaderValue::from_static("false")));
        let (s, v, _) = shaped(ApiError::new(Code::ModelNotFound, "no")).await;
        assert_eq!(
            (s.as_u16(), v["error"]["code"].as_str()),
            (404, Some("model_not_found"))
        );
        let (s, v, _) = shaped(ApiError::new(Code::InvalidToken, "bad")).await;
        assert_eq!(
            (s.as_u16(), v["error"]["type"].as_str()),
            (401, Some("authentication_error"))
        );
    }
}
