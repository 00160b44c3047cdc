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

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use ignore::{DirEntry, WalkBuilder, WalkState};
use rayon::prelude::*;
use std::cell::RefCell;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// Files up to this size are read whole into a per-thread buffer and hashed in one call; larger
/// ones go through the streaming xxh3 state in chunks of this size.
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
    // Stat first (following symlinks) so that a FIFO is never opened: opening one blocks.
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    if meta.is_dir() {
        return Ok(None);
    }
    if !meta.is_file() {
        return Err(HashError::NotARegularFile {
            path: path.to_path_buf(),
        });
    }
    let file = match File::open(path) {
        Ok(f) => f,
        // Removed (or replaced) between the stat and the open.
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    hash_reader(file, meta.len()).map(Some).map_err(io_err)
}

/// Nx's `hashFile` as a decimal string (see [`hash_file_u64`]).
pub fn hash_file(path: &Path) -> Result<Option<String>, HashError> {
    Ok(hash_file_u64(path)?.map(to_decimal))
}

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Hashes everything `file` yields. `size_hint` (the stat size) picks one-shot or streaming; the
/// bytes actually read decide the value, so a file that grows or shrinks meanwhile is still hashed
/// consistently with what was read.
fn hash_reader(mut file: File, size_hint: u64) -> io::Result<u64> {
    BUFFER.with(|cell| {
        let mut buf = cell.borrow_mut();
        if size_hint < CHUNK as u64 {
            buf.clear();
            // One more byte than expected, so that reaching EOF needs no second growth.
            buf.reserve(size_hint as usize + 1);
            file.read_to_end(&mut buf)?;
            let h = if buf.len() <= CHUNK {
                xxh3_64(&buf)
            } else {
                // The file grew past the one-shot size while being read; same value either way.
                let mut state = Xxh3::new();
                state.update(&buf);
                state.digest()
            };
            if buf.capacity() > 4 * CHUNK {
                *buf = Vec::new();
            }
            return Ok(h);
        }
        buf.clear();
        buf.resize(CHUNK, 0);
        let mut state = Xxh3::new();
        loop {
            let n = match file.read(&mut buf[..]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            state.update(&buf[..n]);
        }
        Ok(state.digest())
    })
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

/// Nx's glob semantics for a list of globs: a glob starting with `!` excludes, the others
/// include; a path matches when it matches an including glob (or there is none) and no excluding
/// glob. `*` and `?` stop at `/`, `**` spans directories, `{a,b}` and `[...]` work, `\` escapes,
/// and a glob ending in `/` means everything below that directory. Paths are relative to the
/// root, with `/` separators.
///
/// Not supported: extglobs (`+(a|b)`, `?(a)`, `@(a)`, `*(a)`, `!(a)`), which Nx rewrites; they are
/// rejected as invalid rather than matched differently from Nx.
#[derive(Debug, Clone)]
pub struct NxGlobs {
    include: GlobSet,
    exclude: GlobSet,
    any_include: bool,
}

impl NxGlobs {
    pub fn new<S: AsRef<str>>(globs: &[S]) -> Result<Self, HashError> {
        let mut include = GlobSetBuilder::new();
        let mut exclude = GlobSetBuilder::new();
        let mut any_include = false;
        for original in globs {
            let original = original.as_ref();
            let (negated, body) = match original.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, original),
            };
            if let Some(ext) = extglob_at(body) {
                return Err(HashError::InvalidGlob {
                    glob: original.to_owned(),
                    reason: format!("extglob `{ext}(...)` is not supported by hashFiles"),
                });
            }
            let body = if body.ends_with('/') {
                format!("{body}**")
            } else {
                body.to_owned()
            };
            let glob = GlobBuilder::new(&body)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| HashError::InvalidGlob {
                    glob: original.to_owned(),
                    reason: e.kind().to_string(),
                })?;
            if negated {
                exclude.add(glob);
            } else {
                include.add(glob);
                any_include = true;
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build().map_err(|e| HashError::InvalidGlob {
                glob: e.glob().unwrap_or_default().to_owned(),
                reason: e.kind().to_string(),
            })
        };
        Ok(NxGlobs {
            include: build(include)?,
            exclude: build(exclude)?,
            any_include,
        })
    }

    /// Whether `path` (relative, `/`-separated) is selected.
    pub fn is_match(&self, path: &str) -> bool {
        (!self.any_include || self.include.is_match(path)) && !self.exclude.is_match(path)
    }
}

/// The extglob operator (`+`, `?`, `@`, `*`, `!`) of the first unescaped `X(` in `glob`.
fn extglob_at(glob: &str) -> Option<char> {
    let mut escaped = false;
    let mut prev: Option<char> = None;
    for c in glob.chars() {
        if escaped {
            escaped = false;
            prev = None;
            continue;
        }
        if c == '\\' {
            escaped = true;
            prev = None;
            continue;
        }
        if c == '(' {
            if let Some(p @ ('+' | '?' | '@' | '*' | '!')) = prev {
                return Some(p);
            }
        }
        prev = Some(c);
    }
    None
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

/// Hashes every file under `root` that `globs` select (see [`NxGlobs`]; no glob at all selects
/// everything).
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
    let matcher = NxGlobs::new(globs)?;
    let listed = list_files(root, &matcher, options)?;
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
        state.update(file_entry(&f.path, f.hash).as_bytes());
    }
    Ok(HashedFiles {
        hash: state.digest(),
        files,
    })
}

/// The files [`hash_files`] would hash, as `(relative path, absolute path)`, sorted by the relative
/// path.
pub fn list_files(
    root: &Path,
    matcher: &NxGlobs,
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
    builder.filter_entry(move |e| !skipped(e, respect));

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

struct Collector<'a> {
    root: &'a Path,
    matcher: &'a NxGlobs,
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
    matcher: &'a NxGlobs,
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
    fn globs_follow_nx_semantics() {
        let g = NxGlobs::new(&["nested/", "!nested/*.{css,map}"]).unwrap();
        assert!(g.is_match("nested/a.js"));
        assert!(g.is_match("nested/deep/a.css"));
        assert!(!g.is_match("nested/a.css"));
        assert!(!g.is_match("other/a.js"));
        let g = NxGlobs::new(&["!**/*.log"]).unwrap();
        assert!(g.is_match("a/b.txt"));
        assert!(!g.is_match("a/b.log"));
        let g = NxGlobs::new(&["src/*.ts"]).unwrap();
        assert!(g.is_match("src/a.ts"));
        assert!(!g.is_match("src/x/a.ts"));
        assert!(NxGlobs::new::<&str>(&[]).unwrap().is_match("anything"));
    }

    #[test]
    fn invalid_globs_are_named() {
        let e = NxGlobs::new(&["ok/**", "bad/[a"]).unwrap_err().to_string();
        assert!(e.contains("bad/[a"), "{e}");
        let e = NxGlobs::new(&["**/+(spec|test).ts"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("+(spec|test)") && e.contains("extglob"), "{e}");
        assert!(NxGlobs::new(&[r"a\+(b).ts"]).is_ok());
    }
}
