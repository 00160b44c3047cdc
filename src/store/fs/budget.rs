//! The size budget of an fs store with a size limit (`serve --max-size`): a running estimate of
//! the directory's size that holds uploads back while it is over, and wakes retention at once.
//!
//! The estimate is the last retention scan's total (objects and temp files of other writers),
//! plus what this process stored since (minus what it deleted, and what the running retention run
//! deleted batch by batch so far), plus the declared size of every upload in flight. An upload is admitted only while the estimate is within the budget, and then
//! counts with its full size at once; so what this process writes never takes the directory more
//! than one upload (the largest admitted, at most the artifact size limit) over the budget. When
//! an upload is not admitted, retention is woken and the upload waits for room (at most
//! [`ADMISSION_WAIT`], then it is refused as "storage full": not stored, the build goes on).
//! Writers outside this process are counted at the next scan. Until the first scan has finished
//! (at start), uploads wait for it.

use super::super::{ErrorKind, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

/// How long an upload waits for retention to make room before it is refused.
pub const ADMISSION_WAIT: Duration = Duration::from_secs(30);

/// A size budget shared by an fs store (its writes) and its retention task.
#[derive(Debug)]
pub struct Budget {
    max: u64,
    wait: Duration,
    usage: Mutex<Usage>,
    /// Wakes the retention task: the estimate went over the budget.
    over: Notify,
    /// Wakes uploads waiting for room.
    room: Notify,
}

#[derive(Debug, Default)]
struct Usage {
    /// The last scan's total; `None` before the first scan finished.
    scanned: Option<u64>,
    /// Stored minus deleted by this process since that scan started.
    since_scan: i64,
    /// Declared sizes of the admitted uploads not finished yet.
    in_flight: u64,
    /// Deleted by the running retention run's batches so far (its scan's total does not know
    /// yet); folded in when the run finishes or the next one starts.
    freed: u64,
    /// While a scan runs: what this process stored and deleted, by object path below the root,
    /// and whether the scan saw the object (so that nothing is counted twice or missed).
    during_scan: Option<HashMap<String, Change>>,
}

#[derive(Debug, Default)]
struct Change {
    bytes: i64,
    seen: bool,
}

impl Change {
    /// Whether the scan's total already reflects this change: an object stored and seen, or one
    /// deleted before the scan could see it.
    fn counted_by_scan(&self) -> bool {
        (self.bytes > 0 && self.seen) || (self.bytes < 0 && !self.seen)
    }
}

impl Usage {
    /// Records `delta` bytes stored (+) or deleted (-) at object path `rel`.
    fn change(&mut self, rel: &str, delta: i64) {
        self.since_scan = self.since_scan.saturating_add(delta);
        if let Some(changes) = &mut self.during_scan {
            let c = changes.entry(rel.to_owned()).or_default();
            c.bytes = c.bytes.saturating_add(delta);
        }
    }

    fn total(&self) -> Option<u64> {
        let settled = self.scanned? as i128 + self.since_scan as i128 - self.freed as i128;
        let total = settled.max(0) as u128 + self.in_flight as u128;
        Some(u64::try_from(total).unwrap_or(u64::MAX))
    }
}

impl Budget {
    /// A budget of `max` bytes.
    pub fn new(max: u64) -> Arc<Budget> {
        Self::with_wait(max, ADMISSION_WAIT)
    }

    /// A budget whose uploads wait at most `wait` for room.
    pub fn with_wait(max: u64, wait: Duration) -> Arc<Budget> {
        Arc::new(Budget {
            max,
            wait,
            usage: Mutex::new(Usage::default()),
            over: Notify::new(),
            room: Notify::new(),
        })
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The current estimate (`None` before the first scan finished).
    pub fn used(&self) -> Option<u64> {
        self.lock().total()
    }

    /// True when the estimate is over the budget.
    pub fn is_over(&self) -> bool {
        self.used().is_some_and(|u| u > self.max)
    }

    fn lock(&self) -> MutexGuard<'_, Usage> {
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits an upload of `bytes` (on disk) once the estimate is within the budget; waits for
    /// retention otherwise. `location` names the store in the refusal.
    pub async fn admit(
        self: &Arc<Self>,
        bytes: u64,
        location: &str,
    ) -> Result<Reservation, StoreError> {
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let used = {
                let mut usage = self.lock();
                match usage.total() {
                    Some(used) if used <= self.max => {
                        usage.in_flight = usage.in_flight.saturating_add(bytes);
                        return Ok(Reservation {
                            budget: self.clone(),
                            bytes,
                        });
                    }
                    other => other,
                }
            };
            if used.is_some() {
                self.over.notify_one();
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Err(self.refusal(used, location));
            }
        }
    }

    fn refusal(&self, used: Option<u64>, location: &str) -> StoreError {
        let state = match used {
            Some(u) => format!(
                "{} of its size limit of {} are used",
                crate::retention::format_bytes(u),
                crate::retention::format_bytes(self.max)
            ),
            None => "its size is not known yet (the first retention scan is running)".to_owned(),
        };
        StoreError::new(
            ErrorKind::Full,
            format!(
                "{location}: {state}, and retention made no room within {} s: not stored",
                self.wait.as_secs()
            ),
        )
    }

    /// This process deleted the object at `rel` (its path below the root), of `bytes`.
    pub fn removed(&self, rel: &str, bytes: u64) {
        self.lock().change(rel, -clamp_i64(bytes));
        self.room.notify_waiters();
    }

    /// A retention scan starts: what was stored until now is folded into the total it replaces,
    /// and changes are recorded by object until it finishes.
    pub fn scan_started(&self) {
        let mut usage = self.lock();
        if let Some(scanned) = usage.scanned {
            let settled = (scanned as i128 + usage.since_scan as i128 - usage.freed as i128).max(0);
            usage.scanned = Some(u64::try_from(settled).unwrap_or(u64::MAX));
        }
        usage.since_scan = 0;
        usage.freed = 0;
        usage.during_scan = Some(HashMap::new());
    }

    /// The running retention run deleted `bytes` more (a batch of objects): counted at once, so
    /// that uploads waiting for room need not wait for the run's end.
    pub fn freed(&self, bytes: u64) {
        let mut usage = self.lock();
        usage.freed = usage.freed.saturating_add(bytes);
        drop(usage);
        self.room.notify_waiters();
    }

    /// The running scan counted the object at `rel` (as it was then).
    pub fn seen(&self, rel: &str) {
        let mut usage = self.lock();
        if let Some(c) = usage.during_scan.as_mut().and_then(|m| m.get_mut(rel)) {
            c.seen = true;
        }
    }

    /// What the estimate will be once the running scan finishes with `on_disk` bytes: the
    /// changes it did not see and the uploads in flight on top (retention evicts by this).
    pub fn projected(&self, on_disk: u64) -> u64 {
        let usage = self.lock();
        let mut settled = on_disk as i128 + usage.since_scan as i128;
        for c in usage.during_scan.iter().flat_map(|m| m.values()) {
            if c.counted_by_scan() {
                settled -= c.bytes as i128;
            }
        }
        let total = settled.max(0) as u128 + usage.in_flight as u128;
        u64::try_from(total).unwrap_or(u64::MAX)
    }

    /// A retention run left `on_disk` bytes (objects, and temp files not of this process'
    /// uploads in flight): the new base of the estimate. A change made during the scan stays
    /// counted on top unless the scan counted it already: an object stored and seen, or one
    /// deleted before the scan could see it. (Races between a change and the scan's look at
    /// that object count it twice: on the safe side, until the next scan.)
    pub fn scan_finished(&self, on_disk: u64) {
        let mut usage = self.lock();
        usage.scanned = Some(on_disk);
        usage.freed = 0;
        for c in usage.during_scan.take().unwrap_or_default().into_values() {
            if c.counted_by_scan() {
                usage.since_scan = usage.since_scan.saturating_sub(c.bytes);
            }
        }
        drop(usage);
        self.room.notify_waiters();
    }

    /// Waits until an upload finds the estimate over the budget.
    pub async fn crossed(&self) {
        self.over.notified().await;
    }
}

fn clamp_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// An admitted upload's share of the budget: released when dropped, kept as stored bytes by
/// [`Reservation::stored`].
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Reservation {
    /// The upload was stored at `rel` (the object's path below the root) with `bytes` on disk.
    pub fn stored(self, rel: &str, bytes: u64) {
        let over = {
            let mut usage = self.budget.lock();
            usage.change(rel, clamp_i64(bytes));
            usage.total().is_some_and(|u| u > self.budget.max)
        };
        if over {
            self.budget.over.notify_one();
        }
        // Drop releases the in-flight share.
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut usage = self.budget.lock();
        usage.in_flight = usage.in_flight.saturating_sub(self.bytes);
        drop(usage);
        self.budget.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn uploads_are_admitted_while_within_the_budget_and_counted_at_once() {
        rt().block_on(async {
            let b = Budget::with_wait(1000, Duration::from_millis(50));
            b.scan_finished(900);
            let first = b.admit(300, "fs /c").await.expect("within the budget");
            assert_eq!(b.used(), Some(1200));
            let err = b.admit(10, "fs /c").await.expect_err("over the budget");
            assert_eq!(err.kind, ErrorKind::Full);
            assert!(
                err.message.contains("fs /c") && err.message.contains("not stored"),
                "{err}"
            );
            first.stored("aa/bb/1", 300);
            assert_eq!(b.used(), Some(1200));
            b.scan_started();
            b.scan_finished(500);
            assert_eq!(b.used(), Some(500));
            b.removed("aa/bb/1", 100);
            assert_eq!(b.used(), Some(400));
            drop(b.admit(10, "fs /c").await.expect("room again"));
            assert_eq!(b.used(), Some(400), "a dropped reservation is released");
        });
    }

    #[test]
    fn changes_during_a_scan_are_counted_once() {
        rt().block_on(async {
            let b = Budget::with_wait(10_000, Duration::from_millis(50));
            b.scan_finished(1000);
            b.scan_started();
            // Stored during the scan: one the scan saw, one it did not.
            b.admit(100, "fs /c").await.expect("room").stored("a", 100);
            b.admit(200, "fs /c").await.expect("room").stored("b", 200);
            b.seen("a");
            // Deleted during the scan: one the scan saw before, one it never saw.
            b.removed("c", 50);
            b.seen("c");
            b.removed("d", 70);
            // The scan counted a (100) and c (50): on disk now 1000 + 100 + 50 - 50 = ...
            assert_eq!(b.projected(1150), 1300);
            b.scan_finished(1100 + 50);
            // ... of which c is gone (-50), b is new (+200), d was never counted: 1300.
            assert_eq!(b.used(), Some(1300));
        });
    }

    #[test]
    fn a_waiting_upload_goes_on_when_retention_makes_room() {
        rt().block_on(async {
            let b = Budget::with_wait(1000, Duration::from_secs(30));
            let waiting = {
                let b = b.clone();
                tokio::spawn(async move { b.admit(10, "fs /c").await.map(|_| ()) })
            };
            tokio::task::yield_now().await;
            b.scan_finished(2000);
            tokio::time::timeout(Duration::from_secs(5), b.crossed())
                .await
                .expect("retention is woken");
            b.scan_finished(100);
            assert!(waiting.await.expect("task").is_ok());
        });
    }
}
