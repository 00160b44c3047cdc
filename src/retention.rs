//! Retention for the fs store: expire objects by age and evict the least recently accessed ones
//! until the store fits a size budget.
//!
//! "Last access" is an object's mtime: the fs store sets it on a GET hit (at most once per
//! [`crate::store::fs::ACCESS_GRANULARITY`]) and a new object starts with its write time; see
//! `crate::store::fs`. atime is not used (often disabled by `noatime`/`relatime`).
//!
//! What [`collect`] deletes, and nothing else:
//! - objects: files at `<root>/[<prefix>/]<aa>/<bb>/<hash>` whose name is a valid task hash and whose
//!   `aa`/`bb` directories are the fan-out of that hash (so pointing it at the wrong directory
//!   deletes nothing that is not a cache object);
//! - stale temp files: `*.tmp` files in `.tmp` directories older than [`STALE_TMP_AGE`] (left by
//!   killed writers; a file being written is younger, since every write refreshes its mtime);
//! - empty fan-out directories, and prefix directories this run emptied (never the root, never a
//!   `.tmp` directory; `rmdir` refuses a directory that is not empty).
//!
//! Concurrency: the store keeps serving while this runs. A reader that already opened an object
//! keeps reading it after it is unlinked (Unix semantics: the inode lives until the last fd is
//! closed); a reader that opens it afterwards sees a plain miss. A writer publishes with `link()`
//! into place: an object published after the scan is not known to this run and is kept. Each object
//! is re-checked right before its deletion: one accessed since the scan is kept. A fan-out directory
//! that is removed while a writer's temp file for it exists is re-created at once, so that writer's
//! `link()` finds it.

use crate::key::TaskHash;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Temp files older than this are leftovers of killed writers.
pub const STALE_TMP_AGE: Duration = Duration::from_secs(3600);
/// Progress is reported at most this often (plus once per phase change and at the end).
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
/// At most this many errors are listed in a report (all are counted).
pub const MAX_LISTED_ERRORS: usize = 1000;
const TMP_DIR: &str = ".tmp";

/// What to keep. With neither limit, only stale temp files and empty directories are removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Evict least recently accessed objects until the objects' total size is at most this.
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
    /// Stale temp files.
    pub deleted_temp: Count,
    /// Objects left in the store.
    pub kept: Count,
    /// Empty directories removed.
    pub removed_dirs: u64,
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
        let d = self.deleted_objects();
        format!(
            "retention{}: scanned {} objects ({}), {} {} objects ({}: {} by age, {} by size), {} temp files, kept {} objects ({}), {} directories removed, {} errors, {} ms",
            if self.dry_run { " (dry run)" } else { "" },
            self.scanned.files,
            format_bytes(self.scanned.bytes),
            if self.dry_run { "would delete" } else { "deleted" },
            d.files,
            format_bytes(d.bytes),
            self.deleted_by_age.files,
            self.deleted_by_size.files,
            self.deleted_temp.files,
            self.kept.files,
            format_bytes(self.kept.bytes),
            self.removed_dirs,
            self.error_count,
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

/// `1536` → `1.5 KiB`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Applies `policy` to the fs store at `root` (all prefixes below it share the budget).
/// Fails only when the root cannot be read; per-file faults are listed in the report.
pub fn collect(
    root: &Path,
    policy: &Policy,
    progress: &mut dyn FnMut(Progress),
) -> Result<Report, String> {
    run(root, policy, false, None, progress)
}

/// What [`collect`] would delete, deleting nothing.
pub fn dry_run(
    root: &Path,
    policy: &Policy,
    progress: &mut dyn FnMut(Progress),
) -> Result<Report, String> {
    run(root, policy, true, None, progress)
}

struct Object {
    path: PathBuf,
    /// Index of its directory in the scanned tree.
    dir: usize,
    len: u64,
    accessed: SystemTime,
}

struct Dir {
    path: PathBuf,
    parent: usize,
    /// A fan-out level (`aa` or `bb`): removable when empty.
    fan: bool,
    /// This run removed something from it: removable when that left it empty.
    emptied: bool,
    /// Entries seen by the scan minus those this run removed (only a directory at 0 is tried).
    entries: u64,
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

fn cancelled(cancel: Option<&AtomicBool>) -> bool {
    cancel.is_some_and(|c| c.load(Ordering::Relaxed))
}

fn run(
    root: &Path,
    policy: &Policy,
    dry: bool,
    cancel: Option<&AtomicBool>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Report, String> {
    let started = Instant::now();
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("cache path {} is not a directory", root.display())),
        Err(e) => return Err(format!("cache path {} is not usable: {e}", root.display())),
    }
    let mut report = Report {
        dry_run: dry,
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
    let now = SystemTime::now();
    let mut dirs = vec![Dir {
        path: root.to_path_buf(),
        parent: 0,
        fan: false,
        emptied: false,
        entries: 0,
    }];
    let mut objects = Vec::new();
    let mut tmp_dirs = Vec::new();

    // Scan (depth first; `dirs` ends up in pre-order, so reversed it lists children first).
    let mut stack = vec![0usize];
    while let Some(index) = stack.pop() {
        if cancelled(cancel) {
            break;
        }
        let dir = dirs[index].path.clone();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if index == 0 => {
                return Err(format!("cannot list cache path {}: {e}", root.display()))
            }
            Err(e) => {
                report.error(&dir, format!("cannot list directory: {e}"));
                dirs[index].entries = 1; // unknown contents: never removed
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    report.error(&dir, format!("cannot list directory: {e}"));
                    dirs[index].entries += 1;
                    break;
                }
            };
            dirs[index].entries += 1;
            let path = entry.path();
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if file_type.is_dir() {
                if name == TMP_DIR {
                    tmp_dirs.push(path.clone());
                    remove_stale_temps(&path, now, dry, &mut report, &mut p);
                    continue;
                }
                let fan = is_fan_name(&name);
                dirs.push(Dir {
                    path,
                    parent: index,
                    fan,
                    emptied: false,
                    entries: 0,
                });
                stack.push(dirs.len() - 1);
            } else if file_type.is_file() && is_object_path(&path) {
                match entry.metadata() {
                    Ok(m) => {
                        let accessed = m.modified().unwrap_or(now);
                        report.scanned.add(m.len());
                        objects.push(Object {
                            path,
                            dir: index,
                            len: m.len(),
                            accessed,
                        });
                        p.current.scanned += 1;
                        p.tick();
                    }
                    // Deleted since the listing (another run, a quarantine): nothing to do.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => report.error(&path, format!("cannot stat: {e}")),
                }
            }
        }
    }

    // Delete: expired first, then the least recently accessed until the budget holds.
    p.phase(Phase::Delete);
    objects.sort_by(|a, b| a.accessed.cmp(&b.accessed).then(a.path.cmp(&b.path)));
    let mut total: u64 = objects.iter().map(|o| o.len).sum();
    for object in &objects {
        if cancelled(cancel) {
            break;
        }
        let age = now.duration_since(object.accessed).unwrap_or_default();
        let expired = policy.max_age.is_some_and(|max| age > max);
        let over = policy.max_bytes.is_some_and(|max| total > max);
        if !expired && !over {
            // Sorted by last access: the objects after this one are younger still, and the
            // budget already holds. Nothing more to delete.
            break;
        }
        match delete_object(object, dry) {
            Ok(true) => {
                total -= object.len;
                if expired {
                    report.deleted_by_age.add(object.len);
                } else {
                    report.deleted_by_size.add(object.len);
                }
                let dir = &mut dirs[object.dir];
                dir.entries = dir.entries.saturating_sub(1);
                dir.emptied = true;
                p.current.deleted += 1;
                p.tick();
            }
            // Gone already, or accessed since the scan (then it is kept).
            Ok(false) => {
                if !object.path.exists() {
                    total -= object.len;
                    let dir = &mut dirs[object.dir];
                    dir.entries = dir.entries.saturating_sub(1);
                }
            }
            Err(e) => report.error(&object.path, format!("cannot delete: {e}")),
        }
    }
    report.kept = Count {
        files: report.scanned.files - report.deleted_objects().files,
        bytes: report.scanned.bytes - report.deleted_objects().bytes,
    };

    // Prune empty directories, children before parents.
    if !dry && !cancelled(cancel) {
        p.phase(Phase::Prune);
        for index in (1..dirs.len()).rev() {
            let d = &dirs[index];
            if d.entries > 0 || !(d.fan || d.emptied) {
                continue;
            }
            let path = dirs[index].path.clone();
            match std::fs::remove_dir(&path) {
                Ok(()) => {
                    if restore_if_awaited(&path, &tmp_dirs) {
                        continue;
                    }
                    report.removed_dirs += 1;
                    let parent = dirs[index].parent;
                    let parent = &mut dirs[parent];
                    parent.entries = parent.entries.saturating_sub(1);
                    parent.emptied = true;
                }
                Err(e) if is_not_empty(&e) || e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => report.error(&path, format!("cannot remove empty directory: {e}")),
            }
        }
    }
    p.phase(Phase::Done);
    report.duration = started.elapsed();
    Ok(report)
}

/// Deletes one object unless it was accessed since the scan. Ok(false): kept or already gone.
fn delete_object(object: &Object, dry: bool) -> io::Result<bool> {
    let accessed = match std::fs::symlink_metadata(&object.path) {
        Ok(m) => m.modified().unwrap_or(object.accessed),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if accessed > object.accessed {
        return Ok(false);
    }
    if dry {
        return Ok(true);
    }
    match std::fs::remove_file(&object.path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn remove_stale_temps(
    dir: &Path,
    now: SystemTime,
    dry: bool,
    report: &mut Report,
    p: &mut Progressor<'_>,
) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            report.error(dir, format!("cannot list directory: {e}"));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_temp = entry.file_type().is_ok_and(|t| t.is_file())
            && path.extension().is_some_and(|e| e == "tmp");
        if !is_temp {
            continue;
        }
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let age = meta
            .modified()
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or_default();
        if age < STALE_TMP_AGE {
            continue; // possibly being written
        }
        let removed = if dry {
            Ok(())
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Ok(()) => {
                report.deleted_temp.add(meta.len());
                p.current.deleted += 1;
                p.tick();
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => report.error(&path, format!("cannot delete stale temp file: {e}")),
        }
    }
}

fn is_not_empty(e: &io::Error) -> bool {
    #[cfg(unix)]
    if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) {
        return true;
    }
    e.kind() == io::ErrorKind::DirectoryNotEmpty
}

fn is_fan_name(name: &str) -> bool {
    name.len() == 2
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The two fan-out bytes of a hash, as the fs store computes them.
fn fan_of(hash: &str) -> [String; 2] {
    let fan = xxhash_rust::xxh3::xxh3_64(hash.as_bytes()).to_be_bytes();
    [format!("{:02x}", fan[0]), format!("{:02x}", fan[1])]
}

/// `…/<aa>/<bb>/<hash>` with `aa`/`bb` the fan-out of a valid hash.
fn is_object_path(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str());
    let bb = path
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str());
    let aa = path
        .parent()
        .and_then(|p| p.parent())
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str());
    match (aa, bb, name) {
        (Some(aa), Some(bb), Some(name)) => {
            TaskHash::parse(name).is_ok() && fan_of(name) == [aa.to_owned(), bb.to_owned()]
        }
        _ => false,
    }
}

/// After removing `dir`: if an in-flight temp file (named `<hash>.….tmp`) will be published below
/// it, re-creates the directories that writer needs and returns true.
fn restore_if_awaited(dir: &Path, tmp_dirs: &[PathBuf]) -> bool {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let parent_name = dir
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let mut restored = false;
    for tmp in tmp_dirs {
        let Ok(entries) = std::fs::read_dir(tmp) else {
            continue;
        };
        for entry in entries.flatten() {
            let file = entry.file_name();
            let Some(hash) = file.to_str().and_then(|f| f.split('.').next()) else {
                continue;
            };
            let [aa, bb] = fan_of(hash);
            let target = if is_fan_name(parent_name) && name == bb && parent_name == aa {
                Some(dir.to_path_buf()) // a `bb` level
            } else if name == aa {
                Some(dir.join(&bb)) // an `aa` level
            } else if !is_fan_name(name) {
                Some(dir.join(&aa).join(&bb)) // a prefix level
            } else {
                None
            };
            if let Some(target) = target {
                let _ = std::fs::create_dir_all(target);
                restored = true;
            }
        }
    }
    restored
}

/// Background retention: [`collect`] every `interval` on a blocking thread of the current tokio
/// runtime, so request handling never waits for it.
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
pub fn spawn_background(root: PathBuf, policy: Policy, interval: Duration) -> BackgroundHandle {
    spawn_background_with(root, policy, interval, |result| match result {
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

/// Runs [`collect`] now and then every `interval` (at least one second), calling `on_report` after
/// each run. Must be called inside a tokio runtime.
pub fn spawn_background_with(
    root: PathBuf,
    policy: Policy,
    interval: Duration,
    on_report: impl Fn(&Result<Report, String>) + Send + Sync + 'static,
) -> BackgroundHandle {
    let stop = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(tokio::sync::Notify::new());
    let last = Arc::new(Mutex::new(None));
    let (stop2, wake2, last2) = (stop.clone(), wake.clone(), last.clone());
    let interval = interval.max(Duration::from_secs(1));
    let task = tokio::spawn(async move {
        loop {
            if stop2.load(Ordering::Relaxed) {
                break;
            }
            let (root, policy, stop3) = (root.clone(), policy.clone(), stop2.clone());
            let result = tokio::task::spawn_blocking(move || {
                run(&root, &policy, false, Some(&stop3), &mut |_| {})
            })
            .await
            .unwrap_or_else(|e| Err(format!("retention task failed: {e}")));
            if let Ok(mut l) = last2.lock() {
                *l = Some(result.clone());
            }
            on_report(&result);
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = wake2.notified() => {}
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

const SIZE_FORMS: &str = "a number with a unit: B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), e.g. 50GiB or 500MB";
const DURATION_FORMS: &str =
    "a number with a unit: s (seconds), m (minutes), h (hours), d (days), w (weeks), e.g. 30d or 12h";

fn split_number(value: &str) -> Option<(f64, &str)> {
    let v = value.trim();
    let end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(end);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    n.is_finite().then_some((n, unit.trim()))
}

/// Parses a size such as `50GiB`, `500MB` or `1024B` (units case-insensitive, a unit is required).
/// `option` names the setting in the error, e.g. `--max-size`.
pub fn parse_size(option: &str, value: &str) -> Result<u64, String> {
    let bad =
        |why: &str| format!("invalid value {value:?} for {option}: {why}; expected {SIZE_FORMS}");
    let Some((n, unit)) = split_number(value) else {
        return Err(bad("not a number with a unit"));
    };
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "b" => 1,
        "kb" => 1000,
        "mb" => 1000 * 1000,
        "gb" => 1000 * 1000 * 1000,
        "tb" => 1000 * 1000 * 1000 * 1000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "" => return Err(bad("the unit is missing")),
        _ => return Err(bad(&format!("unknown unit {unit:?}"))),
    };
    let bytes = n * factor as f64;
    if bytes >= u64::MAX as f64 {
        return Err(bad("too large"));
    }
    Ok(bytes.round() as u64)
}

/// Parses a duration such as `30d`, `12h`, `90m`, `2w` or `45s` (a unit is required).
/// `option` names the setting in the error, e.g. `--max-age`.
pub fn parse_duration(option: &str, value: &str) -> Result<Duration, String> {
    let bad = |why: &str| {
        format!("invalid value {value:?} for {option}: {why}; expected {DURATION_FORMS}")
    };
    let Some((n, unit)) = split_number(value) else {
        return Err(bad("not a number with a unit"));
    };
    let secs: f64 = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        "w" => 7.0 * 86400.0,
        "" => return Err(bad("the unit is missing")),
        _ => return Err(bad(&format!("unknown unit {unit:?}"))),
    };
    Duration::try_from_secs_f64(n * secs).map_err(|_| bad("too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("--max-size", "50GiB"), Ok(50 << 30));
        assert_eq!(parse_size("--max-size", "500MB"), Ok(500_000_000));
        assert_eq!(parse_size("--max-size", "1.5 KiB"), Ok(1536));
        assert_eq!(parse_size("--max-size", "2tib"), Ok(2 << 40));
        assert_eq!(parse_size("--max-size", "0B"), Ok(0));
        for bad in ["", "50", "GiB", "-1GB", "5XB", ".5GB", "1e3GB"] {
            let e = parse_size("--max-size", bad).unwrap_err();
            assert!(
                e.contains("--max-size") && e.contains(&format!("{bad:?}")),
                "{e}"
            );
            assert!(e.contains("KiB, MiB, GiB, TiB"), "{e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("--max-age", "30d"),
            Ok(Duration::from_secs(30 * 86400))
        );
        assert_eq!(
            parse_duration("maxAge", "1.5h"),
            Ok(Duration::from_secs(5400))
        );
        assert_eq!(
            parse_duration("maxAge", "2w"),
            Ok(Duration::from_secs(14 * 86400))
        );
        for bad in ["30", "d", "3y", "1 day", "", "1e400d"] {
            let e = parse_duration("--max-age", bad).unwrap_err();
            assert!(e.contains("--max-age") && e.contains("s (seconds)"), "{e}");
        }
    }

    #[test]
    fn layout_recognition() {
        let [aa, bb] = fan_of("12345");
        assert!(is_object_path(&PathBuf::from(format!(
            "/c/{aa}/{bb}/12345"
        ))));
        assert!(is_object_path(&PathBuf::from(format!(
            "/c/team/a/{aa}/{bb}/12345"
        ))));
        assert!(!is_object_path(&PathBuf::from(format!("/c/{aa}/00/12345"))) || bb == "00");
        assert!(!is_object_path(&PathBuf::from("/home/me/notes.txt")));
        assert!(!is_object_path(&PathBuf::from(format!("/c/{aa}/{bb}/x y"))));
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(12), "12 B");
    }
}
