//! The fs store against the storage rules: first writer wins, no partial reads, digests verified,
//! faults reported with the path and the reason.

mod common;

use common::{body, noise, object_files, read_all};
use nx_open_cache::envelope::HEADER_LEN;
use nx_open_cache::key::{Prefix, TaskHash};
use nx_open_cache::store::fs::FsStore;
use nx_open_cache::store::{ErrorKind, PutOutcome, Store};
use std::sync::Arc;

fn hash(s: &str) -> TaskHash {
    TaskHash::parse(s).expect("valid test hash")
}

fn store(dir: &std::path::Path) -> FsStore {
    let s = FsStore::new(dir.join("cache"), Prefix::default());
    s.prepare().expect("prepare");
    s
}

#[tokio::test]
async fn round_trip_small_and_streamed() {
    let dir = tempfile::tempdir().unwrap();
    for (inline, size) in [(8 << 20, 1000usize), (0, 3 << 20), (0, 0)] {
        let s = FsStore::new(
            dir.path().join(format!("c{inline}-{size}")),
            Prefix::default(),
        )
        .with_inline_limit(inline);
        s.prepare().unwrap();
        let data = noise(size, 7);
        let h = hash("12345");
        assert!(s.get(&h).await.unwrap().is_none(), "empty store misses");
        let out = s.put(&h, &mut body(&data, 65536), Some(size as u64)).await;
        assert_eq!(out, Ok(PutOutcome::Stored(size as u64)));
        let got = s.get(&h).await.unwrap().expect("hit");
        assert_eq!(got.len, size as u64);
        assert_eq!(read_all(got), data);
        let on_disk = std::fs::metadata(s.object_path(&h)).unwrap().len();
        assert_eq!(on_disk, (HEADER_LEN + size) as u64);
    }
}

#[tokio::test]
async fn fan_out_and_prefix_layout() {
    let dir = tempfile::tempdir().unwrap();
    let s = FsStore::new(dir.path().join("c"), Prefix::parse("team/a").unwrap());
    s.prepare().unwrap();
    let h = hash("987654321");
    s.put(&h, &mut body(b"x", 1), None).await.unwrap();
    let rel = s
        .object_path(&h)
        .strip_prefix(dir.path().join("c"))
        .unwrap()
        .to_path_buf();
    let parts: Vec<_> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert_eq!(parts.len(), 5, "{parts:?}");
    assert_eq!(&parts[0..2], ["team", "a"]);
    assert!(parts[2].len() == 2 && parts[3].len() == 2);
    assert_eq!(parts[4], "987654321");
    assert!(s.describe().contains("prefix team/a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_of_one_hash_exactly_one_stores() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(store(dir.path()).with_inline_limit(0));
    let h = hash("777");
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let s = s.clone();
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            // Every writer has different bytes, so a torn or mixed object would be visible.
            let data = noise(2 << 20, i + 1);
            let out = s
                .put(&h, &mut body(&data, 32 * 1024), Some(data.len() as u64))
                .await;
            (out, data)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (out, data) = t.await.unwrap();
        match out {
            Ok(PutOutcome::Stored(_)) => winners.push(data),
            Ok(PutOutcome::AlreadyExists) => {}
            Err(e) => panic!("writer failed: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one writer stores");
    assert_eq!(read_all(s.get(&h).await.unwrap().unwrap()), winners[0]);
    assert_eq!(object_files(&dir.path().join("cache")).len(), 1);
    let tmp_left = std::fs::read_dir(dir.path().join("cache/.tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp_left, 0, "no temp files left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_never_see_a_partial_object() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(store(dir.path()).with_inline_limit(0));
    let data = Arc::new(noise(8 << 20, 99));
    let h = hash("31337");
    let writer = {
        let (s, h, data) = (s.clone(), h.clone(), data.clone());
        tokio::spawn(async move {
            // A slow upload: many small chunks.
            s.put(&h, &mut body(&data, 4096), Some(data.len() as u64))
                .await
        })
    };
    let mut seen_full = 0;
    for _ in 0..2000 {
        if let Some(a) = s.get(&h).await.expect("no read error while writing") {
            assert_eq!(read_all(a), *data, "a reader saw a partial or wrong object");
            seen_full += 1;
            if seen_full >= 3 {
                break;
            }
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(
        writer.await.unwrap(),
        Ok(PutOutcome::Stored(data.len() as u64))
    );
    assert_eq!(read_all(s.get(&h).await.unwrap().unwrap()), *data);
}

#[tokio::test]
async fn corrupt_objects_are_misses_with_reason_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    for inline in [8 << 20, 0] {
        let s = store(dir.path()).with_inline_limit(inline);
        for (i, damage) in ["flip", "truncate", "extend", "header"].iter().enumerate() {
            let h = hash(&format!("{inline}{i}"));
            let data = noise(100_000, i as u64 + 3);
            s.put(&h, &mut body(&data, 8192), None).await.unwrap();
            let path = s.object_path(&h);
            let mut bytes = std::fs::read(&path).unwrap();
            match *damage {
                "flip" => bytes[HEADER_LEN + 5000] ^= 1,
                "truncate" => bytes.truncate(HEADER_LEN + 99_000),
                "extend" => bytes.extend_from_slice(b"junk"),
                _ => bytes[0] = b'X',
            }
            std::fs::write(&path, &bytes).unwrap();
            let err = s
                .get(&h)
                .await
                .expect_err("corrupt object must not be served");
            assert_eq!(err.kind, ErrorKind::Corrupt, "{damage}: {err}");
            assert!(err.message.contains(&path.display().to_string()), "{err}");
            assert!(
                !path.exists(),
                "corrupt object removed so a rebuild can store it"
            );
            assert!(s.get(&h).await.unwrap().is_none());
            assert_eq!(
                s.put(&h, &mut body(&data, 8192), None).await,
                Ok(PutOutcome::Stored(100_000)),
                "after removal the hash can be stored again"
            );
        }
    }
}

#[tokio::test]
async fn body_length_mismatch_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let h = hash("5");
    let short = s.put(&h, &mut body(b"abc", 1), Some(10)).await.unwrap_err();
    assert_eq!(short.kind, ErrorKind::BadRequest);
    assert!(short.message.contains("Content-Length is 10"), "{short}");
    let long = s
        .put(&h, &mut body(b"abcdef", 1), Some(2))
        .await
        .unwrap_err();
    assert_eq!(long.kind, ErrorKind::BadRequest);
    let broken: nx_open_cache::store::BodyStream<'static> =
        Box::pin(futures_util::stream::iter(vec![
            Ok(bytes::Bytes::from_static(b"ab")),
            Err(std::io::Error::other("connection reset")),
        ]));
    let mut broken = broken;
    let err = s.put(&h, &mut broken, None).await.unwrap_err();
    assert!(err.message.contains("broke off"), "{err}");
    assert!(s.get(&h).await.unwrap().is_none());
    assert!(object_files(&dir.path().join("cache")).is_empty());
    assert_eq!(
        std::fs::read_dir(dir.path().join("cache/.tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn missing_or_unusable_root_is_a_reported_fault() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let h = hash("9");
    s.put(&h, &mut body(b"x", 1), None).await.unwrap();
    std::fs::remove_dir_all(dir.path().join("cache")).unwrap();
    let err = s.get(&h).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert!(err.message.contains("cache directory"), "{err}");
    let err = s
        .put(&hash("10"), &mut body(b"x", 1), None)
        .await
        .unwrap_err();
    assert!(err.message.contains("cache directory"), "{err}");
    assert!(
        !dir.path().join("cache").exists(),
        "the root is never silently recreated"
    );

    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a dir").unwrap();
    let s = FsStore::new(&file, Prefix::default());
    let err = s.prepare().unwrap_err();
    assert!(err.message.contains(&file.display().to_string()), "{err}");
    let err = s.put(&h, &mut body(b"x", 1), None).await.unwrap_err();
    assert!(err.message.contains("not a directory"), "{err}");
    assert!(s.get(&h).await.is_err());
}

#[tokio::test]
async fn stale_temp_files_are_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let tmp = dir.path().join("cache/.tmp/1.2.3.dead.tmp");
    std::fs::write(&tmp, b"left by a killed writer").unwrap();
    assert_eq!(s.remove_stale_tmp(std::time::Duration::from_secs(3600)), 0);
    assert!(tmp.exists(), "fresh temp files of live writers stay");
    assert_eq!(s.remove_stale_tmp(std::time::Duration::ZERO), 1);
    assert!(!tmp.exists());
}

/// A real tmpfs of `size` at `<dir>/small` (needs root, as on this project's machines and CI);
/// `None` (the test is skipped, and says so) where it cannot be mounted.
fn small_tmpfs(dir: &std::path::Path, size: &str, test: &str) -> Option<std::path::PathBuf> {
    let mnt = dir.join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("SKIPPED {test}: cannot mount a tmpfs here (not root?)");
    }
    mounted.then_some(mnt)
}

/// A full disk: a tmpfs of 256 KiB.
#[tokio::test]
async fn disk_full_is_reported_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mnt) = small_tmpfs(
        dir.path(),
        "256k",
        "disk_full_is_reported_and_leaves_nothing",
    ) else {
        return;
    };
    let s = FsStore::new(&mnt, Prefix::default());
    s.prepare().unwrap();
    let result = s
        .put(&hash("1"), &mut body(&noise(1 << 20, 1), 65536), None)
        .await;
    let small = s.put(&hash("2"), &mut body(b"fits", 4), None).await;
    let files = object_files(&mnt);
    let tmp_left = std::fs::read_dir(mnt.join(".tmp"))
        .map(|d| d.count())
        .unwrap_or(0);
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    let err = result.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Full, "{err}");
    assert!(err.message.contains("No space left"), "{err}");
    assert_eq!(
        small,
        Ok(PutOutcome::Stored(4)),
        "space freed after the failed write"
    );
    assert_eq!(
        files.len(),
        1,
        "only the small object is visible: {files:?}"
    );
    assert_eq!(tmp_left, 0);
}

#[tokio::test]
async fn namespaces_are_separate_key_spaces() {
    let dir = tempfile::tempdir().unwrap();
    let base = FsStore::new(dir.path().join("c"), Prefix::parse("team").unwrap());
    base.prepare().unwrap();
    let pr = base
        .with_namespace(&Prefix::parse("pr/7").unwrap())
        .unwrap();
    let h = hash("4242");
    let out = pr.put(&h, &mut body(b"from pr", 3), Some(7)).await;
    assert_eq!(out, Ok(PutOutcome::Stored(7)));
    assert!(
        base.get(&h).await.unwrap().is_none(),
        "the base never sees it"
    );
    assert!(pr.describe().contains("team/pr/7"), "{}", pr.describe());
    let out = base.put(&h, &mut body(b"from main", 4), Some(9)).await;
    assert_eq!(out, Ok(PutOutcome::Stored(9)), "same hash, other namespace");
    assert_eq!(read_all(pr.get(&h).await.unwrap().unwrap()), b"from pr");
    assert_eq!(read_all(base.get(&h).await.unwrap().unwrap()), b"from main");
    let too_long = Prefix::parse(&"n".repeat(255)).unwrap();
    let err = base.with_namespace(&too_long).err().expect("too long");
    assert!(err.message.contains("namespace"), "{}", err.message);
}

#[tokio::test]
async fn a_large_object_changed_after_its_first_verified_read_is_verified_again() {
    let dir = tempfile::tempdir().unwrap();
    let s = FsStore::new(dir.path().join("c"), Prefix::default()).with_inline_limit(0);
    s.prepare().unwrap();
    let h = hash("777001");
    let data = noise(3 << 20, 5);
    s.put(&h, &mut body(&data, 65536), Some(data.len() as u64))
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            read_all(s.get(&h).await.unwrap().unwrap()),
            data,
            "served intact"
        );
    }
    // Flip one payload byte in place (same size): the file's ctime changes, so it is re-verified.
    let path = s.object_path(&h);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let err = s.get(&h).await.expect_err("corruption found");
    assert_eq!(err.kind, ErrorKind::Corrupt, "{}", err.message);
    assert!(!path.exists(), "the corrupt object is removed");
}

// ---- No symbolic link below the root is ever followed ----------------------------------------

/// Where a link is planted (for the hash [`LINKED`] under the prefix `team`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Prefix,
    Aa,
    Bb,
    Object,
    Temp,
}

const LEVELS: [Level; 5] = [
    Level::Prefix,
    Level::Aa,
    Level::Bb,
    Level::Object,
    Level::Temp,
];
const LINKED: &str = "424242";

/// Outside the store: a directory laid out so that following the link would find a valid,
/// old object (a hit, a last-access update, an eviction), and a file holding a valid object.
struct Canary {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    file: std::path::PathBuf,
}

/// The envelope bytes of an object of `payload`, as the store writes them.
fn object_bytes(payload: &[u8]) -> Vec<u8> {
    nx_open_cache::envelope::seal(payload)
}

fn set_old(path: &std::path::Path) {
    let t = std::time::SystemTime::now() - std::time::Duration::from_secs(30 * 24 * 3600);
    filetime::set_file_mtime(path, filetime::FileTime::from(t)).unwrap();
}

impl Canary {
    /// `below`: the path the store would look for below the linked directory.
    fn new(below: &[String]) -> Canary {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("canary-dir");
        let object = object_bytes(b"served from outside the root");
        let mut target = root.clone();
        for part in below {
            target.push(part);
        }
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, &object).unwrap();
        set_old(&target);
        let file = dir.path().join("canary-file");
        std::fs::write(&file, &object).unwrap();
        set_old(&file);
        Canary {
            dir: root,
            file,
            _dir: dir,
        }
    }

    /// Every file below the canary (paths, bytes, mtimes).
    fn snapshot(&self) -> Vec<(std::path::PathBuf, Vec<u8>, std::time::SystemTime)> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.clone()];
        out.push(file_state(&self.file));
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(file_state(&p));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

fn file_state(p: &std::path::Path) -> (std::path::PathBuf, Vec<u8>, std::time::SystemTime) {
    let meta = std::fs::metadata(p).unwrap();
    (
        p.to_path_buf(),
        std::fs::read(p).unwrap(),
        meta.modified().unwrap(),
    )
}

#[cfg(unix)]
/// A store at `<dir>/cache` with prefix `team` and a link planted at `level`, pointing at the
/// canary directory or (`to_file`) the canary file. Returns the store, the link and the canary.
fn planted(
    dir: &std::path::Path,
    level: Level,
    to_file: bool,
) -> (FsStore, std::path::PathBuf, Canary) {
    let root = dir.join("cache");
    let s = FsStore::new(&root, Prefix::parse("team").unwrap());
    s.prepare().unwrap();
    let object = s.object_path(&hash(LINKED));
    let rel: Vec<String> = object
        .strip_prefix(&root)
        .unwrap()
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    // rel = team, aa, bb, hash
    let (link, below): (std::path::PathBuf, Vec<String>) = match level {
        Level::Prefix => (root.join("team"), rel[1..].to_vec()),
        Level::Aa => (root.join(&rel[0]).join(&rel[1]), rel[2..].to_vec()),
        Level::Bb => (object.parent().unwrap().to_path_buf(), rel[3..].to_vec()),
        Level::Object => (object.clone(), vec!["unused".into()]),
        Level::Temp => (root.join(".tmp"), vec!["unused".into()]),
    };
    let canary = Canary::new(&below);
    if link.exists() {
        std::fs::remove_dir(&link).unwrap();
    }
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    let target = if to_file || level == Level::Object {
        &canary.file
    } else {
        &canary.dir
    };
    std::os::unix::fs::symlink(target, &link).unwrap();
    (s, link, canary)
}

fn is_link(p: &std::path::Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

/// A fault about the planted link: names it; a link at a name the store owns is removed.
fn assert_link_fault(
    err: &nx_open_cache::store::StoreError,
    link: &std::path::Path,
    level: Level,
    what: &str,
) {
    assert!(
        err.message.contains("is a symbolic link: not followed")
            && err.message.contains(&link.display().to_string()),
        "{what} at {level:?}: {err}"
    );
    if level == Level::Prefix {
        assert_eq!(
            err.kind,
            ErrorKind::Unavailable,
            "{what} at {level:?}: {err}"
        );
        assert!(is_link(link), "a prefix link is left for the operator");
    } else {
        assert_eq!(err.kind, ErrorKind::Corrupt, "{what} at {level:?}: {err}");
        assert!(
            !is_link(link),
            "{what} at {level:?}: the planted link is removed"
        );
    }
}

const OPS: [&str; 6] = ["get", "put", "check", "delete", "retention", "stale-temps"];

#[cfg(unix)]
/// One operation against a store with a planted link: nothing outside the root is read,
/// written, retimed or deleted, and the result is a miss, a refused write or a fault naming the
/// link.
async fn one_case(level: Level, to_file: bool, op: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (s, link, canary) = planted(dir.path(), level, to_file);
    let before = canary.snapshot();
    let h = hash(LINKED);
    let on_path = level != Level::Temp;
    let case = format!(
        "{op} with a link at {level:?} to the canary {}",
        if to_file { "file" } else { "dir" }
    );
    match op {
        "get" => match s.get(&h).await {
            Ok(None) => assert!(!on_path, "{case}: a miss must name the link"),
            Ok(Some(_)) => panic!("{case}: served a file from outside the root"),
            Err(e) => assert_link_fault(&e, &link, level, &case),
        },
        "put" => {
            let err = s
                .put(&h, &mut body(b"new artifact", 4), Some(12))
                .await
                .expect_err(&case);
            assert_link_fault(&err, &link, level, &case);
        }
        "check" => match s.check().await {
            Ok(()) => assert!(level != Level::Temp, "{case}"),
            Err(e) => assert_link_fault(&e, &link, level, &case),
        },
        "delete" => match s.delete(&h).await {
            Ok(nx_open_cache::store::Deleted::Absent) => assert!(!on_path, "{case}"),
            Ok(other) => panic!("{case}: {other:?}"),
            Err(e) => assert_link_fault(&e, &link, level, &case),
        },
        "retention" => {
            let policy = nx_open_cache::retention::Policy {
                max_bytes: Some(0),
                max_age: Some(std::time::Duration::from_secs(1)),
            };
            let root = dir.path().join("cache");
            let r = nx_open_cache::retention::collect(&root, &policy, &mut |_| {}).unwrap();
            assert_eq!(r.scanned.files, 0, "{case}: {r:?}");
            assert!(
                r.errors
                    .iter()
                    .any(|e| e.path == link && e.reason.contains("symbolic link")),
                "{case}: the link is reported: {r:?}"
            );
            assert!(is_link(&link), "{case}: retention never deletes a link");
        }
        _ => {
            // A temp file named like a dead writer's, through a linked .tmp: never touched.
            assert_eq!(s.remove_stale_tmp(std::time::Duration::ZERO), 0, "{case}");
        }
    }
    assert_eq!(canary.snapshot(), before, "{case}: the canary changed");
}

#[cfg(unix)]
#[tokio::test]
async fn no_symlink_below_the_root_is_followed_with_openat2_or_without() {
    for fallback in [false, true] {
        nx_open_cache::store::fs::simulate_no_openat2(fallback);
        let walks = nx_open_cache::store::fs::component_walks();
        for level in LEVELS {
            for to_file in [false, true] {
                for op in OPS {
                    one_case(level, to_file, op).await;
                }
            }
        }
        let walked = nx_open_cache::store::fs::component_walks() - walks;
        if !cfg!(unix_native) {
            // `portable-fallbacks`: every path is checked one component at a time by path (no
            // descriptors, no openat2, no counter): the cases above are what is asserted.
        } else if fallback {
            assert!(
                walked > 0,
                "the fallback resolved paths one component at a time"
            );
        } else {
            assert!(
                nx_open_cache::store::fs::openat2_works(),
                "this kernel has openat2 (Linux >= 5.6)"
            );
        }
    }
    nx_open_cache::store::fs::simulate_no_openat2(false);
}

#[cfg(unix)]
#[tokio::test]
async fn after_a_planted_link_is_removed_the_store_works_again() {
    let dir = tempfile::tempdir().unwrap();
    for level in [Level::Aa, Level::Bb, Level::Object, Level::Temp] {
        let (s, link, canary) = planted(
            dir.path().join(format!("{level:?}")).as_path(),
            level,
            false,
        );
        let before = canary.snapshot();
        let h = hash(LINKED);
        assert!(s.put(&h, &mut body(b"first", 2), Some(5)).await.is_err());
        assert!(!is_link(&link));
        assert_eq!(
            s.put(&h, &mut body(b"second", 2), Some(6)).await,
            Ok(PutOutcome::Stored(6)),
            "{level:?}"
        );
        assert_eq!(read_all(s.get(&h).await.unwrap().unwrap()), b"second");
        assert_eq!(canary.snapshot(), before);
    }
}

// Unix-native only: the portable open (Windows has no FIFOs in its filesystem) has no
// O_NONBLOCK, so under `portable-fallbacks` opening a FIFO would wait for a writer.
#[cfg(unix_native)]
#[tokio::test]
async fn a_fifo_or_directory_at_an_object_name_is_a_miss_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let fifo = hash("5151");
    let path = s.object_path(&fifo);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid path string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let err = s.get(&fifo).await.expect_err("a FIFO is not an object");
    assert_eq!(err.kind, ErrorKind::Corrupt);
    assert!(
        err.message.contains("not a regular file") && err.message.contains("removed it"),
        "{err}"
    );
    assert!(std::fs::symlink_metadata(&path).is_err());
    let d = hash("5152");
    std::fs::create_dir_all(s.object_path(&d)).unwrap();
    let err = s.get(&d).await.expect_err("a directory is not an object");
    assert!(err.message.contains("not a regular file"), "{err}");
}

/// `check` (the start-up probe, doctor's setup step, a readiness probe) says "full" when the
/// filesystem has almost no room left: a tmpfs of 8 MiB.
// Unix-native only: the portable store cannot ask for free space (`statvfs`; Windows would need
// GetDiskFreeSpaceExW), so `check` never says "full" there.
#[cfg(unix_native)]
#[tokio::test]
async fn check_reports_a_full_disk() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mnt) = small_tmpfs(dir.path(), "8m", "check_reports_a_full_disk") else {
        return;
    };
    let s = FsStore::new(mnt.join("cache"), Prefix::default());
    s.prepare().unwrap();
    let roomy = s.check().await;
    // Fill the filesystem up (the write stops at ENOSPC).
    let filler = mnt.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 9 << 20]);
    let full = s.check().await;
    std::fs::remove_file(&filler).unwrap();
    let freed = s.check().await;
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    assert_eq!(roomy, Ok(()));
    let err = full.expect_err("full");
    assert_eq!(err.kind, ErrorKind::Full, "{err}");
    assert!(
        err.message.contains("is full") && err.message.contains("free of"),
        "{err}"
    );
    assert_eq!(freed, Ok(()));
}

#[tokio::test]
async fn a_root_replaced_while_in_use_is_opened_again() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.put(&hash("61"), &mut body(b"old", 3), Some(3))
        .await
        .unwrap();
    // The directory is moved away and a new one made in its place (a remount, a restore).
    std::fs::rename(dir.path().join("cache"), dir.path().join("cache.old")).unwrap();
    std::fs::create_dir(dir.path().join("cache")).unwrap();
    // A write goes to the directory the path names now.
    assert_eq!(
        s.put(&hash("62"), &mut body(b"new", 3), Some(3)).await,
        Ok(PutOutcome::Stored(3))
    );
    assert!(s.object_path(&hash("62")).exists());
    assert!(
        s.get(&hash("61")).await.unwrap().is_none(),
        "the old directory is not used"
    );
    // Replaced again: a lookup that finds nothing looks in the new one.
    std::fs::rename(dir.path().join("cache"), dir.path().join("cache.2")).unwrap();
    std::fs::rename(dir.path().join("cache.old"), dir.path().join("cache")).unwrap();
    assert_eq!(read_all(s.get(&hash("61")).await.unwrap().unwrap()), b"old");
}
