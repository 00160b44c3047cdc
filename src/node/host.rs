//! Bindings for the cache host (`lib/host.js`) and the hooks' side of its control channel.

use crate::host::{self, client, registry::RunRequest, HostFiles, HostSettings};
use crate::runtime;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};

fn failure(message: String) -> Error {
    Error::new(Status::GenericFailure, message)
}

/// Runs `work` on the shared runtime (where the servers run) and waits for it.
async fn on_runtime<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> Result<T> {
    let runtime = runtime::get().map_err(failure)?;
    runtime
        .spawn(work)
        .await
        .map_err(|e| failure(format!("nx-open-cache host call failed: {e}")))
}

fn files(dir: &str, version: &str) -> HostFiles {
    HostFiles::new(Path::new(dir), version)
}

/// The host's files in a plugin data directory (`<workspace data dir>/nx-open-cache`).
#[napi(object)]
pub struct HostPaths {
    pub lock: String,
    pub info: String,
    pub log: String,
}

#[napi]
pub fn host_paths(dir: String, version: String) -> HostPaths {
    let f = files(&dir, &version);
    HostPaths {
        lock: f.lock.to_string_lossy().into_owned(),
        info: f.info.to_string_lossy().into_owned(),
        log: f.log.to_string_lossy().into_owned(),
    }
}

/// A run registered at the host: where its Nx sends cache traffic.
#[napi(object)]
pub struct HostRun {
    pub run_id: String,
    pub url: String,
    pub token: String,
    pub location: String,
    pub mode: String,
    pub mode_source: String,
}

/// `run` when registered; otherwise `reason`, and `retry` when starting a host (or waiting for
/// one that is starting) and trying again may help.
#[napi(object)]
pub struct HostAttachResult {
    pub run: Option<HostRun>,
    pub retry: bool,
    pub reason: Option<String>,
}

/// Registers a run (`{ id?, workspaceRoot, options, env, argv }`) at the running host.
#[napi]
pub async fn host_attach(
    dir: String,
    version: String,
    request: serde_json::Value,
) -> Result<HostAttachResult> {
    let req: RunRequest = serde_json::from_value(request)
        .map_err(|e| Error::new(Status::InvalidArg, format!("invalid run request: {e}")))?;
    let f = files(&dir, &version);
    let attached = on_runtime(async move { client::attach(&f, &req).await }).await?;
    Ok(match attached {
        Ok(a) => HostAttachResult {
            run: Some(HostRun {
                run_id: a.run_id,
                url: a.url,
                token: a.token,
                location: a.location,
                mode: a.mode,
                mode_source: a.mode_source,
            }),
            retry: false,
            reason: None,
        },
        Err(e) => HostAttachResult {
            run: None,
            retry: e.retry(),
            reason: Some(e.to_string()),
        },
    })
}

/// How ending a run went: `outcome` is `ended` (with `ended`: runId, location, mode, modeSource,
/// startedAt in ms, runs, stats), `deferred` (`open` other runs of an Nx without run ids still
/// run), `unknown` or `no-host`.
#[napi(object)]
pub struct HostEndResult {
    pub outcome: String,
    pub ended: Option<serde_json::Value>,
    pub open: Option<u32>,
}

/// Ends run `id` (null: a run of an Nx without run ids) at the running host.
#[napi]
pub async fn host_end(dir: String, version: String, id: Option<String>) -> Result<HostEndResult> {
    let f = files(&dir, &version);
    let result = on_runtime(async move { client::end(&f, id.as_deref()).await })
        .await?
        .map_err(failure)?;
    let (outcome, ended, open) = match result {
        client::EndResult::Ended(v) => ("ended", Some(v), None),
        client::EndResult::Deferred(n) => {
            ("deferred", None, Some(u32::try_from(n).unwrap_or(u32::MAX)))
        }
        client::EndResult::Unknown => ("unknown", None, None),
        client::EndResult::NoHost => ("no-host", None, None),
    };
    Ok(HostEndResult {
        outcome: outcome.to_owned(),
        ended,
        open,
    })
}

/// The running host's state (pid, version, url, startedAt, runs), or null when none runs.
#[napi]
pub async fn host_status(dir: String, version: String) -> Result<Option<serde_json::Value>> {
    let f = files(&dir, &version);
    on_runtime(async move { client::status(&f).await })
        .await?
        .map_err(failure)
}

/// Asks the running host to exit; false when none runs.
#[napi]
pub async fn host_stop(dir: String, version: String) -> Result<bool> {
    let f = files(&dir, &version);
    on_runtime(async move { client::stop(&f).await })
        .await?
        .map_err(failure)
}

/// Whether this process, or its parent, is the Nx command whose `process.argv` is `argv` (Linux;
/// false elsewhere): the hooks then run where the run lives anyway, and need no host.
#[napi]
pub fn hook_in_nx_command(argv: Vec<String>) -> bool {
    host::liveness::in_nx_command(&argv)
}

/// The cache host itself (what `lib/host.js` runs).
#[napi]
pub struct CacheHost {
    inner: Mutex<Option<host::RunningHost>>,
    stop: Arc<tokio::sync::Notify>,
    url: String,
}

#[napi]
impl CacheHost {
    /// The control channel's URL.
    #[napi(getter)]
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Makes the host exit now (runs still registered are stopped).
    #[napi]
    pub fn stop(&self) {
        self.stop.notify_one();
    }

    /// Resolves with the reason once the host has exited.
    #[napi]
    pub async fn wait(&self) -> Result<String> {
        let taken = {
            let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            guard.take()
        };
        let Some(running) = taken else {
            return Ok("already exited".to_owned());
        };
        on_runtime(running.wait()).await
    }
}

/// Starts the host of a plugin data directory and version; null when another host holds its lock
/// (after waiting a few seconds for an exiting one to release it).
#[napi]
pub fn open_cache_host(dir: String, version: String) -> Result<Option<CacheHost>> {
    let running =
        host::open(HostSettings::new(files(&dir, &version), &version)).map_err(failure)?;
    Ok(running.map(|r| CacheHost {
        stop: r.stopper(),
        url: r.url.clone(),
        inner: Mutex::new(Some(r)),
    }))
}
