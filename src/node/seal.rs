//! Bindings for `crate::seal::keys`: `keygen` / `encryptionKeygen` (what `nx-open-cache keygen`
//! prints).

use crate::seal::keys;
use napi::bindgen_prelude::*;
use napi_derive::napi;

/// A new Ed25519 key pair for signed artifacts.
#[napi(object)]
pub struct SigningKeyPair {
    /// Base64 public key: list it in the plugin options' `trustedKeys` (safe to commit).
    pub public_key: String,
    /// Base64 secret key (32-byte seed): `NX_OPEN_CACHE_SIGNING_KEY` of trusted writers only.
    pub secret_key: String,
    /// The key id shown in warnings (first 8 bytes of the public key, hex).
    pub key_id: String,
}

/// Generates a signing key pair from the system's random number generator.
#[napi(catch_unwind)]
pub fn keygen() -> Result<SigningKeyPair> {
    let (public_key, secret) = keys::generate_signing_key().map_err(Error::from_reason)?;
    let parsed = keys::parse_public_key(&public_key).map_err(Error::from_reason)?;
    Ok(SigningKeyPair {
        key_id: keys::show_id(&keys::signer_id(&parsed)),
        public_key,
        secret_key: secret.to_string(),
    })
}

/// A new encryption key for artifacts.
#[napi(object)]
pub struct EncryptionKeyInfo {
    /// Base64 32-byte key: `NX_OPEN_CACHE_ENCRYPTION_KEY` (a secret).
    pub key: String,
    /// The key id shown in warnings (hex).
    pub key_id: String,
}

/// Generates an XChaCha20-Poly1305 encryption key from the system's random number generator.
#[napi(catch_unwind)]
pub fn encryption_keygen() -> Result<EncryptionKeyInfo> {
    let key = keys::generate_encryption_key().map_err(Error::from_reason)?;
    let parsed = keys::parse_encryption_keys(&key).map_err(Error::from_reason)?;
    let key_id = parsed
        .first()
        .map(|k| keys::show_id(&k.id))
        .unwrap_or_default();
    Ok(EncryptionKeyInfo {
        key: key.to_string(),
        key_id,
    })
}

/// The key id of a public key (as `nx-open-cache keygen` prints it, e.g. for a `trustedKeys`
/// entry). Throws naming what is wrong, without the value.
#[napi(catch_unwind)]
pub fn public_key_id(public_key: String) -> Result<String> {
    keys::public_key_id(&public_key).map_err(|why| Error::new(Status::InvalidArg, why))
}
