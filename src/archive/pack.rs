//! Building archives: collect the outputs, sort them, write a reproducible tar stream through zstd
//! or gzip.

use super::{Error, Format, CODE_ENTRY, TERMINAL_OUTPUT_ENTRY};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

/// The default zstd level.
pub const DEFAULT_ZSTD_LEVEL: i32 = 6;

/// The task's exit code from a JavaScript number: a whole number of 0..=4294967295, refused
/// otherwise (never wrapped: 2^40 would restore as 0, -1 as 4294967295).
pub fn code_from_number(v: f64) -> Result<u32, Error> {
    crate::number::whole("code", v, 0..=u32::MAX).map_err(Error::new)
}

/// A compression level from a JavaScript number: a whole number of 0..=22 (the format then
/// narrows it: zstd 1..=22, gzip 0..=9).
pub fn level_from_number(v: f64) -> Result<i32, Error> {
    crate::number::whole("level", v, 0..=22).map_err(Error::new)
}

/// A zstd thread count from a JavaScript number: a whole number of 1..=256.
pub fn threads_from_number(v: f64) -> Result<u32, Error> {
    crate::number::whole("threads", v, 1..=256).map_err(Error::new)
}

/// What to pack.
#[derive(Debug, Clone, Default)]
pub struct PackOptions {
    /// The directory the paths are relative to (the workspace root, or Nx's `<cacheDir>/<hash>`).
    pub root: PathBuf,
    /// Explicit relative paths (files, symlinks or directories, which are walked). A missing path
    /// is an error.
    pub files: Vec<String>,
    /// Nx output entries (paths, directories and globs, `!` negations), expanded exactly as Nx's
    /// `expandOutputs` does when it caches a task; what matches nothing is skipped, as Nx skips
    /// outputs a task did not produce. An invalid glob is an error naming it.
    pub entries: Vec<String>,
    /// The task's terminal output.
    pub terminal_output: String,
    /// The task's exit code.
    pub code: u32,
    /// The compression format.
    pub format: Format,
    /// Compression level: zstd 1..=22 (default 6), or gzip 0..=9 for `nx` (default 6).
    pub level: Option<i32>,
    /// zstd worker threads (default: available parallelism). Ignored for `nx`.
    pub threads: Option<u32>,
}

#[derive(Debug)]
enum Kind {
    Dir,
    File { size: u64 },
    Symlink { target: PathBuf },
}

#[derive(Debug)]
struct Item {
    kind: Kind,
    mode: u32,
}

/// Validates and normalises a relative path given by the caller (`./` and `.` dropped).
fn relative(p: &str) -> Result<PathBuf, Error> {
    let mut out = PathBuf::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(Error::new(format!(
                    "path `{p}`: `..` is not allowed (paths are relative to root, inside it)"
                )))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(Error::new(format!(
                    "path `{p}`: absolute paths are not allowed (paths are relative to root)"
                )))
            }
        }
    }
    Ok(out)
}

#[cfg(unix_native)]
fn mode_of(m: &fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    m.permissions().mode() & 0o777
}

#[cfg(not(unix_native))]
fn mode_of(m: &fs::Metadata) -> u32 {
    if m.is_dir() {
        0o755
    } else if m.permissions().readonly() {
        0o444
    } else {
        0o644
    }
}

fn kind_name(ft: &fs::FileType) -> &'static str {
    #[cfg(unix_native)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO";
        }
        if ft.is_socket() {
            return "a socket";
        }
        if ft.is_block_device() || ft.is_char_device() {
            return "a device";
        }
    }
    let _ = ft;
    "not a regular file, directory or symlink"
}

/// Adds `rel` (and, for a directory, everything below it) to `items`.
fn collect(
    root: &Path,
    rel: PathBuf,
    meta: fs::Metadata,
    items: &mut BTreeMap<PathBuf, Item>,
) -> Result<(), Error> {
    let mut stack = vec![(rel, meta)];
    while let Some((rel, meta)) = stack.pop() {
        let abs = root.join(&rel);
        let ft = meta.file_type();
        let mode = mode_of(&meta);
        if ft.is_symlink() {
            let target = fs::read_link(&abs)
                .map_err(|e| Error::new(format!("{}: reading the symlink: {e}", abs.display())))?;
            items.insert(
                rel,
                Item {
                    kind: Kind::Symlink { target },
                    mode: 0o777,
                },
            );
        } else if ft.is_file() {
            items.insert(
                rel,
                Item {
                    kind: Kind::File { size: meta.len() },
                    mode,
                },
            );
        } else if ft.is_dir() {
            let rd = fs::read_dir(&abs).map_err(|e| {
                Error::new(format!("{}: reading the directory: {e}", abs.display()))
            })?;
            for entry in rd {
                let entry = entry.map_err(|e| {
                    Error::new(format!("{}: reading the directory: {e}", abs.display()))
                })?;
                let child = rel.join(entry.file_name());
                let m = fs::symlink_metadata(root.join(&child))
                    .map_err(|e| Error::new(format!("{}: {e}", root.join(&child).display())))?;
                stack.push((child, m));
            }
            if !rel.as_os_str().is_empty() {
                items.insert(
                    rel,
                    Item {
                        kind: Kind::Dir,
                        mode,
                    },
                );
            }
        } else {
            return Err(Error::new(format!(
                "{}: cannot archive it: {}",
                abs.display(),
                kind_name(&ft)
            )));
        }
    }
    Ok(())
}

/// Lexically resolves a symlink target from the link's parent, following the archive's other
/// symlinks; an error when it is absolute or leaves the root.
fn check_link(link: &Path, target: &Path, items: &BTreeMap<PathBuf, Item>) -> Result<(), String> {
    let mut hops = 0usize;
    let parent = link.parent().unwrap_or(Path::new("")).to_path_buf();
    resolve(parent, target, items, &mut hops).map(|_| ())
}

fn resolve(
    mut cur: PathBuf,
    target: &Path,
    items: &BTreeMap<PathBuf, Item>,
    hops: &mut usize,
) -> Result<PathBuf, String> {
    for c in target.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("its target `{}` is absolute", target.display()))
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if !cur.pop() {
                    return Err(format!(
                        "its target `{}` points outside the archive root",
                        target.display()
                    ));
                }
            }
            Component::Normal(n) => {
                cur.push(n);
                if let Some(Item {
                    kind: Kind::Symlink { target: t },
                    ..
                }) = items.get(&cur)
                {
                    *hops += 1;
                    if *hops > 40 {
                        return Err("too many levels of symlinks".to_owned());
                    }
                    cur.pop();
                    cur = resolve(cur, t, items, hops)?;
                }
            }
        }
    }
    Ok(cur)
}

fn collect_all(opts: &PackOptions) -> Result<BTreeMap<PathBuf, Item>, Error> {
    let mut items = BTreeMap::new();
    let expanded = if opts.entries.is_empty() {
        Vec::new()
    } else {
        crate::outputs::expand_outputs(&opts.root, &opts.entries)
            .map_err(|e| Error::new(format!("output entries: {e}")))?
    };
    let lists = [(&opts.files, true), (&expanded, false)];
    for (list, required) in lists {
        for p in list.iter() {
            let rel = relative(p)?;
            let abs = opts.root.join(&rel);
            match fs::symlink_metadata(&abs) {
                Ok(meta) => collect(&opts.root, rel, meta, &mut items)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound && !required => {}
                Err(e) => return Err(Error::new(format!("{}: {e}", abs.display()))),
            }
        }
    }
    for name in [TERMINAL_OUTPUT_ENTRY, CODE_ENTRY] {
        if items.contains_key(Path::new(name)) {
            return Err(Error::new(format!(
                "path `{name}`: an output at the root with this name would collide with the \
                 archive's `{name}` entry"
            )));
        }
    }
    for (path, item) in &items {
        if let Kind::Symlink { target } = &item.kind {
            check_link(path, target, &items).map_err(|reason| {
                Error::new(format!(
                    "symlink `{}`: {reason}; such a link could not be restored safely",
                    path.display()
                ))
            })?;
        }
    }
    Ok(items)
}

/// A reader that yields exactly `remaining` bytes or fails (the file shrank while being read).
struct Exact<'a, R> {
    inner: R,
    remaining: u64,
    path: &'a Path,
}

impl<R: Read> Read for Exact<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: the file shrank while it was being archived",
                    self.path.display()
                ),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h
}

fn write_tar<W: Write>(
    opts: &PackOptions,
    items: &BTreeMap<PathBuf, Item>,
    w: W,
) -> Result<W, Error> {
    let mut b = tar::Builder::new(w);
    for (path, item) in items {
        let abs = opts.root.join(path);
        let ctx = |e: io::Error| Error::new(format!("{}: archiving: {e}", abs.display()));
        match &item.kind {
            Kind::Dir => {
                let mut h = header(tar::EntryType::Directory, item.mode, 0);
                b.append_data(&mut h, path, io::empty()).map_err(ctx)?;
            }
            Kind::File { size } => {
                let f = fs::File::open(&abs).map_err(ctx)?;
                let mut h = header(tar::EntryType::Regular, item.mode, *size);
                let r = Exact {
                    inner: f,
                    remaining: *size,
                    path: &abs,
                };
                b.append_data(&mut h, path, r).map_err(ctx)?;
            }
            Kind::Symlink { target } => {
                let mut h = header(tar::EntryType::Symlink, item.mode, 0);
                b.append_link(&mut h, path, target).map_err(ctx)?;
            }
        }
    }
    let meta_err = |e: io::Error| Error::new(format!("writing the archive: {e}"));
    let out = opts.terminal_output.as_bytes();
    let mut h = header(tar::EntryType::Regular, 0o644, out.len() as u64);
    b.append_data(&mut h, TERMINAL_OUTPUT_ENTRY, out)
        .map_err(meta_err)?;
    let code = opts.code.to_be_bytes();
    let mut h = header(tar::EntryType::Regular, 0o644, 4);
    b.append_data(&mut h, CODE_ENTRY, &code[..])
        .map_err(meta_err)?;
    b.into_inner().map_err(meta_err)
}

fn threads(opts: &PackOptions) -> Result<u32, Error> {
    match opts.threads {
        Some(0) => Err(Error::new("threads: must be at least 1")),
        Some(t) if t > 256 => Err(Error::new(format!("threads: {t} is more than 256"))),
        Some(t) => Ok(t),
        None => Ok(std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
            .min(256)),
    }
}

/// The compression settings, validated before any file is read.
enum Codec {
    Zstd { level: i32, threads: u32 },
    Gzip { level: u32 },
}

fn codec(opts: &PackOptions) -> Result<Codec, Error> {
    match opts.format {
        Format::Zstd => {
            let range = zstd::compression_level_range();
            let level = opts.level.unwrap_or(DEFAULT_ZSTD_LEVEL);
            if level < 1 || !range.contains(&level) {
                return Err(Error::new(format!(
                    "level: {level} is not a zstd level (1..={})",
                    range.end()
                )));
            }
            Ok(Codec::Zstd {
                level,
                threads: threads(opts)?,
            })
        }
        Format::Nx => {
            let level = opts.level.unwrap_or(6);
            let level = u32::try_from(level)
                .ok()
                .filter(|l| *l <= 9)
                .ok_or_else(|| Error::new(format!("level: {level} is not a gzip level (0..=9)")))?;
            Ok(Codec::Gzip { level })
        }
    }
}

fn unbuffer<W>(e: io::IntoInnerError<W>) -> Error {
    Error::new(format!("writing the archive: {}", e.error()))
}

/// Packs into `w` and returns it, with everything written and flushed.
pub fn pack_to_writer<W: Write>(opts: &PackOptions, w: W) -> Result<W, Error> {
    let codec = codec(opts)?;
    let items = collect_all(opts)?;
    let werr = |e: io::Error| Error::new(format!("writing the archive: {e}"));
    match codec {
        Codec::Zstd { level, threads } => {
            let mut enc = zstd::stream::write::Encoder::new(w, level).map_err(werr)?;
            enc.include_checksum(true).map_err(werr)?;
            enc.multithread(threads).map_err(werr)?;
            let enc = write_tar(opts, &items, BufWriter::with_capacity(1 << 20, enc))?;
            enc.into_inner().map_err(unbuffer)?.finish().map_err(werr)
        }
        Codec::Gzip { level } => {
            let enc = flate2::write::GzEncoder::new(w, flate2::Compression::new(level));
            let enc = write_tar(opts, &items, BufWriter::with_capacity(1 << 16, enc))?;
            enc.into_inner().map_err(unbuffer)?.finish().map_err(werr)
        }
    }
}

/// Packs into memory.
pub fn pack_to_vec(opts: &PackOptions) -> Result<Vec<u8>, Error> {
    pack_to_writer(opts, Vec::new())
}

/// Packs into the file `output` (written to a temporary file beside it, then renamed into place, so
/// `output` is never seen partial) and returns its size in bytes.
pub fn pack_to_file(opts: &PackOptions, output: &Path) -> Result<u64, Error> {
    let name = output
        .file_name()
        .ok_or_else(|| Error::new(format!("output `{}`: not a file path", output.display())))?;
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut rnd = [0u8; 8];
    getrandom::fill(&mut rnd)
        .map_err(|e| Error::new(format!("output `{}`: {e}", output.display())))?;
    let tmp = parent.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        hex::encode(rnd)
    ));
    let oerr = |e: io::Error| Error::new(format!("output `{}`: {e}", output.display()));
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(oerr)?;
    let result = (|| {
        let w = pack_to_writer(opts, BufWriter::with_capacity(1 << 20, f))?;
        let f = w
            .into_inner()
            .map_err(|e| Error::new(format!("output `{}`: {}", output.display(), e.error())))?;
        f.sync_all().map_err(oerr)?;
        let len = f.metadata().map_err(oerr)?.len();
        drop(f);
        fs::rename(&tmp, output).map_err(oerr)?;
        Ok(len)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_from_javascript_are_refused_out_of_range() {
        assert_eq!(code_from_number(0.0).ok(), Some(0));
        assert_eq!(code_from_number(4294967295.0).ok(), Some(u32::MAX));
        for v in [
            2f64.powi(40),
            -1.0,
            1.5,
            f64::NAN,
            f64::INFINITY,
            4294967296.0,
        ] {
            let err = code_from_number(v).err().map(|e| e.message().to_owned());
            let err = err.unwrap_or_default();
            assert!(
                err.contains("for code") && err.contains("from 0 to 4294967295"),
                "{v}: {err}"
            );
        }
        assert_eq!(level_from_number(9.0).ok(), Some(9));
        assert!(
            level_from_number(23.0).is_err()
                && level_from_number(-1.0).is_err()
                && level_from_number(2.5).is_err()
        );
        assert_eq!(threads_from_number(256.0).ok(), Some(256));
        assert!(threads_from_number(0.0).is_err() && threads_from_number(257.0).is_err());
        assert!(threads_from_number(f64::NAN).is_err());
    }
}
