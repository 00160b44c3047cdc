//! `archive::unpack_bytes` on arbitrary bytes, twice per input: into a destination that does not
//! exist yet, and into one that already holds a file, a directory, a symlink inside and a symlink
//! to a directory outside (`victim`).
//!
//! Each run happens in a fresh scratch directory nested deep inside a jail directory, and checks
//! the guarantee of `archive` (see its module documentation): nothing appears outside the
//! destination's parent (the jail holds only the path to it), `victim` stays empty, no staging
//! directory is left; on an error the destination is exactly as it was; on success every restored
//! path exists, no setuid/setgid/sticky bit survives, and every symlink in the destination
//! resolves inside it (following the links on disk, chains included; a dangling tail is taken
//! as written).
//!
//! Inputs whose compressed stream expands beyond [`MAX_EXPANDED`] are skipped: they would only
//! fill the disk (bounding expansion is the job of artifact validation, a separate target).

use nx_open_cache::archive::{self, Format, Unpacked};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// The largest decompressed stream an input may have to be unpacked.
pub const MAX_EXPANDED: u64 = 4 << 20;

/// The scratch directory sits this deep inside the jail, so that `../` escapes land in the jail.
pub(crate) const DEPTH: [&str; 8] = ["1", "2", "3", "4", "5", "6", "7", "8"];

pub fn run(data: &[u8]) {
    if expanded_len(data) > MAX_EXPANDED {
        return;
    }
    let (jail, scratch) = jail();
    into_new_destination(data, jail.path(), &scratch);
    make_traversable(&scratch);
    fs::remove_dir_all(&scratch).expect("clean the scratch directory");
    fs::create_dir(&scratch).expect("create the scratch directory");
    into_existing_destination(data, jail.path(), &scratch);
    make_traversable(jail.path());
}

/// A fresh jail directory and the empty scratch directory [`DEPTH`] levels inside it.
pub(crate) fn jail() -> (tempfile::TempDir, PathBuf) {
    let jail = super::scratch();
    let mut scratch = jail.path().to_path_buf();
    scratch.extend(DEPTH);
    let scratch = scratch.join("scratch");
    fs::create_dir_all(&scratch).expect("create the scratch directory");
    (jail, scratch)
}

fn into_new_destination(data: &[u8], jail: &Path, scratch: &Path) {
    let dest = scratch.join("out");
    let result = archive::unpack_bytes(data, &dest);
    only_the_path_to(jail, scratch);
    match result {
        Ok(unpacked) => {
            assert_eq!(names(scratch), set(&["out"]), "left beside the destination");
            restored(data, &dest, &unpacked, &[]);
        }
        Err(e) => {
            assert!(!e.message().is_empty());
            assert_eq!(names(scratch), set(&[]), "left behind after an error: {e}");
        }
    }
}

fn into_existing_destination(data: &[u8], jail: &Path, scratch: &Path) {
    let dest = scratch.join("out");
    let victim = scratch.join("victim");
    fs::create_dir_all(dest.join("dir")).expect("create dest/dir");
    fs::create_dir(&victim).expect("create victim");
    fs::write(dest.join("keep.txt"), b"keep").expect("write dest/keep.txt");
    fs::write(dest.join("dir/inner.txt"), b"inner").expect("write dest/dir/inner.txt");
    std::os::unix::fs::symlink("../victim", dest.join("out-link")).expect("symlink out");
    std::os::unix::fs::symlink("dir", dest.join("in-link")).expect("symlink in");
    let before = snapshot(&dest);

    let result = archive::unpack_bytes(data, &dest);
    only_the_path_to(jail, scratch);
    assert_eq!(
        names(&victim),
        set(&[]),
        "wrote through a symlink out of dest"
    );
    assert_eq!(names(scratch), set(&["out", "victim"]), "left beside dest");
    match result {
        Ok(unpacked) => restored(data, &dest, &unpacked, &["out-link"]),
        Err(e) => {
            make_traversable(&dest);
            assert!(
                snapshot(&dest) == before,
                "dest changed by a refused archive: {e}"
            );
        }
    }
}

/// The jail holds the directories down to `scratch` and nothing else.
pub(crate) fn only_the_path_to(jail: &Path, scratch: &Path) {
    let mut dir = jail.to_path_buf();
    for (i, name) in DEPTH.iter().chain(["scratch"].iter()).enumerate() {
        assert_eq!(
            names(&dir),
            set(&[name]),
            "written outside dest at level {i}"
        );
        dir.push(name);
    }
    assert_eq!(dir, scratch);
}

/// Checks a successful unpack: what it reports exists, no special mode bits, no symlink out.
/// `preexisting_links` are links the harness made (one points outside on purpose).
pub(crate) fn restored(data: &[u8], dest: &Path, unpacked: &Unpacked, preexisting_links: &[&str]) {
    assert_eq!(Some(unpacked.format), Format::detect(data));
    make_traversable(dest);
    for f in &unpacked.files {
        assert!(
            fs::symlink_metadata(dest.join(f)).is_ok(),
            "reported {f:?} but it is not there"
        );
    }
    for (rel, meta) in walk(dest) {
        let mode = meta.permissions().mode();
        assert_eq!(mode & 0o7000, 0, "{rel:?} has mode {mode:o}");
        let shown = rel.to_string_lossy().into_owned();
        let ours = preexisting_links.contains(&shown.as_str()) && !unpacked.files.contains(&shown);
        if meta.file_type().is_symlink() && !ours {
            assert!(
                resolves_inside(dest, &rel),
                "symlink {rel:?} -> {:?} resolves outside dest",
                fs::read_link(dest.join(&rel))
            );
        }
    }
}

/// Whether the symlink at `dest/rel` resolves inside `dest`: its target taken component by
/// component from the link's directory, following symlinks found on disk (with a hop limit: a
/// loop never resolves anywhere), a missing tail taken as written.
pub(crate) fn resolves_inside(dest: &Path, rel: &Path) -> bool {
    let Ok(target) = fs::read_link(dest.join(rel)) else {
        return true;
    };
    let mut at: Vec<OsString> = rel
        .parent()
        .map(|p| p.iter().map(|c| c.to_os_string()).collect())
        .unwrap_or_default();
    let mut pending: VecDeque<Step> = steps(&target);
    let mut hops = 0;
    while let Some(step) = pending.pop_front() {
        match step {
            Step::Root => return false,
            Step::Up => {
                if at.pop().is_none() {
                    return false;
                }
            }
            Step::Name(name) => {
                at.push(name);
                let here: PathBuf = at.iter().collect();
                if let Ok(next) = fs::read_link(dest.join(&here)) {
                    hops += 1;
                    if hops > 40 {
                        return true;
                    }
                    at.pop();
                    for s in steps(&next).into_iter().rev() {
                        pending.push_front(s);
                    }
                }
            }
        }
    }
    true
}

enum Step {
    Root,
    Up,
    Name(OsString),
}

fn steps(p: &Path) -> VecDeque<Step> {
    p.components()
        .filter_map(|c| match c {
            Component::RootDir | Component::Prefix(_) => Some(Step::Root),
            Component::CurDir => None,
            Component::ParentDir => Some(Step::Up),
            Component::Normal(n) => Some(Step::Name(n.to_os_string())),
        })
        .collect()
}

/// Every entry below `root` (not following symlinks), relative to it.
pub(crate) fn walk(root: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = fs::read_dir(root.join(&rel)) else {
            continue;
        };
        for e in entries.flatten() {
            let child = rel.join(e.file_name());
            let Ok(meta) = fs::symlink_metadata(root.join(&child)) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(child.clone());
            }
            out.push((child, meta));
        }
    }
    out
}

#[derive(PartialEq, Eq)]
enum Snap {
    Dir(u32),
    File(u32, Result<Vec<u8>, std::io::ErrorKind>),
    Link(Option<PathBuf>),
    Other(u32),
}

/// Everything below `root`: kinds, modes, contents, link targets.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Snap> {
    walk(root)
        .into_iter()
        .map(|(rel, meta)| {
            let mode = meta.permissions().mode();
            let ft = meta.file_type();
            let snap = if ft.is_symlink() {
                Snap::Link(fs::read_link(root.join(&rel)).ok())
            } else if ft.is_dir() {
                Snap::Dir(mode)
            } else if ft.is_file() {
                Snap::File(mode, fs::read(root.join(&rel)).map_err(|e| e.kind()))
            } else {
                Snap::Other(mode)
            };
            (rel, snap)
        })
        .collect()
}

/// Gives the owner rwx on every directory below `root` (keeping the other bits), so that the
/// checks can read them and the scratch directory can be removed also when not running as root.
pub(crate) fn make_traversable(root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(meta) = fs::symlink_metadata(&dir) {
            let mode = meta.permissions().mode();
            if meta.is_dir() && mode & 0o700 != 0o700 {
                let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(mode | 0o700));
            }
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
}

pub(crate) fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// How many bytes the input's compressed stream decodes to (up to just past the limit), with the
/// decoders `unpack_bytes` uses; 0 for input that is not gzip or zstd.
pub fn expanded_len(data: &[u8]) -> u64 {
    match Format::detect(&data[..data.len().min(4)]) {
        Some(Format::Zstd) => match zstd::stream::read::Decoder::with_buffer(data) {
            Ok(mut d) => count(&mut d),
            Err(_) => 0,
        },
        Some(Format::Nx) => count(&mut flate2::bufread::GzDecoder::new(data)),
        None => 0,
    }
}

fn count(r: &mut dyn Read) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    while total <= MAX_EXPANDED {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n as u64,
        }
    }
    total
}
