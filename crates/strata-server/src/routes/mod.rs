//! Route handlers: parse, call the engine, shape the response. No SQL, no domain logic.
//!
//! [`api`] is the one place routes are registered: each `routes!` call adds a handler to the
//! router and its `#[utoipa::path]` description to the OpenAPI document together.

pub mod conversations;
pub mod dashboard;
pub mod documents;
pub mod gateway;
pub mod health;
pub mod jobs;
pub mod mcp;
pub mod memories;
pub mod metrics;
pub mod performance;
pub mod search;
pub mod sessions;
pub mod summaries;
pub mod summary;

use axum::extract::DefaultBodyLimit;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{AppState, openapi};

/// Every route with its description. `upload_limit` bounds `POST /v1/documents` bodies;
/// the other bodies get the router-wide JSON limit.
pub fn api(upload_limit: usize) -> OpenApiRouter<AppState> {
    let (schemas, paths, documents_root) = routes!(documents::list, documents::upload);
    let documents_root = (
        schemas,
        paths,
        documents_root.layer(DefaultBodyLimit::max(upload_limit)),
    );
    OpenApiRouter::with_openapi(<openapi::ApiDoc as utoipa::OpenApi>::openapi())
        .routes(documents_root)
        .routes(routes!(documents::get, documents::patch, documents::delete))
        .routes(routes!(documents::file))
        .routes(routes!(documents::chunks))
        .routes(routes!(summaries::request, summaries::get))
        .routes(routes!(documents::tags))
        .routes(routes!(jobs::list))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::events))
        .routes(routes!(memories::add, memories::list))
        .routes(routes!(memories::get, memories::patch, memories::delete))
        .routes(routes!(memories::history))
        .routes(routes!(memories::search))
        .routes(routes!(memories::preload))
        .routes(routes!(mcp::post))
        .routes(routes!(sessions::start, sessions::list))
        .routes(routes!(sessions::events))
        .routes(routes!(sessions::get))
        .routes(routes!(sessions::end))
        .routes(routes!(search::search))
        .routes(routes!(search::embeddings))
        .routes(routes!(gateway::chat))
        .routes(routes!(gateway::models))
        .routes(routes!(gateway::budget))
        .routes(routes!(gateway::set_budget))
        .routes(routes!(gateway::usage))
        .routes(routes!(conversations::create, conversations::list))
        .routes(routes!(conversations::get, conversations::delete))
        .routes(routes!(conversations::messages, conversations::post))
        .routes(routes!(performance::cache_stats))
        .routes(routes!(performance::model_stats))
        .routes(routes!(performance::gateway_stats))
        .routes(routes!(performance::cache_clear))
        .routes(routes!(performance::database_stats))
        .routes(routes!(performance::database_optimize))
        .routes(routes!(summary::metrics_summary))
        .routes(routes!(summary::system_health))
        .routes(routes!(dashboard::page))
        .routes(routes!(dashboard::script))
        .routes(routes!(dashboard::style))
        .routes(routes!(dashboard::data))
        .routes(routes!(metrics::metrics))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(openapi::document))
        .routes(routes!(openapi::docs))
}

#[cfg(test)]
mod tests {
    /// The router gets its routes from [`super::api`] only, so every route is in the OpenAPI
    /// document: no other source file of this crate builds routes with axum's own API (the
    /// integration test `openapi` checks the document against the served routes).
    #[test]
    fn routes_are_registered_only_through_api() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![src];
        let mut checked = 0;
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(
                    std::fs::read_dir(&path)
                        .expect("readable source directory")
                        .map(|e| e.expect("directory entry").path()),
                );
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("routes/mod.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("readable source file");
            for api in [
                "axum::routing",
                "Router::new",
                ".route(",
                ".nest(",
                ".merge(",
                ".route_service(",
                "OpenApiRouter",
            ] {
                assert!(
                    !text.contains(api),
                    "{} uses {api}: register routes in routes::api",
                    path.display()
                );
            }
            checked += 1;
        }
        assert!(checked > 10, "{checked} files");
    }
}
