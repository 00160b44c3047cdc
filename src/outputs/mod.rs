//! Nx output collection: which paths a task's `outputs` entries name on disk, exactly as Nx 24
//! computes them (`expandOutputs`, used to copy outputs to and from the cache, and
//! `getFilesForOutputsBatch`, used to hash them).
//!
//! Nx's rules, quirks included (each checked against nx 24.0.6 by `__tests__/outputs.test.js`):
//! - An entry is a glob when it starts with `!` or a segment holds an unescaped `*`, `?`, `[`,
//!   `{`, `}` or `(`; `@scope`, `a+b` and `x\*` are plain names. With no glob entry,
//!   `expand_outputs` returns the entries that exist (following symlinks), verbatim and in order.
//! - Otherwise every entry is a glob relative to the root (an existing directory `d` becomes `d/`,
//!   i.e. `d/**`); entries starting with `!` are negations. Each glob is read from its target
//!   directory (its leading literal segments, `//` collapsed, `.` kept; nested ones walked once,
//!   compared as written, so `./a` and `a` are walked twice and Nx returns duplicates). Walks do
//!   not follow symlinks; Nx's built-in ignores (`**/node_modules`, `**/.git`, `**/.nx/cache`,
//!   `**/.nx/workspace-data`, `**/.yarn/cache`) and every negation, as `**/<negation>`, prune
//!   them, matched against absolute paths, including on the way down to a target directory.
//!   Every walked path (as `Path::strip_prefix` spells it) that the globs select is returned:
//!   directories and files, or, as soon as one entry is a negation, everything but directories.
//! - `get_files_for_outputs` turns each of those into files: a file (or a link to one) as is,
//!   a real directory as every file below it (no ignores, links to files kept, links to
//!   directories not entered), anything else (a link to a directory, a dangling link, a FIFO)
//!   as nothing. Without a glob entry the entries themselves are turned into files that way.
//!   The result is sorted and deduplicated.
//! - An invalid glob is an error naming it (Nx aborts the whole process on an invalid negation).
//!
//! Extglob entries follow Nx's rewrite (see [`glob`]).

pub mod glob;
mod walk;

use glob::{cached_set, contains_glob_pattern, target_directory, GlobError, NxGlobSet};
use rayon::prelude::*;
use std::path::Path;
use std::sync::Arc;

/// The directories Nx never enters when it expands a glob.
pub const BUILTIN_IGNORES: &[&str] = &[
    "**/node_modules",
    "**/.git",
    "**/.nx/cache",
    "**/.nx/workspace-data",
    "**/.yarn/cache",
];

/// Why outputs could not be collected.
pub type OutputsError = GlobError;

/// The compiled glob side of one entry list.
struct GlobPlan {
    select: Arc<NxGlobSet>,
    prune: Arc<NxGlobSet>,
    /// Some entry is a negation: directories are not returned.
    files_only: bool,
    /// The selecting globs, each ending in `/` when it names an existing directory.
    positive: Vec<String>,
}

impl GlobPlan {
    fn run(&self, root: &Path, collect_files: bool) -> Vec<String> {
        let walk = walk::GlobWalk {
            select: &self.select,
            prune: &self.prune,
            files_only: self.files_only,
            collect_files,
            root,
        };
        let targets: Vec<&str> = if self.positive.is_empty() {
            vec![""]
        } else {
            self.positive.iter().map(|g| target_directory(g)).collect()
        };
        let per_root: Vec<Vec<String>> = walk::walk_roots(targets)
            .into_par_iter()
            .map(|start| walk.walk_from(start))
            .collect();
        per_root.concat()
    }
}

fn plan(root: &Path, entries: &[String]) -> Result<GlobPlan, OutputsError> {
    let mut positive = Vec::new();
    let mut negated = Vec::new();
    for entry in entries {
        if let Some(rest) = entry.strip_prefix('!') {
            negated.push(rest.to_owned());
        } else if !entry.ends_with('/') && root.join(entry).is_dir() {
            positive.push(format!("{entry}/"));
        } else {
            positive.push(entry.clone());
        }
    }
    let select = cached_set(&positive)?;
    let mut prune: Vec<String> = BUILTIN_IGNORES.iter().map(|s| (*s).to_owned()).collect();
    prune.extend(negated.iter().map(|n| format!("**/{n}")));
    let prune = cached_set(&prune).map_err(|e| {
        // Name the entry as the user wrote it, not its `**/` form.
        let glob = negated
            .iter()
            .find(|n| e.glob == format!("**/{n}"))
            .map(|n| format!("!{n}"))
            .unwrap_or(e.glob);
        GlobError {
            glob,
            reason: e.reason,
        }
    })?;
    Ok(GlobPlan {
        select,
        prune,
        files_only: !negated.is_empty(),
        positive,
    })
}

/// Expands output `entries` (relative to `root`) into the existing paths they name, as Nx's
/// `expandOutputs`. Plain entries come back verbatim in their order; glob results are sorted
/// (Nx returns them in directory-walk order). Errors name an invalid glob.
pub fn expand_outputs(root: &Path, entries: &[String]) -> Result<Vec<String>, OutputsError> {
    if !entries.iter().any(|e| contains_glob_pattern(e)) {
        return Ok(entries
            .iter()
            .filter(|e| root.join(e.as_str()).exists())
            .cloned()
            .collect());
    }
    let plan = plan(root, entries)?;
    let mut found = plan.run(root, false);
    found.par_sort_unstable();
    Ok(found)
}

/// The files output `entries` (relative to `root`) name, sorted and deduplicated, as Nx's
/// `getFilesForOutputsBatch` gives for one task. Errors name an invalid glob.
pub fn get_files_for_outputs(root: &Path, entries: &[String]) -> Result<Vec<String>, OutputsError> {
    let mut files = if entries.iter().any(|e| contains_glob_pattern(e)) {
        let plan = plan(root, entries)?;
        plan.run(root, true)
    } else {
        let per_entry: Vec<Vec<String>> = entries
            .par_iter()
            .map(|entry| walk::files_of_entry(root, entry))
            .collect();
        per_entry.concat()
    };
    files.par_sort_unstable();
    files.dedup();
    Ok(files)
}

/// [`get_files_for_outputs`] for many tasks at once (in parallel), in order: Nx's
/// `getFilesForOutputsBatch`. The first invalid glob fails the whole batch, as in Nx.
pub fn get_files_for_outputs_batch(
    root: &Path,
    batch: &[Vec<String>],
) -> Result<Vec<Vec<String>>, OutputsError> {
    batch
        .par_iter()
        .map(|entries| get_files_for_outputs(root, entries))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, f).unwrap();
        }
        dir
    }

    fn v(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn plain_entries_are_verbatim() {
        let t = tree(&["dist/a.js", "top.js"]);
        let out = expand_outputs(t.path(), &v(&["./dist", "top.js", "missing", "top.js"])).unwrap();
        assert_eq!(out, v(&["./dist", "top.js", "top.js"]));
        let files = get_files_for_outputs(t.path(), &v(&["./dist", "./top.js", "top.js"])).unwrap();
        assert_eq!(files, v(&["./top.js", "dist/a.js", "top.js"]));
    }

    #[test]
    fn negation_gives_files_only_and_prunes() {
        let t = tree(&[
            "dist/a/1.js",
            "dist/a/1.map",
            "dist/b/2.js",
            "x/dist/b/3.js",
        ]);
        let out = expand_outputs(t.path(), &v(&["dist", "!dist/**/*.map"])).unwrap();
        assert_eq!(out, v(&["dist/a/1.js", "dist/b/2.js"]));
        let out = expand_outputs(t.path(), &v(&["**", "!dist/b"])).unwrap();
        // `!dist/b` prunes `**/dist/b`, so x/dist/b goes too.
        assert_eq!(out, v(&["dist/a/1.js", "dist/a/1.map"]));
    }

    #[test]
    fn globs_return_directories_without_negation() {
        let t = tree(&["dist/a/1.js", "dist/b.js"]);
        let out = expand_outputs(t.path(), &v(&["dist/**"])).unwrap();
        assert_eq!(out, v(&["dist/a", "dist/a/1.js", "dist/b.js"]));
        let out = expand_outputs(t.path(), &v(&["dist/*.{js,map}"])).unwrap();
        assert_eq!(out, v(&["dist/b.js"]));
    }

    #[test]
    fn extglob_last_segment_quirk() {
        let t = tree(&["dist/a/1.js", "dist/b/2.js", "dist/c/3.js"]);
        let out = expand_outputs(t.path(), &v(&["dist/!(a|b)"])).unwrap();
        assert_eq!(
            out,
            v(&["dist/a/1.js", "dist/b/2.js", "dist/c", "dist/c/3.js"])
        );
        let out = expand_outputs(t.path(), &v(&["dist/*/!(1).js"])).unwrap();
        assert_eq!(out, v(&["dist/b/2.js", "dist/c/3.js"]));
    }

    #[test]
    fn builtin_ignores_apply_to_globs_not_plain_directories() {
        let t = tree(&[
            "dist/node_modules/n.js",
            "dist/.nx/cache/c.js",
            "dist/a/node_modules/m.js",
            "dist/a/x.js",
            "node_modules/p/i.js",
        ]);
        let files = get_files_for_outputs(t.path(), &v(&["dist"])).unwrap();
        assert_eq!(
            files,
            v(&[
                "dist/.nx/cache/c.js",
                "dist/a/node_modules/m.js",
                "dist/a/x.js",
                "dist/node_modules/n.js"
            ])
        );
        // A glob prunes ignored directories, but a directory it selects is read whole
        // (`dist/.nx` is selected, so `.nx/cache` below it is read).
        let files = get_files_for_outputs(t.path(), &v(&["dist/**"])).unwrap();
        assert_eq!(
            files,
            v(&[
                "dist/.nx/cache/c.js",
                "dist/a/node_modules/m.js",
                "dist/a/x.js"
            ])
        );
        let files = get_files_for_outputs(t.path(), &v(&["**/*.js"])).unwrap();
        assert_eq!(files, v(&["dist/a/x.js"]));
        let files = get_files_for_outputs(t.path(), &v(&["node_modules"])).unwrap();
        assert_eq!(files, v(&["node_modules/p/i.js"]));
        assert!(get_files_for_outputs(t.path(), &v(&["node_modules/**"]))
            .unwrap()
            .is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn directory_symlinks_are_not_followed() {
        let t = tree(&["other/o.js", "dist/a.js", "top.js"]);
        std::os::unix::fs::symlink("../other", t.path().join("dist/link")).unwrap();
        std::os::unix::fs::symlink("../top.js", t.path().join("dist/flink.js")).unwrap();
        std::os::unix::fs::symlink("nowhere", t.path().join("dist/dangle.js")).unwrap();
        let files = get_files_for_outputs(t.path(), &v(&["dist"])).unwrap();
        assert_eq!(files, v(&["dist/a.js", "dist/flink.js"]));
        let out = expand_outputs(t.path(), &v(&["dist/*"])).unwrap();
        assert_eq!(
            out,
            v(&["dist/a.js", "dist/dangle.js", "dist/flink.js", "dist/link"])
        );
        assert_eq!(
            expand_outputs(t.path(), &v(&["dist/link/**"])).unwrap(),
            v(&[])
        );
        assert_eq!(
            get_files_for_outputs(t.path(), &v(&["dist/link"])).unwrap(),
            v(&[])
        );
        assert_eq!(
            expand_outputs(t.path(), &v(&["dist/link"])).unwrap(),
            v(&["dist/link"])
        );
    }

    #[test]
    fn invalid_globs_are_errors_naming_the_glob() {
        let t = tree(&["a.js"]);
        let e = expand_outputs(t.path(), &v(&["dist/[a"])).unwrap_err();
        assert!(e.to_string().contains("dist/[a"), "{e}");
        let e = get_files_for_outputs(t.path(), &v(&["a.js", "!x/{y"])).unwrap_err();
        assert_eq!(e.glob, "!x/{y");
        let e =
            get_files_for_outputs_batch(t.path(), &[v(&["a.js"]), v(&["dist/!(a"])]).unwrap_err();
        assert_eq!(e.glob, "dist/!(a");
    }
}
