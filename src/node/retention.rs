//! Bindings for fs-store retention (`crate::retention`): `gc` / `gcAsync`.

use crate::retention::{self, Policy, Progress, Report};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use std::path::PathBuf;
use std::time::Duration;

/// Options of `gc`.
#[napi(object)]
pub struct GcOptions {
    /// The fs store's directory (the root: every prefix below it shares the budget).
    pub path: String,
    /// Keep the total size (objects and temp files) at most this: bytes as a number, or a
    /// string with a unit (`B`, `KB`, `MB`, `GB`, `TB`, `KiB`, `MiB`, `GiB`, `TiB`), e.g.
    /// `"50GiB"`. The least recently accessed objects are deleted first.
    pub max_size: Option<Either<String, f64>>,
    /// Delete objects not accessed for longer than this: seconds as a number, or a string with a
    /// unit (`s`, `m`, `h`, `d`, `w`), e.g. `"30d"`.
    pub max_age: Option<Either<String, f64>>,
    /// Report what would be deleted, delete nothing. Default false.
    pub dry_run: Option<bool>,
}

/// A progress update of `gc` (at most every ~100 ms, plus one per phase change).
#[napi(object)]
#[derive(Clone)]
pub struct GcProgress {
    /// `scan`, `delete`, `prune` or `done`.
    #[napi(ts_type = "'scan' | 'delete' | 'prune' | 'done'")]
    pub phase: String,
    /// Objects found so far.
    pub scanned: i64,
    /// Objects and temp files deleted (in a dry run: that would be) so far.
    pub deleted: i64,
}

/// A number of files and their size on disk in bytes.
#[napi(object)]
pub struct GcCount {
    pub files: i64,
    pub bytes: i64,
}

/// A file or directory `gc` could not handle (the run went on).
#[napi(object)]
pub struct GcError {
    pub path: String,
    pub reason: String,
}

/// What `gc` found and did.
#[napi(object)]
pub struct GcReport {
    /// True when nothing was deleted: the deleted counts are what would have been.
    pub dry_run: bool,
    /// Objects found.
    pub scanned: GcCount,
    /// Objects not accessed within `maxAge`.
    pub deleted_by_age: GcCount,
    /// Least recently accessed objects evicted to fit `maxSize`.
    pub deleted_by_size: GcCount,
    /// Temp files removed: their writer is gone (it ran on this machine), or they were not
    /// written to for an hour.
    pub deleted_temp: GcCount,
    /// Objects left.
    pub kept: GcCount,
    /// Temp files left (uploads in progress); they count toward `maxSize`.
    pub kept_temp: GcCount,
    /// Empty directories removed.
    pub removed_dirs: i64,
    /// The run stopped at its walk limit with more the policy may delete (the next run goes on;
    /// a dry run under-reports).
    pub incomplete: bool,
    /// Wall time of the run in milliseconds.
    pub duration_ms: f64,
    /// All errors (the first 1000 are listed in `errors`).
    pub error_count: i64,
    pub errors: Vec<GcError>,
    /// One line for logs.
    pub summary: String,
}

fn n(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn count(c: retention::Count) -> GcCount {
    GcCount {
        files: n(c.files),
        bytes: n(c.bytes),
    }
}

impl From<Report> for GcReport {
    fn from(r: Report) -> Self {
        GcReport {
            dry_run: r.dry_run,
            scanned: count(r.scanned),
            deleted_by_age: count(r.deleted_by_age),
            deleted_by_size: count(r.deleted_by_size),
            deleted_temp: count(r.deleted_temp),
            kept: count(r.kept),
            kept_temp: count(r.kept_temp),
            removed_dirs: n(r.removed_dirs),
            incomplete: r.incomplete,
            duration_ms: r.duration.as_secs_f64() * 1000.0,
            error_count: n(r.error_count),
            summary: r.summary(),
            errors: r
                .errors
                .into_iter()
                .map(|e| GcError {
                    path: e.path.display().to_string(),
                    reason: e.reason,
                })
                .collect(),
        }
    }
}

impl From<Progress> for GcProgress {
    fn from(p: Progress) -> Self {
        GcProgress {
            phase: p.phase.as_str().to_owned(),
            scanned: n(p.scanned),
            deleted: n(p.deleted),
        }
    }
}

fn bad(message: String) -> Error {
    Error::new(Status::InvalidArg, message)
}

/// A number option of `gc`: whole, 0..=u64::MAX, checked before the conversion.
fn whole_number(option: &str, v: f64, what: &str) -> Result<u64> {
    crate::number::whole(option, v, 0..=u64::MAX)
        .map_err(|e| bad(format!("{e} ({what}), or a string with a unit")))
}

struct Job {
    root: PathBuf,
    policy: Policy,
    dry_run: bool,
}

fn job(options: GcOptions) -> Result<Job> {
    if options.path.trim().is_empty() {
        return Err(bad(
            "invalid value \"\" for path: the fs cache directory is required".into(),
        ));
    }
    let max_bytes = match options.max_size {
        None => None,
        Some(Either::A(s)) => Some(crate::units::parse_size("maxSize", &s).map_err(bad)?),
        Some(Either::B(v)) => Some(whole_number("maxSize", v, "bytes")?),
    };
    let max_age = match options.max_age {
        None => None,
        Some(Either::A(s)) => Some(crate::units::parse_duration("maxAge", &s).map_err(bad)?),
        Some(Either::B(v)) => Some(Duration::from_secs(whole_number("maxAge", v, "seconds")?)),
    };
    Ok(Job {
        root: PathBuf::from(options.path),
        policy: Policy { max_bytes, max_age },
        dry_run: options.dry_run.unwrap_or(false),
    })
}

fn execute(job: &Job, progress: &mut dyn FnMut(Progress)) -> Result<GcReport> {
    let result = if job.dry_run {
        retention::dry_run(&job.root, &job.policy, progress)
    } else {
        retention::collect(&job.root, &job.policy, progress)
    };
    result
        .map(GcReport::from)
        .map_err(|e| Error::new(Status::GenericFailure, e))
}

/// Applies a retention policy to an fs cache directory: deletes objects not accessed within
/// `maxAge`, then the least recently accessed until the total (objects and temp files) fits
/// `maxSize`, plus leftover temp files and empty directories. Never follows a symbolic link below
/// the directory (one found is listed as an error). Safe while a server or builds use the cache.
/// Per-file faults are listed in the report. Throws on a bad option (code `InvalidArg`; the message names the option,
/// the value and the accepted forms) and when the directory cannot be read. `onProgress` is called
/// on this thread.
#[napi(catch_unwind)]
pub fn gc(options: GcOptions, on_progress: Option<Function<GcProgress, ()>>) -> Result<GcReport> {
    let job = job(options)?;
    let mut failure = None;
    let report = execute(&job, &mut |p| {
        if let (Some(f), None) = (&on_progress, &failure) {
            if let Err(e) = f.call(GcProgress::from(p)) {
                failure = Some(e);
            }
        }
    })?;
    match failure {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

type ProgressFn = ThreadsafeFunction<GcProgress, (), GcProgress, Status, false, true>;

/// Runs `gc` off the JS thread.
pub struct GcTask {
    job: Option<Result<Job>>,
    on_progress: Option<ProgressFn>,
}

impl Task for GcTask {
    type Output = GcReport;
    type JsValue = GcReport;
    fn compute(&mut self) -> Result<GcReport> {
        super::unwind_safe(|| {
            let Some(job) = self.job.take() else {
                return Err(Error::new(Status::GenericFailure, "gc task ran twice"));
            };
            let job = job?;
            let on_progress = self.on_progress.take();
            execute(&job, &mut |p| {
                if let Some(f) = &on_progress {
                    f.call(GcProgress::from(p), ThreadsafeFunctionCallMode::NonBlocking);
                }
            })
        })
    }
    fn resolve(&mut self, _env: Env, output: GcReport) -> Result<GcReport> {
        Ok(output)
    }
}

/// `gc` off the JS thread (bad options reject the promise); `onProgress` is called on the JS
/// thread as updates arrive (the last ones may arrive after the promise resolves).
#[napi(
    ts_args_type = "options: GcOptions, onProgress?: ((progress: GcProgress) => void) | undefined | null",
    ts_return_type = "Promise<GcReport>",
    catch_unwind
)]
pub fn gc_async(options: GcOptions, on_progress: Option<ProgressFn>) -> AsyncTask<GcTask> {
    AsyncTask::new(GcTask {
        job: Some(job(options)),
        on_progress,
    })
}
