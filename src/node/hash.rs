//! Bindings for hashing (`crate::hash`): Nx-identical `hashArray` / `hashFile`, and `hashFiles`.

use crate::hash;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::cell::RefCell;
use std::ffi::c_void;
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

/// Evaluates (once per napi environment, see [`builder`]) to the function that builds
/// `hashFiles`' result (`{ hash, files: [{ path, hash }, ...] }`) from the total hash, the file
/// count, the paths joined with NUL (which no path contains) and the file hashes joined with `,`.
/// Two `split`s and object literals in V8 cost a fraction of one N-API call per object, per
/// property and per string (measured on benches/hash.js' 50,000 files: about 5-20 ms instead of
/// about 60 ms on the JS thread). `Array`, `Reflect.apply` and `String.prototype.split` are taken
/// when the function is compiled, and the array is filled by index rather than `push`, so code
/// that replaces them later does not change the result (code that ran before the first
/// `hashFiles` call of the environment could still have).
const BUILD_RESULT: &str = r"(function () {
  'use strict';
  const NewArray = Array;
  const apply = Reflect.apply;
  const split = String.prototype.split;
  return function buildHashFilesResult(hash, count, paths, hashes) {
    const files = new NewArray(count);
    if (count > 0) {
      const p = apply(split, paths, ['\0']);
      const h = apply(split, hashes, [',']);
      for (let i = 0; i < count; i++) files[i] = { path: p[i], hash: h[i] };
    }
    return { hash, files };
  };
})()";

/// V8's longest string, in UTF-16 code units (`v8::String::kMaxLength` on 64-bit builds).
const MAX_JS_STRING: usize = (1 << 29) - 24;

thread_local! {
    /// The compiled [`BUILD_RESULT`] function of each napi environment on this thread (Node runs
    /// an environment on one thread, the main one or a worker's), keyed by the environment's
    /// address; an environment cleanup hook removes the entry before that address can be reused.
    static BUILDERS: RefCell<Vec<(usize, sys::napi_ref)>> = const { RefCell::new(Vec::new()) };
}

/// The [`BUILD_RESULT`] function of `env`, compiled on the environment's first call.
///
/// # Safety
/// `env` must be a live napi environment, used on its own thread.
unsafe fn builder(env: sys::napi_env) -> Result<sys::napi_value> {
    let key = env as usize;
    let cached = BUILDERS.with(|b| b.borrow().iter().find(|(e, _)| *e == key).map(|e| e.1));
    // SAFETY (every call below): the caller passes a live `env`; each out-pointer is a local.
    unsafe {
        if let Some(reference) = cached {
            let mut build = std::ptr::null_mut();
            check_status!(sys::napi_get_reference_value(env, reference, &mut build))?;
            if !build.is_null() {
                return Ok(build);
            }
        }
        let script = string(env, BUILD_RESULT.as_bytes())?;
        let mut build = std::ptr::null_mut();
        check_status!(sys::napi_run_script(env, script, &mut build))?;
        let mut reference = std::ptr::null_mut();
        check_status!(sys::napi_create_reference(env, build, 1, &mut reference))?;
        if cached.is_none() {
            check_status!(sys::napi_add_env_cleanup_hook(
                env,
                Some(forget_builder),
                key as *mut c_void
            ))?;
        }
        BUILDERS.with(|b| {
            let mut b = b.borrow_mut();
            b.retain(|e| e.0 != key);
            b.push((key, reference));
        });
        Ok(build)
    }
}

/// Cleanup hook of an environment that compiled [`BUILD_RESULT`]: forgets its entry (the
/// reference itself is freed with the environment).
unsafe extern "C" fn forget_builder(arg: *mut c_void) {
    let key = arg as usize;
    let _ = BUILDERS.try_with(|b| b.borrow_mut().retain(|e| e.0 != key));
}

/// Refuses a string V8 cannot hold: `chars` UTF-16 code units of `what`, for a result of
/// `count` files whose joined paths take `path_bytes` bytes.
fn check_length(what: &str, chars: usize, count: usize, path_bytes: usize) -> Result<()> {
    if chars > MAX_JS_STRING {
        return Err(Error::new(
            Status::GenericFailure,
            format!(
                "hashFiles: the result for {count} files ({path_bytes} bytes of paths) is too \
                 large to return to JS: its {what} would take {chars} characters, over V8's \
                 limit of {MAX_JS_STRING} for one string (select fewer files)"
            ),
        ));
    }
    Ok(())
}

/// The number of UTF-16 code units of valid UTF-8 `bytes` (its JS string length).
fn utf16_len(bytes: &[u8]) -> usize {
    if bytes.is_ascii() {
        return bytes.len();
    }
    // One unit per character (every byte but continuation bytes), two for those over U+FFFF
    // (4-byte sequences, whose first byte is 0xF0 or more).
    bytes
        .iter()
        .map(|&b| usize::from(b & 0xC0 != 0x80) + usize::from(b >= 0xF0))
        .sum()
}

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
        let count = files.len();
        let mut paths = Vec::with_capacity(files.iter().map(|f| f.path.len() + 1).sum());
        let mut hashes = String::with_capacity(files.len() * 21);
        for (i, f) in files.iter().enumerate() {
            if i > 0 {
                paths.push(0);
                hashes.push(',');
            }
            paths.extend_from_slice(f.path.as_bytes());
            hash::push_decimal(&mut hashes, f.hash);
        }
        drop(files);
        check_length("joined paths", utf16_len(&paths), count, paths.len())?;
        check_length("joined file hashes", hashes.len(), count, paths.len())?;
        // SAFETY (every call below): `env` is the environment napi handed to this conversion,
        // on its thread; each pointer/length pair describes a live buffer, and each out-pointer
        // is a local.
        unsafe {
            let build = builder(env)?;
            let args = [
                string(env, hash::to_decimal(val.0.hash).as_bytes())?,
                f64::to_napi_value(env, count as f64)?,
                string(env, &paths)?,
                string(env, hashes.as_bytes())?,
            ];
            let mut undefined = std::ptr::null_mut();
            check_status!(sys::napi_get_undefined(env, &mut undefined))?;
            let mut result = std::ptr::null_mut();
            check_status!(sys::napi_call_function(
                env,
                undefined,
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
