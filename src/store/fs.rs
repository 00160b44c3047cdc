//! Shared-filesystem backend: a directory, local or on a network mount (NFS, SMB, EFS...).
//!
//! Layout: `<root>/[<prefix>/]<aa>/<bb>/<hash>` where `aa`/`bb` are the first two bytes (hex) of the
//! xxh3 of the hash, so a million entries spread over 65,536 directories of ~15 files each.
//! Objects are written to `<root>/.tmp/` first (same filesystem), fsynced, then hard-linked into
//! place: `link(2)` fails with EEXIST when the name exists, which makes creation atomic and
//! first-writer-wins on local disks and on NFS alike, for any number of processes and machines.
//!
//! Reads: every object is verified against its envelope digest before a byte is served. Small
//! objects (up to 256 KiB) are read and verified on the async worker, larger ones on the blocking
//! pool. A large object that passed in this process is served again without a second hashing pass
//! as long as its file is unchanged (same inode, size, mtime and ctime; any write to it changes
//! its ctime, which cannot be set back); a changed file is verified again.
//!
//! Last access: an object's mtime records when it was last served, not when it was written (atime
//! is unusable: often `noatime`/`relatime`). Objects are immutable and verified by their envelope
//! digest, so nothing else depends on their mtime. A GET hit sets it to now, at most once per
//! [`ACCESS_GRANULARITY`] per object (compared first, so a hot object costs no metadata write per
//! request); a failed update (read-only mount, foreign owner) never fails the read. Retention
//! (`crate::retention`) evicts the least recently accessed objects by this mtime.

use super::{
    io_error, next_chunk, Artifact, ArtifactBody, BodyStream, Deleted, ErrorKind, PutOutcome,
    Store, StoreError,
};
use crate::envelope::{Header, PayloadDigest, HEADER_LEN};
use crate::key::{Prefix, TaskHash};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

/// Objects up to this size are read and verified in memory in one pass.
pub const DEFAULT_INLINE_LIMIT: u64 = 8 * 1024 * 1024;
/// Temp files older than this are leftovers of killed writers and are removed.
const STALE_TMP_AGE: Duration = Duration::from_secs(3600);
const TMP_DIR: &str = ".tmp";
/// A served object's last-access time (its mtime) is refreshed when older than this.
pub const ACCESS_GRANULARITY: Duration = Duration::from_secs(3600);

/// Objects up to this size (envelope included) are read and verified on the async worker.
const SMALL_OBJECT_BYTES: u64 = 256 * 1024;
/// How many verified large objects a store remembers (then it starts over).
const VERIFIED_CAPACITY: usize = 65_536;

#[derive(Clone)]
pub struct FsStore {
    root: PathBuf,
    prefix: Prefix,
    inline_limit: u64,
    /// Large objects that passed verification in this process (shared by namespaced views).
    verified: Arc<Verified>,
}

/// What a read does next.
enum Step {
    Done(Option<Artifact>),
    Finish {
        path: PathBuf,
        file: std::fs::File,
        meta: std::fs::Metadata,
    },
}

/// Identity and state of a file that passed verification: any write to it changes its ctime (and
/// usually mtime and size), which no user can set back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

#[derive(Default)]
struct Verified {
    files: std::sync::Mutex<std::collections::HashMap<(u64, u64), Fingerprint>>,
}

impl Verified {
    #[cfg(unix)]
    fn key_and_print(meta: &std::fs::Metadata) -> Option<((u64, u64), Fingerprint)> {
        use std::os::unix::fs::MetadataExt;
        Some((
            (meta.dev(), meta.ino()),
            Fingerprint {
                size: meta.size(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                ctime: (meta.ctime(), meta.ctime_nsec()),
            },
        ))
    }

    #[cfg(not(unix))]
    fn key_and_print(_meta: &std::fs::Metadata) -> Option<((u64, u64), Fingerprint)> {
        None
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(u64, u64), Fingerprint>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn matches(&self, meta: &std::fs::Metadata) -> bool {
        Self::key_and_print(meta).is_some_and(|(key, print)| self.lock().get(&key) == Some(&print))
    }

    fn remember(&self, meta: &std::fs::Metadata) {
        if let Some((key, print)) = Self::key_and_print(meta) {
            let mut files = self.lock();
            if files.len() >= VERIFIED_CAPACITY {
                files.clear();
            }
            files.insert(key, print);
        }
    }
}

impl FsStore {
    pub fn new(root: impl Into<PathBuf>, prefix: Prefix) -> Self {
        FsStore {
            root: root.into(),
            prefix,
            inline_limit: DEFAULT_INLINE_LIMIT,
            verified: Arc::default(),
        }
    }

    /// Sets the in-memory verification threshold (tests use 0 to force the streaming path).
    pub fn with_inline_limit(mut self, limit: u64) -> Self {
        self.inline_limit = limit;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the cache directory (and parents) if missing and clears stale temp files.
    pub fn prepare(&self) -> Result<(), StoreError> {
        std::fs::create_dir_all(self.root.join(TMP_DIR)).map_err(|e| {
            io_error(
                &e,
                format!("cannot create cache directory {}", self.root.display()),
            )
        })?;
        self.remove_stale_tmp(STALE_TMP_AGE);
        Ok(())
    }

    /// Removes temp files older than `age` (left by writers that were killed mid-write).
    pub fn remove_stale_tmp(&self, age: Duration) -> usize {
        let Ok(entries) = std::fs::read_dir(self.root.join(TMP_DIR)) else {
            return 0;
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|d| d >= age);
            if old && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// The directory an object lives in (below the root, prefix included).
    fn object_dir(&self, hash: &TaskHash) -> PathBuf {
        let fan = xxhash_rust::xxh3::xxh3_64(hash.as_str().as_bytes()).to_be_bytes();
        let mut dir = self.root.clone();
        if !self.prefix.is_empty() {
            dir.push(self.prefix.as_str());
        }
        dir.push(format!("{:02x}", fan[0]));
        dir.push(format!("{:02x}", fan[1]));
        dir
    }

    pub fn object_path(&self, hash: &TaskHash) -> PathBuf {
        self.object_dir(hash).join(hash.as_str())
    }

    fn root_missing(&self) -> Option<StoreError> {
        match std::fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => None,
            Ok(_) => Some(StoreError::new(
                ErrorKind::Unavailable,
                format!("cache path {} is not a directory", self.root.display()),
            )),
            Err(e) => Some(io_error(
                &e,
                format!("cache directory {} is not usable", self.root.display()),
            )),
        }
    }

    /// Creates the fan-out directories below the root, never the root itself: a root that vanished
    /// (unmounted share, deleted directory) is a fault to report, not something to paper over.
    fn ensure_dirs(&self, hash: &TaskHash) -> Result<PathBuf, StoreError> {
        if let Some(err) = self.root_missing() {
            return Err(err);
        }
        let dir = self.object_dir(hash);
        let rel = dir.strip_prefix(&self.root).map_err(|_| {
            StoreError::new(
                ErrorKind::Unavailable,
                format!("object directory {} is outside the root", dir.display()),
            )
        })?;
        let mut current = self.root.clone();
        for part in rel.components() {
            current.push(part);
            create_dir_once(&current)?;
        }
        create_dir_once(&self.root.join(TMP_DIR))?;
        Ok(dir)
    }

    fn tmp_path(&self, hash: &TaskHash) -> PathBuf {
        let mut rand = [0u8; 8];
        // A failing OS random source only makes the name less unique; pid and time still differ.
        let _ = getrandom::fill(&mut rand);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        self.root.join(TMP_DIR).join(format!(
            "{}.{}.{:x}.{}.tmp",
            hash.as_str(),
            std::process::id(),
            nanos,
            hex::encode(rand)
        ))
    }

    /// First step of a read, cheap enough to run on an async worker: open and stat the object;
    /// a small object is read and verified right here, a large one already verified by this
    /// process and unchanged since is served without a second hashing pass. Everything else is
    /// left to [`FsStore::finish_read`] on a blocking thread.
    fn start_read(&self, hash: &TaskHash) -> Result<Step, StoreError> {
        let path = self.object_path(hash);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return match self.root_missing() {
                    Some(err) => Err(err),
                    None => Ok(Step::Done(None)),
                };
            }
            Err(e) => return Err(io_error(&e, format!("cannot open {}", path.display()))),
        };
        let meta = file
            .metadata()
            .map_err(|e| io_error(&e, format!("cannot stat {}", path.display())))?;
        let size = meta.len();
        if size <= SMALL_OBJECT_BYTES.min(self.inline_limit.saturating_add(HEADER_LEN as u64)) {
            return self.read_in_memory(&path, file, &meta).map(Step::Done);
        }
        if size > self.inline_limit.saturating_add(HEADER_LEN as u64)
            && self.verified.matches(&meta)
        {
            return self.serve_verified(&path, file).map(Step::Done);
        }
        Ok(Step::Finish { path, file, meta })
    }

    /// The rest of a read (blocking: a whole medium object, or the hashing pass of a large one).
    fn finish_read(
        &self,
        path: &Path,
        file: std::fs::File,
        meta: &std::fs::Metadata,
    ) -> Result<Option<Artifact>, StoreError> {
        if meta.len() <= self.inline_limit.saturating_add(HEADER_LEN as u64) {
            return self.read_in_memory(path, file, meta);
        }
        self.verify_large(path, file, meta)
    }

    /// Reads and verifies one pass of a small or medium object.
    fn read_in_memory(
        &self,
        path: &Path,
        mut file: std::fs::File,
        meta: &std::fs::Metadata,
    ) -> Result<Option<Artifact>, StoreError> {
        let read_err = |e: io::Error| io_error(&e, format!("cannot read {}", path.display()));
        let mut object = Vec::with_capacity(meta.len() as usize);
        file.read_to_end(&mut object).map_err(read_err)?;
        match crate::envelope::open(&object) {
            Ok(_) => {
                record_access(&file, meta);
                let all = Bytes::from(object);
                let payload = all.slice(HEADER_LEN..);
                Ok(Some(Artifact {
                    len: payload.len() as u64,
                    body: ArtifactBody::Memory(payload),
                }))
            }
            Err(e) => Err(self.quarantine(path, &e.to_string())),
        }
    }

    /// Verifies a large object in a first pass, then hands out the same open file positioned at
    /// the payload; remembers that this file (as it is now) passed.
    fn verify_large(
        &self,
        path: &Path,
        mut file: std::fs::File,
        meta: &std::fs::Metadata,
    ) -> Result<Option<Artifact>, StoreError> {
        let read_err = |e: io::Error| io_error(&e, format!("cannot read {}", path.display()));
        let header = self.read_header(path, &mut file)?;
        let mut digest = PayloadDigest::new();
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = file.read(&mut buf).map_err(read_err)?;
            if n == 0 {
                break;
            }
            digest.update(&buf[..n]);
        }
        let (len, d) = digest.finish();
        if let Err(e) = header.verify(len, &d) {
            return Err(self.quarantine(path, &e.to_string()));
        }
        file.seek(SeekFrom::Start(HEADER_LEN as u64))
            .map_err(read_err)?;
        record_access(&file, meta);
        // After the access mark (which changes mtime and ctime): that is the state that passed.
        if let Ok(now) = file.metadata() {
            self.verified.remember(&now);
        }
        Ok(Some(Artifact {
            len,
            body: ArtifactBody::File {
                file,
                offset: HEADER_LEN as u64,
            },
        }))
    }

    /// Serves a large object that passed verification in this process and has not changed since
    /// (same inode, size, mtime and ctime): only its header is read.
    fn serve_verified(
        &self,
        path: &Path,
        mut file: std::fs::File,
    ) -> Result<Option<Artifact>, StoreError> {
        let header = self.read_header(path, &mut file)?;
        Ok(Some(Artifact {
            len: header.payload_len,
            body: ArtifactBody::File {
                file,
                offset: HEADER_LEN as u64,
            },
        }))
    }

    /// Reads and decodes the envelope header at the file's start; a bad one quarantines the object.
    fn read_header(&self, path: &Path, file: &mut std::fs::File) -> Result<Header, StoreError> {
        let mut head = [0u8; HEADER_LEN];
        file.read_exact(&mut head)
            .map_err(|e| io_error(&e, format!("cannot read {}", path.display())))?;
        Header::decode(&head).map_err(|e| self.quarantine(path, &e.to_string()))
    }

    /// Blocking read + verification of one object (both steps).
    pub fn read_verified(&self, hash: &TaskHash) -> Result<Option<Artifact>, StoreError> {
        match self.start_read(hash)? {
            Step::Done(found) => Ok(found),
            Step::Finish { path, file, meta } => self.finish_read(&path, file, &meta),
        }
    }

    /// Removes an object that failed verification so the next build can store a good one.
    fn quarantine(&self, path: &Path, reason: &str) -> StoreError {
        let removed = match std::fs::remove_file(path) {
            Ok(()) => "removed it",
            Err(_) => "could not remove it",
        };
        StoreError::new(
            ErrorKind::Corrupt,
            format!(
                "corrupt cache object {} ({reason}); treated as a miss and {removed}",
                path.display()
            ),
        )
    }

    async fn write(
        &self,
        hash: &TaskHash,
        body: &mut BodyStream<'_>,
        declared_len: Option<u64>,
    ) -> Result<PutOutcome, StoreError> {
        // Directory work and the publishing link + directory fsync block: off the async workers.
        let store = self.clone();
        let h = hash.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            let final_path = store.object_path(&h);
            if final_path.exists() {
                return Ok(None);
            }
            store.ensure_dirs(&h)?;
            Ok(Some((final_path, store.tmp_path(&h))))
        })
        .await
        .map_err(|e| StoreError::new(ErrorKind::Unavailable, format!("write task failed: {e}")))?;
        let Some((final_path, tmp)) = prepared? else {
            return Ok(PutOutcome::AlreadyExists);
        };
        let result = self.write_tmp(&tmp, body, declared_len).await;
        let store = self.clone();
        let h = hash.clone();
        tokio::task::spawn_blocking(move || {
            let outcome = match result {
                Ok(len) => {
                    // Retention may remove an emptied fan-out directory between `ensure_dirs` and
                    // the link: make it again and retry once.
                    let published = match publish(&tmp, &final_path) {
                        Err(_) if !final_path.parent().is_some_and(Path::exists) => store
                            .ensure_dirs(&h)
                            .and_then(|_| publish(&tmp, &final_path)),
                        other => other,
                    };
                    published.map(|created| {
                        if created {
                            PutOutcome::Stored(len)
                        } else {
                            PutOutcome::AlreadyExists
                        }
                    })
                }
                Err(e) => Err(e),
            };
            // The temp name is either linked into place or garbage now.
            let _ = std::fs::remove_file(&tmp);
            outcome
        })
        .await
        .map_err(|e| StoreError::new(ErrorKind::Unavailable, format!("write task failed: {e}")))?
    }

    async fn write_tmp(
        &self,
        tmp: &Path,
        body: &mut BodyStream<'_>,
        declared_len: Option<u64>,
    ) -> Result<u64, StoreError> {
        let write_err = |e: io::Error| io_error(&e, format!("cannot write {}", tmp.display()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .await
            .map_err(|e| io_error(&e, format!("cannot create {}", tmp.display())))?;
        // A buffer no larger than the object needs (many small uploads may be in flight).
        let capacity = declared_len
            .map_or(1024 * 1024, |n| (n as usize).saturating_add(HEADER_LEN))
            .clamp(8 * 1024, 1024 * 1024);
        let mut out = tokio::io::BufWriter::with_capacity(capacity, file);
        out.write_all(&[0u8; HEADER_LEN]).await.map_err(write_err)?;
        let mut digest = PayloadDigest::new();
        while let Some(chunk) = next_chunk(body, digest.len(), declared_len).await? {
            digest.update(&chunk);
            out.write_all(&chunk).await.map_err(write_err)?;
        }
        out.flush().await.map_err(write_err)?;
        let mut file = out.into_inner();
        let header = digest.into_header();
        file.seek(SeekFrom::Start(0)).await.map_err(write_err)?;
        file.write_all(&header.encode()).await.map_err(write_err)?;
        file.sync_all().await.map_err(write_err)?;
        Ok(header.payload_len)
    }
}

/// Marks a served object as accessed now (its mtime) unless that was done less than
/// [`ACCESS_GRANULARITY`] ago. Errors are ignored: a read never fails because of this.
fn record_access(file: &std::fs::File, meta: &std::fs::Metadata) {
    let now = SystemTime::now();
    let recent = meta.modified().ok().is_some_and(|t| {
        now.duration_since(t)
            .map_or(true, |d| d < ACCESS_GRANULARITY)
    });
    if !recent {
        let _ = filetime::set_file_handle_times(file, None, Some(filetime::FileTime::from(now)));
    }
}

/// Creates one directory level; an existing one is fine.
fn create_dir_once(dir: &Path) -> Result<(), StoreError> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_error(
            &e,
            format!("cannot create directory {}", dir.display()),
        )),
    }
}

/// Makes a finished temp file visible under its final name unless that name exists.
/// Returns false when another writer got there first.
fn publish(tmp: &Path, final_path: &Path) -> Result<bool, StoreError> {
    match std::fs::hard_link(tmp, final_path) {
        Ok(()) => {
            sync_dir(final_path);
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) if link_unsupported(&e) => publish_by_rename(tmp, final_path),
        Err(e) => Err(io_error(
            &e,
            format!("cannot publish {}", final_path.display()),
        )),
    }
}

/// Filesystems without hard links (some FUSE and SMB mounts): rename without replacing where the
/// kernel offers it, else check-then-rename (a narrow window in which two writers of one hash both
/// "win"; both wrote the same complete, verified bytes, so no reader sees a partial object).
fn publish_by_rename(tmp: &Path, final_path: &Path) -> Result<bool, StoreError> {
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let (Ok(from), Ok(to)) = (
            CString::new(tmp.as_os_str().as_bytes()),
            CString::new(final_path.as_os_str().as_bytes()),
        ) else {
            return Err(StoreError::new(
                ErrorKind::Unavailable,
                format!("path {} contains a NUL byte", final_path.display()),
            ));
        };
        // SAFETY: both pointers are valid NUL-terminated strings for the duration of the call.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            sync_dir(final_path);
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::AlreadyExists {
            return Ok(false);
        }
        if !link_unsupported(&e) && e.raw_os_error() != Some(libc::EINVAL) {
            return Err(io_error(
                &e,
                format!("cannot publish {}", final_path.display()),
            ));
        }
    }
    if final_path.exists() {
        return Ok(false);
    }
    std::fs::rename(tmp, final_path)
        .map_err(|e| io_error(&e, format!("cannot publish {}", final_path.display())))?;
    sync_dir(final_path);
    Ok(true)
}

fn link_unsupported(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(
            e.raw_os_error(),
            Some(libc::EPERM) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EMLINK)
        )
    }
    #[cfg(not(unix))]
    {
        e.kind() == io::ErrorKind::Unsupported
    }
}

/// Makes the new directory entry durable (best effort: not every filesystem allows it).
fn sync_dir(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

impl Store for FsStore {
    fn get<'a>(
        &'a self,
        hash: &'a TaskHash,
    ) -> BoxFuture<'a, Result<Option<Artifact>, StoreError>> {
        Box::pin(async move {
            // Opening, a stat and a small read are cheap enough for the async worker (a hop to the
            // blocking pool costs more than they do); medium reads and hashing passes are not.
            match self.start_read(hash)? {
                Step::Done(found) => Ok(found),
                Step::Finish { path, file, meta } => {
                    let store = self.clone();
                    tokio::task::spawn_blocking(move || store.finish_read(&path, file, &meta))
                        .await
                        .map_err(|e| {
                            StoreError::new(
                                ErrorKind::Unavailable,
                                format!("read task failed: {e}"),
                            )
                        })?
                }
            }
        })
    }

    fn put<'a>(
        &'a self,
        hash: &'a TaskHash,
        body: &'a mut BodyStream<'_>,
        declared_len: Option<u64>,
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        Box::pin(self.write(hash, body, declared_len))
    }

    fn describe(&self) -> String {
        if self.prefix.is_empty() {
            format!("fs {}", self.root.display())
        } else {
            format!(
                "fs {} (prefix {})",
                self.root.display(),
                self.prefix.as_str()
            )
        }
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        // The directory exists (or can be made) and takes a temp file.
        Box::pin(async move {
            let store = self.clone();
            tokio::task::spawn_blocking(move || store.prepare())
                .await
                .map_err(|e| {
                    StoreError::new(ErrorKind::Unavailable, format!("check failed: {e}"))
                })?
        })
    }

    fn delete<'a>(&'a self, hash: &'a TaskHash) -> BoxFuture<'a, Result<Deleted, StoreError>> {
        Box::pin(async move {
            let path = self.object_path(hash);
            match tokio::fs::remove_file(&path).await {
                Ok(()) => Ok(Deleted::Removed),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Deleted::Absent),
                Err(e) => Err(super::io_error(&e, format!("removing {}", path.display()))),
            }
        })
    }

    fn with_namespace(&self, ns: &Prefix) -> Result<Arc<dyn Store>, StoreError> {
        let mut store = self.clone();
        store.prefix = super::namespaced(&self.prefix, ns)?;
        Ok(Arc::new(store))
    }
}
