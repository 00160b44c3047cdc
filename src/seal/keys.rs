//! Keys and settings of the seal layer: parsing (with errors that name the option or variable but
//! never echo a secret), key ids, and key generation for `nx-open-cache keygen`.

use crate::value::{bool_option, bool_word, ConfigError};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use zeroize::Zeroizing;

/// The variable holding the Ed25519 secret key (base64 of the 32-byte seed) of trusted writers.
pub const SIGNING_KEY_VAR: &str = "NX_OPEN_CACHE_SIGNING_KEY";
/// The variable holding the encryption keys: one key, or a comma-separated list (the first
/// encrypts, all decrypt).
pub const ENCRYPTION_KEY_VAR: &str = "NX_OPEN_CACHE_ENCRYPTION_KEY";

/// Overrides the `requireSignature` option (`true` / `false`).
pub const REQUIRE_SIGNATURE_VAR: &str = "NX_OPEN_CACHE_REQUIRE_SIGNATURE";

/// An 8-byte key id, shown as 16 hex digits.
pub type KeyId = [u8; 8];

pub fn show_id(id: &KeyId) -> String {
    hex::encode(id)
}

/// A symmetric XChaCha20-Poly1305 key and its id (first 8 bytes of a domain-separated SHA-256 of
/// the key: it names the key without revealing it).
#[derive(Clone)]
pub struct EncryptionKey {
    pub id: KeyId,
    pub key: Zeroizing<[u8; 32]>,
}

impl EncryptionKey {
    pub fn new(key: [u8; 32]) -> Self {
        let key = Zeroizing::new(key);
        let mut h = Sha256::new();
        h.update(b"nx-open-cache encryption key id v1");
        h.update(key.as_slice());
        let digest: [u8; 32] = h.finalize().into();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        EncryptionKey { id, key }
    }
}

/// Shows the id only.
impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionKey({})", show_id(&self.id))
    }
}

/// The signer id of a public key: its first 8 bytes.
pub fn signer_id(key: &VerifyingKey) -> KeyId {
    let mut id = [0u8; 8];
    id.copy_from_slice(&key.as_bytes()[..8]);
    id
}

/// What the seal layer does: sign, verify, encrypt, decrypt. The default does nothing (objects
/// are stored as before).
#[derive(Clone, Default)]
pub struct SealConfig {
    /// `trustedKeys`: public keys whose signatures are accepted.
    pub trusted_keys: Vec<VerifyingKey>,
    /// `requireSignature`: refuse unsigned artifacts (and signatures by keys not trusted).
    pub require_signature: bool,
    /// `NX_OPEN_CACHE_SIGNING_KEY`: sign every write.
    pub signing_key: Option<SigningKey>,
    /// `NX_OPEN_CACHE_ENCRYPTION_KEY`: the first encrypts, all decrypt.
    pub encryption_keys: Vec<EncryptionKey>,
}

impl SealConfig {
    /// True when any setting is on (the store is then wrapped).
    pub fn is_active(&self) -> bool {
        !self.trusted_keys.is_empty()
            || self.require_signature
            || self.signing_key.is_some()
            || !self.encryption_keys.is_empty()
    }

    /// The keys whose signatures are accepted: `trustedKeys` plus this writer's own key.
    pub fn verifying_keys(&self) -> Vec<VerifyingKey> {
        let mut keys = self.trusted_keys.clone();
        if let Some(k) = &self.signing_key {
            let own = k.verifying_key();
            if !keys.contains(&own) {
                keys.push(own);
            }
        }
        keys
    }

    /// e.g. `signs with key 1a2b..., encrypts with key 3c4d..., requires signatures by 2 trusted keys`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(k) = &self.signing_key {
            parts.push(format!(
                "signs with key {}",
                show_id(&signer_id(&k.verifying_key()))
            ));
        }
        if let Some(k) = self.encryption_keys.first() {
            let more = self.encryption_keys.len() - 1;
            parts.push(match more {
                0 => format!("encrypts with key {}", show_id(&k.id)),
                n => format!("encrypts with key {} ({n} more decrypt)", show_id(&k.id)),
            });
        }
        let n = self.trusted_keys.len();
        let keys = if n == 1 {
            "1 trusted key".to_owned()
        } else {
            format!("{n} trusted keys")
        };
        if self.require_signature {
            parts.push(format!("requires signatures by {keys}"));
        } else if n > 0 {
            parts.push(format!("checks signatures by {keys}"));
        }
        parts.join(", ")
    }
}

impl PartialEq for SealConfig {
    fn eq(&self, other: &Self) -> bool {
        let ids = |c: &SealConfig| c.encryption_keys.iter().map(|k| k.id).collect::<Vec<_>>();
        self.trusted_keys == other.trusted_keys
            && self.require_signature == other.require_signature
            && self.signing_key.as_ref().map(SigningKey::verifying_key)
                == other.signing_key.as_ref().map(SigningKey::verifying_key)
            && ids(self) == ids(other)
    }
}

impl Eq for SealConfig {}

/// Never prints a secret: key ids only.
impl fmt::Debug for SealConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealConfig")
            .field(
                "trusted_keys",
                &self
                    .trusted_keys
                    .iter()
                    .map(|k| STANDARD.encode(k.as_bytes()))
                    .collect::<Vec<_>>(),
            )
            .field("require_signature", &self.require_signature)
            .field(
                "signing_key_id",
                &self
                    .signing_key
                    .as_ref()
                    .map(|k| show_id(&signer_id(&k.verifying_key()))),
            )
            .field(
                "encryption_key_ids",
                &self
                    .encryption_keys
                    .iter()
                    .map(|k| show_id(&k.id))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Decodes 32 bytes given as base64 (standard or URL-safe, padded or not) or 64 hex digits. The
/// error says what is wrong without repeating the value.
pub fn decode_key32(raw: &str) -> Result<Zeroizing<[u8; 32]>, String> {
    let s = raw.trim();
    if s.is_empty() {
        return Err("it is empty".into());
    }
    let decoded: Option<Zeroizing<Vec<u8>>> =
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(s).ok().map(Zeroizing::new)
        } else {
            [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                .iter()
                .find_map(|e| e.decode(s).ok())
                .map(Zeroizing::new)
        };
    match decoded {
        None => Err("it is neither base64 nor 64 hex digits".into()),
        Some(b) if b.len() != 32 => Err(format!("it decodes to {} bytes, not 32", b.len())),
        Some(b) => {
            let mut out = Zeroizing::new([0u8; 32]);
            out.copy_from_slice(&b);
            Ok(out)
        }
    }
}

/// A public key from `trustedKeys` (public: the value may be shown).
pub fn parse_public_key(raw: &str) -> Result<VerifyingKey, String> {
    let bytes = decode_key32(raw)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "it is not a valid Ed25519 public key".into())
}

/// `NX_OPEN_CACHE_SIGNING_KEY`: the base64 32-byte seed printed by `nx-open-cache keygen`.
pub fn parse_signing_key(raw: &str) -> Result<SigningKey, String> {
    let bytes = decode_key32(raw)?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// `NX_OPEN_CACHE_ENCRYPTION_KEY`: one key or a comma-separated list; the error names the entry.
pub fn parse_encryption_keys(raw: &str) -> Result<Vec<EncryptionKey>, String> {
    let mut keys: Vec<EncryptionKey> = Vec::new();
    let entries: Vec<&str> = raw.split(',').map(str::trim).collect();
    let many = entries.len() > 1;
    for (i, entry) in entries.iter().enumerate() {
        if entry.is_empty() && many {
            continue;
        }
        let key = decode_key32(entry).map_err(|why| {
            if many {
                format!("entry {} of the list: {why}", i + 1)
            } else {
                why
            }
        })?;
        let key = EncryptionKey::new(*key);
        if !keys.iter().any(|k| k.id == key.id) {
            keys.push(key);
        }
    }
    if keys.is_empty() {
        return Err("it is empty".into());
    }
    Ok(keys)
}

fn random32() -> Result<Zeroizing<[u8; 32]>, String> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice())
        .map_err(|e| format!("the system random number generator failed: {e}"))?;
    Ok(seed)
}

/// A new key pair: (public key for `trustedKeys`, secret key for `NX_OPEN_CACHE_SIGNING_KEY`),
/// both base64.
pub fn generate_signing_key() -> Result<(String, Zeroizing<String>), String> {
    let seed = random32()?;
    let key = SigningKey::from_bytes(&seed);
    Ok((
        STANDARD.encode(key.verifying_key().as_bytes()),
        Zeroizing::new(STANDARD.encode(seed.as_slice())),
    ))
}

/// A new encryption key for `NX_OPEN_CACHE_ENCRYPTION_KEY`, base64.
pub fn generate_encryption_key() -> Result<Zeroizing<String>, String> {
    let key = random32()?;
    Ok(Zeroizing::new(STANDARD.encode(key.as_slice())))
}

/// Options of the seal layer in the plugin options (the secrets come from the environment only).
pub const OPTIONS: &[&str] = &["trustedKeys", "requireSignature"];

fn config_error(option: &str, message: String) -> ConfigError {
    ConfigError::new(option, message)
}

/// What `trustedKeys` holds, for error messages.
const TRUSTED_KEYS_FORM: &str = "expected base64 Ed25519 public keys of 32 bytes, as printed by \
     `nx-open-cache keygen`";

/// What kind of JSON value `v` is, without its content (which may be a secret).
fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The public key of `bytes` taken as a secret key (an Ed25519 seed).
fn public_of_seed(bytes: &[u8; 32]) -> VerifyingKey {
    SigningKey::from_bytes(bytes).verifying_key()
}

/// One entry of `trustedKeys` (1-based `n`). A bad entry is never shown: it may be a secret key
/// pasted in the wrong place (a secret decodes to 32 bytes as well); the message then gives the
/// key id of the public key that secret would have.
fn trusted_key(n: usize, item: &Value) -> Result<VerifyingKey, ConfigError> {
    let bad = |why: String| {
        config_error(
            "trustedKeys",
            format!("invalid entry {n} of option \"trustedKeys\": {why}; {TRUSTED_KEYS_FORM}"),
        )
    };
    let Value::String(s) = item else {
        return Err(bad(format!("it is {}, not a string", kind_of(item))));
    };
    let bytes = decode_key32(s).map_err(|why| bad(format!("{why} (value not shown)")))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| {
        bad(format!(
            "it is not an Ed25519 public key (value not shown); if it is a secret key (the value \
             of {SIGNING_KEY_VAR}), its public key has key id {}: list that public key instead \
             and keep the secret key out of nx.json",
            show_id(&signer_id(&public_of_seed(&bytes)))
        ))
    })
}

/// `trustedKeys`: an array of public keys; an entry that is the secret key of another entry is
/// refused (without showing it).
fn trusted_keys(
    options: &serde_json::Map<String, Value>,
) -> Result<Vec<VerifyingKey>, ConfigError> {
    let items = match options.get("trustedKeys") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(config_error(
                "trustedKeys",
                format!(
                    "option \"trustedKeys\" must be an array of base64 Ed25519 public keys \
                     (from `nx-open-cache keygen`), got {} (value not shown)",
                    kind_of(other)
                ),
            ))
        }
    };
    let keys = items
        .iter()
        .enumerate()
        .map(|(i, item)| trusted_key(i + 1, item))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, key) in keys.iter().enumerate() {
        let public = public_of_seed(key.as_bytes());
        if let Some(j) = keys.iter().position(|k| *k == public) {
            return Err(config_error(
                "trustedKeys",
                format!(
                    "entry {} of option \"trustedKeys\" is a secret key: its public key (key id \
                     {}) is entry {} (value not shown); remove the secret key from nx.json, and \
                     since it was there, make a new key pair with `nx-open-cache keygen`",
                    i + 1,
                    show_id(&signer_id(&public)),
                    j + 1
                ),
            ));
        }
    }
    Ok(keys)
}

/// `NX_OPEN_CACHE_SIGNING_KEY` must not be one of the trusted public keys: a run with it would
/// sign with a key anyone can derive from the committed public key, and trust those signatures.
fn keys_in_their_places(trusted: &[VerifyingKey], signing: &SigningKey) -> Result<(), ConfigError> {
    let seed = Zeroizing::new(signing.to_bytes());
    if let Some(i) = trusted.iter().position(|k| k.as_bytes() == &*seed) {
        return Err(config_error(
            SIGNING_KEY_VAR,
            format!(
                "{SIGNING_KEY_VAR} is not a secret key: the value is a public key (key id {}, \
                 entry {} of \"trustedKeys\"); set it to the secret key `nx-open-cache keygen` \
                 printed with that public key (value not shown; if that entry of trustedKeys is \
                 the secret key instead, replace it there with the public key: a secret key does \
                 not belong in nx.json)",
                show_id(&signer_id(&trusted[i])),
                i + 1
            ),
        ));
    }
    Ok(())
}

/// The seal settings from the plugin options (`trustedKeys`, `requireSignature`) and the
/// environment (`NX_OPEN_CACHE_SIGNING_KEY`, `NX_OPEN_CACHE_ENCRYPTION_KEY`). `http`: the
/// upstream server decides, so every setting is refused by name. A secret is never echoed.
pub fn from_options(
    options: &serde_json::Map<String, Value>,
    env: &HashMap<String, String>,
    http: bool,
) -> Result<SealConfig, ConfigError> {
    let set = |v: &&String| !v.trim().is_empty();
    if http {
        for name in OPTIONS {
            if options.get(*name).is_some_and(|v| !v.is_null()) {
                return Err(config_error(
                    name,
                    format!(
                        "option \"{name}\" does not apply to backend \"http\": the server decides \
                         what it stores and serves (give untrusted builds tokens that cannot write \
                         where trusted builds read)"
                    ),
                ));
            }
        }
        for var in [SIGNING_KEY_VAR, ENCRYPTION_KEY_VAR] {
            if env.get(var).filter(set).is_some() {
                return Err(config_error(
                    var,
                    format!(
                        "{var} is set but backend \"http\" does not sign or encrypt artifacts \
                         (the server stores them); unset it for this workspace"
                    ),
                ));
            }
        }
        return Ok(SealConfig::default());
    }
    let trusted_keys = trusted_keys(options)?;
    let require_signature = bool_option(options, "requireSignature")?.unwrap_or(false);
    // The variable wins: pull-request jobs of a workspace whose nx.json requires signatures may
    // relax it for themselves (it only changes what that job restores).
    let require_signature = match env.get(REQUIRE_SIGNATURE_VAR) {
        None => require_signature,
        Some(v) if v.trim().is_empty() => require_signature,
        Some(v) => bool_word(v).ok_or_else(|| {
            config_error(
                REQUIRE_SIGNATURE_VAR,
                format!(
                    "invalid value {:?} for {REQUIRE_SIGNATURE_VAR}: expected true or false",
                    v.trim().to_ascii_lowercase()
                ),
            )
        })?,
    };
    if require_signature && trusted_keys.is_empty() {
        return Err(config_error(
            "requireSignature",
            "option \"requireSignature\" (or NX_OPEN_CACHE_REQUIRE_SIGNATURE) is true but \"trustedKeys\" is empty: list the public \
             keys of the trusted writers (`nx-open-cache keygen` prints a key pair)"
                .to_owned(),
        ));
    }
    let signing_key = match env.get(SIGNING_KEY_VAR).filter(set) {
        None => None,
        Some(raw) => Some(parse_signing_key(raw).map_err(|why| {
            config_error(
                SIGNING_KEY_VAR,
                format!(
                    "{SIGNING_KEY_VAR} is not a valid signing key: {why}; expected the base64 \
                     secret key of 32 bytes printed by `nx-open-cache keygen` (value not shown)"
                ),
            )
        })?),
    };
    if let Some(key) = &signing_key {
        keys_in_their_places(&trusted_keys, key)?;
    }
    let encryption_keys = match env.get(ENCRYPTION_KEY_VAR).filter(set) {
        None => Vec::new(),
        Some(raw) => parse_encryption_keys(raw).map_err(|why| {
            config_error(
                ENCRYPTION_KEY_VAR,
                format!(
                    "{ENCRYPTION_KEY_VAR} is not a valid encryption key: {why}; expected 32 bytes \
                     as base64 or 64 hex digits (`nx-open-cache keygen --encryption`), or a \
                     comma-separated list of them (the first encrypts, all decrypt); it may come \
                     from the deprecated plugins' encryptionKey in nx.json (value not shown)"
                ),
            )
        })?,
    };
    Ok(SealConfig {
        trusted_keys,
        require_signature,
        signing_key,
        encryption_keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_errors_hide_values() {
        let (public, secret) = generate_signing_key().unwrap();
        let sk = parse_signing_key(&secret).unwrap();
        assert_eq!(STANDARD.encode(sk.verifying_key().as_bytes()), public);
        assert_eq!(parse_public_key(&public).unwrap(), sk.verifying_key());
        let hexed = hex::encode(sk.verifying_key().as_bytes());
        assert_eq!(parse_public_key(&hexed).unwrap(), sk.verifying_key());
        let err = parse_signing_key("c2VjcmV0LXZhbHVl").unwrap_err();
        assert!(
            err.contains("12 bytes") && !err.contains("c2VjcmV0"),
            "{err}"
        );
        assert!(parse_signing_key("not base64 !!")
            .unwrap_err()
            .contains("neither"));

        let a = generate_encryption_key().unwrap();
        let b = generate_encryption_key().unwrap();
        let keys = parse_encryption_keys(&format!("{}, {}", *a, *b)).unwrap();
        assert_eq!(keys.len(), 2);
        assert_ne!(keys[0].id, keys[1].id);
        let err = parse_encryption_keys(&format!("{},short", *a)).unwrap_err();
        assert!(err.contains("entry 2"), "{err}");
        assert!(parse_encryption_keys(" ").is_err());
        let c = SealConfig {
            signing_key: Some(sk),
            encryption_keys: keys,
            ..SealConfig::default()
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains(secret.as_str()) && !shown.contains(a.as_str()),
            "{shown}"
        );
    }
}
