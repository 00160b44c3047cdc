//! Bindings for output collection (`expandOutputs`, `getFilesForOutputs`, batch and async forms).

use crate::outputs;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::path::PathBuf;

fn to_js(e: outputs::OutputsError) -> Error {
    Error::new(Status::InvalidArg, e.to_string())
}

/// Expands output entries (relative to `root`) into the existing paths they name, exactly as Nx's
/// `expandOutputs`: without any glob entry, the existing entries verbatim and in order; otherwise
/// every path the globs select (directories too, unless an entry is a `!` negation), sorted.
/// Throws, naming the glob, on an invalid glob.
#[napi(catch_unwind)]
pub fn expand_outputs(root: String, entries: Vec<String>) -> Result<Vec<String>> {
    outputs::expand_outputs(&PathBuf::from(root), &entries).map_err(to_js)
}

/// Computes `expandOutputs` off the JS thread.
pub struct ExpandOutputsTask {
    root: PathBuf,
    entries: Vec<String>,
}

impl Task for ExpandOutputsTask {
    type Output = Vec<String>;
    type JsValue = Vec<String>;
    fn compute(&mut self) -> Result<Vec<String>> {
        super::unwind_safe(|| outputs::expand_outputs(&self.root, &self.entries).map_err(to_js))
    }
    fn resolve(&mut self, _env: Env, output: Vec<String>) -> Result<Vec<String>> {
        Ok(output)
    }
}

/// `expandOutputs` on the libuv thread pool.
#[napi(ts_return_type = "Promise<Array<string>>", catch_unwind)]
pub fn expand_outputs_async(root: String, entries: Vec<String>) -> AsyncTask<ExpandOutputsTask> {
    AsyncTask::new(ExpandOutputsTask {
        root: PathBuf::from(root),
        entries,
    })
}

/// The files output entries (relative to `root`) name, sorted and deduplicated: what Nx's
/// `getFilesForOutputsBatch(root, [entries])[0]` returns. Throws, naming the glob, on an invalid
/// glob.
#[napi(catch_unwind)]
pub fn get_files_for_outputs(root: String, entries: Vec<String>) -> Result<Vec<String>> {
    outputs::get_files_for_outputs(&PathBuf::from(root), &entries).map_err(to_js)
}

/// Computes `getFilesForOutputs` off the JS thread.
pub struct GetFilesForOutputsTask {
    root: PathBuf,
    entries: Vec<String>,
}

impl Task for GetFilesForOutputsTask {
    type Output = Vec<String>;
    type JsValue = Vec<String>;
    fn compute(&mut self) -> Result<Vec<String>> {
        super::unwind_safe(|| {
            outputs::get_files_for_outputs(&self.root, &self.entries).map_err(to_js)
        })
    }
    fn resolve(&mut self, _env: Env, output: Vec<String>) -> Result<Vec<String>> {
        Ok(output)
    }
}

/// `getFilesForOutputs` on the libuv thread pool.
#[napi(ts_return_type = "Promise<Array<string>>", catch_unwind)]
pub fn get_files_for_outputs_async(
    root: String,
    entries: Vec<String>,
) -> AsyncTask<GetFilesForOutputsTask> {
    AsyncTask::new(GetFilesForOutputsTask {
        root: PathBuf::from(root),
        entries,
    })
}

/// `getFilesForOutputs` for many tasks at once, in parallel: one sorted file list per entry list,
/// in order, exactly as Nx's `getFilesForOutputsBatch`. Throws on the first invalid glob.
#[napi(catch_unwind)]
pub fn get_files_for_outputs_batch(
    root: String,
    entries_batch: Vec<Vec<String>>,
) -> Result<Vec<Vec<String>>> {
    outputs::get_files_for_outputs_batch(&PathBuf::from(root), &entries_batch).map_err(to_js)
}

/// Computes `getFilesForOutputsBatch` off the JS thread.
pub struct GetFilesForOutputsBatchTask {
    root: PathBuf,
    batch: Vec<Vec<String>>,
}

impl Task for GetFilesForOutputsBatchTask {
    type Output = Vec<Vec<String>>;
    type JsValue = Vec<Vec<String>>;
    fn compute(&mut self) -> Result<Vec<Vec<String>>> {
        super::unwind_safe(|| {
            outputs::get_files_for_outputs_batch(&self.root, &self.batch).map_err(to_js)
        })
    }
    fn resolve(&mut self, _env: Env, output: Vec<Vec<String>>) -> Result<Vec<Vec<String>>> {
        Ok(output)
    }
}

/// `getFilesForOutputsBatch` on the libuv thread pool.
#[napi(ts_return_type = "Promise<Array<Array<string>>>", catch_unwind)]
pub fn get_files_for_outputs_batch_async(
    root: String,
    entries_batch: Vec<Vec<String>>,
) -> AsyncTask<GetFilesForOutputsBatchTask> {
    AsyncTask::new(GetFilesForOutputsBatchTask {
        root: PathBuf::from(root),
        batch: entries_batch,
    })
}
