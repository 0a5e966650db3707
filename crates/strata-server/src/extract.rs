//! Request extractors whose rejections are problem+json, and the caller's tenant.

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;
use strata_engine::TenantId;

use crate::AppState;
use crate::error::ApiError;

/// `Json<T>` with problem+json rejections.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `Query<T>` with problem+json rejections.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// `Path<T>` with problem+json rejections.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// The tenant a request acts for.
///
/// Two modes until JWT verification lands: with [`crate::ServerSettings::tenant_header`]
/// set, the tenant is that header's value, as set by an authenticating proxy in front of
/// strata (a request without it is 401); otherwise every request is the single development
/// tenant ([`TenantId::local`]), and the server warns about it at startup.
#[derive(Debug, Clone)]
pub struct Tenant(pub TenantId);

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(name) = &state.tenant_header else {
            return Ok(Tenant(TenantId::local()));
        };
        let value = parts.headers.get(name).ok_or_else(|| {
            ApiError::new(
                crate::error::Code::Unauthenticated,
                format!("the {name} header naming the tenant is missing"),
            )
        })?;
        let text = value.to_str().map_err(|_| {
            ApiError::new(
                crate::error::Code::Unauthenticated,
                format!("the {name} header is not visible ASCII"),
            )
        })?;
        TenantId::parse(text.trim())
            .map(Tenant)
            .map_err(|e| ApiError::new(crate::error::Code::Unauthenticated, format!("{name}: {e}")))
    }
}

/// The `If-None-Match` values of a request (only those: cloning every header of every
/// request would cost more than the cache hit it guards).
#[derive(Debug, Clone, Default)]
pub struct IfNoneMatch(Vec<axum::http::HeaderValue>);

impl IfNoneMatch {
    /// Whether `etag` (quoted) is among the values, or they say `*`.
    pub fn matches(&self, etag: &str) -> bool {
        self.0
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|v| v == "*" || v == etag || v.strip_prefix("W/") == Some(etag))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(IfNoneMatch(
            parts
                .headers
                .get_all(axum::http::header::IF_NONE_MATCH)
                .iter()
                .cloned()
                .collect(),
        ))
    }
}
