//! Opening sealed objects (`seal::SealedStore::get`) on arbitrary stored payloads, by a set of
//! readers with fixed keys: the key-less reader (no seal setting: a pull request's job), readers
//! with the encryption key, with trusted keys, requiring signatures (by the right key and by
//! another), with rotated keys reading from a file through the spool path, and the signing writer.
//!
//! Guarantees checked, for every reader and input: no panic; a refusal is `Refused` (never a local
//! fault) and names no key; a plain (unsealed) object is served as it is, and only when signatures
//! are not required; a sealed object is served only when its header decodes, the reader holds its
//! encryption key, its signer is trusted (when the reader has trusted keys) and, for unencrypted
//! objects, the served bytes are the body's artifact, its SHA-256 matches and its signature
//! verifies; the seal bytes are never served; every reader that serves an object serves the same
//! bytes.

use super::{block_on, read_artifact, scratch, MemoryStore};
use bytes::Bytes;
use ed25519_dalek::{Signature, SigningKey};
use nx_open_cache::key::TaskHash;
use nx_open_cache::seal::format::{self, SealHeader, DIGEST_LEN, HEADER_LEN, MAGIC};
use nx_open_cache::seal::keys::{signer_id, EncryptionKey};
use nx_open_cache::seal::{SealConfig, SealedStore};
use nx_open_cache::store::{ErrorKind, Store};
use sha2::{Digest, Sha256};
use std::sync::{Arc, OnceLock};

/// The task hash every object is read (and every seed sealed) under.
pub const HASH: &str = "1234567890123456789";

/// Seeds of the fixed keys (test keys, published here on purpose).
pub const SIGNER_SEED: [u8; 32] = [0x5e; 32];
pub const OTHER_SIGNER_SEED: [u8; 32] = [0x0f; 32];
pub const ENCRYPTION_KEY: [u8; 32] = [0xec; 32];
pub const OTHER_ENCRYPTION_KEY: [u8; 32] = [0x3a; 32];

pub fn signer() -> SigningKey {
    SigningKey::from_bytes(&SIGNER_SEED)
}

pub fn other_signer() -> SigningKey {
    SigningKey::from_bytes(&OTHER_SIGNER_SEED)
}

struct Reader {
    name: &'static str,
    config: SealConfig,
    /// The store hands the object out as a file (the path of large objects).
    file: bool,
    inline_limit: u64,
}

fn readers() -> &'static [Reader] {
    static READERS: OnceLock<Vec<Reader>> = OnceLock::new();
    READERS.get_or_init(|| {
        let key = || EncryptionKey::new(ENCRYPTION_KEY);
        let reader = |name, config, file, inline_limit| Reader {
            name,
            config,
            file,
            inline_limit,
        };
        let big = nx_open_cache::store::spool::INLINE_LIMIT;
        vec![
            reader("key-less", SealConfig::default(), false, big),
            reader(
                "decrypting",
                SealConfig {
                    encryption_keys: vec![key()],
                    ..SealConfig::default()
                },
                false,
                big,
            ),
            reader(
                "trusting and decrypting",
                SealConfig {
                    trusted_keys: vec![signer().verifying_key()],
                    encryption_keys: vec![key()],
                    ..SealConfig::default()
                },
                false,
                big,
            ),
            reader(
                "requiring signatures",
                SealConfig {
                    trusted_keys: vec![signer().verifying_key()],
                    require_signature: true,
                    encryption_keys: vec![key()],
                    ..SealConfig::default()
                },
                false,
                big,
            ),
            reader(
                "requiring another signer",
                SealConfig {
                    trusted_keys: vec![other_signer().verifying_key()],
                    require_signature: true,
                    ..SealConfig::default()
                },
                false,
                big,
            ),
            reader(
                "rotated keys, from a file, spooled",
                SealConfig {
                    trusted_keys: vec![other_signer().verifying_key(), signer().verifying_key()],
                    encryption_keys: vec![EncryptionKey::new(OTHER_ENCRYPTION_KEY), key()],
                    ..SealConfig::default()
                },
                true,
                1024,
            ),
            reader(
                "the signing writer",
                SealConfig {
                    signing_key: Some(signer()),
                    encryption_keys: vec![key()],
                    ..SealConfig::default()
                },
                true,
                big,
            ),
        ]
    })
}

/// Texts of the secret keys that no message may contain.
fn secrets() -> &'static [String] {
    static SECRETS: OnceLock<Vec<String>> = OnceLock::new();
    SECRETS.get_or_init(|| {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
        [
            SIGNER_SEED,
            OTHER_SIGNER_SEED,
            ENCRYPTION_KEY,
            OTHER_ENCRYPTION_KEY,
        ]
        .iter()
        .flat_map(|k| [hex::encode(k), b64.encode(k)])
        .collect()
    })
}

pub fn run(data: &[u8]) {
    let hash = TaskHash::parse(HASH).expect("a valid hash");
    let dir = scratch();
    let mut served: Vec<(&str, Vec<u8>)> = Vec::new();
    for reader in readers() {
        let file_dir = reader.file.then(|| dir.path().to_path_buf());
        let inner = MemoryStore::new(Some(Bytes::copy_from_slice(data)), file_dir);
        let store = SealedStore::new(Arc::new(inner), reader.config.clone())
            .with_spool_dir(dir.path().join("spool"))
            .with_inline_limit(reader.inline_limit);
        match block_on(store.get(&hash)) {
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::Refused, "{}: {}", reader.name, e.message);
                assert!(!e.message.is_empty());
                for s in secrets() {
                    assert!(!e.message.contains(s.as_str()), "a key in: {}", e.message);
                }
            }
            Ok(None) => panic!("{}: a stored object became a plain miss", reader.name),
            Ok(Some(artifact)) => {
                let len = artifact.len;
                let bytes = read_artifact(artifact);
                assert_eq!(bytes.len() as u64, len, "{}: length", reader.name);
                check_served(reader, data, &bytes);
                served.push((reader.name, bytes));
            }
        }
    }
    if let Some((first, bytes)) = served.first() {
        for (name, other) in &served[1..] {
            assert!(bytes == other, "{first} and {name} served different bytes");
        }
    }
}

/// What a reader may serve for the stored `data`.
fn check_served(reader: &Reader, data: &[u8], bytes: &[u8]) {
    let who = reader.name;
    if !data.starts_with(MAGIC) {
        assert!(!reader.config.require_signature, "{who}: served unsigned");
        assert!(bytes == data, "{who}: a plain object served changed");
        return;
    }
    assert!(bytes != data, "{who}: served the seal bytes");
    let header = match SealHeader::decode(data) {
        Ok(h) => h,
        Err(e) => panic!("{who}: served an object whose seal header is refused: {e}"),
    };
    let config = &reader.config;
    if header.encrypted() {
        let have = config
            .encryption_keys
            .iter()
            .any(|k| k.id == header.encryption_key);
        assert!(
            have,
            "{who}: served an object encrypted with a key it does not hold"
        );
    }
    assert!(
        header.signed() || !config.require_signature,
        "{who}: served unsigned"
    );
    let verifying = config.verifying_keys();
    if header.signed() && !verifying.is_empty() {
        let trusted = verifying.iter().any(|k| signer_id(k) == header.signer);
        assert!(trusted, "{who}: served a signature by an untrusted key");
    }
    if !header.encrypted() {
        plain_body_checks_out(who, &header, &verifying, &data[HEADER_LEN..], bytes);
    }
}

/// An unencrypted sealed body is `artifact || SHA-256 [|| signature]`: the served bytes must be
/// that artifact, with its digest, and with a valid signature when the reader has trusted keys.
fn plain_body_checks_out(
    who: &str,
    header: &SealHeader,
    verifying: &[ed25519_dalek::VerifyingKey],
    body: &[u8],
    bytes: &[u8],
) {
    let n = bytes.len();
    assert_eq!(body.len(), n + header.trailer_len(), "{who}: layout");
    assert!(&body[..n] == bytes, "{who}: not the body's artifact");
    let digest: [u8; 32] = Sha256::digest(bytes).into();
    assert_eq!(body[n..n + DIGEST_LEN], digest, "{who}: digest");
    if header.signed() && !verifying.is_empty() {
        let sig = Signature::from_slice(&body[n + DIGEST_LEN..]).expect("64 signature bytes");
        let msg = format::signed_message(HASH, n as u64, &digest, header);
        let valid = verifying
            .iter()
            .any(|k| signer_id(k) == header.signer && k.verify_strict(&msg, &sig).is_ok());
        assert!(valid, "{who}: served with a signature that does not verify");
    }
}
