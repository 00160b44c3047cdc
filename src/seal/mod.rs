//! Signed and encrypted artifacts: a [`SealedStore`] in front of any backend (fs, s3, gcs, azure).
//!
//! The backend keeps its own envelope (`crate::envelope`: length and SHA-256 of what it stores) and
//! its own digest check, which catch accidents (a torn write, a flipped bit). What this layer hands
//! the backend as the payload is a *sealed object*, which catches an adversary who can write to the
//! storage and so can recompute the backend's envelope:
//!
//! ```text
//! header, 48 bytes (integers big-endian)
//!   0..4    magic "NXOS"
//!   4       seal format version (1)
//!   5       flags: 1 = signed, 2 = encrypted
//!   6..8    header length (48)
//!   8..16   encryption key id (first 8 bytes of SHA-256("nx-open-cache encryption key id v1" || key)), 0 if plain
//!   16..24  signer key id (first 8 bytes of the Ed25519 public key), 0 if unsigned
//!   24..43  nonce prefix (19 random bytes per object), 0 if plain
//!   43..48  reserved, 0
//! body: the stream  artifact || trailer,  where trailer = SHA-256(artifact) [|| Ed25519 signature]
//!   plain:     as is
//!   encrypted: cut into 64 KiB pieces, each sealed with XChaCha20-Poly1305 (16-byte tag appended),
//!              nonce = prefix || u32 chunk counter || last-chunk flag (the STREAM construction),
//!              associated data = header || task hash
//! signature: Ed25519 over  "nx-open-cache sig v1" || u16 len(hash) || hash || u64 artifact length
//!              || SHA-256(artifact) || the 48-byte header
//! ```
//!
//! So: a changed byte fails the chunk's tag (encrypted) or the digest / signature (signed); a
//! truncated object, reordered or swapped chunks fail their nonce (counter, last flag); an object
//! copied under another hash fails the associated data (encrypted) and the signature (signed).
//! The artifact length is not stored: it follows from the object's length, so a write streams
//! through without knowing its length first. Objects without the magic are plain (written before
//! or without these settings): readable unless `requireSignature` is on.
//!
//! Every reader goes through this layer, also one without any seal setting (a pull request's job
//! gets no secrets): it looks at the first bytes of each object, passes a plain one through as it
//! is, and never serves the bytes of a sealed one. An encrypted object it has no key for is
//! refused ("encrypted; no NX_OPEN_CACHE_ENCRYPTION_KEY here"). A signed, unencrypted object read
//! without `trustedKeys` is opened: its header, layout and SHA-256 digest are checked and the
//! artifact inside is served. Its signature is not checked there: without a trusted key a
//! signature proves nothing, and such a reader restores unsigned artifacts anyway, so a signed one
//! is no worse (what this reader trusts is the store, as for any plain object).
//!
//! A refused object is a miss with the reason (`ErrorKind::Refused`: the server names the hash,
//! counts the refusal, and the guard does not count it as an outage). A reader does not delete
//! it: it may be valid for another reader with other keys. Trouble on this machine while opening
//! (the spool file cannot be written) is a fault of this machine (`Unavailable`), not a refusal. A *signing* writer does replace an object of its write
//! namespace that it refuses (unsigned, another signer, altered) before writing its own, so an
//! untrusted build that wrote a hash first cannot keep the trusted artifact out under
//! first-writer-wins. Nothing of an object is returned before all of it has been checked:
//! the artifact is decrypted into memory (small) or an unlinked spool file (large) first.

pub mod format;
pub mod keys;

pub use keys::SealConfig;

use crate::key::{Prefix, TaskHash};
use crate::store::spool::{self, Spool, Spooled};
use crate::store::{
    Artifact, ArtifactBody, AsyncStore, BodyStream, Cause, ErrorKind, Found, PutOutcome, Store,
    StoreError, Upload, Written,
};
use bytes::Bytes;
use format::{Checks, Refusal, SealHeader, Sealer, HEADER_LEN, MAGIC};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Sealed objects up to this size are opened on the async worker; larger ones on the blocking pool.
const ON_WORKER_LIMIT: u64 = 256 * 1024;

/// A store whose artifacts are signed and/or encrypted on write and checked on read.
#[derive(Clone)]
pub struct SealedStore {
    inner: Arc<dyn Store>,
    config: Arc<SealConfig>,
    verifying: Arc<Vec<ed25519_dalek::VerifyingKey>>,
    spool_dir: PathBuf,
    inline_limit: u64,
}

impl SealedStore {
    pub fn new(inner: Arc<dyn Store>, config: SealConfig) -> Self {
        let verifying = Arc::new(config.verifying_keys());
        SealedStore {
            inner,
            config: Arc::new(config),
            verifying,
            spool_dir: spool::dir(),
            inline_limit: spool::INLINE_LIMIT,
        }
    }

    /// Where large artifacts are decrypted to (unlinked at once).
    pub fn with_spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool_dir = dir.into();
        self
    }

    pub fn with_inline_limit(mut self, limit: u64) -> Self {
        self.inline_limit = limit;
        self
    }

    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    /// The error for an object this reader does not serve: `Refused` with the reason alone (the
    /// server adds the hash), or `Unavailable` for trouble on this machine.
    fn refused(why: &Refusal) -> StoreError {
        match why {
            Refusal::Local(_) => StoreError::new(ErrorKind::Unavailable, why.to_string()),
            _ => StoreError::new(ErrorKind::Refused, why.to_string()),
        }
    }

    fn clone_parts(&self) -> Opener {
        Opener {
            config: self.config.clone(),
            verifying: self.verifying.clone(),
            spool_dir: self.spool_dir.clone(),
            inline_limit: self.inline_limit,
        }
    }

    /// The backend's artifact, opened and checked: `Some(Err)` says why it is refused.
    async fn read_checked(
        &self,
        hash: &TaskHash,
    ) -> Result<Option<Result<Artifact, Refusal>>, StoreError> {
        let Some(artifact) = self.inner.get(hash).await? else {
            return Ok(None);
        };
        let opener = self.clone_parts();
        // A plain object passes through unchanged and keeps the backend's digest; an opened seal's
        // plaintext has none.
        let digest = artifact.digest;
        let result = match artifact.body {
            // A plain object in memory (the common case without settings): no copy, no hop.
            ArtifactBody::Memory(bytes) if !bytes.starts_with(MAGIC) => {
                opener.plain().map(|()| Artifact {
                    len: artifact.len,
                    body: ArtifactBody::Memory(bytes),
                    digest,
                })
            }
            ArtifactBody::Memory(bytes) if artifact.len <= ON_WORKER_LIMIT => {
                opener.open_memory(hash.as_str(), bytes, digest)
            }
            body => {
                let len = artifact.len;
                let hash_s = hash.as_str().to_owned();
                tokio::task::spawn_blocking(move || match body {
                    ArtifactBody::Memory(bytes) => opener.open_memory(&hash_s, bytes, digest),
                    ArtifactBody::File { file, offset } => {
                        opener.open_file(&hash_s, file, offset, len, digest)
                    }
                })
                .await
                .map_err(|e| {
                    StoreError::new(ErrorKind::Unavailable, format!("open task failed: {e}"))
                })?
            }
        };
        Ok(Some(result))
    }
}

struct WriteState<'a, 'b> {
    input: &'a mut BodyStream<'b>,
    sealer: Option<Sealer>,
    header_sent: bool,
    received: u64,
    declared: Option<u64>,
    failure: Arc<Mutex<Option<StoreError>>>,
    plain_len: Arc<AtomicU64>,
}

impl WriteState<'_, '_> {
    fn fail(&mut self, e: StoreError) -> std::io::Error {
        let io = std::io::Error::other(e.message.clone());
        if let Ok(mut f) = self.failure.lock() {
            *f = Some(e);
        }
        self.sealer = None;
        io
    }
}

/// One step of the sealed upload stream: the header, sealed pieces of the body, the trailer.
async fn step<'a, 'b>(
    mut st: WriteState<'a, 'b>,
) -> Option<(Result<Bytes, std::io::Error>, WriteState<'a, 'b>)> {
    let sealer = st.sealer.as_mut()?;
    if !st.header_sent {
        st.header_sent = true;
        let header = sealer.header();
        return Some((Ok(header), st));
    }
    loop {
        match crate::store::next_chunk(st.input, st.received, st.declared).await {
            Ok(Some(chunk)) => {
                st.received += chunk.len() as u64;
                let sealer = st.sealer.as_mut()?;
                match sealer.update(chunk) {
                    Ok(out) if out.is_empty() => continue,
                    Ok(out) => return Some((Ok(out), st)),
                    Err(e) => {
                        let io = st.fail(StoreError::new(ErrorKind::Unavailable, e));
                        return Some((Err(io), st));
                    }
                }
            }
            Ok(None) => {
                let sealer = st.sealer.take()?;
                st.plain_len.store(sealer.len(), Ordering::Relaxed);
                return match sealer.finish() {
                    Ok(out) => Some((Ok(out), st)),
                    Err(e) => {
                        let io = st.fail(StoreError::new(ErrorKind::Unavailable, e));
                        Some((Err(io), st))
                    }
                };
            }
            Err(e) => {
                let io = st.fail(e);
                return Some((Err(io), st));
            }
        }
    }
}

/// The read side's settings, movable to the blocking pool.
struct Opener {
    config: Arc<SealConfig>,
    verifying: Arc<Vec<ed25519_dalek::VerifyingKey>>,
    spool_dir: PathBuf,
    inline_limit: u64,
}

impl Opener {
    fn checks(&self) -> Checks<'_> {
        Checks {
            config: &self.config,
            verifying: &self.verifying,
        }
    }

    /// A plain (unsealed) object: served as it is unless signatures are required.
    fn plain(&self) -> Result<(), Refusal> {
        if self.config.require_signature {
            Err(Refusal::Unsigned)
        } else {
            Ok(())
        }
    }

    /// `digest`: the backend's, kept when the object is plain (served as it is).
    fn open_memory(
        &self,
        hash: &str,
        bytes: Bytes,
        digest: Option<[u8; 32]>,
    ) -> Result<Artifact, Refusal> {
        if !bytes.starts_with(MAGIC) {
            self.plain()?;
            return Ok(Artifact {
                len: bytes.len() as u64,
                body: ArtifactBody::Memory(bytes),
                digest,
            });
        }
        let header = SealHeader::decode(&bytes)?;
        let key = format::precheck(&header, &self.checks())?;
        let body = &bytes[HEADER_LEN..];
        let mut sink = self.sink(body.len() as u64);
        let len = format::open_body(
            hash,
            &header,
            key,
            &self.checks(),
            &mut &body[..],
            body.len() as u64,
            &mut sink,
        )?;
        self.finish(sink, len)
    }

    fn open_file(
        &self,
        hash: &str,
        mut file: std::fs::File,
        offset: u64,
        len: u64,
        digest: Option<[u8; 32]>,
    ) -> Result<Artifact, Refusal> {
        let io = |e: std::io::Error| Refusal::Local(format!("cannot read the stored object: {e}"));
        let mut head = [0u8; HEADER_LEN];
        let got = read_up_to(&mut file, &mut head).map_err(io)?;
        if !head[..got.min(4)].starts_with(MAGIC) || got < 4 {
            self.plain()?;
            file.seek(SeekFrom::Start(offset)).map_err(io)?;
            return Ok(Artifact {
                len,
                body: ArtifactBody::File { file, offset },
                digest,
            });
        }
        let header = SealHeader::decode(&head[..got])?;
        let key = format::precheck(&header, &self.checks())?;
        let body_len = len - HEADER_LEN as u64;
        let mut sink = self.sink(body_len);
        let mut source = std::io::BufReader::with_capacity(256 * 1024, (&mut file).take(body_len));
        let n = format::open_body(
            hash,
            &header,
            key,
            &self.checks(),
            &mut source,
            body_len,
            &mut sink,
        )?;
        self.finish(sink, n)
    }

    /// Where an opened artifact of at most `upper_bound` bytes goes: memory up to the inline
    /// limit, else a spool file.
    fn sink(&self, upper_bound: u64) -> Spool {
        Spool::new(&self.spool_dir, self.inline_limit, Some(upper_bound))
    }

    fn finish(&self, sink: Spool, len: u64) -> Result<Artifact, Refusal> {
        let body = match sink.finish_blocking() {
            Ok(Spooled::Memory(bytes)) => ArtifactBody::Memory(bytes),
            Ok(Spooled::File(file)) => ArtifactBody::File { file, offset: 0 },
            Err(e) => {
                return Err(Refusal::Local(format!(
                    "cannot spool the artifact: {}",
                    e.message
                )))
            }
        };
        Ok(Artifact {
            len,
            body,
            digest: None,
        })
    }
}

fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

impl AsyncStore for SealedStore {
    async fn get(&self, hash: &TaskHash) -> Found {
        match self.read_checked(hash).await? {
            None => Ok(None),
            Some(Ok(artifact)) => Ok(Some(artifact)),
            Some(Err(Refusal::Unsigned)) if self.config.signing_key.is_some() => {
                // Routine: this run's write of the hash replaces it with a signed one.
                Err(Self::refused(&Refusal::Unsigned).with_cause(Cause {
                    routine: true,
                    ..Cause::new(
                        "unsigned replaced",
                        "unsigned, replaced by this signing run",
                    )
                }))
            }
            Some(Err(why)) => Err(Self::refused(&why)),
        }
    }

    async fn put(&self, hash: &TaskHash, upload: Upload<'_, '_>) -> Written {
        let Upload { body, declared_len } = upload;
        let sealer = Sealer::new(hash.as_str(), &self.config)
            .map_err(|e| StoreError::new(ErrorKind::Unavailable, e))?;
        let Some(sealer) = sealer else {
            // Neither signing nor encrypting: stored plain, as without this layer.
            return self.inner.put(hash, body, declared_len).await;
        };
        if sealer.signed() {
            // A trusted writer does not let an object it refuses (unsigned, signed by another
            // key, altered) hold its hash forever under first-writer-wins: it replaces it. An
            // object it accepts stays (`AlreadyExists`, nothing read from the body).
            match self.read_checked(hash).await? {
                None => {}
                Some(Ok(_)) => return Ok(PutOutcome::AlreadyExists),
                Some(Err(Refusal::Local(e))) => {
                    return Err(StoreError::new(ErrorKind::Unavailable, e))
                }
                Some(Err(_)) => {
                    self.inner.delete(hash).await?;
                }
            }
        }
        let sealed_len =
            declared_len.map(|n| format::sealed_len(n, sealer.signed(), sealer.encrypted()));
        let failure: Arc<Mutex<Option<StoreError>>> = Arc::new(Mutex::new(None));
        let plain_len = Arc::new(AtomicU64::new(0));
        let state = WriteState {
            input: body,
            sealer: Some(sealer),
            header_sent: false,
            received: 0,
            declared: declared_len,
            failure: failure.clone(),
            plain_len: plain_len.clone(),
        };
        let mut sealed: BodyStream<'_> = Box::pin(futures_util::stream::unfold(state, step));
        let outcome = self.inner.put(hash, &mut sealed, sealed_len).await;
        drop(sealed);
        let ours = failure.lock().ok().and_then(|mut f| f.take());
        match (outcome, ours) {
            (Err(_), Some(e)) => Err(e),
            (Err(e), None) => Err(e),
            (Ok(PutOutcome::Stored(_)), _) => {
                Ok(PutOutcome::Stored(plain_len.load(Ordering::Relaxed)))
            }
            (Ok(other), _) => Ok(other),
        }
    }

    fn describe(&self) -> String {
        let seal = self.config.describe();
        if seal.is_empty() {
            self.inner.describe()
        } else {
            format!("{}; {}", self.inner.describe(), seal)
        }
    }

    fn inner(&self) -> Option<&Arc<dyn Store>> {
        Some(&self.inner)
    }

    fn with_namespace(&self, ns: &Prefix) -> Result<Arc<dyn Store>, StoreError> {
        let mut view = self.clone();
        view.inner = self.inner.with_namespace(ns)?;
        Ok(Arc::new(view))
    }
}

/// Puts the seal layer in front of `store`, also without any setting: such a reader still
/// recognises sealed objects (see the module documentation) and writes plain ones as before.
pub fn wrap(store: Arc<dyn Store>, config: &SealConfig) -> Arc<dyn Store> {
    Arc::new(SealedStore::new(store, config.clone()))
}
