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

/// Set by the plugin (never by a user) when `NX_OPEN_CACHE_ENCRYPTION_KEY` comes from a deprecated
/// block's `encryptionKey` in nx.json: the block's name, e.g. `s3`, for the error about that key.
pub const ENCRYPTION_KEY_FROM_VAR: &str = "NX_OPEN_CACHE_ENCRYPTION_KEY_FROM";

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

    /// The key id of the signing key (`NX_OPEN_CACHE_SIGNING_KEY`), as `keygen` prints it.
    pub fn signing_key_id(&self) -> Option<String> {
        self.signing_key
            .as_ref()
            .map(|k| show_id(&signer_id(&k.verifying_key())))
    }

    /// The key ids of `trustedKeys`, in order.
    pub fn trusted_key_ids(&self) -> Vec<String> {
        self.trusted_keys
            .iter()
            .map(|k| show_id(&signer_id(k)))
            .collect()
    }

    /// The key ids of the encryption keys (the first encrypts).
    pub fn encryption_key_ids(&self) -> Vec<String> {
        self.encryption_keys
            .iter()
            .map(|k| show_id(&k.id))
            .collect()
    }

    /// The signing key's own public key is not in `trustedKeys`: this machine trusts its own
    /// signatures, every other machine refuses them (or, with `trustedKeys` empty, nobody checks
    /// them). The warning, if so.
    pub fn untrusted_signing_key(&self) -> Option<String> {
        let own = self.signing_key.as_ref()?.verifying_key();
        if self.trusted_keys.contains(&own) {
            return None;
        }
        let id = show_id(&signer_id(&own));
        let ids = self.trusted_key_ids();
        if ids.is_empty() {
            // Nobody checks signatures then: nothing is refused, and nothing is protected.
            return Some(format!(
                "{SIGNING_KEY_VAR} signs with key {id}, but no machine checks signatures \
                 (\"trustedKeys\" is empty), so signing protects nothing: add the public key of \
                 {id} to \"trustedKeys\" (`nx-open-cache keygen` printed it with the secret key)"
            ));
        }
        let listed = format!("\"trustedKeys\" lists {}", ids.join(", "));
        Some(format!(
            "{SIGNING_KEY_VAR} signs with key {id}, but {listed}: other machines will refuse \
             what this one signs (this one trusts its own key); add the public key of {id} to \
             \"trustedKeys\" (`nx-open-cache keygen` printed it with the secret key), or set \
             {SIGNING_KEY_VAR} to the secret key of a listed public key"
        ))
    }

    /// The keys, by id as `nx-open-cache keygen` prints them, e.g. `signs with key a64d...,
    /// trusts a64d..., 9f1c... (requires signatures), encrypts with key 3c4d...`; empty when
    /// nothing is set.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(id) = self.signing_key_id() {
            parts.push(format!("signs with key {id}"));
        }
        let trusted = self.trusted_key_ids();
        if !trusted.is_empty() {
            let required = if self.require_signature {
                " (requires signatures)"
            } else {
                ""
            };
            parts.push(format!("trusts {}{required}", trusted.join(", ")));
        }
        if let Some((first, rest)) = self.encryption_key_ids().split_first() {
            parts.push(match rest.len() {
                0 => format!("encrypts with key {first}"),
                n => format!(
                    "encrypts with key {first} ({n} more decrypt: {})",
                    rest.join(", ")
                ),
            });
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

/// The key id of a public key given as text; refuses (without the value) what is no public key,
/// and what looks like a secret key ([`looks_like_secret_key`]).
pub fn public_key_id(raw: &str) -> Result<String, String> {
    let bytes = decode_key32(raw).map_err(|why| format!("not a public key: {why}"))?;
    if looks_like_secret_key(&bytes) {
        return Err(
            "not a public key: it looks like a secret key (value not shown); `nx-open-cache \
             keygen` prints the public key beside it"
                .to_owned(),
        );
    }
    let key = parse_public_key(raw).map_err(|why| format!("not a public key: {why}"))?;
    Ok(show_id(&signer_id(&key)))
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

/// Whether 32 bytes cannot be a public key `nx-open-cache keygen` printed, so are most likely a
/// secret key: about half of all secret keys are no curve point at all, and a public key is always
/// in the prime-order subgroup, where only one curve point in eight lies. 15 of 16 secret keys are
/// told apart this way; the rest look exactly like public keys.
pub fn looks_like_secret_key(bytes: &[u8; 32]) -> bool {
    match VerifyingKey::from_bytes(bytes) {
        Err(_) => true,
        Ok(k) => !k.to_edwards().is_torsion_free(),
    }
}

/// One entry of `trustedKeys` (1-based `n`) as 32 bytes. A bad entry is never shown: it may be a
/// secret key pasted in the wrong place (a secret decodes to 32 bytes as well).
fn trusted_entry(n: usize, item: &Value) -> Result<Zeroizing<[u8; 32]>, ConfigError> {
    let bad = |why: String| {
        config_error(
            "trustedKeys",
            format!("invalid entry {n} of option \"trustedKeys\": {why}; {TRUSTED_KEYS_FORM}"),
        )
    };
    let Value::String(s) = item else {
        return Err(bad(format!("it is {}, not a string", kind_of(item))));
    };
    decode_key32(s).map_err(|why| bad(format!("{why} (value not shown)")))
}

/// An entry (1-based `n`) that is provably a secret key: `why` says how it is known.
fn secret_in_trusted_keys(n: usize, why: String) -> ConfigError {
    config_error(
        "trustedKeys",
        format!(
            "trustedKeys entry {n} is a secret key, not a public key (value not shown): {why}; \
             keep the secret key in {SIGNING_KEY_VAR} of the trusted builds only, and since it was \
             in nx.json, make a new key pair with `nx-open-cache keygen`"
        ),
    )
}

/// `trustedKeys`: an array of public keys. An entry that cannot be a public key is called a
/// secret key only when that is provable: it is the value of `NX_OPEN_CACHE_SIGNING_KEY`
/// (`signing`, its 32 bytes when it decodes), or its public key is another entry. Otherwise it
/// may as well be a public key with a typo, and the error says both (never a public key derived
/// from it as the one to list: nobody holds the secret of a typo).
fn trusted_keys(
    options: &serde_json::Map<String, Value>,
    signing: Option<&[u8; 32]>,
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
    let entries = items
        .iter()
        .enumerate()
        .map(|(i, item)| trusted_entry(i + 1, item))
        .collect::<Result<Vec<_>, _>>()?;
    let mut keys = Vec::with_capacity(entries.len());
    for (i, bytes) in entries.iter().enumerate() {
        let n = i + 1;
        let public = public_of_seed(bytes);
        let id = show_id(&signer_id(&public));
        let secret_like = looks_like_secret_key(bytes);
        // Equal to the signing key and no public key: the secret is in the wrong place. (Equal
        // and a valid public key: either place may be wrong; `keys_in_their_places` says so.)
        if secret_like && signing.is_some_and(|s| s == &**bytes) {
            return Err(secret_in_trusted_keys(
                n,
                format!(
                    "it is the value of {SIGNING_KEY_VAR}, whose public key is {} (key id {id}): \
                     list that in \"trustedKeys\" instead",
                    STANDARD.encode(public.as_bytes())
                ),
            ));
        }
        if let Some(j) = entries.iter().position(|e| **e == *public.as_bytes()) {
            return Err(secret_in_trusted_keys(
                n,
                format!(
                    "its public key (key id {id}) is entry {}; remove the secret key from nx.json",
                    j + 1
                ),
            ));
        }
        let key = match VerifyingKey::from_bytes(bytes) {
            Ok(key) if !secret_like => key,
            _ => {
                return Err(config_error(
                    "trustedKeys",
                    format!(
                        "trustedKeys entry {n} is not a valid public key (value not shown): a \
                         mistyped or truncated public key, or a secret key pasted by mistake (a \
                         secret key's public key would have key id {id}: if so, list the public \
                         key `nx-open-cache keygen` printed beside it, and if nx.json with the \
                         secret key was committed or shared, make a new key pair); \
                         {TRUSTED_KEYS_FORM}"
                    ),
                ))
            }
        };
        keys.push(key);
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
    let signing_seed = env
        .get(SIGNING_KEY_VAR)
        .filter(set)
        .and_then(|raw| decode_key32(raw).ok());
    let trusted_keys = trusted_keys(options, signing_seed.as_deref())?;
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
            // Only a key that came from nx.json is said to: naming a deprecated setting the
            // workspace does not have would send the user looking for it.
            let source = match env.get(ENCRYPTION_KEY_FROM_VAR).map(|b| b.trim()) {
                Some(block @ ("s3" | "gcs" | "azure")) => format!(
                    " (it comes from \"encryptionKey\" of the deprecated top-level \"{block}\" \
                     block of nx.json: move the key out of nx.json into {ENCRYPTION_KEY_VAR})"
                ),
                _ => String::new(),
            };
            config_error(
                ENCRYPTION_KEY_VAR,
                format!(
                    "{ENCRYPTION_KEY_VAR} is not a valid encryption key{source}: {why}; expected \
                     32 bytes as base64 or 64 hex digits (`nx-open-cache keygen --encryption`), or \
                     a comma-separated list of them (the first encrypts, all decrypt) (value not \
                     shown)"
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

    /// Deterministic seeds: the SHA-256 of their index.
    fn seeds(n: u8) -> Vec<[u8; 32]> {
        (0..n).map(|i| Sha256::digest([i]).into()).collect()
    }

    #[test]
    fn most_secret_keys_are_told_apart_from_public_keys() {
        let mut told = 0;
        for seed in seeds(64) {
            let public = public_of_seed(&seed);
            assert!(!looks_like_secret_key(public.as_bytes()), "a public key");
            if looks_like_secret_key(&seed) {
                told += 1;
            }
        }
        // 15 in 16 on average; these 64 seeds are fixed.
        assert!(told >= 52, "{told} of 64");
    }

    fn trusted_error(keys: &[&str], env: &[(&str, &str)]) -> Result<SealConfig, ConfigError> {
        let options = serde_json::json!({ "trustedKeys": keys });
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        from_options(options.as_object().unwrap(), &env, false)
    }

    /// A secret key told apart from public keys, and its public key.
    fn told_secret() -> ([u8; 32], String, VerifyingKey) {
        let seed = seeds(64)
            .into_iter()
            .find(looks_like_secret_key)
            .expect("a secret told apart");
        (seed, STANDARD.encode(seed), public_of_seed(&seed))
    }

    #[test]
    fn a_secret_key_in_trusted_keys_is_called_one_only_when_provable_never_shown() {
        let (_, secret, public) = told_secret();
        let public_b64 = STANDARD.encode(public.as_bytes());
        let id = show_id(&signer_id(&public));
        let (other, _) = generate_signing_key().unwrap();

        // Alone, without the signing key: it may be a typo, so both are said, and no public
        // key is given as the one to list.
        let err = trusted_error(&[&other, &secret], &[]).unwrap_err();
        assert_eq!(err.option, "trustedKeys");
        assert!(
            err.message.starts_with(&format!(
                "trustedKeys entry 2 is not a valid public key (value not shown): a mistyped or \
                 truncated public key, or a secret key pasted by mistake (a secret key's public \
                 key would have key id {id}: if so, list the public key `nx-open-cache keygen` \
                 printed beside it"
            )) && !err.message.contains(&public_b64)
                && !err.message.contains(&secret),
            "{}",
            err.message
        );

        // Equal to the signing key: provably the secret key, with its public key to list.
        let err = trusted_error(&[&secret], &[(SIGNING_KEY_VAR, &secret)]).unwrap_err();
        assert!(
            err.message.starts_with(&format!(
                "trustedKeys entry 1 is a secret key, not a public key (value not shown): it is \
                 the value of {SIGNING_KEY_VAR}, whose public key is {public_b64} (key id {id}): \
                 list that in \"trustedKeys\" instead"
            )) && !err.message.contains(&secret),
            "{}",
            err.message
        );

        // Its public key is another entry: provably the secret key.
        let err = trusted_error(&[&public_b64, &secret], &[]).unwrap_err();
        assert!(
            err.message.starts_with(
                "trustedKeys entry 2 is a secret key, not a public key (value not shown): its \
                 public key"
            ) && err.message.contains("is entry 1")
                && !err.message.contains(&secret),
            "{}",
            err.message
        );

        assert!(public_key_id(&secret)
            .unwrap_err()
            .contains("looks like a secret key"));
        assert_eq!(public_key_id(&public_b64).unwrap(), id);
    }

    #[test]
    fn a_public_key_with_one_typo_is_never_called_a_secret_key() {
        let mut refused = 0;
        for _ in 0..20 {
            let (public, _) = generate_signing_key().unwrap();
            let mut chars: Vec<char> = public.chars().collect();
            chars[10] = if chars[10] == 'A' { 'B' } else { 'A' };
            let typo: String = chars.into_iter().collect();
            // 1 in 16 typos is a valid public key as well: nothing can tell it (it is trusted,
            // and no signature verifies with it).
            let Err(err) = trusted_error(&[&typo], &[]) else {
                continue;
            };
            refused += 1;
            let typo_public = public_of_seed(&decode_key32(&typo).unwrap());
            assert!(
                err.message
                    .starts_with("trustedKeys entry 1 is not a valid public key (value not shown)")
                    && !err.message.contains("is a secret key")
                    && !err
                        .message
                        .contains(&STANDARD.encode(typo_public.as_bytes()))
                    && !err.message.contains(&typo),
                "{}",
                err.message
            );
        }
        assert!(refused >= 10, "{refused} of 20 typos refused");
    }

    #[test]
    fn the_encryption_key_error_names_nx_json_only_when_the_key_came_from_there() {
        let bad = |from: Option<&str>| {
            let mut env = HashMap::from([(ENCRYPTION_KEY_VAR.to_owned(), "c2hvcnQ=".to_owned())]);
            if let Some(f) = from {
                env.insert(ENCRYPTION_KEY_FROM_VAR.to_owned(), f.to_owned());
            }
            from_options(&serde_json::Map::new(), &env, false)
                .unwrap_err()
                .message
        };
        let plain = bad(None);
        assert!(
            !plain.contains("encryptionKey") && !plain.contains("nx.json"),
            "{plain}"
        );
        assert!(plain.contains("decodes to 5 bytes"), "{plain}");
        let legacy = bad(Some("s3"));
        assert!(
            legacy.contains("\"encryptionKey\" of the deprecated top-level \"s3\" block"),
            "{legacy}"
        );
        // Anything else in the marker is not shown.
        assert!(!bad(Some("x; rm -rf")).contains("rm -rf"));
    }
}
