//! Bindings for hashing (`crate::hash`): Nx-identical `hashArray` / `hashFile`, and `hashFiles`.

use crate::hash;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::fmt::Write as _;
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

// The type of `hashFiles`' result, for index.d.ts; the value is built by `JsHashedFiles`.
/// The result of `hashFiles`.
#[napi(object)]
pub struct HashFilesResult {
    /// `hashArray(files.map(f => f.path + '\0' + f.hash))`: each entry is the relative path, a NUL
    /// character and the decimal file hash.
    pub hash: String,
    /// Sorted by path (UTF-8 byte order).
    pub files: Vec<FileHash>,
}

/// `hashFiles`' result on its way to JS: converted to a [`HashFilesResult`]-shaped object by
/// [`BUILD_RESULT`] rather than field by field.
pub struct JsHashedFiles(hash::HashedFiles);

/// Builds `hashFiles`' result (`{ hash, files: [{ path, hash }, ...] }`) from the total hash, the
/// file count, the paths joined with NUL (which no path contains) and the file hashes joined with
/// `,`. Two `split`s and object literals in V8 cost a fraction of one N-API call per object, per
/// property and per string (measured on benches/hash.js' 50,000 files: about 5-20 ms instead of
/// about 60 ms on the JS thread).
const BUILD_RESULT: &str = r"(function (hash, count, paths, hashes) {
  const files = [];
  if (count > 0) {
    const p = paths.split('\0');
    const h = hashes.split(',');
    for (let i = 0; i < count; i++) files.push({ path: p[i], hash: h[i] });
  }
  return { hash, files };
})";

impl TypeName for JsHashedFiles {
    fn type_name() -> &'static str {
        "HashFilesResult"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl ToNapiValue for JsHashedFiles {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        let files = val.0.files;
        let count = files.len() as f64;
        let mut paths = Vec::with_capacity(files.iter().map(|f| f.path.len() + 1).sum());
        let mut hashes = String::with_capacity(files.len() * 21);
        for (i, f) in files.iter().enumerate() {
            if i > 0 {
                paths.push(0);
                hashes.push(',');
            }
            paths.extend_from_slice(f.path.as_bytes());
            // Writing to a String cannot fail.
            let _ = write!(hashes, "{}", f.hash);
        }
        drop(files);
        // SAFETY (every call below): `env` is the environment napi handed to this conversion,
        // each pointer/length pair describes a live buffer, and each out-pointer is a local.
        unsafe {
            let script = string(env, BUILD_RESULT.as_bytes())?;
            let mut build = std::ptr::null_mut();
            check_status!(sys::napi_run_script(env, script, &mut build))?;
            let args = [
                string(env, hash::to_decimal(val.0.hash).as_bytes())?,
                f64::to_napi_value(env, count)?,
                string(env, &paths)?,
                string(env, hashes.as_bytes())?,
            ];
            let mut global = std::ptr::null_mut();
            check_status!(sys::napi_get_global(env, &mut global))?;
            let mut result = std::ptr::null_mut();
            check_status!(sys::napi_call_function(
                env,
                global,
                build,
                args.len(),
                args.as_ptr(),
                &mut result
            ))?;
            Ok(result)
        }
    }
}

/// A JS string from UTF-8 bytes: as Latin-1 (one byte per character, no decoding) when they are
/// all ASCII, which paths and hashes almost always are.
///
/// # Safety
/// `env` must be a live napi environment.
unsafe fn string(env: sys::napi_env, bytes: &[u8]) -> Result<sys::napi_value> {
    let mut out = std::ptr::null_mut();
    // SAFETY: the caller passes a live `env`; `bytes` is a live buffer of that length.
    unsafe {
        if bytes.is_ascii() {
            check_status!(sys::napi_create_string_latin1(
                env,
                bytes.as_ptr().cast(),
                bytes.len() as isize,
                &mut out
            ))?;
        } else {
            check_status!(sys::napi_create_string_utf8(
                env,
                bytes.as_ptr().cast(),
                bytes.len() as isize,
                &mut out
            ))?;
        }
    }
    Ok(out)
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
#[napi(ts_return_type = "HashFilesResult", catch_unwind)]
pub fn hash_files(
    root: String,
    globs: Vec<String>,
    options: Option<HashFilesOptions>,
) -> Result<JsHashedFiles> {
    run_hash_files(&root, &globs, options)
}

fn run_hash_files(
    root: &str,
    globs: &[String],
    options: Option<HashFilesOptions>,
) -> Result<JsHashedFiles> {
    let options = hash::HashFilesOptions {
        include_ignored: options.unwrap_or_default().include_ignored.unwrap_or(false),
    };
    hash::hash_files(Path::new(root), globs, &options)
        .map(JsHashedFiles)
        .map_err(to_js)
}

/// Computes `hashFiles` off the JS thread.
pub struct HashFilesTask {
    root: String,
    globs: Vec<String>,
    options: Option<HashFilesOptions>,
}

impl Task for HashFilesTask {
    type Output = JsHashedFiles;
    type JsValue = JsHashedFiles;
    fn compute(&mut self) -> Result<JsHashedFiles> {
        super::unwind_safe(|| run_hash_files(&self.root, &self.globs, self.options.take()))
    }
    fn resolve(&mut self, _env: Env, output: JsHashedFiles) -> Result<JsHashedFiles> {
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
