//! The sealed-object format: header, body (plain or encrypted in chunks), trailer. See the module
//! documentation of `crate::seal` for the layout.

use super::keys::{show_id, signer_id, EncryptionKey, KeyId, SealConfig};
use bytes::Bytes;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use ed25519_dalek::{Signature, Signer, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::{Read, Write};

pub const MAGIC: &[u8; 4] = b"NXOS";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 48;
pub const FLAG_SIGNED: u8 = 1;
pub const FLAG_ENCRYPTED: u8 = 2;
/// Plaintext bytes per encrypted chunk.
pub const CHUNK: usize = 64 * 1024;
pub const TAG_LEN: usize = 16;
pub const DIGEST_LEN: usize = 32;
pub const SIGNATURE_LEN: usize = 64;
pub const NONCE_PREFIX_LEN: usize = 19;
/// Domain separation of the signed message.
pub const SIGNATURE_CONTEXT: &[u8] = b"nx-open-cache sig v1";

/// A parsed seal header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealHeader {
    pub flags: u8,
    pub encryption_key: KeyId,
    pub signer: KeyId,
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

impl SealHeader {
    pub fn signed(&self) -> bool {
        self.flags & FLAG_SIGNED != 0
    }
    pub fn encrypted(&self) -> bool {
        self.flags & FLAG_ENCRYPTED != 0
    }
    pub fn trailer_len(&self) -> usize {
        DIGEST_LEN + if self.signed() { SIGNATURE_LEN } else { 0 }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(MAGIC);
        out[4] = VERSION;
        out[5] = self.flags;
        out[6..8].copy_from_slice(&(HEADER_LEN as u16).to_be_bytes());
        out[8..16].copy_from_slice(&self.encryption_key);
        out[16..24].copy_from_slice(&self.signer);
        out[24..24 + NONCE_PREFIX_LEN].copy_from_slice(&self.nonce_prefix);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<SealHeader, Refusal> {
        if bytes.len() < HEADER_LEN {
            return Err(Refusal::Truncated(format!(
                "the object is {} bytes, shorter than the {HEADER_LEN}-byte seal header",
                bytes.len()
            )));
        }
        if &bytes[0..4] != MAGIC {
            return Err(Refusal::Malformed("no seal header".into()));
        }
        if bytes[4] != VERSION {
            return Err(Refusal::Malformed(format!(
                "seal format version {}, this nx-open-cache reads version {VERSION}",
                bytes[4]
            )));
        }
        let flags = bytes[5];
        if flags & !(FLAG_SIGNED | FLAG_ENCRYPTED) != 0 {
            return Err(Refusal::Malformed(format!(
                "unknown seal flags {flags:#04x}"
            )));
        }
        let len = u16::from_be_bytes([bytes[6], bytes[7]]);
        if len as usize != HEADER_LEN || bytes[24 + NONCE_PREFIX_LEN..HEADER_LEN] != [0u8; 5] {
            return Err(Refusal::Malformed(format!(
                "seal header of {len} bytes or with reserved bytes set"
            )));
        }
        let mut h = SealHeader {
            flags,
            encryption_key: [0; 8],
            signer: [0; 8],
            nonce_prefix: [0; NONCE_PREFIX_LEN],
        };
        h.encryption_key.copy_from_slice(&bytes[8..16]);
        h.signer.copy_from_slice(&bytes[16..24]);
        h.nonce_prefix
            .copy_from_slice(&bytes[24..24 + NONCE_PREFIX_LEN]);
        // Fields of a feature not in use must be zero: nothing in a header goes unchecked.
        if (!h.encrypted()
            && (h.encryption_key != [0; 8] || h.nonce_prefix != [0; NONCE_PREFIX_LEN]))
            || (!h.signed() && h.signer != [0; 8])
        {
            return Err(Refusal::Malformed(
                "seal header sets fields of a feature it does not use".into(),
            ));
        }
        Ok(h)
    }
}

/// The reason given for an unsigned artifact when signatures are required.
pub const UNSIGNED_REFUSAL: &str = "unsigned (requireSignature is on)";

/// Why a sealed object is refused. It is never restored; it is not deleted either (it may be
/// valid for another reader with other keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Unsigned,
    UntrustedKey(String),
    BadSignature,
    NoKey {
        id: String,
        have_keys: bool,
    },
    /// Decryption failed or the content does not match its digest.
    Altered(String),
    Truncated(String),
    Malformed(String),
    /// Local trouble (spool file): not the object's fault.
    Local(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Unsigned => f.write_str(UNSIGNED_REFUSAL),
            Refusal::UntrustedKey(id) => write!(
                f,
                "signature by an untrusted key {id} (not among trustedKeys)"
            ),
            Refusal::BadSignature => f.write_str("signature does not match this hash or content"),
            Refusal::NoKey {
                id,
                have_keys: true,
            } => write!(
                f,
                "cannot decrypt: encrypted with key {id}, not among {}'s keys",
                super::keys::ENCRYPTION_KEY_VAR
            ),
            Refusal::NoKey {
                id,
                have_keys: false,
            } => write!(
                f,
                "encrypted; no {} here (encrypted with key {id})",
                super::keys::ENCRYPTION_KEY_VAR
            ),
            Refusal::Altered(why) => write!(f, "altered: {why}"),
            Refusal::Truncated(why) => write!(f, "truncated: {why}"),
            Refusal::Malformed(why) => write!(f, "malformed: {why}"),
            Refusal::Local(why) => f.write_str(why),
        }
    }
}

/// The message a signature covers: context, hash (length-prefixed), plaintext length and digest,
/// and the whole seal header (flags, key ids, nonce prefix).
pub fn signed_message(hash: &str, len: u64, digest: &[u8; 32], header: &SealHeader) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNATURE_CONTEXT.len() + 2 + hash.len() + 8 + 32 + HEADER_LEN);
    m.extend_from_slice(SIGNATURE_CONTEXT);
    m.extend_from_slice(&(hash.len() as u16).to_be_bytes());
    m.extend_from_slice(hash.as_bytes());
    m.extend_from_slice(&len.to_be_bytes());
    m.extend_from_slice(digest);
    m.extend_from_slice(&header.encode());
    m
}

fn nonce(prefix: &[u8; NONCE_PREFIX_LEN], counter: u32, last: bool) -> XNonce {
    let mut n = [0u8; 24];
    n[..NONCE_PREFIX_LEN].copy_from_slice(prefix);
    n[NONCE_PREFIX_LEN..NONCE_PREFIX_LEN + 4].copy_from_slice(&counter.to_be_bytes());
    n[23] = u8::from(last);
    XNonce::from(n)
}

fn aad(header: &[u8; HEADER_LEN], hash: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(HEADER_LEN + hash.len());
    a.extend_from_slice(header);
    a.extend_from_slice(hash.as_bytes());
    a
}

/// The sealed length of an artifact of `len` bytes.
pub fn sealed_len(len: u64, signed: bool, encrypted: bool) -> u64 {
    let n = len + DIGEST_LEN as u64 + if signed { SIGNATURE_LEN as u64 } else { 0 };
    let tags = if encrypted {
        n.div_ceil(CHUNK as u64) * TAG_LEN as u64
    } else {
        0
    };
    HEADER_LEN as u64 + n + tags
}

/// Seals an artifact as it streams by: `header()` first, then `update()` per chunk, `finish()`.
pub struct Sealer {
    hash: String,
    header: SealHeader,
    header_bytes: [u8; HEADER_LEN],
    aad: Vec<u8>,
    cipher: Option<XChaCha20Poly1305>,
    signing: Option<ed25519_dalek::SigningKey>,
    counter: u32,
    pending: Vec<u8>,
    digest: Sha256,
    len: u64,
}

impl Sealer {
    /// `None` when the configuration neither signs nor encrypts (the artifact is stored plain).
    pub fn new(hash: &str, config: &SealConfig) -> Result<Option<Sealer>, String> {
        let key: Option<&EncryptionKey> = config.encryption_keys.first();
        let signing = config.signing_key.clone();
        if key.is_none() && signing.is_none() {
            return Ok(None);
        }
        let mut header = SealHeader {
            flags: 0,
            encryption_key: [0; 8],
            signer: [0; 8],
            nonce_prefix: [0; NONCE_PREFIX_LEN],
        };
        if let Some(s) = &signing {
            header.flags |= FLAG_SIGNED;
            header.signer = signer_id(&s.verifying_key());
        }
        let cipher = match key {
            Some(k) => {
                header.flags |= FLAG_ENCRYPTED;
                header.encryption_key = k.id;
                getrandom::fill(&mut header.nonce_prefix)
                    .map_err(|e| format!("the system random number generator failed: {e}"))?;
                Some(XChaCha20Poly1305::new(k.key.as_slice().into()))
            }
            None => None,
        };
        let header_bytes = header.encode();
        Ok(Some(Sealer {
            hash: hash.to_owned(),
            aad: aad(&header_bytes, hash),
            header,
            header_bytes,
            cipher,
            signing,
            counter: 0,
            pending: Vec::new(),
            digest: Sha256::new(),
            len: 0,
        }))
    }

    pub fn signed(&self) -> bool {
        self.header.signed()
    }
    pub fn encrypted(&self) -> bool {
        self.header.encrypted()
    }
    /// Plaintext bytes seen so far.
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn header(&self) -> Bytes {
        Bytes::copy_from_slice(&self.header_bytes)
    }

    fn seal_chunk(&mut self, plain: &mut Vec<u8>, last: bool) -> Result<(), String> {
        let Some(cipher) = &self.cipher else {
            return Ok(());
        };
        let n = nonce(&self.header.nonce_prefix, self.counter, last);
        let tag = cipher
            .encrypt_in_place_detached(&n, &self.aad, plain)
            .map_err(|_| "encryption failed".to_owned())?;
        plain.extend_from_slice(&tag);
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or_else(|| "artifact too large to encrypt (over 2^32 chunks)".to_owned())?;
        Ok(())
    }

    /// The sealed bytes for the next piece of the artifact (possibly empty while a chunk fills).
    pub fn update(&mut self, chunk: Bytes) -> Result<Bytes, String> {
        self.digest.update(&chunk);
        self.len += chunk.len() as u64;
        if self.cipher.is_none() {
            return Ok(chunk);
        }
        self.pending.extend_from_slice(&chunk);
        let mut out = Vec::new();
        while self.pending.len() > CHUNK {
            let rest = self.pending.split_off(CHUNK);
            let mut piece = std::mem::replace(&mut self.pending, rest);
            self.seal_chunk(&mut piece, false)?;
            out.extend_from_slice(&piece);
        }
        Ok(Bytes::from(out))
    }

    /// The end of the sealed object: remaining chunks and the trailer (digest, signature).
    pub fn finish(mut self) -> Result<Bytes, String> {
        let digest: [u8; 32] = std::mem::take(&mut self.digest).finalize().into();
        let mut trailer = digest.to_vec();
        if let Some(s) = &self.signing {
            let msg = signed_message(&self.hash, self.len, &digest, &self.header);
            trailer.extend_from_slice(&s.sign(&msg).to_bytes());
        }
        if self.cipher.is_none() {
            return Ok(Bytes::from(trailer));
        }
        self.pending.extend_from_slice(&trailer);
        let mut out = Vec::new();
        loop {
            if self.pending.len() > CHUNK {
                let rest = self.pending.split_off(CHUNK);
                let mut piece = std::mem::replace(&mut self.pending, rest);
                self.seal_chunk(&mut piece, false)?;
                out.extend_from_slice(&piece);
            } else {
                let mut piece = std::mem::take(&mut self.pending);
                self.seal_chunk(&mut piece, true)?;
                out.extend_from_slice(&piece);
                break;
            }
        }
        Ok(Bytes::from(out))
    }
}

/// What the reader checks a sealed object against.
pub struct Checks<'a> {
    pub config: &'a SealConfig,
    pub verifying: &'a [VerifyingKey],
}

/// Checks made from the header alone, before any byte is read: signature required, signer
/// trusted, decryption key present.
pub fn precheck<'k>(
    header: &SealHeader,
    checks: &Checks<'k>,
) -> Result<Option<&'k EncryptionKey>, Refusal> {
    if checks.config.require_signature && !header.signed() {
        return Err(Refusal::Unsigned);
    }
    if header.signed()
        && !checks.verifying.is_empty()
        && !checks
            .verifying
            .iter()
            .any(|k| signer_id(k) == header.signer)
    {
        return Err(Refusal::UntrustedKey(show_id(&header.signer)));
    }
    if header.encrypted() {
        return match checks
            .config
            .encryption_keys
            .iter()
            .find(|k| k.id == header.encryption_key)
        {
            Some(k) => Ok(Some(k)),
            None => Err(Refusal::NoKey {
                id: show_id(&header.encryption_key),
                have_keys: !checks.config.encryption_keys.is_empty(),
            }),
        };
    }
    Ok(None)
}

/// The plaintext length (artifact + trailer) and piece layout of a body of `body_len` bytes.
fn layout(header: &SealHeader, body_len: u64) -> Result<(u64, u64), Refusal> {
    let t = header.trailer_len() as u64;
    let n = if header.encrypted() {
        let piece = (CHUNK + TAG_LEN) as u64;
        let chunks = body_len.div_ceil(piece);
        let last = body_len - chunks.saturating_sub(1) * piece;
        if chunks == 0 || last <= TAG_LEN as u64 {
            return Err(Refusal::Truncated(format!(
                "encrypted body of {body_len} bytes ends inside a chunk header"
            )));
        }
        body_len - chunks * TAG_LEN as u64
    } else {
        body_len
    };
    if n < t {
        return Err(Refusal::Truncated(format!(
            "body of {body_len} bytes is shorter than its {t}-byte trailer"
        )));
    }
    Ok((n, n - t))
}

/// Reads a sealed body (everything after the header, `body_len` bytes from `source`), writes the
/// artifact to `sink` and checks it: decryption chunk by chunk, the plaintext digest, the
/// signature. Returns the artifact length; on `Err` what was written to `sink` must be discarded.
pub fn open_body(
    hash: &str,
    header: &SealHeader,
    key: Option<&EncryptionKey>,
    checks: &Checks<'_>,
    source: &mut dyn Read,
    body_len: u64,
    sink: &mut dyn Write,
) -> Result<u64, Refusal> {
    let (n, artifact_len) = layout(header, body_len)?;
    let cipher = key.map(|k| XChaCha20Poly1305::new(k.key.as_slice().into()));
    // `decode` refuses anything `encode` would not write, so this is the stored header.
    let aad = aad(&header.encode(), hash);
    let piece_len = if cipher.is_some() {
        CHUNK + TAG_LEN
    } else {
        CHUNK
    };
    let mut digest = Sha256::new();
    let mut trailer: Vec<u8> = Vec::with_capacity(header.trailer_len());
    let mut plain_seen: u64 = 0;
    let mut remaining = body_len;
    let mut counter: u32 = 0;
    let mut buf = vec![0u8; piece_len];
    let local = |e: std::io::Error| Refusal::Local(format!("cannot spool the artifact: {e}"));
    while remaining > 0 {
        let take = remaining.min(piece_len as u64) as usize;
        source
            .read_exact(&mut buf[..take])
            .map_err(|e| Refusal::Truncated(format!("the object ended early ({e})")))?;
        remaining -= take as u64;
        let plain: &[u8] = match &cipher {
            Some(c) => {
                let (body, tag) = buf[..take].split_at_mut(take - TAG_LEN);
                let tag = Tag::from_slice(tag);
                let n = nonce(&header.nonce_prefix, counter, remaining == 0);
                // The reason is the same for every chunk and object, so refusals group by it.
                c.decrypt_in_place_detached(&n, &aad, body, tag)
                    .map_err(|_| {
                        Refusal::Altered(
                            "a chunk does not decrypt (changed, truncated, reordered, or copied \
                             from another hash)"
                                .into(),
                        )
                    })?;
                counter = counter
                    .checked_add(1)
                    .ok_or_else(|| Refusal::Malformed("more than 2^32 chunks".into()))?;
                body
            }
            None => &buf[..take],
        };
        // The first `artifact_len` plaintext bytes are the artifact, the rest the trailer.
        let art_here = artifact_len
            .saturating_sub(plain_seen)
            .min(plain.len() as u64) as usize;
        if art_here > 0 {
            digest.update(&plain[..art_here]);
            sink.write_all(&plain[..art_here]).map_err(local)?;
        }
        trailer.extend_from_slice(&plain[art_here..]);
        plain_seen += plain.len() as u64;
    }
    if plain_seen != n || trailer.len() != header.trailer_len() {
        return Err(Refusal::Truncated(
            "the body does not match its layout".into(),
        ));
    }
    let actual: [u8; 32] = digest.finalize().into();
    if trailer[..DIGEST_LEN] != actual {
        return Err(Refusal::Altered(
            "the content does not match its sealed SHA-256 digest".into(),
        ));
    }
    if header.signed() {
        let mut sig = [0u8; SIGNATURE_LEN];
        sig.copy_from_slice(&trailer[DIGEST_LEN..]);
        let sig = Signature::from_bytes(&sig);
        let msg = signed_message(hash, artifact_len, &actual, header);
        let candidates: Vec<&VerifyingKey> = checks
            .verifying
            .iter()
            .filter(|k| signer_id(k) == header.signer)
            .collect();
        // No trusted keys configured: the signature cannot be checked (and is not required).
        if !candidates.is_empty()
            && !candidates
                .iter()
                .any(|k| k.verify_strict(&msg, &sig).is_ok())
        {
            return Err(Refusal::BadSignature);
        }
    }
    Ok(artifact_len)
}
