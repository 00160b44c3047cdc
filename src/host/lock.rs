//! The cache host's lock: an exclusive advisory lock on a file (`flock` on Unix, `LockFileEx` on
//! Windows), held for the host's whole life. The OS releases it when the process ends, however it
//! ends, so a lock file left behind by a crash is harmless: whoever locks it next owns it. The lock
//! is what makes "one host per workspace data directory and version" true; the files next to it
//! only help clients find that host.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often [`HostLock::acquire_within`] tries again.
const RETRY_EVERY: Duration = Duration::from_millis(20);

/// A held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct HostLock {
    /// Holds the lock while it is open (compared with the path by `still_at_path` on Unix).
    #[cfg_attr(not(unix_native), allow(dead_code))]
    file: File,
    path: PathBuf,
}

impl HostLock {
    /// Takes the lock if nobody holds it: `Ok(None)` when another process (or another open file
    /// in this one) holds it. Creates the file (and its directory), owner-only on Unix.
    pub fn try_acquire(path: &Path) -> Result<Option<HostLock>, String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let file = open_owner_only(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(HostLock {
                file,
                path: path.to_owned(),
            })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
        }
    }

    /// [`HostLock::try_acquire`], retried until `wait` has passed: a host that is exiting releases
    /// its lock within moments, and its successor should not give up before that.
    pub fn acquire_within(path: &Path, wait: Duration) -> Result<Option<HostLock>, String> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(lock) = Self::try_acquire(path)? {
                return Ok(Some(lock));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(RETRY_EVERY);
        }
    }

    /// Whether some process holds the lock at `path` right now (a missing file: no).
    pub fn is_held(path: &Path) -> Result<bool, String> {
        if !path.exists() {
            return Ok(false);
        }
        Ok(Self::try_acquire(path)?.is_none())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file at the lock's path is still the one locked: false once it was deleted or
    /// replaced (`nx reset` removes the workspace data directory), when the lock no longer keeps
    /// a second host away.
    pub fn still_at_path(&self) -> bool {
        #[cfg(unix_native)]
        {
            use std::os::unix::fs::MetadataExt;
            match (std::fs::metadata(&self.path), self.file.metadata()) {
                (Ok(on_disk), Ok(held)) => {
                    on_disk.dev() == held.dev() && on_disk.ino() == held.ino()
                }
                _ => false,
            }
        }
        #[cfg(not(unix_native))]
        {
            // No stable file identity here (Windows' file index is unstable in std): the file at
            // the path must exist and have the held file's creation time. Weaker: NTFS "file
            // tunnelling" gives a file re-created under the same name within 15 s the old
            // creation time, so such a replacement goes unnoticed; a removal is noticed.
            match (std::fs::metadata(&self.path), self.file.metadata()) {
                (Ok(on_disk), Ok(held)) => match (on_disk.created(), held.created()) {
                    (Ok(a), Ok(b)) => a == b,
                    _ => true,
                },
                _ => false,
            }
        }
    }
}

fn open_owner_only(path: &Path) -> Result<File, String> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix_native)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}
