//! Counters for the run summary: hits, misses, stores, bytes, and faults and refusals grouped by
//! root cause.
//!
//! A fault is booked under its cause's key (a [`Cause`](crate::store::Cause) the store gave, or
//! the reason without the hash), so that a misspelled bucket is one line with a request count,
//! not one line per request. Routine refusals (an unsigned object a signing run replaces) are
//! counted apart from refusals and errors.
//!
//! A proxy's counters also keep one [`Event`] per artifact request (hash, operation, outcome,
//! bytes, time, reason), at most [`MAX_EVENTS`] per run (the first ones; later ones are only
//! counted in `events_dropped`), for the plugin's run history. Artifact metadata (keys ending in
//! [`META_SUFFIX`]) is counted apart (`meta_reads`, `meta_writes`): not a hit, miss, store or event.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Keys ending in this hold a stored artifact's metadata (`<hash>-nxoc-meta`), not an artifact.
pub const META_SUFFIX: &str = "-nxoc-meta";
/// Events kept per run; later ones are counted in `events_dropped`.
pub const MAX_EVENTS: usize = 10_000;
/// Longest reason an event keeps.
const MAX_EVENT_REASON_LEN: usize = 200;

/// Whether `key` names an artifact's metadata rather than an artifact.
pub fn is_meta_key(key: &str) -> bool {
    key.ends_with(META_SUFFIX)
}

/// The cache operation of an event.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Get,
    Put,
}

/// How an artifact request ended.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Served (get).
    Hit,
    /// Nothing to serve (get).
    Miss,
    /// Written (put).
    Stored,
    /// The hash was stored already; nothing written (put).
    AlreadyStored,
    /// Not served or not stored: the object or the upload was refused (not a valid artifact, too
    /// large, cannot be opened or checked here...).
    Refused,
    /// A storage fault (or an upload that did not finish).
    Error,
    /// Not stored: the mode or the token does not write (put).
    ReadOnly,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Stored => "stored",
            Outcome::AlreadyStored => "already-stored",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
            Outcome::ReadOnly => "read-only",
        }
    }
}

/// One artifact request of a run.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Event {
    pub hash: String,
    pub op: Op,
    pub outcome: Outcome,
    /// Payload bytes served (hit) or stored (stored); 0 otherwise.
    pub bytes: u64,
    /// Time in the request until its outcome was known, in milliseconds.
    pub millis: u64,
    /// Why (refused, error, read-only, and misses with a cause), in plain words; never a secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What one artifact request did, as the server reports it to [`Stats::request`].
#[derive(Debug, Clone, Copy)]
pub struct Done<'a> {
    /// The request's key (a validated hash; a meta key is counted apart).
    pub hash: &'a str,
    pub op: Op,
    pub outcome: Outcome,
    pub bytes: u64,
    pub millis: u64,
    /// The request reached storage: its time counts in `cache_millis`.
    pub timed: bool,
    pub reason: Option<&'a str>,
}

#[derive(Default, Debug)]
struct Events {
    kept: Vec<Event>,
    dropped: u64,
}

/// Live counters, shared by the request handlers.
#[derive(Default, Debug)]
pub struct Stats {
    /// Keep per-request events (a run's proxy); off for a long-lived server.
    record_events: bool,
    events: Mutex<Events>,
    meta_reads: AtomicU64,
    meta_writes: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    stored: AtomicU64,
    already_stored: AtomicU64,
    refused_writes: AtomicU64,
    bytes_down: AtomicU64,
    bytes_up: AtomicU64,
    cache_millis: AtomicU64,
    errors: Mutex<BTreeMap<String, Faults>>,
    refusals: Mutex<BTreeMap<String, Refusals>>,
}

/// Faults of one cause: its reason, how many requests, whether the store was skipped for it.
#[derive(Default, Debug)]
struct Faults {
    reason: String,
    count: u64,
    skipped: bool,
}

/// Refusals of one reason: how many, and the first few hashes.
#[derive(Default, Debug)]
struct Refusals {
    count: u64,
    hashes: Vec<String>,
    routine: bool,
}

/// A fault to book: what groups it, what the summary says, and whether the store was skipped.
#[derive(Debug, Clone, Copy)]
pub struct Fault<'a> {
    /// Faults with the same key are one entry.
    pub key: &'a str,
    /// Short, without hash or object key.
    pub reason: &'a str,
    /// The guard skipped the store for the rest of the run because of this cause.
    pub skipped: bool,
}

/// One fault cause and how many requests it concerned.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorCount {
    pub reason: String,
    /// Requests that failed for this cause.
    pub count: u64,
    /// The store was skipped for the rest of the run because of it.
    #[serde(default)]
    pub skipped: bool,
}

/// One refusal reason (an object read but not served, an upload not stored), how often, and the
/// first hashes it concerned.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RefusalCount {
    pub reason: String,
    pub count: u64,
    /// At most [`MAX_REFUSAL_HASHES`] hashes, in the order they were refused.
    pub hashes: Vec<String>,
    /// Part of normal operation (e.g. an unsigned object this signing run replaces): not a
    /// warning, not counted in `refused_count`.
    #[serde(default)]
    pub routine: bool,
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
    /// Routine refusals are not counted here.
    pub refused_count: u64,
    /// Routine refusals (each also a miss): an unsigned object this signing run replaces.
    pub routine_count: u64,
    /// Refusals by reason, routine ones included (marked).
    pub refusals: Vec<RefusalCount>,
    /// Artifact metadata served (`<hash>-nxoc-meta`; not in hits or misses).
    pub meta_reads: u64,
    /// Artifact metadata stored (not in stored).
    pub meta_writes: u64,
    /// One per artifact request, in order, at most [`MAX_EVENTS`] (empty when not recorded).
    pub events: Vec<Event>,
    /// Events not kept because [`MAX_EVENTS`] were kept already.
    pub events_dropped: u64,
}

/// Longest reason kept; the rest is cut (at a word) so one noisy error cannot grow the summary
/// without bound.
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

/// `text` in at most `max` characters: cut at the last word boundary that fits (never mid-word,
/// unless one word is longer than half of `max`), with `…` in place of the rest.
pub fn shorten(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let keep: String = text.chars().take(max.saturating_sub(1)).collect();
    let next_is_break = text
        .chars()
        .nth(keep.chars().count())
        .is_some_and(char::is_whitespace);
    let cut = if next_is_break {
        keep.as_str()
    } else {
        match keep.rfind(char::is_whitespace) {
            Some(i) if keep[..i].chars().count() >= max / 2 => &keep[..i],
            _ => keep.as_str(),
        }
    };
    let cut = cut.trim_end_matches(|c: char| c.is_whitespace() || ",;:(-".contains(c));
    format!("{cut}…")
}

/// `key` cut to [`MAX_REASON_LEN`] characters, or the overflow key when `kept` already holds
/// [`MAX_REASONS`] other keys.
fn bounded_key<V>(kept: &BTreeMap<String, V>, key: &str, overflow: &str) -> String {
    let key = shorten(key, MAX_REASON_LEN);
    if !kept.contains_key(&key) && kept.len() >= MAX_REASONS {
        overflow.to_owned()
    } else {
        key
    }
}

const OTHER_ERRORS: &str = "other errors (too many distinct reasons to list)";
const OTHER_REFUSALS: &str = "other refusals (too many distinct reasons to list)";

impl Stats {
    /// Counters that also keep per-request [`Event`]s (a run's proxy).
    pub fn with_events() -> Stats {
        Stats {
            record_events: true,
            ..Stats::default()
        }
    }

    /// Books one artifact request: its counters (a meta key only in `meta_reads`/`meta_writes`),
    /// its time when it reached storage, and its event. Refusals and faults are booked apart
    /// ([`Stats::refusal`], [`Stats::fault`]).
    pub fn request(&self, done: Done<'_>) {
        if is_meta_key(done.hash) {
            match (done.op, done.outcome) {
                (Op::Get, Outcome::Hit) => {
                    self.meta_reads.fetch_add(1, Ordering::Relaxed);
                }
                (Op::Put, Outcome::Stored) => {
                    self.meta_writes.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
            return;
        }
        match (done.op, done.outcome) {
            (_, Outcome::Hit) => self.hit(done.bytes),
            (Op::Get, _) => self.miss(),
            (Op::Put, Outcome::Stored) => self.stored(done.bytes),
            (Op::Put, Outcome::AlreadyStored) => self.already_stored(),
            (Op::Put, Outcome::ReadOnly) => self.refused_write(),
            (Op::Put, _) => {}
        }
        if done.timed {
            self.add_time(done.millis);
        }
        if self.record_events {
            let mut events = lock(&self.events);
            if events.kept.len() < MAX_EVENTS {
                let event = Event {
                    hash: done.hash.to_owned(),
                    op: done.op,
                    outcome: done.outcome,
                    bytes: done.bytes,
                    millis: done.millis,
                    reason: done.reason.map(|r| shorten(r, MAX_EVENT_REASON_LEN)),
                };
                events.kept.push(event);
            } else {
                events.dropped += 1;
            }
        }
    }

    /// A number that changes whenever a request was booked (cheap: no copy of the events).
    pub fn traffic(&self) -> u64 {
        [
            &self.hits,
            &self.misses,
            &self.stored,
            &self.already_stored,
            &self.refused_writes,
            &self.bytes_down,
            &self.bytes_up,
            &self.cache_millis,
            &self.meta_reads,
            &self.meta_writes,
        ]
        .iter()
        .fold(0u64, |acc, v| acc.wrapping_add(v.load(Ordering::Relaxed)))
        .wrapping_add(lock(&self.errors).values().map(|f| f.count).sum::<u64>())
        .wrapping_add(lock(&self.refusals).values().map(|r| r.count).sum::<u64>())
    }

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

    /// Records a fault whose reason is its own key. Returns true the first time this reason is
    /// seen (so callers can warn once).
    pub fn error(&self, reason: &str) -> bool {
        self.fault(Fault {
            key: reason,
            reason,
            skipped: false,
        })
    }

    /// Records a fault under its cause. Returns true the first time this cause is seen.
    pub fn fault(&self, fault: Fault<'_>) -> bool {
        let mut errors = lock(&self.errors);
        let key = bounded_key(&errors, fault.key, OTHER_ERRORS);
        let overflow = key == OTHER_ERRORS && fault.key != OTHER_ERRORS;
        let entry = errors.entry(key).or_default();
        if entry.count == 0 {
            entry.reason = if overflow {
                OTHER_ERRORS.to_owned()
            } else {
                shorten(fault.reason, MAX_REASON_LEN)
            };
        }
        entry.count += 1;
        entry.skipped |= fault.skipped;
        entry.count == 1
    }

    /// Records a refusal of `hash` (an object not served or an upload not stored) for `reason`;
    /// `routine` marks one that is part of normal operation. Returns true the first time this
    /// reason is seen.
    pub fn refusal(&self, reason: &str, hash: &str, routine: bool) -> bool {
        let mut refusals = lock(&self.refusals);
        let reason = bounded_key(&refusals, reason, OTHER_REFUSALS);
        let entry = refusals.entry(reason).or_default();
        // Routine only while every refusal of this reason was (as the host merges runs).
        entry.routine = if entry.count == 0 {
            routine
        } else {
            entry.routine && routine
        };
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
                routine: r.routine,
            })
            .collect();
        let mut errors: Vec<ErrorCount> = lock(&self.errors)
            .values()
            .map(|f| ErrorCount {
                reason: f.reason.clone(),
                count: f.count,
                skipped: f.skipped,
            })
            .collect();
        // The cause behind most requests first.
        errors.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
        let (routine, refused): (Vec<_>, Vec<_>) = refusals.iter().partition(|r| r.routine);
        let (events, events_dropped) = {
            let events = lock(&self.events);
            (events.kept.clone(), events.dropped)
        };
        Snapshot {
            meta_reads: self.meta_reads.load(Ordering::Relaxed),
            meta_writes: self.meta_writes.load(Ordering::Relaxed),
            events,
            events_dropped,
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
            refused_count: refused.iter().map(|r| r.count).sum(),
            routine_count: routine.iter().map(|r| r.count).sum(),
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
        assert!(s.refusal("not a valid Nx artifact: not gzip", "h1", false));
        for i in 0..10 {
            assert!(!s.refusal("not a valid Nx artifact: not gzip", &format!("x{i}"), false));
        }
        assert!(s.refusal("encrypted", "h1", false));
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
    fn faults_of_one_cause_are_one_entry_with_a_request_count() {
        let s = Stats::default();
        let bucket = Fault {
            key: "s3-bucket-missing acme",
            reason: "S3 bucket acme-nx-cahce does not exist",
            skipped: false,
        };
        assert!(s.fault(bucket));
        for _ in 0..7 {
            assert!(!s.fault(Fault {
                skipped: true,
                ..bucket
            }));
        }
        assert!(s.error("disk full"));
        let snap = s.snapshot();
        assert_eq!(snap.error_count, 9);
        assert_eq!(
            snap.errors,
            vec![
                ErrorCount {
                    reason: "S3 bucket acme-nx-cahce does not exist".into(),
                    count: 8,
                    skipped: true
                },
                ErrorCount {
                    reason: "disk full".into(),
                    count: 1,
                    skipped: false
                },
            ]
        );
    }

    #[test]
    fn routine_refusals_are_counted_apart() {
        let s = Stats::default();
        for i in 0..3 {
            s.refusal(
                "unsigned, replaced by this signing run",
                &format!("h{i}"),
                true,
            );
        }
        s.refusal("not a valid Nx artifact: not gzip", "h9", false);
        let snap = s.snapshot();
        assert_eq!(
            (snap.routine_count, snap.refused_count, snap.error_count),
            (3, 1, 0)
        );
        assert!(snap.refusals.iter().any(|r| r.routine && r.count == 3));
        // A reason refused once outside routine is not routine, whatever came first.
        s.refusal("unsigned, replaced by this signing run", "h7", false);
        s.refusal("unsigned, replaced by this signing run", "h8", true);
        let snap = s.snapshot();
        assert_eq!((snap.routine_count, snap.refused_count), (0, 6));
    }

    #[test]
    fn shorten_never_cuts_mid_word() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("404 Not Found here", 12), "404 Not…");
        assert_eq!(
            shorten("the bucket does not exist", 20),
            "the bucket does not…"
        );
        let long = "x".repeat(50);
        assert_eq!(shorten(&long, 10).chars().count(), 10);
        let cut = shorten(&"word ".repeat(100), 400);
        assert!(
            cut.ends_with("word…") && cut.chars().count() <= 400,
            "{cut}"
        );
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
