//! Directory handles below the store root that never follow a symbolic link (Unix).
//!
//! Every path below the root is resolved relative to a directory file descriptor: on Linux with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` in one call; where that system call is missing
//! (kernels before 5.6: ENOSYS; some seccomp filters: EPERM) and on other Unix systems, one
//! component at a time with `openat(O_NOFOLLOW | O_DIRECTORY)`. The final operations take a
//! directory descriptor and a single name, and none of them follows a link at that name:
//! `openat(O_NOFOLLOW)` (`O_CREAT | O_EXCL` for new files), `linkat` without `AT_SYMLINK_FOLLOW`,
//! `renameat2`, `unlinkat` (removes a link, never its target), `mkdirat`, and `fstatat` /
//! `utimensat` with `AT_SYMLINK_NOFOLLOW`. A link met on the way is reported as
//! [`Beneath::Symlink`] with its position, never followed.

use super::{Beneath, Entry, Kind, Making, Space, Stat};
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An open directory at or below the store root.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

const DIR_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
/// Read-only, and never blocking on a FIFO or device planted where a file belongs.
const READ_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC;

/// Whether `openat2` works here: not probed yet, yes, no.
static OPENAT2: AtomicU8 = AtomicU8::new(PROBE);
const PROBE: u8 = 0;
const WORKS: u8 = 1;
const MISSING: u8 = 2;
/// Set by tests: behave as if the kernel had no `openat2`.
static SIMULATE_NO_OPENAT2: AtomicBool = AtomicBool::new(false);
/// Paths resolved one component at a time (the fallback), for tests to see it ran.
static WALKS: AtomicU64 = AtomicU64::new(0);

/// Makes every resolution take the component-by-component path, as on a kernel without
/// `openat2` (tests only; process-wide).
pub fn simulate_no_openat2(on: bool) {
    SIMULATE_NO_OPENAT2.store(on, Ordering::Relaxed);
}

/// How many paths were resolved one component at a time so far.
pub fn walks() -> u64 {
    WALKS.load(Ordering::Relaxed)
}

/// Whether this kernel resolved a path with `openat2` (false until the first resolution).
pub fn openat2_works() -> bool {
    OPENAT2.load(Ordering::Relaxed) == WORKS
}

/// The device and inode of the directory at `path` (following links: for the trusted root).
pub fn path_identity(path: &Path) -> io::Result<Option<(u64, u64)>> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    if !meta.is_dir() {
        return Err(io::Error::from(io::ErrorKind::NotADirectory));
    }
    Ok(Some((meta.dev(), meta.ino())))
}

fn c_name(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} contains a NUL byte"),
        )
    })
}

fn c_path<S: AsRef<OsStr>>(rel: &[S]) -> io::Result<CString> {
    let mut joined = Vec::new();
    for (i, part) in rel.iter().enumerate() {
        if i > 0 {
            joined.push(b'/');
        }
        joined.extend_from_slice(part.as_ref().as_bytes());
    }
    c_name(OsStr::from_bytes(&joined))
}

/// `rc` of a call returning -1 on error, as a result.
fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn openat(dir: RawFd, name: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid NUL-terminated string; the returned descriptor is new and ours.
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One `openat2` call beneath `dir` that refuses every symbolic link; `None` where the kernel
/// does not offer it (the caller walks instead).
#[cfg(target_os = "linux")]
fn openat2(dir: RawFd, path: &CStr, flags: libc::c_int) -> Option<io::Result<OwnedFd>> {
    if SIMULATE_NO_OPENAT2.load(Ordering::Relaxed) || OPENAT2.load(Ordering::Relaxed) == MISSING {
        return None;
    }
    // SAFETY: `open_how` is plain old data; all-zero is its documented "no options" value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: the pointers are valid for the call; the size is that of the struct passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if rc >= 0 {
        OPENAT2.store(WORKS, Ordering::Relaxed);
        // SAFETY: a new descriptor, owned by nobody else (descriptors fit in a c_int).
        return Some(Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) }));
    }
    let e = io::Error::last_os_error();
    let missing = match e.raw_os_error() {
        Some(libc::ENOSYS) => true,
        // A seccomp filter that denies unknown system calls; once openat2 worked, EPERM is real.
        Some(libc::EPERM) => OPENAT2.load(Ordering::Relaxed) != WORKS,
        _ => false,
    };
    if missing {
        OPENAT2.store(MISSING, Ordering::Relaxed);
        return None;
    }
    Some(Err(e))
}

#[cfg(not(target_os = "linux"))]
fn openat2(_dir: RawFd, _path: &CStr, _flags: libc::c_int) -> Option<io::Result<OwnedFd>> {
    None
}

fn is_link_or_not_dir(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR))
}

fn system_time(secs: i64, nanos: i64) -> SystemTime {
    let nanos = nanos.clamp(0, 999_999_999) as u32;
    if secs >= 0 {
        UNIX_EPOCH
            .checked_add(Duration::new(secs as u64, nanos))
            .unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::new(secs.unsigned_abs(), 0))
            .and_then(|t| t.checked_add(Duration::new(0, nanos)))
            .unwrap_or(UNIX_EPOCH)
    }
}

fn kind_of_mode(mode: libc::mode_t) -> Kind {
    match mode & libc::S_IFMT {
        libc::S_IFREG => Kind::File,
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFLNK => Kind::Symlink,
        _ => Kind::Other,
    }
}

impl Dir {
    /// Opens the store root itself. Its path is trusted as configured (it may be, or pass through,
    /// a symbolic link to a mount): only what lies below it is resolved without following links.
    pub fn open_root(path: &Path) -> io::Result<Dir> {
        let name = c_name(path.as_os_str())?;
        openat(libc::AT_FDCWD, &name, DIR_FLAGS, 0).map(|fd| Dir { fd })
    }

    /// The directory at `rel` (names without `/`) below this one.
    pub fn open_dir<S: AsRef<OsStr>>(&self, rel: &[S]) -> Result<Dir, Beneath> {
        if rel.is_empty() {
            return self.try_clone().map_err(Beneath::Io);
        }
        self.resolve(rel, DIR_FLAGS).map(|fd| Dir { fd })
    }

    /// The file at `rel` below this one, opened read-only (a FIFO or device there does not block
    /// the open; the caller checks the kind of what it got).
    pub fn open_file<S: AsRef<OsStr>>(&self, rel: &[S]) -> Result<File, Beneath> {
        self.resolve(rel, READ_FLAGS).map(File::from)
    }

    /// The directory at `rel`, creating what is missing of it (an existing one is fine). Each
    /// directory that is about to get a new subdirectory is passed to `noted` first
    /// ([`Making::About`]: the new entry is durable only once that directory is synced; noted
    /// before it exists, so that whoever sees the new directory can know its parent is not
    /// synced yet), then again once `mkdirat` returned ([`Making::Made`], also when someone else
    /// made it meanwhile; [`Making::Failed`] otherwise).
    pub fn create_dirs<S: AsRef<OsStr>>(
        &self,
        rel: &[S],
        noted: &mut dyn FnMut(&Dir, Making),
    ) -> Result<Dir, Beneath> {
        match self.open_dir(rel) {
            Err(Beneath::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        let mut current: Option<Dir> = None;
        for (i, name) in rel.iter().enumerate() {
            let base = current.as_ref().unwrap_or(self);
            let c = c_name(name.as_ref()).map_err(Beneath::Io)?;
            let open = || openat(base.fd.as_raw_fd(), &c, DIR_FLAGS | libc::O_NOFOLLOW, 0);
            // An existing component is opened as it is (its parent gets no new entry).
            let opened = match open() {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    noted(base, Making::About);
                    // SAFETY: `c` is a valid NUL-terminated string.
                    let made =
                        check(unsafe { libc::mkdirat(base.fd.as_raw_fd(), c.as_ptr(), 0o777) });
                    match made {
                        Ok(()) => noted(base, Making::Made),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            noted(base, Making::Made)
                        }
                        Err(e) => {
                            noted(base, Making::Failed);
                            return Err(Beneath::Io(e));
                        }
                    }
                    open()
                }
                other => other,
            };
            match opened {
                Ok(fd) => current = Some(Dir { fd }),
                Err(e) if is_link_or_not_dir(&e) => return Err(base.classify(name.as_ref(), i, e)),
                Err(e) => return Err(Beneath::Io(e)),
            }
        }
        match current {
            Some(d) => Ok(d),
            None => self.try_clone().map_err(Beneath::Io),
        }
    }

    /// Creates a new file `name` in this directory for writing; fails if anything (a link
    /// included) has that name.
    pub fn create_new_file(&self, name: &str) -> io::Result<File> {
        let c = c_name(name.as_ref())?;
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        openat(self.fd.as_raw_fd(), &c, flags, 0o666).map(File::from)
    }

    /// What `name` in this directory is (a link is reported as one, not followed).
    pub fn stat(&self, name: &OsStr) -> io::Result<Stat> {
        let c = c_name(name)?;
        // SAFETY: an all-zero `stat` is valid; it is filled by the call.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid string and out-pointer for the duration of the call.
        check(unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        Ok(Stat {
            kind: kind_of_mode(st.st_mode),
            len: u64::try_from(st.st_size).unwrap_or(0),
            mtime: system_time(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: Some(system_time(st.st_ctime as i64, st.st_ctime_nsec as i64)),
            nlink: st.st_nlink as u64,
        })
    }

    /// Sets the modification time of `name` (a link itself, never its target).
    pub fn set_mtime(&self, name: &OsStr, mtime: SystemTime) -> io::Result<()> {
        let c = c_name(name)?;
        let since = mtime.duration_since(UNIX_EPOCH).unwrap_or_default();
        let times = [
            libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            libc::timespec {
                tv_sec: since.as_secs() as libc::time_t,
                tv_nsec: since.subsec_nanos() as _,
            },
        ];
        // SAFETY: valid string and a two-element timespec array.
        check(unsafe {
            libc::utimensat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
    }

    /// Removes the file (or link: never its target) `name`.
    pub fn remove_file(&self, name: &OsStr) -> io::Result<()> {
        let c = c_name(name)?;
        // SAFETY: valid string.
        check(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) })
    }

    /// Removes the empty directory `name`.
    pub fn remove_dir(&self, name: &OsStr) -> io::Result<()> {
        let c = c_name(name)?;
        // SAFETY: valid string.
        check(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) })
    }

    /// Hard-links `name` (not followed if it is a link) as `to_name` in `to`; fails with
    /// `AlreadyExists` if `to_name` exists.
    pub fn link(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
        // SAFETY (closure): valid descriptors and strings; flags 0: a link at `name` is linked
        // itself, not followed.
        self.between(name, to, to_name, |a, from, b, dest| unsafe {
            libc::linkat(a, from, b, dest, 0)
        })
    }

    /// Renames `name` to `to_name` in `to` unless that exists (`AlreadyExists`). `Unsupported`
    /// where the system offers no such rename (the caller checks then renames).
    pub fn rename_no_replace(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            // The system call itself (Linux 3.15+; ENOSYS/EINVAL otherwise: the caller falls
            // back), not the C library's wrapper: glibc has one only since 2.28 and musl's is
            // recent, and the binaries are built against older C libraries (glibc 2.17 sysroots)
            // and for musl.
            // SAFETY (closure): valid descriptors and NUL-terminated strings for the call.
            self.between(name, to, to_name, |a, from, b, dest| unsafe {
                libc::syscall(
                    libc::SYS_renameat2,
                    a,
                    from,
                    b,
                    dest,
                    libc::RENAME_NOREPLACE,
                ) as libc::c_int
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (name, to, to_name);
            Err(io::Error::from(io::ErrorKind::Unsupported))
        }
    }

    /// Renames `name` to `to_name` in `to`, replacing it.
    pub fn rename(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
        // SAFETY (closure): valid descriptors and strings.
        self.between(name, to, to_name, |a, from, b, dest| unsafe {
            libc::renameat(a, from, b, dest)
        })
    }

    /// Calls `f` (a two-name `*at` system call) with `name` here and `to_name` in `to`.
    fn between(
        &self,
        name: &str,
        to: &Dir,
        to_name: &str,
        f: impl FnOnce(RawFd, *const libc::c_char, RawFd, *const libc::c_char) -> libc::c_int,
    ) -> io::Result<()> {
        let (from, dest) = (c_name(name.as_ref())?, c_name(to_name.as_ref())?);
        check(f(
            self.fd.as_raw_fd(),
            from.as_ptr(),
            to.fd.as_raw_fd(),
            dest.as_ptr(),
        ))
    }

    /// Makes this directory's entries durable (best effort: not every filesystem allows it).
    pub fn sync(&self) {
        // SAFETY: a valid descriptor we own.
        let _ = unsafe { libc::fsync(self.fd.as_raw_fd()) };
    }

    /// Whether this process may create and remove entries here (permissions, a read-only
    /// mount), asked without writing anything.
    pub fn writable(&self) -> io::Result<()> {
        // SAFETY: a valid descriptor and a NUL-terminated name.
        check(unsafe {
            libc::faccessat(
                self.fd.as_raw_fd(),
                c".".as_ptr(),
                libc::W_OK | libc::X_OK,
                libc::AT_EACCESS,
            )
        })
    }

    /// Free space and inodes of the filesystem this directory is on.
    pub fn space(&self) -> io::Result<Space> {
        // SAFETY: an all-zero `statvfs` is valid; it is filled by the call.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid descriptor and out-pointer.
        check(unsafe { libc::fstatvfs(self.fd.as_raw_fd(), &mut st) })?;
        let unit = st.f_frsize as u64;
        Ok(Space {
            available: (st.f_bavail as u64).saturating_mul(unit),
            total: (st.f_blocks as u64).saturating_mul(unit),
            inodes_available: (st.f_files as u64 > 0).then_some(st.f_favail as u64),
        })
    }

    /// The device and inode of this directory.
    pub fn identity(&self) -> io::Result<Option<(u64, u64)>> {
        // SAFETY: an all-zero `stat` is valid; it is filled by the call.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid descriptor and out-pointer.
        check(unsafe { libc::fstat(self.fd.as_raw_fd(), &mut st) })?;
        Ok(Some((st.st_dev as u64, st.st_ino as u64)))
    }

    /// The entries of this directory (without `.` and `..`); `kind` when the filesystem says.
    pub fn entries(&self) -> io::Result<Vec<Entry>> {
        // A description of its own for the stream (a duplicate would share its position with
        // every other user of this handle): closedir closes it.
        let raw = openat(self.fd.as_raw_fd(), c".", DIR_FLAGS, 0)?.into_raw_fd();
        // SAFETY: `raw` is a valid directory descriptor; on success the stream owns it.
        let stream = unsafe { libc::fdopendir(raw) };
        if stream.is_null() {
            let e = io::Error::last_os_error();
            // SAFETY: the stream was not made, so `raw` is still ours to close.
            unsafe { libc::close(raw) };
            return Err(e);
        }
        let listed = read_entries(stream);
        // SAFETY: a valid stream, closed once.
        unsafe { libc::closedir(stream) };
        listed
    }

    pub fn try_clone(&self) -> io::Result<Dir> {
        self.fd.try_clone().map(|fd| Dir { fd })
    }

    /// Opens `rel` below this directory with `flags`, following no link: `openat2` in one call
    /// where the kernel has it, else one component at a time.
    fn resolve<S: AsRef<OsStr>>(&self, rel: &[S], flags: libc::c_int) -> Result<OwnedFd, Beneath> {
        if rel.is_empty() {
            return Err(Beneath::Io(io::Error::from(io::ErrorKind::InvalidInput)));
        }
        let path = c_path(rel).map_err(Beneath::Io)?;
        match openat2(self.fd.as_raw_fd(), &path, flags) {
            Some(Ok(fd)) => Ok(fd),
            Some(Err(e)) if is_link_or_not_dir(&e) => Err(self.diagnose(rel, e)),
            Some(Err(e)) => Err(Beneath::Io(e)),
            None => self.walk(rel, flags),
        }
    }

    /// Opens `rel` one component at a time with `O_NOFOLLOW` (`O_DIRECTORY` for the directories
    /// on the way), each relative to the directory opened before.
    fn walk<S: AsRef<OsStr>>(&self, rel: &[S], flags: libc::c_int) -> Result<OwnedFd, Beneath> {
        WALKS.fetch_add(1, Ordering::Relaxed);
        let mut current: Option<Dir> = None;
        let last = rel.len() - 1;
        for (i, name) in rel.iter().enumerate() {
            let base = current.as_ref().unwrap_or(self);
            let c = c_name(name.as_ref()).map_err(Beneath::Io)?;
            let step_flags = if i == last { flags } else { DIR_FLAGS };
            match openat(base.fd.as_raw_fd(), &c, step_flags | libc::O_NOFOLLOW, 0) {
                Ok(fd) if i == last => return Ok(fd),
                Ok(fd) => current = Some(Dir { fd }),
                Err(e) if is_link_or_not_dir(&e) => return Err(base.classify(name.as_ref(), i, e)),
                Err(e) => return Err(Beneath::Io(e)),
            }
        }
        Err(Beneath::Io(io::Error::from(io::ErrorKind::InvalidInput)))
    }

    /// Why `openat2` refused `rel` with ELOOP/ENOTDIR: the first link, or the first
    /// non-directory on the way.
    fn diagnose<S: AsRef<OsStr>>(&self, rel: &[S], err: io::Error) -> Beneath {
        let mut current: Option<Dir> = None;
        for (i, name) in rel.iter().enumerate() {
            let base = current.as_ref().unwrap_or(self);
            let c = match c_name(name.as_ref()) {
                Ok(c) => c,
                Err(_) => break,
            };
            match openat(base.fd.as_raw_fd(), &c, DIR_FLAGS | libc::O_NOFOLLOW, 0) {
                Ok(fd) => current = Some(Dir { fd }),
                Err(e) if is_link_or_not_dir(&e) => return base.classify(name.as_ref(), i, e),
                Err(_) => break,
            }
        }
        Beneath::Io(err)
    }

    /// Component `index` (`name`, in this directory) could not be opened as a directory or
    /// without following: a link, or something else.
    fn classify(&self, name: &OsStr, index: usize, err: io::Error) -> Beneath {
        match self.stat(name) {
            Ok(s) if s.kind == Kind::Symlink => Beneath::Symlink(index),
            Ok(s) if s.kind != Kind::Dir && err.raw_os_error() == Some(libc::ENOTDIR) => {
                Beneath::NotDir(index)
            }
            _ => Beneath::Io(err),
        }
    }
}

/// Whether [`clear_errno`] works here, so that a NULL from `readdir` with errno set is an error
/// (elsewhere NULL is taken as the end of the stream).
const ERRNO_CLEARED: bool = cfg!(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd"
));

/// Sets errno to 0, so that after `readdir` returns NULL it tells an error from the end.
fn clear_errno() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: the thread's errno location is always valid.
    unsafe {
        *libc::__errno_location() = 0;
    }
    #[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
    // SAFETY: the thread's errno location is always valid.
    unsafe {
        *libc::__error() = 0;
    }
}

fn read_entries(stream: *mut libc::DIR) -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    loop {
        clear_errno();
        // SAFETY: a valid stream; the entry stays valid until the next readdir on it.
        let entry = unsafe { libc::readdir(stream) };
        if entry.is_null() {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(code) if code != 0 && ERRNO_CLEARED => Err(e),
                _ => Ok(out),
            };
        }
        // SAFETY: `d_name` is a NUL-terminated name inside the entry.
        let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
        let bytes = name.to_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        // SAFETY: `entry` is valid (see above).
        let kind = entry_kind(unsafe { &*entry });
        out.push(Entry {
            name: OsString::from_vec(bytes.to_vec()),
            kind,
        });
    }
}

#[cfg(not(any(
    target_os = "solaris",
    target_os = "illumos",
    target_os = "aix",
    target_os = "haiku"
)))]
fn entry_kind(entry: &libc::dirent) -> Option<Kind> {
    match entry.d_type {
        libc::DT_REG => Some(Kind::File),
        libc::DT_DIR => Some(Kind::Dir),
        libc::DT_LNK => Some(Kind::Symlink),
        libc::DT_UNKNOWN => None,
        _ => Some(Kind::Other),
    }
}

#[cfg(any(
    target_os = "solaris",
    target_os = "illumos",
    target_os = "aix",
    target_os = "haiku"
))]
fn entry_kind(_entry: &libc::dirent) -> Option<Kind> {
    None
}
