//! Storage behind the cache: one trait, one module per backend.
//!
//! Every backend honours the storage rules: keys are validated before they touch a path, the first
//! writer wins (a second write of a hash is `AlreadyExists`, never an overwrite), no reader sees a
//! partial object, and every object is verified against its envelope digest before it is served.

pub mod aws_profile;
pub mod fs;
pub mod guard;
pub mod http;
pub mod http_token;
pub mod object;
pub mod resilience;
pub mod spool;
pub mod unavailable;
pub mod validate;

use crate::key::{Prefix, TaskHash};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use std::fmt;
use std::future::Future;
use std::io;
use std::sync::Arc;

/// The hash a store's check looks up (valid, and never written by Nx, whose hashes are decimal):
/// the guard's start-up probe, doctor and [`Store::check`]'s default.
pub const PROBE_HASH: &str = "nx-open-cache-probe";

/// A body arriving from a client, chunk by chunk.
pub type BodyStream<'a> = BoxStream<'a, Result<Bytes, std::io::Error>>;

/// A verified artifact ready to be sent to Nx.
#[derive(Debug)]
pub struct Artifact {
    /// Payload length in bytes (the Nx artifact, without our envelope).
    pub len: u64,
    pub body: ArtifactBody,
    /// The payload's SHA-256, when the store checked the bytes it hands out against it (the
    /// envelope's digest; `None` where no such check vouches for these exact bytes). Lets a later
    /// layer remember a verdict about these bytes ([`validate`]).
    pub digest: Option<[u8; 32]>,
}

/// Where the verified payload bytes are.
#[derive(Debug)]
pub enum ArtifactBody {
    /// Small objects are read once into memory and verified there.
    Memory(Bytes),
    /// Large objects are verified in a first pass and then streamed from the same open file.
    File { file: std::fs::File, offset: u64 },
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Written; the payload length in bytes.
    Stored(u64),
    /// Another writer stored this hash first; nothing was changed.
    AlreadyExists,
}

/// What a delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    Removed,
    /// There was nothing under that hash.
    Absent,
    /// The store cannot delete (the Nx protocol has no DELETE).
    Unsupported,
}

/// Classes of storage faults; the message always names the path or key and the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The store cannot be reached or used (missing directory, permissions, I/O error).
    Unavailable,
    /// No space left (or, for a store with a size budget, no room made in time).
    Full,
    /// A stored object failed its integrity check, or something that is not an object (a
    /// symbolic link, a FIFO) has its name; a miss, never served. The message says whether it was
    /// removed.
    Corrupt,
    /// The client sent a body that does not match its declared length; nothing was stored.
    BadRequest,
    /// The object was read (or the upload received) but is not served (stored): it is not a
    /// structurally valid Nx artifact, or it is sealed in a way this reader cannot open or check.
    /// A miss on GET and a 400 on PUT, never a fault of the store: it does not count toward the
    /// outage breaker. The message is the reason, without the hash.
    Refused,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    pub kind: ErrorKind,
    pub message: String,
    /// The root cause, when the store could tell it (a bucket that does not exist, refused
    /// credentials or token): the run summary groups faults by it, and a lasting one makes the
    /// guard skip the store for the rest of the run. `None`: grouped by the message.
    pub cause: Option<Box<Cause>>,
}

/// The root cause of a fault (or a refusal), as the run summary shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// What groups faults: faults with equal keys are one line of the summary.
    pub key: String,
    /// Short and the same for every request it concerns: no hash, no object key, no request id.
    /// E.g. `S3 bucket acme-nx-cahce does not exist`.
    pub reason: String,
    /// It cannot fix itself within a run (a missing bucket, refused credentials or token, an
    /// unknown host): the guard stops calling the store at once.
    pub lasting: bool,
    /// The call did not reach the store: the guard skipped it for this cause.
    pub skipped: bool,
    /// A refusal that is part of normal operation (an unsigned object this signing run replaces):
    /// counted apart from errors and refusals.
    pub routine: bool,
    /// It concerns writes only (a read-only token or credentials refused a write): it says
    /// nothing about reads, so it never opens the guard's breaker.
    pub writes_only: bool,
}

impl Cause {
    /// A cause that may pass (a timeout, a 5xx) or whose lastingness is unknown.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Cause {
            key: key.into(),
            reason: reason.into(),
            lasting: false,
            skipped: false,
            routine: false,
            writes_only: false,
        }
    }

    /// A cause whose reason is its key (the guard's own causes).
    pub fn plain(reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Cause::new(reason.clone(), reason)
    }

    /// A cause that concerns writes only (reads go on).
    pub fn writes_only(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Cause {
            writes_only: true,
            ..Cause::new(key, reason)
        }
    }

    /// A cause that cannot fix itself within the run.
    pub fn lasting(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Cause {
            lasting: true,
            ..Cause::new(key, reason)
        }
    }
}

impl StoreError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        StoreError {
            kind,
            message: message.into(),
            cause: None,
        }
    }

    /// This error with its root cause.
    pub fn with_cause(mut self, cause: Cause) -> Self {
        self.cause = Some(Box::new(cause));
        self
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {}

/// What a lookup found: a verified artifact, `None` for a plain miss, or a fault.
pub type Found = Result<Option<Artifact>, StoreError>;
/// What a write did, or a fault.
pub type Written = Result<PutOutcome, StoreError>;

/// An upload to store: its body and the length its request declared (Content-Length), which the
/// bytes received are checked against.
pub struct Upload<'a, 'b> {
    pub body: &'a mut BodyStream<'b>,
    pub declared_len: Option<u64>,
}

/// A place artifacts are kept, as callers hold it (`Arc<dyn Store>`): the futures are boxed.
/// Stores and wrappers are written as an [`AsyncStore`], from which this follows.
pub trait Store: Send + Sync + 'static {
    /// Looks up and verifies an artifact. `Ok(None)` is a plain miss.
    fn get<'a>(&'a self, hash: &'a TaskHash) -> BoxFuture<'a, Found>;

    /// Stores an artifact if the hash is absent. `declared_len` (the request's Content-Length) is
    /// checked against the bytes received; on any error nothing becomes visible.
    ///
    /// The store may stop reading `body` early (for instance when the hash exists); the caller
    /// drains what is left.
    fn put<'a>(
        &'a self,
        hash: &'a TaskHash,
        body: &'a mut BodyStream<'_>,
        declared_len: Option<u64>,
    ) -> BoxFuture<'a, Written>;

    /// Human-readable location for summaries and errors, e.g. `fs /mnt/nx-cache`.
    fn describe(&self) -> String;

    /// Checks that the store can be used (reachable, credentials accepted, bucket or directory
    /// there) without writing. The default looks up a hash that is never stored.
    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.get(&probe_hash()?).await.map(|_| ()) })
    }

    /// Removes an artifact (used by `doctor` to clean up its probe). Stores that cannot delete
    /// answer `Unsupported`.
    fn delete<'a>(&'a self, hash: &'a TaskHash) -> BoxFuture<'a, Result<Deleted, StoreError>> {
        let _ = hash;
        Box::pin(async { Ok(Deleted::Unsupported) })
    }

    /// The same storage with `ns` appended to its key prefix (the server's token namespaces).
    fn with_namespace(&self, ns: &Prefix) -> Result<Arc<dyn Store>, StoreError>;
}

/// The one shape of every store and wrapper of this crate: [`Store`]'s calls as plain `async fn`s
/// ([`Store`] follows, its futures boxed in one place). A wrapper (seal, validate, guard) names the
/// store it stands in front of ([`AsyncStore::inner`]); what it does not change (the check,
/// deletes) is then that store's.
pub trait AsyncStore: Send + Sync + 'static {
    /// See [`Store::get`].
    fn get(&self, hash: &TaskHash) -> impl Future<Output = Found> + Send;

    /// See [`Store::put`].
    fn put(&self, hash: &TaskHash, upload: Upload<'_, '_>) -> impl Future<Output = Written> + Send;

    /// See [`Store::describe`].
    fn describe(&self) -> String;

    /// See [`Store::with_namespace`].
    fn with_namespace(&self, ns: &Prefix) -> Result<Arc<dyn Store>, StoreError>;

    /// The store a wrapper stands in front of; `None` for a backend.
    fn inner(&self) -> Option<&Arc<dyn Store>> {
        None
    }

    /// See [`Store::check`]: a wrapper's inner store's check; for a backend, a lookup of
    /// [`PROBE_HASH`].
    fn check(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            match self.inner() {
                Some(inner) => inner.check().await,
                None => AsyncStore::get(self, &probe_hash()?).await.map(|_| ()),
            }
        }
    }

    /// See [`Store::delete`]: a wrapper's inner store's delete; a backend cannot by default.
    fn delete(&self, hash: &TaskHash) -> impl Future<Output = Result<Deleted, StoreError>> + Send {
        async move {
            match self.inner() {
                Some(inner) => inner.delete(hash).await,
                None => Ok(Deleted::Unsupported),
            }
        }
    }
}

impl<T: AsyncStore> Store for T {
    fn get<'a>(&'a self, hash: &'a TaskHash) -> BoxFuture<'a, Found> {
        Box::pin(AsyncStore::get(self, hash))
    }

    fn put<'a>(
        &'a self,
        hash: &'a TaskHash,
        body: &'a mut BodyStream<'_>,
        declared_len: Option<u64>,
    ) -> BoxFuture<'a, Written> {
        Box::pin(AsyncStore::put(self, hash, Upload { body, declared_len }))
    }

    fn describe(&self) -> String {
        AsyncStore::describe(self)
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(AsyncStore::check(self))
    }

    fn delete<'a>(&'a self, hash: &'a TaskHash) -> BoxFuture<'a, Result<Deleted, StoreError>> {
        Box::pin(AsyncStore::delete(self, hash))
    }

    fn with_namespace(&self, ns: &Prefix) -> Result<Arc<dyn Store>, StoreError> {
        AsyncStore::with_namespace(self, ns)
    }
}

/// [`PROBE_HASH`] as a hash: a store that answers its lookup (with a miss) is usable.
fn probe_hash() -> Result<TaskHash, StoreError> {
    TaskHash::parse(PROBE_HASH).map_err(|e| StoreError::new(ErrorKind::Unavailable, e.to_string()))
}

/// The prefix of a namespaced store, or why it cannot be made.
pub(crate) fn namespaced(base: &Prefix, ns: &Prefix) -> Result<Prefix, StoreError> {
    base.join(ns).map_err(|e| {
        StoreError::new(
            ErrorKind::Unavailable,
            format!(
                "namespace {:?} inside prefix {:?}: {e}",
                ns.as_str(),
                base.as_str()
            ),
        )
    })
}

/// Turns an I/O error into a store error that says what was being done, where, and why.
pub(crate) fn io_error(e: &io::Error, doing: String) -> StoreError {
    let kind = if is_disk_full(e) {
        ErrorKind::Full
    } else {
        ErrorKind::Unavailable
    };
    StoreError::new(kind, format!("{doing}: {e}"))
}

fn is_disk_full(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
    }
    #[cfg(not(unix))]
    {
        e.kind() == io::ErrorKind::StorageFull
    }
}

/// The next chunk of an upload, checked against the declared length (`received` is what came so
/// far): a body longer or shorter than its Content-Length, or one that breaks off, is a
/// `BadRequest` and nothing may be stored.
pub(crate) async fn next_chunk(
    body: &mut BodyStream<'_>,
    received: u64,
    declared: Option<u64>,
) -> Result<Option<Bytes>, StoreError> {
    match body.next().await {
        Some(Ok(chunk)) => match declared {
            Some(limit) if received + chunk.len() as u64 > limit => Err(StoreError::new(
                ErrorKind::BadRequest,
                format!("body is longer than its Content-Length of {limit} bytes"),
            )),
            _ => Ok(Some(chunk)),
        },
        Some(Err(e)) => Err(StoreError::new(
            ErrorKind::BadRequest,
            format!("upload broke off after {received} bytes: {e}"),
        )),
        None => match declared {
            Some(limit) if received != limit => Err(StoreError::new(
                ErrorKind::BadRequest,
                format!("body is {received} bytes but its Content-Length is {limit}"),
            )),
            _ => Ok(None),
        },
    }
}
