//! Bindings for hashing (`crate::hash`): Nx-identical `hashArray` / `hashFile`, and `hashFiles`.

use crate::hash;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::path::{Path, PathBuf};

fn to_js(e: hash::HashError) -> Error {
    let status = match e {
        hash::HashError::InvalidGlob { .. } | hash::HashError::RootNotADirectory { .. } => {
            Status::InvalidArg
        }
        _ => Status::GenericFailure,
    };
    Error::new(status, e.to_string())
}

/// Options of `hashFiles`.
#[napi(object)]
#[derive(Default)]
pub struct HashFilesOptions {
    /// Also walk what `.gitignore` / `.nxignore` and Nx's hardcoded ignores (`node_modules`,
    /// `.nx/cache`, `.nx/workspace-data`, `.yarn/cache`) exclude. `.git` is always skipped.
    /// Default false.
    pub include_ignored: Option<bool>,
}

/// One hashed file.
#[napi(object)]
pub struct FileHash {
    /// Relative to the root, `/`-separated.
    pub path: String,
    /// xxh3-64 of the contents, decimal: the value Nx's `hashFile` gives.
    pub hash: String,
}

/// The result of `hashFiles`.
#[napi(object)]
pub struct HashFilesResult {
    /// `hashArray(files.map(f => f.path + '\0' + f.hash))`: each entry is the relative path, a NUL
    /// character and the decimal file hash.
    pub hash: String,
    /// Sorted by path (UTF-8 byte order).
    pub files: Vec<FileHash>,
}

impl From<hash::HashedFiles> for HashFilesResult {
    fn from(h: hash::HashedFiles) -> Self {
        HashFilesResult {
            hash: hash::to_decimal(h.hash),
            files: h
                .files
                .into_iter()
                .map(|f| FileHash {
                    path: f.path,
                    hash: hash::to_decimal(f.hash),
                })
                .collect(),
        }
    }
}

/// xxh3-64 (seed 0, decimal) of the non-null entries joined with `,`: the value Nx's native
/// `hashArray` gives (so `[]`, `['']` and `[null]` hash alike).
#[napi(catch_unwind)]
pub fn hash_array(input: Vec<Option<String>>) -> String {
    hash::hash_array(&input)
}

/// Computes `hashArray` off the JS thread.
pub struct HashArrayTask {
    input: Vec<Option<String>>,
}

impl Task for HashArrayTask {
    type Output = String;
    type JsValue = String;
    fn compute(&mut self) -> Result<String> {
        super::unwind_safe(|| Ok(hash::hash_array(&self.input)))
    }
    fn resolve(&mut self, _env: Env, output: String) -> Result<String> {
        Ok(output)
    }
}

/// `hashArray` on the libuv thread pool.
#[napi(ts_return_type = "Promise<string>", catch_unwind)]
pub fn hash_array_async(input: Vec<Option<String>>) -> AsyncTask<HashArrayTask> {
    AsyncTask::new(HashArrayTask { input })
}

/// xxh3-64 (seed 0, decimal) of a file's bytes, streamed: the value Nx's native `hashFile` gives.
/// Follows symlinks. `null` when the path does not exist (also a dangling symlink) or is a
/// directory; throws, naming the path and the OS error, when it cannot be read (permission
/// denied, I/O error) or is a FIFO, socket or device.
#[napi(catch_unwind)]
pub fn hash_file(path: String) -> Result<Option<String>> {
    hash::hash_file(Path::new(&path)).map_err(to_js)
}

/// Computes `hashFile` off the JS thread.
pub struct HashFileTask {
    path: PathBuf,
}

impl Task for HashFileTask {
    type Output = Option<String>;
    type JsValue = Option<String>;
    fn compute(&mut self) -> Result<Option<String>> {
        super::unwind_safe(|| hash::hash_file(&self.path).map_err(to_js))
    }
    fn resolve(&mut self, _env: Env, output: Option<String>) -> Result<Option<String>> {
        Ok(output)
    }
}

/// `hashFile` on the libuv thread pool.
#[napi(ts_return_type = "Promise<string | null>", catch_unwind)]
pub fn hash_file_async(path: String) -> AsyncTask<HashFileTask> {
    AsyncTask::new(HashFileTask {
        path: PathBuf::from(path),
    })
}

/// Hashes every file under `root` that `globs` select, walking and hashing in parallel.
///
/// Globs use Nx's syntax (the same engine as `expandOutputs`), relative to `root`: `!` excludes,
/// `*`/`?` stay within a directory, `**` spans directories, `{a,b}`, `[...]`, extglobs
/// (`+(a|b)`, `?(x)`, ...) rewritten as Nx does, a trailing `/` means everything below; with no
/// including glob (e.g. `[]`) every file not excluded is selected. `.gitignore`
/// and `.nxignore` files inside `root` (not above it) and Nx's hardcoded ignores apply unless
/// `options.includeIgnored`; `.git` is always skipped. Symlinks to files are hashed with their
/// target's bytes; symlinked directories are not entered; dangling links are left out.
///
/// Throws on an invalid glob (naming it), a root that is not a directory, or an unreadable file or
/// directory (naming the path).
#[napi(catch_unwind)]
pub fn hash_files(
    root: String,
    globs: Vec<String>,
    options: Option<HashFilesOptions>,
) -> Result<HashFilesResult> {
    run_hash_files(&root, &globs, options)
}

fn run_hash_files(
    root: &str,
    globs: &[String],
    options: Option<HashFilesOptions>,
) -> Result<HashFilesResult> {
    let options = hash::HashFilesOptions {
        include_ignored: options.unwrap_or_default().include_ignored.unwrap_or(false),
    };
    hash::hash_files(Path::new(root), globs, &options)
        .map(Into::into)
        .map_err(to_js)
}

/// Computes `hashFiles` off the JS thread.
pub struct HashFilesTask {
    root: String,
    globs: Vec<String>,
    options: Option<HashFilesOptions>,
}

impl Task for HashFilesTask {
    type Output = HashFilesResult;
    type JsValue = HashFilesResult;
    fn compute(&mut self) -> Result<HashFilesResult> {
        super::unwind_safe(|| run_hash_files(&self.root, &self.globs, self.options.take()))
    }
    fn resolve(&mut self, _env: Env, output: HashFilesResult) -> Result<HashFilesResult> {
        Ok(output)
    }
}

/// `hashFiles` off the JS thread (the walk and hashing run on native threads; the promise settles
/// on the event loop).
#[napi(ts_return_type = "Promise<HashFilesResult>", catch_unwind)]
pub fn hash_files_async(
    root: String,
    globs: Vec<String>,
    options: Option<HashFilesOptions>,
) -> AsyncTask<HashFilesTask> {
    AsyncTask::new(HashFilesTask {
        root,
        globs,
        options,
    })
}
