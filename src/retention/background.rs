//! Background retention (`serve --max-size / --max-age`): a run at start, then every interval,
//! and at once when uploads take the store over its size budget; each run on a blocking thread of
//! the current tokio runtime, so request handling never waits for it.

use super::{run, Policy, Report, Run, LOW_WATER_PERCENT};
use crate::store::fs::Budget;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// After a run that left the store over its budget with no object left to evict (only uploads in
/// flight and temp files fill it), the next one waits at least this long: uploads waiting for
/// room do not spin the scan.
const PAUSE_WHEN_STUCK: Duration = Duration::from_secs(1);

/// A running background retention loop.
pub struct BackgroundHandle {
    stop: Arc<AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
    task: Option<tokio::task::JoinHandle<()>>,
    last: Arc<Mutex<Option<Result<Report, String>>>>,
}

impl BackgroundHandle {
    /// The result of the latest finished run.
    pub fn last_report(&self) -> Option<Result<Report, String>> {
        self.last.lock().ok().and_then(|l| l.clone())
    }

    /// Stops the loop: a run in progress ends at its next file; returns when it has.
    pub async fn stop(mut self) {
        self.signal();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn signal(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }
}

impl Drop for BackgroundHandle {
    fn drop(&mut self) {
        self.signal();
    }
}

/// [`spawn_background_with`] logging each run's [`Report::summary`] (or its error) to stderr.
/// Must be called inside a tokio runtime.
pub fn spawn_background(
    root: PathBuf,
    policy: Policy,
    interval: Duration,
    budget: Option<Arc<Budget>>,
) -> BackgroundHandle {
    spawn_background_with(root, policy, interval, budget, |result| match result {
        Ok(r) => {
            eprintln!("nx-open-cache: {}", r.summary());
            for e in &r.errors {
                eprintln!(
                    "nx-open-cache: retention: {}: {}",
                    e.path.display(),
                    e.reason
                );
            }
        }
        Err(e) => eprintln!("nx-open-cache: retention failed: {e}"),
    })
}

/// Runs retention now, then every `interval` (at least one second), and at once whenever an
/// upload finds the store over `budget` (the store given the same budget: [`FsStore::with_budget`]);
/// such a run evicts down to [`LOW_WATER_PERCENT`] of `policy.max_bytes`. Calls `on_report`
/// after each run. Must be called inside a tokio runtime.
///
/// [`FsStore::with_budget`]: crate::store::fs::FsStore::with_budget
pub fn spawn_background_with(
    root: PathBuf,
    policy: Policy,
    interval: Duration,
    budget: Option<Arc<Budget>>,
    on_report: impl Fn(&Result<Report, String>) + Send + Sync + 'static,
) -> BackgroundHandle {
    let stop = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(tokio::sync::Notify::new());
    let last = Arc::new(Mutex::new(None));
    let (stop2, wake2, last2) = (stop.clone(), wake.clone(), last.clone());
    let interval = interval.max(Duration::from_secs(1));
    let task = tokio::spawn(async move {
        while !stop2.load(Ordering::Relaxed) {
            let result = run_once(&root, &policy, &stop2, budget.clone()).await;
            // Nothing left that a run could evict (or the run failed).
            let stuck = result.as_ref().map_or(true, |r| r.kept.files == 0);
            if let Ok(mut l) = last2.lock() {
                *l = Some(result.clone());
            }
            on_report(&result);
            if stop2.load(Ordering::Relaxed) {
                break;
            }
            if budget.as_ref().is_some_and(|b| b.is_over()) {
                if !stuck {
                    // Uploads went on during the run and the store is over again: run at once.
                    continue;
                }
                tokio::select! {
                    _ = tokio::time::sleep(PAUSE_WHEN_STUCK) => {}
                    _ = wake2.notified() => {}
                }
            }
            let crossed = async {
                match &budget {
                    Some(b) => b.crossed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = wake2.notified() => {}
                _ = crossed => {}
            }
        }
    });
    BackgroundHandle {
        stop,
        wake,
        task: Some(task),
        last,
    }
}

async fn run_once(
    root: &std::path::Path,
    policy: &Policy,
    stop: &Arc<AtomicBool>,
    budget: Option<Arc<Budget>>,
) -> Result<Report, String> {
    let (root, policy, stop) = (root.to_path_buf(), policy.clone(), stop.clone());
    let size_target = policy
        .max_bytes
        .map(|max| max / 100 * LOW_WATER_PERCENT + max % 100 * LOW_WATER_PERCENT / 100);
    tokio::task::spawn_blocking(move || {
        let options = Run {
            dry: false,
            cancel: Some(&stop),
            budget: budget.as_deref(),
            size_target,
            batch: 0,
            start: None,
        };
        let result = run(&root, &policy, &options, &mut |_| {});
        // The run's lists (a few hundred bytes per object) are freed by now: their pages go
        // back to the system, or the server's RSS keeps what the largest run took.
        crate::runtime::release_free_memory();
        result
    })
    .await
    .unwrap_or_else(|e| Err(format!("retention task failed: {e}")))
}
