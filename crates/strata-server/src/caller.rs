//! The caller seam: who a request acts for (its tenant) and what it may do (its role).
//!
//! [`CallerLayer`] resolves the caller once per request, before any handler or admission
//! layer, and leaves the answer in the request's extensions: a [`Caller`] when the request
//! names one, an [`Unresolved`] reason otherwise. Layers that come after it (rate limits,
//! load shedding) read the extension; handlers take [`Caller`], [`crate::extract::Tenant`]
//! or [`Admin`], whose rejections are 401 (no caller) and 403 (not an admin).
//!
//! Owns: the identity modes and the role rule. Must not: verify anything it cannot verify
//! (header mode trusts the proxy in front of strata; token mode delegates to
//! [`crate::auth`]), log or echo credentials, or reach the engine (resolution is synchronous
//! and touches no storage).

use std::collections::HashSet;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderName, Request};
use strata_engine::TenantId;

use crate::auth::Authenticator;
use crate::error::{ApiError, Code};

/// What a caller may do beyond its own tenant's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Operator endpoints too: clearing caches, optimising the shared database, statistics
    /// of the whole database.
    Admin,
    /// Its own tenant's data only.
    User,
}

impl Role {
    /// `admin` or `user`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }
}

/// The resolved caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Whose data the request reads and writes.
    pub tenant: TenantId,
    /// What else it may do.
    pub role: Role,
}

impl Caller {
    /// Whether the caller holds the admin role.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// Why a request has no caller; answered 401 by the extractors that need one.
#[derive(Debug, Clone)]
pub struct Unresolved {
    /// `unauthenticated`, `invalid_token` or `token_expired`.
    pub code: Code,
    /// What is wrong, never what was sent.
    pub detail: String,
    /// Whether the answer carries a Bearer challenge (token mode).
    pub bearer: bool,
}

impl Unresolved {
    /// No credential (or no tenant header) at all.
    pub fn missing(detail: impl Into<String>) -> Self {
        Self {
            code: Code::Unauthenticated,
            detail: detail.into(),
            bearer: true,
        }
    }

    /// A bearer credential that does not verify.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self {
            code: Code::InvalidToken,
            detail: detail.into(),
            bearer: true,
        }
    }

    /// A token past its `exp` (and the leeway).
    pub fn expired() -> Self {
        Self {
            code: Code::TokenExpired,
            detail: "the token has expired".into(),
            bearer: true,
        }
    }

    /// A tenant header that is missing or malformed (no Bearer challenge: the proxy in
    /// front authenticates).
    fn header(detail: String) -> Self {
        Self {
            code: Code::Unauthenticated,
            detail,
            bearer: false,
        }
    }

    /// The 401 problem, with `WWW-Authenticate` in token mode (RFC 6750 section 3).
    pub fn to_error(&self) -> ApiError {
        let err = ApiError::new(self.code, self.detail.clone());
        if !self.bearer {
            return err;
        }
        let challenge = match self.code {
            Code::Unauthenticated => r#"Bearer realm="strata""#.to_owned(),
            _ => format!(
                r#"Bearer realm="strata", error="invalid_token", error_description="{}""#,
                self.detail.replace(['"', '\\'], "'")
            ),
        };
        err.with_challenge(challenge)
    }
}

/// How callers are identified.
#[derive(Debug, Clone, Default)]
pub enum Identity {
    /// Development: every request is the single local tenant, with the admin role.
    #[default]
    Local,
    /// The tenant is a request header's value, set by an authenticating proxy in front of
    /// strata; the listed tenants hold the admin role.
    Header {
        /// The header.
        name: HeaderName,
        /// Tenants with the admin role.
        admins: Arc<HashSet<TenantId>>,
    },
    /// Bearer credentials: JWTs and the operator key.
    Token(Arc<Authenticator>),
}

impl Identity {
    /// Resolves the caller of a request from its headers.
    pub fn resolve(&self, headers: &axum::http::HeaderMap) -> Result<Caller, Unresolved> {
        match self {
            Identity::Local => Ok(Caller {
                tenant: TenantId::local(),
                role: Role::Admin,
            }),
            Identity::Header { name, admins } => {
                let value = headers.get(name).ok_or_else(|| {
                    Unresolved::header(format!("the {name} header naming the tenant is missing"))
                })?;
                let text = value.to_str().map_err(|_| {
                    Unresolved::header(format!("the {name} header is not visible ASCII"))
                })?;
                let tenant = TenantId::parse(text.trim())
                    .map_err(|e| Unresolved::header(format!("{name}: {e}")))?;
                let role = if admins.contains(&tenant) {
                    Role::Admin
                } else {
                    Role::User
                };
                Ok(Caller { tenant, role })
            }
            Identity::Token(auth) => auth.resolve(headers),
        }
    }
}

/// Resolves each request's caller into its extensions (see the module doc).
#[derive(Debug, Clone)]
pub struct CallerLayer {
    identity: Arc<Identity>,
}

impl CallerLayer {
    /// A layer resolving callers by `identity`.
    pub fn new(identity: Identity) -> Self {
        Self {
            identity: Arc::new(identity),
        }
    }
}

impl<S> tower::Layer<S> for CallerLayer {
    type Service = CallerService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CallerService {
            inner,
            identity: self.identity.clone(),
        }
    }
}

/// The service of [`CallerLayer`]: synchronous, so it adds no future of its own.
#[derive(Debug, Clone)]
pub struct CallerService<S> {
    inner: S,
    identity: Arc<Identity>,
}

impl<S, B> tower::Service<Request<B>> for CallerService<S>
where
    S: tower::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match self.identity.resolve(req.headers()) {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
            }
            Err(why) => {
                req.extensions_mut().insert(why);
            }
        }
        self.inner.call(req)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        Err(match parts.extensions.get::<Unresolved>() {
            Some(why) => why.to_error(),
            None => ApiError::new(Code::Unauthenticated, "the caller could not be resolved"),
        })
    }
}

/// A caller with the admin role; 403 `forbidden` for any other caller.
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if !caller.is_admin() {
            return Err(ApiError::new(
                Code::Forbidden,
                "this endpoint is for operators: the caller needs the admin role",
            ));
        }
        Ok(Admin(caller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_mode(admins: &[&str]) -> Identity {
        Identity::Header {
            name: HeaderName::from_static("x-tenant"),
            admins: Arc::new(admins.iter().map(|a| TenantId::parse(a).unwrap()).collect()),
        }
    }

    fn headers(tenant: Option<&str>) -> axum::http::HeaderMap {
        let mut h = axum::http::HeaderMap::new();
        if let Some(t) = tenant {
            h.insert("x-tenant", t.parse().unwrap());
        }
        h
    }

    #[test]
    fn development_mode_is_one_local_admin() {
        let c = Identity::Local.resolve(&headers(Some("alice"))).unwrap();
        assert_eq!(c.tenant, TenantId::local());
        assert_eq!(c.role, Role::Admin);
    }

    #[test]
    fn header_mode_gives_the_admin_role_only_to_listed_tenants() {
        let id = header_mode(&["ops"]);
        assert_eq!(id.resolve(&headers(Some("ops"))).unwrap().role, Role::Admin);
        let alice = id.resolve(&headers(Some(" alice "))).unwrap();
        assert_eq!(alice.role, Role::User);
        assert_eq!(alice.tenant.as_str(), "alice");
        assert!(id.resolve(&headers(None)).is_err());
        assert!(id.resolve(&headers(Some(""))).is_err());
    }
}
