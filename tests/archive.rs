//! Archives: round trips, reproducibility, Nx layout, and safe extraction of hostile archives.
#![cfg(unix)]

mod common;

use nx_open_cache::archive::{
    pack_to_file, pack_to_vec, unpack_bytes, unpack_file, Format, PackOptions,
};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn write(p: &Path, data: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// The mode a snapshot compares: under `portable-fallbacks` (no Unix modes, as on Windows) only
/// whether the owner may write survives a round trip.
fn kept_mode(p: &Path) -> u32 {
    if cfg!(unix_native) {
        mode(p)
    } else {
        mode(p) & 0o200
    }
}

/// A small output tree: nested files, an empty dir, an executable, an internal symlink, a long path.
fn sample_tree(root: &Path) {
    write(&root.join("dist/app/main.js"), b"console.log('hi')\n");
    write(
        &root.join("dist/app/assets/logo.bin"),
        &[0u8, 1, 2, 255, 254],
    );
    write(&root.join("dist/app/run.sh"), b"#!/bin/sh\necho hi\n");
    fs::set_permissions(
        root.join("dist/app/run.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    fs::set_permissions(
        root.join("dist/app/assets/logo.bin"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::create_dir_all(root.join("dist/app/empty")).unwrap();
    symlink("main.js", root.join("dist/app/link.js")).unwrap();
    symlink("../app/assets", root.join("dist/app/assets-link")).unwrap();
    let long = format!("dist/app/{}/{}.txt", "d".repeat(120), "f".repeat(130));
    write(&root.join(long), b"long path");
}

fn opts(root: &Path, format: Format) -> PackOptions {
    PackOptions {
        root: root.to_path_buf(),
        files: vec!["dist/app".into()],
        terminal_output: "built ✓\nline 2\n".into(),
        code: 3,
        format,
        ..Default::default()
    }
}

/// (relative path, kind + content/target, mode) of every entry below `root`, sorted.
fn snapshot(root: &Path) -> Vec<(String, String, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = fs::symlink_metadata(&p).unwrap();
            let desc = if m.file_type().is_symlink() {
                format!("link:{}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".to_owned()
            } else {
                format!("file:{:?}", fs::read(&p).unwrap())
            };
            let md = if m.file_type().is_symlink() {
                0
            } else {
                kept_mode(&p)
            };
            out.push((rel, desc, md));
        }
    }
    out.sort();
    out
}

fn gz(tar: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(tar).unwrap();
    e.finish().unwrap()
}

fn zst(tar: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(tar, 3).unwrap()
}

fn decompress(a: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if a.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(a)
            .read_to_end(&mut out)
            .unwrap();
    } else {
        zstd::stream::read::Decoder::new(a)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
    }
    out
}

/// A forged tar entry: the name and link name go straight into the header, bypassing the tar
/// crate's path checks, as a hostile server would.
fn raw(name: &str, ty: u8, link: &str, mode: u32, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_entry_type(tar::EntryType::new(ty));
    h.set_mode(mode);
    h.set_mtime(0);
    {
        let b = h.as_mut_bytes();
        b[..name.len()].copy_from_slice(name.as_bytes());
        b[157..157 + link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
    out
}

fn file(name: &str, data: &[u8]) -> Vec<u8> {
    raw(name, b'0', "", 0o644, data)
}
fn dir(name: &str) -> Vec<u8> {
    raw(name, b'5', "", 0o755, b"")
}
fn link(name: &str, target: &str) -> Vec<u8> {
    raw(name, b'2', target, 0o777, b"")
}
fn code(c: u32) -> Vec<u8> {
    file("code", &c.to_be_bytes())
}

fn tar_of(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = entries.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// Unpacks into `<tmp>/repo/out` and checks, on error, that nothing at all was written: `out` is
/// absent and the parent holds only what it held before.
fn refused(archive: &[u8], setup: impl FnOnce(&Path)) -> (String, tempfile::TempDir) {
    let t = tmp();
    let base = t.path().join("repo");
    fs::create_dir_all(&base).unwrap();
    setup(t.path());
    let before = snapshot(t.path());
    let err = unpack_bytes(archive, &base.join("out")).expect_err("must be refused");
    assert_eq!(
        snapshot(t.path()),
        before,
        "a refused archive changed the disk"
    );
    (err.to_string(), t)
}

fn both(entries: &[Vec<u8>]) -> [Vec<u8>; 2] {
    let t = tar_of(entries);
    [gz(&t), zst(&t)]
}

// ---------------------------------------------------------------- round trips

#[test]
fn round_trip_both_formats() {
    let src = tmp();
    sample_tree(src.path());
    for format in [Format::Zstd, Format::Nx] {
        let a = pack_to_vec(&opts(src.path(), format)).unwrap();
        let magic_ok = match format {
            Format::Zstd => a.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]),
            Format::Nx => a.starts_with(&[0x1f, 0x8b]),
        };
        assert!(magic_ok, "{format:?}");
        let out = tmp();
        let dest = out.path().join("restored");
        let u = unpack_bytes(&a, &dest).unwrap();
        assert_eq!(u.code, 3);
        assert_eq!(u.format, format);
        assert_eq!(u.terminal_output.as_deref(), Some("built ✓\nline 2\n"));
        assert!(u.files.contains(&"dist/app/main.js".to_owned()));
        assert!(u.files.contains(&"dist/app/empty".to_owned()));
        assert!(u.files.contains(&"dist/app/link.js".to_owned()));
        let mut sorted = u.files.clone();
        sorted.sort_by(|a, b| Path::new(a).cmp(Path::new(b)));
        assert_eq!(sorted, u.files);
        // Same tree, same modes, same link targets (dist/ itself was not archived: only dist/app).
        let want: Vec<_> = snapshot(src.path())
            .into_iter()
            .filter(|(p, _, _)| p != "dist")
            .collect();
        let got: Vec<_> = snapshot(&dest)
            .into_iter()
            .filter(|(p, _, _)| p != "dist")
            .collect();
        assert_eq!(got, want, "{format:?}");
        if cfg!(unix_native) {
            assert_eq!(mode(&dest.join("dist/app/run.sh")), 0o755);
            assert_eq!(mode(&dest.join("dist/app/assets/logo.bin")), 0o600);
        }
    }
}

#[test]
fn same_inputs_same_bytes() {
    let src = tmp();
    sample_tree(src.path());
    for format in [Format::Zstd, Format::Nx] {
        let a = pack_to_vec(&opts(src.path(), format)).unwrap();
        // Touch a file (new mtime) and re-create another with a new inode: same bytes.
        let p = src.path().join("dist/app/main.js");
        let data = fs::read(&p).unwrap();
        fs::remove_file(&p).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&p, data).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let b = pack_to_vec(&opts(src.path(), format)).unwrap();
        assert_eq!(a, b, "{format:?}");
    }
    // zstd: the thread count does not change the bytes.
    let mut o1 = opts(src.path(), Format::Zstd);
    o1.threads = Some(1);
    let mut o4 = o1.clone();
    o4.threads = Some(4);
    assert_eq!(pack_to_vec(&o1).unwrap(), pack_to_vec(&o4).unwrap());
}

#[test]
fn nx_layout_and_deterministic_headers() {
    let src = tmp();
    sample_tree(src.path());
    let a = pack_to_vec(&opts(src.path(), Format::Nx)).unwrap();
    let tar_bytes = decompress(&a);
    let mut ar = tar::Archive::new(&tar_bytes[..]);
    let mut names = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        assert_eq!(h.uid().unwrap(), 0);
        assert_eq!(h.gid().unwrap(), 0);
        assert_eq!(h.mtime().unwrap(), 0);
        assert!(h.username().unwrap().unwrap_or("").is_empty());
        assert!(h.groupname().unwrap().unwrap_or("").is_empty());
        let name = e.path().unwrap().to_string_lossy().into_owned();
        assert!(!name.starts_with('/') && !name.contains(".."));
        if name == "code" {
            let mut b = Vec::new();
            e.read_to_end(&mut b).unwrap();
            assert_eq!(b, 3u32.to_be_bytes());
        }
        names.push(name);
    }
    let n = names.len();
    assert_eq!(&names[n - 2..], ["terminalOutput", "code"]);
    let outputs = &names[..n - 2];
    let mut sorted = outputs.to_vec();
    sorted.sort_by(|a, b| Path::new(a).cmp(Path::new(b)));
    assert_eq!(outputs, &sorted[..]);
    assert_eq!(outputs[0], "dist/app");
}

#[test]
fn pack_to_file_writes_the_same_bytes_and_unpack_file_reads_it() {
    let src = tmp();
    sample_tree(src.path());
    let o = opts(src.path(), Format::Zstd);
    let out = tmp();
    let f = out.path().join("a.tar.zst");
    let n = pack_to_file(&o, &f).unwrap();
    let bytes = fs::read(&f).unwrap();
    assert_eq!(n, bytes.len() as u64);
    assert_eq!(bytes, pack_to_vec(&o).unwrap());
    let leftovers: Vec<_> = fs::read_dir(out.path()).unwrap().collect();
    assert_eq!(
        leftovers.len(),
        1,
        "no temporary file left beside the output"
    );
    let u = unpack_file(&f, &out.path().join("d")).unwrap();
    assert_eq!(u.code, 3);
    assert!(out.path().join("d/dist/app/main.js").is_file());
}

#[test]
fn entries_skip_missing_files_do_not() {
    let src = tmp();
    sample_tree(src.path());
    let mut o = opts(src.path(), Format::Zstd);
    o.files = vec![];
    o.entries = vec!["dist/app/main.js".into(), "dist/not-built".into()];
    let a = pack_to_vec(&o).unwrap();
    let out = tmp();
    let u = unpack_bytes(&a, &out.path().join("d")).unwrap();
    assert_eq!(u.files, vec!["dist/app/main.js"]);

    o.files = vec!["dist/not-built".into()];
    let e = pack_to_vec(&o).unwrap_err().to_string();
    assert!(e.contains("dist/not-built"), "{e}");
}

#[test]
fn pack_refuses_bad_paths_and_things_it_could_not_restore() {
    let src = tmp();
    sample_tree(src.path());
    let base = opts(src.path(), Format::Zstd);
    let err = |files: &[&str]| {
        let mut o = base.clone();
        o.files = files.iter().map(|s| s.to_string()).collect();
        pack_to_vec(&o).unwrap_err().to_string()
    };
    assert!(err(&["/etc/passwd"]).contains("absolute"));
    assert!(err(&["dist/../../x"]).contains(".."));
    write(&src.path().join("code"), b"x");
    assert!(err(&["code"]).contains("collide"));
    symlink("/etc/passwd", src.path().join("dist/abs-link")).unwrap();
    let e = err(&["dist/abs-link"]);
    assert!(e.contains("dist/abs-link") && e.contains("absolute"), "{e}");
    symlink("../../..", src.path().join("dist/up-link")).unwrap();
    let e = err(&["dist/up-link"]);
    assert!(e.contains("dist/up-link") && e.contains("outside"), "{e}");
    let fifo = src.path().join("dist/app/fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let e = err(&["dist/app"]);
    // The kind is named where the platform tells it (Unix-native); elsewhere "not a regular file".
    assert!(
        e.contains("fifo") && (e.contains("FIFO") || !cfg!(unix_native)),
        "{e}"
    );
    let mut o = base.clone();
    o.level = Some(99);
    assert!(pack_to_vec(&o).unwrap_err().to_string().contains("level"));
    o.level = None;
    o.threads = Some(0);
    assert!(pack_to_vec(&o).unwrap_err().to_string().contains("threads"));
}

// ---------------------------------------------------------------- hostile archives

#[test]
fn refuses_parent_traversal() {
    for a in both(&[file("../escape.txt", b"PWNED"), code(0)]) {
        let (e, t) = refused(&a, |_| {});
        assert!(e.contains("../escape.txt") && e.contains(".."), "{e}");
        assert!(!t.path().join("repo/escape.txt").exists());
    }
    for a in both(&[file("ok/../../x", b"PWNED"), code(0)]) {
        let (e, _) = refused(&a, |_| {});
        assert!(e.contains("ok/../../x"), "{e}");
    }
}

#[test]
fn refuses_absolute_paths() {
    let t = tmp();
    let target = t.path().join("abs-pwned");
    for a in both(&[file(target.to_str().unwrap(), b"PWNED"), code(0)]) {
        let (e, _) = refused(&a, |_| {});
        assert!(e.contains("absolute"), "{e}");
        assert!(!target.exists());
    }
}

#[test]
fn refuses_symlink_with_absolute_target() {
    for a in both(&[link("escape", "/etc"), code(0)]) {
        let (e, _) = refused(&a, |_| {});
        assert!(e.contains("`escape`") && e.contains("absolute"), "{e}");
    }
    for a in both(&[link("escape", "C:\\Users\\x"), code(0)]) {
        let (e, _) = refused(&a, |_| {});
        assert!(e.contains("absolute"), "{e}");
    }
}

#[test]
fn refuses_symlink_to_parent() {
    for a in both(&[link("escape", ".."), code(0)]) {
        let (e, _) = refused(&a, |_| {});
        assert!(e.contains("`escape`") && e.contains("outside"), "{e}");
    }
    for a in both(&[dir("a/"), link("a/b", "../../x"), code(0)]) {
        let (e, _) = refused(&a, |_| {});
        assert!(e.contains("a/b") && e.contains("outside"), "{e}");
    }
}

#[test]
fn refuses_writing_through_an_archive_symlink() {
    // `evil` -> <tmp>/outside, then `evil/pwned.txt`.
    let t = tmp();
    let outside = t.path().join("outside");
    for a in both(&[
        link("evil", outside.to_str().unwrap()),
        file("evil/pwned.txt", b"PWNED"),
        code(0),
    ]) {
        let (e, _) = refused(&a, |_| {});
        assert!(e.contains("evil"), "{e}");
        assert!(!outside.join("pwned.txt").exists());
    }
    // Even a link that stays inside cannot be written through.
    for a in both(&[
        dir("real/"),
        link("inside", "real"),
        file("inside/f", b"x"),
        code(0),
    ]) {
        let (e, _) = refused(&a, |_| {});
        assert!(
            e.contains("inside/f") && e.contains("parent `inside` is a symlink"),
            "{e}"
        );
    }
}

#[test]
fn refuses_chained_symlink_escape() {
    // sub/up -> .. (inside: the root), escape -> sub/up/.. (outside), escape/pwned.
    for a in both(&[
        dir("sub/"),
        link("sub/up", ".."),
        link("escape", "sub/up/.."),
        code(0),
    ]) {
        let (e, t) = refused(&a, |_| {});
        assert!(e.contains("`escape`") && e.contains("sub/up"), "{e}");
        assert!(!t.path().join("pwned").exists());
    }
    // a -> b, b -> c, c -> ../.. : every link of the chain is refused at the first.
    for a in both(&[link("a", "b"), link("b", "c"), link("c", "../.."), code(0)]) {
        let (e, _) = refused(&a, |_| {});
        assert!(e.contains("outside"), "{e}");
    }
}

#[test]
fn refuses_escape_via_preexisting_symlink_in_dest() {
    // dest/pre -> <tmp>/outside exists already.
    let setup = |base: &Path| {
        fs::create_dir_all(base.join("outside")).unwrap();
        fs::create_dir_all(base.join("repo/out")).unwrap();
        write(&base.join("repo/out/keep.txt"), b"keep");
        symlink(base.join("outside"), base.join("repo/out/pre")).unwrap();
    };
    for a in both(&[file("pre/pwned", b"PWNED"), code(0)]) {
        let t = tmp();
        fs::create_dir_all(t.path().join("repo")).unwrap();
        setup(t.path());
        let before = snapshot(t.path());
        let e = unpack_bytes(&a, &t.path().join("repo/out"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pre/pwned") && e.contains("existing symlink"),
            "{e}"
        );
        assert_eq!(snapshot(t.path()), before);
        assert!(!t.path().join("outside/pwned").exists());
    }
    // A relative pre-existing link: pre2 -> ../.. ; archive link x -> pre2/etc.
    for a in both(&[link("x", "pre2/etc"), code(0)]) {
        let t = tmp();
        fs::create_dir_all(t.path().join("repo/out")).unwrap();
        symlink("../..", t.path().join("repo/out/pre2")).unwrap();
        let e = unpack_bytes(&a, &t.path().join("repo/out"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`x`") && e.contains("pre2"), "{e}");
        assert!(fs::symlink_metadata(t.path().join("repo/out/x")).is_err());
    }
}

#[test]
fn replaces_a_preexisting_symlink_at_a_file_path_instead_of_following_it() {
    let t = tmp();
    let outside = t.path().join("target.js");
    fs::write(&outside, b"do not overwrite").unwrap();
    let dest = t.path().join("out");
    fs::create_dir_all(dest.join("dist")).unwrap();
    symlink(&outside, dest.join("dist/index.js")).unwrap();
    for a in both(&[file("dist/index.js", b"safe"), code(0)]) {
        unpack_bytes(&a, &dest).unwrap();
        assert_eq!(fs::read(&outside).unwrap(), b"do not overwrite");
        assert!(!fs::symlink_metadata(dest.join("dist/index.js"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(dest.join("dist/index.js")).unwrap(), b"safe");
    }
}

#[test]
fn refuses_hardlinks_devices_fifos() {
    let cases: [(u8, &str, &str); 4] = [
        (b'1', "/etc/passwd", "hard links"),
        (b'3', "", "device"),
        (b'4', "", "device"),
        (b'6', "", "FIFO"),
    ];
    for (ty, l, why) in cases {
        for a in both(&[
            file("before", b"x"),
            raw("special", ty, l, 0o644, b""),
            code(0),
        ]) {
            let (e, _) = refused(&a, |_| {});
            assert!(e.contains("`special`") && e.contains(why), "{e}");
        }
    }
    // A hard link to a file inside the archive is refused too.
    for a in both(&[file("a", b"x"), raw("b", b'1', "a", 0o644, b""), code(0)]) {
        let (e, _) = refused(&a, |_| {});
        assert!(e.contains("hard links"), "{e}");
    }
}

// Unix-native only: no modes are applied under `portable-fallbacks` (as on Windows).
#[cfg(unix_native)]
#[test]
fn strips_setuid_setgid_sticky() {
    for a in both(&[
        raw("d/", b'5', "", 0o1777, b""),
        raw("d/suid", b'0', "", 0o4755, b"x"),
        raw("d/sgid", b'0', "", 0o2755, b"x"),
        code(0),
    ]) {
        let t = tmp();
        let dest = t.path().join("out");
        unpack_bytes(&a, &dest).unwrap();
        assert_eq!(mode(&dest.join("d")), 0o777);
        assert_eq!(mode(&dest.join("d/suid")), 0o755);
        assert_eq!(mode(&dest.join("d/sgid")), 0o755);
    }
}

#[test]
fn restrictive_directory_modes_are_applied_last() {
    for a in both(&[
        raw("ro/", b'5', "", 0o555, b""),
        file("ro/f", b"x"),
        link("ro/l", "f"),
        code(0),
    ]) {
        let t = tmp();
        let dest = t.path().join("out");
        unpack_bytes(&a, &dest).unwrap();
        assert_eq!(mode(&dest.join("ro")), 0o555);
        assert_eq!(fs::read(dest.join("ro/l")).unwrap(), b"x");
        fs::set_permissions(dest.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn deferred_symlinks_in_dependency_order() {
    // Links come before what they point to, and chain through each other.
    for a in both(&[
        link("one", "two"),
        link("two", "three"),
        link("three", "real"),
        link("dist/runtime", "../src/runtime"),
        dir("src/runtime/"),
        file("src/runtime/index.js", b"rt"),
        file("real", b"real"),
        link("dangling", "missing-target"),
        code(7),
    ]) {
        let t = tmp();
        let dest = t.path().join("out");
        let u = unpack_bytes(&a, &dest).unwrap();
        assert_eq!(u.code, 7);
        assert_eq!(u.terminal_output, None);
        assert_eq!(fs::read(dest.join("one")).unwrap(), b"real");
        assert_eq!(fs::read_link(dest.join("one")).unwrap(), Path::new("two"));
        assert_eq!(fs::read(dest.join("dist/runtime/index.js")).unwrap(), b"rt");
        assert_eq!(
            fs::read_link(dest.join("dangling")).unwrap(),
            Path::new("missing-target")
        );
    }
}

#[test]
fn refuses_symlink_loops() {
    for a in both(&[link("a", "b"), link("b", "a/x"), code(0)]) {
        let (e, _) = refused(&a, |_| {});
        assert!(e.contains("too many levels"), "{e}");
    }
}

#[test]
fn refuses_duplicates_and_type_conflicts() {
    for a in both(&[file("a", b"1"), file("a", b"2"), code(0)]) {
        let (e, _) = refused(&a, |_| {});
        assert!(e.contains("`a`") && e.contains("duplicate"), "{e}");
    }
    for a in both(&[file("a/b", b"1"), link("a", "c"), code(0)]) {
        let (e, _) = refused(&a, |_| {});
        assert!(e.contains("a"), "{e}");
    }
    for a in both(&[code(0), code(1)]) {
        let (e, _) = refused(&a, |_| {});
        assert!(e.contains("duplicate"), "{e}");
    }
}

#[test]
fn refuses_truncated_archives_at_every_cut() {
    let src = tmp();
    sample_tree(src.path());
    // Some incompressible data so the cut points land inside file contents too.
    let mut noise = vec![0u8; 300_000];
    let mut x: u32 = 12345;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    write(&src.path().join("dist/app/noise.bin"), &noise);
    for format in [Format::Zstd, Format::Nx] {
        let a = pack_to_vec(&opts(src.path(), format)).unwrap();
        let cuts: Vec<usize> = (1..40)
            .map(|i| a.len() * i / 40)
            .chain([a.len() - 1, a.len() - 4, 3, 1])
            .collect();
        for cut in cuts {
            let (e, _) = refused(&a[..cut], |_| {});
            assert!(!e.is_empty());
        }
    }
}

#[test]
fn refuses_corrupt_and_garbage_input() {
    let src = tmp();
    sample_tree(src.path());
    for format in [Format::Zstd, Format::Nx] {
        let mut a = pack_to_vec(&opts(src.path(), format)).unwrap();
        let mid = a.len() / 2;
        a[mid] ^= 0x55;
        refused(&a, |_| {});
    }
    let (e, _) = refused(b"", |_| {});
    assert!(e.contains("empty"), "{e}");
    let (e, _) = refused(b"PK\x03\x04 a zip file", |_| {});
    assert!(e.contains("50 4b 03 04"), "{e}");
    // Valid compression around something that is not a tar stream.
    for a in [gz(&[7u8; 5000]), zst(&[7u8; 5000])] {
        refused(&a, |_| {});
    }
    // Trailing garbage after a zstd frame.
    let mut a = zst(&tar_of(&[file("a", b"x"), code(0)]));
    a.extend_from_slice(b"garbage after the frame");
    refused(&a, |_| {});
}

#[test]
fn refuses_missing_or_malformed_code() {
    for a in both(&[file("a", b"x")]) {
        let (e, _) = refused(&a, |_| {});
        assert!(e.contains("`code`"), "{e}");
    }
    for a in both(&[file("a", b"x"), file("code", b"12")]) {
        let (e, _) = refused(&a, |_| {});
        assert!(e.contains("code") && e.contains("4 bytes"), "{e}");
    }
    for a in both(&[file("terminalOutput", &[0xff, 0xfe]), code(0)]) {
        let (e, _) = refused(&a, |_| {});
        assert!(e.contains("terminalOutput") && e.contains("UTF-8"), "{e}");
    }
}

#[test]
fn a_refused_archive_leaves_an_existing_dest_untouched() {
    let a = &both(&[file("good", b"new"), file("../bad", b"x"), code(0)])[1];
    let t = tmp();
    let dest = t.path().join("out");
    write(&dest.join("good"), b"old");
    let before = snapshot(t.path());
    assert!(unpack_bytes(a, &dest).is_err());
    assert_eq!(snapshot(t.path()), before);
}

#[test]
fn merges_into_an_existing_dest() {
    let t = tmp();
    let dest = t.path().join("out");
    write(&dest.join("unrelated.txt"), b"keep");
    write(&dest.join("dist/old.js"), b"old");
    write(&dest.join("dist/main.js"), b"stale");
    for a in both(&[
        dir("dist/"),
        file("dist/main.js", b"fresh"),
        dir("dist/new/"),
        file("dist/new/x", b"x"),
        code(0),
    ]) {
        unpack_bytes(&a, &dest).unwrap();
        assert_eq!(fs::read(dest.join("unrelated.txt")).unwrap(), b"keep");
        assert_eq!(fs::read(dest.join("dist/old.js")).unwrap(), b"old");
        assert_eq!(fs::read(dest.join("dist/main.js")).unwrap(), b"fresh");
        assert_eq!(fs::read(dest.join("dist/new/x")).unwrap(), b"x");
        let names: Vec<_> = fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("out")],
            "no staging left behind"
        );
    }
    // A directory entry where dest has a file: refused before anything moves.
    let a = &both(&[file("unrelated.txt/x", b"x"), code(0)])[0];
    let before = snapshot(t.path());
    let e = unpack_bytes(a, &dest).unwrap_err().to_string();
    assert!(e.contains("unrelated.txt"), "{e}");
    assert_eq!(snapshot(t.path()), before);
}

#[test]
fn archive_root_entry_and_dot_slash_prefixes_are_accepted() {
    for a in both(&[dir("./"), dir("./a/"), file("./a/b", b"b"), code(0)]) {
        let t = tmp();
        let dest = t.path().join("out");
        let u = unpack_bytes(&a, &dest).unwrap();
        assert_eq!(u.files, vec!["a", "a/b"]);
        assert_eq!(fs::read(dest.join("a/b")).unwrap(), b"b");
    }
}

#[test]
fn dest_must_be_a_directory() {
    let a = &both(&[file("a", b"x"), code(0)])[1];
    let t = tmp();
    fs::write(t.path().join("f"), b"x").unwrap();
    let e = unpack_bytes(a, &t.path().join("f"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a directory"), "{e}");
    // A symlink to a directory is followed (the caller's own choice of dest).
    fs::create_dir(t.path().join("real")).unwrap();
    symlink("real", t.path().join("via")).unwrap();
    unpack_bytes(a, &t.path().join("via")).unwrap();
    assert!(t.path().join("real/a").is_file());
}

#[test]
fn reads_what_the_tar_crate_builder_writes_like_nx_store() {
    // Nx's store(): append_dir_all("", dir) with follow_symlinks(false) and HeaderMode::Complete,
    // then old-style headers for terminalOutput and code.
    let src = tmp();
    sample_tree(src.path());
    let a = common::nx_store_archive(Some(src.path()), &[], b"hello", 1);
    let t = tmp();
    let dest = t.path().join("out");
    let u = unpack_bytes(&a, &dest).unwrap();
    assert_eq!((u.code, u.terminal_output.as_deref()), (1, Some("hello")));
    assert_eq!(snapshot(&dest), snapshot(src.path()));
}

#[test]
fn unpack_file_errors_name_the_archive() {
    let t = tmp();
    let e = unpack_file(&t.path().join("missing.tar.zst"), &t.path().join("d"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.tar.zst"), "{e}");
    let _ = PathBuf::new();
}

/// Output entries are expanded as Nx expands them (globs, negations); files that match nothing are
/// left out, and an invalid glob is an error naming it.
#[test]
fn pack_entries_use_nx_output_expansion() {
    use nx_open_cache::archive::{pack_to_vec, unpack_bytes, PackOptions};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ws");
    for f in [
        "dist/a.js",
        "dist/a.js.map",
        "dist/sub/b.js",
        "dist/sub/b.js.map",
        "other/c.txt",
    ] {
        let p = root.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, f).unwrap();
    }
    let opts = PackOptions {
        root: root.clone(),
        entries: vec!["dist".into(), "!dist/**/*.map".into(), "missing/**".into()],
        terminal_output: "out".into(),
        ..Default::default()
    };
    let archive = pack_to_vec(&opts).unwrap();
    let dest = dir.path().join("dest");
    let result = unpack_bytes(&archive, &dest).unwrap();
    let mut files: Vec<String> = result
        .files
        .iter()
        .filter(|f| dest.join(f).is_file())
        .cloned()
        .collect();
    files.sort();
    assert_eq!(files, ["dist/a.js", "dist/sub/b.js"]);
    let bad = PackOptions {
        root,
        entries: vec!["dist/[a".into()],
        ..Default::default()
    };
    let err = pack_to_vec(&bad).unwrap_err().to_string();
    assert!(err.contains("dist/[a"), "{err}");
}
