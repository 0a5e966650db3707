//! Request extractors whose rejections are problem+json, and the caller's tenant.

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;
use strata_engine::TenantId;

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
/// Authentication has not landed yet: every request is the single development tenant
/// ([`TenantId::local`]), and the server warns about it at startup. JWT verification will
/// replace this extractor's body, and nothing else.
#[derive(Debug, Clone)]
pub struct Tenant(pub TenantId);

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(_parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Tenant(TenantId::local()))
    }
}
