//! Task-output archives: `pack` a set of outputs (plus the task's terminal output and exit code)
//! into one reproducible archive, and `unpack` an archive safely into a destination directory.
//!
//! # Layout (both formats)
//!
//! A tar stream whose entries are the outputs, relative to the pack root, sorted by path (a
//! directory comes before its contents), followed by two root entries: `terminalOutput` (the UTF-8
//! terminal output) and `code` (the exit code, 4 bytes, big-endian u32). This is the layout Nx's
//! HTTP remote-cache client (`HttpRemoteCache.store` / `retrieve`, nx >= 20.8) writes and reads.
//!
//! # Formats
//!
//! - [`Format::Zstd`] (default): the tar stream compressed with zstd (multi-threaded, content
//!   checksum on, level 6 unless told otherwise: on mixed outputs it is
//!   no larger than gzip level 6, and still many times faster).
//! - [`Format::Nx`]: the tar stream compressed with gzip level 6 (flate2's default), which Nx's own
//!   client restores, and which is what it uploads.
//!
//! `unpack` detects the format by its magic bytes (gzip `1f 8b`, zstd `28 b5 2f fd`).
//!
//! # Reproducibility
//!
//! The same files and the same options give the same bytes: entries sorted by path, uid/gid/mtime
//! zero, no user or group names, permission bits (`0o777`) kept, no absolute paths. Regular files,
//! directories and symlinks are archived (symlinks as links, never followed); anything else is an
//! error. zstd always runs with at least one worker thread, which makes its output independent of
//! the thread count.
//!
//! # Safe extraction: the guarantee
//!
//! `unpack(archive, dest)`:
//! 1. Reads the whole archive into a fresh staging directory created beside `dest` (same parent,
//!    hence the same filesystem), named `.<dest name>.unpack-<random>`. Nothing else is written
//!    while the archive is read.
//! 2. Refuses the whole archive (error naming the entry and the reason) on: an absolute path or a
//!    `..` component; hard links, character or block devices, FIFOs, sparse or unknown entry types;
//!    duplicate paths; a path that goes through a symlink of the archive; a symlink whose target is
//!    absolute or resolves (following the archive's other symlinks and symlinks already present in
//!    `dest`, chains included) outside `dest`; a path that would go through a symlink, or replace a
//!    directory, already present in `dest`; truncated, corrupt or non-archive input (compression
//!    checksums are verified to the end of the stream); a missing or malformed `code` entry.
//! 3. On any error the staging directory is removed and `dest` is left exactly as it was.
//! 4. setuid, setgid and sticky bits are dropped; file and directory modes are the archive's
//!    permission bits. Directories are made traversable while they are filled and get their final
//!    modes last. Symlinks are created after every file and directory, in dependency order (a link
//!    after the links its target goes through).
//! 5. Publishing: when `dest` does not exist or is an empty directory, one `rename` moves the
//!    staging directory into place: the tree appears whole or not at all. When `dest` already holds
//!    files, staged entries are moved in one by one with `rename` (each file is replaced whole, a
//!    pre-existing symlink at a file's path is replaced, never followed); the set of files then is
//!    not atomic, but no file is ever partial. Pre-existing directories keep their modes.
//!
//! Assumption: nobody else modifies `dest` while `unpack` runs (the checks against existing
//! symlinks in `dest` are made before publishing, by path).

pub mod limits;
mod pack;
pub mod rules;
mod unpack;
pub mod validate;

pub use pack::{
    code_from_number, level_from_number, pack_to_file, pack_to_vec, pack_to_writer,
    threads_from_number, PackOptions,
};
pub use unpack::{unpack_bytes, unpack_file, unpack_reader, Unpacked};
pub use validate::{
    validate_reader, validate_slice, Checked, Refusal, ValidationLimits, Validator,
};

use std::fmt;

/// The name of the root entry that holds the terminal output.
pub const TERMINAL_OUTPUT_ENTRY: &str = "terminalOutput";
/// The name of the root entry that holds the exit code (4 bytes, big-endian u32).
pub const CODE_ENTRY: &str = "code";
/// The largest terminal output `unpack` accepts (it is held in memory).
pub const MAX_TERMINAL_OUTPUT: u64 = 512 * 1024 * 1024;

/// gzip magic bytes.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// zstd frame magic bytes.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// An archive's compression format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// tar + zstd (multi-threaded).
    #[default]
    Zstd,
    /// tar + gzip level 6: what Nx's HTTP remote-cache client writes and reads.
    Nx,
}

impl Format {
    /// Parses `zstd` or `nx`.
    pub fn parse(s: &str) -> Result<Format, Error> {
        match s {
            "zstd" => Ok(Format::Zstd),
            "nx" => Ok(Format::Nx),
            other => Err(Error::new(format!(
                "invalid archive format `{other}`: expected `zstd` or `nx`"
            ))),
        }
    }

    /// `zstd` or `nx`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Zstd => "zstd",
            Format::Nx => "nx",
        }
    }

    /// The format whose magic bytes start `head`, if any.
    pub fn detect(head: &[u8]) -> Option<Format> {
        if head.starts_with(&ZSTD_MAGIC) {
            Some(Format::Zstd)
        } else if head.starts_with(&GZIP_MAGIC) {
            Some(Format::Nx)
        } else {
            None
        }
    }
}

/// An archive error: a message that names the entry or file and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn new(msg: impl Into<String>) -> Error {
        Error(msg.into())
    }

    /// An error about one archive entry.
    pub fn entry(path: &str, reason: impl fmt::Display) -> Error {
        Error(format!("archive entry `{path}`: {reason}"))
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}
