//! Writes and deletes of the fs store: temp file, then a group commit (see [`super::commit`]):
//! fsync, publish by link (or rename without replacing), directory fsync; all relative to
//! directory descriptors below the root.

use super::commit::{self, Pending, Staged};
use super::dir::{Dir, Kind};
use super::{temp, FsStore, Location};
use crate::envelope::{PayloadDigest, HEADER_LEN};
use crate::key::TaskHash;
use crate::store::{io_error, next_chunk, BodyStream, Deleted, PutOutcome, StoreError};
use bytes::Bytes;
use std::ffi::OsStr;
use std::io::{self, SeekFrom};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

/// Uploads that declare at most this many bytes are received whole in memory and written in the
/// commit that publishes them (one blocking step less; at most this much per upload in flight).
pub const SMALL_UPLOAD_BYTES: u64 = 256 * 1024;
/// The write buffer of a streamed upload.
const STREAM_BUFFER_BYTES: usize = 256 * 1024;

impl FsStore {
    pub(super) async fn write(
        &self,
        hash: &TaskHash,
        body: &mut BodyStream<'_>,
        declared_len: Option<u64>,
    ) -> Result<PutOutcome, StoreError> {
        let reservation = match &self.budget {
            Some(b) => {
                let bytes = declared_len.unwrap_or(0).saturating_add(HEADER_LEN as u64);
                Some(b.admit(bytes, &self.root.display().to_string()).await?)
            }
            None => None,
        };
        // Room in the commit queue before anything is received or opened: the queue's bounds
        // (uploads with an open temp file, bytes held in memory) hold from the start.
        let small = declared_len.is_some_and(|n| n <= SMALL_UPLOAD_BYTES);
        let in_memory = match declared_len {
            Some(n) if small => n.saturating_add(HEADER_LEN as u64),
            _ => 0,
        };
        let room = self.commits.room(in_memory, hash.as_str()).await?;
        // Directory work blocks: off the async workers.
        let (store, h) = (self.clone(), hash.clone());
        let started = tokio::task::spawn_blocking(move || store.start_write(&h))
            .await
            .map_err(|e| super::task_failed("write", e))??;
        let loc = self.locate(hash);
        let Some((pending, file)) = started else {
            // Answered only once the first writer's name is durable (if it is this process's);
            // nothing is held meanwhile.
            drop((reservation, room));
            self.commits.until_durable(&loc.rel()).await;
            return Ok(PutOutcome::AlreadyExists);
        };
        let received = if small {
            receive_whole(body, declared_len)
                .await
                .map(|(len, unwritten)| (len, file, unwritten))
        } else {
            write_tmp(file, &pending.temp_shown, body, declared_len)
                .await
                .map(|(len, file)| (len, file, Vec::new()))
        };
        // Cancelled from here until the commit takes it: dropping `pending` removes the temp
        // name (in the background).
        let (len, file, unwritten) = match received {
            Ok(r) => r,
            Err(e) => {
                // Nothing to publish: the temp name is garbage now (gone when the error is).
                let mut pending = pending;
                let _ =
                    tokio::task::spawn_blocking(move || commit::remove_temp(&mut pending)).await;
                return Err(e);
            }
        };
        let rel = loc.rel();
        let staged = Staged {
            loc,
            pending,
            file,
            unwritten,
            reservation,
            stored_bytes: len.saturating_add(HEADER_LEN as u64),
            _room: room,
        };
        match self.commits.commit(self, staged).await? {
            true => Ok(PutOutcome::Stored(len)),
            false => {
                self.commits.until_durable(&rel).await;
                Ok(PutOutcome::AlreadyExists)
            }
        }
    }

    /// Makes the object's directory, checks that the hash is absent, and creates the temp file.
    /// `None`: the object exists.
    fn start_write(&self, hash: &TaskHash) -> Result<Option<(Pending, std::fs::File)>, StoreError> {
        let loc = self.locate(hash);
        let root = self.current_root()?;
        let object_dir = self.object_dir(&root, &loc)?;
        match object_dir.stat(OsStr::new(loc.name())) {
            Ok(s) if s.kind == Kind::Symlink => {
                return Err(self.link_fault(&root, &loc.parts, true));
            }
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                let shown = self.shown(&loc.parts);
                return Err(io_error(&e, format!("cannot stat {}", shown.display())));
            }
        }
        let temp_dir = self.temp_dir(&root)?;
        let temp_name = temp::temp_name(hash);
        let temp_shown = self.shown(&[temp::TMP_DIR, temp_name.as_str()]);
        let file = temp_dir.create_new_file(&temp_name).map_err(|e| {
            let err = io_error(&e, format!("cannot create {}", temp_shown.display()));
            self.or_root_fault(&root, err, e.kind() == io::ErrorKind::NotFound)
        })?;
        Ok(Some((
            Pending {
                object_dir,
                temp_dir,
                temp_name,
                temp_shown,
                removed: false,
            },
            file,
        )))
    }

    /// Makes the temp file visible under the object's name unless that name exists. Returns false
    /// when another writer got there first; when it was made, the directory it was made in (to
    /// be synced).
    pub(super) fn publish(
        &self,
        loc: &Location,
        pending: &Pending,
    ) -> Result<(bool, Option<Dir>), StoreError> {
        let from = (&pending.temp_dir, pending.temp_name.as_str());
        let (created, again) = match link_into(from, &pending.object_dir, loc.name()) {
            // Retention may remove an emptied fan-out directory between the start of the write
            // and now: make it again and retry once.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let root = self.open_root()?;
                let again = self.object_dir(&root, loc)?;
                (link_into(from, &again, loc.name()), Some(again))
            }
            other => (other, None),
        };
        let object_dir = again.as_ref().unwrap_or(&pending.object_dir);
        match created {
            Ok(true) => Ok((true, again)),
            Ok(false) => {
                // The name is taken: by an object, or by a link planted there (not an object).
                let planted = object_dir
                    .stat(OsStr::new(loc.name()))
                    .is_ok_and(|s| s.kind == Kind::Symlink);
                if planted {
                    let root = self.open_root()?;
                    return Err(self.link_fault(&root, &loc.parts, true));
                }
                Ok((false, None))
            }
            Err(e) => Err(io_error(
                &e,
                format!("cannot publish {}", self.shown(&loc.parts).display()),
            )),
        }
    }

    /// Deletes an object (`Store::delete`); a link at its name is a fault (and is removed).
    pub(super) fn remove(&self, hash: &TaskHash) -> Result<Deleted, StoreError> {
        let loc = self.locate(hash);
        let root = self.current_root()?;
        let shown = self.shown(&loc.parts);
        let dir = match root.open_dir(loc.dir()) {
            Ok(d) => d,
            Err(b) if super::is_not_found(&b) => return Ok(Deleted::Absent),
            Err(b) => {
                return Err(self.beneath_error(&root, loc.dir(), loc.owned_from, b, "cannot open"))
            }
        };
        match dir.stat(OsStr::new(loc.name())) {
            Ok(s) if s.kind == Kind::Symlink => {
                return Err(self.link_fault(&root, &loc.parts, true))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Deleted::Absent),
            Err(e) => return Err(io_error(&e, format!("removing {}", shown.display()))),
        }
        match self.unlink_in(&dir, &loc) {
            Ok(_) => Ok(Deleted::Removed),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Deleted::Absent),
            Err(e) => Err(io_error(&e, format!("removing {}", shown.display()))),
        }
    }
}

/// Receives a small upload whole (its digest taken as it arrives); returns the payload length and
/// the bytes to write, envelope header first.
async fn receive_whole(
    body: &mut BodyStream<'_>,
    declared_len: Option<u64>,
) -> Result<(u64, Vec<Bytes>), StoreError> {
    let mut chunks = vec![Bytes::new()];
    let mut digest = PayloadDigest::new();
    while let Some(chunk) = next_chunk(body, digest.len(), declared_len).await? {
        digest.update(&chunk);
        chunks.push(chunk);
    }
    let header = digest.into_header();
    chunks[0] = Bytes::copy_from_slice(&header.encode());
    Ok((header.payload_len, chunks))
}

/// Streams an upload into its temp file (synced by the commit); returns the payload length and
/// the file.
async fn write_tmp(
    file: std::fs::File,
    shown: &std::path::Path,
    body: &mut BodyStream<'_>,
    declared_len: Option<u64>,
) -> Result<(u64, std::fs::File), StoreError> {
    let write_err = |e: io::Error| io_error(&e, format!("cannot write {}", shown.display()));
    let file = tokio::fs::File::from_std(file);
    // A buffer no larger than the object needs (many uploads may be in flight).
    let capacity = declared_len
        .map_or(STREAM_BUFFER_BYTES, |n| {
            (n as usize).saturating_add(HEADER_LEN)
        })
        .clamp(8 * 1024, STREAM_BUFFER_BYTES);
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
    file.flush().await.map_err(write_err)?;
    Ok((header.payload_len, file.into_std().await))
}

/// Hard-links `from` (a temp file) as `name` in `dir` unless the name exists (false then); on
/// filesystems without hard links, renames without replacing.
fn link_into(from: (&Dir, &str), dir: &Dir, name: &str) -> io::Result<bool> {
    match from.0.link(from.1, dir, name) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) if link_unsupported(&e) => rename_into(from, dir, name),
        Err(e) => Err(e),
    }
}

/// Filesystems without hard links (some FUSE and SMB mounts): rename without replacing where the
/// system offers it, else check-then-rename (a narrow window in which two writers of one hash both
/// "win"; both wrote the same complete, verified bytes, so no reader sees a partial object).
fn rename_into(from: (&Dir, &str), dir: &Dir, name: &str) -> io::Result<bool> {
    match from.0.rename_no_replace(from.1, dir, name) {
        Ok(()) => return Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) if !rename_no_replace_unsupported(&e) => return Err(e),
        Err(_) => {}
    }
    match dir.stat(OsStr::new(name)) {
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    from.0.rename(from.1, dir, name)?;
    Ok(true)
}

fn link_unsupported(e: &io::Error) -> bool {
    #[cfg(unix_native)]
    {
        matches!(
            e.raw_os_error(),
            Some(libc::EPERM) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EMLINK)
        )
    }
    #[cfg(not(unix_native))]
    {
        // Windows: FAT/exFAT answer ERROR_INVALID_FUNCTION (1) or ERROR_NOT_SUPPORTED (50).
        matches!(
            e.kind(),
            io::ErrorKind::Unsupported | io::ErrorKind::TooManyLinks
        ) || (cfg!(windows) && matches!(e.raw_os_error(), Some(1) | Some(50)))
    }
}

fn rename_no_replace_unsupported(e: &io::Error) -> bool {
    #[cfg(unix_native)]
    if e.raw_os_error() == Some(libc::EINVAL) {
        return true;
    }
    e.kind() == io::ErrorKind::Unsupported || link_unsupported(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Dir, name: &str, data: &[u8]) {
        use std::io::Write;
        dir.create_new_file(name).unwrap().write_all(data).unwrap();
    }

    fn read(root: &std::path::Path, name: &str) -> Vec<u8> {
        std::fs::read(root.join(name)).unwrap()
    }

    /// The first writer wins through each publishing path: the hard link (`linkat`, or
    /// `std::fs::hard_link` under `portable-fallbacks`), and the rename without replacing used on
    /// filesystems without hard links (`renameat2(RENAME_NOREPLACE)` on Linux, check-then-rename
    /// elsewhere and under the feature).
    #[test]
    fn link_and_rename_into_keep_the_first_writer() {
        let t = tempfile::tempdir().unwrap();
        let dir = Dir::open_root(t.path()).unwrap();
        file(&dir, "a.tmp", b"first");
        file(&dir, "b.tmp", b"second");
        assert!(link_into((&dir, "a.tmp"), &dir, "obj").unwrap());
        assert!(!link_into((&dir, "b.tmp"), &dir, "obj").unwrap());
        assert_eq!(read(t.path(), "obj"), b"first");
        let e = dir.link("b.tmp", &dir, "obj").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");

        assert!(rename_into((&dir, "a.tmp"), &dir, "obj2").unwrap());
        assert!(!rename_into((&dir, "b.tmp"), &dir, "obj2").unwrap());
        assert_eq!(read(t.path(), "obj2"), b"first");
        assert!(
            !t.path().join("a.tmp").exists(),
            "the winner's temp name is gone"
        );
        assert_eq!(
            read(t.path(), "b.tmp"),
            b"second",
            "the loser's temp file is left"
        );

        // Linux has the no-replace rename; elsewhere (and under the feature) it is unsupported.
        let native = cfg!(all(target_os = "linux", unix_native));
        match dir.rename_no_replace("b.tmp", &dir, "obj2") {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => assert!(native, "{e}"),
            Err(e) if rename_no_replace_unsupported(&e) => assert!(!native, "{e}"),
            other => panic!("rename over an existing name: {other:?}"),
        }
        assert_eq!(read(t.path(), "obj2"), b"first");
    }
}
