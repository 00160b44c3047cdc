//! The tokio runtime the native servers run on: created once, off the JS thread.

use std::sync::OnceLock;
use tokio::runtime::{Builder, Runtime};

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// Most malloc arenas of a `serve` process (glibc): by default each thread that allocates may get
/// an arena of its own (up to 8 per core), whose freed memory stays resident; with the blocking
/// pool's threads that was tens of MiB of peak RSS under upload load.
const MALLOC_ARENAS: i32 = 2;

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

/// Caps glibc's malloc arenas at [`MALLOC_ARENAS`], best effort: for `nx-open-cache serve` only
/// (never in a build's process, whose allocator is the user's), called before its runtime starts,
/// and not when the user set the limit (`MALLOC_ARENA_MAX`, or `arena_max` in `GLIBC_TUNABLES`).
/// In a process that already made more than 8 arenas glibc has fixed its limit and this changes
/// nothing.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tuned = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max"));
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() && !tuned {
            // SAFETY: mallopt sets one allocator parameter (M_ARENA_MAX takes any positive int).
            // glibc reads it without a lock when a thread picks an arena; a racing reader sees
            // the old or the new limit, both valid.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
            }
        }
    }
}
