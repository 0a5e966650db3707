//! The OpenAPI 3.1 document (`GET /openapi.json`) and its reference page (`GET /docs`).
//!
//! Owns: what every operation shares in the document (the problem schema, the error responses
//! the edge can give, the security schemes), the serving of the document, and the page that
//! renders it from assets compiled into the binary (no CDN). The operations themselves are
//! the handlers' `#[utoipa::path]` attributes, registered by [`crate::routes::api`] in the
//! same call that registers the route, so a route cannot exist without its description.
//! Must not import: storage or engine internals (only the engine's wire types appear here).

use std::sync::OnceLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Components, ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder, Schema};

use strata_engine::model::Document;

use crate::error::{Code, Problem};

/// The name of the bearer security scheme (JWTs and the operator key).
const BEARER: &str = "bearer";

/// The document's fixed parts: info, tags, shared schemas. Paths come from the router.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "strata",
        description = "Self-hostable retrieval backend: documents, semantic search, embeddings, \
                       caching and the operating surface.\n\nErrors are RFC 9457 problem+json \
                       documents whose `code` is a stable contract; every code is listed under \
                       `Problem`. The OpenAI-compatible routes (`/v1/chat/completions`, \
                       `/v1/embeddings`, `/v1/models`) answer errors in OpenAI's shape \
                       (`OpenAiError`) instead, with the same codes.",
        license(name = "MIT OR Apache-2.0"),
    ),
    components(schemas(Problem, crate::openai::OpenAiError, crate::openai::OpenAiErrorBody)),
    tags(
        (name = "documents", description = "Upload, list, read, update and delete documents"),
        (name = "jobs", description = "Background jobs and their live progress"),
        (name = "search", description = "Semantic search and OpenAI-compatible embeddings"),
        (name = "memories", description = "Agents' long-term memories: add, recall, history, preload, MCP"),
        (name = "sessions", description = "Visits with an idle timeout learned from each tenant's pace"),
        (name = "gateway", description = "OpenAI-compatible chat proxy with caching, budgets and usage"),
        (name = "performance", description = "Cache, model and database statistics and operations"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// How an operation is reached, which decides the edge responses it documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Needs a caller (bearer credential, tenant header or the local tenant), is admitted by
    /// the rate limiter and the in-flight bound, and has a deadline.
    Tenant,
    /// Needs a caller but is never shed or rate limited (operator statistics).
    TenantExempt,
    /// Open to anyone and never shed (health, metrics, this document).
    Public,
}

/// Which [`Access`] a route has: the same rule the caller and admission layers apply.
pub fn access(path: &str) -> Access {
    match path {
        "/healthz" | "/readyz" | "/metrics" | "/openapi.json" | "/docs" => Access::Public,
        // The dashboard's page and assets hold no data; its feed needs an admin.
        "/dashboard" | "/dashboard/app.js" | "/dashboard/app.css" => Access::Public,
        p if p.starts_with("/v1/performance/") || p == "/dashboard/data" => Access::TenantExempt,
        _ => Access::Tenant,
    }
}

/// Completes the document the router assembled: the bearer security scheme, each operation's
/// security requirement, the problem body of every error response, and the edge's error
/// responses (401, 429, 503, 504, 500).
pub fn finish(mut doc: OpenApi) -> OpenApi {
    let components = doc.components.get_or_insert_with(Components::new);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "A JWT whose `sub` is the tenant and whose `role` claim (`admin` | `user`) \
                     decides admin access, or the operator key given with `--admin-key`. \
                     Servers started without authentication act for one local admin tenant.",
                ))
                .build(),
        ),
    );
    if let Some(RefOr::T(Schema::Object(problem))) = components.schemas.get_mut("Problem")
        && let Some(RefOr::T(Schema::Object(code))) = problem.properties.get_mut("code")
    {
        code.enum_values = Some(Code::ALL.iter().map(|c| c.as_str().into()).collect());
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        let access = access(path);
        let openai = crate::openai::ROUTES.contains(&path.as_str());
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.patch,
            &mut item.delete,
            &mut item.put,
        ]
        .into_iter()
        .flatten()
        {
            edge_responses(op, access, openai);
        }
    }
    doc
}

/// Gives every error response a handler declared without a body the problem body (the
/// handlers name the status and the codes; the body is always the same), then adds the
/// responses any operation of `access` can give whatever its handler does.
fn edge_responses(op: &mut Operation, access: Access, openai: bool) {
    let error = |why: &str| {
        if openai {
            openai_error_response(why)
        } else {
            problem_response(why)
        }
    };
    for (status, response) in op.responses.responses.iter_mut() {
        if let RefOr::T(response) = response
            && response.content.is_empty()
            && status.parse::<u16>().is_ok_and(|s| s >= 400)
        {
            *response = error(&response.description);
        }
    }
    let mut add = |code: Code, why: &str| {
        let status = match code.status().as_u16() {
            // The OpenAI shape answers a bad field with 400.
            422 if openai => 400,
            s => s,
        }
        .to_string();
        op.responses
            .responses
            .entry(status)
            .or_insert_with(|| RefOr::T(error(why)));
    };
    if access != Access::Public {
        add(
            Code::Unauthenticated,
            "`unauthenticated`, `invalid_token` or `token_expired`, with `WWW-Authenticate`",
        );
    }
    if access == Access::Tenant {
        add(
            Code::RateLimited,
            "`rate_limited`: over the tenant's rate; `Retry-After`, `RateLimit` and \
             `RateLimit-Policy` say when to retry",
        );
        add(Code::Timeout, "`timeout`: the request passed its deadline");
    }
    add(
        Code::Overloaded,
        "`overloaded` (at capacity) or `service_unavailable` (a dependency is down), with \
         `Retry-After`",
    );
    add(Code::Internal, "`internal`: logged with the request id");
    if access != Access::Public {
        op.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
    }
}

/// A response whose body is an OpenAI error object.
fn openai_error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("OpenAiError")))
                .build(),
        )
        .build()
}

/// A response whose body is a problem.
fn problem_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

/// The document `GET /openapi.json` serves, set once the router is assembled (the router
/// and the document come out of the same registration, after the state exists).
#[derive(Clone, Default)]
pub struct Served(std::sync::Arc<OnceLock<bytes::Bytes>>);

impl Served {
    /// Holds `doc`, serialised; a second call keeps the first document (the same router
    /// always yields the same one).
    pub fn set(&self, doc: &OpenApi) {
        let _ = self.0.set(bytes::Bytes::from(
            serde_json::to_vec(doc).unwrap_or_default(),
        ));
    }

    /// The serialised document.
    pub fn bytes(&self) -> bytes::Bytes {
        self.0.get().cloned().unwrap_or_default()
    }
}

/// The reference page: renders `/openapi.json` in the browser with no request elsewhere.
const DOCS_HTML: &str = include_str!("../assets/docs.html");

/// `GET /docs`: the API reference page.
#[utoipa::path(
    get,
    path = "/docs",
    operation_id = "docs",
    tag = "operations",
    responses((status = 200, description = "The API reference page", content_type = "text/html")),
)]
pub async fn docs() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'self' 'unsafe-inline'; \
                     style-src 'unsafe-inline'; connect-src 'self'",
                ),
            ),
        ],
        DOCS_HTML,
    )
        .into_response()
}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi_document",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")),
)]
pub async fn document(
    axum::extract::State(app): axum::extract::State<crate::AppState>,
) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        app.openapi.bytes(),
    )
        .into_response()
}

/// A document with only the fields asked for in `fields`: the `Document` schema with only
/// `id` required.
pub struct DocumentSelection;

impl utoipa::PartialSchema for DocumentSelection {
    fn schema() -> RefOr<Schema> {
        let mut schema = <Document as utoipa::PartialSchema>::schema();
        if let RefOr::T(Schema::Object(object)) = &mut schema {
            object.required = vec!["id".to_owned()];
            object.description = Some(
                "A document with only the fields named in `fields` (and always `id`); every \
                 field when `fields` is absent."
                    .to_owned(),
            );
        }
        schema
    }
}

impl utoipa::ToSchema for DocumentSelection {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((
            Document::name().into_owned(),
            <Document as utoipa::PartialSchema>::schema(),
        ));
        <Document as utoipa::ToSchema>::schemas(schemas);
    }
}

/// The `{id}` of document routes.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(
    dead_code,
    reason = "describes the path parameter for the OpenAPI document"
)]
pub struct DocumentPath {
    /// The document's id (a UUID; anything else is not found).
    id: String,
}

/// The `{id}` of job routes.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(
    dead_code,
    reason = "describes the path parameter for the OpenAPI document"
)]
pub struct JobPath {
    /// The job's id (a UUID; anything else is not found).
    id: String,
}

/// `If-None-Match` of cached reads.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[expect(dead_code, reason = "describes the header for the OpenAPI document")]
pub struct IfNoneMatch {
    /// ETags of representations the client holds; a match answers 304.
    #[param(rename = "if-none-match")]
    if_none_match: Option<String>,
}
