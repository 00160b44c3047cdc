//! Reading one file for hashing, at the pace of a plain read: one `open`, `read`s until one
//! returns 0, one `close`, into a per-thread buffer that is reused for every file; plus one
//! `fstat` where the kind of what was opened is not already known (see [`hash_walked`]).
//!
//! Guarantees:
//! - the value is xxh3-64 of the file's bytes: the value Nx's `hashFile` gives for a file that is
//!   not written while it is hashed. Reading stops when `read` returns 0, as Nx's does (a file
//!   written meanwhile gives some mix of old and new bytes, as with any reader, Nx's included);
//! - memory is bounded whatever the file size (files over [`CHUNK`] go through the streaming
//!   xxh3 state, which gives the same value as the one-shot hash);
//! - only regular files are read: a directory gives `None`, a FIFO, socket or device is an error,
//!   decided by `fstat` on the opened descriptor (so a path swapped after a walk saw it is judged
//!   by what was actually opened). Opening never waits for a FIFO's writer (`O_NONBLOCK`) and
//!   never makes a terminal the controlling one (`O_NOCTTY`). For [`hash_opened`] (`hash_file`)
//!   the `fstat` comes before the first read. For [`hash_walked`] (files the walk already saw as
//!   regular) it is made only when the read ends with 0 bytes in all (an empty file, a FIFO
//!   without a writer, `/dev/null`), before a second [`CHUNK`] is read, or when a read fails;
//!   so the one thing not caught is a FIFO or device swapped in between the walk and the open
//!   that yields between 1 byte and one chunk and then end of file: it is hashed as those bytes.
//!
//! xxh3 comes from `twox-hash`, which picks its SIMD code (AVX2 or SSE2 on x86-64) when it runs:
//! the build targets baseline x86-64, where `xxhash-rust` only ever uses SSE2.
//!
//! No `mmap`: a file truncated by another process while mapped raises `SIGBUS`, which would kill
//! the Node process; a read only returns fewer bytes.

use super::HashError;
use std::cell::RefCell;
use std::fs::{self, File};
use std::hash::Hasher as _;
use std::io::{self, Read};
use std::path::Path;
use twox_hash::XxHash3_64;

/// The per-thread read size: files up to this size are hashed in one call, larger ones through
/// the streaming state chunk by chunk. Small enough that a chunk the kernel just copied is still
/// in the core's L2 cache when it is hashed (the 4 MiB files of benches/hash.js hash measurably
/// slower through a 1 MiB buffer).
pub(super) const CHUNK: usize = 256 << 10;

/// Alignment of the read buffer. The kernel's copy from the page cache runs up to twice as slow
/// on this project's benchmark machine (AMD EPYC) into a destination that is not 64-byte aligned,
/// and a large `Vec` starts 16 bytes into a page; page alignment also keeps every chunk boundary
/// on a page boundary.
const ALIGN: usize = 4096;

thread_local! {
    /// One reusable read buffer per thread (walker threads, libuv workers, the JS thread), with
    /// room to align a [`CHUNK`] inside it.
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The NUL-terminated relative name [`BaseDir::open_file`] passes to `openat`.
    #[cfg(unix_native)]
    static NAME: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Opens `path` for reading. On Unix with `O_NONBLOCK`, so that opening a FIFO returns at once
/// (it is then refused as not a regular file) instead of waiting for a writer (the flag does
/// nothing to reads of regular files), and `O_NOCTTY`, so that opening a terminal device never
/// makes it the process' controlling terminal.
pub(super) fn open_path(path: &Path) -> io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix_native)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    options.open(path)
}

/// A directory that files are opened relative to: on Unix an open descriptor (`openat`), so
/// that each open resolves only the components below it, as a tool started in that directory
/// would; elsewhere the joined path.
pub(super) struct BaseDir {
    #[cfg(unix_native)]
    dir: File,
    #[cfg(not(unix_native))]
    path: std::path::PathBuf,
}

impl BaseDir {
    pub(super) fn open(path: &Path) -> io::Result<Self> {
        #[cfg(unix_native)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            let dir = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
                .open(path)?;
            Ok(BaseDir { dir })
        }
        #[cfg(not(unix_native))]
        Ok(BaseDir {
            path: path.to_path_buf(),
        })
    }

    /// Opens `rel` (relative to this directory) like [`open_path`].
    #[cfg(unix_native)]
    pub(super) fn open_file(&self, rel: &Path) -> io::Result<File> {
        use std::os::fd::{AsRawFd, FromRawFd};
        use std::os::unix::ffi::OsStrExt;
        if rel.is_absolute() {
            return open_path(rel);
        }
        let bytes = rel.as_os_str().as_bytes();
        if bytes.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} contains a NUL byte", rel.display()),
            ));
        }
        NAME.with(|cell| {
            // The NUL-terminated name, in a per-thread buffer (no allocation per file).
            let mut name = cell.borrow_mut();
            name.clear();
            name.extend_from_slice(bytes);
            name.push(0);
            loop {
                // SAFETY: `name` is NUL-terminated and outlives the call; `self.dir` keeps the
                // descriptor open for the call.
                let fd = unsafe {
                    libc::openat(
                        self.dir.as_raw_fd(),
                        name.as_ptr().cast(),
                        libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY,
                    )
                };
                if fd >= 0 {
                    // SAFETY: `fd` was just returned by openat and is owned by nothing else.
                    return Ok(unsafe { File::from_raw_fd(fd) });
                }
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        })
    }

    /// Opens `rel` (relative to this directory) like [`open_path`].
    #[cfg(not(unix_native))]
    pub(super) fn open_file(&self, rel: &Path) -> io::Result<File> {
        open_path(&self.path.join(rel))
    }
}

/// Hashes an opened file: `Ok(None)` if it is a directory, [`HashError::NotARegularFile`] if it
/// is not a regular file; `path` names it in errors. The kind is checked (`fstat`) before the
/// first read.
pub(super) fn hash_opened(file: File, path: &Path) -> Result<Option<u64>, HashError> {
    if !regular(&file, path)? {
        return Ok(None);
    }
    hash_contents(file, path, true)
}

/// [`hash_opened`] for a file the walk found as a regular file (by the directory entry's type,
/// or by `stat` for a symlink): the `fstat` on the opened descriptor is only made if the read
/// ends with 0 bytes in all, if the file turns out longer than one [`CHUNK`], or if a read
/// fails, so a file replaced by something else between the walk and the open is still judged by
/// what was opened. The one case that differs from [`hash_opened`]: a FIFO or device swapped in
/// at that moment that yields 1 byte to one chunk and then end of file is hashed as those bytes
/// instead of refused (see the module documentation).
pub(super) fn hash_walked(file: File, path: &Path) -> Result<Option<u64>, HashError> {
    hash_contents(file, path, false)
}

/// Whether what `file` is open on is a regular file (`false`: a directory); an error naming
/// `path` for anything else or if `fstat` fails.
fn regular(file: &File, path: &Path) -> Result<bool, HashError> {
    // The kind of what was opened (a symlink's target), from the descriptor: no second lookup.
    let meta = file.metadata().map_err(|source| HashError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        return Ok(false);
    }
    if !meta.is_file() {
        return Err(HashError::NotARegularFile {
            path: path.to_path_buf(),
        });
    }
    Ok(true)
}

/// xxh3-64 of everything `file` yields up to `read` returning 0, as Nx reads it (a file that grew
/// since the walk, or whose reported size is wrong, as on some network and FUSE mounts, is still
/// hashed whole). Unless `checked`, the kind of `file` is checked when a read fails (a directory
/// gives `None`), when the read ends with 0 bytes in all, or before a second chunk is read.
fn hash_contents(mut file: File, path: &Path, mut checked: bool) -> Result<Option<u64>, HashError> {
    let io_err = |source: io::Error| HashError::Io {
        path: path.to_path_buf(),
        source,
    };
    BUFFER.with(|cell| {
        let mut storage = cell.borrow_mut();
        if storage.len() != CHUNK + ALIGN {
            *storage = vec![0; CHUNK + ALIGN];
        }
        let start = storage.as_ptr().align_offset(ALIGN).min(ALIGN);
        let buf = &mut storage[start..start + CHUNK];
        let mut state: Option<XxHash3_64> = None;
        loop {
            let (filled, at_end) = match fill(&mut file, buf) {
                Ok(r) => r,
                Err(e) => {
                    // A directory read gives EISDIR; a FIFO with a writer but no data, EAGAIN.
                    // If the kind cannot be told (`fstat` fails too), the read's error is the
                    // one reported.
                    if !checked {
                        match regular(&file, path) {
                            Ok(false) => return Ok(None),
                            Err(not_regular @ HashError::NotARegularFile { .. }) => {
                                return Err(not_regular)
                            }
                            Ok(true) | Err(_) => {}
                        }
                    }
                    return Err(io_err(e));
                }
            };
            if at_end {
                // Nothing at all: an empty file, or a FIFO without a writer or `/dev/null`
                // swapped in after the walk; only `fstat` tells them apart.
                if !checked && filled == 0 && state.is_none() && !regular(&file, path)? {
                    return Ok(None);
                }
                return Ok(Some(match state {
                    None => XxHash3_64::oneshot(&buf[..filled]),
                    Some(mut s) => {
                        s.write(&buf[..filled]);
                        s.finish()
                    }
                }));
            }
            if !checked {
                if !regular(&file, path)? {
                    return Ok(None);
                }
                checked = true;
            }
            state
                .get_or_insert_with(XxHash3_64::new)
                .write(&buf[..filled]);
        }
    })
}

/// Reads into `buf` until it is full or the file ends (`read` returns 0); returns how many bytes
/// it holds and whether the file ended.
fn fill(file: &mut File, buf: &mut [u8]) -> io::Result<(usize, bool)> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => return Ok((filled, true)),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((filled, false))
}

#[cfg(all(test, unix_native))]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

    fn open_nonblocking(path: &Path) -> File {
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .unwrap()
    }

    /// Runs `f` on another thread and fails the test if it has not returned within 60 s (a
    /// blocked `open` or `read` on a FIFO must not hang the test run).
    fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .expect("hashing a FIFO did not return within 60 s")
    }

    /// A FIFO without a writer swapped in for a walked file: the read ends at once with nothing,
    /// and the `fstat` made for a read of 0 bytes refuses it.
    #[test]
    fn a_fifo_without_writer_opened_in_place_of_a_walked_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fifo");
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = bounded(move || {
            let base = BaseDir::open(p.parent().unwrap()).unwrap();
            let file = base.open_file(Path::new("fifo")).unwrap();
            hash_walked(file, &p)
        })
        .unwrap_err();
        assert!(matches!(e, HashError::NotARegularFile { .. }), "{e}");
        assert!(e.to_string().contains("fifo"), "{e}");
    }

    /// `/dev/null` swapped in for a walked file (0 bytes, then end of file) is refused too.
    #[cfg(target_os = "linux")]
    #[test]
    fn dev_null_opened_in_place_of_a_walked_file_is_refused() {
        let p = Path::new("/dev/null");
        let e = hash_walked(open_nonblocking(p), p).unwrap_err();
        assert!(matches!(e, HashError::NotARegularFile { .. }), "{e}");
    }

    #[test]
    fn walked_files_are_hashed_like_opened_ones() {
        let dir = tempfile::tempdir().unwrap();
        for size in [
            0usize,
            1,
            2,
            3,
            4,
            8,
            9,
            16,
            17,
            128,
            129,
            240,
            241,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            3 * CHUNK + 5,
        ] {
            let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let p = dir.path().join(format!("f{size}"));
            fs::write(&p, &bytes).unwrap();
            let walked = hash_walked(open_nonblocking(&p), &p).unwrap();
            let opened = hash_opened(open_nonblocking(&p), &p).unwrap();
            assert_eq!(walked, Some(xxhash_rust::xxh3::xxh3_64(&bytes)), "{size}");
            assert_eq!(walked, opened, "{size}");
        }
    }

    #[test]
    fn a_directory_opened_in_place_of_a_walked_file_gives_none() {
        let dir = tempfile::tempdir().unwrap();
        let file = open_nonblocking(dir.path());
        assert_eq!(hash_walked(file, dir.path()).unwrap(), None);
    }

    /// A device swapped in for a walked file is refused before more than one chunk is read.
    #[cfg(target_os = "linux")]
    #[test]
    fn an_endless_device_opened_in_place_of_a_walked_file_is_refused() {
        let p = Path::new("/dev/zero");
        let e = hash_walked(open_nonblocking(p), p).unwrap_err();
        assert!(matches!(e, HashError::NotARegularFile { .. }), "{e}");
        assert!(e.to_string().contains("/dev/zero"), "{e}");
    }
}
