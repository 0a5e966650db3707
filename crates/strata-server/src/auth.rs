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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use axum::http::{HeaderMap, header};
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use strata_engine::TenantId;

use crate::caller::{Caller, Role, Unresolved};

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

/// Which public keys can check an algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    Ec,
    Ed,
}

fn family(alg: Algorithm) -> Option<Family> {
    use Algorithm::*;
    match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Some(Family::Rsa),
        ES256 | ES384 => Some(Family::Ec),
        EdDSA => Some(Family::Ed),
        HS256 | HS384 | HS512 => None,
    }
}

struct PublicKey {
    kid: Option<String>,
    family: Family,
    key: DecodingKey,
}

/// What a keys file held when it was read.
#[derive(Default)]
struct KeySet {
    keys: Vec<PublicKey>,
    /// Modification time and length, to notice a change.
    stamp: Option<(SystemTime, u64)>,
}

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
    admin_key: Option<blake3::Hash>,
    validation: Validation,
    leeway: u64,
    /// Verified tokens and when they stop being valid (unix seconds, leeway included).
    verified: quick_cache::sync::Cache<Box<str>, (Caller, u64)>,
    reload_lock: Mutex<()>,
}

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
                .map(|k| blake3::hash(k.expose().as_bytes())),
            validation,
            leeway: settings.leeway.as_secs(),
            verified: quick_cache::sync::Cache::new(16_384),
            reload_lock: Mutex::new(()),
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
        self.verified.clear();
        Ok(n)
    }

    /// Reloads when the file's modification time or length changed; `Ok(None)` when not.
    pub fn reload_if_changed(&self) -> Result<Option<usize>, AuthError> {
        let Some(path) = &self.keys_file else {
            return Ok(None);
        };
        let now = stamp(path).ok();
        if now.is_some() && now == self.keys.load().stamp {
            return Ok(None);
        }
        self.reload().map(Some)
    }

    /// The caller a request's `Authorization` header names.
    pub fn resolve(&self, headers: &HeaderMap) -> Result<Caller, Unresolved> {
        let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
            Unresolved::missing("send Authorization: Bearer <token> (a JWT or the operator key)")
        })?;
        let text = value
            .to_str()
            .map_err(|_| Unresolved::invalid("the Authorization header is not visible ASCII"))?;
        let (scheme, credential) = text.trim().split_once(' ').unwrap_or((text, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Unresolved::missing(
                "the Authorization header must use the Bearer scheme",
            ));
        }
        let credential = credential.trim();
        if credential.is_empty() {
            return Err(Unresolved::invalid("the bearer credential is empty"));
        }
        if let Some(key) = &self.admin_key
            && blake3::hash(credential.as_bytes()) == *key
        {
            return Ok(Caller {
                tenant: TenantId::operator(),
                role: Role::Admin,
            });
        }
        let now = jsonwebtoken::get_current_timestamp();
        if let Some((caller, until)) = self.verified.get(credential)
            && now <= until
        {
            return Ok(caller);
        }
        let (caller, exp) = self.verify(credential)?;
        self.verified.insert(
            credential.into(),
            (caller.clone(), exp.saturating_add(self.leeway)),
        );
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

fn stamp(path: &Path) -> std::io::Result<(SystemTime, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.modified()?, m.len()))
}

/// Reads a JWKS document (JSON with `keys`) or PEM blocks of public keys.
fn read_keys(path: &Path) -> Result<KeySet, AuthError> {
    let fail = |why: String| AuthError(format!("jwt_keys {}: {why}", path.display()));
    let stamp = stamp(path).map_err(|e| fail(e.to_string()))?;
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let keys = if text.trim_start().starts_with('{') {
        let set: JwkSet =
            serde_json::from_str(&text).map_err(|e| fail(format!("not a JWKS document: {e}")))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let fam = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Family::Rsa,
                AlgorithmParameters::EllipticCurve(_) => Family::Ec,
                AlgorithmParameters::OctetKeyPair(_) => Family::Ed,
                AlgorithmParameters::OctetKey(_) => {
                    return Err(fail(
                        "holds a symmetric key; give a shared secret as jwt_secret".into(),
                    ));
                }
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| fail(e.to_string()))?;
            keys.push(PublicKey {
                kid: jwk.common.key_id.clone(),
                family: fam,
                key,
            });
        }
        keys
    } else {
        let mut keys = Vec::new();
        for block in pem_blocks(&text) {
            let key = [
                (Family::Rsa, DecodingKey::from_rsa_pem(block.as_bytes())),
                (Family::Ec, DecodingKey::from_ec_pem(block.as_bytes())),
                (Family::Ed, DecodingKey::from_ed_pem(block.as_bytes())),
            ]
            .into_iter()
            .find_map(|(fam, k)| k.ok().map(|k| (fam, k)));
            let Some((family, key)) = key else {
                return Err(fail(
                    "a PEM block is not an RSA, EC or Ed25519 public key".into(),
                ));
            };
            keys.push(PublicKey {
                kid: None,
                family,
                key,
            });
        }
        keys
    };
    if keys.is_empty() {
        return Err(fail("holds no public key".into()));
    }
    Ok(KeySet {
        keys,
        stamp: Some(stamp),
    })
}

/// Each `-----BEGIN ...-----` ... `-----END ...-----` block of a PEM file.
fn pem_blocks(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN") {
        let after = &rest[start..];
        let Some(end) = after.find("-----END") else {
            break;
        };
        let close = after[end + 8..]
            .find("-----")
            .map_or(after.len(), |i| end + 8 + i + 5);
        out.push(&after[..close]);
        rest = &after[close..];
    }
    out
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
/// `shutdown`. A file that cannot be read or holds no usable key is logged and the keys in
/// use stay.
pub async fn watch(auth: Arc<Authenticator>, shutdown: tokio_util::sync::CancellationToken) {
    if auth.keys_file.is_none() {
        return;
    }
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => false,
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let auth = auth.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            if forced {
                auth.reload().map(Some)
            } else {
                auth.reload_if_changed()
            }
        })
        .await;
        match outcome {
            Ok(Ok(Some(n))) => tracing::info!(keys = n, "JWT public keys reloaded"),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "JWT public keys not reloaded; the previous keys stay")
            }
            Err(e) => tracing::error!(error = %e, "JWT key reload task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use jsonwebtoken::{Header, encode};

    const SECRET: &str = "unit-test-secret-unit-test-secret-0";

    fn settings() -> AuthSettings {
        AuthSettings {
            secret: Some(Secret::new(SECRET)),
            ..AuthSettings::default()
        }
    }

    fn sign(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::try_from(format!("Bearer {token}")).unwrap(),
        );
        h
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn claims_name_tenant_and_role() {
        let auth = Authenticator::new(&settings()).unwrap();
        let exp = now() + 60;
        let user = auth
            .resolve(&bearer(&sign(
                serde_json::json!({"sub": "alice", "exp": exp}),
                SECRET,
            )))
            .unwrap();
        assert_eq!((user.tenant.as_str(), user.role), ("alice", Role::User));
        let admin = auth
            .resolve(&bearer(&sign(
                serde_json::json!({"sub": "ops", "role": "admin", "exp": exp}),
                SECRET,
            )))
            .unwrap();
        assert_eq!(admin.role, Role::Admin);
        let bad_role = sign(
            serde_json::json!({"sub": "x", "role": "root", "exp": exp}),
            SECRET,
        );
        assert_eq!(
            auth.resolve(&bearer(&bad_role)).unwrap_err().code,
            crate::error::Code::InvalidToken
        );
        let no_exp = sign(serde_json::json!({"sub": "x"}), SECRET);
        assert!(auth.resolve(&bearer(&no_exp)).is_err());
        let no_sub = sign(serde_json::json!({"exp": exp}), SECRET);
        assert!(auth.resolve(&bearer(&no_sub)).is_err());
    }

    #[test]
    fn expiry_and_not_before_allow_the_leeway_only() {
        let auth = Authenticator::new(&settings()).unwrap();
        let t = now();
        let within = sign(serde_json::json!({"sub": "a", "exp": t - 10}), SECRET);
        assert!(
            auth.resolve(&bearer(&within)).is_ok(),
            "10 s past exp is inside the 30 s leeway"
        );
        let expired = sign(serde_json::json!({"sub": "a", "exp": t - 120}), SECRET);
        let e = auth.resolve(&bearer(&expired)).unwrap_err();
        assert_eq!(e.code, crate::error::Code::TokenExpired);
        let early = sign(
            serde_json::json!({"sub": "a", "exp": t + 600, "nbf": t + 300}),
            SECRET,
        );
        assert_eq!(
            auth.resolve(&bearer(&early)).unwrap_err().code,
            crate::error::Code::InvalidToken
        );
    }

    #[test]
    fn issuer_and_audience_when_configured() {
        let auth = Authenticator::new(&AuthSettings {
            issuer: Some("https://idp.example".into()),
            audience: Some("strata".into()),
            ..settings()
        })
        .unwrap();
        let exp = now() + 60;
        let ok = sign(
            serde_json::json!({"sub": "a", "exp": exp, "iss": "https://idp.example", "aud": "strata"}),
            SECRET,
        );
        assert!(auth.resolve(&bearer(&ok)).is_ok());
        for claims in [
            serde_json::json!({"sub": "a", "exp": exp, "aud": "strata"}),
            serde_json::json!({"sub": "a", "exp": exp, "iss": "https://evil", "aud": "strata"}),
            serde_json::json!({"sub": "a", "exp": exp, "iss": "https://idp.example", "aud": "other"}),
            serde_json::json!({"sub": "a", "exp": exp, "iss": "https://idp.example"}),
        ] {
            assert!(
                auth.resolve(&bearer(&sign(claims.clone(), SECRET)))
                    .is_err(),
                "{claims}"
            );
        }
    }

    #[test]
    fn forged_and_malformed_credentials_are_refused_without_echo() {
        let auth = Authenticator::new(&AuthSettings {
            admin_key: Some(Secret::new("operator-key-for-tests")),
            ..settings()
        })
        .unwrap();
        let exp = now() + 60;
        let forged = sign(
            serde_json::json!({"sub": "a", "exp": exp}),
            "another-secret-another-secret-00",
        );
        let b64 = |v: serde_json::Value| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let none = format!(
            "{}.{}.",
            b64(serde_json::json!({"alg": "none", "typ": "JWT"})),
            b64(serde_json::json!({"sub": "a", "exp": exp}))
        );
        for token in [forged.as_str(), none.as_str(), "not-a-jwt", "a.b.c"] {
            let e = auth.resolve(&bearer(token)).unwrap_err();
            assert_eq!(e.code, crate::error::Code::InvalidToken, "{token}");
            assert!(!e.detail.contains(token), "{}", e.detail);
        }
        let missing = auth.resolve(&HeaderMap::new()).unwrap_err();
        assert_eq!(missing.code, crate::error::Code::Unauthenticated);
        let mut basic = HeaderMap::new();
        basic.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YTpi"),
        );
        assert_eq!(
            auth.resolve(&basic).unwrap_err().code,
            crate::error::Code::Unauthenticated
        );
        let op = auth.resolve(&bearer("operator-key-for-tests")).unwrap();
        assert_eq!((op.tenant, op.role), (TenantId::operator(), Role::Admin));
        assert!(auth.resolve(&bearer("operator-key-for-tests-not")).is_err());
    }

    #[test]
    fn an_hs256_token_is_never_checked_against_a_public_key() {
        // Only public keys configured: the classic confusion signs HS256 with the public key.
        let dir = tempfile::tempdir().unwrap();
        let pem = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        let path = dir.path().join("keys.pem");
        std::fs::write(&path, pem).unwrap();
        let auth = Authenticator::new(&AuthSettings {
            keys_file: Some(path),
            ..AuthSettings::default()
        })
        .unwrap();
        let token = sign(serde_json::json!({"sub": "a", "exp": now() + 60}), pem);
        let e = auth.resolve(&bearer(&token)).unwrap_err();
        assert!(e.detail.contains("no JWT secret"), "{}", e.detail);
    }

    #[test]
    fn unusable_settings_say_why() {
        let short = Authenticator::new(&AuthSettings {
            secret: Some(Secret::new("short")),
            ..AuthSettings::default()
        });
        assert!(short.unwrap_err().to_string().contains("32 bytes"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.pem");
        std::fs::write(&path, "not a key").unwrap();
        let none = Authenticator::new(&AuthSettings {
            keys_file: Some(path),
            ..AuthSettings::default()
        });
        assert!(none.unwrap_err().to_string().contains("no public key"));
        assert!(
            pem_blocks(
                "x-----BEGIN A-----\nAA\n-----END A-----\n-----BEGIN B-----\nBB\n-----END B-----"
            )
            .len()
                == 2
        );
    }
}
