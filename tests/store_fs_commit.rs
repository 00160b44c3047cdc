//! The fs store's group commit: uploads that finish together are synced and published in one
//! batch, and each keeps its own outcome (first writer wins, a fault fails only its upload,
//! nothing is visible before its batch is committed).

mod common;

use common::{body, noise, object_files, read_all};
use futures_util::StreamExt;
use nx_open_cache::key::{Prefix, TaskHash};
use nx_open_cache::store::fs::{Budget, CommitStage, Durability, FsStore};
use nx_open_cache::store::{PutOutcome, Store};
use std::sync::Arc;
use std::time::Duration;

fn hash(s: &str) -> TaskHash {
    TaskHash::parse(s).expect("valid test hash")
}

fn store(dir: &std::path::Path, durability: Durability) -> FsStore {
    let s = FsStore::new(dir.join("cache"), Prefix::default()).with_durability(durability);
    s.prepare().expect("prepare");
    s
}

fn temp_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("cache/.tmp")).unwrap().count()
}

/// Waits (bounded: 30 s) until `n` uploads are queued behind a held commit.
async fn until_queued(s: &FsStore, n: usize) {
    for _ in 0..3000 {
        if s.queued_commits() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{n} uploads were not queued within 30 s (queued: {})",
        s.queued_commits()
    );
}

/// Starts a PUT of `data` (small: received whole; large: streamed) as a task.
fn put(
    s: &Arc<FsStore>,
    h: &TaskHash,
    data: Vec<u8>,
) -> tokio::task::JoinHandle<Result<PutOutcome, nx_open_cache::store::StoreError>> {
    let (s, h) = (s.clone(), h.clone());
    tokio::spawn(async move {
        s.put(&h, &mut body(&data, 16 * 1024), Some(data.len() as u64))
            .await
    })
}

/// The answer of a PUT started with [`put`], bounded (60 s) so that a regression fails instead
/// of hanging.
async fn answered(
    task: tokio::task::JoinHandle<Result<PutOutcome, nx_open_cache::store::StoreError>>,
) -> Result<PutOutcome, nx_open_cache::store::StoreError> {
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("answered within 60 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_of_distinct_hashes_are_all_stored_and_readable() {
    for durability in Durability::ALL {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(store(dir.path(), durability));
        // Small (whole in memory) and streamed uploads, 48 at once.
        let sizes = [0usize, 1000, 64 << 10, 300 << 10];
        let mut tasks = Vec::new();
        for i in 0..48u64 {
            let data = noise(sizes[i as usize % sizes.len()], i + 1);
            let h = hash(&format!("{}-{i}", durability.as_str()));
            tasks.push((h.clone(), data.clone(), put(&s, &h, data)));
        }
        for (h, data, task) in tasks {
            let out = task.await.unwrap();
            assert_eq!(out, Ok(PutOutcome::Stored(data.len() as u64)), "{h:?}");
            assert_eq!(read_all(s.get(&h).await.unwrap().expect("hit")), data);
        }
        assert_eq!(object_files(&dir.path().join("cache")).len(), 48);
        assert_eq!(temp_files(dir.path()), 0, "no temp file left behind");
        let (batches, _) = s.commit_batches();
        assert!((1..=48).contains(&batches), "{batches} batches");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_that_finish_together_are_committed_in_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(store(dir.path(), Durability::Full));
    s.hold_commits(true);
    let tasks: Vec<_> = (0..16u64)
        .map(|i| {
            let h = hash(&format!("b{i}"));
            (h.clone(), put(&s, &h, noise(1024 + i as usize, i)))
        })
        .collect();
    until_queued(&s, 16).await;
    // Nothing is visible before its batch is committed.
    for (h, _) in &tasks {
        assert!(s.get(h).await.unwrap().is_none(), "{h:?} visible early");
    }
    s.hold_commits(false);
    for (h, task) in tasks {
        assert!(
            matches!(task.await.unwrap(), Ok(PutOutcome::Stored(_))),
            "{h:?}"
        );
    }
    assert_eq!(s.commit_batches(), (1, 16), "one batch of 16");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_uploads_of_one_hash_in_one_batch_first_writer_wins() {
    for size in [2000usize, 600 << 10] {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(store(dir.path(), Durability::Full));
        let h = hash("same");
        s.hold_commits(true);
        let first = put(&s, &h, noise(size, 1));
        until_queued(&s, 1).await;
        let second = put(&s, &h, noise(size, 2));
        until_queued(&s, 2).await;
        s.hold_commits(false);
        let (a, b) = (first.await.unwrap(), second.await.unwrap());
        assert_eq!(
            a,
            Ok(PutOutcome::Stored(size as u64)),
            "the first queued wins"
        );
        assert_eq!(
            b,
            Ok(PutOutcome::AlreadyExists),
            "the second gets a conflict"
        );
        assert_eq!(read_all(s.get(&h).await.unwrap().unwrap()), noise(size, 1));
        assert_eq!(s.commit_batches(), (1, 2));
        assert_eq!(temp_files(dir.path()), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_sync_or_link_fails_only_its_own_upload() {
    for durability in [Durability::Full, Durability::None] {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(store(dir.path(), durability));
        let (ok, sync_fails, link_fails) = (hash("ok"), hash("nosync"), hash("nolink"));
        s.fail_commit(&sync_fails, CommitStage::Sync);
        s.fail_commit(&link_fails, CommitStage::Link);
        s.hold_commits(true);
        let tasks: Vec<_> = [&ok, &sync_fails, &link_fails]
            .into_iter()
            .enumerate()
            .map(|(i, h)| (h.clone(), put(&s, h, noise(5000, i as u64))))
            .collect();
        until_queued(&s, 3).await;
        s.hold_commits(false);
        let mut outs = Vec::new();
        for (h, task) in tasks {
            outs.push((h, task.await.unwrap()));
        }
        assert_eq!(outs[0].1, Ok(PutOutcome::Stored(5000)));
        let sync_err = outs[1].1.clone().expect_err("sync fault fails the upload");
        assert!(
            sync_err.message.contains("injected fsync fault") && sync_err.message.contains(".tmp"),
            "{}",
            sync_err.message
        );
        let link_err = outs[2].1.clone().expect_err("link fault fails the upload");
        assert!(
            link_err.message.contains("cannot publish") && link_err.message.contains("nolink"),
            "{}",
            link_err.message
        );
        assert_eq!(s.commit_batches(), (1, 3), "all three in one batch");
        assert_eq!(read_all(s.get(&ok).await.unwrap().unwrap()), noise(5000, 0));
        assert!(s.get(&sync_fails).await.unwrap().is_none());
        assert!(s.get(&link_fails).await.unwrap().is_none());
        assert_eq!(object_files(&dir.path().join("cache")).len(), 1);
        assert_eq!(
            temp_files(dir.path()),
            0,
            "failed uploads leave no temp file"
        );
        // The failed hashes can be uploaded again.
        for h in [&sync_fails, &link_fails] {
            let out = put(&s, h, noise(10, 9)).await.unwrap();
            assert_eq!(out, Ok(PutOutcome::Stored(10)));
        }
    }
}

#[tokio::test]
async fn durability_modes_are_named_as_the_option_takes_them() {
    assert_eq!(Durability::default(), Durability::Full);
    for d in Durability::ALL {
        assert_eq!(Durability::parse(d.as_str()), Some(d));
    }
    assert_eq!(Durability::parse("fsync"), None);
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        store(dir.path(), Durability::Data).durability(),
        Durability::Data
    );
}

/// Waits (bounded: 30 s) until `ok` holds.
async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within 30 s: {what}");
}

fn on_disk(dir: &std::path::Path) -> u64 {
    object_files(&dir.join("cache"))
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_cancelled_while_queued_is_neither_stored_nor_left_counted_in_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let budget = Budget::new(1 << 30);
    budget.scan_finished(0);
    let s = Arc::new(store(dir.path(), Durability::Full).with_budget(Some(budget.clone())));
    s.hold_commits(true);
    let (gone, kept) = (hash("gone"), hash("kept"));
    let cancelled = put(&s, &gone, noise(3000, 1));
    until_queued(&s, 1).await;
    let stays = put(&s, &kept, noise(4000, 2));
    until_queued(&s, 2).await;
    cancelled.abort();
    assert!(cancelled.await.unwrap_err().is_cancelled());
    s.hold_commits(false);
    assert_eq!(stays.await.unwrap(), Ok(PutOutcome::Stored(4000)));
    until("the cancelled upload's temp file is removed", || {
        temp_files(dir.path()) == 0
    })
    .await;
    assert!(s.get(&gone).await.unwrap().is_none(), "not stored");
    // What the budget counts is what is on disk: nothing in flight, nothing uncounted.
    assert_eq!(budget.used(), Some(on_disk(dir.path())));
    assert_eq!(object_files(&dir.path().join("cache")).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_beyond_the_commit_queue_room_wait_for_it() {
    // Room for 3 uploads, or 5000 bytes in memory (2000-byte uploads: 2 fit).
    for (uploads, bytes, fit) in [(3usize, 1 << 20, 3usize), (100, 5000, 2)] {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(store(dir.path(), Durability::Full).with_commit_queue(uploads, bytes));
        s.hold_commits(true);
        let tasks: Vec<_> = (0..fit + 2)
            .map(|i| put(&s, &hash(&format!("q{i}")), noise(2000 - 40, i as u64)))
            .collect();
        until_queued(&s, fit).await;
        // The others wait for room, before anything of them is received.
        until("two uploads wait for room", || s.commit_room_waiters() == 2).await;
        assert_eq!(s.queued_commits(), fit, "never more than the room");
        assert_eq!(
            temp_files(dir.path()),
            fit,
            "no temp file for the waiting ones"
        );
        assert!(tasks.iter().all(|t| !t.is_finished()), "all wait");
        s.hold_commits(false);
        for t in tasks {
            assert!(matches!(t.await.unwrap(), Ok(PutOutcome::Stored(_))));
        }
        assert_eq!(object_files(&dir.path().join("cache")).len(), fit + 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_writer_gets_its_conflict_only_once_the_first_writers_name_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(store(dir.path(), Durability::Full));
    let h = hash("durable");
    s.hold_dir_syncs(true);
    let first = put(&s, &h, noise(1000, 1));
    let path = s.object_path(&h);
    until("the first writer's name is linked", || path.exists()).await;
    assert!(!first.is_finished(), "no 200 before the directory sync");
    let second = put(&s, &h, noise(1000, 2));
    until("the second writer waits for the sync", || {
        s.commit_dir_counts().1 >= 1
    })
    .await;
    assert!(!second.is_finished(), "no 409 before the directory sync");
    s.hold_dir_syncs(false);
    assert_eq!(answered(first).await, Ok(PutOutcome::Stored(1000)));
    assert_eq!(answered(second).await, Ok(PutOutcome::AlreadyExists));
    // Once durable, a conflict is answered at once (no wait counted).
    let third = put(&s, &h, noise(1000, 3)).await.unwrap();
    assert_eq!(third, Ok(PutOutcome::AlreadyExists));
    assert_eq!(s.commit_dir_counts().1, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_fan_out_directory_has_its_parent_synced_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(store(dir.path(), Durability::Full));
    let h = hash("fanout");
    assert_eq!(
        put(&s, &h, noise(10, 1)).await.unwrap(),
        Ok(PutOutcome::Stored(10))
    );
    // `<aa>/<bb>` were made: bb (the new name), aa (new entry bb), the root (new entry aa).
    assert_eq!(s.commit_dir_counts().0, 3);
    s.delete(&h).await.unwrap();
    assert_eq!(
        put(&s, &h, noise(10, 2)).await.unwrap(),
        Ok(PutOutcome::Stored(10))
    );
    assert_eq!(s.commit_dir_counts().0, 4, "existing directories: bb only");
    // Without `full`, directories are left to the filesystem.
    let other = tempfile::tempdir().unwrap();
    let d = Arc::new(store(other.path(), Durability::Data));
    assert!(matches!(
        put(&d, &h, noise(10, 1)).await.unwrap(),
        Ok(PutOutcome::Stored(_))
    ));
    assert_eq!(d.commit_dir_counts().0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_cancelled_while_receiving_removes_its_temp_file_at_once() {
    for size in [2000u64, 600 << 10] {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(store(dir.path(), Durability::Full));
        let (s2, h) = (s.clone(), hash(&format!("cut{size}")));
        let receiving = tokio::spawn(async move {
            // A first chunk, then a client that sends nothing more.
            let first = futures_util::stream::iter([Ok(bytes::Bytes::from(vec![7u8; 1000]))]);
            let mut stream: nx_open_cache::store::BodyStream<'static> =
                Box::pin(first.chain(futures_util::stream::pending()));
            s2.put(&h, &mut stream, Some(size)).await
        });
        until("the temp file exists", || temp_files(dir.path()) == 1).await;
        receiving.abort();
        assert!(receiving.await.unwrap_err().is_cancelled());
        until("the temp file is removed", || temp_files(dir.path()) == 0).await;
        assert!(object_files(&dir.path().join("cache")).is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_in_the_link_stage_strands_no_second_writer() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(store(dir.path(), Durability::Full));
    let h = hash("panics");
    // The link stage publishes the name, then panics: the first writer gets an error.
    s.fail_commit(&h, CommitStage::Panic);
    let first = put(&s, &h, noise(1000, 1)).await.unwrap();
    let err = first.expect_err("the commit stopped");
    assert!(err.message.contains("commit stopped"), "{}", err.message);
    // The name was published: a second writer gets its conflict, not an endless wait (bounded
    // here so that a regression fails instead of hanging).
    let second = tokio::time::timeout(Duration::from_secs(60), put(&s, &h, noise(1000, 2)))
        .await
        .expect("the second writer is answered")
        .unwrap();
    assert_eq!(second, Ok(PutOutcome::AlreadyExists));
    assert_eq!(read_all(s.get(&h).await.unwrap().unwrap()), noise(1000, 1));
    // The store goes on committing.
    let other = put(&s, &hash("after"), noise(10, 3)).await.unwrap();
    assert_eq!(other, Ok(PutOutcome::Stored(10)));
}

/// A hash other than `h` whose object lies in the same directory.
fn neighbour(s: &FsStore, h: &TaskHash) -> TaskHash {
    let want = s.object_path(h).parent().unwrap().to_owned();
    (0..10_000_000u64)
        .map(|i| hash(&format!("n{i}")))
        .find(|n| n != h && s.object_path(n).parent() == Some(want.as_path()))
        .expect("a neighbour within 10M hashes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_name_below_a_new_directory_waits_for_a_sync_of_its_parents_even_from_another_batch() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(store(dir.path(), Durability::Full));
    let (u, v) = (hash("maker"), hash("maker"));
    let v = neighbour(&s, &v);
    s.hold_dir_syncs(true);
    // U makes `<aa>/<bb>`; its batch's directory syncs are held.
    let first = put(&s, &u, noise(100, 1));
    let path = s.object_path(&u);
    until("U is linked", || path.exists()).await;
    assert_eq!(s.noted_new_dirs(), 2, "the root and <aa> got new entries");
    // V finds the directories existing, in a later batch: it syncs the new directories' parents
    // too (U's syncs are not done), not only its own directory.
    let second = put(&s, &v, noise(100, 2));
    let path = s.object_path(&v);
    until("V is linked", || path.exists()).await;
    // V's batch copies the notes after its link: both batches' syncs wait, all chosen.
    until("both batches wait for their directory syncs", || {
        s.dir_sync_waiters() == 2
    })
    .await;
    assert!(!first.is_finished() && !second.is_finished());
    assert_eq!(s.commit_dir_counts().0, 0, "all held");
    s.hold_dir_syncs(false);
    assert_eq!(answered(first).await, Ok(PutOutcome::Stored(100)));
    assert_eq!(answered(second).await, Ok(PutOutcome::Stored(100)));
    assert_eq!(
        s.commit_dir_counts().0,
        6,
        "bb, aa and the root, by each batch"
    );
    until("the notes are done with", || s.noted_new_dirs() == 0).await;
    // Once synced, the parents are not synced again.
    s.delete(&u).await.unwrap();
    assert_eq!(
        put(&s, &u, noise(100, 3)).await.unwrap(),
        Ok(PutOutcome::Stored(100))
    );
    assert_eq!(s.commit_dir_counts().0, 7);
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_directory_that_cannot_be_made_leaves_no_note() {
    // `mkdir` in /proc fails (ENOENT) whoever runs the test, root included.
    let s = Arc::new(FsStore::new("/proc", Prefix::default()).with_durability(Durability::Full));
    for i in 0..3 {
        let out = put(&s, &hash(&format!("nodir{i}")), noise(10, 1))
            .await
            .unwrap();
        assert!(out.is_err(), "{out:?}");
        assert_eq!(s.noted_new_dirs(), 0, "no note (and no descriptor) kept");
    }
}

#[test]
fn queued_uploads_leave_no_temp_file_when_the_runtime_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(store(dir.path(), Durability::Full));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        s.hold_commits(true);
        for i in 0..3u64 {
            drop(put(&s, &hash(&format!("shut{i}")), noise(1000, i)));
        }
        until_queued(&s, 3).await;
        assert_eq!(temp_files(dir.path()), 3);
    });
    drop(rt);
    assert_eq!(temp_files(dir.path()), 0, "removed at the shutdown");
    assert!(object_files(&dir.path().join("cache")).is_empty());
}
