//! The stages of a retention run over the directory tree, none of which follows a symbolic link:
//! every directory is opened relative to the root's descriptor (`crate::store::fs::dir`), and
//! files are examined, retimed and deleted relative to their directory's descriptor.

use super::{Count, Policy, Progressor, Report, Run};
use crate::key::TaskHash;
use crate::store::fs::dir::{Beneath, Dir, Entry, Kind};
use crate::store::fs::temp::{self, Swept, TMP_DIR};
use crate::store::fs::{fan_of, STALE_TMP_AGE};
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

const LINK_REASON: &str =
    "a symbolic link: not followed (nothing below the cache directory may be a link)";

/// What the scan found.
pub(super) struct Tree {
    root: Dir,
    /// The root as given, for messages.
    shown: PathBuf,
    /// Directories in pre-order (reversed, children come before their parents); 0 is the root.
    dirs: Vec<Node>,
    objects: Vec<Object>,
    /// Bytes of the temp files kept that this process is writing (its budget counts them).
    pub(super) own_temp_bytes: u64,
}

struct Node {
    /// Path below the root.
    rel: Vec<OsString>,
    parent: usize,
    /// A fan-out level (`aa` or `bb`): removable when empty.
    fan: bool,
    /// This run removed something from it: removable when that left it empty.
    emptied: bool,
    /// Entries seen by the scan minus those this run removed (only a directory at 0 is tried).
    entries: u64,
}

struct Object {
    /// Index of its directory in `dirs`.
    dir: usize,
    name: OsString,
    len: u64,
    /// Last access as retention counts it (a future time counts as the scan's time).
    accessed: SystemTime,
    /// Its mtime on disk after the scan (a newer one means it was read since).
    seen: SystemTime,
}

impl Tree {
    fn path(&self, rel: &[OsString]) -> PathBuf {
        let mut p = self.shown.clone();
        p.extend(rel);
        p
    }

    /// Opens directory `index` (the root: a second descriptor of it).
    fn open(&self, index: usize) -> Result<Dir, Beneath> {
        self.root.open_dir(&self.dirs[index].rel)
    }
}

fn open_error(b: Beneath) -> String {
    match b {
        Beneath::Io(e) => format!("cannot open directory: {e}"),
        Beneath::Symlink(_) => LINK_REASON.to_owned(),
        Beneath::NotDir(_) => "not a directory".to_owned(),
    }
}

impl Tree {
    /// Opens the root (its own path may pass through links: it is trusted as given).
    fn open_root(root: &Path) -> Result<Tree, String> {
        let root_dir = Dir::open_root(root).map_err(|e| match e.kind() {
            io::ErrorKind::NotADirectory => {
                format!("cache path {} is not a directory", root.display())
            }
            _ => format!("cache path {} is not usable: {e}", root.display()),
        })?;
        Ok(Tree {
            root: root_dir,
            shown: root.to_path_buf(),
            dirs: vec![Node {
                rel: Vec::new(),
                parent: 0,
                fan: false,
                emptied: false,
                entries: 0,
            }],
            objects: Vec::new(),
            own_temp_bytes: 0,
        })
    }

    /// Opens and lists directory `index`. `None` when it cannot be: the error is listed and the
    /// directory is never removed (its contents are unknown); the root failing fails the run.
    fn list(
        &mut self,
        index: usize,
        report: &mut Report,
    ) -> Result<Option<(Dir, Vec<Entry>)>, String> {
        let listed = self
            .open(index)
            .map_err(open_error)
            .and_then(|dir| match dir.entries() {
                Ok(entries) => Ok((dir, entries)),
                Err(e) => Err(format!("cannot list directory: {e}")),
            });
        match listed {
            Ok(l) => Ok(Some(l)),
            Err(reason) if index == 0 => Err(format!(
                "cannot list cache path {}: {reason}",
                self.shown.display()
            )),
            Err(reason) => {
                report.error(&self.path(&self.dirs[index].rel), reason);
                self.dirs[index].entries = 1;
                Ok(None)
            }
        }
    }
}

/// Lists every object and temp file below the root (depth first, no link followed); removes
/// temp files whose writer is gone or that are stale.
pub(super) fn scan(
    root: &Path,
    now: SystemTime,
    options: &Run<'_>,
    report: &mut Report,
    p: &mut Progressor<'_>,
) -> Result<Tree, String> {
    let mut tree = Tree::open_root(root)?;
    // Depth first; `dirs` ends up in pre-order.
    let mut stack = vec![0usize];
    while let Some(index) = stack.pop() {
        if options.cancelled() {
            break;
        }
        let Some((dir, entries)) = tree.list(index, report)? else {
            continue;
        };
        for entry in entries {
            tree.dirs[index].entries += 1;
            let kind = match entry.kind {
                Some(k) => k,
                None => match dir.stat(&entry.name) {
                    Ok(s) => s.kind,
                    Err(_) => continue,
                },
            };
            // The path of a directory or a link (not of every file: most entries are objects,
            // and one allocation each adds up in a large store).
            let rel = |tree: &Tree| {
                let mut rel = tree.dirs[index].rel.clone();
                rel.push(entry.name.clone());
                rel
            };
            match kind {
                Kind::Symlink => report.error(&tree.path(&rel(&tree)), LINK_REASON),
                Kind::Dir if entry.name == TMP_DIR => {
                    let rel = rel(&tree);
                    sweep_temps(&mut tree, &dir, &rel, now, options, report, p);
                }
                Kind::Dir => {
                    let fan = entry.name.to_str().is_some_and(is_fan_name);
                    let rel = rel(&tree);
                    tree.dirs.push(Node {
                        rel,
                        parent: index,
                        fan,
                        emptied: false,
                        entries: 0,
                    });
                    stack.push(tree.dirs.len() - 1);
                }
                Kind::File if is_object(&tree.dirs[index].rel, &entry.name) => {
                    add_object(&mut tree, &dir, index, entry.name, now, options, report);
                    p.current.scanned += 1;
                    p.tick();
                }
                Kind::File | Kind::Other => {}
            }
        }
    }
    Ok(tree)
}

/// Records one object; a modification time in the future is set to now (see
/// `crate::store::fs::temp::clamp_future`).
fn add_object(
    tree: &mut Tree,
    dir: &Dir,
    index: usize,
    name: OsString,
    now: SystemTime,
    options: &Run<'_>,
    report: &mut Report,
) {
    let stat = match dir.stat(&name) {
        Ok(s) => s,
        // Deleted since the listing (another run, a quarantine): nothing to do.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            let mut rel = tree.dirs[index].rel.clone();
            rel.push(name);
            report.error(&tree.path(&rel), format!("cannot stat: {e}"));
            return;
        }
    };
    let (accessed, reset) = temp::clamp_future(stat.mtime, now);
    let seen = if reset && !options.dry && dir.set_mtime(&name, now).is_ok() {
        now
    } else {
        stat.mtime
    };
    report.scanned.add(stat.len);
    if let Some(b) = options.budget {
        let mut rel: Vec<&str> = tree.dirs[index]
            .rel
            .iter()
            .filter_map(|p| p.to_str())
            .collect();
        rel.extend(name.to_str());
        b.seen(&rel.join("/"));
    }
    tree.objects.push(Object {
        dir: index,
        name,
        len: stat.len,
        accessed,
        seen,
    });
}

/// Removes the temp files of `.tmp` at `rel` that may go, and counts the others.
fn sweep_temps(
    tree: &mut Tree,
    parent: &Dir,
    rel: &[OsString],
    now: SystemTime,
    options: &Run<'_>,
    report: &mut Report,
    p: &mut Progressor<'_>,
) {
    let path = tree.path(rel);
    let swept = parent
        .open_dir(&rel[rel.len() - 1..])
        .map_err(open_error)
        .and_then(|dir| {
            temp::sweep(&dir, now, STALE_TMP_AGE, options.dry)
                .map_err(|e| format!("cannot list directory: {e}"))
        });
    let swept = match swept {
        Ok(s) => s,
        Err(reason) => return report.error(&path, reason),
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
                    tree.own_temp_bytes += counted;
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

/// What happened to one object at deletion time.
enum Deletion {
    Deleted,
    /// Accessed since the scan: kept.
    Kept,
    /// Gone already.
    Gone,
}

/// Deletes expired objects, then the least recently accessed until the total size (objects and
/// temp files) is within the budget (down to `options.size_target` once over it).
pub(super) fn evict(
    tree: &mut Tree,
    policy: &Policy,
    now: SystemTime,
    options: &Run<'_>,
    report: &mut Report,
    p: &mut Progressor<'_>,
) {
    let mut objects = std::mem::take(&mut tree.objects);
    // Unstable: sorts in place, without a scratch copy of the list (objects equal in both keys
    // have the same name in two prefixes; either order is right).
    objects.sort_unstable_by(|a, b| a.accessed.cmp(&b.accessed).then(a.name.cmp(&b.name)));
    let objects_bytes = objects.iter().map(|o| o.len).sum::<u64>();
    // With a budget, the total is the budget's: this process' uploads in flight count with their
    // full declared size (not what their temp files hold so far), and what it stored during the
    // scan where the scan did not see it.
    let mut total = match options.budget {
        Some(b) => {
            let temps = report.kept_temp.bytes.saturating_sub(tree.own_temp_bytes);
            b.projected(objects_bytes.saturating_add(temps))
        }
        None => objects_bytes.saturating_add(report.kept_temp.bytes),
    };
    let size_target = match policy.max_bytes {
        Some(max) if total > max => Some(options.size_target.unwrap_or(max).min(max)),
        _ => None,
    };
    for object in &objects {
        if options.cancelled() {
            break;
        }
        let age = now.duration_since(object.accessed).unwrap_or_default();
        let expired = policy.max_age.is_some_and(|max| age > max);
        let over = size_target.is_some_and(|target| total > target);
        if !expired && !over {
            // Sorted by last access: the objects after this one are younger still, and the
            // budget already holds. Nothing more to delete.
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
                let dir = &mut tree.dirs[object.dir];
                dir.entries = dir.entries.saturating_sub(1);
                dir.emptied = true;
                p.current.deleted += 1;
                p.tick();
            }
            Ok(Deletion::Kept) => {}
            Ok(Deletion::Gone) => {
                total = total.saturating_sub(object.len);
                let dir = &mut tree.dirs[object.dir];
                dir.entries = dir.entries.saturating_sub(1);
            }
            Err(e) => {
                let mut rel = tree.dirs[object.dir].rel.clone();
                rel.push(object.name.clone());
                report.error(&tree.path(&rel), format!("cannot delete: {e}"));
            }
        }
    }
    tree.objects = objects;
}

/// Deletes one object unless it was accessed since the scan (or is a link now: never deleted).
fn delete_object(tree: &Tree, object: &Object, dry: bool) -> io::Result<Deletion> {
    let dir = match tree.open(object.dir) {
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

/// Removes empty fan-out directories and the directories this run emptied, children first.
pub(super) fn prune(tree: &mut Tree, report: &mut Report) {
    for index in (1..tree.dirs.len()).rev() {
        let d = &tree.dirs[index];
        if d.entries > 0 || !(d.fan || d.emptied) {
            continue;
        }
        let Some(name) = d.rel.last().cloned() else {
            continue;
        };
        let parent = d.parent;
        let removed = tree
            .open(parent)
            .map_err(|b| io::Error::other(open_error(b)))
            .and_then(|dir| dir.remove_dir(&name));
        match removed {
            Ok(()) => {
                report.removed_dirs += 1;
                let parent = &mut tree.dirs[parent];
                parent.entries = parent.entries.saturating_sub(1);
                parent.emptied = true;
            }
            Err(e) if is_not_empty(&e) || e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => report.error(
                &tree.path(&tree.dirs[index].rel),
                format!("cannot remove empty directory: {e}"),
            ),
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
}
