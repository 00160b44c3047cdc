//! Counters for the run summary: hits, misses, stores, bytes and faults grouped by reason.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Live counters, shared by the request handlers.
#[derive(Default, Debug)]
pub struct Stats {
    hits: AtomicU64,
    misses: AtomicU64,
    stored: AtomicU64,
    already_stored: AtomicU64,
    refused_writes: AtomicU64,
    bytes_down: AtomicU64,
    bytes_up: AtomicU64,
    cache_millis: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    refusals: Mutex<BTreeMap<String, Refusals>>,
}

/// Refusals of one reason: how many, and the first few hashes.
#[derive(Default, Debug)]
struct Refusals {
    count: u64,
    hashes: Vec<String>,
}

/// One fault reason and how often it happened.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorCount {
    pub reason: String,
    pub count: u64,
}

/// One refusal reason (an object read but not served, an upload not stored), how often, and the
/// first hashes it concerned.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RefusalCount {
    pub reason: String,
    pub count: u64,
    /// At most [`MAX_REFUSAL_HASHES`] hashes, in the order they were refused.
    pub hashes: Vec<String>,
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Artifacts served to Nx (remote cache hits).
    pub hits: u64,
    /// Lookups that found nothing (including faults turned into misses).
    pub misses: u64,
    /// Artifacts written to storage.
    pub stored: u64,
    /// Writes skipped because the hash was already stored (first writer wins).
    pub already_stored: u64,
    /// Writes refused by the mode (read-only) without touching storage.
    pub refused_writes: u64,
    pub bytes_down: u64,
    pub bytes_up: u64,
    /// Total wall time spent inside cache requests, in milliseconds.
    pub cache_millis: u64,
    pub error_count: u64,
    pub errors: Vec<ErrorCount>,
    /// Objects read but not served, or uploads not stored, because they are not valid artifacts
    /// or cannot be opened or checked here (each also counts as a miss or a failed store).
    pub refused_count: u64,
    pub refusals: Vec<RefusalCount>,
}

/// Longest reason kept; the rest is cut so one noisy error cannot grow the summary without bound.
const MAX_REASON_LEN: usize = 400;
/// Distinct reasons kept; later new reasons are folded into one "other" entry.
const MAX_REASONS: usize = 50;
/// Hashes kept per refusal reason.
pub const MAX_REFUSAL_HASHES: usize = 5;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// `reason` cut to [`MAX_REASON_LEN`] characters, or the overflow reason when `kept` already holds
/// [`MAX_REASONS`] other reasons.
fn bounded_reason<V>(kept: &BTreeMap<String, V>, reason: &str, overflow: &str) -> String {
    let reason: String = reason.chars().take(MAX_REASON_LEN).collect();
    if !kept.contains_key(&reason) && kept.len() >= MAX_REASONS {
        overflow.to_owned()
    } else {
        reason
    }
}

impl Stats {
    pub fn hit(&self, bytes: u64) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        self.bytes_down.fetch_add(bytes, Ordering::Relaxed);
    }
    pub fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }
    pub fn stored(&self, bytes: u64) {
        self.stored.fetch_add(1, Ordering::Relaxed);
        self.bytes_up.fetch_add(bytes, Ordering::Relaxed);
    }
    pub fn already_stored(&self) {
        self.already_stored.fetch_add(1, Ordering::Relaxed);
    }
    pub fn refused_write(&self) {
        self.refused_writes.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add_time(&self, millis: u64) {
        self.cache_millis.fetch_add(millis, Ordering::Relaxed);
    }

    /// Records a fault. Returns true the first time this reason is seen (so callers can warn once).
    pub fn error(&self, reason: &str) -> bool {
        let mut errors = lock(&self.errors);
        let reason = bounded_reason(
            &errors,
            reason,
            "other errors (too many distinct reasons to list)",
        );
        let count = errors.entry(reason).or_insert(0);
        *count += 1;
        *count == 1
    }

    /// Records a refusal of `hash` (an object not served or an upload not stored) for `reason`.
    /// Returns true the first time this reason is seen.
    pub fn refused(&self, reason: &str, hash: &str) -> bool {
        let mut refusals = lock(&self.refusals);
        let reason = bounded_reason(
            &refusals,
            reason,
            "other refusals (too many distinct reasons to list)",
        );
        let entry = refusals.entry(reason).or_default();
        entry.count += 1;
        if entry.hashes.len() < MAX_REFUSAL_HASHES && !entry.hashes.iter().any(|h| h == hash) {
            entry.hashes.push(hash.to_owned());
        }
        entry.count == 1
    }

    pub fn snapshot(&self) -> Snapshot {
        let refusals: Vec<RefusalCount> = lock(&self.refusals)
            .iter()
            .map(|(reason, r)| RefusalCount {
                reason: reason.clone(),
                count: r.count,
                hashes: r.hashes.clone(),
            })
            .collect();
        let errors = lock(&self.errors);
        let errors: Vec<ErrorCount> = errors
            .iter()
            .map(|(reason, count)| ErrorCount {
                reason: reason.clone(),
                count: *count,
            })
            .collect();
        Snapshot {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stored: self.stored.load(Ordering::Relaxed),
            already_stored: self.already_stored.load(Ordering::Relaxed),
            refused_writes: self.refused_writes.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            cache_millis: self.cache_millis.load(Ordering::Relaxed),
            error_count: errors.iter().map(|e| e.count).sum(),
            errors,
            refused_count: refusals.iter().map(|r| r.count).sum(),
            refusals,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_errors_by_reason() {
        let s = Stats::default();
        assert!(s.error("disk full"));
        assert!(!s.error("disk full"));
        assert!(s.error("gone"));
        s.hit(10);
        s.stored(5);
        let snap = s.snapshot();
        assert_eq!(snap.error_count, 3);
        assert_eq!(snap.errors.len(), 2);
        assert_eq!(
            (snap.hits, snap.bytes_down, snap.stored, snap.bytes_up),
            (1, 10, 1, 5)
        );
    }

    #[test]
    fn groups_refusals_by_reason_with_their_first_hashes() {
        let s = Stats::default();
        assert!(s.refused("not a valid Nx artifact: not gzip", "h1"));
        for i in 0..10 {
            assert!(!s.refused("not a valid Nx artifact: not gzip", &format!("x{i}")));
        }
        assert!(s.refused("encrypted", "h1"));
        let snap = s.snapshot();
        assert_eq!(snap.refused_count, 12);
        assert_eq!(snap.error_count, 0, "refusals are not errors");
        let gzip = snap
            .refusals
            .iter()
            .find(|r| r.reason.ends_with("not gzip"))
            .map(|r| (r.count, r.hashes.len(), r.hashes[0].clone()));
        assert_eq!(gzip, Some((11, MAX_REFUSAL_HASHES, "h1".to_owned())));
    }

    #[test]
    fn reasons_are_bounded() {
        let s = Stats::default();
        for i in 0..200 {
            s.error(&format!("reason {i}"));
        }
        let snap = s.snapshot();
        assert_eq!(snap.error_count, 200);
        assert!(snap.errors.len() <= MAX_REASONS + 1);
    }
}
