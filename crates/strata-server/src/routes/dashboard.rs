//! `GET /dashboard`: the live operations page, served from assets compiled into the binary
//! (no CDN, no request to anywhere but this server), and `GET /dashboard/data`, its feed.
//!
//! The page and its script hold no data, so they are served to anyone; everything the page
//! shows comes from `/dashboard/data`, which needs the admin role (with no authentication
//! configured, every caller is the local admin). The page asks for a credential when the
//! feed answers 401 or 403 and keeps it in the browser tab's session storage only.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::AppState;
use crate::caller::Admin;

const PAGE: &str = include_str!("../../assets/dashboard/index.html");
const SCRIPT: &str = include_str!("../../assets/dashboard/app.js");
const STYLE: &str = include_str!("../../assets/dashboard/app.css");

/// Only this server's own script, style and feed; nothing inline, no frames.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(POLICY),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// `GET /dashboard`
#[utoipa::path(
    get,
    path = "/dashboard",
    operation_id = "dashboard",
    tag = "operations",
    summary = "The live dashboard (a page for a browser)",
    description = "Throughput, latency percentiles, error rate, cache hit ratio per kind, \
                   pool, job queue, model utilisation, memory and the alert rules' breaches, \
                   refreshed every second from `/dashboard/data` (admin).",
    responses((status = 200, description = "The page", content_type = "text/html")),
)]
pub async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

/// `GET /dashboard/app.js`
#[utoipa::path(
    get,
    path = "/dashboard/app.js",
    operation_id = "dashboard_script",
    tag = "operations",
    responses((status = 200, description = "The page's script", content_type = "text/javascript")),
)]
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /dashboard/app.css`
#[utoipa::path(
    get,
    path = "/dashboard/app.css",
    operation_id = "dashboard_style",
    tag = "operations",
    responses((status = 200, description = "The page's style sheet", content_type = "text/css")),
)]
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// `GET /dashboard/data` (admin): the performance summary and the health verdicts in one
/// answer.
#[utoipa::path(
    get,
    path = "/dashboard/data",
    operation_id = "dashboard_data",
    tag = "operations",
    summary = "The dashboard's feed (admin)",
    description = "`summary` as `/v1/performance/metrics/summary` and `health` as \
                   `/v1/performance/system/health`.",
    responses(
        (status = 200, description = "`summary` and `health`", body = Object),
        (status = 401, description = "`unauthenticated`, `invalid_token` or `token_expired`"),
        (status = 403, description = "`forbidden`: the caller is not an admin"),
    ),
)]
pub async fn data(State(app): State<AppState>, _admin: Admin) -> Json<Value> {
    let (summary, health) =
        tokio::join!(super::summary::summary(&app), super::summary::health(&app));
    Json(json!({ "summary": summary, "health": health }))
}
