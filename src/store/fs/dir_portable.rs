//! Directory handles below the store root on systems without the Unix `*at` calls (Windows).
//!
//! Best effort, and honest about it: each component is checked with `symlink_metadata` before it
//! is used, so a link that is already there is never followed, but a link swapped in between the
//! check and the use can be (there is no descriptor-relative API to close that window here).
//! Symbolic links on these systems need a privilege ordinary users rarely have.

use super::{Beneath, Entry, Kind, Making, Space, Stat};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A directory at or below the store root (by path).
#[derive(Debug)]
pub struct Dir {
    path: PathBuf,
}

/// No-op here: every resolution checks one component at a time.
pub fn simulate_no_openat2(_on: bool) {}

/// Resolutions count is not tracked here.
pub fn walks() -> u64 {
    0
}

pub fn openat2_works() -> bool {
    false
}

/// Directory identities are not compared here (`None`).
pub fn path_identity(path: &Path) -> io::Result<Option<(u64, u64)>> {
    if std::fs::metadata(path)?.is_dir() {
        Ok(None)
    } else {
        Err(io::Error::from(io::ErrorKind::NotADirectory))
    }
}

fn kind_of(meta: &std::fs::Metadata) -> Kind {
    kind_of_type(meta.file_type())
}

fn kind_of_type(t: std::fs::FileType) -> Kind {
    if t.is_symlink() {
        Kind::Symlink
    } else if t.is_dir() {
        Kind::Dir
    } else if t.is_file() {
        Kind::File
    } else {
        Kind::Other
    }
}

impl Dir {
    pub fn open_root(path: &Path) -> io::Result<Dir> {
        if std::fs::metadata(path)?.is_dir() {
            Ok(Dir {
                path: path.to_path_buf(),
            })
        } else {
            Err(io::Error::from(io::ErrorKind::NotADirectory))
        }
    }

    /// Checks each component of `rel` (all directories but the last when `last_is_dir` is false).
    fn checked<S: AsRef<OsStr>>(&self, rel: &[S], last_is_dir: bool) -> Result<PathBuf, Beneath> {
        let mut path = self.path.clone();
        for (i, name) in rel.iter().enumerate() {
            path.push(name.as_ref());
            let meta = std::fs::symlink_metadata(&path).map_err(Beneath::Io)?;
            match kind_of(&meta) {
                Kind::Symlink => return Err(Beneath::Symlink(i)),
                Kind::Dir => {}
                _ if i + 1 == rel.len() && !last_is_dir => {}
                _ => return Err(Beneath::NotDir(i)),
            }
        }
        Ok(path)
    }

    pub fn identity(&self) -> io::Result<Option<(u64, u64)>> {
        Ok(None)
    }

    pub fn open_dir<S: AsRef<OsStr>>(&self, rel: &[S]) -> Result<Dir, Beneath> {
        self.checked(rel, true).map(|path| Dir { path })
    }

    pub fn open_file<S: AsRef<OsStr>>(&self, rel: &[S]) -> Result<File, Beneath> {
        let path = self.checked(rel, false)?;
        File::open(path).map_err(Beneath::Io)
    }

    pub fn create_dirs<S: AsRef<OsStr>>(
        &self,
        rel: &[S],
        noted: &mut dyn FnMut(&Dir, Making),
    ) -> Result<Dir, Beneath> {
        let mut path = self.path.clone();
        for (i, name) in rel.iter().enumerate() {
            let parent = Dir { path: path.clone() };
            path.push(name.as_ref());
            // An existing component is taken as it is (its parent gets no new entry); otherwise
            // the parent is noted before every `create_dir` and told its outcome after.
            if !path.is_dir() {
                noted(&parent, Making::About);
                match std::fs::create_dir(&path) {
                    Ok(()) => noted(&parent, Making::Made),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        noted(&parent, Making::Made)
                    }
                    Err(e) => {
                        noted(&parent, Making::Failed);
                        return Err(Beneath::Io(e));
                    }
                }
            }
            let meta = std::fs::symlink_metadata(&path).map_err(Beneath::Io)?;
            match kind_of(&meta) {
                Kind::Dir => {}
                Kind::Symlink => return Err(Beneath::Symlink(i)),
                _ => return Err(Beneath::NotDir(i)),
            }
        }
        Ok(Dir { path })
    }

    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            path: self.path.clone(),
        })
    }

    pub fn create_new_file(&self, name: &str) -> io::Result<File> {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.path.join(name))
    }

    pub fn stat(&self, name: &OsStr) -> io::Result<Stat> {
        let meta = std::fs::symlink_metadata(self.path.join(name))?;
        Ok(Stat {
            kind: kind_of(&meta),
            len: meta.len(),
            mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            ctime: None,
            nlink: 1,
        })
    }

    pub fn set_mtime(&self, name: &OsStr, mtime: SystemTime) -> io::Result<()> {
        if self.stat(name)?.kind != Kind::File {
            return Err(io::Error::from(io::ErrorKind::Unsupported));
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(self.path.join(name))?;
        file.set_modified(mtime)
    }

    pub fn remove_file(&self, name: &OsStr) -> io::Result<()> {
        std::fs::remove_file(self.path.join(name))
    }

    pub fn remove_dir(&self, name: &OsStr) -> io::Result<()> {
        std::fs::remove_dir(self.path.join(name))
    }

    pub fn link(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
        std::fs::hard_link(self.path.join(name), to.path.join(to_name))
    }

    pub fn rename_no_replace(&self, _name: &str, _to: &Dir, _to_name: &str) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    pub fn rename(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
        std::fs::rename(self.path.join(name), to.path.join(to_name))
    }

    pub fn sync(&self) {}

    /// Whether entries can be made here, as far as the read-only attribute tells. Windows
    /// ignores that attribute on directories (Explorer uses it to mark folders as customised):
    /// there only that the directory is there is checked, and a refused write says the rest.
    pub fn writable(&self) -> io::Result<()> {
        let meta = std::fs::metadata(&self.path)?;
        if !cfg!(windows) && meta.permissions().readonly() {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        Ok(())
    }

    pub fn space(&self) -> io::Result<Space> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    pub fn entries(&self) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            let entry = entry?;
            out.push(Entry {
                name: entry.file_name(),
                kind: entry.file_type().ok().map(kind_of_type),
            });
        }
        Ok(out)
    }
}
