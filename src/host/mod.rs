//! The cache host: one small process per workspace data directory and package version that runs
//! the cache proxies of every Nx run in that workspace, so that a run's proxy lives exactly as
//! long as the run, whatever Nx does with the process that called the hooks (the daemon's plugin
//! workers are shut down after any run's `postTasksExecution`, taking everything in them along).
//!
//! Files, in `<workspace data dir>/nx-open-cache/` ([`HostFiles`]):
//! - `host-<version>.lock`: locked ([`lock::HostLock`]) by the host for its whole life; the OS
//!   releases it when the process ends. Exactly one host per directory and version runs at a time.
//! - `host-<version>.json` (owner-only): the host's control URL and admin token, for the hooks.
//! - `host-<version>.log`: the host's output (runs started and ended, why it exited).
//!
//! The hooks talk to the host over a control channel on 127.0.0.1 ([`control`], bearer admin token):
//! register a run (its proxy is started with the hook's options and environment; credentials stay in
//! memory), end it (its proxy stops, its counters come back). When and why runs end and the host
//! exits: [`registry`].

pub mod client;
pub mod control;
pub mod liveness;
pub mod lock;
pub mod registry;

use crate::server::log::rfc3339;
use crate::server::random_token;
use control::ControlState;
use liveness::Liveness;
use lock::HostLock;
use registry::{finish, FinishedRun, Policy, Registry};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a starting host waits for the lock (an exiting host releases it within moments).
pub const LOCK_WAIT: Duration = Duration::from_secs(5);
/// How often the host looks at its runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// The log is emptied when a host starts and finds it larger than this.
pub const MAX_LOG_BYTES: u64 = 1024 * 1024;

/// The host's files for one data directory and package version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFiles {
    pub dir: PathBuf,
    pub lock: PathBuf,
    pub info: PathBuf,
    pub log: PathBuf,
}

impl HostFiles {
    /// `dir` is the plugin's data directory (`<workspace data dir>/nx-open-cache`).
    pub fn new(dir: &Path, version: &str) -> HostFiles {
        let v: String = version
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        HostFiles {
            dir: dir.to_owned(),
            lock: dir.join(format!("host-{v}.lock")),
            info: dir.join(format!("host-{v}.json")),
            log: dir.join(format!("host-{v}.log")),
        }
    }
}

/// What `host-<version>.json` holds.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostInfo {
    pub pid: u32,
    pub version: String,
    /// `http://127.0.0.1:<port>`: the control channel.
    pub url: String,
    /// The control channel's bearer token.
    pub token: String,
    pub started_at: u64,
}

impl fmt::Debug for HostInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostInfo")
            .field("pid", &self.pid)
            .field("version", &self.version)
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Reads `host-<version>.json`: `Ok(None)` when there is none.
pub fn read_info(files: &HostFiles) -> Result<Option<HostInfo>, String> {
    let text = match std::fs::read_to_string(&files.info) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", files.info.display())),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| format!("{} is not a host file: {e}", files.info.display()))
}

/// Writes `host-<version>.json` atomically (temp file + rename), owner-only.
fn write_info(files: &HostFiles, info: &HostInfo) -> Result<(), String> {
    std::fs::create_dir_all(&files.dir)
        .map_err(|e| format!("cannot create {}: {e}", files.dir.display()))?;
    let tmp = files.info.with_extension(format!("json.{}.tmp", info.pid));
    let text = serde_json::to_string_pretty(info).map_err(|e| e.to_string())?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix_native)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, &files.info));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", files.info.display())
    })
}

/// Removes `host-<version>.json` if it still describes this host.
fn remove_info_if_ours(files: &HostFiles, token: &str) {
    if let Ok(Some(info)) = read_info(files) {
        if info.token == token {
            let _ = std::fs::remove_file(&files.info);
        }
    }
}

/// One line in the host's log (its stderr).
pub fn log(message: &str) {
    eprintln!(
        "{} nx-open-cache host[{}]: {message}",
        rfc3339(SystemTime::now()),
        std::process::id()
    );
}

/// How a host is started.
pub struct HostSettings {
    pub files: HostFiles,
    pub version: String,
    pub policy: Policy,
    pub lock_wait: Duration,
    pub sweep_every: Duration,
    pub liveness: Box<dyn Liveness>,
}

impl HostSettings {
    pub fn new(files: HostFiles, version: &str) -> HostSettings {
        HostSettings {
            files,
            version: version.to_owned(),
            policy: Policy::default(),
            lock_wait: LOCK_WAIT,
            sweep_every: SWEEP_EVERY,
            liveness: Box::new(liveness::Procfs),
        }
    }
}

/// A running host; [`RunningHost::wait`] returns when it has exited (and released its lock).
pub struct RunningHost {
    /// The control channel's URL.
    pub url: String,
    state: Arc<ControlState>,
    task: JoinHandle<String>,
}

impl RunningHost {
    /// Asks the host to exit now: registrations are refused, the proxies of runs still registered
    /// stop (requests in flight finish).
    pub fn stop(&self) {
        self.state.stop.notify_one();
    }

    /// A handle that can stop the host from elsewhere (`notify_one`).
    pub fn stopper(&self) -> Arc<tokio::sync::Notify> {
        self.state.stop.clone()
    }

    /// Waits until the host has exited; returns why it did.
    pub async fn wait(self) -> String {
        self.task
            .await
            .unwrap_or_else(|e| format!("the host task failed: {e}"))
    }
}

/// Starts a host: takes the lock (waiting up to `lock_wait` for an exiting host to release it),
/// listens on 127.0.0.1, writes the host file. `Ok(None)` when another host holds the lock.
pub fn open(settings: HostSettings) -> Result<Option<RunningHost>, String> {
    let runtime = crate::runtime::get()?;
    let Some(lock) = HostLock::acquire_within(&settings.files.lock, settings.lock_wait)? else {
        return Ok(None);
    };
    trim_log(&settings.files.log);
    let std_listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot configure the control socket: {e}"))?;
    let addr = std_listener
        .local_addr()
        .map_err(|e| format!("cannot read the control socket's address: {e}"))?;
    let info = HostInfo {
        pid: std::process::id(),
        version: settings.version.clone(),
        url: format!("http://{addr}"),
        token: random_token()?,
        started_at: registry::unix_millis(SystemTime::now()),
    };
    let registry = Registry::new(settings.policy, settings.liveness, Instant::now());
    let state = Arc::new(ControlState::new(registry, info.clone()));
    let _inside = runtime.enter();
    let listener = tokio::net::TcpListener::from_std(std_listener)
        .map_err(|e| format!("cannot register the control socket: {e}"))?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let server = tokio::spawn(control::serve(listener, state.clone(), shutdown_rx));
    if let Err(e) = write_info(&settings.files, &info) {
        let _ = shutdown.send(true);
        return Err(e);
    }
    log(&format!(
        "started (version {}, control {}, data {})",
        info.version,
        info.url,
        settings.files.dir.display()
    ));
    let task = tokio::spawn(lifetime(
        state.clone(),
        Lifetime {
            lock,
            files: settings.files,
            sweep_every: settings.sweep_every,
            shutdown,
            server,
        },
    ));
    Ok(Some(RunningHost {
        url: info.url,
        state,
        task,
    }))
}

/// What the host's lifetime task owns.
struct Lifetime {
    lock: HostLock,
    files: HostFiles,
    sweep_every: Duration,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
}

/// Sweeps the runs until the host decides (or is told) to exit, then: control channel closed
/// first (new registrations go elsewhere), host file removed, the runs left stopped, lock released.
async fn lifetime(state: Arc<ControlState>, mut life: Lifetime) -> String {
    let (reason, remaining) = loop {
        tokio::select! {
            () = tokio::time::sleep(life.sweep_every) => {}
            () = state.stop.notified() => {
                let runs = state.registry().close();
                break ("asked to stop".to_owned(), runs);
            }
        }
        let sweep = state.registry().sweep(Instant::now());
        for run in sweep.reaped {
            let id = run.run_id.clone();
            log_ended(
                &id,
                "its Nx command ended without postTasksExecution",
                vec![run],
            )
            .await;
        }
        if let Some(reason) = sweep.exit {
            break (reason, sweep.remaining);
        }
        keep_files(&mut life, &state);
    };
    let _ = life.shutdown.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), &mut life.server).await;
    remove_info_if_ours(&life.files, &state.info.token);
    for run in remaining {
        let id = run.run_id.clone();
        log_ended(&id, &format!("the host exits ({reason})"), vec![run]).await;
    }
    log(&format!("exiting: {reason}"));
    drop(life.lock);
    reason
}

/// Stops runs and logs their counters.
pub(crate) async fn log_ended(id: &str, why: &str, runs: Vec<FinishedRun>) {
    if let Some(ended) = finish(runs).await {
        let s = &ended.stats;
        log(&format!(
            "run {id} ended ({why}): {} hits, {} misses, {} stored, {} errors",
            s.hits, s.misses, s.stored, s.error_count
        ));
    }
}

/// `nx reset` deletes the workspace data directory under a running host: while runs are
/// registered, take the lock file again and rewrite the host file, so that their
/// `postTasksExecution` still finds this host. Nothing is re-created without runs (the host exits
/// soon) or when the data directory's parent is gone too (the workspace was deleted). When another
/// host already took the path, this one only finishes its runs (it refuses new ones).
fn keep_files(life: &mut Lifetime, state: &ControlState) {
    if state.is_orphaned() || state.registry().is_empty() {
        return;
    }
    let anchor = life.files.dir.parent().and_then(Path::parent);
    if !anchor.is_some_and(Path::exists) {
        return;
    }
    if !life.lock.still_at_path() {
        match HostLock::try_acquire(&life.files.lock) {
            Ok(Some(lock)) => {
                life.lock = lock;
                log("the lock file was removed: taken again");
            }
            Ok(None) | Err(_) => {
                state.set_orphaned();
                log("another host took over this directory: finishing the runs here, taking no new ones");
                return;
            }
        }
    }
    let ours = matches!(read_info(&life.files), Ok(Some(ref i)) if i.token == state.info.token);
    if !ours {
        if let Err(e) = write_info(&life.files, &state.info) {
            log(&e);
        } else {
            log("the host file was removed: written again");
        }
    }
}

fn trim_log(path: &Path) {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > MAX_LOG_BYTES) {
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(path) {
            let _ = f.set_len(0);
        }
    }
}
