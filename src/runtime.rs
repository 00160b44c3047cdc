//! The tokio runtime the native servers run on: created once, off the JS thread.

use std::sync::OnceLock;
use tokio::runtime::{Builder, Runtime};

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// Most malloc arenas of a `serve` process (glibc): by default each thread that allocates may get
/// an arena of its own (up to 8 per core), whose freed memory stays resident; with the blocking
/// pool's threads that was tens of MiB of peak RSS under upload load.
const MALLOC_ARENAS: i32 = 2;
/// Allocations of at least this many bytes are mapped on their own (glibc's `M_MMAP_THRESHOLD`)
/// and unmapped when freed. glibc's default threshold starts at 128 KiB and rises to the size of
/// the largest mapped block freed (up to 32 MiB): after one retention run of a large store, its
/// lists (MiBs, gone a second later) were carved from the arenas, whose freed space then stayed
/// resident between the long-lived blocks of requests; RSS grew run after run. Fixed, and above
/// the 256 KiB chunks a GET streams (so those stay in the arenas, reused without a page fault).
const MALLOC_MMAP_THRESHOLD: i32 = 512 * 1024;

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

/// Limits what glibc's malloc keeps resident in a `serve` process, best effort: caps its arenas
/// at [`MALLOC_ARENAS`] and fixes its mmap threshold at [`MALLOC_MMAP_THRESHOLD`]. For
/// `nx-open-cache serve` only (never in a build's process, whose allocator is the user's), called
/// before its runtime starts; a setting the user made (`MALLOC_ARENA_MAX` or `arena_max` in
/// `GLIBC_TUNABLES`, `MALLOC_MMAP_THRESHOLD_` or `mmap_threshold` in `GLIBC_TUNABLES`) is kept.
/// In a process that already made more than 8 arenas glibc has fixed its limit and the arena cap
/// changes nothing.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() && !tunables.contains("arena_max") {
            // SAFETY: mallopt sets one allocator parameter (M_ARENA_MAX takes any positive int).
            // glibc reads it without a lock when a thread picks an arena; a racing reader sees
            // the old or the new limit, both valid.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
            }
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none()
            && !tunables.contains("mmap_threshold")
        {
            // SAFETY: mallopt takes glibc's malloc lock to set the threshold (any value up to
            // 32 MiB is valid) and turns its dynamic adjustment off.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD);
            }
        }
    }
}

/// Gives the free memory of glibc's malloc arenas back to the system (`malloc_trim`): the pages
/// of free chunks, wherever they lie, not only at the top of each heap. For `serve`, after work
/// that allocated much for a short while (a retention run); a no-op elsewhere. Takes each
/// arena's lock while it walks its free chunks (a few ms for tens of MiB): not per request.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the system (madvise) under the arenas' own
    // locks; no pointer of ours is involved.
    unsafe {
        libc::malloc_trim(0);
    }
}
