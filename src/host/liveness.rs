//! Whether the Nx command behind a run still runs. Nx gives the hooks its command line
//! (`context.argv`, Nx's `process.argv`) but not its process id; on Linux the host looks for
//! processes with that command line in `/proc` when the run registers, and remembers them by
//! process id and start time (so a reused pid is not mistaken for the client). While one of them
//! lives the run is alive, however long its tasks are silent; once all are gone, no
//! `postTasksExecution` can come any more (Nx waits for it before exiting), so the run may end.
//! Where nothing is found (another OS, a command line rewritten on the way) the run's liveness is
//! unknown and only its cache traffic counts.

use std::path::Path;

/// A process that looked like a run's Nx command when the run registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientProcess {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub started: u64,
}

/// How the registry learns whether a run's Nx command still runs (a trait so that tests can
/// decide).
pub trait Liveness: Send + Sync + 'static {
    /// The processes whose command line is `argv`, now.
    fn find(&self, argv: &[String]) -> Vec<ClientProcess>;
    /// Whether `process` (found earlier for `argv`) still runs that command.
    fn alive(&self, process: &ClientProcess, argv: &[String]) -> bool;
}

/// The real thing: `/proc` on Linux; elsewhere it finds nothing (liveness unknown).
#[derive(Debug, Default, Clone, Copy)]
pub struct Procfs;

impl Liveness for Procfs {
    fn find(&self, argv: &[String]) -> Vec<ClientProcess> {
        // Under `portable-fallbacks` as on systems without /proc: nothing found.
        if !cfg!(unix_native) || argv.len() < 2 || !Path::new("/proc/self/stat").exists() {
            return Vec::new();
        }
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let own = std::process::id();
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != own)
            .filter(|&pid| read_cmdline(pid).is_some_and(|c| cmdline_matches(&c, argv)))
            .filter_map(|pid| {
                Some(ClientProcess {
                    pid,
                    started: start_time(pid)?,
                })
            })
            .collect()
    }

    fn alive(&self, process: &ClientProcess, argv: &[String]) -> bool {
        // The same process (pid and start time), still with that command line: a fork of Nx caught
        // before its exec matched too, and is not Nx once it runs a task.
        start_time(process.pid) == Some(process.started)
            && read_cmdline(process.pid).is_some_and(|c| cmdline_matches(&c, argv))
    }
}

/// Whether a process command line (`/proc/<pid>/cmdline`, NUL-separated) is Nx's `process.argv`:
/// Node resolves the script path and leaves its own flags out of `process.argv`, so the command
/// line must end with the same arguments, preceded by a script of the same file name.
pub fn cmdline_matches(cmdline: &[String], argv: &[String]) -> bool {
    let (Some(script), Some(args)) = (argv.get(1), argv.get(2..)) else {
        return false;
    };
    let Some(split) = cmdline.len().checked_sub(args.len() + 1) else {
        return false;
    };
    if split == 0 {
        // No executable before the script.
        return false;
    }
    match cmdline.get(split..).and_then(<[String]>::split_first) {
        Some((given, rest)) => {
            rest == args && Path::new(given).file_name() == Path::new(script).file_name()
        }
        None => false,
    }
}

/// Whether this process, or its parent, is the Nx command whose `process.argv` is `argv` (Linux;
/// elsewhere false): the hooks then run in Nx's own process or in a plugin worker of its own, which
/// lives as long as the run, rather than in the daemon's workers, which serve every run.
pub fn in_nx_command(argv: &[String]) -> bool {
    let own = std::process::id();
    [Some(own), parent_of(own)]
        .into_iter()
        .flatten()
        .any(|pid| read_cmdline(pid).is_some_and(|c| cmdline_matches(&c, argv)))
}

/// `/proc/<pid>/stat` field 4 (the parent's pid).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.get(stat.rfind(')')? + 1..)?;
    // `after` starts at field 3 (state): field 4 is the next.
    after.split_whitespace().nth(1)?.parse().ok()
}

fn read_cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&raw);
    Some(
        text.trim_end_matches('\0')
            .split('\0')
            .map(str::to_owned)
            .collect(),
    )
}

/// `/proc/<pid>/stat` field 22 (start time), or None when the process is gone or a zombie.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or parentheses.
    let after = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = after.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `after` starts at field 3 (state): field 22 is 19 fields later.
    fields.nth(18)?.parse().ok()
}
