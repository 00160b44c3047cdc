//! Retention of the fs store: expiry by last access, LRU eviction to a size budget, stale temp
//! files, empty directories, per-file faults, dry runs, and writers running at the same time.
//! Ages are set with filetime on real objects written through `FsStore::put`.

mod common;

use common::body;
use filetime::FileTime;
use nx_open_cache::envelope::HEADER_LEN;
use nx_open_cache::key::{Prefix, TaskHash};
use nx_open_cache::retention::{self, Phase, Policy, Progress};
use nx_open_cache::store::fs::FsStore;
use nx_open_cache::store::{PutOutcome, Store};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

fn hash(s: &str) -> TaskHash {
    TaskHash::parse(s).expect("valid test hash")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn store(root: &Path, prefix: &str) -> FsStore {
    let s = FsStore::new(root, Prefix::parse(prefix).expect("prefix"));
    s.prepare().expect("prepare");
    s
}

/// Stores `size` payload bytes under `h` and returns the object's path.
fn put(rt: &tokio::runtime::Runtime, s: &FsStore, h: &str, size: usize) -> PathBuf {
    let data = vec![7u8; size];
    let out = rt.block_on(s.put(&hash(h), &mut body(&data, 4096), Some(size as u64)));
    assert_eq!(out, Ok(PutOutcome::Stored(size as u64)));
    s.object_path(&hash(h))
}

fn set_age(path: &Path, secs_ago: u64) {
    let t = SystemTime::now() - Duration::from_secs(secs_ago);
    filetime::set_file_mtime(path, FileTime::from(t)).expect("set mtime");
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .expect("mtime")
}

fn collect(root: &Path, policy: &Policy) -> retention::Report {
    retention::collect(root, policy, &mut |_| {}).expect("collect")
}

fn size_of(payload: usize) -> u64 {
    (HEADER_LEN + payload) as u64
}

#[test]
fn max_age_deletes_only_objects_not_accessed_within_it() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), "");
    let old1 = put(&rt, &s, "1001", 100);
    let old2 = put(&rt, &s, "1002", 200);
    let young = put(&rt, &s, "1003", 300);
    set_age(&old1, 40 * DAY);
    set_age(&old2, 31 * DAY);
    set_age(&young, 29 * DAY);
    let policy = Policy {
        max_bytes: None,
        max_age: Some(Duration::from_secs(30 * DAY)),
    };
    let r = collect(dir.path(), &policy);
    assert!(!old1.exists() && !old2.exists());
    assert!(young.exists());
    assert_eq!(r.scanned.files, 3);
    assert_eq!(r.scanned.bytes, size_of(100) + size_of(200) + size_of(300));
    assert_eq!(r.deleted_by_age.files, 2);
    assert_eq!(r.deleted_by_age.bytes, size_of(100) + size_of(200));
    assert_eq!(r.deleted_by_size.files, 0);
    assert_eq!(r.kept.files, 1);
    assert_eq!(r.kept.bytes, size_of(300));
    assert_eq!(r.error_count, 0);
    // The survivor is still served.
    assert!(rt.block_on(s.get(&hash("1003"))).unwrap().is_some());
    assert!(rt.block_on(s.get(&hash("1001"))).unwrap().is_none());
}

#[test]
fn max_size_evicts_least_recently_accessed_and_a_get_refreshes_an_old_object() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), "");
    let a = put(&rt, &s, "2001", 1000);
    let b = put(&rt, &s, "2002", 1000);
    let c = put(&rt, &s, "2003", 1000);
    let d = put(&rt, &s, "2004", 1000);
    // Written long ago in this order: a is the oldest.
    set_age(&a, 10 * DAY);
    set_age(&b, 9 * DAY);
    set_age(&c, 8 * DAY);
    set_age(&d, 7 * DAY);
    // A build restores a: it becomes the most recently accessed.
    let before = mtime(&a);
    assert!(rt.block_on(s.get(&hash("2001"))).unwrap().is_some());
    assert!(mtime(&a) > before, "a GET hit records the access");
    // Budget for two objects: b and c (least recently accessed) go, a and d stay.
    let policy = Policy {
        max_bytes: Some(2 * size_of(1000)),
        max_age: None,
    };
    let r = collect(dir.path(), &policy);
    assert!(a.exists(), "recently read object survives");
    assert!(!b.exists() && !c.exists());
    assert!(d.exists());
    assert_eq!(r.deleted_by_size.files, 2);
    assert_eq!(r.deleted_by_size.bytes, 2 * size_of(1000));
    assert_eq!(r.kept.bytes, 2 * size_of(1000));
}

#[test]
fn access_is_recorded_at_most_once_per_granularity() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), "");
    let a = put(&rt, &s, "2101", 10);
    let recent = nx_open_cache::store::fs::ACCESS_GRANULARITY.as_secs() / 2;
    set_age(&a, recent);
    let before = mtime(&a);
    assert!(rt.block_on(s.get(&hash("2101"))).unwrap().is_some());
    assert_eq!(
        mtime(&a),
        before,
        "no metadata write within the granularity"
    );
    set_age(
        &a,
        nx_open_cache::store::fs::ACCESS_GRANULARITY.as_secs() + 60,
    );
    let before = mtime(&a);
    assert!(rt.block_on(s.get(&hash("2101"))).unwrap().is_some());
    assert!(mtime(&a) > before);
}

#[test]
fn stale_temp_files_are_removed_and_fresh_ones_kept() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), "");
    put(&rt, &s, "3001", 10);
    let tmp = dir.path().join(".tmp");
    let stale = tmp.join("3002.111.aaaa.0011223344556677.tmp");
    let fresh = tmp.join("3003.222.bbbb.0011223344556677.tmp");
    let other = tmp.join("README");
    std::fs::write(&stale, vec![0u8; 500]).unwrap();
    std::fs::write(&fresh, vec![0u8; 70]).unwrap();
    std::fs::write(&other, b"not a temp file").unwrap();
    set_age(&stale, 2 * HOUR);
    set_age(&other, 2 * HOUR);
    let r = collect(dir.path(), &Policy::default());
    assert!(!stale.exists());
    assert!(fresh.exists(), "a temp file being written is never deleted");
    assert!(other.exists());
    assert_eq!(r.deleted_temp.files, 1);
    assert_eq!(r.deleted_temp.bytes, 500);
    assert_eq!(r.kept.files, 1);
}

#[test]
fn empty_fan_out_and_prefix_directories_are_removed() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let pr = store(root, "pr/17");
    let main = store(root, "main");
    let gone = put(&rt, &pr, "4001", 10);
    let gone2 = put(&rt, &pr, "4002", 10);
    let kept = put(&rt, &main, "4003", 10);
    set_age(&gone, 20 * DAY);
    set_age(&gone2, 20 * DAY);
    // Not ours: an empty directory someone made, and an empty fan-out directory left over.
    std::fs::create_dir_all(root.join("notes/empty")).unwrap();
    std::fs::create_dir_all(root.join("main/ab/cd")).unwrap();
    let policy = Policy {
        max_bytes: None,
        max_age: Some(Duration::from_secs(10 * DAY)),
    };
    let r = collect(root, &policy);
    assert_eq!(r.deleted_by_age.files, 2);
    assert!(
        !root.join("pr").exists(),
        "the emptied prefix is gone with its fan-out directories"
    );
    assert!(
        !root.join("main/ab").exists(),
        "empty fan-out directories go"
    );
    assert!(kept.exists());
    assert!(
        root.join("notes/empty").is_dir(),
        "foreign directories stay"
    );
    assert!(root.join(".tmp").is_dir());
    assert!(root.is_dir());
    // pr/17/aa/bb for two hashes (one or two bb, one or two aa) + pr/17 + pr + main/ab/cd + main/ab
    assert!(r.removed_dirs >= 6, "{r:?}");
    // The store still works in the pruned prefix.
    let again = put(&rt, &pr, "4001", 10);
    assert!(again.exists());
}

/// A body that sends `first`, then waits for the rest on `rest` (an upload in flight).
fn held_body(
    first: &[u8],
) -> (
    nx_open_cache::store::BodyStream<'static>,
    tokio::sync::mpsc::UnboundedSender<bytes::Bytes>,
) {
    use futures_util::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<bytes::Bytes>();
    tx.send(bytes::Bytes::copy_from_slice(first)).expect("send");
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok(chunk), rx))
    });
    (stream.boxed(), tx)
}

/// Waits (bounded) until the store's temp directory holds a temp file for `hash`.
fn wait_for_temp(root: &Path, hash: &str) -> PathBuf {
    for _ in 0..1000 {
        let found = std::fs::read_dir(root.join(".tmp")).ok().and_then(|d| {
            d.flatten().map(|e| e.path()).find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{hash}.")))
            })
        });
        if let Some(p) = found {
            return p;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no temp file for {hash} appeared");
}

#[test]
fn an_upload_whose_fan_out_directory_retention_removed_is_still_published() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let s = store(root, "");
    let old = put(&rt, &s, "5001", 10);
    set_age(&old, 20 * DAY);
    // An upload is in flight: its object's fan-out directories exist, empty, and its temp file.
    let (mut stream, rest) = held_body(b"first half ");
    let writer = {
        let s = s.clone();
        rt.spawn(async move { s.put(&hash("5002"), &mut stream, Some(22)).await })
    };
    let temp = wait_for_temp(root, "5002");
    let fan_dir = s.object_path(&hash("5002")).parent().unwrap().to_path_buf();
    assert!(fan_dir.is_dir());
    let policy = Policy {
        max_bytes: Some(0),
        max_age: None,
    };
    let r = collect(root, &policy);
    assert_eq!(r.deleted_by_size.files, 1);
    assert!(temp.exists(), "an upload in flight is never touched");
    assert_eq!(r.kept_temp.files, 1, "and it counts toward the size");
    assert!(!fan_dir.exists(), "its empty fan-out directory was pruned");
    rest.send(bytes::Bytes::from_static(b"second half"))
        .unwrap();
    drop(rest);
    let out = rt.block_on(writer).expect("writer task");
    assert_eq!(out, Ok(PutOutcome::Stored(22)), "the writer made it again");
    assert!(rt.block_on(s.get(&hash("5002"))).unwrap().is_some());
}

#[cfg(unix)]
#[test]
fn a_file_that_cannot_be_deleted_is_reported_and_the_run_continues() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let s = store(root, "");
    let paths: Vec<PathBuf> = (0..6)
        .map(|i| {
            let p = put(&rt, &s, &format!("600{i}"), 10);
            set_age(&p, 20 * DAY);
            p
        })
        .collect();
    let victim = paths[2].clone();
    let policy = Policy {
        max_bytes: None,
        max_age: Some(Duration::from_secs(DAY)),
    };
    // SAFETY: geteuid has no preconditions.
    let root_user = unsafe { libc::geteuid() } == 0;
    let r = if root_user {
        // Permissions do not stop root: make the unlink fail by turning the object into a
        // (non-empty) directory right after the scan.
        retention::collect(root, &policy, &mut |p: Progress| {
            if p.phase == Phase::Delete && victim.is_file() {
                std::fs::remove_file(&victim).unwrap();
                std::fs::create_dir(&victim).unwrap();
                std::fs::write(victim.join("x"), b"x").unwrap();
                set_age(&victim, 25 * DAY);
            }
        })
        .expect("collect")
    } else {
        use std::os::unix::fs::PermissionsExt;
        let parent = victim.parent().unwrap();
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o555)).unwrap();
        let r = retention::collect(root, &policy, &mut |_| {}).expect("collect");
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
        r
    };
    assert_eq!(r.error_count, 1, "{r:?}");
    assert_eq!(r.errors[0].path, victim);
    assert!(r.errors[0].reason.starts_with("cannot delete"), "{r:?}");
    assert_eq!(r.deleted_by_age.files, 5, "the other objects are deleted");
    for p in paths.iter().filter(|p| **p != victim) {
        assert!(!p.exists());
    }
    assert!(victim.exists());
}

#[test]
fn dry_run_deletes_nothing_and_reports_what_would_go() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let s = store(root, "");
    let a = put(&rt, &s, "7001", 100);
    let b = put(&rt, &s, "7002", 100);
    set_age(&a, 40 * DAY);
    set_age(&b, 2 * DAY);
    let stale = root.join(".tmp").join("7003.1.2.3.tmp");
    std::fs::write(&stale, b"x").unwrap();
    set_age(&stale, 3 * HOUR);
    let policy = Policy {
        max_bytes: Some(0),
        max_age: Some(Duration::from_secs(30 * DAY)),
    };
    let mut phases = Vec::new();
    let r = retention::dry_run(root, &policy, &mut |p| phases.push(p.phase)).expect("dry run");
    assert!(r.dry_run);
    assert!(a.exists() && b.exists() && stale.exists());
    assert_eq!(r.deleted_by_age.files, 1);
    assert_eq!(r.deleted_by_size.files, 1);
    assert_eq!(r.deleted_temp.files, 1);
    assert_eq!(r.removed_dirs, 0);
    assert_eq!(phases.first(), Some(&Phase::Scan));
    assert_eq!(phases.last(), Some(&Phase::Done));
    assert!(
        r.summary().contains("would delete 2 objects"),
        "{}",
        r.summary()
    );
}

#[test]
fn an_object_put_while_collect_runs_is_not_lost() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let s = store(root, "");
    let old: Vec<PathBuf> = (0..20)
        .map(|i| put(&rt, &s, &format!("80{i:02}"), 10))
        .collect();
    let policy = Policy {
        max_bytes: Some(0),
        max_age: None,
    };
    let mut new_paths = Vec::new();
    let r = retention::collect(root, &policy, &mut |p: Progress| {
        // After the scan, before deletion and pruning: a build stores new objects, some in
        // fan-out directories the run is emptying.
        if p.phase == Phase::Delete && new_paths.is_empty() {
            for i in 0..20 {
                new_paths.push(put(&rt, &s, &format!("81{i:02}"), 10));
            }
        }
    })
    .expect("collect");
    assert_eq!(r.deleted_by_size.files, 20);
    assert!(old.iter().all(|p| !p.exists()));
    assert_eq!(new_paths.len(), 20);
    for (i, p) in new_paths.iter().enumerate() {
        assert!(p.exists(), "{}", p.display());
        let got = rt.block_on(s.get(&hash(&format!("81{i:02}")))).unwrap();
        assert!(got.is_some());
    }
}

#[test]
fn a_directory_that_is_not_a_cache_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("src/ab/cd")).unwrap();
    std::fs::write(root.join("src/ab/cd/12345"), b"my file").unwrap();
    std::fs::write(root.join("notes.txt"), b"keep me").unwrap();
    set_age(&root.join("src/ab/cd/12345"), 400 * DAY);
    set_age(&root.join("notes.txt"), 400 * DAY);
    let policy = Policy {
        max_bytes: Some(0),
        max_age: Some(Duration::from_secs(1)),
    };
    let r = collect(root, &policy);
    assert_eq!(r.scanned.files, 0);
    assert!(root.join("src/ab/cd/12345").exists());
    assert!(root.join("notes.txt").exists());
    let missing = retention::collect(&root.join("nope"), &policy, &mut |_| {});
    let e = missing.expect_err("missing root");
    assert!(e.contains("nope") && e.contains("not usable"), "{e}");
}

#[test]
fn background_retention_runs_on_the_runtime_and_stops() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let s = store(&root, "");
    let old = put(&rt, &s, "9001", 10);
    let young = put(&rt, &s, "9002", 10);
    set_age(&old, 50 * DAY);
    let policy = Policy {
        max_bytes: None,
        max_age: Some(Duration::from_secs(30 * DAY)),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = rt.block_on(async {
        retention::spawn_background_with(
            root.clone(),
            policy,
            Duration::from_secs(3600),
            None,
            move |r| {
                let _ = tx.send(r.clone());
            },
        )
    });
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("first run reports")
        .expect("run ok");
    assert_eq!(first.deleted_by_age.files, 1);
    assert!(!old.exists() && young.exists());
    // Requests are served while the loop lives.
    assert!(rt.block_on(s.get(&hash("9002"))).unwrap().is_some());
    assert!(handle.last_report().is_some());
    rt.block_on(handle.stop());
}

// ---- Temp files of killed writers, clocks in the future, the size bound under load ----------

const CHILD_ROOT: &str = "NXOC_TEST_CHILD_WRITER_ROOT";

/// Run as a child process by `temp_files_of_killed_writers_go_at_the_next_start`: starts an
/// upload into the store at $NXOC_TEST_CHILD_WRITER_ROOT whose body never ends (until killed).
#[test]
#[ignore = "a child process of another test"]
fn child_writer_that_never_finishes() {
    let Ok(root) = std::env::var(CHILD_ROOT) else {
        return;
    };
    let rt = runtime();
    let s = FsStore::new(root, Prefix::default());
    let (mut stream, _rest) = held_body(b"partial upload of a killed writer");
    let h = hash("9999");
    let put = s.put(&h, &mut stream, Some(1 << 20));
    let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), put).await });
}

/// Starts a writer process, waits for its temp file, kills it with SIGKILL and reaps it.
#[cfg(all(target_os = "linux", unix_native))]
fn killed_writer(root: &Path) -> PathBuf {
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "child_writer_that_never_finishes",
            "--ignored",
            "--quiet",
        ])
        .env(CHILD_ROOT, root)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("child writer");
    let temp = wait_for_temp(root, "9999");
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    temp
}

// Linux only (and not under `portable-fallbacks`): "provably gone" needs /proc (boot id, pid
// namespace, start times); elsewhere such temp files go by age.
#[cfg(all(target_os = "linux", unix_native))]
#[test]
fn temp_files_of_killed_writers_go_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let s = store(root, "");
    let tmp = root.join(".tmp");
    // Kept: another host's upload (age rule), a name of another format, and our own in flight.
    let foreign = tmp.join("9001.0123456789abcdef.4242.777.00.tmp");
    let other_format = tmp.join("9002.4242.cafe.0011223344556677.tmp");
    std::fs::write(&foreign, b"another machine is uploading").unwrap();
    std::fs::write(&other_format, b"an older writer").unwrap();

    let dead = killed_writer(root);
    assert!(dead.exists());
    // A store opened again (serve start, a proxy, doctor) removes it at once.
    s.prepare().unwrap();
    assert!(!dead.exists(), "the killed writer's temp file is gone");
    assert!(
        foreign.exists() && other_format.exists(),
        "writers that cannot be checked stay"
    );

    // gc too; its report counts it.
    let dead = killed_writer(root);
    let r = collect(root, &Policy::default());
    assert!(!dead.exists());
    assert_eq!(r.deleted_temp.files, 1, "{r:?}");
    assert_eq!(r.kept_temp.files, 2, "{r:?}");
    // An hour later the others go by the age rule.
    set_age(&foreign, 2 * HOUR);
    set_age(&other_format, 2 * HOUR);
    let r = collect(root, &Policy::default());
    assert_eq!(r.deleted_temp.files, 2, "{r:?}");
}

// Unix-native only: the link count (`st_nlink`) is unstable in std on Windows; the portable
// store takes every temp file as unlinked (a linked leftover counts twice until it goes).
#[cfg(unix_native)]
#[test]
fn temp_files_count_toward_the_size_a_hard_linked_leftover_once() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let s = store(root, "");
    let a = put(&rt, &s, "9101", 1000);
    let b = put(&rt, &s, "9102", 1000);
    set_age(&a, 2 * DAY);
    // Another machine uploads 2000 bytes; a leftover of b's writer is linked into place already
    // (its bytes are the object's).
    let uploading = root.join(".tmp/9103.0123456789abcdef.1.1.00.tmp");
    std::fs::write(&uploading, vec![1u8; 2000]).unwrap();
    std::fs::hard_link(&b, root.join(".tmp/9102.0123456789abcdef.1.1.00.tmp")).unwrap();
    // Room for both objects and 1000 bytes more: the upload's 2000 bytes take a's place.
    let policy = Policy {
        max_bytes: Some(2 * size_of(1000) + 1000),
        max_age: None,
    };
    let r = collect(root, &policy);
    assert_eq!(r.kept_temp.files, 2);
    assert_eq!(
        r.kept_temp.bytes, 2000,
        "the hard-linked leftover counts once"
    );
    assert_eq!(r.deleted_by_size.files, 1, "{r:?}");
    assert!(!a.exists() && b.exists());
}

#[test]
fn future_dated_objects_and_temp_files_are_not_pinned() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let s = store(root, "");
    let year_2100 = FileTime::from_unix_time(4_102_444_800, 0);
    // A GET sets a future access time to now.
    let read = put(&rt, &s, "9201", 10);
    filetime::set_file_mtime(&read, year_2100).unwrap();
    assert!(rt.block_on(s.get(&hash("9201"))).unwrap().is_some());
    assert!(mtime(&read) <= SystemTime::now(), "reset by the read");

    // Retention counts a future time as now and resets it: the object ages from then on.
    let future = put(&rt, &s, "9202", 10);
    let older = put(&rt, &s, "9203", 10);
    filetime::set_file_mtime(&future, year_2100).unwrap();
    set_age(&older, HOUR);
    let budget_for_one = Policy {
        max_bytes: Some(size_of(10) * 2),
        max_age: Some(Duration::from_secs(30 * DAY)),
    };
    let r = collect(root, &budget_for_one);
    assert_eq!(r.deleted_by_size.files, 1);
    assert!(!older.exists() && future.exists());
    assert!(mtime(&future) <= SystemTime::now(), "reset to now");
    set_age(&future, 31 * DAY);
    let r = collect(root, &budget_for_one);
    assert_eq!(r.deleted_by_age.files, 1, "it expires like any object");
    assert!(!future.exists());

    // A future-dated temp file of another host: its age counts from the run that saw it.
    let temp = root.join(".tmp/9204.0123456789abcdef.1.1.00.tmp");
    std::fs::write(&temp, b"x").unwrap();
    filetime::set_file_mtime(&temp, year_2100).unwrap();
    let r = collect(root, &Policy::default());
    assert_eq!(r.deleted_temp.files, 0);
    assert!(mtime(&temp) <= SystemTime::now(), "reset to now");
    set_age(&temp, 2 * HOUR);
    assert_eq!(collect(root, &Policy::default()).deleted_temp.files, 1);
}

/// Sum of the sizes of the distinct files (inodes) below `root`: objects and temp files.
fn disk_usage(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if seen.insert((m.dev(), m.ino())) {
                total += m.len();
            }
        }
    }
    total
}

#[test]
fn uploads_under_load_keep_the_store_within_max_size_plus_one_artifact() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    const MAX_SIZE: u64 = 4 << 20;
    const MAX_ARTIFACT: u64 = 256 << 10;
    const CLIENTS: usize = 16;
    const UPLOADS_PER_CLIENT: usize = 60;
    const SECRET: &str = "rw-secret-0123456789abcdef";
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("store");
    std::fs::create_dir_all(&storage).unwrap();
    let env: std::collections::HashMap<String, String> = [(
        "NX_OPEN_CACHE_SERVER_TOKENS".to_owned(),
        format!("ci:read-write:{SECRET}"),
    )]
    .into();
    let args: Vec<String> = [
        "--storage".to_owned(),
        format!("fs:{}", storage.display()),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--max-size".into(),
        format!("{MAX_SIZE}B"),
        "--max-artifact-size".into(),
        format!("{MAX_ARTIFACT}B"),
        "--log".into(),
        "off".into(),
    ]
    .into();
    let config = nx_open_cache::serve::config::resolve(&args, &env, dir.path()).unwrap();
    let server = nx_open_cache::serve::start(&config, &env).unwrap();

    // Sample the directory's size while the uploads run.
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, peak, storage) = (done.clone(), peak.clone(), storage.clone());
        std::thread::spawn(move || {
            let mut samples = 0u64;
            while !done.load(Ordering::Relaxed) && samples < 100_000 {
                peak.fetch_max(disk_usage(&storage), Ordering::Relaxed);
                samples += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            samples
        })
    };
    let rt = runtime();
    let statuses = rt.block_on(async {
        let client = reqwest::Client::new();
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let (client, url) = (client.clone(), server.url.clone());
            tasks.push(tokio::spawn(async move {
                let mut statuses = Vec::new();
                for i in 0..UPLOADS_PER_CLIENT {
                    // Valid artifacts of 64 KiB .. 240 KiB of noise (a few KiB of tar and gzip
                    // framing on top stay under --max-artifact-size), fresh hashes.
                    let len = (64 << 10) + ((c * 7919 + i * 104_729) % (176 << 10));
                    let body = common::artifact(len, (c * 1000 + i) as u64);
                    let resp = client
                        .put(format!("{url}/v1/cache/{}", 1_000_000 + c * 1000 + i))
                        .bearer_auth(SECRET)
                        .body(body)
                        .send()
                        .await;
                    statuses.push(resp.map(|r| r.status().as_u16()).unwrap_or(0));
                }
                statuses
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    done.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    let stored = statuses.iter().filter(|s| **s == 200).count();
    let total: u64 = (CLIENTS * UPLOADS_PER_CLIENT) as u64 * (160 << 10);
    rt.block_on(server.stop());
    let bound = MAX_SIZE + MAX_ARTIFACT + HEADER_LEN as u64;
    let peak = peak.load(Ordering::Relaxed);
    eprintln!(
        "{} uploads (~{} MiB), {stored} stored; directory peak {} bytes in {samples} samples, bound {bound} (max size {MAX_SIZE} + one artifact)",
        statuses.len(),
        total >> 20,
        peak
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 403),
        "{statuses:?}"
    );
    assert!(stored > 0 && samples > 0);
    assert!(
        total > 4 * MAX_SIZE,
        "the uploads are many times the budget"
    );
    assert!(peak <= bound, "peak {peak} > bound {bound}");
    assert!(disk_usage(&storage) <= bound);
}
