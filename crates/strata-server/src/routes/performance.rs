//! `/v1/performance/*`: cache and database statistics, clearing the cache and optimising
//! the database.
//!
//! Clearing and optimising act on every tenant and need the admin role. Statistics are
//! open to any caller, but a non-admin sees only what belongs to no tenant: counters
//! summed over all tenants, the pool, the model; never tables (their row counts are every
//! tenant's data), recent statements, or how many tenants the warmer tracks.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};
use strata_engine::TenantId;

use crate::AppState;
use crate::caller::{Admin, Caller};
use crate::error::ApiError;

/// `GET /v1/performance/cache/stats`: hits, misses, hit ratio, latency and bytes per kind,
/// L1 size, evictions, expirations, invalidations.
#[utoipa::path(
    get,
    path = "/v1/performance/cache/stats",
    operation_id = "cache_stats",
    tag = "performance",
    summary = "Cache statistics",
    description = "`cache`: per kind hits, misses, hit ratio, latency and bytes; L1 size, \
                   evictions, expirations, invalidations, the L2 breaker. Admins also get \
                   `warming` (tracked tenants and queries).",
    responses((status = 200, description = "The statistics", body = Object)),
)]
pub async fn cache_stats(State(app): State<AppState>, caller: Caller) -> Json<Value> {
    let cache = app.engine.cache_policy().cache().stats();
    if caller.is_admin() {
        let memories = app.engine.memories();
        let (dropped, written) = memories.access_counts();
        return Json(json!({
            "cache": cache,
            "warming": app.warmer.stats(),
            "memory_working_sets": memories.working_set_stats(),
            "memory_access": { "recorded": written, "dropped_batches": dropped },
        }));
    }
    Json(json!({ "cache": cache }))
}

/// `GET /v1/performance/model/stats`: the embedding model's id and, for the local model, its
/// forward passes, texts, failed passes, seconds inside passes and requests queued for one.
#[utoipa::path(
    get,
    path = "/v1/performance/model/stats",
    operation_id = "model_stats",
    tag = "performance",
    summary = "Embedding model statistics",
    description = "`model` (its id), `local` (whether it runs in this process) and, for the \
                   local model, `stats`: passes, texts, failed passes, busy seconds, queue.",
    responses((status = 200, description = "The statistics", body = Object)),
)]
pub async fn model_stats(State(app): State<AppState>, _caller: Caller) -> Json<Value> {
    let (model, stats) = app.engine.retrieval().model_stats();
    Json(json!({ "model": model, "local": stats.is_some(), "stats": stats }))
}

/// `GET /v1/performance/gateway/stats`: the LLM gateway's counters in this process and each
/// upstream's breaker.
#[utoipa::path(
    get,
    path = "/v1/performance/gateway/stats",
    operation_id = "gateway_stats",
    tag = "performance",
    summary = "LLM gateway statistics",
    description = "Chat requests, cache hits, joined flights, upstream calls and failures, \
                   broken and cancelled streams, budget refusals, calls in flight, and each \
                   upstream's breaker (this process's counters).",
    responses((status = 200, description = "The statistics", body = Object)),
)]
pub async fn gateway_stats(State(app): State<AppState>, _caller: Caller) -> Json<Value> {
    Json(json!(app.gateway.stats()))
}

/// Body of `POST /v1/performance/cache/clear`; empty clears everything.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearRequest {
    /// Only entries of this kind.
    kind: Option<String>,
    /// Only entries derived from this tenant's data.
    tenant: Option<String>,
}

/// `POST /v1/performance/cache/clear` (admin): by kind, by tenant, or all.
#[utoipa::path(
    post,
    path = "/v1/performance/cache/clear",
    operation_id = "clear_cache",
    tag = "performance",
    summary = "Clear the cache (admin)",
    description = "With `kind`, entries of that kind; with `tenant`, entries derived from that \
                   tenant's data (on every instance); with neither (or an empty body), all.",
    request_body(content = Option<ClearRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "What was removed", body = Object),
        (status = 400, description = "`malformed_json`"),
        (status = 403, description = "`forbidden`: the caller is not an admin"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`: an unknown kind, a bad tenant, or both given"),
    ),
)]
pub async fn cache_clear(
    State(app): State<AppState>,
    _admin: Admin,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: ClearRequest = if body.is_empty() {
        ClearRequest::default()
    } else {
        crate::extract::require_object(&body)?;
        serde_json::from_slice(&body).map_err(|e| {
            if e.is_syntax() || e.is_eof() {
                ApiError::new(crate::error::Code::MalformedJson, e.to_string())
            } else {
                ApiError::invalid("body", e.to_string())
            }
        })?
    };
    let cache = app.engine.cache_policy().cache();
    if let Some(kind) = &req.kind
        && !strata_engine::default_cache_kinds()
            .iter()
            .any(|k| k.name == kind)
    {
        return Err(ApiError::invalid(
            "kind",
            format!("unknown cache kind {kind:?}"),
        ));
    }
    if let Some(t) = &req.tenant {
        let tenant = TenantId::parse(t)?;
        if req.kind.is_some() {
            return Err(ApiError::invalid("tenant", "give kind or tenant, not both"));
        }
        app.engine
            .cache_policy()
            .changed(&tenant, strata_engine::policy::Changed::Everything)
            .await;
        return Ok(Json(json!({ "invalidated_tenant": t })));
    }
    let removed = cache.clear(req.kind.as_deref()).await;
    if req.kind.is_none() || req.kind.as_deref() == Some(strata_engine::KIND_MEMORY) {
        app.engine.memories().clear_working_sets();
    }
    if req.kind.is_none() || req.kind.as_deref() == Some("llm_response") {
        app.gateway.clear_semantic();
    }
    Ok(Json(json!({
        "removed_entries": removed.l1 + removed.l2,
        "removed_l1": removed.l1,
        "removed_l2": removed.l2,
        "kind": req.kind
    })))
}

/// `GET /v1/performance/database/stats`: the pool (size, idle, in use, waiters, acquire
/// latency), and for admins the tables and indexes with their sizes and use, and recent
/// slow statements.
#[utoipa::path(
    get,
    path = "/v1/performance/database/stats",
    operation_id = "database_stats",
    tag = "performance",
    summary = "Database statistics",
    description = "`database`: the backend and its pool (size, idle, in use, waiters, acquire \
                   latency); admins also get tables and indexes with sizes and use, recent \
                   slow statements, `recommendations` computed from the catalog (each with \
                   `kind`: sequential_scans, unused_index, dead_rows, missing_statistics or \
                   free_pages; `target`, `finding` with its figures, and `action`), and on the \
                   embedded default the in-process lexical index's size (`lexical_index`: \
                   texts, terms, postings, heap_bytes).",
    responses((status = 200, description = "The statistics", body = Object)),
)]
pub async fn database_stats(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    if caller.is_admin() {
        return Ok(Json(
            json!({ "database": app.engine.admin().database_stats().await? }),
        ));
    }
    Ok(Json(json!({
        "database": { "backend": app.engine.admin().backend(), "pool": app.engine.admin().pool_stats() }
    })))
}

/// `POST /v1/performance/database/optimize` (admin): ANALYZE, and VACUUM / REINDEX where
/// warranted (SQLite: ANALYZE, `PRAGMA optimize`, a WAL checkpoint).
#[utoipa::path(
    post,
    path = "/v1/performance/database/optimize",
    operation_id = "optimize_database",
    tag = "performance",
    summary = "Optimise the database (admin)",
    responses(
        (status = 200, description = "`backend`, the `statements` run and `elapsed_ms`", body = Object),
        (status = 403, description = "`forbidden`: the caller is not an admin"),
    ),
)]
pub async fn database_optimize(
    State(app): State<AppState>,
    _admin: Admin,
) -> Result<Json<Value>, ApiError> {
    let started = std::time::Instant::now();
    let ran = app.engine.admin().optimize_database().await?;
    Ok(Json(json!({
        "backend": app.engine.admin().backend(),
        "statements": ran,
        "elapsed_ms": started.elapsed().as_secs_f64() * 1000.0,
    })))
}
