//! Which connections are open, and room for new ones.
//!
//! Guarantees:
//! - At most [`Caps::total`] connections are open at once, a number kept below the process's
//!   file-descriptor limit (with room for one storage file per connection and a reserve), so
//!   accepting never runs the process out of descriptors.
//! - At most [`Caps::untrusted`] of them have not presented a valid token: new connections (also
//!   during a TLS handshake or a slow request head), anonymous readers and connections whose
//!   requests were all refused. Clients without a token cannot take the room of those with one.
//! - When a new connection needs room, the connection idle the longest (no request in progress)
//!   is closed: an untrusted one first, a trusted one only when the total is reached. A connection
//!   with a request in progress is never closed to make room; when every connection is busy, new
//!   ones wait in the kernel's backlog until one ends.

use super::metrics::ConnectionMetrics;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::Notify;

/// Descriptors left for everything but connections (storage, runtime, Node) when the connection
/// cap is derived from the descriptor limit.
pub const FD_RESERVE: usize = 64;
/// Default ceiling of open connections (lower when the descriptor limit requires).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Fewest connections a server allows, whatever the limits say.
pub const MIN_CONNECTIONS: usize = 2;

/// The connection caps of a running server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub total: usize,
    pub untrusted: usize,
}

impl Caps {
    /// The caps for the configured values (`None`: defaults): the total is at most
    /// [`fd_bound`]; untrusted connections default to half of the total.
    pub fn resolve(total: Option<usize>, untrusted: Option<usize>) -> Caps {
        let total = total
            .unwrap_or(DEFAULT_MAX_CONNECTIONS)
            .min(fd_bound())
            .max(MIN_CONNECTIONS);
        let untrusted = untrusted.unwrap_or(total / 2).clamp(1, total);
        Caps { total, untrusted }
    }
}

/// Connections this process can hold: (soft descriptor limit − descriptors open now −
/// [`FD_RESERVE`]) / 2, one descriptor for the socket and one for a storage file each.
pub fn fd_bound() -> usize {
    let Some(limit) = descriptor_limit() else {
        return DEFAULT_MAX_CONNECTIONS;
    };
    limit
        .saturating_sub(open_descriptors())
        .saturating_sub(FD_RESERVE)
        / 2
}

#[cfg(unix)]
fn descriptor_limit() -> Option<usize> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc != 0 {
        return None;
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        return Some(usize::MAX);
    }
    Some(usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX))
}

#[cfg(not(unix))]
fn descriptor_limit() -> Option<usize> {
    None
}

fn open_descriptors() -> usize {
    ["/proc/self/fd", "/dev/fd"]
        .iter()
        .find_map(|d| std::fs::read_dir(d).ok())
        .map(|entries| entries.count())
        .unwrap_or(0)
}

struct Entry {
    trusted: bool,
    activity: Arc<Activity>,
    /// Asked to close; not asked again until it declines.
    evicting: bool,
    evict: Arc<Notify>,
}

/// What a connection's requests change, kept apart from the registry's lock: beginning and
/// ending a request is two atomic updates on the connection's own thread, no lock shared with
/// the other connection threads.
struct Activity {
    /// Requests in progress (a reserved, not yet started connection counts as one).
    busy: AtomicU32,
    /// When it last became idle, in nanoseconds since the registry's `epoch`.
    idle_since: AtomicU64,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    conns: HashMap<u64, Entry>,
    untrusted: usize,
}

/// The open connections of one server.
pub struct Registry {
    caps: Caps,
    /// What `Activity::idle_since` counts from.
    epoch: Instant,
    inner: Mutex<Inner>,
    /// Told when a connection closes, becomes idle or becomes trusted (the accept loop waits).
    changed: Notify,
    metrics: ConnectionMetrics,
}

impl Registry {
    pub fn new(caps: Caps, metrics: ConnectionMetrics) -> Arc<Registry> {
        Arc::new(Registry {
            caps,
            epoch: Instant::now(),
            inner: Mutex::new(Inner::default()),
            changed: Notify::new(),
            metrics,
        })
    }

    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// Now, as an `Activity::idle_since`.
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The counts stay consistent even if a holder panicked: every update is one statement.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, inner: &Inner) {
        let open = inner.conns.len();
        self.metrics
            .untrusted
            .set(i64::try_from(inner.untrusted).unwrap_or(i64::MAX));
        self.metrics
            .trusted
            .set(i64::try_from(open.saturating_sub(inner.untrusted)).unwrap_or(i64::MAX));
    }

    /// Reserves room for the next connection (untrusted, not started), or, when there is none,
    /// asks the longest-idle connection that may go to close and returns `None`: wait for
    /// [`Registry::changed`] and try again.
    pub fn admit(self: &Arc<Self>) -> Option<Arc<Conn>> {
        let mut inner = self.lock();
        let untrusted_full = inner.untrusted >= self.caps.untrusted;
        if inner.conns.len() < self.caps.total && !untrusted_full {
            let id = inner.next_id;
            inner.next_id += 1;
            let evict = Arc::new(Notify::new());
            let activity = Arc::new(Activity {
                busy: AtomicU32::new(1),
                idle_since: AtomicU64::new(self.now()),
            });
            inner.conns.insert(
                id,
                Entry {
                    trusted: false,
                    activity: activity.clone(),
                    evicting: false,
                    evict: evict.clone(),
                },
            );
            inner.untrusted += 1;
            self.publish(&inner);
            return Some(Arc::new(Conn {
                id,
                registry: self.clone(),
                activity,
                trusted: AtomicBool::new(false),
                evict,
                linger: AtomicBool::new(false),
            }));
        }
        let victim = inner
            .conns
            .values_mut()
            .filter(|e| {
                e.activity.busy.load(Ordering::Acquire) == 0
                    && !e.evicting
                    && !(untrusted_full && e.trusted)
            })
            .min_by_key(|e| (e.trusted, e.activity.idle_since.load(Ordering::Relaxed)));
        if let Some(v) = victim {
            v.evicting = true;
            v.evict.notify_one();
            self.metrics.evicted.inc();
        }
        None
    }

    /// Resolves after a connection closed, became idle or became trusted since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// True when at least half of the untrusted room is taken (new connections then get less
    /// time for their request head).
    pub fn under_pressure(&self) -> bool {
        self.lock().untrusted.saturating_mul(2) >= self.caps.untrusted
    }

    /// (open, untrusted) now.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.conns.len(), inner.untrusted)
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut Entry, &mut usize)) {
        let mut inner = self.lock();
        let Inner {
            conns, untrusted, ..
        } = &mut *inner;
        if let Some(e) = conns.get_mut(&id) {
            f(e, untrusted);
        }
        self.publish(&inner);
        drop(inner);
        self.changed.notify_one();
    }
}

/// One admitted connection; dropping it frees its room.
pub struct Conn {
    id: u64,
    registry: Arc<Registry>,
    activity: Arc<Activity>,
    /// Trusted already: the registry is not asked again.
    trusted: AtomicBool,
    evict: Arc<Notify>,
    linger: AtomicBool,
}

impl Conn {
    /// The connection is accepted and served: it is idle until its first request.
    pub fn started(&self) {
        self.end();
    }

    /// A valid token was presented on this connection (the registry is told once).
    pub fn trust(&self) {
        if self.trusted.swap(true, Ordering::Relaxed) {
            return;
        }
        self.registry.update(self.id, |e, untrusted| {
            if !e.trusted {
                e.trusted = true;
                *untrusted = untrusted.saturating_sub(1);
            }
        });
    }

    /// A request begins; it ends when the guard is dropped (after its response body).
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.activity.busy.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// A request ends (or the reserved connection starts); when none is left in progress the
    /// connection is idle from now, and a wait for room ([`Registry::changed`]) is woken.
    fn end(&self) {
        let a = &self.activity;
        a.idle_since.store(self.registry.now(), Ordering::Relaxed);
        let before = a
            .busy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                Some(b.saturating_sub(1))
            })
            .unwrap_or(0);
        if before <= 1 {
            self.registry.changed.notify_one();
        }
    }

    /// Resolves when the registry asks this connection to close.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }

    /// Answers an eviction request: true (close now) when idle; a busy connection declines and
    /// may be asked again later. A decline wakes a wait for room ([`Registry::changed`]): another
    /// idle connection may be asked instead.
    pub fn accept_eviction(&self) -> bool {
        let mut inner = self.registry.lock();
        match inner.conns.get_mut(&self.id) {
            Some(e) if self.is_busy() => {
                e.evicting = false;
                drop(inner);
                self.registry.changed.notify_one();
                false
            }
            _ => true,
        }
    }

    pub fn is_busy(&self) -> bool {
        self.activity.busy.load(Ordering::Acquire) > 0
    }

    /// The last answer left part of a request body unread: close gently (see `listen`).
    pub fn set_linger(&self) {
        self.linger.store(true, Ordering::Relaxed);
    }

    pub fn lingers(&self) -> bool {
        self.linger.load(Ordering::Relaxed)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        if let Some(e) = inner.conns.remove(&self.id) {
            if !e.trusted {
                inner.untrusted = inner.untrusted.saturating_sub(1);
            }
        }
        self.registry.publish(&inner);
        drop(inner);
        self.registry.changed.notify_one();
    }
}

/// A request in progress on a connection.
pub struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(total: usize, untrusted: usize) -> Arc<Registry> {
        Registry::new(Caps { total, untrusted }, ConnectionMetrics::default())
    }

    fn admit_started(r: &Arc<Registry>) -> Arc<Conn> {
        let c = r.admit().inspect(|c| c.started());
        c.unwrap_or_else(|| panic!("no room: {:?}", r.counts()))
    }

    #[test]
    fn untrusted_room_is_bounded_and_the_longest_idle_goes_first() {
        let r = registry(4, 2);
        let a = admit_started(&r);
        let b = admit_started(&r);
        assert!(r.under_pressure());
        // No room for a third untrusted one: `a` (idle the longest) is asked to close.
        assert!(r.admit().is_none());
        assert!(a.accept_eviction());
        drop(a);
        let c = admit_started(&r);
        // `b` becomes trusted: untrusted room again.
        b.trust();
        let d = admit_started(&r);
        assert_eq!(r.counts(), (3, 2));
        drop((c, d));
        assert_eq!(r.counts(), (1, 0));
        assert_eq!(r.metrics.trusted.get(), 1);
        assert_eq!(r.metrics.evicted.get(), 1);
    }

    #[test]
    fn busy_connections_are_never_evicted() {
        let r = registry(2, 2);
        let a = admit_started(&r);
        let b = admit_started(&r);
        let busy_a = a.begin();
        let busy_b = b.begin();
        assert!(r.admit().is_none());
        assert_eq!(r.metrics.evicted.get(), 0);
        drop(busy_b);
        assert!(r.admit().is_none());
        assert_eq!(r.metrics.evicted.get(), 1);
        // `b` started a request between the request and the answer: it declines.
        let again = b.begin();
        assert!(!b.accept_eviction());
        drop((again, busy_a));
        assert!(r.admit().is_none());
        assert_eq!(r.metrics.evicted.get(), 2);
        assert!(b.accept_eviction());
    }

    #[test]
    fn a_declined_eviction_wakes_the_wait_for_room_and_another_idle_one_is_asked() {
        use futures_util::FutureExt;
        let r = registry(2, 2);
        let a = admit_started(&r);
        let b = admit_started(&r);
        // What the starts told is taken: the wait now blocks until something changes.
        let _ = r.changed().now_or_never();
        assert!(r.admit().is_none());
        let (asked, other) = if a.evicted().now_or_never().is_some() {
            (a, b)
        } else {
            (b, a)
        };
        assert!(r.changed().now_or_never().is_none(), "nothing changed yet");
        // A request began before the asked one answered: it declines, and the wait wakes.
        let busy = asked.begin();
        assert!(!asked.accept_eviction());
        assert!(
            r.changed().now_or_never().is_some(),
            "a decline wakes the wait"
        );
        // Woken, the accept loop asks the other idle connection.
        assert!(r.admit().is_none());
        assert!(other.evicted().now_or_never().is_some());
        assert!(other.accept_eviction());
        assert_eq!(r.metrics.evicted.get(), 2);
        drop((busy, other));
        assert!(r.admit().is_some());
    }

    #[test]
    fn trusted_connections_go_only_when_the_total_is_reached() {
        let r = registry(2, 2);
        let a = admit_started(&r);
        a.trust();
        let b = admit_started(&r);
        assert!(r.admit().is_none());
        // The untrusted `b` is asked first, though `a` has been idle longer.
        assert!(b.accept_eviction());
        drop(b);
        let c = admit_started(&r);
        c.trust();
        assert!(r.admit().is_none());
        assert!(a.accept_eviction());
    }

    #[test]
    fn caps_stay_below_the_descriptor_limit() {
        let bound = fd_bound();
        let caps = Caps::resolve(Some(usize::MAX), None);
        assert!(caps.total <= bound.max(MIN_CONNECTIONS), "{caps:?} {bound}");
        assert_eq!(caps.untrusted, caps.total / 2);
        let caps = Caps::resolve(Some(10), Some(50));
        assert_eq!(caps.untrusted, caps.total);
    }
}
