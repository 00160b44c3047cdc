//! The runs a cache host serves, and when the host may exit.
//!
//! Each run gets its own proxy ([`proxy::start`]: own port, token, counters, store guard), so a
//! run's summary counts only its own traffic and one run's end never touches another's proxy. A
//! run ends when its `postTasksExecution` says so ([`Registry::end`]), or when the Nx command
//! behind it was seen and is gone ([`Liveness`]). A run whose command cannot be watched keeps the
//! host while it has had cache traffic within [`Policy::silent_run_expiry`]; it is never stopped
//! for being silent while another run keeps the host alive (a silent run may be one long task).
//! The host exits [`Policy::idle_grace`] after its last run ended, or once every run left is
//! silent past the expiry; the decision and the refusal of new runs are one step under the
//! registry's lock, so no registration can slip in between.
//!
//! An Nx without run ids (before 21) cannot tell the host which run ends: such runs are counted,
//! each keeps its proxy until the last of them ends, and that last end gets their summed counters.
//! Time is passed in (`now`), so that tests can move it.

use super::liveness::{ClientProcess, Liveness};
use crate::config::{self, Mode};
use crate::proxy::{self, Proxy};
use crate::stats::{ErrorCount, RefusalCount, Snapshot, MAX_EVENTS, MAX_REFUSAL_HASHES};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

/// How long a host stays after its last run ended: back-to-back runs reuse it.
pub const DEFAULT_IDLE_GRACE: Duration = Duration::from_secs(5);
/// How long a run whose Nx command cannot be watched may go without cache traffic before it stops
/// keeping the host alive. Long on purpose: a task may run for hours without a cache request, and
/// an upload to a host that has gone fails that task.
pub const DEFAULT_SILENT_RUN_EXPIRY: Duration = Duration::from_secs(6 * 3600);
/// How long after its Nx command was found gone a run ends (that command waits for
/// `postTasksExecution` before exiting, so none will come).
pub const DEFAULT_CLIENT_GONE_GRACE: Duration = Duration::from_secs(5);
/// Longest run id accepted (Nx's are decimal u64 hashes).
pub const MAX_RUN_ID_LEN: usize = 128;

/// When runs end and the host exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub idle_grace: Duration,
    pub silent_run_expiry: Duration,
    pub client_gone_grace: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            idle_grace: DEFAULT_IDLE_GRACE,
            silent_run_expiry: DEFAULT_SILENT_RUN_EXPIRY,
            client_gone_grace: DEFAULT_CLIENT_GONE_GRACE,
        }
    }
}

/// What `preTasksExecution` sends: the run, its plugin options and the hook's environment (cloud
/// credentials are read from it; it is never written anywhere).
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRequest {
    /// Nx's run id (`context.id`); none from an Nx that gives none.
    #[serde(default)]
    pub id: Option<String>,
    pub workspace_root: PathBuf,
    #[serde(default)]
    pub options: serde_json::Value,
    #[serde(default)]
    pub env: HashMap<String, String>,
    /// Nx's command line (`context.argv`), to watch the command (see [`Liveness`]).
    #[serde(default)]
    pub argv: Vec<String>,
}

impl fmt::Debug for RunRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The environment's values may be secrets: names only.
        let mut names: Vec<&String> = self.env.keys().collect();
        names.sort();
        f.debug_struct("RunRequest")
            .field("id", &self.id)
            .field("workspace_root", &self.workspace_root)
            .field("options", &self.options)
            .field("env (names)", &names)
            .field("argv", &self.argv)
            .finish()
    }
}

/// Where a registered run's Nx sends its cache traffic.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attached {
    pub run_id: String,
    /// `http://127.0.0.1:<port>`: the value for NX_SELF_HOSTED_REMOTE_CACHE_SERVER.
    pub url: String,
    /// The value for NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN.
    pub token: String,
    pub location: String,
    pub mode: String,
    pub mode_source: String,
}

impl fmt::Debug for Attached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attached")
            .field("run_id", &self.run_id)
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("location", &self.location)
            .field("mode", &self.mode)
            .finish()
    }
}

/// Why a run was not registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterError {
    /// The host is exiting: find (or start) another.
    Closing,
    /// The request cannot be served by any host (a configuration mistake, a bad id).
    Invalid(String),
    /// This host could not start the run's proxy.
    Failed(String),
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterError::Closing => write!(f, "the cache host is exiting"),
            RegisterError::Invalid(m) | RegisterError::Failed(m) => write!(f, "{m}"),
        }
    }
}

/// A run taken out of the registry; its proxy still runs until [`finish`] stops it.
pub struct FinishedRun {
    pub run_id: String,
    pub proxy: Proxy,
    pub mode_source: String,
    pub started: SystemTime,
}

/// What [`Registry::end`] did.
pub enum EndOutcome {
    /// These runs ended (one, or every run of an Nx without run ids).
    Finished(Vec<FinishedRun>),
    /// An Nx without run ids ended one run, and `open` others are still running: every proxy
    /// stays until the last ends.
    Deferred { open: usize },
    /// No such run here.
    Unknown,
}

/// What [`Registry::sweep`] decided.
#[derive(Default)]
pub struct Sweep {
    /// Runs that ended because their Nx command is gone.
    pub reaped: Vec<FinishedRun>,
    /// The host should exit, and why; `remaining` holds the runs still registered.
    pub exit: Option<String>,
    pub remaining: Vec<FinishedRun>,
}

/// A run's final counters and where it went, as `postTasksExecution` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ended {
    pub run_id: String,
    pub location: String,
    pub mode: String,
    pub mode_source: String,
    /// Milliseconds since the Unix epoch.
    pub started_at: u64,
    /// How many runs these counters cover (more than one only for an Nx without run ids).
    pub runs: usize,
    pub stats: Snapshot,
}

/// A registered run, as `nx-open-cache host` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    pub run_id: String,
    pub location: String,
    pub mode: String,
    pub started_at: u64,
    /// Seconds since its last cache traffic (or registration).
    pub silent_seconds: u64,
    /// `running`, `gone` or `unknown` (see [`Liveness`]).
    pub command: &'static str,
}

struct Run {
    proxy: Proxy,
    mode_source: String,
    started: SystemTime,
    anonymous: bool,
    traffic: u64,
    last_traffic: Instant,
    argv: Vec<String>,
    clients: Vec<ClientProcess>,
    gone_since: Option<Instant>,
}

impl Run {
    fn attached(&self, run_id: &str, mode_source: &str) -> Attached {
        Attached {
            run_id: run_id.to_owned(),
            url: self.proxy.url.clone(),
            token: self.proxy.token.clone(),
            location: self.proxy.location.clone(),
            mode: self.proxy.mode.as_str().to_owned(),
            mode_source: mode_source.to_owned(),
        }
    }

    /// Notes cache traffic and whether the Nx command still runs.
    fn observe(&mut self, now: Instant, liveness: &dyn Liveness) {
        let traffic = self.proxy.traffic();
        if traffic != self.traffic {
            self.traffic = traffic;
            self.last_traffic = now;
        }
        if self.clients.is_empty() {
            return;
        }
        if self.clients.iter().any(|c| liveness.alive(c, &self.argv)) {
            self.gone_since = None;
        } else if self.gone_since.is_none() {
            self.gone_since = Some(now);
        }
    }

    fn command_state(&self) -> &'static str {
        match (self.clients.is_empty(), self.gone_since) {
            (true, _) => "unknown",
            (false, None) => "running",
            (false, Some(_)) => "gone",
        }
    }

    /// Silent past the expiry, and its command cannot be watched.
    fn silent(&self, now: Instant, policy: &Policy) -> bool {
        self.clients.is_empty()
            && now.saturating_duration_since(self.last_traffic) >= policy.silent_run_expiry
    }

    fn finished(self, run_id: String) -> FinishedRun {
        FinishedRun {
            run_id,
            proxy: self.proxy,
            mode_source: self.mode_source,
            started: self.started,
        }
    }
}

fn valid_run_id(id: &str) -> Result<(), RegisterError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_RUN_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        let shown: String = id.chars().take(MAX_RUN_ID_LEN).collect();
        Err(RegisterError::Invalid(format!(
            "invalid run id {shown:?}: expected 1 to {MAX_RUN_ID_LEN} ASCII letters, digits, '_', '-' or '.'"
        )))
    }
}

/// The runs of one host.
pub struct Registry {
    runs: BTreeMap<String, Run>,
    anonymous_open: usize,
    next_anonymous: u64,
    closing: bool,
    idle_since: Instant,
    policy: Policy,
    liveness: Box<dyn Liveness>,
}

impl Registry {
    pub fn new(policy: Policy, liveness: Box<dyn Liveness>, now: Instant) -> Self {
        Registry {
            runs: BTreeMap::new(),
            anonymous_open: 0,
            next_anonymous: 1,
            closing: false,
            idle_since: now,
            policy,
            liveness,
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    pub fn is_closing(&self) -> bool {
        self.closing
    }

    pub fn len(&self) -> usize {
        self.runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Starts the run's proxy (or returns the one it already has: a retried registration). Must
    /// be called inside the tokio runtime's context (the proxy's store guard spawns its check).
    pub fn register(&mut self, req: &RunRequest, now: Instant) -> Result<Attached, RegisterError> {
        if self.closing {
            return Err(RegisterError::Closing);
        }
        let config = config::resolve(&req.options, &req.env, &req.workspace_root)
            .map_err(|e| RegisterError::Invalid(e.to_string()))?;
        if config.mode == Mode::NoCache {
            return Err(RegisterError::Invalid(format!(
                "mode is no-cache ({}): no run to serve",
                config.mode_source
            )));
        }
        let (run_id, anonymous) = match &req.id {
            Some(id) => {
                valid_run_id(id)?;
                if let Some(run) = self.runs.get(id) {
                    return Ok(run.attached(id, &run.mode_source));
                }
                (id.clone(), false)
            }
            None => {
                // Unique beyond this host's life too: it names the run's summary file.
                let id = format!(
                    "anonymous-{}-{}",
                    unix_millis(SystemTime::now()),
                    self.next_anonymous
                );
                self.next_anonymous += 1;
                (id, true)
            }
        };
        let proxy = proxy::start(&config, &req.env).map_err(RegisterError::Failed)?;
        let clients = if req.argv.is_empty() {
            Vec::new()
        } else {
            self.liveness.find(&req.argv)
        };
        let run = Run {
            traffic: proxy.traffic(),
            proxy,
            mode_source: config.mode_source.clone(),
            started: SystemTime::now(),
            anonymous,
            last_traffic: now,
            argv: req.argv.clone(),
            clients,
            gone_since: None,
        };
        let attached = run.attached(&run_id, &config.mode_source);
        if anonymous {
            self.anonymous_open += 1;
        }
        self.runs.insert(run_id, run);
        Ok(attached)
    }

    /// `postTasksExecution` of run `id` (`None`: of an Nx without run ids).
    pub fn end(&mut self, id: Option<&str>, now: Instant) -> EndOutcome {
        let finished = match id {
            Some(id) => match self.runs.remove(id) {
                Some(run) => vec![run.finished(id.to_owned())],
                None => return EndOutcome::Unknown,
            },
            None => {
                if self.anonymous_open == 0 {
                    return EndOutcome::Unknown;
                }
                self.anonymous_open -= 1;
                if self.anonymous_open > 0 {
                    return EndOutcome::Deferred {
                        open: self.anonymous_open,
                    };
                }
                self.take(|run| run.anonymous)
            }
        };
        if self.runs.is_empty() {
            self.idle_since = now;
        }
        EndOutcome::Finished(finished)
    }

    /// Periodic check: notes traffic, ends runs whose Nx command is gone, and decides whether the
    /// host exits (then it refuses registrations from now on).
    pub fn sweep(&mut self, now: Instant) -> Sweep {
        let mut sweep = Sweep::default();
        if self.closing {
            sweep.exit = Some("stopping".to_owned());
            sweep.remaining = self.take(|_| true);
            return sweep;
        }
        for run in self.runs.values_mut() {
            run.observe(now, self.liveness.as_ref());
        }
        let grace = self.policy.client_gone_grace;
        sweep.reaped = self.take(|run| {
            run.gone_since
                .is_some_and(|t| now.saturating_duration_since(t) >= grace)
        });
        if !sweep.reaped.is_empty() && self.runs.is_empty() {
            self.idle_since = now;
        }
        if self.runs.is_empty() {
            if now.saturating_duration_since(self.idle_since) >= self.policy.idle_grace {
                self.closing = true;
                sweep.exit = Some(format!(
                    "no run for {} s",
                    self.policy.idle_grace.as_secs_f32()
                ));
            }
        } else if self.runs.values().all(|r| r.silent(now, &self.policy)) {
            self.closing = true;
            sweep.exit = Some(format!(
                "every run left ({}) had no cache traffic for {} s and its Nx command cannot be watched",
                self.runs.len(),
                self.policy.silent_run_expiry.as_secs()
            ));
            sweep.remaining = self.take(|_| true);
        }
        sweep
    }

    /// Refuses registrations from now on and hands over every run (a stop request).
    pub fn close(&mut self) -> Vec<FinishedRun> {
        self.closing = true;
        self.take(|_| true)
    }

    pub fn status(&self, now: Instant) -> Vec<RunStatus> {
        self.runs
            .iter()
            .map(|(id, run)| RunStatus {
                run_id: id.clone(),
                location: run.proxy.location.clone(),
                mode: run.proxy.mode.as_str().to_owned(),
                started_at: unix_millis(run.started),
                silent_seconds: now.saturating_duration_since(run.last_traffic).as_secs(),
                command: run.command_state(),
            })
            .collect()
    }

    fn take(&mut self, mut which: impl FnMut(&Run) -> bool) -> Vec<FinishedRun> {
        let ids: Vec<String> = self
            .runs
            .iter()
            .filter(|(_, run)| which(run))
            .map(|(id, _)| id.clone())
            .collect();
        let mut taken = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(run) = self.runs.remove(&id) {
                if run.anonymous {
                    self.anonymous_open = self.anonymous_open.saturating_sub(1);
                }
                taken.push(run.finished(id));
            }
        }
        taken
    }
}

pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Stops the proxies of `runs` (requests in flight finish) and returns their counters as one
/// summary (`None` for no runs).
pub async fn finish(runs: Vec<FinishedRun>) -> Option<Ended> {
    let mut ended: Option<Ended> = None;
    for run in runs {
        let location = run.proxy.location.clone();
        let mode = run.proxy.mode.as_str().to_owned();
        let stats = run.proxy.stop().await;
        match ended.as_mut() {
            None => {
                ended = Some(Ended {
                    run_id: run.run_id,
                    location,
                    mode,
                    mode_source: run.mode_source,
                    started_at: unix_millis(run.started),
                    runs: 1,
                    stats,
                })
            }
            Some(e) => {
                e.runs += 1;
                e.started_at = e.started_at.min(unix_millis(run.started));
                merge(&mut e.stats, stats);
            }
        }
    }
    ended
}

/// Adds `other`'s counters to `into` (faults and refusals grouped by reason; `other`'s events
/// after `into`'s, at most [`MAX_EVENTS`] in all, the rest counted as dropped).
pub fn merge(into: &mut Snapshot, other: Snapshot) {
    into.meta_reads += other.meta_reads;
    into.meta_writes += other.meta_writes;
    into.events_dropped += other.events_dropped;
    let room = MAX_EVENTS.saturating_sub(into.events.len());
    let extra = other.events.len().saturating_sub(room);
    into.events_dropped += u64::try_from(extra).unwrap_or(u64::MAX);
    into.events.extend(other.events.into_iter().take(room));
    into.hits += other.hits;
    into.misses += other.misses;
    into.stored += other.stored;
    into.already_stored += other.already_stored;
    into.refused_writes += other.refused_writes;
    into.bytes_down += other.bytes_down;
    into.bytes_up += other.bytes_up;
    into.cache_millis += other.cache_millis;
    into.error_count += other.error_count;
    into.refused_count += other.refused_count;
    into.routine_count += other.routine_count;
    for e in other.errors {
        match into.errors.iter_mut().find(|x| x.reason == e.reason) {
            Some(x) => {
                x.count += e.count;
                x.skipped |= e.skipped;
            }
            None => into.errors.push(ErrorCount { ..e }),
        }
    }
    // The cause behind most requests first, as one run's snapshot orders them.
    into.errors
        .sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
    for r in other.refusals {
        match into.refusals.iter_mut().find(|x| x.reason == r.reason) {
            Some(x) => {
                x.count += r.count;
                x.routine &= r.routine;
                for h in r.hashes {
                    if x.hashes.len() < MAX_REFUSAL_HASHES && !x.hashes.contains(&h) {
                        x.hashes.push(h);
                    }
                }
            }
            None => into.refusals.push(RefusalCount { ..r }),
        }
    }
}
