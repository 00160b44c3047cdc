//! A response body streamed from an open file: exactly `len` bytes from `offset`, in chunks of
//! at most [`CHUNK`] bytes.
//!
//! - Where it reads: on the connection's own thread when the bytes are in the page cache (a
//!   non-blocking `preadv2(RWF_NOWAIT)` on Linux, the common case for a cache server), else on
//!   the blocking pool; no hop to another thread for a cached chunk.
//! - What it guarantees: the file is checked to be in the state it had when the body was made
//!   (device, inode, size, mtime) after every chunk read; a file written to or truncated while it
//!   is served ends the body with an error (the connection is cut before its Content-Length is
//!   reached, so no client takes the bytes for a whole artifact). The ctime is left out: the
//!   store's own publishing (unlinking an object's temp name just after it appears) and a change
//!   of permissions change it without touching a byte, and a write to the file changes the mtime.
//! - Memory: one chunk at a time per response.

use bytes::{Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};
use std::fs::File;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::task::JoinHandle;

/// Largest chunk read at once.
pub const CHUNK: usize = 256 * 1024;

/// Identity and state of a file, as far as a write would change it.
type State = (u64, u64, u64, i64, i64);

#[cfg(unix_native)]
fn state(file: &File) -> io::Result<State> {
    use std::os::unix::fs::MetadataExt;
    let m = file.metadata()?;
    Ok((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

#[cfg(not(unix_native))]
fn state(file: &File) -> io::Result<State> {
    let m = file.metadata()?;
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or((0, 0), |d| {
            (d.as_secs() as i64, i64::from(d.subsec_nanos()))
        });
    Ok((0, 0, m.len(), mtime.0, mtime.1))
}

pub struct FileBody {
    file: Arc<File>,
    /// Where the next chunk starts.
    offset: u64,
    /// Bytes still to send.
    left: u64,
    /// The file's state when the body was made.
    state: io::Result<State>,
    /// A chunk being read on the blocking pool.
    pending: Option<JoinHandle<io::Result<Bytes>>>,
}

impl FileBody {
    pub fn new(file: File, offset: u64, len: u64) -> FileBody {
        let state = state(&file);
        FileBody {
            file: Arc::new(file),
            offset,
            left: len,
            state,
            pending: None,
        }
    }

    fn next_len(&self) -> usize {
        usize::try_from(self.left).map_or(CHUNK, |l| l.min(CHUNK))
    }

    /// A chunk read: checked to be non-empty and the file unchanged, then counted.
    fn take(&mut self, chunk: io::Result<Bytes>) -> io::Result<Bytes> {
        let chunk = chunk?;
        if chunk.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("stored object ended {} bytes before its length", self.left),
            ));
        }
        let now = state(&self.file)?;
        match &self.state {
            Ok(then) if *then == now => {}
            _ => {
                return Err(io::Error::other(
                    "stored object changed while it was served; response cut off",
                ))
            }
        }
        let n = chunk
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        self.offset += n as u64;
        self.left -= n as u64;
        Ok(chunk.slice(..n))
    }
}

impl hyper::body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let read = match self.pending.as_mut() {
            Some(task) => match Pin::new(task).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(done) => {
                    self.pending = None;
                    done.unwrap_or_else(|e| Err(io::Error::other(format!("read task: {e}"))))
                }
            },
            None => {
                let want = self.next_len();
                match read_cached(&self.file, self.offset, want) {
                    Some(read) => read,
                    None => {
                        let (file, offset) = (self.file.clone(), self.offset);
                        let mut task =
                            tokio::task::spawn_blocking(move || read_at(&file, offset, want));
                        match Pin::new(&mut task).poll(cx) {
                            Poll::Pending => {
                                self.pending = Some(task);
                                return Poll::Pending;
                            }
                            Poll::Ready(done) => done.unwrap_or_else(|e| {
                                Err(io::Error::other(format!("read task: {e}")))
                            }),
                        }
                    }
                }
            }
        };
        Poll::Ready(Some(self.take(read).map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// Reads up to `len` bytes at `offset` (blocking).
fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = BytesMut::zeroed(len);
    let n = read_at_into(file, offset, &mut buf)?;
    buf.truncate(n);
    Ok(buf.freeze())
}

#[cfg(unix_native)]
fn read_at_into(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    loop {
        match file.read_at(buf, offset) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

#[cfg(windows)]
fn read_at_into(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::windows::fs::FileExt;
    file.seek_read(buf, offset)
}

/// Elsewhere (and under `portable-fallbacks`): a seek, then a read. A body has one read in flight
/// at a time and is the file's only user, so the moved position is never relied on.
#[cfg(not(any(unix_native, windows)))]
fn read_at_into(mut file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Whether the kernel refused `RWF_NOWAIT` reads (then every chunk goes to the blocking pool).
static NOWAIT_UNSUPPORTED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Reads up to `len` bytes at `offset` without waiting for the disk: `None` when they are not
/// all in the page cache (or the system cannot tell), to be read on the blocking pool instead.
/// `preadv2(RWF_NOWAIT)` as the system call (Linux 4.14+; a 64-bit offset in one register), not
/// the C library's wrapper: glibc has one only since 2.26 and musl's is recent, and the binaries
/// are built against older glibc sysroots and for musl.
#[cfg(all(target_os = "linux", target_pointer_width = "64", unix_native))]
fn read_cached(file: &File, offset: u64, len: usize) -> Option<io::Result<Bytes>> {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::Ordering;
    if NOWAIT_UNSUPPORTED.load(Ordering::Relaxed) {
        return None;
    }
    let offset = libc::off_t::try_from(offset).ok()?;
    let mut buf = BytesMut::with_capacity(len);
    let iov = libc::iovec {
        iov_base: buf.spare_capacity_mut().as_mut_ptr().cast(),
        iov_len: len,
    };
    // SAFETY: `iov` points at `len` bytes of `buf`'s spare capacity, which outlives the call; the
    // kernel writes at most `len` bytes there and returns how many. The offset's high half is 0
    // (it is all in the low register on 64-bit systems); the count is a full register's width.
    let count: libc::c_ulong = 1;
    let high: libc::c_ulong = 0;
    let n = unsafe {
        libc::syscall(
            libc::SYS_preadv2,
            file.as_raw_fd(),
            &iov as *const libc::iovec,
            count,
            offset,
            high,
            libc::RWF_NOWAIT,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => None,
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) => {
                NOWAIT_UNSUPPORTED.store(true, Ordering::Relaxed);
                None
            }
            _ => Some(Err(e)),
        };
    }
    // 0 is not proof of the end: some kernels (5.9, 5.10) answer 0 for bytes not in the cache;
    // the blocking read decides.
    let n = usize::try_from(n).ok().filter(|&n| n > 0)?.min(len);
    // SAFETY: the kernel initialised the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(n) };
    // A short read may only mean that the rest is not cached: that rest comes next time.
    Some(Ok(buf.freeze()))
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64", unix_native)))]
fn read_cached(_file: &File, _offset: u64, _len: usize) -> Option<io::Result<Bytes>> {
    let _ = &NOWAIT_UNSUPPORTED;
    None
}
