//! Retention for the fs store: expire objects by age and evict the least recently accessed ones
//! until the store fits a size budget.
//!
//! "Last access" is an object's mtime: the fs store sets it on a GET hit (at most once per
//! [`crate::store::fs::ACCESS_GRANULARITY`]) and a new object starts with its write time; see
//! `crate::store::fs`. atime is not used (often disabled by `noatime`/`relatime`). A time in the
//! future counts as now, and one more than [`crate::store::fs::temp::FUTURE_TOLERANCE`] ahead is
//! set to now: a clock error never pins an object.
//!
//! What [`collect`] deletes, and nothing else:
//! - objects: files at `<root>/[<prefix>/]<aa>/<bb>/<hash>` whose name is a valid task hash and whose
//!   `aa`/`bb` directories are the fan-out of that hash (so pointing it at the wrong directory
//!   deletes nothing that is not a cache object);
//! - temp files (`*.tmp` in `.tmp` directories) whose writer is provably gone, or not written to
//!   for [`STALE_TMP_AGE`] (see `crate::store::fs::temp`); the others count toward the size;
//! - empty fan-out directories, and prefix directories this run emptied (never the root, never a
//!   `.tmp` directory; `rmdir` refuses a directory that is not empty).
//!
//! No symbolic link is followed: the walk opens every directory relative to the root's descriptor
//! without following links, and deletes relative to directory descriptors. A link found below the
//! root is listed as an error (never followed, never deleted).
//!
//! Concurrency: the store keeps serving while this runs. A reader that already opened an object
//! keeps reading it after it is unlinked (Unix semantics: the inode lives until the last fd is
//! closed); a reader that opens it afterwards sees a plain miss. A writer publishes with `link()`
//! into place: an object published after the scan is not known to this run and is kept. Each object
//! is re-checked right before its deletion: one accessed since the scan is kept. A fan-out directory
//! removed while a writer's upload is in flight is made again by that writer when it publishes.

mod background;
mod walk;

pub use crate::store::fs::STALE_TMP_AGE;
pub use background::{spawn_background, spawn_background_with, BackgroundHandle};

use crate::store::fs::Budget;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Progress is reported at most this often (plus once per phase change, after each batch of
/// deletions and at the end).
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
/// At most this many errors are listed in a report (all are counted).
pub const MAX_LISTED_ERRORS: usize = 1000;
/// When a run started by the size budget finds the store over `max_bytes`, it evicts down to
/// this share of it (in percent), so that uploads go on for a while before the next run.
pub const LOW_WATER_PERCENT: u64 = 90;

/// What to keep. With neither limit, only stale temp files and empty directories are removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Evict least recently accessed objects until the total size (objects and temp files) is at
    /// most this.
    pub max_bytes: Option<u64>,
    /// Delete objects not accessed for longer than this.
    pub max_age: Option<Duration>,
}

impl Policy {
    /// True when the policy limits anything (the serve command starts background retention then).
    pub fn is_active(&self) -> bool {
        self.max_bytes.is_some() || self.max_age.is_some()
    }
}

/// The stage a run is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Walking the store.
    Scan,
    /// Deleting expired and evicted objects.
    Delete,
    /// Removing empty directories.
    Prune,
    /// Finished.
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Scan => "scan",
            Phase::Delete => "delete",
            Phase::Prune => "prune",
            Phase::Done => "done",
        }
    }
}

/// A progress update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    /// Objects found so far.
    pub scanned: u64,
    /// Objects and temp files deleted (or, in a dry run, that would be) so far.
    pub deleted: u64,
}

/// A number of files and their size on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    pub files: u64,
    pub bytes: u64,
}

impl Count {
    fn add(&mut self, bytes: u64) {
        self.files += 1;
        self.bytes += bytes;
    }
}

/// One file or directory that could not be handled; the run went on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcError {
    pub path: PathBuf,
    pub reason: String,
}

/// What a run found and did. Sizes are on-disk file sizes (envelope included).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// True when nothing was deleted on purpose: the deleted counts are what would have been.
    pub dry_run: bool,
    pub scanned: Count,
    /// Objects not accessed within `max_age`.
    pub deleted_by_age: Count,
    /// Least recently accessed objects evicted to fit `max_bytes`.
    pub deleted_by_size: Count,
    /// Temp files whose writer is gone, or stale.
    pub deleted_temp: Count,
    /// Objects left in the store.
    pub kept: Count,
    /// Temp files left (uploads in progress), counted toward the size (a leftover that shares its
    /// inode with an object counts 0 bytes: the object counts them).
    pub kept_temp: Count,
    /// Empty directories removed.
    pub removed_dirs: u64,
    /// The run stopped after its last allowed walk with objects left that the policy may
    /// delete: the next run goes on (a dry run under-reports what would go).
    pub incomplete: bool,
    pub duration: Duration,
    /// Number of errors (the first [`MAX_LISTED_ERRORS`] are in `errors`).
    pub error_count: u64,
    pub errors: Vec<GcError>,
}

impl Report {
    /// Objects deleted for age or size.
    pub fn deleted_objects(&self) -> Count {
        Count {
            files: self.deleted_by_age.files + self.deleted_by_size.files,
            bytes: self.deleted_by_age.bytes + self.deleted_by_size.bytes,
        }
    }

    /// One line for logs.
    pub fn summary(&self) -> String {
        use crate::units::count;
        let d = self.deleted_objects();
        let objects = |n| count(n, "object", "objects");
        let temp = |n| count(n, "temp file", "temp files");
        format!(
            "retention{}: scanned {} ({}), {} {} ({}: {} by age, {} by size){}, {}, kept {} ({}) and {} ({}), {} removed, {}, {} ms",
            if self.dry_run { " (dry run)" } else { "" },
            objects(self.scanned.files),
            format_bytes(self.scanned.bytes),
            if self.dry_run { "would delete" } else { "deleted" },
            objects(d.files),
            format_bytes(d.bytes),
            self.deleted_by_age.files,
            self.deleted_by_size.files,
            if self.incomplete {
                ", incomplete: stopped at its walk limit with more to delete (the next run goes on)"
            } else {
                ""
            },
            temp(self.deleted_temp.files),
            objects(self.kept.files),
            format_bytes(self.kept.bytes),
            temp(self.kept_temp.files),
            format_bytes(self.kept_temp.bytes),
            count(self.removed_dirs, "directory", "directories"),
            count(self.error_count, "error", "errors"),
            self.duration.as_millis()
        )
    }

    fn error(&mut self, path: &Path, reason: impl Into<String>) {
        self.error_count += 1;
        if self.errors.len() < MAX_LISTED_ERRORS {
            self.errors.push(GcError {
                path: path.to_path_buf(),
                reason: reason.into(),
            });
        }
    }
}

/// The project's byte formatter, here for the callers that name it by this path.
pub use crate::units::format_bytes;

/// Applies `policy` to the fs store at `root` (all prefixes below it share the budget).
/// Fails only when the root cannot be read; per-file faults are listed in the report.
pub fn collect(
    root: &Path,
    policy: &Policy,
    progress: &mut dyn FnMut(Progress),
) -> Result<Report, String> {
    run(root, policy, &Run::default(), progress)
}

/// What [`collect`] would delete, deleting nothing.
pub fn dry_run(
    root: &Path,
    policy: &Policy,
    progress: &mut dyn FnMut(Progress),
) -> Result<Report, String> {
    let options = Run {
        dry: true,
        ..Run::default()
    };
    run(root, policy, &options, progress)
}

/// How a run goes beyond its policy.
#[derive(Default)]
struct Run<'a> {
    dry: bool,
    cancel: Option<&'a AtomicBool>,
    /// Seeded with what the run leaves (the store's running size estimate).
    budget: Option<&'a Budget>,
    /// Over `max_bytes`, evict down to this (default: `max_bytes`).
    size_target: Option<u64>,
    /// Objects kept per walk as candidates for deletion (0: [`walk::BATCH`]; tests use a few).
    batch: usize,
    /// The run's start (`None`: the clock; tests set one ahead of it).
    start: Option<SystemTime>,
}

impl Run<'_> {
    fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }

    fn batch(&self) -> usize {
        match self.batch {
            0 => walk::BATCH,
            n => n,
        }
    }
}

struct Progressor<'a> {
    callback: &'a mut dyn FnMut(Progress),
    last: Instant,
    current: Progress,
}

impl Progressor<'_> {
    fn phase(&mut self, phase: Phase) {
        self.current.phase = phase;
        self.emit();
    }

    fn emit(&mut self) {
        self.last = Instant::now();
        (self.callback)(self.current);
    }

    fn tick(&mut self) {
        if self.last.elapsed() >= PROGRESS_INTERVAL {
            self.emit();
        }
    }
}

/// Scan, delete, prune; then the budget (if any) learns what is left.
fn run(
    root: &Path,
    policy: &Policy,
    options: &Run<'_>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Report, String> {
    let started = Instant::now();
    let mut report = Report {
        dry_run: options.dry,
        ..Report::default()
    };
    let mut p = Progressor {
        callback: progress,
        last: Instant::now(),
        current: Progress {
            phase: Phase::Scan,
            scanned: 0,
            deleted: 0,
        },
    };
    p.emit();
    if let Some(b) = options.budget {
        b.scan_started();
    }
    let now = options.start.unwrap_or_else(SystemTime::now);
    let mut tree = walk::Tree::open_root(root)?;
    let scanned = walk::scan(&mut tree, now, options, &mut report, &mut p)?;
    p.phase(Phase::Delete);
    let touched = walk::evict(
        &mut tree,
        scanned,
        policy,
        now,
        options,
        &mut report,
        &mut p,
    );
    // Later walks may delete objects the first one did not count (copied in with an old mtime,
    // below a directory it could not open): what is kept never goes below nothing.
    let deleted = report.deleted_objects();
    report.kept = Count {
        files: report.scanned.files.saturating_sub(deleted.files),
        bytes: report.scanned.bytes.saturating_sub(deleted.bytes),
    };
    if !options.dry && !options.cancelled() {
        p.phase(Phase::Prune);
        walk::prune(&tree, touched, &mut report);
        if let Some(b) = options.budget {
            let temps = report.kept_temp.bytes.saturating_sub(tree.own_temp_bytes);
            b.scan_finished(report.kept.bytes.saturating_add(temps));
        }
    }
    p.phase(Phase::Done);
    report.duration = started.elapsed();
    Ok(report)
}
