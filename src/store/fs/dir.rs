//! Directory handles below the store root that never follow a symbolic link: one API, a Unix
//! implementation on directory file descriptors and a portable one for other systems.

use std::ffi::OsString;
use std::io;
use std::time::SystemTime;

#[cfg(unix_native)]
#[path = "dir_unix.rs"]
mod sys;

#[cfg(not(unix_native))]
#[path = "dir_portable.rs"]
mod sys;

pub use sys::{openat2_works, path_identity, simulate_no_openat2, walks, Dir};

/// What a directory entry is (a link is a link: never followed to see what it points at).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

/// The metadata of one entry, not following a link.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub kind: Kind,
    pub len: u64,
    pub mtime: SystemTime,
    /// Last status change (Unix ctime; `None` where the platform does not give one).
    pub ctime: Option<SystemTime>,
    pub nlink: u64,
}

/// One entry of a directory listing.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: OsString,
    /// `None` when the filesystem does not say (then stat it).
    pub kind: Option<Kind>,
}

/// Free space of a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes available to unprivileged users.
    pub available: u64,
    pub total: u64,
    /// Inodes available, where the filesystem counts them.
    pub inodes_available: Option<u64>,
}

/// A step of making a subdirectory, as [`Dir::create_dirs`] reports it for the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Making {
    /// The parent is about to get a new subdirectory.
    About,
    /// The subdirectory exists now (made, or made by someone else meanwhile).
    Made,
    /// Making it failed: the parent got no new entry.
    Failed,
}

/// Why a path below a directory could not be opened.
#[derive(Debug)]
pub enum Beneath {
    Io(io::Error),
    /// Component `n` (0-based) of the path is a symbolic link: not followed.
    Symlink(usize),
    /// Component `n` exists but is not a directory.
    NotDir(usize),
}
