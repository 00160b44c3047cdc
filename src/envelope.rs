//! The envelope every stored object carries: a fixed header in front of the Nx artifact bytes.
//!
//! Layout, version 1 (48 bytes, integers big-endian):
//! ```text
//! 0..4    magic "NXOC"
//! 4       format version (1)
//! 5       digest algorithm (1 = SHA-256)
//! 6..8    header length in bytes (48), so later versions can grow the header
//! 8..16   payload length in bytes
//! 16..48  digest of the payload
//! ```
//! Later versions (signatures, encryption) add fields behind these; a reader refuses versions it does
//! not know instead of guessing.

use sha2::{Digest, Sha256};
use std::fmt;

pub const MAGIC: &[u8; 4] = b"NXOC";
pub const VERSION: u8 = 1;
pub const ALG_SHA256: u8 = 1;
pub const HEADER_LEN: usize = 48;

/// A parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub payload_len: u64,
    pub digest: [u8; 32],
}

/// Why a stored object is not a valid envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    TooShort(usize),
    BadMagic([u8; 4]),
    UnknownVersion(u8),
    UnknownDigest(u8),
    BadHeaderLength(u16),
    LengthMismatch { declared: u64, actual: u64 },
    DigestMismatch { expected: String, actual: String },
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::TooShort(n) => write!(
                f,
                "object is {n} bytes, shorter than the {HEADER_LEN}-byte header (truncated)"
            ),
            EnvelopeError::BadMagic(m) => {
                write!(f, "object does not start with NXOC (found {:02x?})", m)
            }
            EnvelopeError::UnknownVersion(v) => write!(
                f,
                "object has envelope version {v}, this nx-open-cache reads version {VERSION}"
            ),
            EnvelopeError::UnknownDigest(a) => write!(f, "object names unknown digest algorithm {a}"),
            EnvelopeError::BadHeaderLength(l) => write!(f, "object declares a header of {l} bytes"),
            EnvelopeError::LengthMismatch { declared, actual } => write!(
                f,
                "payload is {actual} bytes but the header declares {declared} (truncated or extended)"
            ),
            EnvelopeError::DigestMismatch { expected, actual } => write!(
                f,
                "payload digest mismatch (corrupt object): header sha256 {expected}, content sha256 {actual}"
            ),
        }
    }
}

impl std::error::Error for EnvelopeError {}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(MAGIC);
        out[4] = VERSION;
        out[5] = ALG_SHA256;
        out[6..8].copy_from_slice(&(HEADER_LEN as u16).to_be_bytes());
        out[8..16].copy_from_slice(&self.payload_len.to_be_bytes());
        out[16..48].copy_from_slice(&self.digest);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Header, EnvelopeError> {
        if bytes.len() < HEADER_LEN {
            return Err(EnvelopeError::TooShort(bytes.len()));
        }
        let mut magic = [0u8; 4];
        magic.copy_from_slice(&bytes[0..4]);
        if &magic != MAGIC {
            return Err(EnvelopeError::BadMagic(magic));
        }
        if bytes[4] != VERSION {
            return Err(EnvelopeError::UnknownVersion(bytes[4]));
        }
        if bytes[5] != ALG_SHA256 {
            return Err(EnvelopeError::UnknownDigest(bytes[5]));
        }
        let header_len = u16::from_be_bytes([bytes[6], bytes[7]]);
        if header_len as usize != HEADER_LEN {
            return Err(EnvelopeError::BadHeaderLength(header_len));
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[8..16]);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&bytes[16..48]);
        Ok(Header {
            payload_len: u64::from_be_bytes(len),
            digest,
        })
    }

    /// Checks a finished payload digest (and length) against this header.
    pub fn verify(&self, actual_len: u64, actual_digest: &[u8; 32]) -> Result<(), EnvelopeError> {
        if actual_len != self.payload_len {
            return Err(EnvelopeError::LengthMismatch {
                declared: self.payload_len,
                actual: actual_len,
            });
        }
        if actual_digest != &self.digest {
            return Err(EnvelopeError::DigestMismatch {
                expected: hex::encode(self.digest),
                actual: hex::encode(actual_digest),
            });
        }
        Ok(())
    }
}

/// Incremental digest of a payload as it streams by.
#[derive(Default, Clone)]
pub struct PayloadDigest {
    hasher: Sha256,
    len: u64,
}

impl PayloadDigest {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        self.len += chunk.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> (u64, [u8; 32]) {
        (self.len, self.hasher.finalize().into())
    }

    pub fn into_header(self) -> Header {
        let (payload_len, digest) = self.finish();
        Header {
            payload_len,
            digest,
        }
    }
}

/// Wraps a whole payload in memory (tests and small objects).
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut digest = PayloadDigest::new();
    digest.update(payload);
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&digest.into_header().encode());
    out.extend_from_slice(payload);
    out
}

/// Checks and unwraps a whole object held in memory.
pub fn open(object: &[u8]) -> Result<&[u8], EnvelopeError> {
    let header = Header::decode(object)?;
    let payload = &object[HEADER_LEN..];
    let mut digest = PayloadDigest::new();
    digest.update(payload);
    let (len, d) = digest.finish();
    header.verify(len, &d)?;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let sealed = seal(b"hello");
        assert_eq!(sealed.len(), HEADER_LEN + 5);
        assert_eq!(open(&sealed), Ok(&b"hello"[..]));
        assert_eq!(open(&seal(b"")), Ok(&b""[..]));
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let sealed = seal(b"some payload bytes");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x40;
            assert!(open(&bad).is_err(), "flip at {i} was not detected");
        }
    }

    #[test]
    fn truncation_and_extension_are_caught() {
        let sealed = seal(b"payload");
        for cut in 0..sealed.len() {
            assert!(open(&sealed[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(matches!(
            open(&longer),
            Err(EnvelopeError::LengthMismatch { .. })
        ));
        let msg = open(&sealed[..HEADER_LEN + 2]).unwrap_err().to_string();
        assert!(msg.contains("declares 7"), "{msg}");
    }
}
