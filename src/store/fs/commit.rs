//! Group commit of the fs store's uploads: the uploads whose temp files are complete while a
//! commit is under way are made durable and published together, in one batch.
//!
//! An upload hands its temp file to [`Commits::commit`] and waits for its answer. The first
//! upload that finds no commit running starts one: a task of its own, so a client that goes away
//! never strands the uploads queued behind it. A commit takes every upload queued at that moment
//! and, with [`Durability::Full`]:
//! 1. writes what is left of each upload's bytes (small uploads arrive whole in memory) and
//!    fsyncs every temp file of the batch, all at once, one blocking task each: the filesystem's
//!    journal (ext4's jbd2, XFS's log) joins the fsyncs in flight into one journal commit and one
//!    device flush, where fsyncs issued one after another pay a flush each (measured on ext4 over
//!    virtio: 16 files fsynced one by one 48-51 ms, all at once 2.2-2.8 ms);
//! 2. links each temp file into place (`link(2)`: first writer wins, see [`super::write`]) and
//!    removes its temp name;
//! 3. fsyncs each directory that got a new name, once per batch, all at once;
//!
//! and answers the batch's uploads only then (the next batch starts while its directories are
//! synced, so that the journal commits both at once): a 200 means the data and the name are on stable
//! storage, and no name ever points at data that is not (the data is durable before the link).
//! An upload whose write, fsync or link fails fails alone; the others of its batch are published.
//! A directory fsync is best effort, as before (some filesystems refuse it). With `Full`, a
//! directory that got a new fan-out subdirectory is synced too, by every batch that publishes
//! until one whose sync started after the subdirectory was made has finished it, so the path to
//! a new name is as durable as the name (whichever batch the name is in: the upload that made the
//! directory, or another that found it made).
//!
//! Cancellation and bounds: a queued upload owns its temp file (removed when the upload is
//! dropped unpublished) and its budget share (kept as stored bytes if it is published), so a
//! client that goes away neither leaks a temp file nor leaves bytes uncounted (uploads still
//! queued at a shutdown remove their temp files at once). An upload whose client went away
//! before its batch reached it is dropped unwritten (nothing of it is ever visible). At most
//! [`QUEUE_MAX_UPLOADS`] uploads and [`QUEUE_MAX_BYTES`] bytes in memory are received, wait for
//! or take part in a commit (room is taken before the body is read); beyond that an upload waits
//! for room (backpressure: a disk that does not keep up slows uploads down instead of growing
//! memory; the server's own limits, concurrent uploads with 503 + Retry-After and the store
//! deadline, bound the wait).
//! A name published with `Full` counts as present for a second writer of the same hash only once
//! its directories are synced: that writer's 409 waits for it, so a 409 is never answered for an
//! object a machine crash could still lose.

use super::budget::Reservation;
use super::dir::Dir;
use super::{FsStore, Location};
use crate::store::{io_error, ErrorKind, StoreError};
use bytes::Bytes;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};

/// Uploads at most waiting for or taking part in a commit (each holds an open temp file).
pub const QUEUE_MAX_UPLOADS: usize = 256;
/// Bytes of small uploads at most held in memory while waiting for or taking part in a commit.
pub const QUEUE_MAX_BYTES: usize = 32 * 1024 * 1024;

/// What a 200 to an upload promises about a crash of the machine (power loss, kernel panic);
/// a crash or kill of the server process alone loses nothing the kernel was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// The object's data and its name are on stable storage before the answer.
    #[default]
    Full,
    /// The data is on stable storage before the object is published; its name is left to the
    /// filesystem's own schedule (an object answered with 200 may be missing after a crash, but a
    /// name never points at incomplete data).
    Data,
    /// Nothing is fsynced: the operating system writes back in its own time.
    None,
}

impl Durability {
    /// Every mode, as the option names them.
    pub const ALL: [Durability; 3] = [Durability::Full, Durability::Data, Durability::None];

    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Full => "full",
            Durability::Data => "data",
            Durability::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Durability> {
        Durability::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// A stage of a commit a test can make fail for one upload (see [`FsStore::fail_commit`]).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitStage {
    /// Writing or fsyncing the temp file.
    Sync,
    /// Linking it into place.
    Link,
    /// The link stage panics right after publishing it (a panic must strand no waiter).
    Panic,
}

/// An upload's temp file and the directories it goes between. Dropped before its temp name was
/// removed (an upload cancelled or failed at any stage before the link stage took it), it
/// removes the temp name: the link stage removes it itself, so the two never race.
pub(super) struct Pending {
    pub object_dir: Dir,
    pub temp_dir: Dir,
    pub temp_name: String,
    /// The temp file's path, for messages.
    pub temp_shown: PathBuf,
    /// The temp name is gone (removed by [`remove_temp`]).
    pub removed: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        // Off the async workers when there is a runtime (a network mount may be slow).
        let name = std::mem::take(&mut self.temp_name);
        match (
            tokio::runtime::Handle::try_current(),
            self.temp_dir.try_clone(),
        ) {
            (Ok(rt), Ok(dir)) => {
                rt.spawn_blocking(move || {
                    let _ = dir.remove_file(OsStr::new(&name));
                });
            }
            _ => {
                let _ = self.temp_dir.remove_file(OsStr::new(&name));
            }
        }
    }
}

/// Room in the commit queue ([`QUEUE_MAX_UPLOADS`], [`QUEUE_MAX_BYTES`]), held from before an
/// upload is received until its [`Staged`] is dropped in the link stage (linked or not; before
/// its directories are synced and it is answered).
pub(super) type Room = (OwnedSemaphorePermit, OwnedSemaphorePermit);

/// An upload ready to commit: its temp file (open), the bytes still to write into it, its
/// share of the store's size budget and its room in the queue.
pub(super) struct Staged {
    pub loc: Location,
    pub pending: Pending,
    pub file: std::fs::File,
    /// Written at the start of the file, in order, before it is synced (small uploads).
    pub unwritten: Vec<Bytes>,
    /// Kept as `stored_bytes` at the object's path when it is published; released otherwise
    /// (when the job is dropped, whatever the stage).
    pub reservation: Option<Reservation>,
    /// The object's size on disk (envelope included).
    pub stored_bytes: u64,
    pub _room: Room,
}

struct Job {
    store: FsStore,
    staged: Staged,
    reply: oneshot::Sender<Result<bool, StoreError>>,
}

impl Job {
    /// The upload's client is gone: nobody waits for the answer.
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// A batch's directory syncs, until they are done (see [`Commits::until_durable`]).
#[derive(Default)]
struct Syncing {
    done: AtomicBool,
    finished: Notify,
}

/// Marks a batch's directory syncs done when dropped (done, failed, its task dropped, or a
/// panic in its link stage: it exists before the link stage starts and goes with it): waiters
/// are never stranded.
struct SyncingGuard {
    commits: Arc<Commits>,
    syncing: Arc<Syncing>,
    /// The noted new directories this batch syncs: (key, mkdirs finished when copied).
    copied: Vec<(u64, u64)>,
    /// The batch's directory syncs are done.
    synced: bool,
}

impl Drop for SyncingGuard {
    fn drop(&mut self) {
        // Done before its records go: a losing writer withdrawing its record in between puts
        // back one of this batch only while it is not done (it would never be removed again).
        self.syncing.done.store(true, Ordering::SeqCst);
        self.commits
            .lock_unsynced()
            .retain(|_, s| !Arc::ptr_eq(s, &self.syncing));
        if self.synced && !self.copied.is_empty() {
            // A noted directory is done with once a sync that started after its last mkdir
            // finished is done: unless a mkdir finished or started below it since it was copied.
            self.commits
                .lock_new_dirs()
                .entries
                .retain(|e| !(e.in_flight == 0 && self.copied.contains(&(e.key, e.made))));
        }
        self.syncing.finished.notify_waiters();
    }
}

/// A directory that got (or is about to get) a new subdirectory, not synced since (`Full`).
struct NewDir {
    key: u64,
    dir: Arc<Dir>,
    /// Device and inode: one entry per directory.
    id: Option<(u64, u64)>,
    /// Subdirectories being made in it (`mkdirat` not returned yet).
    in_flight: usize,
    /// Subdirectories made in it so far (a version: a batch that copied an older one does not
    /// cover the newer).
    made: u64,
}

#[derive(Default)]
struct NewDirs {
    entries: Vec<NewDir>,
    next_key: u64,
}

/// The commit queue of a store (shared by its clones and namespaced views).
pub(super) struct Commits {
    durability: Durability,
    queue: Mutex<Queue>,
    /// Room for uploads waiting for or in a commit, and for their bytes in memory.
    slots: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_uploads: usize,
    max_bytes: usize,
    /// Names published (object paths below the root) whose directories are not synced yet
    /// (`Full` only), with their batch's syncs.
    unsynced: Mutex<HashMap<String, Arc<Syncing>>>,
    /// Directories that got (or are about to get) a new subdirectory and were not synced by a
    /// batch since (`Full` only): every batch that publishes syncs them all.
    new_dirs: Mutex<NewDirs>,
    /// Test hooks: commits (or directory syncs) wait while held; injected faults.
    held: AtomicBool,
    dirs_held: AtomicBool,
    released: Notify,
    faulty: AtomicBool,
    faults: Mutex<Vec<(String, CommitStage)>>,
    /// Batches committed and the largest one, directories synced, and second writers that
    /// waited for a first writer's directory sync (for tests and profiles).
    batches: AtomicU64,
    largest: AtomicU64,
    dir_syncs: AtomicU64,
    durability_waits: AtomicU64,
    /// Uploads in [`Commits::room`] (for tests).
    room_waiters: AtomicUsize,
    /// Batches whose directory syncs wait in [`Commits::wait_while_dirs_held`] (for tests).
    dir_sync_waiters: AtomicUsize,
}

impl Default for Commits {
    fn default() -> Self {
        Commits::new(Durability::default(), QUEUE_MAX_UPLOADS, QUEUE_MAX_BYTES)
    }
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    running: bool,
}

/// What a batch's link stage did with one upload.
struct Linked {
    reply: oneshot::Sender<Result<bool, StoreError>>,
    outcome: Result<bool, StoreError>,
}

impl Commits {
    /// A commit queue with room for `max_uploads` uploads and `max_bytes` bytes in memory.
    pub(super) fn new(durability: Durability, max_uploads: usize, max_bytes: usize) -> Self {
        let max_bytes = max_bytes.clamp(1, Semaphore::MAX_PERMITS);
        let max_uploads = max_uploads.clamp(1, Semaphore::MAX_PERMITS);
        Commits {
            durability,
            queue: Mutex::default(),
            slots: Arc::new(Semaphore::new(max_uploads)),
            bytes: Arc::new(Semaphore::new(max_bytes)),
            max_uploads,
            max_bytes,
            unsynced: Mutex::default(),
            new_dirs: Mutex::default(),
            held: AtomicBool::new(false),
            dirs_held: AtomicBool::new(false),
            released: Notify::new(),
            faulty: AtomicBool::new(false),
            faults: Mutex::default(),
            batches: AtomicU64::new(0),
            largest: AtomicU64::new(0),
            dir_syncs: AtomicU64::new(0),
            durability_waits: AtomicU64::new(0),
            room_waiters: AtomicUsize::new(0),
            dir_sync_waiters: AtomicUsize::new(0),
        }
    }

    pub(super) fn durability(&self) -> Durability {
        self.durability
    }

    /// The queue's room: uploads, bytes in memory.
    pub(super) fn bounds(&self) -> (usize, usize) {
        (self.max_uploads, self.max_bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_unsynced(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Syncing>>> {
        self.unsynced.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_new_dirs(&self) -> std::sync::MutexGuard<'_, NewDirs> {
        self.new_dirs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `dir` is about to get a new subdirectory: with `Full`, every batch that publishes syncs
    /// it until one whose sync started after the subdirectory was made has finished. Returns the
    /// note, for [`Commits::new_dir_made`] (one per directory: a directory noted again shares it).
    pub(super) fn note_new_dir(&self, dir: &Dir) -> Option<u64> {
        if self.durability != Durability::Full {
            return None;
        }
        let id = dir.identity().ok().flatten();
        let mut new_dirs = self.lock_new_dirs();
        if let Some(e) = new_dirs
            .entries
            .iter_mut()
            .find(|e| id.is_some() && e.id == id)
        {
            e.in_flight += 1;
            return Some(e.key);
        }
        let dir = Arc::new(dir.try_clone().ok()?);
        let key = new_dirs.next_key;
        new_dirs.next_key += 1;
        new_dirs.entries.push(NewDir {
            key,
            dir,
            id,
            in_flight: 1,
            made: 0,
        });
        Some(key)
    }

    /// The subdirectory noted as `note` in `dir` was made (`made`: it exists now) or not (then
    /// the note is dropped unless other subdirectories of `dir` need it).
    pub(super) fn new_dir_made(&self, note: Option<u64>, dir: &Dir, made: bool) {
        if self.durability != Durability::Full {
            return;
        }
        let Some(key) = note else {
            if made {
                dir.sync(); // not noted (no descriptor to spare): synced here, on its own
            }
            return;
        };
        let mut new_dirs = self.lock_new_dirs();
        let Some(i) = new_dirs.entries.iter().position(|e| e.key == key) else {
            return;
        };
        let e = &mut new_dirs.entries[i];
        e.in_flight = e.in_flight.saturating_sub(1);
        if made {
            e.made += 1;
        } else if e.in_flight == 0 && e.made == 0 {
            new_dirs.entries.swap_remove(i);
        }
    }

    /// Test hook: directories noted and not yet done with.
    pub(super) fn noted_new_dirs(&self) -> usize {
        self.lock_new_dirs().entries.len()
    }

    /// Waits until the name at `rel` (an object path below the root, found taken by a second
    /// writer) is as durable as a 200 for it promised: with `Full`, until the directory syncs of
    /// the batch that published it are done. At once when it was not published by this process
    /// or is durable already.
    ///
    /// The record found may be a losing writer's, registered in place of the first writer's
    /// while it tried to publish (it puts the first writer's back when it fails): once the
    /// awaited batch is done, `rel` is looked up again, and the wait goes on while another
    /// batch's syncs for it are still running (bounded: each record goes when its batch is done).
    pub(super) async fn until_durable(&self, rel: &str) {
        let Some(mut syncing) = self.lock_unsynced().get(rel).cloned() else {
            return;
        };
        self.durability_waits.fetch_add(1, Ordering::Relaxed);
        loop {
            loop {
                let finished = syncing.finished.notified();
                tokio::pin!(finished);
                finished.as_mut().enable();
                if syncing.done.load(Ordering::SeqCst) {
                    break;
                }
                finished.await;
            }
            let next = match self.lock_unsynced().get(rel) {
                Some(s) if !Arc::ptr_eq(s, &syncing) && !s.done.load(Ordering::SeqCst) => s.clone(),
                _ => return,
            };
            syncing = next;
        }
    }

    /// Room in the queue for an upload that holds `in_memory` bytes in memory until it is
    /// committed (`shown`: what it stores, for messages): waits while the queue is full.
    pub(super) async fn room(&self, in_memory: u64, shown: &str) -> Result<Room, StoreError> {
        let weight = in_memory.clamp(1, self.max_bytes as u64);
        let weight = u32::try_from(weight).unwrap_or(u32::MAX);
        let closed = |_| {
            StoreError::new(
                ErrorKind::Unavailable,
                format!("cannot store {shown}: the commit queue is closed"),
            )
        };
        // Counted while here (a cancelled wait included).
        let _counted = Counted::new(&self.room_waiters);
        let slot = self.slots.clone().acquire_owned().await.map_err(closed)?;
        let bytes = self
            .bytes
            .clone()
            .acquire_many_owned(weight)
            .await
            .map_err(closed)?;
        Ok((slot, bytes))
    }

    /// Commits `staged` with the batch it joins: `Ok(true)` once published (and as durable as the
    /// store's [`Durability`] says), `Ok(false)` when the name was taken by another writer.
    pub(super) async fn commit(
        self: &Arc<Self>,
        store: &FsStore,
        staged: Staged,
    ) -> Result<bool, StoreError> {
        let shown = staged.pending.temp_shown.clone();
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = self.lock();
            queue.jobs.push(Job {
                store: store.clone(),
                staged,
                reply,
            });
            !std::mem::replace(&mut queue.running, true)
        };
        if start {
            // The guard exists before the task: a task dropped unpolled (its runtime shutting
            // down) still clears the mark, and the waiters are told.
            let guard = Running {
                commits: self.clone(),
                armed: true,
            };
            tokio::spawn(run(guard));
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::new(
                ErrorKind::Unavailable,
                format!("cannot store {}: the commit stopped", shown.display()),
            ))
        })
    }

    async fn commit_batch(self: &Arc<Self>, batch: Vec<Job>) {
        // Uploads whose client is gone are dropped unwritten (their temp files removed, their
        // budget shares released).
        let batch: Vec<Job> = batch.into_iter().filter(|j| !j.abandoned()).collect();
        if batch.is_empty() {
            return;
        }
        let (synced, failed) = self.sync_files(batch).await;
        // Built before the link stage and moved into it: dropped whatever becomes of it.
        let guard = SyncingGuard {
            commits: self.clone(),
            syncing: Arc::new(Syncing::default()),
            copied: Vec::new(),
            synced: false,
        };
        let linked = self.link(synced, failed, guard).await;
        let Ok((linked, published, dirs, mut guard)) = linked else {
            return; // the link task failed: its senders are dropped, each upload is told
        };
        if self.durability != Durability::Full || !published || dirs.is_empty() {
            drop(guard);
            answer(linked);
            return;
        }
        let commits = self.clone();
        // The directory fsyncs of this batch run while the next batch's files are synced: the
        // journal joins both into one commit. Its uploads are answered when their directories are
        // synced.
        tokio::spawn(async move {
            commits.wait_while_dirs_held().await;
            let synced = sync_dirs(dirs).await;
            commits.dir_syncs.fetch_add(synced, Ordering::Relaxed);
            guard.synced = true;
            drop(guard);
            answer(linked);
        });
    }

    /// Stage 1: writes what is left of each temp file and fsyncs them all at once (with
    /// [`Durability::None`], only writes, in one task). Returns the jobs ready to link and those
    /// that failed, with their error.
    async fn sync_files(&self, batch: Vec<Job>) -> (Vec<Job>, Vec<(Job, StoreError)>) {
        let jobs: Vec<(Job, bool)> = batch
            .into_iter()
            .map(|j| {
                let fault = self.take_fault(j.staged.loc.name(), CommitStage::Sync);
                (j, fault)
            })
            .collect();
        // A task that panicked took its jobs (and their replies) with it: those uploads are told.
        let done = if self.durability == Durability::None {
            tokio::task::spawn_blocking(move || {
                jobs.into_iter()
                    .map(|(job, fault)| {
                        let result = finish_file(&job.staged, false, fault);
                        (job, result)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default()
        } else {
            let tasks: Vec<_> = jobs
                .into_iter()
                .map(|(job, fault)| {
                    tokio::task::spawn_blocking(move || {
                        let result = finish_file(&job.staged, true, fault);
                        (job, result)
                    })
                })
                .collect();
            let mut done = Vec::with_capacity(tasks.len());
            for task in tasks {
                if let Ok(finished) = task.await {
                    done.push(finished);
                }
            }
            done
        };
        split(done)
    }

    /// Stage 2 (one blocking task): links the synced temp files into place, removes every temp
    /// name; returns each upload's outcome, whether any was published, the directories to sync,
    /// and the batch's guard (with `Full`, each name is registered under it as not yet durable
    /// before it is published).
    async fn link(
        self: &Arc<Self>,
        synced: Vec<Job>,
        failed: Vec<(Job, StoreError)>,
        mut guard: SyncingGuard,
    ) -> Result<(Vec<Linked>, bool, Vec<Arc<Dir>>, SyncingGuard), tokio::task::JoinError> {
        let faults: Vec<(bool, bool)> = synced
            .iter()
            .map(|j| {
                let name = j.staged.loc.name();
                (
                    self.take_fault(name, CommitStage::Link),
                    self.take_fault(name, CommitStage::Panic),
                )
            })
            .collect();
        let commits = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut linked = Vec::with_capacity(synced.len() + failed.len());
            let mut dirs: Vec<Arc<Dir>> = Vec::new();
            // Also when every published name's directory was synced inline (no descriptor to
            // spare): the noted new directories above them still need this batch's sync.
            let mut published_any = false;
            let full = commits.durability == Durability::Full;
            for (job, (fault, panics)) in synced.into_iter().zip(faults) {
                if job.abandoned() {
                    continue; // not linked: dropping the job removes its temp name
                }
                let Job {
                    store,
                    mut staged,
                    reply,
                } = job;
                let rel = staged.loc.rel();
                // A second writer that finds the name looks it up here: registered before the
                // name can be seen (withdrawn below if it was not published).
                let before = full.then(|| {
                    commits
                        .lock_unsynced()
                        .insert(rel.clone(), guard.syncing.clone())
                });
                let published = if fault {
                    Err(io_error(
                        &io::Error::other("injected link fault"),
                        format!(
                            "cannot publish {}",
                            store.shown(&staged.loc.parts).display()
                        ),
                    ))
                } else {
                    store.publish(&staged.loc, &staged.pending)
                };
                if let Some(before) = before {
                    if !matches!(published, Ok((true, _))) {
                        commits.withdraw(&rel, &guard.syncing, before);
                    }
                }
                remove_temp(&mut staged.pending);
                let outcome = match published {
                    Ok((true, again)) => {
                        published_any = true;
                        if let Some(r) = staged.reservation.take() {
                            r.stored(&rel, staged.stored_bytes);
                        }
                        if full {
                            match again.map_or_else(|| staged.pending.object_dir.try_clone(), Ok) {
                                Ok(dir) => dirs.push(Arc::new(dir)),
                                // No descriptor to spare: synced here, on its own.
                                Err(_) => staged.pending.object_dir.sync(),
                            }
                        }
                        Ok(true)
                    }
                    Ok((false, _)) => Ok(false),
                    Err(e) => Err(e),
                };
                linked.push(Linked { reply, outcome });
                if panics {
                    panic!("injected panic in the link stage of {rel}");
                }
            }
            for (mut job, err) in failed {
                remove_temp(&mut job.staged.pending);
                linked.push(Linked {
                    reply: job.reply,
                    outcome: Err(err),
                });
            }
            if full && published_any {
                // Every directory noted as getting a new subdirectory (made, or being made: a
                // name of this batch may lie below one whose note is not marked made yet). An
                // entry stays until a batch that copied it as it is now has synced it.
                let new_dirs = commits.lock_new_dirs();
                for e in &new_dirs.entries {
                    guard.copied.push((e.key, e.made));
                    dirs.push(e.dir.clone());
                }
            }
            (linked, published_any, dedup(dirs), guard)
        })
        .await
    }

    /// `rel` was registered as published by `syncing` but was not: the registration is undone
    /// (the one it replaced put back if that batch's syncs are still running).
    fn withdraw(&self, rel: &str, syncing: &Arc<Syncing>, before: Option<Arc<Syncing>>) {
        let mut unsynced = self.lock_unsynced();
        if !unsynced.get(rel).is_some_and(|s| Arc::ptr_eq(s, syncing)) {
            return;
        }
        match before {
            Some(b) if !b.done.load(Ordering::SeqCst) => {
                unsynced.insert(rel.to_owned(), b);
            }
            _ => {
                unsynced.remove(rel);
            }
        }
    }

    fn take_fault(&self, name: &str, stage: CommitStage) -> bool {
        if !self.faulty.load(Ordering::Relaxed) {
            return false; // no fault was ever injected
        }
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        match faults.iter().position(|(n, s)| n == name && *s == stage) {
            Some(i) => {
                faults.remove(i);
                true
            }
            None => false,
        }
    }

    /// Test hook: the next commit of `hash` fails at `stage` (once).
    pub(super) fn fail(&self, hash: &str, stage: CommitStage) {
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        faults.push((hash.to_owned(), stage));
        self.faulty.store(true, Ordering::SeqCst);
    }

    /// Test hook: commits wait (uploads queue up) until released.
    pub(super) fn hold(&self, on: bool) {
        self.held.store(on, Ordering::SeqCst);
        if !on {
            self.released.notify_waiters();
        }
    }

    /// Test hook: directory syncs wait (their uploads unanswered) until released.
    pub(super) fn hold_dirs(&self, on: bool) {
        self.dirs_held.store(on, Ordering::SeqCst);
        if !on {
            self.released.notify_waiters();
        }
    }

    /// Test hook: uploads waiting for room in the queue.
    pub(super) fn room_waiters(&self) -> usize {
        self.room_waiters.load(Ordering::SeqCst)
    }

    /// Test hook: uploads waiting for a commit to start.
    pub(super) fn queued(&self) -> usize {
        self.lock().jobs.len()
    }

    /// Batches committed so far and the largest one.
    pub(super) fn batches(&self) -> (u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.largest.load(Ordering::Relaxed),
        )
    }

    /// Directories synced so far, and second writers that waited for a first writer's
    /// directory sync before their answer.
    pub(super) fn dir_counts(&self) -> (u64, u64) {
        (
            self.dir_syncs.load(Ordering::Relaxed),
            self.durability_waits.load(Ordering::Relaxed),
        )
    }

    async fn wait_while_held(&self) {
        self.wait_while(&self.held).await;
    }

    /// Test hook: batches whose directory syncs wait while they are held.
    pub(super) fn dir_sync_waiters(&self) -> usize {
        self.dir_sync_waiters.load(Ordering::SeqCst)
    }

    async fn wait_while_dirs_held(&self) {
        let _counted = Counted::new(&self.dir_sync_waiters);
        self.wait_while(&self.dirs_held).await;
    }

    async fn wait_while(&self, flag: &AtomicBool) {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if !flag.load(Ordering::SeqCst) {
                return;
            }
            released.await;
        }
    }
}

/// Counts its holder in a counter while it lives (a cancelled wait included).
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Counted(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Writes a staged upload's remaining bytes and fsyncs its file when `sync`.
fn finish_file(staged: &Staged, sync: bool, fault: bool) -> Result<(), StoreError> {
    let shown = &staged.pending.temp_shown;
    let failed =
        |e: io::Error, doing: &str| io_error(&e, format!("cannot {doing} {}", shown.display()));
    let mut file = &staged.file;
    for chunk in &staged.unwritten {
        file.write_all(chunk).map_err(|e| failed(e, "write"))?;
    }
    if fault {
        return Err(failed(io::Error::other("injected fsync fault"), "sync"));
    }
    if sync {
        file.sync_all().map_err(|e| failed(e, "sync"))?;
    }
    Ok(())
}

fn answer(linked: Vec<Linked>) {
    for l in linked {
        let _ = l.reply.send(l.outcome);
    }
}

/// The temp name is linked into place or garbage now (best effort: a later sweep removes it).
pub(super) fn remove_temp(pending: &mut Pending) {
    let _ = pending.temp_dir.remove_file(OsStr::new(&pending.temp_name));
    pending.removed = true;
}

/// Each directory once (by identity; one whose identity is unknown is kept).
fn dedup(dirs: Vec<Arc<Dir>>) -> Vec<Arc<Dir>> {
    let mut seen: Vec<(u64, u64)> = Vec::with_capacity(dirs.len());
    dirs.into_iter()
        .filter(|d| match d.identity().ok().flatten() {
            Some(id) if seen.contains(&id) => false,
            Some(id) => {
                seen.push(id);
                true
            }
            None => true,
        })
        .collect()
}

/// Stage 3: fsyncs the directories that got new names, all at once (best effort); returns how
/// many.
async fn sync_dirs(dirs: Vec<Arc<Dir>>) -> u64 {
    let count = dirs.len() as u64;
    let tasks: Vec<_> = dirs
        .into_iter()
        .map(|d| tokio::task::spawn_blocking(move || d.sync()))
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    count
}

type Finished = (Job, Result<(), StoreError>);

fn split(done: Vec<Finished>) -> (Vec<Job>, Vec<(Job, StoreError)>) {
    let mut ok = Vec::with_capacity(done.len());
    let mut failed = Vec::new();
    for (job, result) in done {
        match result {
            Ok(()) => ok.push(job),
            Err(e) => failed.push((job, e)),
        }
    }
    (ok, failed)
}

/// Marks the queue's commit as running until it ends. A commit that ends with an empty queue
/// disarms it under the same lock that clears the mark (a later upload may already have started
/// the next commit); dropped armed (a panic, a task dropped unpolled), it clears the mark and
/// drops what is queued, whose uploads get an error answer, and removes their temp names at once
/// (at a shutdown, a blocking task spawned now would never run).
struct Running {
    commits: Arc<Commits>,
    armed: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.armed {
            let jobs = {
                let mut queue = self.commits.lock();
                queue.running = false;
                std::mem::take(&mut queue.jobs)
            };
            for mut job in jobs {
                remove_temp(&mut job.staged.pending);
            }
        }
    }
}

/// Commits batches until the queue is empty.
async fn run(mut guard: Running) {
    let commits = guard.commits.clone();
    loop {
        commits.wait_while_held().await;
        let batch = {
            let mut queue = commits.lock();
            if queue.jobs.is_empty() {
                queue.running = false;
                guard.armed = false;
                return;
            }
            std::mem::take(&mut queue.jobs)
        };
        commits.batches.fetch_add(1, Ordering::Relaxed);
        commits
            .largest
            .fetch_max(batch.len() as u64, Ordering::Relaxed);
        commits.commit_batch(batch).await;
    }
}
