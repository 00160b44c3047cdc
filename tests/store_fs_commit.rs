//! The fs store's group commit: uploads that finish together are synced and published in one
//! batch, and each keeps its own outcome (first writer wins, a fault fails only its upload,
//! nothing is visible before its batch is committed).

mod common;

use common::{body, noise, object_files, read_all};
use nx_open_cache::key::{Prefix, TaskHash};
use nx_open_cache::store::fs::{CommitStage, Durability, FsStore};
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
