//! The directory walks behind output collection: parallel (rayon), never following symlinks.

use super::glob::NxGlobSet;
use rayon::prelude::*;
use std::fs;
use std::path::{Path, PathBuf};

/// Paths as Nx prints them: lossy UTF-8 with `/` separators.
fn normalized(path: &Path) -> String {
    let s = path.to_string_lossy();
    if cfg!(windows) {
        s.replace('\\', "/")
    } else {
        s.into_owned()
    }
}

/// What a glob walk needs to know.
pub(super) struct GlobWalk<'a> {
    /// Selects workspace-relative paths.
    pub select: &'a NxGlobSet,
    /// Prunes absolute paths (built-in ignores and negations).
    pub prune: &'a NxGlobSet,
    /// Directories are not returned (some entry is a negation).
    pub files_only: bool,
    /// Collect files (a selected directory is read whole) rather than the selected paths.
    pub collect_files: bool,
    /// The workspace root.
    pub root: &'a Path,
}

impl GlobWalk<'_> {
    fn pruned(&self, abs: &Path) -> bool {
        self.prune.is_match(abs.to_string_lossy().as_ref())
    }

    /// Handles one walked path; returns whether to descend into it.
    fn visit_entry(
        &self,
        abs: &Path,
        is_dir: bool,
        out: &mut Vec<String>,
        whole: &mut Vec<PathBuf>,
    ) -> bool {
        let Ok(rel) = abs.strip_prefix(self.root) else {
            return is_dir;
        };
        if !(self.files_only && is_dir) && self.select.is_match(rel) {
            let rel_string = normalized(rel);
            if !self.collect_files {
                out.push(rel_string);
            } else if is_dir {
                // A selected directory stands for every file below it, ignores or not.
                whole.push(abs.to_path_buf());
                return false;
            } else if fs::metadata(self.root.join(&rel_string)).is_ok_and(|m| m.is_file()) {
                out.push(rel_string);
            }
        }
        is_dir
    }

    fn visit_dir(&self, dir_abs: &Path) -> Vec<String> {
        let Ok(read) = fs::read_dir(dir_abs) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut subdirs: Vec<PathBuf> = Vec::new();
        let mut whole: Vec<PathBuf> = Vec::new();
        for entry in read.flatten() {
            let abs = dir_abs.join(entry.file_name());
            if self.pruned(&abs) {
                continue;
            }
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if self.visit_entry(&abs, file_type.is_dir(), &mut out, &mut whole) {
                subdirs.push(abs);
            }
        }
        self.finish(out, subdirs, whole)
    }

    fn finish(
        &self,
        mut out: Vec<String>,
        subdirs: Vec<PathBuf>,
        whole: Vec<PathBuf>,
    ) -> Vec<String> {
        let root = self.root;
        let nested: Vec<Vec<String>> = subdirs
            .into_par_iter()
            .map(|abs| self.visit_dir(&abs))
            .chain(whole.into_par_iter().map(|abs| all_files(root, &abs)))
            .collect();
        for mut n in nested {
            out.append(&mut n);
        }
        out
    }

    /// Walks below the workspace-relative directory `start` (a glob's target directory): the
    /// path itself, then everything below it. The path is joined segment by segment, so `a//b`
    /// reads `a/b` while `./a` and `a/./b` keep their `.` (which a glob spelled without it then
    /// does not match, as in Nx). The way down is held to the rules of the walk: pruned
    /// directories and links to directories are not passed through.
    pub fn walk_from(&self, start: &str) -> Vec<String> {
        let mut abs = self.root.to_path_buf();
        let segments: Vec<&str> = start.split('/').filter(|s| !s.is_empty()).collect();
        if segments.is_empty() {
            // The root itself: walked, as long as it is not pruned itself.
            if self.pruned(&abs) {
                return Vec::new();
            }
            return self.visit_dir(&abs);
        }
        let last = segments.len() - 1;
        for (i, segment) in segments.iter().enumerate() {
            abs.push(segment);
            if matches!(*segment, "." | "..") {
                continue;
            }
            let Ok(meta) = fs::symlink_metadata(&abs) else {
                return Vec::new();
            };
            if self.pruned(&abs) || (i < last && !meta.is_dir()) {
                return Vec::new();
            }
        }
        let is_dir = fs::symlink_metadata(&abs).is_ok_and(|m| m.is_dir());
        let mut out = Vec::new();
        let mut whole = Vec::new();
        let descend = self.visit_entry(&abs, is_dir, &mut out, &mut whole);
        let subdirs = if descend { vec![abs] } else { Vec::new() };
        self.finish(out, subdirs, whole)
    }
}

/// The directories to walk for these target directories, as Nx picks them: each spelling once,
/// none below another one (compared as written, so `a//b` is not below `a/b`).
pub(super) fn walk_roots(mut targets: Vec<&str>) -> Vec<&str> {
    targets.sort_by_key(|t| t.len());
    let mut kept: Vec<&str> = Vec::new();
    for t in targets {
        let covered = kept.iter().any(|k| {
            k.is_empty()
                || t == *k
                || (t.starts_with(k) && t.as_bytes().get(k.len()) == Some(&b'/'))
        });
        if !covered {
            kept.push(t);
        }
    }
    kept
}

/// The files one plain (non-glob) entry names: itself when it is a file (or a link to one), every
/// file below it when it is a real directory, nothing otherwise.
pub(super) fn files_of_entry(root: &Path, entry: &str) -> Vec<String> {
    let path = root.join(entry);
    match fs::metadata(&path) {
        Ok(m) if m.is_file() => vec![entry.to_owned()],
        Ok(m) if m.is_dir() => {
            if fs::symlink_metadata(&path).is_ok_and(|l| l.file_type().is_symlink()) {
                Vec::new()
            } else {
                all_files(root, &path)
            }
        }
        _ => Vec::new(),
    }
}

/// Every file below the directory `start` (no ignores; links to files and other non-directories
/// kept, links to directories not entered), relative to `root` (as `Path::strip_prefix` gives).
pub(super) fn all_files(root: &Path, start: &Path) -> Vec<String> {
    let Ok(read) = fs::read_dir(start) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut subdirs = Vec::new();
    for entry in read.flatten() {
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        let path = start.join(entry.file_name());
        let keep = if file_type.is_dir() {
            subdirs.push(path);
            continue;
        } else if file_type.is_file() {
            true
        } else if file_type.is_symlink() {
            fs::metadata(&path).is_ok_and(|m| !m.is_dir())
        } else {
            false
        };
        if keep {
            if let Ok(rel) = path.strip_prefix(root) {
                out.push(normalized(rel));
            }
        }
    }
    let nested: Vec<Vec<String>> = subdirs
        .into_par_iter()
        .map(|dir| all_files(root, &dir))
        .collect();
    for mut n in nested {
        out.append(&mut n);
    }
    out
}
