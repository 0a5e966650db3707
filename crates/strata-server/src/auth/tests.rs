//! Bearer verification: claims, clock leeway, issuer and audience, forgeries.
use super::keys::pem_blocks;
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

/// Property-based fuzzing of bearer parsing: arbitrary credentials and valid tokens with
/// characters replaced, inserted or cut. Run longer by hand with `PROPTEST_CASES=100000`.
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";

    proptest! {
        #[test]
        fn arbitrary_credentials_are_refused_without_panicking(value in "[ -~]{0,300}") {
            let auth = Authenticator::new(&settings()).unwrap();
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::try_from(value.as_str()) {
                h.insert(header::AUTHORIZATION, v);
            }
            prop_assert!(auth.resolve(&h).is_err());
        }

        #[test]
        fn a_mutated_token_never_acts_for_anyone_else(
            edits in prop::collection::vec((any::<usize>(), any::<usize>(), 0u8..3), 1..6),
        ) {
            let auth = Authenticator::new(&settings()).unwrap();
            let token = sign(
                serde_json::json!({"sub": "alice", "role": "user", "exp": now() + 600}),
                SECRET,
            );
            let mut t = token.clone().into_bytes();
            for (at, ch, op) in edits {
                let c = B64URL[ch % B64URL.len()];
                match op {
                    0 if !t.is_empty() => {
                        let i = at % t.len();
                        t[i] = c;
                    }
                    1 => {
                        let i = at % (t.len() + 1);
                        t.insert(i, c);
                    }
                    _ => {
                        let i = at % (t.len() + 1);
                        t.truncate(i);
                    }
                }
            }
            let mutated = String::from_utf8(t).unwrap();
            if let Ok(caller) = auth.resolve(&bearer(&mutated)) {
                // Base64 has spellings that decode alike; the claims must be the signed ones.
                prop_assert_eq!(caller.tenant.as_str(), "alice");
                prop_assert_eq!(caller.role, Role::User);
            }
        }
    }
}
