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
struct GlobWalk<'a> {
    select: &'a NxGlobSet,
    prune: &'a NxGlobSet,
    files_only: bool,
    /// Literal leading directories of the selecting globs, `a/b` form; `None`: walk everything.
    prefixes: Option<Vec<String>>,
    /// Collect files (a selected directory is read whole) rather than the selected paths.
    collect_files: bool,
    root: &'a Path,
}

impl GlobWalk<'_> {
    /// Whether a directory at `rel` can hold a selected path.
    fn may_hold(&self, rel: &Path) -> bool {
        let Some(prefixes) = &self.prefixes else {
            return true;
        };
        let rel = rel.to_string_lossy();
        prefixes.iter().any(|p| {
            p.as_str() == rel
                || (p.len() > rel.len()
                    && p.starts_with(rel.as_ref())
                    && p.as_bytes()[rel.len()] == b'/')
                || (rel.len() > p.len()
                    && rel.starts_with(p.as_str())
                    && rel.as_bytes()[p.len()] == b'/')
        })
    }

    fn visit(&self, dir_abs: &Path, dir_rel: &Path) -> Vec<String> {
        let Ok(read) = fs::read_dir(dir_abs) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut subdirs: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut whole: Vec<PathBuf> = Vec::new();
        for entry in read.flatten() {
            let name = entry.file_name();
            let abs = dir_abs.join(&name);
            if self.prune.is_match(abs.to_string_lossy().as_ref()) {
                continue;
            }
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            let rel = dir_rel.join(&name);
            let is_dir = file_type.is_dir();
            if !(self.files_only && is_dir) && self.select.is_match(&rel) {
                if !self.collect_files {
                    out.push(normalized(&rel));
                } else if is_dir {
                    // A selected directory stands for every file below it, ignores or not.
                    whole.push(abs);
                    continue;
                } else if fs::metadata(self.root.join(&rel)).is_ok_and(|m| m.is_file()) {
                    out.push(normalized(&rel));
                }
            }
            if is_dir && self.may_hold(&rel) {
                subdirs.push((abs, rel));
            }
        }
        let root = self.root;
        let nested: Vec<Vec<String>> = subdirs
            .into_par_iter()
            .map(|(abs, rel)| self.visit(&abs, &rel))
            .chain(whole.into_par_iter().map(|abs| all_files(root, &abs)))
            .collect();
        for mut n in nested {
            out.append(&mut n);
        }
        out
    }
}

/// Walks `root` for a glob plan, see [`super::expand_outputs`].
pub(super) fn expand(
    root: &Path,
    select: &NxGlobSet,
    prune: &NxGlobSet,
    files_only: bool,
) -> Vec<String> {
    run(root, select, prune, files_only, false)
}

/// Walks `root` for a glob plan and turns what it selects into files, see
/// [`super::get_files_for_outputs`].
pub(super) fn files_for_globs(
    root: &Path,
    select: &NxGlobSet,
    prune: &NxGlobSet,
    files_only: bool,
) -> Vec<String> {
    run(root, select, prune, files_only, true)
}

fn run(
    root: &Path,
    select: &NxGlobSet,
    prune: &NxGlobSet,
    files_only: bool,
    collect_files: bool,
) -> Vec<String> {
    // Nx applies its pruning to the walk's root too.
    if prune.is_match(root.to_string_lossy().as_ref()) {
        return Vec::new();
    }
    let walk = GlobWalk {
        select,
        prune,
        files_only,
        prefixes: select
            .literal_prefixes()
            .map(|ps| ps.into_iter().map(|p| p.join("/")).collect()),
        collect_files,
        root,
    };
    walk.visit(root, Path::new(""))
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
