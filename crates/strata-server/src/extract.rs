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
