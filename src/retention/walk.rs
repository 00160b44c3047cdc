//! The stages of a retention run over the directory tree, none of which follows a symbolic link:
//! every directory is opened relative to its parent's descriptor (`crate::store::fs::dir`), and
//! files are examined, retimed and deleted relative to their directory's descriptor.
//!
//! Memory is bounded whatever the number of objects: a walk holds one open directory and its
//! listing per level of depth, and keeps only the [`BATCH`] oldest objects (a max-heap by last
//! access, then name, then directory); the first walk also sums every object's size. When the
//! batch runs out before the store is within its budget (or while its objects are all expired),
//! the tree is walked again for the next oldest after the last one handled, at most
//! [`MAX_PASSES`] walks per run (the next run goes on from there).

use super::{Count, Policy, Progressor, Report, Run};
use crate::key::TaskHash;
use crate::store::fs::dir::{Beneath, Dir, Entry, Kind};
use crate::store::fs::temp::{self, Swept, TMP_DIR};
use crate::store::fs::{fan_of, STALE_TMP_AGE};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::SystemTime;

/// Objects a walk keeps as candidates for deletion (~120 bytes each: ~2 MiB).
pub(super) const BATCH: usize = 16 * 1024;
/// Walks of the tree in one run: up to `BATCH * MAX_PASSES` objects deleted per run.
pub(super) const MAX_PASSES: usize = 32;

const LINK_REASON: &str =
    "a symbolic link: not followed (nothing below the cache directory may be a link)";

/// The store being walked.
pub(super) struct Tree {
    root: Dir,
    /// The root as given, for messages.
    shown: PathBuf,
    /// Bytes of the temp files kept that this process is writing (its budget counts them).
    pub(super) own_temp_bytes: u64,
    /// An object's path for the budget (one buffer for the whole run).
    budget_path: String,
}

/// An object, a candidate for deletion. Ordered by last access, then name, then directory: a
/// total order that is the same in every walk.
struct Object {
    /// Last access as retention counts it (a future time counts as the run's start).
    accessed: SystemTime,
    name: OsString,
    /// Its directory below the root (shared by the objects of one directory).
    dir: Rc<[OsString]>,
    len: u64,
    /// Its mtime on disk after the walk (a newer one means it was read since).
    seen: SystemTime,
}

impl Object {
    fn key(&self) -> (SystemTime, &OsStr, &[OsString]) {
        (self.accessed, &self.name, &self.dir)
    }
}

impl PartialEq for Object {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Object {}

impl PartialOrd for Object {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Object {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// The oldest objects a walk found (at most `cap`), after `after` when set.
struct Oldest {
    heap: BinaryHeap<Object>,
    cap: usize,
    after: Option<Object>,
}

impl Oldest {
    fn new(cap: usize, after: Option<Object>) -> Oldest {
        Oldest {
            heap: BinaryHeap::new(),
            cap: cap.max(1),
            after,
        }
    }

    fn offer(&mut self, object: Object) {
        if self.after.as_ref().is_some_and(|a| object <= *a) {
            return;
        }
        if self.heap.len() < self.cap {
            self.heap.push(object);
        } else if self.heap.peek().is_some_and(|youngest| object < *youngest) {
            self.heap.pop();
            self.heap.push(object);
        }
    }
}

/// Which walk of the run this is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Counts objects, sweeps temp files, lists errors, removes empty directories (unless a dry
    /// run), retimes future-dated objects.
    First,
    /// Only finds the next oldest objects; skips those modified since the run started (published
    /// or read since: kept, as in the first walk), and those whose status changed since (Unix
    /// ctime: written, linked or copied in during the run, whatever their mtime says).
    Again,
}

fn open_error(b: Beneath) -> String {
    match b {
        Beneath::Io(e) => format!("cannot open directory: {e}"),
        Beneath::Symlink(_) => LINK_REASON.to_owned(),
        Beneath::NotDir(_) => "not a directory".to_owned(),
    }
}

/// A directory being walked.
struct Frame {
    dir: Dir,
    rel: Rc<[OsString]>,
    entries: std::vec::IntoIter<Entry>,
    /// A fan-out level (`aa` or `bb`): removable when empty.
    fan: bool,
    /// This run removed something from it: removable when that left it empty.
    emptied: bool,
    /// Entries seen minus those this run removed.
    left: u64,
}

/// Opens the directory `rel` below `dir` and lists it (the reason on failure, without the path).
fn list<S: AsRef<OsStr>>(dir: &Dir, rel: &[S]) -> Result<(Dir, Vec<Entry>), String> {
    let opened = dir.open_dir(rel).map_err(open_error)?;
    match opened.entries() {
        Ok(entries) => Ok((opened, entries)),
        Err(e) => Err(format!("cannot list directory: {e}")),
    }
}

fn child(rel: &[OsString], name: &OsStr) -> Rc<[OsString]> {
    rel.iter()
        .cloned()
        .chain(std::iter::once(name.to_os_string()))
        .collect()
}

impl Tree {
    /// Opens the root (its own path may pass through links: it is trusted as given).
    pub(super) fn open_root(root: &Path) -> Result<Tree, String> {
        let root_dir = Dir::open_root(root).map_err(|e| match e.kind() {
            io::ErrorKind::NotADirectory => {
                format!("cache path {} is not a directory", root.display())
            }
            _ => format!("cache path {} is not usable: {e}", root.display()),
        })?;
        Ok(Tree {
            root: root_dir,
            shown: root.to_path_buf(),
            own_temp_bytes: 0,
            budget_path: String::new(),
        })
    }

    fn path(&self, rel: &[OsString], name: Option<&OsStr>) -> PathBuf {
        let mut p = self.shown.clone();
        p.extend(rel);
        p.extend(name);
        p
    }

    /// Leaves a directory the walk has finished: removes it from `parent` when it is an empty
    /// fan-out level or this run emptied it.
    fn leave(&self, done: &Frame, parent: &mut Frame, report: &mut Report) {
        let Some(name) = done.rel.last() else { return };
        if done.left != 0 || !(done.fan || done.emptied) {
            return;
        }
        match parent.dir.remove_dir(name) {
            Ok(()) => {
                report.removed_dirs += 1;
                parent.left = parent.left.saturating_sub(1);
                parent.emptied = true;
            }
            Err(e) if is_not_empty(&e) || e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => report.error(
                &self.path(&done.rel, None),
                format!("cannot remove empty directory: {e}"),
            ),
        }
    }

    /// Walks the tree depth first (children before their parent is left), offering objects to
    /// `oldest`. Fails only when the root cannot be listed (the reason, without the path).
    fn walk(
        &mut self,
        pass: Pass,
        now: SystemTime,
        options: &Run<'_>,
        report: &mut Report,
        p: &mut Progressor<'_>,
        oldest: &mut Oldest,
    ) -> Result<(), String> {
        let first = pass == Pass::First;
        let prune = first && !options.dry;
        let root = list::<&OsStr>(&self.root, &[])?;
        let mut stack = vec![Frame {
            dir: root.0,
            rel: Rc::from(Vec::new()),
            entries: root.1.into_iter(),
            fan: false,
            emptied: false,
            left: 0,
        }];
        while let Some(top) = stack.last_mut() {
            if options.cancelled() {
                break;
            }
            let Some(entry) = top.entries.next() else {
                let Some(done) = stack.pop() else { break };
                if let (true, Some(parent)) = (prune, stack.last_mut()) {
                    self.leave(&done, parent, report);
                }
                continue;
            };
            top.left += 1;
            let kind = match entry.kind {
                Some(k) => k,
                None => match top.dir.stat(&entry.name) {
                    Ok(s) => s.kind,
                    Err(_) => continue,
                },
            };
            match kind {
                Kind::Symlink if first => {
                    report.error(&self.path(&top.rel, Some(&entry.name)), LINK_REASON)
                }
                Kind::Dir if entry.name == TMP_DIR => {
                    if first {
                        let path = self.path(&top.rel, Some(&entry.name));
                        self.sweep_temps(&top.dir, &entry.name, &path, now, options, report, p);
                    }
                }
                Kind::Dir => {
                    match list(&top.dir, &[&entry.name]) {
                        Ok((dir, entries)) => {
                            let frame = Frame {
                                dir,
                                rel: child(&top.rel, &entry.name),
                                entries: entries.into_iter(),
                                fan: entry.name.to_str().is_some_and(is_fan_name),
                                emptied: false,
                                left: 0,
                            };
                            stack.push(frame);
                        }
                        // Its contents are unknown: counted in its parent, never removed.
                        Err(reason) if first => {
                            report.error(&self.path(&top.rel, Some(&entry.name)), reason)
                        }
                        Err(_) => {}
                    }
                }
                Kind::File if is_object(&top.rel, &entry.name) => {
                    let (dir, rel) = (&top.dir, top.rel.clone());
                    if let Some(o) = self.object(pass, dir, rel, entry.name, now, options, report) {
                        oldest.offer(o);
                    }
                    if first {
                        p.current.scanned += 1;
                        p.tick();
                    }
                }
                Kind::Symlink | Kind::File | Kind::Other => {}
            }
        }
        Ok(())
    }

    /// Examines one object. In the first walk, counts it and sets a modification time in the
    /// future to now (see `crate::store::fs::temp::clamp_future`).
    #[allow(clippy::too_many_arguments)]
    fn object(
        &mut self,
        pass: Pass,
        dir: &Dir,
        rel: Rc<[OsString]>,
        name: OsString,
        now: SystemTime,
        options: &Run<'_>,
        report: &mut Report,
    ) -> Option<Object> {
        let stat = match dir.stat(&name) {
            Ok(s) => s,
            // Deleted since the listing (another run, a quarantine): nothing to do.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(_) if pass == Pass::Again => return None,
            Err(e) => {
                report.error(&self.path(&rel, Some(&name)), format!("cannot stat: {e}"));
                return None;
            }
        };
        if pass == Pass::Again {
            if stat.mtime > now || stat.ctime.is_some_and(|c| c >= now) {
                return None;
            }
            return Some(Object {
                accessed: stat.mtime,
                name,
                dir: rel,
                len: stat.len,
                seen: stat.mtime,
            });
        }
        let (accessed, reset) = temp::clamp_future(stat.mtime, now);
        let seen = if reset && !options.dry && dir.set_mtime(&name, now).is_ok() {
            now
        } else {
            stat.mtime
        };
        report.scanned.add(stat.len);
        if let Some(b) = options.budget {
            let path = &mut self.budget_path;
            path.clear();
            for part in rel.iter().map(|p| p.as_os_str()).chain([name.as_os_str()]) {
                if let Some(part) = part.to_str() {
                    if !path.is_empty() {
                        path.push('/');
                    }
                    path.push_str(part);
                }
            }
            b.seen(path);
        }
        Some(Object {
            accessed,
            name,
            dir: rel,
            len: stat.len,
            seen,
        })
    }

    /// Removes the temp files of the `.tmp` directory `name` of `parent` that may go, and counts
    /// the others.
    #[allow(clippy::too_many_arguments)]
    fn sweep_temps(
        &mut self,
        parent: &Dir,
        name: &OsStr,
        path: &Path,
        now: SystemTime,
        options: &Run<'_>,
        report: &mut Report,
        p: &mut Progressor<'_>,
    ) {
        let swept = parent
            .open_dir(&[name])
            .map_err(open_error)
            .and_then(|dir| {
                temp::sweep(&dir, now, STALE_TMP_AGE, options.dry)
                    .map_err(|e| format!("cannot list directory: {e}"))
            });
        let swept = match swept {
            Ok(s) => s,
            Err(reason) => return report.error(path, reason),
        };
        for t in swept {
            match t {
                Swept::Removed { len, .. } => {
                    report.deleted_temp.add(len);
                    p.current.deleted += 1;
                    p.tick();
                }
                Swept::Kept { counted, own, .. } => {
                    report.kept_temp.add(counted);
                    if own {
                        self.own_temp_bytes += counted;
                    }
                }
                Swept::Link { name } => report.error(&path.join(name), LINK_REASON),
                Swept::Failed { name, error } => report.error(
                    &path.join(name),
                    format!("cannot delete temp file: {error}"),
                ),
            }
        }
    }
}

/// The oldest objects the first walk found.
pub(super) struct Scanned(Oldest);

/// Walks the whole store: counts every object and temp file, removes temp files whose writer is
/// gone or that are stale and empty fan-out directories (not in a dry run), and keeps the oldest
/// objects.
pub(super) fn scan(
    tree: &mut Tree,
    now: SystemTime,
    options: &Run<'_>,
    report: &mut Report,
    p: &mut Progressor<'_>,
) -> Result<Scanned, String> {
    let mut oldest = Oldest::new(options.batch(), None);
    tree.walk(Pass::First, now, options, report, p, &mut oldest)
        .map_err(|reason| format!("cannot list cache path {}: {reason}", tree.shown.display()))?;
    Ok(Scanned(oldest))
}

/// What happened to one object at deletion time.
enum Deletion {
    Deleted,
    /// Accessed since the scan: kept.
    Kept,
    /// Gone already.
    Gone,
}

/// Deletes expired objects, then the least recently accessed until the total size (objects and
/// temp files) is within the budget (down to `options.size_target` once over it), oldest first,
/// walking the store again when a batch runs out. Returns the directories the last batch deleted
/// from (for [`prune`]; those of earlier batches are pruned before the next walk).
pub(super) fn evict(
    tree: &mut Tree,
    scanned: Scanned,
    policy: &Policy,
    now: SystemTime,
    options: &Run<'_>,
    report: &mut Report,
    p: &mut Progressor<'_>,
) -> Vec<Rc<[OsString]>> {
    // With a budget, the total is the budget's: this process' uploads in flight count with their
    // full declared size (not what their temp files hold so far), and what it stored during the
    // scan where the scan did not see it.
    let mut total = match options.budget {
        Some(b) => {
            let temps = report.kept_temp.bytes.saturating_sub(tree.own_temp_bytes);
            b.projected(report.scanned.bytes.saturating_add(temps))
        }
        None => report.scanned.bytes.saturating_add(report.kept_temp.bytes),
    };
    let size_target = match policy.max_bytes {
        Some(max) if total > max => Some(options.size_target.unwrap_or(max).min(max)),
        _ => None,
    };
    let mut batch = scanned.0;
    let mut passes = 1;
    // Bytes this run deleted that the budget was told of.
    let mut freed = 0u64;
    loop {
        let full = batch.heap.len() >= batch.cap;
        let mut objects = batch.heap.into_sorted_vec();
        let mut touched = Vec::new();
        let mut finished = false;
        for object in &objects {
            if options.cancelled() {
                finished = true;
                break;
            }
            let age = now.duration_since(object.accessed).unwrap_or_default();
            let expired = policy.max_age.is_some_and(|max| age > max);
            let over = size_target.is_some_and(|target| total > target);
            if !expired && !over {
                // Oldest first: the objects after this one are younger still, and the budget
                // already holds. Nothing more to delete.
                finished = true;
                break;
            }
            match delete_object(tree, object, options.dry) {
                Ok(Deletion::Deleted) => {
                    total = total.saturating_sub(object.len);
                    let counter: &mut Count = if expired {
                        &mut report.deleted_by_age
                    } else {
                        &mut report.deleted_by_size
                    };
                    counter.add(object.len);
                    touched.push(object.dir.clone());
                    p.current.deleted += 1;
                    p.tick();
                }
                Ok(Deletion::Kept) => {}
                Ok(Deletion::Gone) => {
                    total = total.saturating_sub(object.len);
                    touched.push(object.dir.clone());
                }
                Err(e) => report.error(
                    &tree.path(&object.dir, Some(&object.name)),
                    format!("cannot delete: {e}"),
                ),
            }
        }
        // A batch short of full held every object left: there is no other.
        if finished || !full {
            return touched;
        }
        if passes >= MAX_PASSES {
            report.incomplete = true;
            return touched;
        }
        // Uploads waiting for room learn of it now, not after the remaining walks.
        if let (false, Some(b)) = (options.dry, options.budget) {
            b.freed(report.deleted_objects().bytes.saturating_sub(freed));
            freed = report.deleted_objects().bytes;
        }
        p.emit();
        let last = objects.pop();
        drop(objects);
        if !options.dry {
            prune(tree, touched, report);
        }
        batch = Oldest::new(batch.cap, last);
        passes += 1;
        if let Err(reason) = tree.walk(Pass::Again, now, options, report, p, &mut batch) {
            report.error(&tree.shown.clone(), reason);
            return Vec::new();
        }
    }
}

/// Deletes one object unless it was accessed since the scan (or is a link now: never deleted).
fn delete_object(tree: &Tree, object: &Object, dry: bool) -> io::Result<Deletion> {
    let dir = match tree.root.open_dir(&object.dir) {
        Ok(d) => d,
        Err(Beneath::Io(e)) if e.kind() == io::ErrorKind::NotFound => return Ok(Deletion::Gone),
        Err(Beneath::Io(e)) => return Err(e),
        Err(b) => return Err(io::Error::other(open_error(b))),
    };
    let stat = match dir.stat(&object.name) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Deletion::Gone),
        Err(e) => return Err(e),
    };
    if stat.kind == Kind::Symlink {
        return Err(io::Error::other(LINK_REASON));
    }
    if stat.mtime > object.seen {
        return Ok(Deletion::Kept);
    }
    if dry {
        return Ok(Deletion::Deleted);
    }
    match dir.remove_file(&object.name) {
        Ok(()) => Ok(Deletion::Deleted),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Deletion::Gone),
        Err(e) => Err(e),
    }
}

/// Removes the (fan-out) directories objects were deleted from when that left them empty, then
/// their parents while that leaves them empty (never the root). Directories empty at the scan
/// were removed by it.
pub(super) fn prune(tree: &Tree, mut touched: Vec<Rc<[OsString]>>, report: &mut Report) {
    touched.sort_unstable();
    touched.dedup();
    for dir in touched {
        let mut rel: &[OsString] = &dir;
        while let Some((name, parent)) = rel.split_last() {
            let removed = tree
                .root
                .open_dir(parent)
                .map_err(|b| io::Error::other(open_error(b)))
                .and_then(|d| d.remove_dir(name));
            match removed {
                Ok(()) => {
                    report.removed_dirs += 1;
                    rel = parent;
                }
                Err(e) if is_not_empty(&e) || e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => {
                    report.error(
                        &tree.path(rel, None),
                        format!("cannot remove empty directory: {e}"),
                    );
                    break;
                }
            }
        }
    }
}

fn is_not_empty(e: &io::Error) -> bool {
    #[cfg(unix_native)]
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

/// `…/<aa>/<bb>/<hash>` with `aa`/`bb` the fan-out of a valid hash (`dir` is the path of the
/// directory holding `name`).
fn is_object(dir: &[OsString], name: &OsStr) -> bool {
    let (Some(name), [.., aa, bb]) = (name.to_str(), dir) else {
        return false;
    };
    let [fan_a, fan_b] = fan_of(name);
    TaskHash::parse(name).is_ok() && *aa == *fan_a && *bb == *fan_b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(parts: &[&str]) -> Vec<OsString> {
        parts.iter().map(OsString::from).collect()
    }

    #[test]
    fn layout_recognition() {
        let [aa, bb] = fan_of("12345");
        assert!(is_object(&rel(&[&aa, &bb]), OsStr::new("12345")));
        assert!(is_object(
            &rel(&["team", "a", &aa, &bb]),
            OsStr::new("12345")
        ));
        assert!(!is_object(&rel(&[&aa, "zz"]), OsStr::new("12345")));
        assert!(!is_object(&rel(&[&bb]), OsStr::new("12345")));
        assert!(!is_object(&rel(&["home", "me"]), OsStr::new("notes.txt")));
        assert!(!is_object(&rel(&[&aa, &bb]), OsStr::new("x y")));
    }

    use crate::retention::{run, Policy, Run};
    use std::time::Duration;

    const DAY: u64 = 24 * 3600;

    /// Writes object `hash` of `len` bytes at `root/<prefix>/<aa>/<bb>/<hash>`, last accessed
    /// `days` ago.
    fn object(root: &Path, prefix: &str, hash: &str, len: usize, days: u64) -> PathBuf {
        object_at(root, prefix, hash, len, SystemTime::now(), days)
    }

    /// [`object`], last accessed `days` before `base`.
    fn object_at(
        root: &Path,
        prefix: &str,
        hash: &str,
        len: usize,
        base: SystemTime,
        days: u64,
    ) -> PathBuf {
        let [aa, bb] = fan_of(hash);
        let dir = root.join(prefix).join(aa).join(bb);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(hash);
        std::fs::write(&path, vec![1u8; len]).unwrap();
        let t = base - Duration::from_secs(days * DAY);
        filetime::set_file_mtime(&path, filetime::FileTime::from(t)).unwrap();
        path
    }

    fn run_batched(root: &Path, policy: &Policy, dry: bool, batch: usize) -> super::Report {
        let options = Run {
            dry,
            batch,
            ..Run::default()
        };
        run(root, policy, &options, &mut |_| {}).expect("run")
    }

    /// Twelve objects of 100 bytes, in two prefixes, the `i`th accessed `40 - i` days ago (two
    /// of them share a name and an access time across the prefixes: one base time for all, so
    /// that the tie is exact and the directory decides).
    fn store(root: &Path) -> Vec<PathBuf> {
        let base = SystemTime::now();
        let mut paths = Vec::new();
        for i in 0..12u64 {
            let prefix = if i % 2 == 0 { "main" } else { "pr" };
            let hash = if i == 5 {
                "9004".to_owned()
            } else {
                format!("{}", 9000 + i)
            };
            let days = if i == 5 { 36 } else { 40 - i };
            paths.push(object_at(root, prefix, &hash, 100, base, days));
        }
        paths
    }

    #[test]
    fn a_store_larger_than_a_batch_is_trimmed_oldest_first_across_walks() {
        for batch in [1, 2, 3, 5, 12, 100] {
            let dir = tempfile::tempdir().unwrap();
            let paths = store(dir.path());
            // Room for four objects: the eight least recently accessed go.
            let policy = Policy {
                max_bytes: Some(400),
                max_age: None,
            };
            let dry = run_batched(dir.path(), &policy, true, batch);
            assert!(paths.iter().all(|p| p.exists()), "batch {batch}: dry run");
            assert_eq!(dry.deleted_by_size.files, 8, "batch {batch}: {dry:?}");
            let r = run_batched(dir.path(), &policy, false, batch);
            assert_eq!(r.scanned.files, 12, "batch {batch}");
            assert_eq!(r.deleted_by_size.files, 8, "batch {batch}: {r:?}");
            assert_eq!(r.deleted_by_size.bytes, 800);
            assert_eq!(r.kept.bytes, 400);
            assert_eq!(r.error_count, 0, "{r:?}");
            for (i, p) in paths.iter().enumerate() {
                assert_eq!(
                    p.exists(),
                    i >= 8,
                    "batch {batch}: object {i} {}",
                    p.display()
                );
            }
            // Room for seven: the tie (objects 4 and 5: same name, same time) goes by directory,
            // "main" before "pr", in whichever walk meets them.
            let tie = tempfile::tempdir().unwrap();
            let tied = store(tie.path());
            let seven = Policy {
                max_bytes: Some(700),
                max_age: None,
            };
            let r = run_batched(tie.path(), &seven, false, batch);
            assert_eq!(r.deleted_by_size.files, 5, "batch {batch}: {r:?}");
            for (i, p) in tied.iter().enumerate() {
                assert_eq!(p.exists(), i >= 5, "batch {batch}: tie, object {i}");
            }
            // The emptied fan-out directories went (a survivor's stay).
            for p in &paths[..8] {
                let bb = p.parent().unwrap();
                let kept = paths[8..].iter().any(|k| k.parent() == Some(bb));
                assert_eq!(bb.exists(), kept, "batch {batch}: {}", bb.display());
            }
        }
    }

    #[test]
    fn objects_a_later_walk_finds_but_the_first_did_not_count_keep_the_figures_sane() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        object(root, "main", "9000", 100, 40);
        object(root, "main", "9001", 100, 30);
        let budget = crate::store::fs::Budget::with_wait(1000, Duration::from_millis(10));
        budget.scan_finished(200);
        // The run starts an hour ahead of the clock, so that an object written during it has a
        // status change time before its start (as on a coarse clock, or a directory the first
        // walk could not open): later walks do not skip it.
        let options = Run {
            budget: Some(&budget),
            batch: 1,
            start: Some(SystemTime::now() + Duration::from_secs(3600)),
            ..Run::default()
        };
        let policy = Policy {
            max_bytes: None,
            max_age: Some(Duration::from_secs(20 * DAY)),
        };
        let mut copied = None;
        let r = run(root, &policy, &options, &mut |p| {
            // Between the first walk and the deletions: copied in with an old mtime.
            if p.phase == crate::retention::Phase::Delete && copied.is_none() {
                copied = Some(object(root, "main", "9002", 300, 35));
            }
        })
        .expect("run");
        let copied = copied.expect("copied during the run");
        assert!(!copied.exists(), "the later walk deleted it");
        assert_eq!(r.scanned.files, 2, "{r:?}");
        assert_eq!(r.deleted_by_age.files, 3, "{r:?}");
        assert_eq!(r.deleted_by_age.bytes, 500, "{r:?}");
        assert_eq!(r.kept, crate::retention::Count::default(), "{r:?}");
        assert_eq!(
            budget.used(),
            Some(0),
            "the budget is seeded with what is left"
        );
    }

    #[cfg(unix_native)]
    #[test]
    fn later_walks_skip_objects_whose_status_changed_during_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        object(root, "main", "9000", 100, 40);
        object(root, "main", "9001", 100, 30);
        let policy = Policy {
            max_bytes: None,
            max_age: Some(Duration::from_secs(20 * DAY)),
        };
        let options = Run {
            batch: 1,
            ..Run::default()
        };
        let mut copied = None;
        let r = run(root, &policy, &options, &mut |p| {
            if p.phase == crate::retention::Phase::Delete && copied.is_none() {
                // File times come from a coarse clock that may lag the run's start by a tick.
                std::thread::sleep(Duration::from_millis(50));
                copied = Some(object(root, "main", "9002", 300, 35));
            }
        })
        .expect("run");
        assert!(copied.expect("copied").exists(), "not counted, not deleted");
        assert_eq!(r.deleted_by_age.files, 2, "{r:?}");
        assert_eq!(r.kept.files, 0, "{r:?}");
    }

    #[test]
    fn the_budget_learns_of_each_batch_deleted_before_the_next_walk() {
        let dir = tempfile::tempdir().unwrap();
        store(dir.path());
        let budget = crate::store::fs::Budget::with_wait(400, Duration::from_millis(10));
        budget.scan_finished(1200);
        let options = Run {
            budget: Some(&budget),
            batch: 2,
            ..Run::default()
        };
        let policy = Policy {
            max_bytes: Some(400),
            max_age: None,
        };
        let mut seen = Vec::new();
        let r = run(dir.path(), &policy, &options, &mut |p| {
            if p.phase == crate::retention::Phase::Delete {
                seen.push((p.deleted, budget.used()));
            }
        })
        .expect("run");
        assert_eq!(r.deleted_by_size.files, 8, "{r:?}");
        // After the first batch of two, before the second walk: 1200 - 200.
        assert!(seen.contains(&(2, Some(1000))), "{seen:?}");
        assert!(seen.contains(&(6, Some(600))), "{seen:?}");
        assert_eq!(budget.used(), Some(400));
    }

    #[test]
    fn a_run_stopped_at_its_walk_limit_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let n = MAX_PASSES as u64 + 3;
        for i in 0..n {
            object(dir.path(), "main", &format!("{}", 9000 + i), 10, 40 + i);
        }
        let policy = Policy {
            max_bytes: None,
            max_age: Some(Duration::from_secs(30 * DAY)),
        };
        for dry in [true, false] {
            let r = run_batched(dir.path(), &policy, dry, 1);
            assert_eq!(r.deleted_by_age.files, MAX_PASSES as u64, "{r:?}");
            assert!(r.incomplete, "{r:?}");
            assert!(r.summary().contains("incomplete"), "{}", r.summary());
        }
        // The next run goes on and finishes.
        let r = run_batched(dir.path(), &policy, false, 1);
        assert_eq!(r.deleted_by_age.files, 3, "{r:?}");
        assert!(!r.incomplete, "{r:?}");
        assert!(!r.summary().contains("incomplete"), "{}", r.summary());
    }

    #[test]
    fn expired_objects_beyond_a_batch_all_go() {
        for batch in [1, 2, 4, 12] {
            let dir = tempfile::tempdir().unwrap();
            let paths = store(dir.path());
            // Objects 0..=5 are 35 days old or older.
            let policy = Policy {
                max_bytes: None,
                max_age: Some(Duration::from_secs(34 * DAY + DAY / 2)),
            };
            let r = run_batched(dir.path(), &policy, false, batch);
            assert_eq!(r.deleted_by_age.files, 6, "batch {batch}: {r:?}");
            for (i, p) in paths.iter().enumerate() {
                assert_eq!(p.exists(), i >= 6, "batch {batch}: object {i}");
            }
            // Both limits: the expired go by age, then the oldest by size.
            let dir = tempfile::tempdir().unwrap();
            let paths = store(dir.path());
            let policy = Policy {
                max_bytes: Some(300),
                max_age: Some(Duration::from_secs(34 * DAY + DAY / 2)),
            };
            let r = run_batched(dir.path(), &policy, false, batch);
            assert_eq!(r.deleted_by_age.files, 6, "batch {batch}: {r:?}");
            assert_eq!(r.deleted_by_size.files, 3, "batch {batch}: {r:?}");
            for (i, p) in paths.iter().enumerate() {
                assert_eq!(p.exists(), i >= 9, "batch {batch}: object {i}");
            }
        }
    }
}
