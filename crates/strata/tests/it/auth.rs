//! Bearer authentication over HTTP: HS256 tokens and the operator key, public keys from PEM
//! and JWKS files (made by openssl here), their reload, and the 401/403 answers.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use strata_server::auth::{AuthSettings, Authenticator, Secret};

use crate::helpers::{TestServer, assert_problem};

const SECRET: &str = "http-test-secret-http-test-secret-0123";
const OPERATOR_KEY: &str = "operator-key-http-tests";

async fn server(settings: AuthSettings) -> TestServer {
    let auth = Arc::new(Authenticator::new(&settings).unwrap());
    TestServer::start_custom(
        tempfile::tempdir().unwrap(),
        |e| e.jobs.workers = 0,
        move |srv| srv.identity = strata_server::caller::Identity::Token(auth),
    )
    .await
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn hs256(claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn call(s: &TestServer, method: &str, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut r = s.client.request(
        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
        s.url(path),
    );
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if method == "POST" && path == "/v1/documents" {
        r = r.json(&json!({"text": "a private note", "title": "note"}));
    } else if method == "POST" {
        r = r.json(&json!({}));
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn tokens_name_the_tenant_and_the_role() {
    let s = server(AuthSettings {
        secret: Some(Secret::new(SECRET)),
        admin_key: Some(Secret::new(OPERATOR_KEY)),
        ..AuthSettings::default()
    })
    .await;
    let exp = now() + 600;
    let alice = hs256(json!({"sub": "alice", "exp": exp}));
    let bob = hs256(json!({"sub": "bob", "exp": exp}));
    let admin = hs256(json!({"sub": "ops", "role": "admin", "exp": exp}));

    // No credential: 401 with a Bearer challenge.
    let r = call(&s, "GET", "/v1/documents", None).await;
    assert_eq!(
        r.headers()["www-authenticate"].to_str().unwrap(),
        r#"Bearer realm="strata""#
    );
    assert_problem(r, 401, "unauthenticated").await;

    // Each tenant sees only its own documents.
    let r = call(&s, "POST", "/v1/documents", Some(&alice)).await;
    assert_eq!(r.status(), 202);
    let doc: Value = r.json().await.unwrap();
    let id = doc["document"]["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/documents/{id}");
    assert_eq!(call(&s, "GET", &path, Some(&alice)).await.status(), 200);
    assert_problem(call(&s, "GET", &path, Some(&bob)).await, 404, "not_found").await;
    assert_problem(
        call(&s, "GET", &path, Some(OPERATOR_KEY)).await,
        404,
        "not_found",
    )
    .await;

    // Operator endpoints: the admin role or the operator key.
    for token in [&alice, &bob] {
        let r = call(&s, "POST", "/v1/performance/cache/clear", Some(token)).await;
        assert_problem(r, 403, "forbidden").await;
    }
    for token in [admin.as_str(), OPERATOR_KEY] {
        let r = call(&s, "POST", "/v1/performance/cache/clear", Some(token)).await;
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
    }

    // Invalid and expired tokens: 401 with error="invalid_token", and never echoed.
    let expired = hs256(json!({"sub": "alice", "exp": now() - 3600}));
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "alice", "exp": exp}),
        &EncodingKey::from_secret(b"not-the-secret-not-the-secret-00000"),
    )
    .unwrap();
    for (token, code) in [
        (expired.as_str(), "token_expired"),
        (forged.as_str(), "invalid_token"),
        ("garbage", "invalid_token"),
    ] {
        let r = call(&s, "GET", "/v1/documents", Some(token)).await;
        let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{challenge}"
        );
        let body = assert_problem(r, 401, code).await;
        assert!(!body.to_string().contains(token), "{body}");
        assert!(!challenge.contains(token), "{challenge}");
    }
    // Health and metrics stay open.
    assert_eq!(call(&s, "GET", "/healthz", None).await.status(), 200);
    s.stop().await;
}

/// A key pair made by openssl: (private PEM, public PEM, public DER).
fn keypair(dir: &Path, name: &str, algorithm: &[&str]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let private = dir.join(format!("{name}.key"));
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let p = private.to_str().unwrap();
    let mut genpkey = vec!["genpkey", "-out", p];
    genpkey.extend_from_slice(algorithm);
    run(&genpkey);
    let public_pem = run(&["pkey", "-in", p, "-pubout"]);
    let public_der = run(&["pkey", "-in", p, "-pubout", "-outform", "DER"]);
    (std::fs::read(&private).unwrap(), public_pem, public_der)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn signed(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, sub: &str) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(Into::into);
    jsonwebtoken::encode(&header, &json!({"sub": sub, "exp": now() + 600}), key).unwrap()
}

/// A JWKS document with one P-256 key (its public point is the DER's last 65 bytes).
fn ec_jwks(kid: &str, public_der: &[u8]) -> String {
    let point = &public_der[public_der.len() - 65..];
    json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
        "x": b64(&point[1..33]), "y": b64(&point[33..]),
    }]})
    .to_string()
}

#[tokio::test]
async fn public_keys_from_pem_and_jwks_files_and_their_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (rsa, rsa_pub, _) = keypair(
        dir.path(),
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let (ed, ed_pub, _) = keypair(dir.path(), "ed", &["-algorithm", "ED25519"]);
    let rsa_key = EncodingKey::from_rsa_pem(&rsa).unwrap();
    let ed_key = EncodingKey::from_ed_pem(&ed).unwrap();

    // A PEM file with two public keys: each verifies its own tokens.
    let pem_path = dir.path().join("keys.pem");
    std::fs::write(&pem_path, [rsa_pub.clone(), ed_pub].concat()).unwrap();
    let s = server(AuthSettings {
        keys_file: Some(pem_path),
        ..AuthSettings::default()
    })
    .await;
    for token in [
        signed(Algorithm::RS256, &rsa_key, None, "alice"),
        signed(Algorithm::EdDSA, &ed_key, None, "alice"),
    ] {
        assert_eq!(
            call(&s, "GET", "/v1/documents", Some(&token))
                .await
                .status(),
            200
        );
    }
    // The public key used as an HS256 secret (algorithm confusion) is refused.
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "alice", "exp": now() + 600}),
        &EncodingKey::from_secret(&rsa_pub),
    )
    .unwrap();
    assert_problem(
        call(&s, "GET", "/v1/documents", Some(&confused)).await,
        401,
        "invalid_token",
    )
    .await;
    s.stop().await;

    // A JWKS file, keys chosen by kid; replacing the file rotates the key while serving.
    let (ec1, _, ec1_der) = keypair(
        dir.path(),
        "ec1",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let (ec2, _, ec2_der) = keypair(
        dir.path(),
        "ec2",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, ec_jwks("k1", &ec1_der)).unwrap();
    let s = server(AuthSettings {
        keys_file: Some(jwks_path.clone()),
        ..AuthSettings::default()
    })
    .await;
    let old = signed(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(&ec1).unwrap(),
        Some("k1"),
        "alice",
    );
    let new = signed(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(&ec2).unwrap(),
        Some("k2"),
        "alice",
    );
    assert_eq!(
        call(&s, "GET", "/v1/documents", Some(&old)).await.status(),
        200
    );
    assert_problem(
        call(&s, "GET", "/v1/documents", Some(&new)).await,
        401,
        "invalid_token",
    )
    .await;
    // A broken file is refused and the keys in use stay.
    std::fs::write(&jwks_path, "{ not json").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        call(&s, "GET", "/v1/documents", Some(&old)).await.status(),
        200
    );
    std::fs::write(&jwks_path, ec_jwks("k2", &ec2_der)).unwrap();
    let started = Instant::now();
    loop {
        let r = call(&s, "GET", "/v1/documents", Some(&new)).await;
        if r.status() == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the new key was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The rotated-out key no longer verifies, even for a token verified before.
    assert_problem(
        call(&s, "GET", "/v1/documents", Some(&old)).await,
        401,
        "invalid_token",
    )
    .await;
    s.stop().await;
}

/// What the operator key writes is read back as its own: its jobs are claimed, run and
/// listed (the key's tenant name has a space, which no parsed name may have; reading its
/// rows once failed as "corrupt owner", leaving its ingestion running forever).
#[tokio::test]
async fn the_operator_keys_documents_are_ingested_and_listed() {
    let auth = Arc::new(
        Authenticator::new(&AuthSettings {
            admin_key: Some(Secret::new(OPERATOR_KEY)),
            ..AuthSettings::default()
        })
        .unwrap(),
    );
    let s = TestServer::start_custom(
        tempfile::tempdir().unwrap(),
        |_| {},
        move |srv| srv.identity = strata_server::caller::Identity::Token(auth),
    )
    .await;
    let r = call(&s, "POST", "/v1/documents", Some(OPERATOR_KEY)).await;
    assert_eq!(r.status(), 202);
    let job = r.json::<Value>().await.unwrap()["job"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = call(&s, "GET", &format!("/v1/jobs/{job}"), Some(OPERATOR_KEY)).await;
        assert_eq!(r.status(), 200);
        let status = r.json::<Value>().await.unwrap()["status"].clone();
        if status == "succeeded" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "job still {status}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let r = call(&s, "GET", "/v1/jobs", Some(OPERATOR_KEY)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["items"][0]["id"],
        json!(job)
    );
}
