//! xxh3 hashing that gives the same values as Nx's native `hashArray` and `hashFile`, and
//! `hash_files`: every file of a tree that matches a set of Nx globs, walked and hashed in parallel.
//!
//! Values (all xxh3-64, seed 0, printed as an unsigned decimal string, like Nx):
//! - `hash_array(items)`: the items that are present, joined with `,` (so `[]`, `[""]` and
//!   `[None]` hash alike, and `["a,b"]` hashes like `["a", "b"]`, exactly as in Nx).
//! - `hash_file(path)`: the file's bytes, read in a streaming fashion (a file of any size is
//!   hashed with a bounded buffer). Symlinks are followed. A missing path, a dangling or looping
//!   symlink, a path through a non-directory and a directory give `None`.
//! - `hash_files(root, globs, options)`: see [`hash_files`].

use crate::outputs::glob::NxGlobSet;
use ignore::{DirEntry, WalkBuilder, WalkState};
use rayon::prelude::*;
use std::cell::RefCell;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// The per-thread read buffer: files up to this size are hashed in one call, larger ones through
/// the streaming xxh3 state in chunks of this size.
const CHUNK: usize = 1 << 20;

/// Directories (or files, for `.git`) the walk never enters while ignore rules apply: the same
/// list as Nx's `getHardcodedIgnorePatterns()` (`**/node_modules`, `**/.git`, `**/.nx/cache`,
/// `**/.nx/workspace-data`, `**/.yarn/cache`), each as `(parent name or "", name)`.
const HARDCODED_IGNORES: [(&str, &str); 5] = [
    ("", "node_modules"),
    ("", ".git"),
    (".nx", "cache"),
    (".nx", "workspace-data"),
    (".yarn", "cache"),
];

/// Why hashing failed. Every variant names the value at fault.
#[derive(Debug)]
pub enum HashError {
    /// A file or directory could not be read.
    Io { path: PathBuf, source: io::Error },
    /// A path exists but is neither a regular file nor a directory (a FIFO, socket or device).
    NotARegularFile { path: PathBuf },
    /// `hash_files` was given a root that is not a directory.
    RootNotADirectory { path: PathBuf },
    /// A glob could not be compiled.
    InvalidGlob { glob: String, reason: String },
    /// The directory walk reported an error (unreadable directory, ...).
    Walk { root: PathBuf, reason: String },
}

impl fmt::Display for HashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashError::Io { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            HashError::NotARegularFile { path } => write!(
                f,
                "cannot hash {}: not a regular file (FIFO, socket or device)",
                path.display()
            ),
            HashError::RootNotADirectory { path } => {
                write!(
                    f,
                    "cannot hash files under {}: not a directory",
                    path.display()
                )
            }
            HashError::InvalidGlob { glob, reason } => write!(f, "invalid glob {glob:?}: {reason}"),
            HashError::Walk { root, reason } => {
                write!(f, "walking {} failed: {reason}", root.display())
            }
        }
    }
}

impl std::error::Error for HashError {}

/// The decimal form Nx prints.
pub fn to_decimal(hash: u64) -> String {
    hash.to_string()
}

/// Nx's `hashArray`: xxh3-64 of the present items joined with `,`.
pub fn hash_array_u64<S: AsRef<str>>(items: &[Option<S>]) -> u64 {
    let mut state = Xxh3::new();
    let mut first = true;
    for item in items.iter().flatten() {
        if !first {
            state.update(b",");
        }
        first = false;
        state.update(item.as_ref().as_bytes());
    }
    state.digest()
}

/// Nx's `hashArray` as a decimal string.
pub fn hash_array<S: AsRef<str>>(items: &[Option<S>]) -> String {
    to_decimal(hash_array_u64(items))
}

/// Nx's `hashFile` as a number: `Ok(None)` for a missing path (also a dangling or looping
/// symlink, or a path through a non-directory) and for a directory. Other failures (permission
/// denied, I/O error, a FIFO/socket/device) are errors naming the path.
pub fn hash_file_u64(path: &Path) -> Result<Option<u64>, HashError> {
    let io_err = |source: io::Error| HashError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = match open_for_hashing(path) {
        Ok(f) => f,
        Err(e) if is_absent(&e) => return Ok(None),
        // Windows refuses to open a directory as a file.
        Err(_) if fs::metadata(path).is_ok_and(|m| m.is_dir()) => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    // The kind of what was opened (the symlink target), from the descriptor: no second lookup.
    let meta = file.metadata().map_err(io_err)?;
    if meta.is_dir() {
        return Ok(None);
    }
    if !meta.is_file() {
        return Err(HashError::NotARegularFile {
            path: path.to_path_buf(),
        });
    }
    hash_reader(file).map(Some).map_err(io_err)
}

/// Opens `path` for reading. On Unix with `O_NONBLOCK`, so that opening a FIFO returns at once
/// (it is then refused as not a regular file) instead of waiting for a writer; the flag does
/// nothing to reads of regular files.
fn open_for_hashing(path: &Path) -> io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path)
}

/// Nx's `hashFile` as a decimal string (see [`hash_file_u64`]).
pub fn hash_file(path: &Path) -> Result<Option<String>, HashError> {
    Ok(hash_file_u64(path)?.map(to_decimal))
}

thread_local! {
    /// One reusable read buffer per thread (rayon workers, libuv workers, the JS thread).
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Hashes everything `file` yields, reading into a fixed per-thread buffer of [`CHUNK`] bytes: a
/// file that fits is hashed in one call, a larger one through the streaming state, chunk by chunk
/// (the two give the same value). Memory use is bounded whatever the file size.
fn hash_reader(mut file: File) -> io::Result<u64> {
    BUFFER.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() != CHUNK {
            *buf = vec![0; CHUNK];
        }
        let mut state: Option<Xxh3> = None;
        loop {
            let filled = fill(&mut file, &mut buf)?;
            if filled < CHUNK {
                // End of file.
                return Ok(match state {
                    None => xxh3_64(&buf[..filled]),
                    Some(mut s) => {
                        s.update(&buf[..filled]);
                        s.digest()
                    }
                });
            }
            state.get_or_insert_with(Xxh3::new).update(&buf[..]);
        }
    })
}

/// Reads until `buf` is full or the end of the file; returns how many bytes were read.
fn fill(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    ) || is_symlink_loop(e)
}

#[cfg(unix)]
fn is_symlink_loop(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
}

#[cfg(not(unix))]
fn is_symlink_loop(_e: &io::Error) -> bool {
    false
}

/// Options of [`hash_files`].
#[derive(Debug, Clone, Default)]
pub struct HashFilesOptions {
    /// Also walk what `.gitignore` / `.nxignore` and Nx's hardcoded ignores exclude (`.git` is
    /// still skipped).
    pub include_ignored: bool,
}

/// One hashed file: its path relative to the root (`/`-separated) and its [`hash_file`] value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHash {
    pub path: String,
    pub hash: u64,
}

/// The result of [`hash_files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashedFiles {
    /// [`hash_array`] of the entries `<path>\0<hash>` (the relative path, a NUL character, the
    /// file's decimal hash), in the order of `files`. NUL cannot occur in a path and the hash is
    /// digits only, so the joined string reads back into exactly one list of files.
    pub hash: u64,
    /// Sorted by path (byte order of the UTF-8 path).
    pub files: Vec<FileHash>,
}

/// The entry of one file in [`HashedFiles::hash`]: `<path>\0<decimal hash>`.
pub fn file_entry(path: &str, hash: u64) -> String {
    format!("{path}\0{hash}")
}

/// Hashes every file under `root` that `globs` select: Nx's glob dialect, as
/// [`NxGlobSet`] compiles it (the one `expandOutputs` uses): `!` excludes, `*`/`?` stay within a
/// directory, `**` spans directories, `{a,b}`, `[...]`, extglobs rewritten as Nx does, a trailing
/// `/` means everything below; a set without including globs (e.g. `[]`) selects every file not
/// excluded. Paths are matched relative to `root`, `/`-separated.
///
/// The walk (parallel, `ignore` crate):
/// - unless `include_ignored`, honours `.gitignore` and `.nxignore` files found in `root` and below
///   (git syntax, nested files apply to their subtree; files above `root`, the global git excludes
///   and `.git/info/exclude` are not read, so the result depends on the tree alone) and skips Nx's
///   hardcoded ignores (`node_modules`, `.nx/cache`, `.nx/workspace-data`, `.yarn/cache`);
/// - always skips `.git`; hidden files are included;
/// - does not descend into symlinked directories; a symlink to a file is hashed with its target's
///   contents under the link's own path; symlinks to directories, dangling symlinks and special
///   files are left out;
/// - a file that disappears between the walk and its hashing is left out.
///
/// Paths are relative to `root` with `/` separators (a non-UTF-8 name is converted lossily).
/// Files are hashed in parallel (rayon).
pub fn hash_files<S: AsRef<str>>(
    root: &Path,
    globs: &[S],
    options: &HashFilesOptions,
) -> Result<HashedFiles, HashError> {
    let matcher = NxGlobSet::new(globs).map_err(|e| HashError::InvalidGlob {
        glob: e.glob,
        reason: e.reason,
    })?;
    let listed = list_files(root, &matcher, &literal_prefixes(globs), options)?;
    let hashed: Vec<Option<FileHash>> = listed
        .into_par_iter()
        .map(|(path, abs)| Ok(hash_file_u64(&abs)?.map(|hash| FileHash { path, hash })))
        .collect::<Result<_, HashError>>()?;
    let files: Vec<FileHash> = hashed.into_iter().flatten().collect();
    let mut state = Xxh3::new();
    for (i, f) in files.iter().enumerate() {
        if i > 0 {
            state.update(b",");
        }
        // file_entry(path, hash), without building the string.
        state.update(f.path.as_bytes());
        state.update(b"\0");
        state.update(to_decimal(f.hash).as_bytes());
    }
    Ok(HashedFiles {
        hash: state.digest(),
        files,
    })
}

/// The files [`hash_files`] would hash, as `(relative path, absolute path)`, sorted by the relative
/// path.
fn list_files(
    root: &Path,
    matcher: &NxGlobSet,
    prefixes: &Option<Vec<Vec<String>>>,
    options: &HashFilesOptions,
) -> Result<Vec<(String, PathBuf)>, HashError> {
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(HashError::RootNotADirectory {
                path: root.to_path_buf(),
            })
        }
        Err(source) => {
            return Err(HashError::Io {
                path: root.to_path_buf(),
                source,
            })
        }
    }
    let respect = !options.include_ignored;
    let mut builder = WalkBuilder::new(root);
    builder
        .hidden(false)
        .parents(false)
        .ignore(false)
        .git_global(false)
        .git_exclude(false)
        .git_ignore(respect)
        .require_git(false)
        .follow_links(false)
        .threads(0);
    if respect {
        builder.add_custom_ignore_filename(".nxignore");
    }
    // Directories that cannot hold a match (outside every including glob's literal leading
    // directories) are not entered.
    let prefixes = prefixes.clone();
    let base = root.to_path_buf();
    builder.filter_entry(move |e| {
        !skipped(e, respect)
            && prefixes
                .as_deref()
                .is_none_or(|p| may_hold_match(&base, e, p))
    });

    let found: Mutex<Vec<Listed>> = Mutex::new(Vec::new());
    let failure: Mutex<Option<HashError>> = Mutex::new(None);
    let mut visitors = Collector {
        root,
        matcher,
        found: &found,
        failure: &failure,
    };
    builder.build_parallel().visit(&mut visitors);

    if let Some(e) = lock(&failure).take() {
        return Err(e);
    }
    let mut all: Vec<(String, PathBuf)> = lock(&found).drain(..).flatten().collect();
    all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(all)
}

/// Files found by one walker thread: `(relative path, path)`.
type Listed = Vec<(String, PathBuf)>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn skipped(entry: &DirEntry, respect_ignores: bool) -> bool {
    if entry.depth() == 0 {
        return false;
    }
    let name = entry.file_name();
    if name == ".git" {
        return true;
    }
    if !respect_ignores {
        return false;
    }
    let parent = entry
        .path()
        .parent()
        .and_then(|p| p.file_name())
        .unwrap_or_default();
    HARDCODED_IGNORES
        .iter()
        .any(|(p, n)| name == *n && (p.is_empty() || (parent == *p && entry.depth() >= 2)))
}

/// The literal leading directories of every including glob as written (`src/app/**/*.ts` gives
/// `["src", "app"]`): segments before the last one that contain no glob syntax at all. `None`
/// when some including glob has none (or there is no including glob): a match can lie anywhere.
/// Only a path above or below one of these prefixes can match.
fn literal_prefixes<S: AsRef<str>>(globs: &[S]) -> Option<Vec<Vec<String>>> {
    let mut out = Vec::new();
    for glob in globs {
        let glob = glob.as_ref();
        if glob.starts_with('!') {
            continue;
        }
        let segments: Vec<&str> = glob.split('/').collect();
        let literal: Vec<String> = segments[..segments.len() - 1]
            .iter()
            .take_while(|s| {
                !s.is_empty()
                    && *s != &"."
                    && *s != &".."
                    && !s.contains(|c: char| "*?[]{}()!+@|,\\".contains(c))
            })
            .map(|s| (*s).to_owned())
            .collect();
        if literal.is_empty() {
            return None;
        }
        out.push(literal);
    }
    (!out.is_empty()).then_some(out)
}

/// Whether directory `entry` is above or below one of `prefixes` (files always pass: the globs
/// decide for them).
fn may_hold_match(root: &Path, entry: &DirEntry, prefixes: &[Vec<String>]) -> bool {
    if entry.depth() == 0 || !entry.file_type().is_some_and(|t| t.is_dir()) {
        return true;
    }
    let Some(rel) = relative(root, entry.path()) else {
        return true;
    };
    let parts: Vec<&str> = rel.split('/').collect();
    prefixes.iter().any(|prefix| {
        let n = prefix.len().min(parts.len());
        prefix[..n].iter().zip(&parts[..n]).all(|(a, b)| a == b)
    })
}

struct Collector<'a> {
    root: &'a Path,
    matcher: &'a NxGlobSet,
    found: &'a Mutex<Vec<Listed>>,
    failure: &'a Mutex<Option<HashError>>,
}

impl<'s> ignore::ParallelVisitorBuilder<'s> for Collector<'s> {
    fn build(&mut self) -> Box<dyn ignore::ParallelVisitor + 's> {
        Box::new(Visitor {
            root: self.root,
            matcher: self.matcher,
            local: Vec::new(),
            found: self.found,
            failure: self.failure,
        })
    }
}

struct Visitor<'a> {
    root: &'a Path,
    matcher: &'a NxGlobSet,
    local: Listed,
    found: &'a Mutex<Vec<Listed>>,
    failure: &'a Mutex<Option<HashError>>,
}

impl Drop for Visitor<'_> {
    fn drop(&mut self) {
        let local = std::mem::take(&mut self.local);
        if !local.is_empty() {
            lock(self.found).push(local);
        }
    }
}

impl ignore::ParallelVisitor for Visitor<'_> {
    fn visit(&mut self, entry: Result<DirEntry, ignore::Error>) -> WalkState {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let mut f = lock(self.failure);
                if f.is_none() {
                    *f = Some(HashError::Walk {
                        root: self.root.to_path_buf(),
                        reason: e.to_string(),
                    });
                }
                return WalkState::Quit;
            }
        };
        let Some(ft) = entry.file_type() else {
            return WalkState::Continue;
        };
        let is_file = if ft.is_file() {
            true
        } else if ft.is_symlink() {
            // Follow the link for the kind only; the walk never descends through it.
            fs::metadata(entry.path())
                .map(|m| m.is_file())
                .unwrap_or(false)
        } else {
            false
        };
        if !is_file {
            return WalkState::Continue;
        }
        let Some(rel) = relative(self.root, entry.path()) else {
            return WalkState::Continue;
        };
        if self.matcher.is_match(&rel) {
            self.local.push((rel, entry.into_path()));
        }
        WalkState::Continue
    }
}

/// `path` relative to `root`, `/`-separated.
fn relative(root: &Path, path: &Path) -> Option<String> {
    let rest = path.strip_prefix(root).ok()?;
    let mut out = String::new();
    for c in rest.components() {
        match c {
            Component::Normal(part) => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(&part.to_string_lossy());
            }
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr(items: &[Option<&str>]) -> String {
        hash_array(items)
    }

    #[test]
    fn hash_array_matches_nx_vectors() {
        assert_eq!(
            arr(&[Some("a"), Some("b"), Some("c")]),
            "380853340397997038"
        );
        assert_eq!(arr(&[Some("a"), None, Some("b")]), "15731061398198237182");
        assert_eq!(arr(&[]), "3244421341483603138");
        assert_eq!(arr(&[Some(""), Some("")]), "3660690302424466814");
        assert_eq!(arr(&[Some("é"), Some("日本")]), "356086936988031197");
        assert_eq!(arr(&[Some("")]), arr(&[]));
        assert_eq!(arr(&[None]), arr(&[]));
        assert_eq!(arr(&[Some("a,b")]), arr(&[Some("a"), Some("b")]));
    }

    #[test]
    fn literal_prefixes_are_conservative() {
        let p = |g: &[&str]| literal_prefixes(g);
        assert_eq!(
            p(&["src/app/**/*.ts", "!src/app/x/**", "lib/"]),
            Some(vec![vec!["src".into(), "app".into()], vec!["lib".into()]])
        );
        assert_eq!(p(&["src/**", "*.md"]), None);
        assert_eq!(p(&["{a,b}/**"]), None);
        assert_eq!(p(&["a/+(b|c)/**"]), Some(vec![vec!["a".into()]]));
        assert_eq!(p(&["!a/**"]), None);
        assert_eq!(p(&[]), None);
    }
}
