//! An issuer's public keys (its JWKS): fetched from the URL its discovery document names (or a
//! configured URL), or read from a file for air-gapped setups.
//!
//! Only signing keys of the accepted algorithms are kept: RSA (RS256, 2048 bits or more, as
//! aws-lc verifies), EC P-256 (ES256) and OKP Ed25519 (EdDSA). Symmetric keys (`kty: oct`) and
//! keys for encryption (`use: enc`) are skipped, so a token can never be checked with an HMAC of
//! a public key. A key that names its `alg` is used for that algorithm only.

use super::Alg;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::DecodingKey;
use serde_json::Value;
use std::time::Duration;

/// Upper bound of a discovery document or JWKS.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Upper bound of one fetch, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Most keys kept from one JWKS.
const MAX_KEYS: usize = 100;

/// One usable public key.
pub struct Key {
    pub kid: Option<String>,
    pub alg: Alg,
    pub key: DecodingKey,
}

/// The usable keys of a JWKS, and what was skipped (for the startup line and errors).
pub struct Parsed {
    pub keys: Vec<Key>,
    pub skipped: Vec<String>,
    /// The usable keys' JWKs as published, to tell when the keys change.
    pub fingerprint: String,
}

/// The algorithm a JWK verifies, if it is one of ours.
fn key_alg(jwk: &Jwk) -> Result<Alg, String> {
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Alg::Rs256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Alg::Es256,
        AlgorithmParameters::EllipticCurve(p) => {
            return Err(format!("EC curve {:?} (only P-256)", p.curve))
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => Alg::EdDsa,
        AlgorithmParameters::OctetKeyPair(p) => {
            return Err(format!("OKP curve {:?} (only Ed25519)", p.curve))
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err("a symmetric key (kty oct) is never used".to_owned())
        }
    };
    match jwk.common.key_algorithm {
        None => Ok(family),
        Some(a) => {
            let named = match a {
                KeyAlgorithm::RS256 => Some(Alg::Rs256),
                KeyAlgorithm::ES256 => Some(Alg::Es256),
                KeyAlgorithm::EdDSA => Some(Alg::EdDsa),
                _ => None,
            };
            match named {
                Some(n) if n == family => Ok(n),
                _ => Err(format!("alg {a:?} is not accepted for this key type")),
            }
        }
    }
}

/// Parses a JWKS document (`{"keys": [...]}`); `source` names it in errors. Keys that are not
/// usable are skipped with the reason; a document without any usable key is an error.
pub fn parse(bytes: &[u8], source: &str) -> Result<Parsed, String> {
    let doc: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("the JWKS from {source} is not JSON: {e}"))?;
    let Some(list) = doc.get("keys").and_then(Value::as_array) else {
        return Err(format!("the JWKS from {source} has no \"keys\" array"));
    };
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    let mut fingerprint = String::new();
    if list.len() > MAX_KEYS * 2 {
        return Err(format!(
            "the JWKS from {source} holds {} keys (at most {} are read)",
            list.len(),
            MAX_KEYS * 2
        ));
    }
    for (i, raw) in list.iter().enumerate() {
        let kid = raw.get("kid").and_then(Value::as_str).map(str::to_owned);
        let shown = match &kid {
            Some(k) => format!("key {k:?}"),
            None => format!("key #{i}"),
        };
        let jwk: Jwk = match serde_json::from_value(raw.clone()) {
            Ok(j) => j,
            Err(e) => {
                skipped.push(format!("{shown}: not a JWK this server reads ({e})"));
                continue;
            }
        };
        if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
            skipped.push(format!("{shown}: not a signing key (use is not \"sig\")"));
            continue;
        }
        let alg = match key_alg(&jwk) {
            Ok(a) => a,
            Err(why) => {
                skipped.push(format!("{shown}: {why}"));
                continue;
            }
        };
        match DecodingKey::from_jwk(&jwk) {
            Ok(key) if keys.len() < MAX_KEYS => {
                fingerprint.push_str(&raw.to_string());
                fingerprint.push('\n');
                keys.push(Key { kid, alg, key })
            }
            Ok(_) => skipped.push(format!("{shown}: more than {MAX_KEYS} keys")),
            Err(e) => skipped.push(format!("{shown}: invalid key ({e})")),
        }
    }
    if keys.is_empty() {
        let why = if skipped.is_empty() {
            "it is empty".to_owned()
        } else {
            skipped.join("; ")
        };
        return Err(format!(
            "the JWKS from {source} holds no usable signing key (RS256, ES256 or EdDSA): {why}"
        ));
    }
    Ok(Parsed {
        keys,
        skipped,
        fingerprint,
    })
}

/// Whether `url` may be fetched: https, or http to a loopback host (tests, sidecars).
pub fn check_url(url: &str, what: &str) -> Result<(), String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("{what} {url:?} is not a URL: {e}"))?;
    let host = parsed.host_str().unwrap_or("");
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(format!(
            "{what} {url:?} must use https (plain http only to a loopback address): keys \
             fetched in the clear could be replaced on the way"
        )),
        other => Err(format!(
            "{what} {url:?}: unsupported scheme {other:?} (https)"
        )),
    }
}

/// The HTTP client for discovery and JWKS fetches: bounded, no redirects.
pub fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(FETCH_TIMEOUT)
        .timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("nx-open-cache/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot set up the HTTP client for OIDC keys: {e}"))
}

/// GET `url`, at most [`MAX_DOCUMENT_BYTES`], 200 only.
async fn get(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", crate::store::http::chain(&e)))?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(format!("GET {url}: answered {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("GET {url}: the body was cut: {e}"))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!(
                "GET {url}: the document is larger than {MAX_DOCUMENT_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The `jwks_uri` of `issuer`'s discovery document, which must name the same issuer.
pub async fn discover(client: &reqwest::Client, issuer: &str) -> Result<String, String> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let body = get(client, &url).await?;
    let doc: Value = serde_json::from_slice(&body)
        .map_err(|e| format!("the discovery document {url} is not JSON: {e}"))?;
    match doc.get("issuer").and_then(Value::as_str) {
        Some(i) if i == issuer => {}
        Some(i) => {
            return Err(format!(
                "the discovery document {url} is for issuer {i:?}, not {issuer:?}"
            ))
        }
        None => return Err(format!("the discovery document {url} names no issuer")),
    }
    let Some(jwks) = doc.get("jwks_uri").and_then(Value::as_str) else {
        return Err(format!("the discovery document {url} has no jwks_uri"));
    };
    check_url(jwks, &format!("jwks_uri of {url}"))?;
    Ok(jwks.to_owned())
}

/// Fetches and parses the JWKS at `url`.
pub async fn fetch(client: &reqwest::Client, url: &str) -> Result<Parsed, String> {
    let body = get(client, url).await?;
    parse(&body, url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_signing_keys_of_the_accepted_algorithms_are_kept() {
        let ed =
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, [7u8; 32]);
        let doc = serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": ed, "kid": "ed", "use": "sig"},
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "OKP", "crv": "Ed25519", "x": ed, "kid": "enc", "use": "enc"},
            {"kty": "OKP", "crv": "Ed25519", "x": ed, "kid": "wrong-alg", "alg": "RS256"},
            {"kty": "whatever", "kid": "odd"}
        ]});
        let parsed = parse(doc.to_string().as_bytes(), "test").map_err(|e| e.to_string());
        let parsed = parsed.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.keys.len(), 1);
        assert_eq!(parsed.keys[0].kid.as_deref(), Some("ed"));
        assert_eq!(parsed.keys[0].alg, Alg::EdDsa);
        assert_eq!(parsed.skipped.len(), 4, "{:?}", parsed.skipped);
        let only_hmac = serde_json::json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]});
        let e = parse(only_hmac.to_string().as_bytes(), "x")
            .err()
            .unwrap_or_default();
        assert!(
            e.contains("no usable signing key") && e.contains("symmetric"),
            "{e}"
        );
        assert!(parse(b"[]", "x").is_err());
        assert!(parse(b"not json", "x").is_err());
    }

    #[test]
    fn key_urls_are_https_or_loopback_http() {
        assert!(check_url(
            "https://token.actions.githubusercontent.com/.well-known/jwks",
            "u"
        )
        .is_ok());
        assert!(check_url("http://127.0.0.1:8080/jwks", "u").is_ok());
        assert!(check_url("http://[::1]:8080/jwks", "u").is_ok());
        assert!(check_url("http://localhost/jwks", "u").is_ok());
        let e = check_url("http://issuer.example.com/jwks", "jwks_url")
            .err()
            .unwrap_or_default();
        assert!(
            e.contains("must use https") && e.contains("issuer.example.com"),
            "{e}"
        );
        assert!(check_url("file:///etc/jwks", "u").is_err());
        assert!(check_url("not a url", "u").is_err());
    }
}
