//! Shared-filesystem backend: a directory, local or on a network mount (NFS, SMB, EFS...).
//!
//! Layout: `<root>/[<prefix>/]<aa>/<bb>/<hash>` where `aa`/`bb` are the first two bytes (hex) of the
//! xxh3 of the hash, so a million entries spread over 65,536 directories of ~15 files each.
//! Objects are written to `<root>/.tmp/` first (same filesystem), fsynced, then hard-linked into
//! place: `link(2)` fails with EEXIST when the name exists, which makes creation atomic and
//! first-writer-wins on local disks and on NFS alike, for any number of processes and machines.
//! Temp file names say which host and process wrote them (see [`temp`]): leftovers of a writer
//! that is provably gone are removed when a store is prepared, others after an hour.
//!
//! No symbolic link below the root is ever followed. The root itself is trusted as configured (it
//! may be a link to a mount), resolved when it is opened and kept open (checked to still be what
//! its path names when a lookup finds nothing and before every write); every path below it is
//! opened relative to its descriptor without following links ([`dir`]: `openat2` with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS` on Linux, `O_NOFOLLOW` component by component elsewhere), and every final
//! operation (create, link, rename, unlink, stat, time update) acts on the name itself. A link met
//! is a fault naming its path: a read is a miss, a write is not stored, and nothing outside the
//! root is read or written. A link at a name the store owns (an object, a fan-out directory `aa`
//! or `bb`, `.tmp`) is removed (`unlinkat` removes the link, never its target), so the next
//! operation works; one at a prefix directory is left for the operator to remove.
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
//! request), and always when it lies in the future (a clock error never pins an object); a failed
//! update (read-only mount, foreign owner) never fails the read. Retention (`crate::retention`)
//! evicts the least recently accessed objects by this mtime.
//!
//! Size budget: a store given a [`Budget`] (`serve --max-size`) admits uploads only while its
//! size estimate is within it and wakes retention when it is not (see [`budget`]).

mod budget;
mod commit;
pub(crate) mod dir;
mod read;
pub(crate) mod temp;
mod write;

pub use budget::{Budget, ADMISSION_WAIT};
#[doc(hidden)]
pub use commit::CommitStage;
pub use commit::{Durability, QUEUE_MAX_BYTES, QUEUE_MAX_UPLOADS};
pub use temp::{STALE_TMP_AGE, TMP_DIR};
pub use write::SMALL_UPLOAD_BYTES;

use super::{io_error, AsyncStore, Deleted, ErrorKind, Found, Store, StoreError, Upload, Written};
use crate::key::{Prefix, TaskHash};
use dir::{Beneath, Dir, Kind, Space};
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// A served object's last-access time (its mtime) is refreshed when older than this.
pub const ACCESS_GRANULARITY: Duration = Duration::from_secs(3600);
/// [`Store::check`] reports the store full when less than this many bytes are free for the
/// store's user, or less than [`MIN_FREE_PERCENT`] of the filesystem if that is smaller (a small
/// filesystem), or no inode is left.
pub const MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;
/// See [`MIN_FREE_BYTES`].
pub const MIN_FREE_PERCENT: u64 = 1;

/// Test hook: behave as if the kernel had no `openat2` (every path is then resolved one
/// component at a time). Process-wide.
#[doc(hidden)]
pub fn simulate_no_openat2(on: bool) {
    dir::simulate_no_openat2(on);
}

/// Test hook: how many paths were resolved one component at a time so far.
#[doc(hidden)]
pub fn component_walks() -> u64 {
    dir::walks()
}

/// Test hook: whether a path was resolved with `openat2` in this process.
#[doc(hidden)]
pub fn openat2_works() -> bool {
    dir::openat2_works()
}

#[derive(Clone)]
pub struct FsStore {
    /// The root as configured (messages name paths below it).
    root: PathBuf,
    /// The open root (shared by clones and namespaced views).
    opened: Arc<Mutex<Option<Arc<OpenRoot>>>>,
    prefix: Prefix,
    inline_limit: u64,
    /// Large objects that passed verification in this process (shared by namespaced views).
    verified: Arc<read::Verified>,
    budget: Option<Arc<Budget>>,
    /// The check also asks whether new entries can be made (see [`FsStore::expecting_writes`]).
    check_writes: bool,
    /// The group commit of uploads (shared by clones and namespaced views).
    commits: Arc<commit::Commits>,
}

/// The root directory, open: its links resolved when it was opened, kept open for every
/// operation below it (one `openat2` per lookup). When a lookup finds nothing, the root's path is
/// checked to still name this directory (an unmounted share, a deleted or replaced directory is
/// reported, and the next operation opens the root again).
struct OpenRoot {
    /// The canonical path it was opened at.
    path: PathBuf,
    dir: Dir,
    /// Device and inode (where the system tells).
    id: Option<(u64, u64)>,
}

impl std::ops::Deref for OpenRoot {
    type Target = Dir;
    fn deref(&self) -> &Dir {
        &self.dir
    }
}

/// Where an object lives below the root: `[<prefix segments>/]<aa>/<bb>/<hash>`.
struct Location {
    parts: Vec<String>,
    /// Index of `aa`: from here on the names are the store's own.
    owned_from: usize,
}

impl Location {
    fn dir(&self) -> &[String] {
        &self.parts[..self.parts.len() - 1]
    }

    fn name(&self) -> &str {
        self.parts.last().map_or("", String::as_str)
    }

    /// The object's path below the root, `/`-separated (how the budget knows it).
    fn rel(&self) -> String {
        self.parts.join("/")
    }
}

/// The two fan-out directory names of a hash.
pub(crate) fn fan_of(hash: &str) -> [String; 2] {
    let fan = xxhash_rust::xxh3::xxh3_64(hash.as_bytes()).to_be_bytes();
    [format!("{:02x}", fan[0]), format!("{:02x}", fan[1])]
}

impl FsStore {
    pub fn new(root: impl Into<PathBuf>, prefix: Prefix) -> Self {
        FsStore {
            root: root.into(),
            opened: Arc::default(),
            prefix,
            inline_limit: super::spool::INLINE_LIMIT,
            verified: Arc::default(),
            budget: None,
            check_writes: false,
            commits: Arc::default(),
        }
    }

    /// What a stored upload's answer promises about a machine crash (`serve --durability`).
    pub fn with_durability(mut self, durability: Durability) -> Self {
        let (uploads, bytes) = self.commits.bounds();
        self.commits = Arc::new(commit::Commits::new(durability, uploads, bytes));
        self
    }

    /// Room of the commit queue: uploads, and bytes in memory (defaults
    /// [`QUEUE_MAX_UPLOADS`], [`QUEUE_MAX_BYTES`]); beyond it uploads wait.
    #[doc(hidden)]
    pub fn with_commit_queue(mut self, uploads: usize, bytes: usize) -> Self {
        self.commits = Arc::new(commit::Commits::new(self.durability(), uploads, bytes));
        self
    }

    pub fn durability(&self) -> Durability {
        self.commits.durability()
    }

    /// Test hook: the next commit of `hash` in this store fails at `stage` (once).
    #[doc(hidden)]
    pub fn fail_commit(&self, hash: &TaskHash, stage: CommitStage) {
        self.commits.fail(hash.as_str(), stage);
    }

    /// Test hook: while held, no commit starts (uploads queue up; see [`FsStore::queued_commits`]).
    #[doc(hidden)]
    pub fn hold_commits(&self, held: bool) {
        self.commits.hold(held);
    }

    /// Test hook: while held, directory syncs wait (their uploads unanswered).
    #[doc(hidden)]
    pub fn hold_dir_syncs(&self, held: bool) {
        self.commits.hold_dirs(held);
    }

    /// Test hook: batches whose directory syncs wait while they are held.
    #[doc(hidden)]
    pub fn dir_sync_waiters(&self) -> usize {
        self.commits.dir_sync_waiters()
    }

    /// Directories synced by commits so far, and second writers of a hash whose answer waited
    /// for the first writer's directory sync.
    #[doc(hidden)]
    pub fn commit_dir_counts(&self) -> (u64, u64) {
        self.commits.dir_counts()
    }

    /// Test hook: directories noted as having got a new subdirectory whose sync has not
    /// finished yet (`full` only).
    #[doc(hidden)]
    pub fn noted_new_dirs(&self) -> usize {
        self.commits.noted_new_dirs()
    }

    /// Test hook: uploads waiting for room in the commit queue.
    #[doc(hidden)]
    pub fn commit_room_waiters(&self) -> usize {
        self.commits.room_waiters()
    }

    /// Test hook: uploads waiting for a commit to start.
    #[doc(hidden)]
    pub fn queued_commits(&self) -> usize {
        self.commits.queued()
    }

    /// Batches committed so far by this store, and the largest (uploads in it).
    pub fn commit_batches(&self) -> (u64, u64) {
        self.commits.batches()
    }

    /// The check (`/readyz`, `serve`'s start) also fails when this process may not make entries
    /// in the root or its temp directory (permissions, a read-only mount): for a server, which
    /// always takes uploads. Not for a client, where a read-only share is a valid setup.
    pub fn expecting_writes(mut self) -> Self {
        self.check_writes = true;
        self
    }

    /// Sets the in-memory verification threshold (tests use 0 to force the streaming path).
    pub fn with_inline_limit(mut self, limit: u64) -> Self {
        self.inline_limit = limit;
        self
    }

    /// Holds uploads to a size budget shared with the retention task (`serve --max-size`).
    pub fn with_budget(mut self, budget: Option<Arc<Budget>>) -> Self {
        self.budget = budget;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the cache directory (and parents) if missing, and its temp directory; removes temp
    /// files whose writer is provably gone or that are stale.
    pub fn prepare(&self) -> Result<(), StoreError> {
        std::fs::create_dir_all(&self.root).map_err(|e| {
            io_error(
                &e,
                format!("cannot create cache directory {}", self.root.display()),
            )
        })?;
        *self.lock_root() = None;
        let root = self.open_root()?;
        let tmp = self.temp_dir(&root)?;
        // Best effort: a temp file that cannot be removed now is removed by a later sweep.
        let _ = temp::sweep(&tmp, SystemTime::now(), STALE_TMP_AGE, false);
        Ok(())
    }

    /// Removes the temp files whose writer is provably gone, and those not written to for `age`;
    /// returns how many went.
    pub fn remove_stale_tmp(&self, age: Duration) -> usize {
        let Ok(root) = self.open_root() else {
            return 0;
        };
        let Ok(tmp) = root.open_dir(&[TMP_DIR]) else {
            return 0;
        };
        temp::sweep(&tmp, SystemTime::now(), age, false).map_or(0, |swept| {
            swept
                .iter()
                .filter(|t| matches!(t, temp::Swept::Removed { .. }))
                .count()
        })
    }

    /// Where an object lives below the root.
    fn locate(&self, hash: &TaskHash) -> Location {
        let mut parts: Vec<String> = if self.prefix.is_empty() {
            Vec::new()
        } else {
            self.prefix.as_str().split('/').map(str::to_owned).collect()
        };
        let owned_from = parts.len();
        parts.extend(fan_of(hash.as_str()));
        parts.push(hash.as_str().to_owned());
        Location { parts, owned_from }
    }

    /// The object's path (below the root as configured).
    pub fn object_path(&self, hash: &TaskHash) -> PathBuf {
        self.shown(&self.locate(hash).parts)
    }

    /// A path below the root as configured, for messages.
    fn shown<S: AsRef<OsStr>>(&self, rel: &[S]) -> PathBuf {
        let mut path = self.root.clone();
        for part in rel {
            path.push(part.as_ref());
        }
        path
    }

    fn lock_root(&self) -> std::sync::MutexGuard<'_, Option<Arc<OpenRoot>>> {
        self.opened.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The open root, opened (and its links resolved) if it is not. A root that is missing is a
    /// fault, never recreated here: an unmounted share or a deleted directory is reported.
    fn open_root(&self) -> Result<Arc<OpenRoot>, StoreError> {
        let mut opened = self.lock_root();
        if let Some(root) = opened.as_ref() {
            return Ok(root.clone());
        }
        let path = std::fs::canonicalize(&self.root).map_err(|e| self.root_error(&e))?;
        let dir = Dir::open_root(&path).map_err(|e| self.root_error(&e))?;
        let id = dir.identity().ok().flatten();
        let root = Arc::new(OpenRoot { path, dir, id });
        *opened = Some(root.clone());
        Ok(root)
    }

    /// Whether the root's path still names the open root: `Ok(None)` if so; if it names another
    /// directory now (a remount, a directory replaced), that one, opened; a fault if it is gone
    /// (the root is never recreated here). Checked when a lookup finds nothing or the filesystem
    /// says the handle is stale, and before every write: a read that finds its object in the
    /// directory as it was opened serves it (a verified object either way).
    fn reopened_root(&self, root: &OpenRoot) -> Result<Option<Arc<OpenRoot>>, StoreError> {
        let now = dir::path_identity(&root.path);
        if matches!(&now, Ok(id) if *id == root.id) {
            return Ok(None);
        }
        {
            let mut opened = self.lock_root();
            if opened.as_ref().is_some_and(|r| std::ptr::eq(&**r, root)) {
                *opened = None;
            }
        }
        match now {
            Ok(_) => self.open_root().map(Some),
            Err(e) => Err(self.root_error(&e)),
        }
    }

    /// `err`, or the root's fault when `err` (`suspect`: a lookup that found nothing) comes from
    /// a root that is gone.
    fn or_root_fault(&self, root: &OpenRoot, err: StoreError, suspect: bool) -> StoreError {
        if suspect {
            if let Err(fault) = self.reopened_root(root) {
                return fault;
            }
        }
        err
    }

    fn root_error(&self, e: &io::Error) -> StoreError {
        if e.kind() == io::ErrorKind::NotADirectory {
            StoreError::new(
                ErrorKind::Unavailable,
                format!("cache path {} is not a directory", self.root.display()),
            )
        } else {
            io_error(
                e,
                format!("cache directory {} is not usable", self.root.display()),
            )
        }
    }

    /// The temp directory, made if missing.
    fn temp_dir(&self, root: &OpenRoot) -> Result<Dir, StoreError> {
        root.create_dirs(&[TMP_DIR], &mut |_, _| {}).map_err(|b| {
            let not_found = is_not_found(&b);
            let err = self.beneath_error(root, &[TMP_DIR], 0, b, "cannot open");
            self.or_root_fault(root, err, not_found)
        })
    }

    /// The directory of an object, made if missing. Retention removes empty fan-out directories:
    /// one made a moment ago can be gone again before it is opened, so it is made again (a few
    /// times at most). A directory that gets a new subdirectory is synced by the next commit
    /// (see [`commit::Commits::note_new_dir`]).
    fn object_dir(&self, root: &OpenRoot, loc: &Location) -> Result<Dir, StoreError> {
        let mut attempts = 0;
        // The note of the directory being made, until `mkdirat` returned.
        let mut note = None;
        let mut noted = |d: &Dir, step: dir::Making| match step {
            dir::Making::About => note = self.commits.note_new_dir(d),
            dir::Making::Made => self.commits.new_dir_made(note.take(), d, true),
            dir::Making::Failed => self.commits.new_dir_made(note.take(), d, false),
        };
        loop {
            match root.create_dirs(loc.dir(), &mut noted) {
                Err(b) if is_not_found(&b) && attempts < 3 => attempts += 1,
                Ok(dir) => return Ok(dir),
                Err(b) => {
                    let not_found = is_not_found(&b);
                    let err = self.beneath_error(root, loc.dir(), loc.owned_from, b, "cannot open");
                    return Err(self.or_root_fault(root, err, not_found));
                }
            }
        }
    }

    /// The fault of a path below the root that could not be opened; names from `owned_from` on
    /// are the store's own (a link there is removed).
    fn beneath_error<S: AsRef<OsStr>>(
        &self,
        root: &Dir,
        rel: &[S],
        owned_from: usize,
        err: Beneath,
        doing: &str,
    ) -> StoreError {
        match err {
            Beneath::Io(e) => io_error(&e, format!("{doing} {}", self.shown(rel).display())),
            Beneath::Symlink(i) => {
                let upto = &rel[..(i + 1).min(rel.len())];
                self.link_fault(root, upto, i >= owned_from)
            }
            Beneath::NotDir(i) => StoreError::new(
                ErrorKind::Unavailable,
                format!(
                    "{doing} {}: {} is not a directory",
                    self.shown(rel).display(),
                    self.shown(&rel[..(i + 1).min(rel.len())]).display()
                ),
            ),
        }
    }

    /// A symbolic link at `rel` (below the root): never followed. When `removable` (a name the
    /// store owns), the link itself is removed so that the next operation works.
    fn link_fault<S: AsRef<OsStr>>(&self, root: &Dir, rel: &[S], removable: bool) -> StoreError {
        let shown = self.shown(rel);
        let removed = removable
            && rel.split_last().is_some_and(|(name, parent)| {
                root.open_dir(parent).is_ok_and(|dir| {
                    // Checked again right before: only a link is ever removed here.
                    dir.stat(name.as_ref())
                        .is_ok_and(|s| s.kind == Kind::Symlink)
                        && dir.remove_file(name.as_ref()).is_ok()
                })
            });
        let (kind, action) = if removed {
            (ErrorKind::Corrupt, "removed the link")
        } else {
            (ErrorKind::Unavailable, "remove it")
        };
        StoreError::new(
            kind,
            format!(
                "{} is a symbolic link: not followed (nothing below the cache directory may be a link); {action}",
                shown.display()
            ),
        )
    }

    /// Whether the filesystem has room for writes (see [`MIN_FREE_BYTES`]); a filesystem that
    /// does not say passes.
    fn check_space(&self, root: &Dir) -> Result<(), StoreError> {
        let Ok(space) = root.space() else {
            return Ok(());
        };
        match full_because(&space) {
            None => Ok(()),
            Some(why) => Err(StoreError::new(
                ErrorKind::Full,
                format!("cache directory {} is full: {why}", self.root.display()),
            )),
        }
    }

    /// The open root, checked to be what its path names now (before writes and checks).
    fn current_root(&self) -> Result<Arc<OpenRoot>, StoreError> {
        let root = self.open_root()?;
        Ok(self.reopened_root(&root)?.unwrap_or(root))
    }

    fn check_blocking(&self) -> Result<(), StoreError> {
        let root = self.current_root()?;
        let tmp = self.temp_dir(&root)?;
        // Uploads are written in the temp directory and linked into the fan-out directories
        // made below the root: both must take new entries.
        if self.check_writes {
            for (dir, shown) in [
                (&root.dir, self.root.clone()),
                (&tmp, self.shown(&[TMP_DIR])),
            ] {
                dir.writable()
                    .map_err(|e| io_error(&e, format!("cannot write in {}", shown.display())))?;
            }
        }
        self.check_space(&root)
    }
}

/// A lookup that found nothing, or a handle the filesystem no longer knows (NFS): the root may
/// be gone.
fn is_not_found(b: &Beneath) -> bool {
    matches!(b, Beneath::Io(e) if root_suspect(e))
}

fn root_suspect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::StaleNetworkFileHandle
    )
}

/// Why a filesystem counts as full (see [`MIN_FREE_BYTES`]), or `None`.
fn full_because(space: &Space) -> Option<String> {
    let threshold = MIN_FREE_BYTES.min(space.total / 100 * MIN_FREE_PERCENT);
    if space.available < threshold {
        return Some(format!(
            "{} free of {} (less than {})",
            crate::retention::format_bytes(space.available),
            crate::retention::format_bytes(space.total),
            crate::retention::format_bytes(threshold)
        ));
    }
    (space.inodes_available == Some(0)).then(|| "no inode left".to_owned())
}

fn task_failed(what: &str, e: tokio::task::JoinError) -> StoreError {
    StoreError::new(ErrorKind::Unavailable, format!("{what} task failed: {e}"))
}

impl AsyncStore for FsStore {
    async fn get(&self, hash: &TaskHash) -> Found {
        self.read(hash).await
    }

    async fn put(&self, hash: &TaskHash, upload: Upload<'_, '_>) -> Written {
        self.write(hash, upload.body, upload.declared_len).await
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

    /// The root is there, its temp directory is usable (made if missing), and the filesystem
    /// has room; when [`FsStore::expecting_writes`], new entries can be made in both.
    async fn check(&self) -> Result<(), StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.check_blocking())
            .await
            .map_err(|e| task_failed("check", e))?
    }

    async fn delete(&self, hash: &TaskHash) -> Result<Deleted, StoreError> {
        let (store, hash) = (self.clone(), hash.clone());
        tokio::task::spawn_blocking(move || store.remove(&hash))
            .await
            .map_err(|e| task_failed("delete", e))?
    }

    fn with_namespace(&self, ns: &Prefix) -> Result<Arc<dyn Store>, StoreError> {
        let mut store = self.clone();
        store.prefix = super::namespaced(&self.prefix, ns)?;
        Ok(Arc::new(store))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_means_little_room_for_the_filesystem_size() {
        let gib = 1u64 << 30;
        let space = |available, total| Space {
            available,
            total,
            inodes_available: Some(10),
        };
        assert!(full_because(&space(MIN_FREE_BYTES, 100 * gib)).is_none());
        let why = full_because(&space(MIN_FREE_BYTES - 1, 100 * gib)).expect("full");
        assert!(why.contains("less than 64 MiB"), "{why}");
        // A 100 MiB filesystem is full below 1 MiB free.
        assert!(full_because(&space(2 << 20, 100 << 20)).is_none());
        assert!(full_because(&space(1 << 19, 100 << 20)).is_some());
        let no_inodes = Space {
            inodes_available: Some(0),
            ..space(gib, 100 * gib)
        };
        assert_eq!(full_because(&no_inodes).as_deref(), Some("no inode left"));
    }
}
