//! The OpenAI-compatible gateway routes: `POST /v1/chat/completions` and `GET /v1/models`
//! (see `strata-gateway`), and the budget and usage routes of its tenants. Errors on the
//! OpenAI-compatible routes are rewritten into OpenAI's shape by [`crate::openai`].

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use serde::Deserialize;
use strata_engine::budget::UsageRow;
use strata_engine::store::UsageFilter;
use strata_engine::{BudgetView, LimitSpec, TenantId};
use strata_gateway::{CacheStatus, Chat, GatewayError, Reply, SemanticNote};

use crate::caller::{Admin, Caller};
use crate::error::{ApiError, Code};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Preconditions, Tenant};
use crate::{AppState, cached};

/// `POST /v1/chat/completions`
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    operation_id = "create_chat_completion",
    tag = "gateway",
    summary = "Chat completion (OpenAI-compatible proxy)",
    description = "Proxied to the configured upstreams in fallback order, as JSON or (with \
                   `stream: true`) Server-Sent Events relayed chunk by chunk; every field the \
                   upstream sends passes through. Complete answers are cached per tenant, keyed \
                   by the upstream model and every parameter that shapes the answer (`X-Cache`); \
                   `Cache-Control: no-cache | no-store | max-age=N` (or the body's \
                   `strata.cache_control`) controls that per request. The semantic cache \
                   (`strata.semantic_cache`: `on`, `shadow` or `off`; `strata.semantic_threshold`: \
                   0-1) answers a prompt near an earlier one in meaning (`X-Cache: HIT-SEMANTIC`, \
                   `X-Semantic-Similarity`, `X-Semantic-Entry`; in shadow mode \
                   `X-Semantic-Shadow`). Identical concurrent requests share one upstream call, \
                   across instances too. The tenant's budget is reserved before the call and \
                   settled to the real usage after it. Errors have OpenAI's shape.",
    request_body(content = Object, description = "An OpenAI chat completion request", content_type = "application/json"),
    responses(
        (status = 200, description = "A `chat.completion`, or `text/event-stream` chunks", body = Object),
        (status = 400, description = "`invalid_request_error`: a malformed request"),
        (status = 404, description = "`model_not_found`: no upstream serves the model"),
        (status = 413, description = "`payload_too_large`"),
        (status = 415, description = "`unsupported_media_type`: not JSON"),
        (status = 429, description = "`budget_exceeded` (with `x-should-retry: false`) or `rate_limited`"),
        (status = 502, description = "`upstream_error`: the upstream's answer broke off"),
        (status = 503, description = "`upstream_unavailable`: no upstream could be reached"),
        (status = 504, description = "`upstream_timeout`: the upstream did not answer in time"),
    ),
)]
pub async fn chat(
    State(app): State<AppState>,
    tenant: Tenant,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json {
        return Err(ApiError::new(
            Code::UnsupportedMediaType,
            "expected Content-Type: application/json",
        ));
    }
    let control = headers
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok());
    let chat = Chat::parse(&body, control).map_err(gateway_error)?;
    let reply = app
        .gateway
        .chat(&tenant.0, chat)
        .await
        .map_err(gateway_error)?;
    Ok(match reply {
        Reply::Json {
            body,
            cache,
            semantic,
        } => {
            let mut r = Response::new(Body::from(body));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            mark(r, cache, semantic)
        }
        Reply::Stream {
            events,
            cache,
            semantic,
        } => {
            let stream = futures_util::StreamExt::map(events, Ok::<_, std::convert::Infallible>);
            let mut r = Response::new(Body::from_stream(stream));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            mark(r, cache, semantic)
        }
    })
}

/// `X-Cache`; a semantic match's similarity and entry id (`X-Semantic-Similarity`,
/// `X-Semantic-Entry`), or in shadow mode what would have been served (`X-Semantic-Shadow`).
fn mark(mut r: Response, cache: CacheStatus, semantic: Option<SemanticNote>) -> Response {
    let h = r.headers_mut();
    h.insert(
        crate::cached::X_CACHE,
        HeaderValue::from_static(cache.header()),
    );
    if let Some(n) = semantic {
        let similarity = format!("{:.4}", n.similarity);
        if n.served {
            if let Ok(v) = HeaderValue::from_str(&similarity) {
                h.insert("x-semantic-similarity", v);
            }
            if let Ok(v) = HeaderValue::from_str(&n.entry_hex()) {
                h.insert("x-semantic-entry", v);
            }
        } else if let Ok(v) =
            HeaderValue::from_str(&format!("similarity={similarity}; entry={}", n.entry_hex()))
        {
            h.insert("x-semantic-shadow", v);
        }
    }
    match cache {
        CacheStatus::Joined => {
            h.insert("x-gateway-flight", HeaderValue::from_static("joined"));
        }
        CacheStatus::JoinedRemote => {
            h.insert(
                "x-gateway-flight",
                HeaderValue::from_static("joined-remote"),
            );
        }
        _ => {}
    }
    r
}

/// A gateway error as a problem (rewritten into OpenAI's shape on the way out); an
/// upstream's own refusal passes through with its status and body.
pub(crate) fn gateway_error(e: GatewayError) -> ApiError {
    match e {
        GatewayError::Invalid { param, message } => ApiError::invalid(param, message),
        GatewayError::ModelNotFound(why) => ApiError::new(Code::ModelNotFound, why),
        GatewayError::Budget {
            period,
            retry_after_secs,
        } => ApiError::new(
            Code::BudgetExceeded,
            format!("the tenant's {period} budget has no room for this call"),
        )
        .retry_after(u32::try_from(retry_after_secs).unwrap_or(u32::MAX)),
        GatewayError::Upstream { status, body } => ApiError::passthrough(status, body),
        GatewayError::Unavailable(why) => {
            ApiError::new(Code::UpstreamUnavailable, why).retry_after(1)
        }
        GatewayError::Timeout(why) => ApiError::new(Code::UpstreamTimeout, why),
        GatewayError::Broken(why) => ApiError::new(Code::UpstreamError, why),
        GatewayError::Engine(e) => e.into(),
    }
}

/// One model in `GET /v1/models`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Model {
    /// The id to ask for.
    id: String,
    /// Always `model`.
    object: &'static str,
    /// Unknown: 0.
    created: i64,
    /// The upstream serving it.
    owned_by: String,
}

/// `GET /v1/models`'s answer, as OpenAI's.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ModelList {
    /// Always `list`.
    object: &'static str,
    /// The gateway's models, then the local embedding model.
    data: Vec<Model>,
}

/// `GET /v1/models`
#[utoipa::path(
    get,
    path = "/v1/models",
    operation_id = "list_models",
    tag = "gateway",
    summary = "List models (OpenAI-compatible)",
    description = "The chat models the configured upstreams serve (their listed models and \
                   aliases; the live list of an upstream configured for any model), and the \
                   embedding model of `POST /v1/embeddings`.",
    responses((status = 200, description = "The models", body = ModelList)),
)]
pub async fn models(State(app): State<AppState>, _tenant: Tenant) -> Response {
    let mut data: Vec<Model> = app
        .gateway
        .models()
        .await
        .into_iter()
        .map(|(id, owned_by)| Model {
            id,
            object: "model",
            created: 0,
            owned_by,
        })
        .collect();
    let (embedding, _) = app.engine.retrieval().embedding_model();
    data.push(Model {
        id: embedding.to_owned(),
        object: "model",
        created: 0,
        owned_by: "strata".into(),
    });
    axum::Json(ModelList {
        object: "list",
        data,
    })
    .into_response()
}

/// Query of `GET /v1/budget`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BudgetQuery {
    /// Another tenant's budget (admins only).
    tenant: Option<String>,
}

/// `GET /v1/budget` (cached per tenant in the `budget_status` kind)
#[utoipa::path(
    get,
    path = "/v1/budget",
    operation_id = "get_budget",
    tag = "gateway",
    summary = "Budget status",
    description = "The caller's budget windows (admins: any tenant's, with `tenant`): limits, \
                   what each window has settled and what calls in flight hold reserved.",
    params(BudgetQuery, crate::openapi::IfNoneMatch),
    responses(
        (status = 200, description = "The windows", body = BudgetView, headers(("etag" = String))),
        (status = 304, description = "Unchanged since the given ETag"),
        (status = 403, description = "`forbidden`: another tenant's budget, not an admin"),
        (status = 422, description = "`validation_failed`: a bad tenant"),
    ),
)]
pub async fn budget(
    State(app): State<AppState>,
    caller: Caller,
    inm: Preconditions,
    ApiQuery(q): ApiQuery<BudgetQuery>,
) -> Result<Response, ApiError> {
    let tenant = subject(&caller, q.tenant.as_deref())?;
    let read = app.engine.cache_policy().budget_status(&tenant);
    cached::json(&app, &inm, read, || async {
        cached::body(&app.engine.budgets().status(&tenant).await?)
    })
    .await
}

/// The tenant a budget request is about: the caller's own, or (admins) the one named.
fn subject(caller: &Caller, named: Option<&str>) -> Result<TenantId, ApiError> {
    match named {
        None => Ok(caller.tenant.clone()),
        Some(t) if caller.is_admin() => TenantId::parse(t).map_err(ApiError::from),
        Some(_) => Err(ApiError::new(
            Code::Forbidden,
            "only admins may read another tenant's budget",
        )),
    }
}

/// `PUT /v1/budgets/{tenant}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetBudget {
    /// Limits to set, one per period; a limit with neither maximum removes that period's.
    limits: Vec<LimitSpec>,
}

/// The `{tenant}` of `PUT /v1/budgets/{tenant}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TenantPath {
    /// The tenant.
    tenant: String,
}

/// `PUT /v1/budgets/{tenant}` (admin)
#[utoipa::path(
    put,
    path = "/v1/budgets/{tenant}",
    operation_id = "set_budget",
    tag = "gateway",
    summary = "Set a tenant's budget (admin)",
    description = "Sets the tenant's token and cost limits per minute, day or month. Limits \
                   are enforced at admission: each call reserves its estimate (prompt plus \
                   `max_tokens`) atomically and settles to its real usage when it ends, so \
                   concurrent calls never spend past a limit.",
    params(TenantPath),
    request_body = SetBudget,
    responses(
        (status = 200, description = "The tenant's budget now", body = BudgetView),
        (status = 400, description = "`malformed_json`"),
        (status = 415, description = "`unsupported_media_type`: not JSON"),
        (status = 403, description = "`forbidden`: the caller is not an admin"),
        (status = 422, description = "`validation_failed`: a bad tenant or limit"),
    ),
)]
pub async fn set_budget(
    State(app): State<AppState>,
    _admin: Admin,
    ApiPath(path): ApiPath<TenantPath>,
    ApiJson(req): ApiJson<SetBudget>,
) -> Result<Response, ApiError> {
    let tenant = TenantId::parse(&path.tenant)?;
    let budgets = app.engine.budgets();
    budgets.set_limits(&tenant, &req.limits).await?;
    Ok(axum::Json(budgets.status(&tenant).await?).into_response())
}

/// Query of `GET /v1/usage`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Page size (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// First day, inclusive (`YYYY-MM-DD`, UTC).
    from: Option<String>,
    /// Last day, inclusive.
    to: Option<String>,
    /// Only this upstream model.
    model: Option<String>,
    /// Another tenant's usage (admins only).
    tenant: Option<String>,
}

/// A page of usage.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct UsagePage {
    /// By day, then model, descending.
    items: Vec<UsageRow>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// `GET /v1/usage`
#[utoipa::path(
    get,
    path = "/v1/usage",
    operation_id = "list_usage",
    tag = "gateway",
    summary = "Usage and cost per day and model",
    description = "The gateway's ledger for the caller (admins: any tenant, with `tenant`): \
                   requests, tokens and dollars spent upstream per UTC day and model, and what \
                   cached answers saved.",
    params(UsageQuery),
    responses(
        (status = 200, description = "A page", body = UsagePage),
        (status = 403, description = "`forbidden`: another tenant's usage, not an admin"),
        (status = 422, description = "`validation_failed`: a bad day, limit or cursor"),
    ),
)]
pub async fn usage(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<Response, ApiError> {
    let tenant = subject(&caller, q.tenant.as_deref())?;
    let filter = UsageFilter {
        from: q.from,
        to: q.to,
        model: q.model,
    };
    let cursor = q.cursor.filter(|c| !c.is_empty());
    let page = app
        .engine
        .budgets()
        .usage(&tenant, &filter, q.limit, cursor.as_deref())
        .await?;
    Ok((
        StatusCode::OK,
        axum::Json(UsagePage {
            items: page.items,
            next_cursor: page.next_cursor,
        }),
    )
        .into_response())
}
