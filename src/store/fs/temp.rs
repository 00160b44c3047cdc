//! Temp files of the fs store: what their names say about their writer, and when one may go.
//!
//! A temp file is named `<hash>.<host>.<pid>.<start>.<random>.tmp`: `host` identifies the machine
//! boot and process namespace that wrote it (16 hex digits of a hash of the kernel's boot id and the
//! pid namespace; `0000000000000000` where that is unknown), `pid` and `start` the writing process
//! (its start time in clock ticks since boot, so that a reused pid is not mistaken for the writer).
//!
//! A temp file may be removed when:
//! - its writer is provably gone: same host identity as this process (same boot, same pid
//!   namespace, so the same pids) and no process with that pid and start time exists; or
//! - it was not written to for [`STALE_TMP_AGE`] (a writer refreshes the mtime with every write):
//!   the rule for writers on other machines or in other containers, and for names of other
//!   formats. A temp file dated in the future is set to now when first seen, so its age counts
//!   from then (a clock error never keeps it forever).

use super::dir::{Dir, Kind};
use crate::key::TaskHash;
use std::ffi::OsString;
use std::io;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// The directory temp files are written in, directly below the root.
pub const TMP_DIR: &str = ".tmp";
/// Temp files of writers that cannot be checked are removed when not written to for this long.
pub const STALE_TMP_AGE: Duration = Duration::from_secs(3600);
/// A modification time further than this ahead of the clock is set to now (objects and temp
/// files alike); a time less far ahead counts as now.
pub const FUTURE_TOLERANCE: Duration = Duration::from_secs(60);

/// Who wrote a temp file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Writer {
    /// 0: unknown.
    host: u64,
    pid: u32,
    start: u64,
}

/// This process as a writer.
fn this_writer() -> Writer {
    static THIS: OnceLock<Writer> = OnceLock::new();
    *THIS.get_or_init(|| {
        let pid = std::process::id();
        let start = process_start("self").ok().flatten();
        match (host_identity(pid), start) {
            (Some(host), Some(start)) => Writer { host, pid, start },
            _ => Writer {
                host: 0,
                pid,
                start: 0,
            },
        }
    })
}

/// A hash of the boot id and the pid namespace: equal only for processes that share pids.
/// `None` unless /proc is this process's own (its pid there is ours).
#[cfg(all(target_os = "linux", unix_native))]
fn host_identity(pid: u32) -> Option<u64> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let own_pid: u32 = stat.split_whitespace().next()?.parse().ok()?;
    if own_pid != pid || boot.trim().is_empty() {
        return None;
    }
    let id = format!("{}|{}", boot.trim(), ns.display());
    Some(xxhash_rust::xxh3::xxh3_64(id.as_bytes()) | 1)
}

#[cfg(not(all(target_os = "linux", unix_native)))]
fn host_identity(_pid: u32) -> Option<u64> {
    None
}

/// The start time (clock ticks since boot) of process `pid` (`self` for this one): `Ok(None)`
/// when its stat cannot be parsed, an error (`NotFound`: no such process) when it cannot be read.
#[cfg(all(target_os = "linux", unix_native))]
fn process_start(pid: &str) -> std::io::Result<Option<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces and parentheses) start at field 3;
    // the start time is field 22.
    let rest = stat.rfind(')').and_then(|end| stat.get(end + 1..));
    Ok(rest.and_then(|r| r.split_whitespace().nth(19)?.parse().ok()))
}

#[cfg(not(all(target_os = "linux", unix_native)))]
fn process_start(_pid: &str) -> std::io::Result<Option<u64>> {
    Ok(None)
}

/// Whether a writer of this host is certainly not running any more: no process with its pid, or
/// one that started at another time.
fn provably_gone(w: &Writer) -> bool {
    let me = this_writer();
    if me.host == 0 || w.host != me.host {
        return false;
    }
    if w.pid == me.pid {
        return w.start != me.start;
    }
    match process_start(&w.pid.to_string()) {
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        Ok(start) => start.is_some_and(|s| s != w.start),
    }
}

/// A fresh temp name for an object of `hash`, written by this process.
pub fn temp_name(hash: &TaskHash) -> String {
    let mut rand = [0u8; 8];
    // A failing OS random source only makes the name less unique; pid and start time still say
    // who wrote it, and the file is created exclusively.
    let _ = getrandom::fill(&mut rand);
    let w = this_writer();
    format!(
        "{}.{:016x}.{}.{}.{}.tmp",
        hash.as_str(),
        w.host,
        w.pid,
        w.start,
        hex::encode(rand)
    )
}

/// The writer a temp name records (names of other formats: `None`).
fn writer_of(name: &str) -> Option<Writer> {
    let mut parts = name.split('.');
    let (_hash, host, pid, start, rand, ext) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if parts.next().is_some() || ext != "tmp" || host.len() != 16 || rand.is_empty() {
        return None;
    }
    Some(Writer {
        host: u64::from_str_radix(host, 16).ok()?,
        pid: pid.parse().ok()?,
        start: start.parse().ok()?,
    })
}

/// Whether `name` is a temp file this process is writing (or wrote).
pub fn is_own(name: &str) -> bool {
    let me = this_writer();
    me.host != 0 && writer_of(name) == Some(me)
}

/// Why a temp file may be removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removable {
    /// Its writer ran on this host and is gone.
    WriterGone,
    /// Not written to for the age limit.
    Stale,
}

/// Whether the temp file `name`, last written at `mtime` (already clamped, see
/// [`clamp_future`]), may be removed now.
pub fn removable(
    name: &str,
    mtime: SystemTime,
    now: SystemTime,
    age: Duration,
) -> Option<Removable> {
    if writer_of(name).is_some_and(|w| provably_gone(&w)) {
        return Some(Removable::WriterGone);
    }
    let idle = now.duration_since(mtime).unwrap_or_default();
    (idle >= age).then_some(Removable::Stale)
}

/// A modification time as retention and access tracking count it: one in the future counts as
/// `now`. The second value says whether the file's time should be set to `now` (more than
/// [`FUTURE_TOLERANCE`] ahead).
pub fn clamp_future(mtime: SystemTime, now: SystemTime) -> (SystemTime, bool) {
    match mtime.duration_since(now) {
        Ok(ahead) if ahead > Duration::ZERO => (now, ahead > FUTURE_TOLERANCE),
        _ => (mtime, false),
    }
}

/// What [`sweep`] did with one entry of a temp directory.
#[derive(Debug)]
pub enum Swept {
    /// Removed (in a dry run: would be).
    Removed {
        len: u64,
    },
    /// Kept: its writer may be at work. `counted` is its size, or 0 when it shares its inode with
    /// another name (a leftover already linked into place, counted there); `own`: written by
    /// this process.
    Kept {
        counted: u64,
        own: bool,
    },
    /// A symbolic link named like a temp file: never followed, not removed.
    Link {
        name: OsString,
    },
    Failed {
        name: OsString,
        error: io::Error,
    },
}

/// Goes through the temp files (`*.tmp`) of `dir`: removes those [`removable`] now (unless
/// `dry`), sets future times to now, and says what it found. Other names are left alone.
pub fn sweep(dir: &Dir, now: SystemTime, age: Duration, dry: bool) -> io::Result<Vec<Swept>> {
    let mut out = Vec::new();
    for entry in dir.entries()? {
        let Some(name) = entry.name.to_str().filter(|n| n.ends_with(".tmp")) else {
            continue;
        };
        let stat = match dir.stat(&entry.name) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => {
                out.push(Swept::Failed {
                    name: entry.name,
                    error,
                });
                continue;
            }
        };
        match stat.kind {
            Kind::Symlink => {
                out.push(Swept::Link { name: entry.name });
                continue;
            }
            Kind::File => {}
            _ => continue,
        }
        let (mtime, reset) = clamp_future(stat.mtime, now);
        if reset && !dry {
            let _ = dir.set_mtime(&entry.name, now);
        }
        if removable(name, mtime, now, age).is_none() {
            out.push(Swept::Kept {
                counted: if stat.nlink <= 1 { stat.len } else { 0 },
                own: is_own(name),
            });
            continue;
        }
        match if dry {
            Ok(())
        } else {
            dir.remove_file(&entry.name)
        } {
            Ok(()) => out.push(Swept::Removed { len: stat.len }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(error) => out.push(Swept::Failed {
                name: entry.name,
                error,
            }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_record_their_writer() {
        let hash = TaskHash::parse("12345").expect("hash");
        let name = temp_name(&hash);
        assert!(
            name.starts_with("12345.") && name.ends_with(".tmp"),
            "{name}"
        );
        assert_eq!(writer_of(&name), Some(this_writer()));
        assert!(is_own(&name) || this_writer().host == 0);
        // Other formats and damaged names carry no writer.
        for other in [
            "12345.99.abc.0011.tmp",
            "x.tmp",
            "1.zz.1.1.r.tmp",
            "1.0123456789abcdef.1.1.r.txt",
        ] {
            assert_eq!(writer_of(other), None, "{other}");
        }
    }

    #[test]
    fn a_writer_is_gone_only_when_provably_so() {
        let me = this_writer();
        let now = SystemTime::now();
        let own = temp_name(&TaskHash::parse("1").expect("hash"));
        assert_eq!(
            removable(&own, now, now, STALE_TMP_AGE),
            None,
            "our own temp stays"
        );
        if me.host != 0 {
            // Same host, our pid, another start time: a previous process with our pid.
            let reused = format!("1.{:016x}.{}.{}.00.tmp", me.host, me.pid, me.start + 1);
            assert_eq!(
                removable(&reused, now, now, STALE_TMP_AGE),
                Some(Removable::WriterGone)
            );
        }
        // Another host: only the age rule.
        let foreign = format!("1.{:016x}.{}.{}.00.tmp", me.host ^ 2, me.pid, me.start + 1);
        assert_eq!(removable(&foreign, now, now, STALE_TMP_AGE), None);
        let old = now - STALE_TMP_AGE;
        assert_eq!(
            removable(&foreign, old, now, STALE_TMP_AGE),
            Some(Removable::Stale)
        );
    }

    #[test]
    fn future_times_count_as_now() {
        let now = SystemTime::now();
        let past = now - Duration::from_secs(5);
        assert_eq!(clamp_future(past, now), (past, false));
        assert_eq!(
            clamp_future(now + Duration::from_secs(5), now),
            (now, false)
        );
        assert_eq!(
            clamp_future(now + Duration::from_secs(3600), now),
            (now, true)
        );
    }
}
