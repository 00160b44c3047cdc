//! Connection threads: every connection is served from start to end on one thread that runs its
//! own single-threaded runtime, the connections spread over the threads in turn.
//!
//! Why: on a shared multi-threaded runtime a request's steps (the socket becoming readable, the
//! handler, the response write) wake tasks across threads, and on a loaded machine those wakeups
//! and context switches cost more than the request itself. Pinned to one thread, a connection's
//! wakeups stay on it (as with nginx's workers). Work that may block (a cold file read, a hashing
//! pass, an fsync) still goes to the blocking pool of that thread's runtime.
//!
//! The threads are made once per process, when the first server starts ([`start`]), as many as
//! the machine has CPUs (at most [`MAX_THREADS`]), and live as long as it; a server that cannot
//! make them serves its connections on the runtime it runs on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use tokio::runtime::{Builder, Handle};

/// Most connection threads a process makes.
pub const MAX_THREADS: usize = 16;
/// Blocking threads of all connection threads' runtimes together (file reads, hashing passes,
/// fsyncs of concurrent uploads), split evenly: bounded, so a burst of connections does not leave
/// hundreds of threads behind.
const BLOCKING_THREADS: usize = 64;

struct Pool {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// Makes the connection threads, once per process (called where a server starts, outside any
/// runtime's async context). A thread that cannot be made is left out; with none, connections
/// are served on the runtime the server runs on ([`next`] answers `None`), and a later start
/// tries again.
pub(super) fn start() {
    if POOL.get().is_some() {
        return;
    }
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, MAX_THREADS);
    let handles: Vec<Handle> = (0..threads).filter_map(|i| spawn(i, threads)).collect();
    if !handles.is_empty() {
        // A concurrent start may have won: its pool serves, these threads idle.
        let _ = POOL.set(Pool {
            handles,
            next: AtomicUsize::new(0),
        });
    }
}

/// One connection thread: its runtime is built on the thread itself (so that a failure never
/// drops a runtime where that is not allowed) and its handle sent back.
fn spawn(i: usize, threads: usize) -> Option<Handle> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("nx-open-cache-conn-{i}"))
        .spawn(move || {
            let runtime = Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads((BLOCKING_THREADS / threads).max(4))
                .thread_name("nx-open-cache-io")
                .build();
            match runtime {
                Ok(runtime) => {
                    let _ = tx.send(Some(runtime.handle().clone()));
                    runtime.block_on(std::future::pending::<()>())
                }
                Err(_) => {
                    let _ = tx.send(None);
                }
            }
        })
        .ok()?;
    rx.recv().ok().flatten()
}

/// The runtime that serves the next connection; `None` when no connection thread exists.
pub(super) fn next() -> Option<&'static Handle> {
    let pool = POOL.get()?;
    let i = pool.next.fetch_add(1, Ordering::Relaxed) % pool.handles.len();
    pool.handles.get(i)
}
