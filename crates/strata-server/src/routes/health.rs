//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::AppState;

/// `GET /healthz`: the process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "operations",
    summary = "Liveness",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Object)),
)]
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the store answers queries; 503 otherwise (and while shutting down), with
/// the reason in the server's log rather than the response.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "operations",
    summary = "Readiness",
    responses(
        (status = 200, description = "`status: ready` and the `store` backend", body = Object),
        (status = 503, description = "`status`: `unavailable` (the store does not answer) or `shutting_down`", body = Object),
    ),
)]
pub async fn readyz(State(app): State<AppState>) -> (StatusCode, Json<Value>) {
    if app.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "shutting_down" })),
        );
    }
    match app.engine.admin().ping().await {
        Ok(_) => (
            StatusCode::OK,
            Json(json!({ "status": "ready", "store": app.engine.admin().backend() })),
        ),
        Err(e) => {
            // The driver's text can name hosts, users and databases: logged, never sent.
            tracing::warn!(error = %e, "readiness check: the store does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "store": app.engine.admin().backend() })),
            )
        }
    }
}
