//! Bindings for archives (`crate::archive`): `pack` / `unpack` and their `Async` forms.

use crate::archive;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::path::{Path, PathBuf};

/// Options of `pack`.
#[napi(object)]
#[derive(Clone)]
pub struct PackOptions {
    /// The directory the paths are relative to.
    pub root: String,
    /// Nx output entries relative to `root`: paths, directories and globs (with `!` negations),
    /// expanded exactly as Nx's `expandOutputs`; entries that match nothing are skipped.
    pub entries: Option<Vec<String>>,
    /// Explicit relative paths of files, symlinks or directories (walked). A missing one is an
    /// error.
    pub files: Option<Vec<String>>,
    /// The task's terminal output (stored as the `terminalOutput` entry).
    pub terminal_output: String,
    /// The task's exit code (stored as the `code` entry, 4 bytes big-endian): a whole number of
    /// 0..=4294967295; anything else throws, naming `code`.
    pub code: f64,
    /// `zstd` (default: tar + zstd, multi-threaded) or `nx` (tar.gz level 6, what Nx's own
    /// remote-cache client reads and writes).
    pub format: Option<String>,
    /// Compression level: zstd 1..=22 (default 6); gzip 0..=9 for `nx` (default 6).
    pub level: Option<f64>,
    /// zstd worker threads, 1..=256 (default: the number of CPUs).
    pub threads: Option<f64>,
    /// Write the archive to this file (atomically: temporary file, then rename) instead of
    /// returning it.
    pub output: Option<String>,
}

/// What `unpack` restored.
#[napi(object)]
pub struct UnpackResult {
    /// Every restored path (files, directories, symlinks), relative to `dest`, `/`-separated,
    /// sorted.
    pub files: Vec<String>,
    /// The terminal output, or null when the archive has none.
    pub terminal_output: Option<String>,
    /// The task's exit code.
    pub code: u32,
    /// `zstd` or `nx`, detected from the archive's magic bytes.
    pub format: String,
}

fn to_js(e: archive::Error) -> Error {
    Error::new(Status::GenericFailure, e.to_string())
}

fn core_options(o: &PackOptions) -> Result<archive::PackOptions> {
    let format = match &o.format {
        Some(f) => {
            archive::Format::parse(f).map_err(|e| Error::new(Status::InvalidArg, e.to_string()))?
        }
        None => archive::Format::default(),
    };
    let invalid = |e: archive::Error| Error::new(Status::InvalidArg, e.to_string());
    Ok(archive::PackOptions {
        root: PathBuf::from(&o.root),
        files: o.files.clone().unwrap_or_default(),
        entries: o.entries.clone().unwrap_or_default(),
        terminal_output: o.terminal_output.clone(),
        code: archive::code_from_number(o.code).map_err(invalid)?,
        format,
        level: o
            .level
            .map(archive::level_from_number)
            .transpose()
            .map_err(invalid)?,
        threads: o
            .threads
            .map(archive::threads_from_number)
            .transpose()
            .map_err(invalid)?,
    })
}

fn run_pack(o: &PackOptions) -> Result<Option<Vec<u8>>> {
    let core = core_options(o)?;
    match &o.output {
        Some(out) => {
            archive::pack_to_file(&core, Path::new(out)).map_err(to_js)?;
            Ok(None)
        }
        None => archive::pack_to_vec(&core).map(Some).map_err(to_js),
    }
}

/// Packs the outputs plus the terminal output and exit code into one reproducible archive (same
/// inputs, same bytes). Returns the archive, or null when `output` is given (the file is written).
/// Throws an error naming the path and the reason.
#[napi(catch_unwind)]
pub fn pack(options: PackOptions) -> Result<Option<Buffer>> {
    Ok(run_pack(&options)?.map(Buffer::from))
}

/// Runs `pack` off the JS thread.
pub struct PackTask {
    options: PackOptions,
}

impl Task for PackTask {
    type Output = Option<Vec<u8>>;
    type JsValue = Option<Buffer>;
    fn compute(&mut self) -> Result<Self::Output> {
        super::unwind_safe(|| run_pack(&self.options))
    }
    fn resolve(&mut self, _env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(output.map(Buffer::from))
    }
}

/// `pack` off the JS thread (libuv pool); resolves to the archive, or null when `output` is given.
#[napi(ts_return_type = "Promise<Buffer | null>", catch_unwind)]
pub fn pack_async(options: PackOptions) -> AsyncTask<PackTask> {
    AsyncTask::new(PackTask { options })
}

fn run_unpack(archive: &Either<Buffer, String>, dest: &str) -> Result<UnpackResult> {
    let u = match archive {
        Either::A(buf) => archive::unpack_bytes(buf, Path::new(dest)),
        Either::B(path) => archive::unpack_file(Path::new(path), Path::new(dest)),
    }
    .map_err(to_js)?;
    Ok(UnpackResult {
        files: u.files,
        terminal_output: u.terminal_output,
        code: u.code,
        format: u.format.as_str().to_owned(),
    })
}

/// Unpacks an archive (a Buffer, or the path of an archive file; zstd or Nx's tar.gz, detected by
/// magic bytes) safely into `dest`: everything is staged beside `dest` and published only once the
/// whole archive has been read and checked, so a refused, truncated or corrupt archive leaves
/// `dest` untouched. Refuses `..`, absolute paths, symlink escapes, hard links, devices and FIFOs
/// with an error naming the entry and the reason.
#[napi(catch_unwind)]
pub fn unpack(archive: Either<Buffer, String>, dest: String) -> Result<UnpackResult> {
    run_unpack(&archive, &dest)
}

/// Runs `unpack` off the JS thread.
pub struct UnpackTask {
    archive: Either<Buffer, String>,
    dest: String,
}

impl Task for UnpackTask {
    type Output = UnpackResult;
    type JsValue = UnpackResult;
    fn compute(&mut self) -> Result<Self::Output> {
        super::unwind_safe(|| run_unpack(&self.archive, &self.dest))
    }
    fn resolve(&mut self, _env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(output)
    }
}

/// `unpack` off the JS thread (libuv pool).
#[napi(ts_return_type = "Promise<UnpackResult>", catch_unwind)]
pub fn unpack_async(archive: Either<Buffer, String>, dest: String) -> AsyncTask<UnpackTask> {
    AsyncTask::new(UnpackTask { archive, dest })
}
