//! Bindings for `nx-open-cache serve`.

use crate::{runtime, serve};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::collections::HashMap;
use std::sync::Mutex;

/// A running `nx-open-cache serve` server.
#[napi]
pub struct ServerHandle {
    inner: Mutex<Option<serve::RunningServe>>,
    url: String,
    banner: String,
}

#[napi]
impl ServerHandle {
    /// `http://<ip>:<port>` or `https://...`: the value for NX_SELF_HOSTED_REMOTE_CACHE_SERVER
    /// (with the bound port when `--listen` asked for port 0).
    #[napi(getter, catch_unwind)]
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The startup line the server printed (URL, storage, tokens, anonymous access, limits).
    #[napi(getter, catch_unwind)]
    pub fn banner(&self) -> String {
        self.banner.clone()
    }

    /// Stops accepting connections, lets requests in flight finish (bounded grace) and stops
    /// background retention. Calling it again does nothing.
    #[napi(catch_unwind)]
    pub async fn stop(&self) -> Result<()> {
        let taken = {
            let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            guard.take()
        };
        let Some(running) = taken else {
            return Ok(());
        };
        let runtime = runtime::get().map_err(|e| Error::new(Status::GenericFailure, e))?;
        runtime
            .spawn(running.stop())
            .await
            .map_err(|e| Error::new(Status::GenericFailure, format!("server stop failed: {e}")))
    }
}

/// Starts the server from the words after `serve` on the command line and the environment
/// (`NX_OPEN_CACHE_SERVER_*`, cloud credentials); relative paths are taken from the current
/// directory. A configuration mistake throws with code `InvalidArg` and a message naming the
/// option, the value and what is allowed; a failure to start (port in use, bad TLS files, storage
/// not ready with `--require-ready`) throws with code `GenericFailure`.
#[napi(catch_unwind)]
pub fn start_server(args: Vec<String>, env: HashMap<String, String>) -> Result<ServerHandle> {
    let cwd = std::env::current_dir().map_err(|e| {
        Error::new(
            Status::GenericFailure,
            format!("nx-open-cache serve: cannot read the current directory: {e}"),
        )
    })?;
    let config = serve::config::resolve(&args, &env, &cwd)
        .map_err(|e| Error::new(Status::InvalidArg, e.shown_by("serve")))?;
    serve::validate(&config)
        .map_err(|e| Error::new(Status::InvalidArg, format!("nx-open-cache serve: {e}")))?;
    let running = serve::start(&config, &env)
        .map_err(|e| Error::new(Status::GenericFailure, format!("nx-open-cache serve: {e}")))?;
    Ok(ServerHandle {
        url: running.url.clone(),
        banner: running.banner.clone(),
        inner: Mutex::new(Some(running)),
    })
}

/// What `nx-open-cache serve --explain-token` found.
#[napi(object)]
pub struct TokenExplanation {
    /// The lines to print (never the token).
    pub text: String,
    /// The server would accept the token.
    pub accepted: bool,
}

/// `nx-open-cache serve ... --explain-token <jwt|->`: what a server configured by the same words
/// and environment would do with the token. A configuration mistake throws with code
/// `InvalidArg`; `null` when the words hold no `--explain-token`.
#[napi(catch_unwind)]
pub fn explain_token(
    args: Vec<String>,
    env: HashMap<String, String>,
) -> Result<Option<TokenExplanation>> {
    let cwd = std::env::current_dir().map_err(|e| {
        Error::new(
            Status::GenericFailure,
            format!("nx-open-cache serve: cannot read the current directory: {e}"),
        )
    })?;
    match serve::explain::run(&args, &env, &cwd) {
        Ok(found) => Ok(found.map(|e| TokenExplanation {
            text: e.text,
            accepted: e.accepted,
        })),
        Err(Ok(config)) => Err(Error::new(Status::InvalidArg, config.shown_by("serve"))),
        Err(Err(e)) => Err(Error::new(
            Status::InvalidArg,
            format!("nx-open-cache serve: {e}"),
        )),
    }
}

/// The `nx-open-cache serve --help` text: every option with its environment variable and
/// config-file key.
#[napi(catch_unwind)]
pub fn serve_help() -> String {
    serve::config::help()
}
