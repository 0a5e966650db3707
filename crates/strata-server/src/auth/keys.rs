//! The public keys of a PEM file or a JWKS document, and which algorithms each checks.

use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::AuthError;

/// Which public keys can check an algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    Rsa,
    Ec,
    Ed,
}

pub(super) fn family(alg: Algorithm) -> Option<Family> {
    use Algorithm::*;
    match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Some(Family::Rsa),
        ES256 | ES384 => Some(Family::Ec),
        EdDSA => Some(Family::Ed),
        HS256 | HS384 | HS512 => None,
    }
}

pub(super) struct PublicKey {
    pub(super) kid: Option<String>,
    pub(super) family: Family,
    pub(super) key: DecodingKey,
}

/// What a keys file held when it was read.
#[derive(Default)]
pub(super) struct KeySet {
    pub(super) keys: Vec<PublicKey>,
    /// The file's stamp when it was read, so a change after it is noticed.
    pub(super) stamp: crate::watch::Stamp,
}

/// Reads a JWKS document (JSON with `keys`) or PEM blocks of public keys.
pub(super) fn read_keys(path: &Path) -> Result<KeySet, AuthError> {
    let fail = |why: String| AuthError(format!("jwt_keys {}: {why}", path.display()));
    let stamp = crate::watch::stamp(path);
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
    Ok(KeySet { keys, stamp })
}

/// Each `-----BEGIN ...-----` ... `-----END ...-----` block of a PEM file.
pub(super) fn pem_blocks(text: &str) -> Vec<&str> {
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
