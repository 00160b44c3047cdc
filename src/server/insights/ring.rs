//! Counts per minute over the last [`RING_MINUTES`], in a fixed ring of atomic buckets: recording
//! is an atomic add into the current minute's bucket (a short mutex only when a bucket starts a new
//! minute, once per minute); memory is fixed (about 0.8 MiB) whatever the traffic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// How far back the ring keeps per-minute counts: 7 days.
pub const RING_MINUTES: u64 = 7 * 24 * 60;

/// What each minute counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Field {
    Hits = 0,
    Misses,
    Stored,
    AlreadyStored,
    BytesSent,
    BytesReceived,
    Refused,
    Errors,
    /// Milliseconds saved by cache hits, from run reports (at the minute they arrived).
    SavedMs,
}

/// Number of [`Field`]s.
pub const FIELDS: usize = 9;

/// The fields in order, with their names in the summary and the snapshot.
pub const FIELD_NAMES: [&str; FIELDS] = [
    "hits",
    "misses",
    "stored",
    "alreadyStored",
    "bytesSent",
    "bytesReceived",
    "refused",
    "errors",
    "savedMs",
];

/// Counts of one minute.
pub type Counts = [u64; FIELDS];

struct Bucket {
    /// The minute (since the Unix epoch) this bucket counts; `u64::MAX`: never used.
    minute: AtomicU64,
    values: [AtomicU64; FIELDS],
}

/// The ring of per-minute buckets.
pub struct Ring {
    buckets: Box<[Bucket]>,
    /// Held while a bucket is cleared for a new minute.
    roll: Mutex<()>,
}

impl Default for Ring {
    fn default() -> Self {
        Ring::new()
    }
}

impl Ring {
    pub fn new() -> Ring {
        Ring {
            buckets: (0..RING_MINUTES)
                .map(|_| Bucket {
                    minute: AtomicU64::new(u64::MAX),
                    values: std::array::from_fn(|_| AtomicU64::new(0)),
                })
                .collect(),
            roll: Mutex::new(()),
        }
    }

    fn bucket(&self, minute: u64) -> &Bucket {
        // RING_MINUTES buckets: the index is in range.
        &self.buckets[(minute % RING_MINUTES) as usize]
    }

    /// Adds `n` to `field` of `minute`.
    pub fn add(&self, minute: u64, field: Field, n: u64) {
        let b = self.bucket(minute);
        if b.minute.load(Ordering::Acquire) != minute && !self.start(b, minute) {
            return;
        }
        add_saturating(&b.values[field as usize], n);
    }

    /// Makes `b` count `minute` (cleared first) unless it already counts a later minute (a
    /// clock that went back by days): false then, and the count is dropped.
    fn start(&self, b: &Bucket, minute: u64) -> bool {
        let _held = self.roll.lock().unwrap_or_else(|p| p.into_inner());
        let current = b.minute.load(Ordering::Acquire);
        if current == minute {
            return true;
        }
        if current != u64::MAX && current > minute {
            return false;
        }
        for v in &b.values {
            v.store(0, Ordering::Relaxed);
        }
        b.minute.store(minute, Ordering::Release);
        true
    }

    /// The counts of `minute` (zeros when the ring holds no count for it).
    pub fn get(&self, minute: u64) -> Counts {
        let b = self.bucket(minute);
        if b.minute.load(Ordering::Acquire) != minute {
            return [0; FIELDS];
        }
        std::array::from_fn(|i| b.values[i].load(Ordering::Relaxed))
    }

    /// Sums of `points` consecutive spans of `step` minutes ending with the minute `last`
    /// (oldest first); minutes older than the ring are zeros.
    pub fn series(&self, last: u64, step: u64, points: u64) -> Vec<Counts> {
        let step = step.max(1);
        let first = (last + 1).saturating_sub(step.saturating_mul(points));
        (0..points)
            .map(|p| {
                let mut sum = [0u64; FIELDS];
                let from = first.saturating_add(p.saturating_mul(step));
                for m in from..from.saturating_add(step) {
                    if last.saturating_sub(m) >= RING_MINUTES {
                        continue;
                    }
                    for (s, v) in sum.iter_mut().zip(self.get(m)) {
                        *s = s.saturating_add(v);
                    }
                }
                sum
            })
            .collect()
    }

    /// Every minute within the ring's reach of `now` that counted something: (minute, counts),
    /// oldest first (for the snapshot).
    pub fn nonzero(&self, now: u64) -> Vec<(u64, Counts)> {
        let first = (now + 1).saturating_sub(RING_MINUTES);
        (first..=now)
            .filter_map(|m| {
                let c = self.get(m);
                c.iter().any(|v| *v > 0).then_some((m, c))
            })
            .collect()
    }

    /// Sets the counts of `minute` (loading a snapshot before serving); ignored when the minute
    /// is not within the ring's reach of `now` or lies in the future.
    pub fn load(&self, now: u64, minute: u64, counts: &Counts) {
        if minute > now || now - minute >= RING_MINUTES {
            return;
        }
        let b = self.bucket(minute);
        let _held = self.roll.lock().unwrap_or_else(|p| p.into_inner());
        if b.minute.load(Ordering::Acquire) != minute {
            for v in &b.values {
                v.store(0, Ordering::Relaxed);
            }
        }
        for (v, n) in b.values.iter().zip(counts) {
            add_saturating(v, *n);
        }
        b.minute.store(minute, Ordering::Release);
    }
}

/// `a += n`, staying at `u64::MAX` instead of wrapping (counts can be loaded from a snapshot or
/// come from a run report's numbers).
pub(crate) fn add_saturating(a: &std::sync::atomic::AtomicU64, n: u64) {
    let old = a.fetch_add(n, Ordering::Relaxed);
    if old.checked_add(n).is_none() {
        a.store(u64::MAX, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_minute_and_forgets_after_seven_days() {
        let ring = Ring::new();
        let t0 = 29_000_000; // a minute in 2025
        ring.add(t0, Field::Hits, 1);
        ring.add(t0, Field::Hits, 2);
        ring.add(t0, Field::BytesSent, 1024);
        ring.add(t0 + 1, Field::Misses, 1);
        assert_eq!(ring.get(t0)[Field::Hits as usize], 3);
        assert_eq!(ring.get(t0)[Field::BytesSent as usize], 1024);
        assert_eq!(ring.get(t0 + 1)[Field::Misses as usize], 1);
        assert_eq!(ring.get(t0 - 1), [0; FIELDS]);
        // The same bucket a ring later: the old minute is gone, the new one starts at zero.
        let later = t0 + RING_MINUTES;
        ring.add(later, Field::Hits, 5);
        assert_eq!(ring.get(t0), [0; FIELDS]);
        assert_eq!(ring.get(later)[Field::Hits as usize], 5);
        // A clock gone back by days: the count is dropped, the newer minute kept.
        ring.add(t0, Field::Hits, 7);
        assert_eq!(ring.get(later)[Field::Hits as usize], 5);
        assert_eq!(ring.get(t0), [0; FIELDS]);
    }

    #[test]
    fn series_sums_spans_oldest_first() {
        let ring = Ring::new();
        let now = 29_000_000;
        for m in 0..120 {
            ring.add(now - m, Field::Stored, 1);
        }
        let s = ring.series(now, 60, 3);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0][Field::Stored as usize], 0);
        assert_eq!(s[1][Field::Stored as usize], 60);
        assert_eq!(s[2][Field::Stored as usize], 60);
        let nz = ring.nonzero(now);
        assert_eq!(nz.len(), 120);
        assert_eq!(nz[0].0, now - 119);
        let copy = Ring::new();
        for (m, c) in &nz {
            copy.load(now, *m, c);
        }
        copy.load(now, now + 5, &[1; FIELDS]);
        copy.load(now, now - RING_MINUTES, &[1; FIELDS]);
        assert_eq!(copy.nonzero(now), nz);
    }

    #[test]
    fn concurrent_adds_are_all_counted() {
        let ring = std::sync::Arc::new(Ring::new());
        let now = 29_000_000;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let ring = ring.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        ring.add(now + i % 3, Field::Hits, 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let total: u64 = (0..3).map(|i| ring.get(now + i)[0]).sum();
        assert_eq!(total, 40_000);
    }
}
