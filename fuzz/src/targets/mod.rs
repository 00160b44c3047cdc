//! The bodies of the fuzz targets: one module per target, each with `run(data)`, which must
//! return normally for every input (a panic is a finding). The libFuzzer binaries in
//! `fuzz_targets/` call them, and so does the main crate's `tests/fuzz_corpus.rs`, which runs every
//! committed corpus file and the seeds through them on stable Rust: one body, two drivers.
//!
//! The bodies check more than "no panic": each states the guarantee it holds the code to (an
//! envelope is accepted only as `seal` writes it; nothing is written outside an unpack's
//! destination; a sealed object is served only when its seal checks out; no secret in an error;
//! every answer of the server is one of its documented statuses; an artifact check gives one
//! verdict however the bytes are cut, and what it accepts restores).
//!
//! Adding a target: a module here with `run`, a line in [`TARGETS`] and in `seeds::seeds`, a
//! `[[bin]]` in `fuzz/Cargo.toml` with its `fuzz_targets/<name>.rs`, a corpus directory, and its
//! input size limit in `scripts/fuzz.js`. `tests/fuzz_corpus.rs` picks it up from [`TARGETS`].

pub mod config;
pub mod envelope;
pub mod router;
pub mod seal_open;
pub mod seeds;
pub mod unpack;
pub mod validate;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use nx_open_cache::key::{Prefix, TaskHash};
use nx_open_cache::store::{
    Artifact, ArtifactBody, BodyStream, ErrorKind, PutOutcome, Store, StoreError,
};
use std::io::Read;
use std::sync::{Arc, Mutex, OnceLock};

/// A target's body: returns for every input; a panic is a finding.
pub type Body = fn(&[u8]);

/// The fuzz targets by name, in the order `npm run fuzz` runs them.
pub const TARGETS: &[(&str, Body)] = &[
    ("envelope", envelope::run),
    ("unpack", unpack::run),
    ("seal_open", seal_open::run),
    ("config", config::run),
    ("router", router::run),
    ("validate", validate::run),
];

/// The body of the target `name`, if there is one.
pub fn target(name: &str) -> Option<Body> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// One single-threaded runtime per process for the async targets (a runtime per input would
/// dominate the time per input).
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the fuzz runtime starts")
        })
        .block_on(f)
}

/// A fresh scratch directory for one input, removed when dropped.
pub(crate) fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("nx-open-cache-fuzz-")
        .tempdir()
        .expect("a scratch directory")
}

/// The bytes of an artifact a store returned.
pub(crate) fn read_artifact(artifact: Artifact) -> Vec<u8> {
    match artifact.body {
        ArtifactBody::Memory(b) => b.to_vec(),
        ArtifactBody::File { mut file, .. } => {
            let mut out = Vec::new();
            file.read_to_end(&mut out).expect("read the artifact file");
            out
        }
    }
}

/// A store holding at most one object in memory, for the seal layer: `get` returns it (in memory,
/// or from a file positioned after a fake envelope, as the fs store hands out large objects), and
/// `put` records what the layer writes.
pub(crate) struct MemoryStore {
    object: Mutex<Option<Bytes>>,
    /// `Some(dir)`: `get` returns the object as a file in `dir`.
    file_dir: Option<std::path::PathBuf>,
}

/// The bytes in front of an object in the file form (what an envelope occupies in the fs store).
const FILE_OFFSET: usize = 48;

impl MemoryStore {
    pub(crate) fn new(object: Option<Bytes>, file_dir: Option<std::path::PathBuf>) -> Self {
        MemoryStore {
            object: Mutex::new(object),
            file_dir,
        }
    }

    pub(crate) fn object(&self) -> Option<Bytes> {
        self.object.lock().expect("store lock").clone()
    }

    fn artifact(&self, bytes: Bytes) -> Result<Artifact, StoreError> {
        let len = bytes.len() as u64;
        let Some(dir) = &self.file_dir else {
            return Ok(Artifact {
                len,
                body: ArtifactBody::Memory(bytes),
                digest: None,
            });
        };
        use std::io::{Seek, SeekFrom, Write};
        let io = |e: std::io::Error| StoreError::new(ErrorKind::Unavailable, e.to_string());
        let mut file = tempfile::tempfile_in(dir).map_err(io)?;
        file.write_all(&[0xee; FILE_OFFSET]).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.seek(SeekFrom::Start(FILE_OFFSET as u64)).map_err(io)?;
        Ok(Artifact {
            len,
            body: ArtifactBody::File {
                file,
                offset: FILE_OFFSET as u64,
            },
            digest: None,
        })
    }
}

impl Store for MemoryStore {
    fn get<'a>(
        &'a self,
        _hash: &'a TaskHash,
    ) -> BoxFuture<'a, Result<Option<Artifact>, StoreError>> {
        Box::pin(async move { self.object().map(|b| self.artifact(b)).transpose() })
    }

    fn put<'a>(
        &'a self,
        _hash: &'a TaskHash,
        body: &'a mut BodyStream<'_>,
        _declared_len: Option<u64>,
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        Box::pin(async move {
            let mut all = Vec::new();
            while let Some(chunk) = body.next().await {
                let chunk =
                    chunk.map_err(|e| StoreError::new(ErrorKind::BadRequest, e.to_string()))?;
                all.extend_from_slice(&chunk);
            }
            let len = all.len() as u64;
            *self.object.lock().expect("store lock") = Some(Bytes::from(all));
            Ok(PutOutcome::Stored(len))
        })
    }

    fn describe(&self) -> String {
        "memory".into()
    }

    fn delete<'a>(
        &'a self,
        _hash: &'a TaskHash,
    ) -> BoxFuture<'a, Result<nx_open_cache::store::Deleted, StoreError>> {
        Box::pin(async move {
            let had = self.object.lock().expect("store lock").take();
            Ok(match had {
                Some(_) => nx_open_cache::store::Deleted::Removed,
                None => nx_open_cache::store::Deleted::Absent,
            })
        })
    }

    fn with_namespace(&self, _ns: &Prefix) -> Result<Arc<dyn Store>, StoreError> {
        Err(StoreError::new(
            ErrorKind::Unavailable,
            "the fuzz memory store has no namespaces",
        ))
    }
}
