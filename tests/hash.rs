//! Hashing: Nx vectors (measured with nx 24.0.6's native hashArray/hashFile), streaming, and the
//! hashFiles walk (ignore files, hardcoded ignores, globs and negation, symlinks, unicode, empty
//! files, errors).

use nx_open_cache::hash::{
    file_entry, hash_array, hash_array_u64, hash_file, hash_file_u64, hash_files, HashFilesOptions,
};
use std::fs;
use std::path::Path;
use xxhash_rust::xxh3::xxh3_64;

fn write(root: &Path, rel: &str, contents: &[u8]) {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(p, contents).unwrap();
}

fn paths(root: &Path, globs: &[&str], include_ignored: bool) -> Vec<String> {
    hash_files(root, globs, &HashFilesOptions { include_ignored })
        .unwrap()
        .files
        .into_iter()
        .map(|f| f.path)
        .collect()
}

#[test]
fn hash_array_vectors_from_nx() {
    let v = |items: &[Option<&str>]| hash_array(items);
    assert_eq!(v(&[Some("a"), Some("b"), Some("c")]), "380853340397997038");
    assert_eq!(v(&[Some("a"), None, Some("b")]), "15731061398198237182");
    assert_eq!(v(&[]), "3244421341483603138");
    assert_eq!(v(&[Some(""), Some("")]), "3660690302424466814");
    assert_eq!(v(&[Some("é"), Some("日本")]), "356086936988031197");
    // Measured on nx 24.0.6 as well.
    assert_eq!(v(&[Some("a"), Some(""), Some("b")]), "1927512556341049332");
    assert_eq!(v(&[None, Some("a")]), "16629034431890738719");
    // The joined-string definition.
    assert_eq!(hash_array_u64(&[Some("x"), Some("y,z")]), xxh3_64(b"x,y,z"));
}

#[test]
fn hash_file_vectors_and_absent_paths() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "hello.txt", b"hello world\n");
    write(root, "empty", b"");
    assert_eq!(
        hash_file(&root.join("hello.txt")).unwrap().as_deref(),
        Some("15289578712018480094")
    );
    assert_eq!(
        hash_file_u64(&root.join("empty")).unwrap(),
        Some(xxh3_64(b""))
    );
    assert_eq!(hash_file(&root.join("missing")).unwrap(), None);
    assert_eq!(hash_file(root).unwrap(), None);
    // Through a file, as if it were a directory.
    assert_eq!(hash_file(&root.join("hello.txt/x")).unwrap(), None);
}

// Unix-native only: the portable open (Windows has no FIFOs in its filesystem) has no
// O_NONBLOCK, so under `portable-fallbacks` opening a FIFO would wait for a writer.
#[cfg(unix_native)]
#[test]
fn hash_file_follows_symlinks_and_refuses_fifos() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "target.txt", b"contents");
    symlink(root.join("target.txt"), root.join("link")).unwrap();
    symlink(root.join("nowhere"), root.join("dangling")).unwrap();
    symlink(root.join("loop"), root.join("loop")).unwrap();
    symlink(root, root.join("dirlink")).unwrap();
    assert_eq!(
        hash_file_u64(&root.join("link")).unwrap(),
        Some(xxh3_64(b"contents"))
    );
    assert_eq!(hash_file(&root.join("dangling")).unwrap(), None);
    assert_eq!(hash_file(&root.join("loop")).unwrap(), None);
    assert_eq!(hash_file(&root.join("dirlink")).unwrap(), None);

    let fifo = root.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let e = hash_file(&fifo).unwrap_err();
    assert!(matches!(
        e,
        nx_open_cache::hash::HashError::NotARegularFile { .. }
    ));
    assert!(e.to_string().contains("fifo"), "{e}");
}

/// A FIFO without a writer inside the tree (directly and through a symlink) is left out of
/// `hash_files`, as the documentation says of special files: the walk never opens it, so it
/// cannot block. Run on another thread with a bound so that a regression fails instead of
/// hanging.
// Unix-native only: the portable open (Windows has no FIFOs in its filesystem) has no
// O_NONBLOCK, so under `portable-fallbacks` opening a FIFO would wait for a writer.
#[cfg(unix_native)]
#[test]
fn a_fifo_in_the_tree_is_left_out_without_blocking() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    write(&root, "a.txt", b"a");
    write(&root, "sub/b.txt", b"bb");
    let fifo = root.join("sub/pipe");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    symlink(&fifo, root.join("link-to-pipe")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let walk_root = root.clone();
    std::thread::spawn(move || {
        let _ = tx.send(hash_files(
            &walk_root,
            &["**/*"],
            &HashFilesOptions::default(),
        ));
    });
    let r = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("hash_files on a tree with a FIFO did not return within 60 s")
        .unwrap();
    let listed: Vec<&str> = r.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(listed, ["a.txt", "sub/b.txt"]);
    assert_eq!(r.files[1].hash, xxh3_64(b"bb"));
}

#[cfg(unix)]
#[test]
fn unreadable_file_is_an_error_naming_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("secret");
    fs::write(&p, b"x").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o000)).unwrap();
    if fs::read(&p).is_ok() {
        return; // running as root: permissions are not enforced
    }
    let e = hash_file(&p).unwrap_err().to_string();
    assert!(e.contains("secret") && e.contains("ermission"), "{e}");
}

#[test]
fn streaming_matches_one_shot_across_chunk_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    // Sizes around the 256 KiB read chunk (and the former 1 MiB one), a page, and xxh3's internal
    // block/stripe sizes; hashFiles reads them the same way as hashFile.
    for size in [
        0usize,
        1,
        240,
        241,
        1024,
        4095,
        4096,
        4097,
        (256 << 10) - 1,
        256 << 10,
        (256 << 10) + 1,
        2 * (256 << 10),
        (1 << 20) - 1,
        1 << 20,
        (1 << 20) + 1,
        3 * (1 << 20) + 12345,
    ] {
        let bytes: Vec<u8> = (0..size)
            .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1])
            .collect();
        let name = format!("f{size}");
        fs::write(dir.path().join(&name), &bytes).unwrap();
        assert_eq!(
            hash_file_u64(&dir.path().join(&name)).unwrap(),
            Some(xxh3_64(&bytes)),
            "size {size}"
        );
        expected.push((name, xxh3_64(&bytes)));
    }
    expected.sort();
    let walked = hash_files(dir.path(), &["**/*"], &HashFilesOptions::default()).unwrap();
    let got: Vec<(String, u64)> = walked.files.into_iter().map(|f| (f.path, f.hash)).collect();
    assert_eq!(got, expected);
}

/// `/proc` files report a size of 0 and still have bytes: a size of 0 does not end the read.
#[cfg(target_os = "linux")]
#[test]
fn a_file_that_reports_size_zero_is_read_to_its_end() {
    let contents = fs::read("/proc/version").unwrap();
    assert!(!contents.is_empty());
    assert_eq!(fs::metadata("/proc/version").unwrap().len(), 0);
    assert_eq!(
        hash_file_u64(Path::new("/proc/version")).unwrap(),
        Some(xxh3_64(&contents))
    );
    // Through a symlink in a walked tree too.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/proc/version", dir.path().join("version")).unwrap();
    let r = hash_files(dir.path(), &["**/*"], &HashFilesOptions::default()).unwrap();
    assert_eq!(r.files.len(), 1);
    assert_eq!(r.files[0].hash, xxh3_64(&contents));
}

#[test]
fn a_root_written_with_a_dot_or_a_trailing_slash_gives_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "a/b.txt", b"b");
    write(root, "c.txt", b"c");
    let plain = hash_files(root, &["**/*"], &HashFilesOptions::default()).unwrap();
    assert_eq!(
        plain
            .files
            .iter()
            .map(|f| f.path.as_str())
            .collect::<Vec<_>>(),
        ["a/b.txt", "c.txt"]
    );
    for variant in [root.join("."), root.join("a").join("..")] {
        let r = hash_files(&variant, &["**/*"], &HashFilesOptions::default()).unwrap();
        assert_eq!(r, plain, "{}", variant.display());
    }
    let slash = format!("{}/", root.display());
    let r = hash_files(Path::new(&slash), &["**/*"], &HashFilesOptions::default()).unwrap();
    assert_eq!(r, plain, "{slash}");
}

#[test]
fn walk_honours_gitignore_nxignore_and_hardcoded_ignores() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, ".gitignore", b"*.log\n/dist\n!keep.log\n");
    write(root, ".nxignore", b"tmp/\n");
    write(root, "a.ts", b"a");
    write(root, "debug.log", b"log");
    write(root, "keep.log", b"kept");
    write(root, "dist/out.js", b"out");
    write(root, "src/dist/inner.js", b"not root dist");
    write(root, "tmp/t.txt", b"t");
    write(root, "src/.gitignore", b"gen/\n");
    write(root, "src/gen/g.ts", b"g");
    write(root, "src/b.ts", b"b");
    write(root, "other/gen/g.ts", b"g2");
    write(root, "node_modules/pkg/index.js", b"nm");
    write(root, "src/node_modules/x.js", b"nm2");
    write(root, ".nx/cache/x", b"c");
    write(root, ".nx/workspace-data/y", b"w");
    write(root, ".nx/keep.json", b"{}");
    write(root, ".yarn/cache/z", b"y");
    write(root, ".git/HEAD", b"ref");
    write(root, ".hidden", b"h");

    assert_eq!(
        paths(root, &[], false),
        [
            ".gitignore",
            ".hidden",
            ".nx/keep.json",
            ".nxignore",
            "a.ts",
            "keep.log",
            "other/gen/g.ts",
            "src/.gitignore",
            "src/b.ts",
            "src/dist/inner.js",
        ]
    );
    let all = paths(root, &[], true);
    assert_eq!(all.len(), 19, "{all:?}");
    assert!(!all.iter().any(|p| p.starts_with(".git/")));
    assert!(all.contains(&"node_modules/pkg/index.js".to_owned()));
}

#[test]
fn ignore_files_above_the_root_do_not_apply() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), ".gitignore", b"*.txt\n");
    write(dir.path(), "sub/a.txt", b"a");
    assert_eq!(paths(&dir.path().join("sub"), &[], false), ["a.txt"]);
}

#[test]
fn globs_and_negation() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for p in [
        "src/a.ts",
        "src/a.spec.ts",
        "src/deep/b.ts",
        "src/deep/b.css",
        "lib/c.ts",
        "README.md",
    ] {
        write(root, p, p.as_bytes());
    }
    assert_eq!(
        paths(root, &["src/**/*.ts", "!**/*.spec.ts"], false),
        ["src/a.ts", "src/deep/b.ts"]
    );
    assert_eq!(paths(root, &["*.md"], false), ["README.md"]);
    assert_eq!(
        paths(root, &["src/*.ts"], false),
        ["src/a.spec.ts", "src/a.ts"]
    );
    assert_eq!(
        paths(root, &["src/", "!src/deep/*.{css,map}"], false),
        ["src/a.spec.ts", "src/a.ts", "src/deep/b.ts"]
    );
    assert_eq!(paths(root, &["!src/**"], false), ["README.md", "lib/c.ts"]);
    assert!(paths(root, &["nothing/**"], false).is_empty());
    // Extglobs, rewritten as Nx does (the outputs module's engine).
    assert_eq!(
        paths(root, &["src/**/+(a|b).ts"], false),
        ["src/a.ts", "src/deep/b.ts"]
    );
    assert_eq!(
        paths(root, &["**/*.ts", "!**/?(*.)+(spec|test).ts"], false),
        ["lib/c.ts", "src/a.ts", "src/deep/b.ts"]
    );
    // Directories outside the globs' literal prefixes are pruned, without losing matches.
    assert_eq!(
        paths(root, &["src/deep/*", "lib/*.ts"], false),
        ["lib/c.ts", "src/deep/b.css", "src/deep/b.ts"]
    );
}

#[test]
fn hash_is_the_hash_array_of_path_nul_hash_entries() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "b/x.txt", b"x");
    write(root, "a.txt", b"");
    write(root, "日本/é.txt", "ünïcödé".as_bytes());
    let r = hash_files(root, &["**/*"], &HashFilesOptions::default()).unwrap();
    let names: Vec<&str> = r.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(names, ["a.txt", "b/x.txt", "日本/é.txt"]);
    assert_eq!(r.files[0].hash, xxh3_64(b""));
    assert_eq!(r.files[2].hash, xxh3_64("ünïcödé".as_bytes()));
    let entries: Vec<Option<String>> = r
        .files
        .iter()
        .map(|f| Some(file_entry(&f.path, f.hash)))
        .collect();
    assert_eq!(r.hash, hash_array_u64(&entries));
    assert_eq!(file_entry("a.txt", 7), "a.txt\u{0}7");
    // Deterministic, and sensitive to contents and names.
    let again = hash_files(root, &["**/*"], &HashFilesOptions::default()).unwrap();
    assert_eq!(again, r);
    write(root, "a.txt", b" ");
    assert_ne!(
        hash_files(root, &["**/*"], &HashFilesOptions::default())
            .unwrap()
            .hash,
        r.hash
    );
    fs::rename(root.join("b/x.txt"), root.join("b/y.txt")).unwrap();
    write(root, "a.txt", b"");
    assert_ne!(
        hash_files(root, &["**/*"], &HashFilesOptions::default())
            .unwrap()
            .hash,
        r.hash
    );
}

#[cfg(unix)]
#[test]
fn walk_symlinks() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "real/f.txt", b"real");
    symlink(root.join("real/f.txt"), root.join("file-link")).unwrap();
    symlink(root.join("real"), root.join("dir-link")).unwrap();
    symlink(root.join("gone"), root.join("dangling")).unwrap();
    let r = hash_files(root, &[] as &[&str], &HashFilesOptions::default()).unwrap();
    let names: Vec<&str> = r.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(names, ["file-link", "real/f.txt"]);
    assert_eq!(r.files[0].hash, xxh3_64(b"real"));
    assert_eq!(r.files[0].hash, r.files[1].hash);
}

#[test]
fn errors_name_the_glob_or_path() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "f", b"");
    let e = hash_files(
        dir.path(),
        &["src/**", "src/[z"],
        &HashFilesOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("\"src/[z\""), "{e}");
    let e = hash_files(&dir.path().join("f"), &["**"], &HashFilesOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a directory"), "{e}");
    let missing = dir.path().join("missing");
    let e = hash_files(&missing, &["**"], &HashFilesOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing"), "{e}");
}

#[cfg(unix)]
#[test]
fn unreadable_directory_is_an_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "locked/f", b"x");
    let locked = dir.path().join("locked");
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    let readable = fs::read_dir(&locked).is_ok();
    let r = hash_files(dir.path(), &["**"], &HashFilesOptions::default());
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
    if readable {
        return; // running as root
    }
    let e = r.unwrap_err().to_string();
    assert!(e.contains("locked"), "{e}");
}

#[test]
fn many_files_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for i in 0..2000 {
        write(
            root,
            &format!("d{}/f{i}.txt", i % 37),
            format!("{i}").as_bytes(),
        );
    }
    let r = hash_files(root, &["**/*.txt"], &HashFilesOptions::default()).unwrap();
    assert_eq!(r.files.len(), 2000);
    assert!(r.files.windows(2).all(|w| w[0].path < w[1].path));
    for f in &r.files {
        let i: usize = f
            .path
            .rsplit('f')
            .next()
            .unwrap()
            .trim_end_matches(".txt")
            .parse()
            .unwrap();
        assert_eq!(f.hash, xxh3_64(format!("{i}").as_bytes()), "{}", f.path);
    }
}
