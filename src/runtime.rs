//! The tokio runtime the native servers run on: created once, off the JS thread.

use std::sync::OnceLock;
use tokio::runtime::{Builder, Runtime};

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The shared runtime (two worker threads: cache traffic is I/O bound).
pub fn get() -> Result<&'static Runtime, String> {
    RUNTIME
        .get_or_init(|| {
            Builder::new_multi_thread()
                .worker_threads(2)
                // Blocking work (file reads, fsyncs) of many concurrent uploads: bounded, so a
                // burst of 64 connections does not leave hundreds of threads behind.
                .max_blocking_threads(64)
                .thread_name("nx-open-cache")
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the nx-open-cache runtime: {e}"))
        })
        .as_ref()
        .map_err(|e| e.clone())
}
