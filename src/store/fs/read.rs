//! Reads of the fs store: open without following links, verify, serve, record the access.
//!
//! Every byte is verified against the envelope digest before it is served the first time. A
//! file that passed is remembered by its identity and state ([`Verified`]: device, inode, size,
//! mtime, ctime) and served again without a hashing pass while that state holds: a write to the
//! file changes its ctime (which no user can set back) and a file replaced by a rename has another
//! inode, so either is verified again. A state is remembered only when it held for the whole
//! pass and its ctime is at least [`SETTLED`] old: file times come from a coarse clock (one
//! tick), so a write in the tick of the file's last change could leave its times as they were; a
//! second later it cannot. An object served from memory is checked against its remembered state
//! again after its bytes were read (a change in between means the bytes read are hashed after
//! all); one streamed from its file is checked by the server after every chunk.
//!
//! Where the work runs: opening, a stat, a small object's read (and its first verification) and
//! a verified object's header are cheap enough for the async worker; the first hashing pass of a
//! larger object runs on the blocking pool (so does a small one that grew past the small size
//! under its read: the re-read stops there). The access mark (an mtime update, at most once per
//! [`ACCESS_GRANULARITY`]) is made before the state is compared, so the state remembered is the
//! one after it: a hot object costs one more verification per granularity, no write per request.

use super::dir::{Dir, Kind};
use super::temp::clamp_future;
use super::{FsStore, Location, ACCESS_GRANULARITY};
use crate::envelope::{Header, PayloadDigest, HEADER_LEN};
use crate::key::TaskHash;
use crate::store::{io_error, Artifact, ArtifactBody, ErrorKind, StoreError};
use bytes::Bytes;
use std::io::{self, Read, Seek, SeekFrom};
use std::time::{Duration, SystemTime};

/// Objects up to this size (envelope included) are read and verified on the async worker, and
/// served from memory once verified; larger verified ones are streamed from their file.
const SMALL_OBJECT_BYTES: u64 = 256 * 1024;
/// How many verified objects a store remembers (then it starts over).
const VERIFIED_CAPACITY: usize = 65_536;
/// How old a file's ctime must be before its state may be remembered (see the module doc); not
/// used where files have no ctime (nothing is remembered there).
#[cfg_attr(not(unix_native), allow(dead_code))]
pub(crate) const SETTLED: Duration = Duration::from_secs(1);

/// What a read does next.
enum Step {
    Done(Option<Artifact>),
    Finish {
        loc: Location,
        file: std::fs::File,
        meta: std::fs::Metadata,
    },
}

/// What a read into memory gave.
enum Whole {
    Read(Option<Artifact>),
    /// Left to the blocking pool ([`FsStore::finish_read`]): a file that grew past the read's
    /// limit under it, or a large one to hash. The file, positioned at its start, and the state
    /// to check it against.
    Blocking {
        file: std::fs::File,
        meta: std::fs::Metadata,
    },
}

impl Whole {
    /// The next step of a read that found this (a grown file finishes on the blocking pool).
    fn step(self, loc: Location) -> Step {
        match self {
            Whole::Read(found) => Step::Done(found),
            Whole::Blocking { file, meta } => Step::Finish { loc, file, meta },
        }
    }
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
pub(super) struct Verified {
    files: std::sync::Mutex<std::collections::HashMap<(u64, u64), Fingerprint>>,
}

impl Verified {
    #[cfg(unix_native)]
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

    #[cfg(not(unix_native))]
    fn key_and_print(_meta: &std::fs::Metadata) -> Option<((u64, u64), Fingerprint)> {
        None
    }

    /// Whether a state may be remembered: its ctime is at least [`SETTLED`] before `now`.
    #[cfg(unix_native)]
    fn settled(meta: &std::fs::Metadata, now: SystemTime) -> bool {
        use std::os::unix::fs::MetadataExt;
        let ctime = u64::try_from(meta.ctime()).ok().map(|s| {
            SystemTime::UNIX_EPOCH
                + Duration::from_secs(s)
                + Duration::from_nanos(u64::try_from(meta.ctime_nsec()).unwrap_or(0))
        });
        ctime.is_some_and(|c| now.duration_since(c).is_ok_and(|age| age >= SETTLED))
    }

    #[cfg(not(unix_native))]
    fn settled(_meta: &std::fs::Metadata, _now: SystemTime) -> bool {
        false
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(u64, u64), Fingerprint>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether two stats of a file show the same state (same file, size, mtime and ctime; where
    /// the platform gives no identity, size and mtime).
    fn unchanged(before: &std::fs::Metadata, after: &std::fs::Metadata) -> bool {
        match (Self::key_and_print(before), Self::key_and_print(after)) {
            (Some(a), Some(b)) => a == b,
            _ => before.len() == after.len() && before.modified().ok() == after.modified().ok(),
        }
    }

    fn matches(&self, meta: &std::fs::Metadata) -> bool {
        Self::key_and_print(meta).is_some_and(|(key, print)| self.lock().get(&key) == Some(&print))
    }

    /// Remembers the state `before` of a file that passed, when the file still is in it
    /// (`after`, a stat taken after the pass) and that state had settled when the pass began
    /// (`started`): a write in the tick of the file's last change, during a long pass, could
    /// otherwise go unseen.
    fn remember(&self, before: &std::fs::Metadata, after: &std::fs::Metadata, started: SystemTime) {
        if !Self::unchanged(before, after) || !Self::settled(before, started) {
            return;
        }
        if let Some((key, print)) = Self::key_and_print(before) {
            let mut files = self.lock();
            if files.len() >= VERIFIED_CAPACITY {
                files.clear();
            }
            files.insert(key, print);
        }
    }
}

impl FsStore {
    /// Looks an object up and verifies it; a hit records the access.
    pub(super) async fn read(&self, hash: &TaskHash) -> Result<Option<Artifact>, StoreError> {
        // Opening, a stat and a small read are cheap enough for the async worker (a hop to the
        // blocking pool costs more than they do); hashing passes of larger objects are not.
        match self.start_read(hash)? {
            Step::Done(found) => Ok(found),
            Step::Finish { loc, file, meta } => {
                let store = self.clone();
                tokio::task::spawn_blocking(move || store.finish_read(&loc, file, &meta))
                    .await
                    .map_err(|e| super::task_failed("read", e))?
            }
        }
    }

    /// Blocking read + verification of one object (both steps).
    pub fn read_verified(&self, hash: &TaskHash) -> Result<Option<Artifact>, StoreError> {
        match self.start_read(hash)? {
            Step::Done(found) => Ok(found),
            Step::Finish { loc, file, meta } => self.finish_read(&loc, file, &meta),
        }
    }

    /// Whether the object of `hash` is in a state that passed verification in this store (it is
    /// then served without a hashing pass). For tests and diagnostics; records no access.
    pub fn remembers_verified(&self, hash: &TaskHash) -> bool {
        let loc = self.locate(hash);
        self.open_root()
            .ok()
            .and_then(|root| root.open_file(&loc.parts).ok())
            .and_then(|f| f.metadata().ok())
            .is_some_and(|meta| self.verified.matches(&meta))
    }

    /// First step of a read, cheap enough to run on an async worker: open and stat the object,
    /// mark the access when due; an object in a remembered state is served without a hashing
    /// pass, a small one is read and verified right here. Everything else is left to
    /// [`FsStore::finish_read`] on a blocking thread.
    fn start_read(&self, hash: &TaskHash) -> Result<Step, StoreError> {
        let loc = self.locate(hash);
        let mut root = self.open_root()?;
        let mut again = true;
        let file = loop {
            match root.open_file(&loc.parts) {
                Ok(f) => break f,
                Err(b) if super::is_not_found(&b) => match self.reopened_root(&root)? {
                    // The path names another directory now: look there (once).
                    Some(current) if again => {
                        root = current;
                        again = false;
                    }
                    _ => return Ok(Step::Done(None)),
                },
                Err(b) => {
                    let owned = loc.owned_from;
                    return Err(self.beneath_error(&root, &loc.parts, owned, b, "cannot open"));
                }
            }
        };
        let mut meta = file
            .metadata()
            .map_err(|e| self.io_fault(&e, "cannot stat", &loc))?;
        if !meta.is_file() {
            return Err(self.not_a_file(&loc, &meta));
        }
        // Before the state is compared: the mark changes it (see the module doc).
        if record_access(&file, &meta) {
            meta = file
                .metadata()
                .map_err(|e| self.io_fault(&e, "cannot stat", &loc))?;
        }
        if self.verified.matches(&meta) {
            return Ok(self.serve_verified(&loc, file, &meta)?.step(loc));
        }
        if meta.len() <= self.small_limit() {
            let whole = self.read_in_memory(&loc, file, &meta, false, self.small_limit())?;
            return Ok(whole.step(loc));
        }
        Ok(Step::Finish { loc, file, meta })
    }

    /// The largest object (envelope included) read whole on the async worker.
    fn small_limit(&self) -> u64 {
        SMALL_OBJECT_BYTES.min(self.medium_limit())
    }

    /// The largest object (envelope included) read whole into memory (on the blocking pool when
    /// it is larger than [`FsStore::small_limit`]); larger ones are streamed from their file.
    fn medium_limit(&self) -> u64 {
        self.inline_limit.saturating_add(HEADER_LEN as u64)
    }

    /// An I/O fault doing `doing` on the object at `loc`.
    fn io_fault(&self, e: &io::Error, doing: &str, loc: &Location) -> StoreError {
        io_error(e, format!("{doing} {}", self.shown(&loc.parts).display()))
    }

    /// The rest of a read (blocking: a whole medium object, or the hashing pass of a large one).
    fn finish_read(
        &self,
        loc: &Location,
        file: std::fs::File,
        meta: &std::fs::Metadata,
    ) -> Result<Option<Artifact>, StoreError> {
        if meta.len() <= self.medium_limit() {
            return match self.read_in_memory(loc, file, meta, false, self.medium_limit())? {
                Whole::Read(found) => Ok(found),
                // Grew past what is read into memory while it was read: verified as a large one.
                Whole::Blocking { file, meta } => self.verify_large(loc, file, &meta),
            };
        }
        self.verify_large(loc, file, meta)
    }

    /// Reads a small or medium object whole. `known`: its state (`meta`) passed before; when the
    /// file is still in it after the read, the bytes read are that state's and are served without
    /// a hashing pass. Otherwise they are verified (and the state remembered when it held).
    /// `meta.len()` is at most `limit`; a file that grew past `limit` under the read is not read
    /// here (see [`Whole::Blocking`]).
    fn read_in_memory(
        &self,
        loc: &Location,
        mut file: std::fs::File,
        meta: &std::fs::Metadata,
        known: bool,
        limit: u64,
    ) -> Result<Whole, StoreError> {
        let read_err = |e: io::Error| self.io_fault(&e, "cannot read", loc);
        let started = SystemTime::now();
        // The size the stat gave, in positioned reads (no seek, no probe for the end): when the
        // file is still in that state afterwards, these are all of its bytes.
        let len = usize::try_from(meta.len()).unwrap_or(usize::MAX);
        let mut object = vec![0u8; len];
        let n = read_full_at(&file, &mut object).map_err(read_err)?;
        object.truncate(n);
        let mut after = file.metadata().ok();
        let held = n == len && after.as_ref().is_some_and(|a| Verified::unchanged(meta, a));
        if !held {
            // Changed under the read: whatever it holds now is read whole (up to `limit`) and
            // verified below.
            object.clear();
            file.seek(SeekFrom::Start(0)).map_err(read_err)?;
            (&file)
                .take(limit.saturating_add(1))
                .read_to_end(&mut object)
                .map_err(read_err)?;
            if object.len() as u64 > limit {
                drop(object);
                file.seek(SeekFrom::Start(0)).map_err(read_err)?;
                let meta = file
                    .metadata()
                    .map_err(|e| self.io_fault(&e, "cannot stat", loc))?;
                return Ok(Whole::Blocking { file, meta });
            }
            after = file.metadata().ok();
        }
        if known && held {
            let payload_len = object.len().checked_sub(HEADER_LEN).map(|n| n as u64);
            if let Ok(header) = Header::decode(&object) {
                if Some(header.payload_len) == payload_len {
                    return Ok(Whole::Read(Some(in_memory(object, Some(header.digest)))));
                }
            }
        }
        match crate::envelope::open(&object) {
            Ok(_) => {
                if let Some(after) = &after {
                    self.verified.remember(meta, after, started);
                }
                let digest = Header::decode(&object).ok().map(|h| h.digest);
                Ok(Whole::Read(Some(in_memory(object, digest))))
            }
            Err(e) => Err(self.quarantine(loc, &e.to_string())),
        }
    }

    /// Verifies a large object in a first pass, then hands out the same open file positioned at
    /// the payload; remembers the state that passed. A file whose state changed during the pass
    /// is verified once more from its new state (the store's own publishing changes an object's
    /// ctime just after it appears: its temp name is unlinked); one that changes again is not
    /// served (the bytes hashed may not be the bytes it now holds).
    fn verify_large(
        &self,
        loc: &Location,
        mut file: std::fs::File,
        meta: &std::fs::Metadata,
    ) -> Result<Option<Artifact>, StoreError> {
        let mut meta = meta.clone();
        for _attempt in 0..2 {
            let started = SystemTime::now();
            let (len, d) = self.hash_pass(loc, &mut file)?;
            let after = file
                .metadata()
                .map_err(|e| self.io_fault(&e, "cannot stat", loc))?;
            if Verified::unchanged(&meta, &after) {
                self.verified.remember(&meta, &after, started);
                file.seek(SeekFrom::Start(HEADER_LEN as u64))
                    .map_err(|e| self.io_fault(&e, "cannot read", loc))?;
                return Ok(Some(Artifact {
                    len,
                    body: ArtifactBody::File {
                        file,
                        offset: HEADER_LEN as u64,
                    },
                    digest: Some(d),
                }));
            }
            meta = after;
            file.seek(SeekFrom::Start(0))
                .map_err(|e| self.io_fault(&e, "cannot read", loc))?;
        }
        Err(StoreError::new(
            ErrorKind::Unavailable,
            format!(
                "cache object {} changed while it was verified; not served",
                self.shown(&loc.parts).display()
            ),
        ))
    }

    /// One hashing pass over a large object from its start: its header, then the payload's
    /// length and digest checked against it (a mismatch quarantines the object).
    fn hash_pass(
        &self,
        loc: &Location,
        file: &mut std::fs::File,
    ) -> Result<(u64, [u8; 32]), StoreError> {
        let header = self.read_header(loc, file)?;
        let mut digest = PayloadDigest::new();
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| self.io_fault(&e, "cannot read", loc))?;
            if n == 0 {
                break;
            }
            digest.update(&buf[..n]);
        }
        let (len, d) = digest.finish();
        if let Err(e) = header.verify(len, &d) {
            return Err(self.quarantine(loc, &e.to_string()));
        }
        Ok((len, d))
    }

    /// Serves an object in a state that passed verification in this store: a small one from
    /// memory (see [`FsStore::read_in_memory`]), a larger one from its file, of which only the
    /// header is read.
    fn serve_verified(
        &self,
        loc: &Location,
        mut file: std::fs::File,
        meta: &std::fs::Metadata,
    ) -> Result<Whole, StoreError> {
        let size = meta.len();
        if size <= self.small_limit() {
            return self.read_in_memory(loc, file, meta, true, self.small_limit());
        }
        let header = self.read_header(loc, &mut file)?;
        if Some(header.payload_len) != size.checked_sub(HEADER_LEN as u64) {
            // Not the state that passed after all: verified on the blocking pool.
            file.seek(SeekFrom::Start(0))
                .map_err(|e| self.io_fault(&e, "cannot read", loc))?;
            return Ok(Whole::Blocking {
                file,
                meta: meta.clone(),
            });
        }
        Ok(Whole::Read(Some(Artifact {
            len: header.payload_len,
            body: ArtifactBody::File {
                file,
                offset: HEADER_LEN as u64,
            },
            digest: Some(header.digest),
        })))
    }

    /// Reads and decodes the envelope header at the file's start; a bad one quarantines the object.
    fn read_header(&self, loc: &Location, file: &mut std::fs::File) -> Result<Header, StoreError> {
        let mut head = [0u8; HEADER_LEN];
        file.read_exact(&mut head)
            .map_err(|e| self.io_fault(&e, "cannot read", loc))?;
        Header::decode(&head).map_err(|e| self.quarantine(loc, &e.to_string()))
    }

    /// Removes an object that failed verification so the next build can store a good one.
    fn quarantine(&self, loc: &Location, reason: &str) -> StoreError {
        let removed = if self.unlink_object(loc) {
            "removed it"
        } else {
            "could not remove it"
        };
        StoreError::new(
            ErrorKind::Corrupt,
            format!(
                "corrupt cache object {} ({reason}); treated as a miss and {removed}",
                self.shown(&loc.parts).display()
            ),
        )
    }

    /// Something other than a regular file has an object's name: never served. A FIFO, socket
    /// or device node is removed (the node, nothing it refers to); a directory is left alone.
    fn not_a_file(&self, loc: &Location, meta: &std::fs::Metadata) -> StoreError {
        let action = if meta.is_dir() {
            "remove it"
        } else {
            if self.unlink_object(loc) {
                "removed it"
            } else {
                "could not remove it"
            }
        };
        StoreError::new(
            ErrorKind::Corrupt,
            format!(
                "cache object {} is not a regular file; treated as a miss, {action}",
                self.shown(&loc.parts).display()
            ),
        )
    }

    /// Unlinks whatever has an object's name (never following a link); false if it could not.
    fn unlink_object(&self, loc: &Location) -> bool {
        let Ok(root) = self.open_root() else {
            return false;
        };
        root.open_dir(loc.dir())
            .is_ok_and(|dir| self.unlink_in(&dir, loc).is_ok())
    }

    /// Unlinks the entry at an object's name in its directory `dir` (a link itself, never its
    /// target); the budget learns of a file's removal.
    pub(super) fn unlink_in(&self, dir: &Dir, loc: &Location) -> io::Result<()> {
        let name = std::ffi::OsStr::new(loc.name());
        let stat = dir.stat(name)?;
        dir.remove_file(name)?;
        if let (Some(b), Kind::File) = (&self.budget, stat.kind) {
            b.removed(&loc.rel(), stat.len);
        }
        Ok(())
    }
}

/// Reads from the start of `file` until `buf` is full or the file ends; how many bytes were read.
fn read_full_at(file: &std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match read_at(file, &mut buf[done..], done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(unix_native)]
fn read_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

/// Elsewhere: a seek, then a read (the file's position moves; nothing here depends on it).
#[cfg(not(any(unix_native, windows)))]
fn read_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut file = file;
    file.seek(SeekFrom::Start(offset))?;
    file.read(buf)
}

/// An artifact served from memory: the payload of `object` (an envelope).
fn in_memory(object: Vec<u8>, digest: Option<[u8; 32]>) -> Artifact {
    let payload = Bytes::from(object).slice(HEADER_LEN..);
    Artifact {
        len: payload.len() as u64,
        body: ArtifactBody::Memory(payload),
        digest,
    }
}

/// Marks an object about to be served as accessed now (its mtime) unless that was done less
/// than [`ACCESS_GRANULARITY`] ago; a time in the future is set to now (see
/// [`super::temp::clamp_future`]). True when it changed the file's times. Errors are ignored: a
/// read never fails because of this.
fn record_access(file: &std::fs::File, meta: &std::fs::Metadata) -> bool {
    let now = SystemTime::now();
    let due = meta.modified().ok().is_none_or(|t| {
        let (accessed, reset) = clamp_future(t, now);
        reset
            || now
                .duration_since(accessed)
                .is_ok_and(|d| d >= ACCESS_GRANULARITY)
    });
    due && filetime::set_file_handle_times(file, None, Some(filetime::FileTime::from(now))).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::seal;
    use crate::key::Prefix;
    use std::path::{Path, PathBuf};

    fn file_with(dir: &Path, name: &str, bytes: &[u8]) -> std::fs::File {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::File::open(&path).unwrap()
    }

    #[test]
    fn read_full_at_stops_at_the_end_of_a_file_shorter_than_the_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100u8).collect();
        let mut f = file_with(dir.path(), "short", &data);
        // Positioned reads: where the file's cursor stands does not matter.
        f.seek(SeekFrom::Start(50)).unwrap();
        let mut buf = vec![0xaau8; 256];
        assert_eq!(read_full_at(&f, &mut buf).unwrap(), 100);
        assert_eq!(&buf[..100], &data[..]);
        assert!(
            buf[100..].iter().all(|&b| b == 0xaa),
            "nothing past the end"
        );
        let mut exact = vec![0u8; 100];
        assert_eq!(read_full_at(&f, &mut exact).unwrap(), 100);
        assert_eq!(exact, data);
        let mut part = vec![0u8; 10];
        assert_eq!(read_full_at(&f, &mut part).unwrap(), 10);
        assert_eq!(part, &data[..10]);
        assert_eq!(read_full_at(&f, &mut []).unwrap(), 0);
        let empty = file_with(dir.path(), "empty", b"");
        assert_eq!(read_full_at(&empty, &mut buf).unwrap(), 0);
    }

    /// A store (inline limit `inline`) holding `payload` as one object, written at its place.
    fn store_with(dir: &Path, inline: u64, payload: &[u8]) -> (FsStore, TaskHash, PathBuf) {
        let s = FsStore::new(dir, Prefix::default()).with_inline_limit(inline);
        s.prepare().unwrap();
        let h = TaskHash::parse("77aa01").unwrap();
        let path = s.object_path(&h);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, seal(payload)).unwrap();
        (s, h, path)
    }

    /// Reads the object into memory as a read that opened and stat'ed it before `change` (done to
    /// the same file) would. `known`: that state was remembered as verified.
    fn read_across(
        s: &FsStore,
        h: &TaskHash,
        path: &Path,
        known: bool,
        change: impl FnOnce(&Path),
    ) -> Result<Whole, StoreError> {
        let loc = s.locate(h);
        let file = std::fs::File::open(path).unwrap();
        let meta = file.metadata().unwrap();
        change(path);
        s.read_in_memory(&loc, file, &meta, known, s.small_limit())
    }

    fn payload_of(found: Option<Artifact>) -> Vec<u8> {
        let found = found.expect("a hit");
        let bytes = match found.body {
            ArtifactBody::Memory(b) => b.to_vec(),
            ArtifactBody::File { mut file, offset } => {
                file.seek(SeekFrom::Start(offset)).unwrap();
                let mut out = Vec::new();
                file.read_to_end(&mut out).unwrap();
                out
            }
        };
        assert_eq!(found.len, bytes.len() as u64);
        bytes
    }

    #[test]
    fn a_small_object_changed_under_its_read_is_verified_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let first = vec![1u8; 1000];
        for known in [false, true] {
            // Appended to: its envelope no longer matches; a miss, removed.
            let (s, h, path) = store_with(&dir.path().join(format!("a{known}")), 8 << 20, &first);
            let appended = read_across(&s, &h, &path, known, |p| {
                let mut f = std::fs::OpenOptions::new().append(true).open(p).unwrap();
                io::Write::write_all(&mut f, b"more bytes").unwrap();
            });
            match appended {
                Err(e) => assert_eq!(e.kind, ErrorKind::Corrupt, "known {known}: {}", e.message),
                Ok(_) => panic!("known {known}: an appended object was served"),
            }
            assert!(
                !path.exists(),
                "known {known}: the corrupt object is removed"
            );
            // Rewritten in place with another good object: the bytes it holds now are served.
            let (s, h, path) = store_with(&dir.path().join(format!("r{known}")), 8 << 20, &first);
            let second = vec![2u8; 1500];
            let rewritten = read_across(&s, &h, &path, known, |p| {
                std::fs::write(p, seal(&second)).unwrap();
            });
            match rewritten {
                Ok(Whole::Read(found)) => assert_eq!(payload_of(found), second, "known {known}"),
                Ok(Whole::Blocking { .. }) => panic!("known {known}: a small object left over"),
                Err(e) => panic!("known {known}: {}", e.message),
            }
        }
    }

    #[test]
    fn a_small_object_that_grew_large_under_its_read_is_left_to_the_blocking_pool() {
        let dir = tempfile::tempdir().unwrap();
        let first = vec![1u8; 1000];
        let grown: Vec<u8> = (0..300u32 << 10).map(|i| (i % 251) as u8).collect();
        // Medium with the default inline limit (read into memory on the blocking pool); large
        // with a 64 KiB one (hashed and streamed from the file).
        for inline in [8u64 << 20, 64 << 10] {
            for known in [false, true] {
                let case = format!("inline {inline}, known {known}");
                let root = dir.path().join(format!("{inline}-{known}"));
                let (s, h, path) = store_with(&root, inline, &first);
                let whole = read_across(&s, &h, &path, known, |p| {
                    std::fs::write(p, seal(&grown)).unwrap();
                });
                let (file, meta) = match whole {
                    Ok(Whole::Blocking { file, meta }) => (file, meta),
                    Ok(Whole::Read(_)) => panic!("{case}: read whole on the async worker"),
                    Err(e) => panic!("{case}: {}", e.message),
                };
                assert_eq!(meta.len(), (grown.len() + HEADER_LEN) as u64, "{case}");
                let found = s.finish_read(&s.locate(&h), file, &meta);
                match found {
                    Ok(found) => assert_eq!(payload_of(found), grown, "{case}"),
                    Err(e) => panic!("{case}: {}", e.message),
                }
            }
        }
    }
}
