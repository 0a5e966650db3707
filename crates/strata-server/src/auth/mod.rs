//! Bearer authentication: JSON Web Tokens and the operator key.
//!
//! A request carries `Authorization: Bearer <credential>`. The credential is the operator key
//! (`--admin-key`, compared in constant time through its BLAKE3 digest) or a JWT: HS256/384/512
//! against the configured secret, RS*/PS*/ES*/EdDSA against the public keys of a PEM or JWKS
//! file, reloaded when the file changes or on SIGHUP ([`watch`]). `sub` is the tenant; the
//! `role` claim (`admin` | `user`, default `user`) the role; `exp` is required and `exp`/`nbf`
//! are checked with a small leeway; `iss` and `aud` when configured. The family of a token's
//! `alg` chooses the keys: an HS256 token is never checked against a public key (no algorithm
//! confusion) and `none` is never accepted.
//!
//! Verified tokens are remembered until they expire (keyed by the token, in process only,
//! cleared when the keys change), so a cache hit does not pay for a signature check.
//!
//! Owns: credential parsing and verification, key loading, token minting. Must not: log,
//! store or echo a credential (errors say what is wrong, never what was sent), or reach the
//! engine.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod keys;

use arc_swap::ArcSwap;
use axum::http::{HeaderMap, header};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use strata_engine::TenantId;

use crate::caller::{Caller, Role, Unresolved};

use keys::{KeySet, family, read_keys};

/// A credential held in memory; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The credential itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("****")
    }
}

/// The shortest HS256 secret accepted: 32 bytes, the hash's own size (RFC 7518 3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// How bearer credentials are checked.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// The HS256/384/512 secret.
    pub secret: Option<Secret>,
    /// A PEM file of public keys (one or more blocks) or a JWKS document.
    pub keys_file: Option<PathBuf>,
    /// The operator key: the admin role, as the [`TenantId::operator`] tenant.
    pub admin_key: Option<Secret>,
    /// The `iss` every token must carry.
    pub issuer: Option<String>,
    /// An `aud` every token must carry.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            secret: None,
            keys_file: None,
            admin_key: None,
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(30),
        }
    }
}

impl AuthSettings {
    /// Whether anything authenticates callers.
    pub fn is_configured(&self) -> bool {
        self.secret.is_some() || self.keys_file.is_some() || self.admin_key.is_some()
    }
}

/// Why the authentication settings cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(String);

/// The claims strata reads (the validation reads `exp`, `nbf`, `iss`, `aud` itself).
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
}

/// Checks bearer credentials (see the module doc).
pub struct Authenticator {
    secret: Option<DecodingKey>,
    keys_file: Option<PathBuf>,
    keys: ArcSwap<KeySet>,
    /// The operator key's hash and length.
    admin_key: Option<(blake3::Hash, usize)>,
    validation: Validation,
    leeway: u64,
    /// Verified tokens and when they stop being valid (unix seconds, leeway included).
    verified: quick_cache::sync::Cache<Box<str>, (Caller, u64)>,
    reload_lock: Mutex<()>,
    /// This authenticator among others in the process (the per-thread memo's key).
    id: u64,
    /// Bumped by every reload: a thread's memo from before it no longer counts.
    generation: AtomicU64,
}

/// A token a thread verified: its caller, and when it stops being valid.
struct Recent {
    caller: Caller,
    until: u64,
}

thread_local! {
    /// Tokens a thread verified lately, per authenticator, under its generation: a repeat is
    /// answered without touching a line another core writes (the shared cache's lock word),
    /// which an authenticated cache hit otherwise pays on every request.
    /// Keyed by the credential's bytes: a repeat is found before the header is checked for
    /// visible ASCII (every remembered credential passed that check when it was verified).
    static RECENT: RefCell<crate::memo::PerOwner<Box<[u8]>, Recent, crate::memo::TailHash>> =
        RefCell::new(HashMap::default());
}

/// Authenticators a thread keeps memos for, and tokens per authenticator (then it starts
/// over).
const RECENT_BOUNDS: (usize, usize) = (8, 256);

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Authenticator {
    /// Reads the keys file and prepares the checks; an unusable setting is an error that says
    /// which.
    pub fn new(settings: &AuthSettings) -> Result<Self, AuthError> {
        if !settings.is_configured() {
            return Err(AuthError(
                "authentication needs a JWT secret, a keys file or an admin key".into(),
            ));
        }
        if let Some(s) = &settings.secret
            && s.expose().len() < MIN_SECRET_BYTES
        {
            return Err(AuthError(format!(
                "jwt_secret must be at least {MIN_SECRET_BYTES} bytes (it is {})",
                s.expose().len()
            )));
        }
        if let Some(k) = &settings.admin_key
            && k.expose().len() < 16
        {
            return Err(AuthError("admin_key must be at least 16 characters".into()));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = Vec::new();
        validation.leeway = settings.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &settings.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &settings.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        let auth = Self {
            secret: settings
                .secret
                .as_ref()
                .map(|s| DecodingKey::from_secret(s.expose().as_bytes())),
            keys_file: settings.keys_file.clone(),
            keys: ArcSwap::from_pointee(KeySet::default()),
            admin_key: settings
                .admin_key
                .as_ref()
                .map(|k| (blake3::hash(k.expose().as_bytes()), k.expose().len())),
            validation,
            leeway: settings.leeway.as_secs(),
            verified: quick_cache::sync::Cache::new(16_384),
            reload_lock: Mutex::new(()),
            id: crate::memo::owner_id(),
            generation: AtomicU64::new(0),
        };
        if auth.keys_file.is_some() {
            auth.reload()?;
        }
        Ok(auth)
    }

    /// What is configured, for the startup log (no credential in it).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.secret.is_some() {
            parts.push("JWT with the HS256 secret".to_owned());
        }
        if let Some(path) = &self.keys_file {
            parts.push(format!(
                "JWT with {} public key(s) from {}",
                self.keys.load().keys.len(),
                path.display()
            ));
        }
        if self.admin_key.is_some() {
            parts.push("the operator key".to_owned());
        }
        parts.join(", ")
    }

    /// Re-reads the keys file; on failure the keys in use stay. Returns how many keys it holds.
    pub fn reload(&self) -> Result<usize, AuthError> {
        let Some(path) = &self.keys_file else {
            return Ok(0);
        };
        let _one_at_a_time = self
            .reload_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let set = read_keys(path)?;
        let n = set.keys.len();
        self.keys.store(Arc::new(set));
        // A key taken out must stop verifying at once.
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.verified.clear();
        Ok(n)
    }

    /// The caller a request's `Authorization` header names.
    pub fn resolve(&self, headers: &HeaderMap) -> Result<Caller, Unresolved> {
        let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
            Unresolved::missing("send Authorization: Bearer <token> (a JWT or the operator key)")
        })?;
        // Split as bytes: the visible-ASCII check of the whole header (a loop over a
        // 150-byte token) is left to the first time a credential is seen.
        let (scheme, credential) = split_credentials(value.as_bytes());
        let visible = || {
            value
                .to_str()
                .map_err(|_| Unresolved::invalid("the Authorization header is not visible ASCII"))
        };
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            visible()?;
            return Err(Unresolved::missing(
                "the Authorization header must use the Bearer scheme",
            ));
        }
        if credential.is_empty() {
            visible()?;
            return Err(Unresolved::invalid("the bearer credential is empty"));
        }
        // The operator key is hashed (and compared in constant time) only for a credential
        // of its length: a JWT never costs that hash.
        if let Some((key, len)) = &self.admin_key
            && credential.len() == *len
            && visible().is_ok()
            && blake3::hash(credential) == *key
        {
            return Ok(Caller {
                tenant: TenantId::operator(),
                role: Role::Admin,
            });
        }
        let now = jsonwebtoken::get_current_timestamp();
        let generation = self.generation.load(Ordering::Acquire);
        let recent = RECENT.with_borrow(|r| {
            crate::memo::recall(r, self.id, credential, generation)
                .filter(|e| now <= e.until)
                .map(|e| e.caller.clone())
        });
        if let Some(caller) = recent {
            return Ok(caller);
        }
        visible()?;
        // Visible ASCII, so UTF-8.
        let credential = std::str::from_utf8(credential)
            .map_err(|_| Unresolved::invalid("the Authorization header is not visible ASCII"))?;
        let (caller, until) = match self.verified.get(credential) {
            Some((caller, until)) if now <= until => (caller, until),
            _ => {
                let (caller, exp) = self.verify(credential)?;
                let until = exp.saturating_add(self.leeway);
                self.verified
                    .insert(credential.into(), (caller.clone(), until));
                (caller, until)
            }
        };
        RECENT.with_borrow_mut(|r| {
            let recent = Recent {
                caller: caller.clone(),
                until,
            };
            crate::memo::remember(
                r,
                self.id,
                credential.as_bytes().into(),
                generation,
                recent,
                RECENT_BOUNDS,
            );
        });
        Ok(caller)
    }

    fn verify(&self, token: &str) -> Result<(Caller, u64), Unresolved> {
        let head = jsonwebtoken::decode_header(token)
            .map_err(|_| Unresolved::invalid("the bearer token is not a JWT"))?;
        let mut validation = self.validation.clone();
        validation.algorithms = vec![head.alg];
        let claims = match family(head.alg) {
            None => {
                let key = self.secret.as_ref().ok_or_else(|| {
                    Unresolved::invalid(format!(
                        "{:?} tokens are not accepted: no JWT secret is configured",
                        head.alg
                    ))
                })?;
                decode(token, key, &validation)?
            }
            Some(fam) => {
                let keys = self.keys.load();
                let mut candidates = keys
                    .keys
                    .iter()
                    .filter(|k| k.family == fam)
                    .filter(|k| head.kid.is_none() || k.kid.is_none() || k.kid == head.kid)
                    .peekable();
                if candidates.peek().is_none() {
                    return Err(Unresolved::invalid(format!(
                        "no configured public key checks {:?} tokens{}",
                        head.alg,
                        if head.kid.is_some() {
                            " with this kid"
                        } else {
                            ""
                        }
                    )));
                }
                let mut last = None;
                let mut found = None;
                for k in candidates {
                    match decode(token, &k.key, &validation) {
                        Ok(c) => {
                            found = Some(c);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                match (found, last) {
                    (Some(c), _) => c,
                    (None, Some(e)) => return Err(e),
                    (None, None) => unreachable!("candidates were not empty"),
                }
            }
        };
        let tenant = TenantId::parse(claims.sub.trim())
            .map_err(|_| Unresolved::invalid("sub must be 1-128 visible ASCII characters"))?;
        let role = match claims.role.as_deref() {
            None | Some("user") => Role::User,
            Some("admin") => Role::Admin,
            Some(_) => return Err(Unresolved::invalid("role must be \"admin\" or \"user\"")),
        };
        Ok((Caller { tenant, role }, claims.exp))
    }
}

/// An `Authorization` value's scheme and credential, each without the spaces around it.
fn split_credentials(value: &[u8]) -> (&[u8], &[u8]) {
    let value = value.trim_ascii();
    match value.iter().position(|b| *b == b' ') {
        Some(at) => (&value[..at], value[at + 1..].trim_ascii()),
        None => (value, &[]),
    }
}

fn decode(token: &str, key: &DecodingKey, validation: &Validation) -> Result<Claims, Unresolved> {
    jsonwebtoken::decode::<Claims>(token, key, validation)
        .map(|d| d.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => Unresolved::expired(),
            ErrorKind::ImmatureSignature => Unresolved::invalid("the token is not valid yet (nbf)"),
            ErrorKind::InvalidSignature => {
                Unresolved::invalid("the token's signature is not valid")
            }
            ErrorKind::InvalidIssuer => Unresolved::invalid("the token's iss is not accepted"),
            ErrorKind::InvalidAudience => Unresolved::invalid("the token's aud is not accepted"),
            ErrorKind::MissingRequiredClaim(c) => {
                Unresolved::invalid(format!("the token has no {c} claim"))
            }
            ErrorKind::InvalidAlgorithm => {
                Unresolved::invalid("the key does not match the token's algorithm")
            }
            ErrorKind::Json(_) => Unresolved::invalid("the token's claims are malformed"),
            _ => Unresolved::invalid("the bearer token is not a valid JWT"),
        })
}

/// A token for `tenant` signed with the HS256 `secret`, valid for `ttl` (what
/// `strata token` prints).
pub fn mint(
    settings: &AuthSettings,
    tenant: &TenantId,
    role: Role,
    ttl: Duration,
) -> Result<String, AuthError> {
    let secret = settings.secret.as_ref().ok_or_else(|| {
        AuthError("minting a token needs jwt_secret (the HS256 secret strata checks)".into())
    })?;
    if secret.expose().len() < MIN_SECRET_BYTES {
        return Err(AuthError(format!(
            "jwt_secret must be at least {MIN_SECRET_BYTES} bytes"
        )));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = Claims {
        sub: tenant.as_str().to_owned(),
        role: Some(role.as_str().to_owned()),
        exp: now.saturating_add(ttl.as_secs()),
        iss: settings.issuer.clone(),
        aud: settings.audience.clone(),
        iat: Some(now),
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )
    .map_err(|e| AuthError(e.to_string()))
}

/// Reloads the keys file when it changes (checked every two seconds) and on SIGHUP, until
/// `shutdown`. A file that cannot be read or holds no usable key is logged (once per change)
/// and the keys in use stay.
pub async fn watch(auth: Arc<Authenticator>, shutdown: tokio_util::sync::CancellationToken) {
    let Some(path) = auth.keys_file.clone() else {
        return;
    };
    let seen = vec![auth.keys.load().stamp];
    crate::watch::on_change(vec![path], seen, true, shutdown, move || {
        match auth.reload() {
            Ok(n) => tracing::info!(keys = n, "JWT public keys reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "JWT public keys not reloaded; the previous keys stay")
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests;
