//! Connection threads: every connection is served from start to end on one thread that runs its
//! own single-threaded runtime, the connections spread over the threads in turn.
//!
//! Why: on a shared multi-threaded runtime a request's steps (the socket becoming readable, the
//! handler, the response write) wake tasks across threads, and on a loaded machine those wakeups
//! and context switches cost more than the request itself. Pinned to one thread, a connection's
//! wakeups stay on it (as with nginx's workers). Work that may block (a cold file read, a hashing
//! pass, an fsync) still goes to the blocking pool of that thread's runtime.
//!
//! The threads are made once per process, as many as the machine has CPUs (at most
//! [`MAX_THREADS`]), and live as long as it; a server that cannot make them serves its
//! connections on the runtime it runs on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use tokio::runtime::{Builder, Handle};

/// Most connection threads a process makes.
pub const MAX_THREADS: usize = 16;
/// Blocking threads of each connection thread's runtime.
const BLOCKING_THREADS_EACH: usize = 32;

struct Pool {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

static POOL: OnceLock<Option<Pool>> = OnceLock::new();

/// The runtime that serves the next connection; `None` when the threads could not be made.
pub(super) fn next() -> Option<&'static Handle> {
    let pool = POOL.get_or_init(start).as_ref()?;
    let i = pool.next.fetch_add(1, Ordering::Relaxed) % pool.handles.len();
    pool.handles.get(i)
}

fn start() -> Option<Pool> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, MAX_THREADS);
    let mut handles = Vec::with_capacity(threads);
    for i in 0..threads {
        let runtime = Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(BLOCKING_THREADS_EACH)
            .thread_name("nx-open-cache-io")
            .build()
            .ok()?;
        handles.push(runtime.handle().clone());
        std::thread::Builder::new()
            .name(format!("nx-open-cache-conn-{i}"))
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .ok()?;
    }
    Some(Pool {
        handles,
        next: AtomicUsize::new(0),
    })
}
