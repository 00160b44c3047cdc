//! Nothing but structurally valid Nx artifacts in or out: a [`ValidatingStore`] wraps any store
//! and runs [`crate::archive::validate`] over what it reads and what it is given to write.
//!
//! - **get** (`on_get`): the inner store's verified payload is checked before it is returned (in
//!   memory, or read from its file and the file rewound to the payload). A payload that fails is
//!   an `Err` of kind [`ErrorKind::Refused`] whose message is the refusal ("not a valid Nx
//!   artifact: ..."), so the server answers a miss and counts the reason. With `delete_refused`,
//!   the object is also deleted when the inner store can delete (fs, s3, gcs, azure; not an http
//!   upstream): under first-writer-wins the junk would otherwise hold its hash for good, and the
//!   next correct upload of that hash could never replace it. A reader whose limits are below the
//!   defaults keeps what it refuses for a bound only (`delete_over_limit` off): others accept it.
//! - **put** (`on_put`): every chunk of the upload also feeds the check as it passes to the inner
//!   store; a refusal (at once for a bad entry, at the end for a truncated stream) ends the
//!   stream with an error, so the inner store publishes nothing, and comes back as `Refused` with
//!   the reason (the server's 400 "not stored: ..."). A body that does not match its
//!   Content-Length is left to the inner store (`BadRequest`).
//!
//! - **memory** ([`verdicts`]): a pass is remembered by the payload's SHA-256 when the inner store
//!   checked the bytes against it, so bytes that passed are not inflated again on every read.
//!
//! In a stack: backend -> seal -> validating -> guard. A refusal is never a store fault: the
//! guard does not count it toward its outage breaker.

use super::{
    Artifact, ArtifactBody, AsyncStore, BodyStream, Deleted, ErrorKind, Found, PutOutcome, Store,
    StoreError, Upload, Written,
};
use crate::archive::validate::{validate_reader, validate_slice, Refusal, Rule, ValidationLimits};
use crate::key::{Prefix, TaskHash};
use bytes::Bytes;
use futures_util::StreamExt;
use std::io::{Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex};

pub mod verdicts;

/// Payloads up to this size are checked on the async worker; larger ones on the blocking pool.
const ON_WORKER_LIMIT: u64 = 256 * 1024;

/// What a [`ValidatingStore`] checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationPolicy {
    /// Check what is read before it is served.
    pub on_get: bool,
    /// Check uploads before they are stored.
    pub on_put: bool,
    /// Delete an object that fails the check on read (when the store can delete).
    pub delete_refused: bool,
    /// With `delete_refused`, also delete an object refused for a bound only ([`Rule::Limit`]).
    pub delete_over_limit: bool,
    pub limits: ValidationLimits,
}

impl ValidationPolicy {
    /// The proxy's: reads are checked (Nx's own uploads are not); refused objects are deleted
    /// when the run may write (`writes`), except, when this machine's `limits` are below the
    /// defaults, those refused for a bound: a valid artifact that other readers accept stays.
    pub fn proxy(writes: bool, limits: ValidationLimits) -> Self {
        ValidationPolicy {
            on_get: true,
            on_put: false,
            delete_refused: writes,
            delete_over_limit: !limits.lowered(),
            limits,
        }
    }

    /// `serve`'s: uploads and reads are checked; refused objects are deleted (its limits are
    /// the rule for everything it stores).
    pub fn server(limits: ValidationLimits) -> Self {
        ValidationPolicy {
            on_get: true,
            on_put: true,
            delete_refused: true,
            delete_over_limit: true,
            limits,
        }
    }
}

/// A store that serves and stores only valid Nx artifacts.
#[derive(Clone)]
pub struct ValidatingStore {
    inner: Arc<dyn Store>,
    policy: Arc<ValidationPolicy>,
    /// Shared with the namespaced views and every store of the process with the same limits: a
    /// verdict is about bytes, wherever they are stored.
    passed: Arc<verdicts::Verdicts>,
}

impl ValidatingStore {
    pub fn new(inner: Arc<dyn Store>, policy: ValidationPolicy) -> Self {
        ValidatingStore {
            inner,
            passed: verdicts::for_limits(&policy.limits),
            policy: Arc::new(policy),
        }
    }

    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    /// How many payloads that passed are remembered (see [`verdicts`]).
    pub fn remembered(&self) -> usize {
        self.passed.len()
    }

    /// The error for a stored object that failed the check, after deleting it if so configured.
    async fn refused_on_read(&self, hash: &TaskHash, refusal: &Refusal) -> StoreError {
        let over_limit = refusal.rule() == Rule::Limit;
        let note = if self.policy.delete_refused && over_limit && !self.policy.delete_over_limit {
            "; kept in the store (over this machine's lowered limits only)"
        } else if self.policy.delete_refused {
            match self.inner.delete(hash).await {
                Ok(Deleted::Removed) => "; removed from the store",
                Ok(Deleted::Absent) => "",
                Ok(Deleted::Unsupported) => "; kept (the store cannot delete)",
                Err(_) => "; could not be removed from the store",
            }
        } else {
            ""
        };
        StoreError::new(ErrorKind::Refused, format!("{refusal}{note}"))
    }
}

/// What [`check_artifact`] found: the artifact (a file rewound to its payload), the verdict, and
/// the digest that vouches for exactly the bytes checked, if any.
type Checked = (Artifact, Result<(), Refusal>, Option<[u8; 32]>);

/// Checks a verified artifact. The digest that may be remembered for a pass: the store's for
/// bytes in memory (immutable, hashed by the store itself); for a file, which others may write
/// between the store's hashing pass and this one, only a digest computed over the bytes this
/// check read, and only when it equals the store's.
async fn check_artifact(
    artifact: Artifact,
    limits: &ValidationLimits,
) -> Result<Checked, StoreError> {
    let len = artifact.len;
    let claimed = artifact.digest;
    match artifact.body {
        ArtifactBody::Memory(bytes) if len <= ON_WORKER_LIMIT => {
            let verdict = validate_slice(&bytes, limits).map(|_| ());
            Ok((memory(bytes), verdict, claimed))
        }
        body => {
            // Checks of stored objects beyond the small ones take turns, as many at once as there
            // are CPUs: they are CPU-bound, and each holds its archive's path map (about 120 bytes
            // per path) while it runs.
            let _turn = check_turns().acquire().await.map_err(|e| {
                StoreError::new(ErrorKind::Unavailable, format!("artifact check: {e}"))
            })?;
            let limits = limits.clone();
            tokio::task::spawn_blocking(move || match body {
                ArtifactBody::Memory(bytes) => {
                    let verdict = validate_slice(&bytes, &limits).map(|_| ());
                    Ok((memory(bytes), verdict, claimed))
                }
                ArtifactBody::File { file, offset } => {
                    check_file(file, offset, len, &limits, claimed)
                }
            })
            .await
            .map_err(|e| {
                StoreError::new(
                    ErrorKind::Unavailable,
                    format!("artifact check task failed: {e}"),
                )
            })?
        }
    }
}

/// The process's turns for checking stored objects (see [`check_artifact`]).
fn check_turns() -> &'static tokio::sync::Semaphore {
    static TURNS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    TURNS.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::sync::Semaphore::new(cpus.max(2))
    })
}

fn memory(bytes: Bytes) -> Artifact {
    Artifact {
        len: bytes.len() as u64,
        body: ArtifactBody::Memory(bytes),
        digest: None,
    }
}

/// Reads `len` payload bytes from `offset`, checks them (hashing them too when the store claims a
/// digest), and rewinds the file to `offset`.
fn check_file(
    mut file: std::fs::File,
    offset: u64,
    len: u64,
    limits: &ValidationLimits,
    claimed: Option<[u8; 32]>,
) -> Result<Checked, StoreError> {
    let fail = |e: std::io::Error| {
        StoreError::new(
            ErrorKind::Unavailable,
            format!("reading the stored object to check it: {e}"),
        )
    };
    file.seek(SeekFrom::Start(offset)).map_err(fail)?;
    let mut reader = Hashing {
        inner: (&mut file).take(len),
        digest: claimed.map(|_| crate::envelope::PayloadDigest::new()),
    };
    let verdict = validate_reader(&mut reader, limits, Some(len))
        .map_err(fail)?
        .map(|_| ());
    // A pass has read the payload to its end; anything left (there should be nothing) is hashed
    // too, so the digest covers exactly `len` bytes or does not match.
    let vouched = match (&verdict, claimed) {
        (Ok(()), Some(claimed)) => {
            std::io::copy(&mut reader, &mut std::io::sink()).map_err(fail)?;
            reader
                .digest
                .map(|d| d.finish())
                .filter(|(n, d)| *n == len && *d == claimed)
                .map(|(_, d)| d)
        }
        _ => None,
    };
    file.seek(SeekFrom::Start(offset)).map_err(fail)?;
    Ok((
        Artifact {
            len,
            body: ArtifactBody::File { file, offset },
            digest: None,
        },
        verdict,
        vouched,
    ))
}

/// A reader that hashes what passes through it (when it has a digest to feed).
struct Hashing<R> {
    inner: R,
    digest: Option<crate::envelope::PayloadDigest>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let (Some(d), Some(read)) = (self.digest.as_mut(), buf.get(..n)) {
            d.update(read);
        }
        Ok(n)
    }
}

/// An upload on its way to the inner store, checked chunk by chunk.
struct CheckedUpload<'a, 'b> {
    input: &'a mut BodyStream<'b>,
    validator: Option<crate::archive::Validator>,
    received: u64,
    declared: Option<u64>,
    refused: Arc<Mutex<Option<Refusal>>>,
}

impl CheckedUpload<'_, '_> {
    /// Records the refusal and turns it into the stream error that stops the inner store.
    fn refuse(&mut self, refusal: Refusal) -> std::io::Error {
        let e = std::io::Error::other(refusal.to_string());
        if let Ok(mut slot) = self.refused.lock() {
            *slot = Some(refusal);
        }
        self.validator = None;
        e
    }

    /// Whether the body so far (and `more` bytes) still fits its declared length: when it does
    /// not, the inner store reports the mismatch (`BadRequest`), not the check.
    fn fits(&self, more: u64) -> bool {
        self.declared
            .is_none_or(|d| self.received.saturating_add(more) <= d)
    }
}

async fn next_checked<'a, 'b>(
    mut up: CheckedUpload<'a, 'b>,
) -> Option<(Result<Bytes, std::io::Error>, CheckedUpload<'a, 'b>)> {
    let next = up.input.next().await;
    match next {
        Some(Ok(chunk)) => {
            let fits = up.fits(chunk.len() as u64);
            up.received = up.received.saturating_add(chunk.len() as u64);
            if fits {
                if let Some(v) = up.validator.as_mut() {
                    if let Err(refusal) = v.feed(&chunk) {
                        let e = up.refuse(refusal);
                        return Some((Err(e), up));
                    }
                }
            } else {
                up.validator = None;
            }
            Some((Ok(chunk), up))
        }
        Some(Err(e)) => {
            up.validator = None;
            Some((Err(e), up))
        }
        None => {
            let complete = up.declared.is_none_or(|d| d == up.received);
            match up.validator.take() {
                Some(v) if complete => match v.finish() {
                    Ok(_) => None,
                    Err(refusal) => {
                        let e = up.refuse(refusal);
                        Some((Err(e), up))
                    }
                },
                _ => None,
            }
        }
    }
}

impl AsyncStore for ValidatingStore {
    async fn get(&self, hash: &TaskHash) -> Found {
        let Some(artifact) = self.inner.get(hash).await? else {
            return Ok(None);
        };
        if !self.policy.on_get {
            return Ok(Some(artifact));
        }
        let digest = artifact.digest;
        if digest.is_some_and(|d| self.passed.passed(&d)) {
            return Ok(Some(artifact));
        }
        let (mut artifact, verdict, vouched) =
            check_artifact(artifact, &self.policy.limits).await?;
        artifact.digest = digest;
        match verdict {
            Ok(()) => {
                if let Some(d) = vouched {
                    self.passed.remember(d);
                }
                Ok(Some(artifact))
            }
            Err(refusal) => Err(self.refused_on_read(hash, &refusal).await),
        }
    }

    async fn put(&self, hash: &TaskHash, upload: Upload<'_, '_>) -> Written {
        let Upload { body, declared_len } = upload;
        if !self.policy.on_put {
            return self.inner.put(hash, body, declared_len).await;
        }
        let refused: Arc<Mutex<Option<Refusal>>> = Arc::default();
        let outcome = {
            let checking = CheckedUpload {
                input: body,
                validator: Some(crate::archive::Validator::new(
                    self.policy.limits.clone(),
                    declared_len,
                )),
                received: 0,
                declared: declared_len,
                refused: refused.clone(),
            };
            let mut stream: BodyStream<'_> =
                Box::pin(futures_util::stream::unfold(checking, next_checked));
            self.inner.put(hash, &mut stream, declared_len).await
        };
        let refusal = refused.lock().ok().and_then(|mut r| r.take());
        match (outcome, refusal) {
            (Ok(PutOutcome::Stored(_)), Some(refusal)) => {
                // A store that published despite the failed stream: take it back.
                let _ = self.inner.delete(hash).await;
                Err(StoreError::new(ErrorKind::Refused, refusal.to_string()))
            }
            (Err(_), Some(refusal)) => {
                Err(StoreError::new(ErrorKind::Refused, refusal.to_string()))
            }
            (outcome, _) => outcome,
        }
    }

    fn describe(&self) -> String {
        self.inner.describe()
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

/// Wraps `store` when `policy` checks anything; otherwise returns it as it is.
pub fn wrap(store: Arc<dyn Store>, policy: ValidationPolicy) -> Arc<dyn Store> {
    if policy.on_get || policy.on_put {
        Arc::new(ValidatingStore::new(store, policy))
    } else {
        store
    }
}
