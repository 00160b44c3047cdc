//! The one spool: bytes kept in memory up to [`INLINE_LIMIT`], then in a temp file that is
//! owner-only (0600) and unlinked as soon as it is made, in the one directory [`dir`] names.
//!
//! Used wherever a body must be complete before it is used: a download checked before it is
//! served (object stores, an http upstream, the seal layer opening an artifact), an upload whose
//! length or digest must be known before it is sent (object stores, an unsized body to an http
//! upstream). Memory stays bounded by the limit whatever the size; nothing is left on disk on any
//! path (error, panic, kill -9), since the open handle alone keeps the data. Windows cannot
//! remove an open file: there the file stays in the spool directory.
//!
//! One type serves async and blocking callers: [`Spool::push`] and [`Spool::finish`] run every
//! file operation that may block on the blocking pool; the [`std::io::Write`] side (for code
//! already on the blocking pool) writes directly.

use super::{io_error, StoreError};
use bytes::Bytes;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bodies up to this many bytes are kept (and objects up to it read and verified) in memory.
pub const INLINE_LIMIT: u64 = 8 * 1024 * 1024;

/// Write buffer in front of a spool file: most pushes are a copy into it, no system call.
const FILE_BUFFER: usize = 1 << 20;

/// The directory spool files are made in: `<temp dir>/nx-open-cache-spool`.
pub fn dir() -> PathBuf {
    std::env::temp_dir().join("nx-open-cache-spool")
}

/// A new spool file in `dir` (made if missing): owner-only, and already unlinked.
pub fn file(dir: &Path) -> Result<std::fs::File, StoreError> {
    let fail = |what: &str, e: io::Error| {
        io_error(
            &e,
            format!("cannot {what} spool directory {}", dir.display()),
        )
    };
    std::fs::create_dir_all(dir).map_err(|e| fail("create", e))?;
    let mut rand = [0u8; 8];
    // Without OS randomness the name is less unique; `create_new` still never reuses a file.
    let _ = getrandom::fill(&mut rand);
    let path = dir.join(format!(
        "{}.{}.spool",
        std::process::id(),
        hex::encode(rand)
    ));
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create_new(true);
    // Owner-only: nobody else may change what is about to be checked and served.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options
        .open(&path)
        .map_err(|e| fail("create a file in", e))?;
    let _ = std::fs::remove_file(&path);
    Ok(file)
}

/// What a finished spool holds; a file is positioned at its start.
#[derive(Debug)]
pub enum Spooled {
    Memory(Bytes),
    File(std::fs::File),
}

/// Bytes collected in memory up to a limit, then in a spool file.
pub struct Spool {
    dir: PathBuf,
    limit: u64,
    /// The expected length is over the limit: go to a file from the first byte.
    large: bool,
    memory: Vec<u8>,
    file: Option<BufWriter<std::fs::File>>,
    len: u64,
}

impl Spool {
    /// An empty spool. `expected`: the length announced, if any (memory is reserved for it when
    /// it fits under `limit`; a file is used at once when it does not).
    pub fn new(dir: &Path, limit: u64, expected: Option<u64>) -> Self {
        let capacity = expected.filter(|n| *n <= limit).unwrap_or(0);
        Spool {
            dir: dir.to_path_buf(),
            limit,
            large: expected.is_some_and(|n| n > limit),
            memory: Vec::with_capacity(usize::try_from(capacity).unwrap_or(0)),
            file: None,
            len: 0,
        }
    }

    /// Bytes pushed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn write_error(&self, e: &io::Error) -> StoreError {
        io_error(
            e,
            format!("cannot write spool file in {}", self.dir.display()),
        )
    }

    /// Whether `more` bytes move the spool to a file now.
    fn outgrows(&self, more: usize) -> bool {
        self.file.is_none() && (self.large || self.len + more as u64 > self.limit)
    }

    /// Moves what is in memory to a new spool file (blocking).
    fn move_to_file(&mut self, file: std::fs::File) -> io::Result<()> {
        let mut f = BufWriter::with_capacity(FILE_BUFFER, file);
        f.write_all(&std::mem::take(&mut self.memory))?;
        self.file = Some(f);
        Ok(())
    }

    /// Appends `chunk`; file operations run on the blocking pool.
    pub async fn push(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        if self.outgrows(chunk.len()) {
            let dir = self.dir.clone();
            let made = tokio::task::spawn_blocking(move || file(&dir))
                .await
                .map_err(|e| self.write_error(&io::Error::other(e)))??;
            // At most `limit` bytes are in memory: moved on the worker like any other copy into
            // the buffer (the buffer is flushed by the next blocking write).
            let mut f = BufWriter::with_capacity(FILE_BUFFER, made);
            let memory = std::mem::take(&mut self.memory);
            if memory.len() <= FILE_BUFFER {
                f.write_all(&memory).map_err(|e| self.write_error(&e))?;
                self.file = Some(f);
            } else {
                self.file = Some(self.blocking(f, memory).await?);
            }
        }
        self.len += chunk.len() as u64;
        match self.file.take() {
            None => {
                self.memory.extend_from_slice(chunk);
                Ok(())
            }
            Some(mut f) if f.buffer().len() + chunk.len() <= f.capacity() => {
                // Fits the buffer: a copy, no I/O.
                let written = f.write_all(chunk);
                self.file = Some(f);
                written.map_err(|e| self.write_error(&e))
            }
            Some(f) => {
                self.file = Some(self.blocking(f, chunk.to_vec()).await?);
                Ok(())
            }
        }
    }

    /// Writes `bytes` through `f` on the blocking pool and hands `f` back.
    async fn blocking(
        &self,
        mut f: BufWriter<std::fs::File>,
        bytes: Vec<u8>,
    ) -> Result<BufWriter<std::fs::File>, StoreError> {
        tokio::task::spawn_blocking(move || f.write_all(&bytes).map(|()| f))
            .await
            .map_err(io::Error::other)
            .and_then(|r| r)
            .map_err(|e| self.write_error(&e))
    }

    /// Replaces the first `bytes.len()` bytes (already pushed) with `bytes`: a header written
    /// once what follows it is known.
    pub async fn rewrite_start(&mut self, bytes: Vec<u8>) -> Result<(), StoreError> {
        if bytes.len() as u64 > self.len {
            return Err(self.write_error(&io::Error::other(format!(
                "{} bytes to rewrite but {} spooled",
                bytes.len(),
                self.len
            ))));
        }
        match self.file.take() {
            None => {
                self.memory[..bytes.len()].copy_from_slice(&bytes);
                Ok(())
            }
            Some(mut f) => {
                let done = tokio::task::spawn_blocking(move || {
                    f.flush()?;
                    let inner = f.get_mut();
                    inner.seek(SeekFrom::Start(0))?;
                    inner.write_all(&bytes)?;
                    inner.seek(SeekFrom::End(0))?;
                    Ok::<_, io::Error>(f)
                })
                .await
                .map_err(io::Error::other)
                .and_then(|r| r)
                .map_err(|e| self.write_error(&e))?;
                self.file = Some(done);
                Ok(())
            }
        }
    }

    /// The collected bytes (a file is flushed and rewound on the blocking pool).
    pub async fn finish(mut self) -> Result<Spooled, StoreError> {
        match self.file.take() {
            None => Ok(Spooled::Memory(Bytes::from(std::mem::take(
                &mut self.memory,
            )))),
            Some(f) => tokio::task::spawn_blocking(move || rewound(f))
                .await
                .map_err(io::Error::other)
                .and_then(|r| r)
                .map(Spooled::File)
                .map_err(|e| self.write_error(&e)),
        }
    }

    /// [`Spool::finish`] for a caller on the blocking pool.
    pub fn finish_blocking(mut self) -> Result<Spooled, StoreError> {
        match self.file.take() {
            None => Ok(Spooled::Memory(Bytes::from(std::mem::take(
                &mut self.memory,
            )))),
            Some(f) => rewound(f)
                .map(Spooled::File)
                .map_err(|e| self.write_error(&e)),
        }
    }
}

fn rewound(f: BufWriter<std::fs::File>) -> io::Result<std::fs::File> {
    let mut file = f.into_inner().map_err(|e| e.into_error())?;
    file.seek(SeekFrom::Start(0))?;
    Ok(file)
}

/// The blocking side: for code already on the blocking pool (the seal layer opening a large
/// artifact). Moving to a file happens here too, directly.
impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.outgrows(buf.len()) {
            let made = file(&self.dir).map_err(|e| io::Error::other(e.message))?;
            self.move_to_file(made)?;
        }
        let n = match &mut self.file {
            Some(f) => f.write(buf)?,
            None => {
                self.memory.extend_from_slice(buf);
                buf.len()
            }
        };
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read_all(s: Spooled) -> (bool, Vec<u8>) {
        match s {
            Spooled::Memory(b) => (false, b.to_vec()),
            Spooled::File(mut f) => {
                let mut v = Vec::new();
                f.read_to_end(&mut v).expect("read spool file");
                (true, v)
            }
        }
    }

    #[tokio::test]
    async fn memory_up_to_the_limit_then_an_unlinked_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Spool::new(dir.path(), 8, None);
        s.push(b"12345678").await.expect("push");
        let (in_file, bytes) = read_all(s.finish().await.expect("finish"));
        assert!(!in_file);
        assert_eq!(bytes, b"12345678");

        let mut s = Spool::new(dir.path(), 8, None);
        s.push(b"1234").await.expect("push");
        s.push(b"56789").await.expect("push");
        s.rewrite_start(b"ab".to_vec()).await.expect("rewrite");
        s.push(b"0").await.expect("push");
        assert_eq!(s.len(), 10);
        let (in_file, bytes) = read_all(s.finish().await.expect("finish"));
        assert!(in_file);
        assert_eq!(bytes, b"ab34567890");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    #[tokio::test]
    async fn an_expected_large_body_goes_to_a_file_from_the_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Spool::new(dir.path(), 8, Some(9));
        s.push(b"1").await.expect("push");
        assert!(s.file.is_some());
        let (in_file, bytes) = read_all(s.finish().await.expect("finish"));
        assert!(in_file && bytes == b"1");
    }

    #[test]
    fn the_blocking_side_spools_alike() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Spool::new(dir.path(), 4, None);
        s.write_all(b"abcdef").expect("write");
        let (in_file, bytes) = read_all(s.finish_blocking().expect("finish"));
        assert!(in_file && bytes == b"abcdef");
    }

    #[cfg(unix)]
    #[test]
    fn spool_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let f = file(dir.path()).expect("spool file");
        let mode = f.metadata().expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
