//! Output collection quirks, each pinned to what nx 24.0.6's `expandOutputs` /
//! `getFilesForOutputsBatch` return on the same tree (checked against Nx by
//! `__tests__/outputs.test.js`).

use nx_open_cache::outputs::{expand_outputs, get_files_for_outputs, get_files_for_outputs_batch};
use std::fs;
use std::path::Path;

fn tree(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for f in files {
        let p = dir.path().join(f);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, f).expect("write");
    }
    dir
}

fn v(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn expand(root: &Path, entries: &[&str]) -> Vec<String> {
    expand_outputs(root, &v(entries)).expect("expand")
}

fn files(root: &Path, entries: &[&str]) -> Vec<String> {
    get_files_for_outputs(root, &v(entries)).expect("files")
}

#[cfg(unix)]
fn link(root: &Path, target: &str, at: &str) {
    std::os::unix::fs::symlink(target, root.join(at)).expect("symlink");
}

#[test]
fn plain_paths_come_back_verbatim_when_they_exist() {
    let t = tree(&["dist/a.js", "top.js", "@scope/pkg/x.js", "lib/x\\*y"]);
    // No glob anywhere: existing entries as written, in order, duplicates kept.
    assert_eq!(
        expand(
            t.path(),
            &["./dist", "top.js", "missing", "top.js", "dist//a.js"]
        ),
        v(&["./dist", "top.js", "top.js", "dist//a.js"])
    );
    // `@`, `+`, `!` inside a name and escaped syntax are not globs.
    assert_eq!(
        expand(t.path(), &["@scope/pkg", "lib/x\\*y"]),
        v(&["@scope/pkg", "lib/x\\*y"])
    );
    // Files: a plain file as written, a directory as `Path::strip_prefix` spells its files.
    assert_eq!(
        files(
            t.path(),
            &["./top.js", "./dist", "dist//a.js", "top.js", "top.js"]
        ),
        v(&["./top.js", "dist//a.js", "dist/a.js", "top.js"])
    );
}

#[test]
fn globs_select_directories_and_files() {
    let t = tree(&["dist/a/1.js", "dist/a/1.map", "dist/b.js", "top.js"]);
    assert_eq!(
        expand(t.path(), &["dist/**"]),
        v(&["dist/a", "dist/a/1.js", "dist/a/1.map", "dist/b.js"])
    );
    // An existing directory among globs means everything below it (not itself).
    assert_eq!(
        expand(t.path(), &["dist", "*.js"]),
        v(&[
            "dist/a",
            "dist/a/1.js",
            "dist/a/1.map",
            "dist/b.js",
            "top.js"
        ])
    );
    assert_eq!(
        expand(t.path(), &["dist/a/*.{js,map}"]),
        v(&["dist/a/1.js", "dist/a/1.map"])
    );
    assert_eq!(expand(t.path(), &["{dist,out}/*.js"]), v(&["dist/b.js"]));
    assert_eq!(
        expand(t.path(), &["dist/a/*.js{,.map}"]),
        v(&["dist/a/1.js"])
    );
    assert_eq!(
        files(t.path(), &["dist/*"]),
        v(&["dist/a/1.js", "dist/a/1.map", "dist/b.js"])
    );
}

#[test]
fn a_negation_gives_files_only_prunes_and_matches_anywhere() {
    let t = tree(&[
        "dist/a/1.js",
        "dist/a/1.map",
        "dist/b/2.js",
        "x/dist/b/3.js",
        "top.js",
    ]);
    assert_eq!(
        expand(t.path(), &["dist", "!dist/**/*.map"]),
        v(&["dist/a/1.js", "dist/b/2.js"])
    );
    // `!dist/b` prunes `**/dist/b`: x/dist/b goes too.
    assert_eq!(
        expand(t.path(), &["**", "!dist/b"]),
        v(&["dist/a/1.js", "dist/a/1.map", "top.js"])
    );
    // Only negations: every file not excluded.
    assert_eq!(expand(t.path(), &["!dist"]), v(&["top.js"]));
    assert_eq!(expand(t.path(), &["!**/*.js"]), v(&["dist/a/1.map"]));
}

#[test]
fn extglobs_follow_nx_rewrite() {
    let t = tree(&[
        "dist/a/1.js",
        "dist/b/2.js",
        "dist/c/3.js",
        "dist/x.js",
        "dist/y.js",
    ]);
    // In the last segment `!(a|b)` only excludes the exact names: their contents stay.
    assert_eq!(
        expand(t.path(), &["dist/!(a|b)"]),
        v(&[
            "dist/a/1.js",
            "dist/b/2.js",
            "dist/c",
            "dist/c/3.js",
            "dist/x.js",
            "dist/y.js"
        ])
    );
    assert_eq!(expand(t.path(), &["dist/!(x).js"]), v(&["dist/y.js"]));
    assert_eq!(
        expand(t.path(), &["dist/@(a|c)/*.js"]),
        v(&["dist/a/1.js", "dist/c/3.js"])
    );
    assert_eq!(expand(t.path(), &["dist/+(x).js"]), v(&["dist/x.js"]));
    assert_eq!(
        expand(t.path(), &["dist/*.(js|map)"]),
        v(&["dist/x.js", "dist/y.js"])
    );
}

#[test]
fn builtin_ignores_apply_to_globs_but_not_to_plain_directories() {
    let t = tree(&[
        "dist/node_modules/n.js",
        "dist/.git/g.js",
        "dist/.nx/cache/c.js",
        "dist/.nx/o.js",
        "dist/a/node_modules/m.js",
        "dist/a/x.js",
        "node_modules/p/i.js",
    ]);
    assert_eq!(
        files(t.path(), &["dist"]),
        v(&[
            "dist/.git/g.js",
            "dist/.nx/cache/c.js",
            "dist/.nx/o.js",
            "dist/a/node_modules/m.js",
            "dist/a/x.js",
            "dist/node_modules/n.js"
        ])
    );
    assert_eq!(
        expand(t.path(), &["**/*.js"]),
        v(&["dist/.nx/o.js", "dist/a/x.js"])
    );
    // A directory a glob selects is then read whole, ignores and all.
    assert_eq!(
        files(t.path(), &["dist/**"]),
        v(&[
            "dist/.nx/cache/c.js",
            "dist/.nx/o.js",
            "dist/a/node_modules/m.js",
            "dist/a/x.js"
        ])
    );
    // An ignored directory on the way to a glob's directory stops it.
    assert!(expand(t.path(), &["node_modules/p/*.js"]).is_empty());
    assert_eq!(
        files(t.path(), &["node_modules"]),
        v(&["node_modules/p/i.js"])
    );
}

#[test]
fn spelling_of_a_glob_directory_is_kept() {
    let t = tree(&["out/o.js", "out/sub/s.js"]);
    // `./` is trimmed from walked paths, so `./out/**` matches nothing...
    assert!(expand(t.path(), &["./out/**"]).is_empty());
    // ...an inner `.` stays, `//` collapses.
    assert_eq!(expand(t.path(), &["out/./sub/*"]), v(&["out/./sub/s.js"]));
    assert!(expand(t.path(), &["out//sub/*"]).is_empty());
    // Two spellings of one directory are walked twice: Nx returns duplicates.
    assert_eq!(
        expand(t.path(), &["./out/sub/*", "out/**"]),
        v(&[
            "out/o.js",
            "out/sub",
            "out/sub",
            "out/sub/s.js",
            "out/sub/s.js"
        ])
    );
    // Nested spellings are walked once.
    assert_eq!(
        expand(t.path(), &["out/sub/*", "out/**"]),
        v(&["out/o.js", "out/sub", "out/sub/s.js"])
    );
}

#[cfg(unix)]
#[test]
fn directory_symlinks_are_not_followed() {
    let t = tree(&["other/o.js", "dist/a.js", "top.js"]);
    link(t.path(), "../other", "dist/link");
    link(t.path(), "../top.js", "dist/flink.js");
    link(t.path(), "nowhere", "dist/dangle.js");
    assert_eq!(
        files(t.path(), &["dist"]),
        v(&["dist/a.js", "dist/flink.js"])
    );
    assert_eq!(
        expand(t.path(), &["dist/*"]),
        v(&["dist/a.js", "dist/dangle.js", "dist/flink.js", "dist/link"])
    );
    assert_eq!(
        files(t.path(), &["dist/*"]),
        v(&["dist/a.js", "dist/flink.js"])
    );
    assert!(expand(t.path(), &["dist/link/**"]).is_empty());
    assert!(expand(t.path(), &["dist/link/*.js"]).is_empty());
    assert!(files(t.path(), &["dist/link"]).is_empty());
    // A plain entry exists when its target does.
    assert_eq!(
        expand(t.path(), &["dist/link", "dist/dangle.js"]),
        v(&["dist/link"])
    );
}

#[test]
fn invalid_globs_are_errors_naming_the_glob() {
    let t = tree(&["a.js"]);
    for bad in ["dist/[a", "out/{x", "dist/!(a", "a/@(b/c)"] {
        let e = expand_outputs(t.path(), &v(&["a.js", bad])).expect_err(bad);
        assert!(e.to_string().contains(bad), "{e}");
        let e = get_files_for_outputs(t.path(), &v(&[bad])).expect_err(bad);
        assert!(e.to_string().contains(bad), "{e}");
    }
    // Nx aborts the process on an invalid negation; here it is an error like any other.
    let e = expand_outputs(t.path(), &v(&["a.js", "!x/[y"])).expect_err("negation");
    assert_eq!(e.glob, "!x/[y");
    let e =
        get_files_for_outputs_batch(t.path(), &[v(&["a.js"]), v(&["b/{c"])]).expect_err("batch");
    assert_eq!(e.glob, "b/{c");
}

#[test]
fn batch_keeps_order() {
    let t = tree(&["a/1.js", "b/2.js"]);
    let out =
        get_files_for_outputs_batch(t.path(), &[v(&["b"]), v(&["a/*.js"]), v(&[])]).expect("batch");
    assert_eq!(out, vec![v(&["b/2.js"]), v(&["a/1.js"]), v(&[])]);
}
