//! Cross-cutting HTTP behaviour: timing headers, tracing spans, panic containment.

use std::any::Any;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Response};
use axum::middleware::Next;
use axum::response::IntoResponse;
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{MakeSpan, TraceLayer};
use tracing::Span;

use crate::error::{ApiError, Code};

/// Appends `app;dur=<ms>` (time spent inside strata) to `Server-Timing`; handlers may add
/// their own entries first.
pub(crate) async fn server_timing(req: Request, next: Next) -> axum::response::Response {
    let start = Instant::now();
    let mut resp = next.run(req).await;
    let entry = format!("app;dur={}", Millis(start.elapsed()));
    let value = match resp
        .headers()
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
    {
        Some(existing) => format!("{existing}, {entry}"),
        None => entry,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert("server-timing", v);
    }
    resp
}

/// A duration as milliseconds with three decimals, formatted with integer arithmetic
/// (float formatting is a measurable share of a cache hit).
pub(crate) struct Millis(pub(crate) std::time::Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let micros = self.0.as_micros();
        write!(f, "{}.{:03}", micros / 1000, micros % 1000)
    }
}

/// A panic in a handler becomes a logged 500 problem, never a dropped connection.
pub(crate) fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let msg = err
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| err.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown".into());
    tracing::error!(panic = %msg, "handler panicked");
    ApiError::new(
        Code::Internal,
        "an internal error occurred; it has been logged",
    )
    .into_response()
}

#[derive(Clone)]
pub(crate) struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, req: &Request<B>) -> Span {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
        let id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        tracing::info_span!("http", method = %req.method(), route, request_id = id)
    }
}

pub(crate) fn trace_layer() -> TraceLayer<SharedClassifier<ServerErrorsAsFailures>, RequestSpan> {
    TraceLayer::new_for_http().make_span_with(RequestSpan)
}
