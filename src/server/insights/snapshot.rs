//! The dashboard's snapshot in the storage: its counts written every [`SNAPSHOT_INTERVAL`] (when
//! something changed) and at a graceful stop, read at start, so a restart keeps the last days.
//!
//! Two objects take turns, [`SNAPSHOT_KEYS`] (names Nx never uses: its hashes are decimal, and
//! the cache route refuses every key starting with [`RESERVED_PREFIX`]): a write replaces the
//! older one (delete, then a create-if-absent put), so a crash mid-write leaves the other intact.
//! At start the newer valid one is loaded; one that cannot be read or is not a snapshot of this
//! format is ignored with one log line. Stored through the storage itself (the envelope's SHA-256
//! is checked on read) but not through the artifact check: it is JSON, not an Nx artifact.

use super::ring::{Counts, FIELDS, FIELD_NAMES, RING_MINUTES};
use super::{lock, now_ms, Insights, Kind, ReadEntry};
use crate::key::TaskHash;
use crate::store::{ArtifactBody, BodyStream, Deleted, PutOutcome, Store};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The two objects the snapshot alternates between.
pub const SNAPSHOT_KEYS: [&str; 2] = ["nx-open-cache-ui-snapshot-a", "nx-open-cache-ui-snapshot-b"];
/// Keys starting with this are the server's own: the cache route answers them 400.
pub const RESERVED_PREFIX: &str = "nx-open-cache-ui-";
/// Whether `raw` names one of the server's own objects: [`RESERVED_PREFIX`] in any letter case
/// (storage on a case-insensitive filesystem, APFS or NTFS, would take a variant for the same file).
pub fn reserved(raw: &str) -> bool {
    raw.get(..RESERVED_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_PREFIX))
}

/// How often the snapshot is written (when something changed).
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(300);
/// Largest snapshot written and read back (the oldest hash -> task names are left out of a
/// larger one until it fits).
pub const MAX_SNAPSHOT_BYTES: usize = 32 * 1024 * 1024;
const FORMAT: &str = "nx-open-cache-ui-snapshot";

/// What the server knows about its snapshots.
#[derive(Debug, Default)]
pub struct Persisted {
    /// Sequence number of the last snapshot read or written (its slot is `seq % 2`).
    pub seq: u64,
    /// When the loaded snapshot was saved (ms since the epoch).
    pub loaded_ms: Option<u64>,
    /// When this server last saved one.
    pub saved_ms: Option<u64>,
    /// The last problem reading or writing it (shown on the dashboard).
    pub problem: Option<String>,
    /// [`Insights::generation`] at the last save.
    pub generation: Option<u64>,
}

type Named = Vec<(String, Vec<u64>)>;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Snapshot {
    format: String,
    version: u32,
    seq: u64,
    saved_at: u64,
    fields: Vec<String>,
    /// `[minute, counts...]` of every minute that counted something.
    minutes: Vec<Vec<u64>>,
    total: Vec<u64>,
    tokens: Named,
    namespaces: Named,
    unauthorized: u64,
    reasons: Vec<(Kind, String, u64)>,
    other_reasons: u64,
    largest: Vec<(u64, String, String)>,
    reads: Vec<(String, u64, u64, String)>,
    runs: super::runs::Runs,
}

fn counts(c: &Counts) -> Vec<u64> {
    c.to_vec()
}

/// The snapshot of `insights` as of `now` (ms), numbered `seq`, within `limit` bytes.
pub fn encode(insights: &Insights, now: u64, seq: u64, limit: usize) -> Result<Vec<u8>, String> {
    serialize(gather(insights, now, seq), limit)
}

/// The JSON of `snapshot`: when larger than `limit` bytes, the oldest hash -> task names are left
/// out (a tenth at a time) until it fits, then the recent runs; an error when even that is too large.
fn serialize(mut snapshot: Snapshot, limit: usize) -> Result<Vec<u8>, String> {
    for _ in 0..64 {
        let bytes = serde_json::to_vec(&snapshot).map_err(|e| format!("cannot encode it: {e}"))?;
        if bytes.len() <= limit {
            return Ok(bytes);
        }
        let names = &mut snapshot.runs.hash_tasks;
        if !names.is_empty() {
            let drop = (names.len() / 10).max(1);
            names.drain(..drop);
        } else if !snapshot.runs.recent.is_empty() {
            snapshot.runs.recent.clear();
        } else {
            return Err(format!(
                "{} bytes is larger than a snapshot can be ({limit})",
                bytes.len()
            ));
        }
    }
    Err(format!("it does not fit in {limit} bytes"))
}

/// What goes into the snapshot (copied under the locks; encoded later, off the runtime).
fn gather(insights: &Insights, now: u64, seq: u64) -> Snapshot {
    let minute = now / 60_000;
    let minutes = insights
        .ring
        .nonzero(minute)
        .into_iter()
        .map(|(m, c)| std::iter::once(m).chain(c).collect())
        .collect();
    let named = |list: &[super::Named], former: &std::sync::Mutex<Vec<(String, Counts)>>| {
        let mut out: Named = list
            .iter()
            .map(|n| (n.name.to_string(), counts(&n.counters.get())))
            .collect();
        out.extend(lock(former).iter().map(|(n, c)| (n.clone(), counts(c))));
        out
    };
    let (largest, reads) = {
        let a = lock(&insights.artifacts);
        (
            a.largest
                .iter()
                .map(|(b, h, ns)| (*b, h.to_string(), ns.to_string()))
                .collect(),
            a.reads
                .iter()
                .map(|(h, e)| (h.to_string(), e.reads, e.bytes, e.ns.to_string()))
                .collect(),
        )
    };
    // Labels and counts only: the sample texts (client-controlled) are not persisted.
    let (reasons, other_reasons) = {
        let r = lock(&insights.reasons);
        (
            r.rows()
                .map(|(k, label, e)| (k, label.to_owned(), e.count))
                .collect(),
            r.other
                .saturating_add(insights.reasons_missed.load(Ordering::Relaxed)),
        )
    };
    Snapshot {
        format: FORMAT.to_owned(),
        version: 1,
        seq,
        saved_at: now,
        fields: FIELD_NAMES.iter().map(|f| (*f).to_owned()).collect(),
        minutes,
        total: counts(&insights.total.get()),
        tokens: named(&insights.tokens, &insights.former_tokens),
        namespaces: named(&insights.namespaces, &insights.former_namespaces),
        unauthorized: insights.unauthorized.load(Ordering::Relaxed),
        reasons,
        other_reasons,
        largest,
        reads,
        runs: lock(&insights.runs).clone(),
    }
}

/// Reads the counts of a snapshot; `now` (ms) decides which minutes are still within reach.
struct Decoded {
    snapshot: Snapshot,
    /// Position of each of our fields in the snapshot's counts.
    map: [Option<usize>; FIELDS],
}

impl Decoded {
    fn counts(&self, v: &[u64]) -> Counts {
        std::array::from_fn(|i| self.map[i].and_then(|j| v.get(j).copied()).unwrap_or(0))
    }
}

fn decode(bytes: &[u8]) -> Result<Decoded, String> {
    let snapshot: Snapshot = serde_json::from_slice(bytes)
        .map_err(|e| format!("not a dashboard snapshot of this version ({e})"))?;
    if snapshot.format != FORMAT || snapshot.version != 1 {
        return Err(format!(
            "format {:?} version {} is not {FORMAT:?} version 1",
            snapshot.format.chars().take(64).collect::<String>(),
            snapshot.version
        ));
    }
    if snapshot.minutes.len() as u64 > RING_MINUTES * 2 {
        return Err(format!(
            "{} minutes is more than the ring holds",
            snapshot.minutes.len()
        ));
    }
    let map = std::array::from_fn(|i| snapshot.fields.iter().position(|f| f == FIELD_NAMES[i]));
    Ok(Decoded { snapshot, map })
}

/// Loads a snapshot into `insights` (before it serves); returns the snapshot's sequence number.
pub fn restore(insights: &Insights, bytes: &[u8], now: u64) -> Result<u64, String> {
    let d = decode(bytes)?;
    let s = &d.snapshot;
    let minute = now / 60_000;
    for m in &s.minutes {
        if let Some((first, rest)) = m.split_first() {
            insights.ring.load(minute, *first, &d.counts(rest));
        }
    }
    insights.total.load(&d.counts(&s.total));
    let place =
        |list: &[super::Named], former: &std::sync::Mutex<Vec<(String, Counts)>>, from: &Named| {
            let mut former = lock(former);
            for (name, v) in from {
                let c = d.counts(v);
                match list.iter().find(|n| *n.name == **name) {
                    Some(n) => n.counters.load(&c),
                    None if former.len() < super::MAX_FORMER
                        && name.len() <= 128
                        && c.iter().any(|x| *x > 0) =>
                    {
                        former.push((name.clone(), c))
                    }
                    None => {}
                }
            }
        };
    place(&insights.tokens, &insights.former_tokens, &s.tokens);
    place(
        &insights.namespaces,
        &insights.former_namespaces,
        &s.namespaces,
    );
    super::ring::add_saturating(&insights.unauthorized, s.unauthorized);
    {
        let mut r = lock(&insights.reasons);
        for (k, reason, n) in s.reasons.iter().take(super::MAX_REASONS) {
            r.add(*k, reason, *n);
        }
        r.other = r.other.saturating_add(s.other_reasons);
    }
    {
        let mut a = lock(&insights.artifacts);
        let ns = |n: &str| -> Arc<str> { n.chars().take(128).collect::<String>().into() };
        for (b, h, n) in s.largest.iter().take(super::LARGEST) {
            if TaskHash::parse(h).is_ok() {
                let floor = a.sized(h, *b, &ns(n));
                insights.largest_floor.store(floor, Ordering::Relaxed);
            }
        }
        for (h, reads, bytes, n) in s.reads.iter().take(super::READ_SLOTS) {
            if TaskHash::parse(h).is_ok() {
                a.reads.insert(
                    h.as_str().into(),
                    ReadEntry {
                        reads: *reads,
                        bytes: *bytes,
                        ns: ns(n),
                    },
                );
            }
        }
    }
    *lock(&insights.runs) = s.runs.clone().restored();
    let mut p = lock(&insights.persisted);
    p.seq = s.seq;
    p.loaded_ms = Some(s.saved_at);
    Ok(s.seq)
}

fn key(i: usize) -> Result<TaskHash, String> {
    TaskHash::parse(SNAPSHOT_KEYS[i % 2]).map_err(|e| e.to_string())
}

/// The bytes of slot `i`, `None` when there is none.
async fn read_slot(store: &dyn Store, i: usize) -> Result<Option<Vec<u8>>, String> {
    let k = key(i)?;
    let found = store.get(&k).await.map_err(|e| e.message)?;
    let Some(artifact) = found else {
        return Ok(None);
    };
    if artifact.len > MAX_SNAPSHOT_BYTES as u64 {
        return Err(format!(
            "{} bytes is larger than a snapshot can be",
            artifact.len
        ));
    }
    match artifact.body {
        ArtifactBody::Memory(b) => Ok(Some(b.to_vec())),
        ArtifactBody::File { mut file, offset } => {
            let len = artifact.len;
            tokio::task::spawn_blocking(move || {
                let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
                file.seek(SeekFrom::Start(offset))
                    .and_then(|_| file.take(len).read_to_end(&mut out))
                    .map_err(|e| format!("cannot read it: {e}"))?;
                Ok(Some(out))
            })
            .await
            .map_err(|e| format!("cannot read it: {e}"))?
        }
    }
}

/// Loads the newer valid snapshot of `store` into `insights`. Returns a line for the log when
/// one was there but could not be used (corrupt, foreign, unreadable).
pub async fn load(store: &dyn Store, insights: &Insights) -> Option<String> {
    let now = now_ms();
    // The most recently saved one (by savedAt, not seq: with several servers on one storage,
    // each numbers its own snapshots).
    let mut best: Option<(u64, Vec<u8>)> = None;
    let mut problems = Vec::new();
    for (i, name) in SNAPSHOT_KEYS.iter().enumerate() {
        match read_slot(store, i).await {
            Ok(Some(bytes)) => match decode(&bytes) {
                Ok(d) if best.as_ref().is_none_or(|(s, _)| d.snapshot.saved_at > *s) => {
                    best = Some((d.snapshot.saved_at, bytes))
                }
                Ok(_) => {}
                Err(e) => problems.push(format!("{name}: {e}")),
            },
            Ok(None) => {}
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    if let Some((_, bytes)) = best {
        if let Err(e) = restore(insights, &bytes, now) {
            problems.push(e);
        }
    }
    if problems.is_empty() {
        return None;
    }
    let line = format!(
        "dashboard snapshot ignored ({}); the dashboard starts from the counts it could read",
        problems.join("; ")
    );
    lock(&insights.persisted).problem = Some(line.clone());
    Some(line)
}

/// Writes the snapshot into the slot after the last one. `force`: even when nothing changed.
pub async fn save(store: &dyn Store, insights: &Insights, force: bool) -> Result<bool, String> {
    let generation = insights.generation();
    let seq = {
        let p = lock(&insights.persisted);
        if !force && p.generation == Some(generation) {
            return Ok(false);
        }
        p.seq + 1
    };
    let now = now_ms();
    let snapshot = gather(insights, now, seq);
    let bytes = tokio::task::spawn_blocking(move || serialize(snapshot, MAX_SNAPSHOT_BYTES))
        .await
        .map_err(|e| format!("cannot encode it: {e}"))??;
    let k = key(seq as usize % 2)?;
    let result = async {
        match store.delete(&k).await {
            Ok(Deleted::Removed | Deleted::Absent | Deleted::Unsupported) => {}
            Err(e) => return Err(format!("cannot replace {k}: {}", e.message)),
        }
        let len = bytes.len() as u64;
        let mut body: BodyStream<'_> =
            futures_util::stream::once(async move { Ok(bytes::Bytes::from(bytes)) }).boxed();
        match store.put(&k, &mut body, Some(len)).await {
            Ok(PutOutcome::Stored(_)) => Ok(()),
            Ok(PutOutcome::AlreadyExists) => Err(format!(
                "cannot replace {k}: the storage kept the older object (it cannot delete)"
            )),
            Err(e) => Err(format!("cannot write {k}: {}", e.message)),
        }
    }
    .await;
    let mut p = lock(&insights.persisted);
    match result {
        Ok(()) => {
            p.seq = seq;
            p.saved_ms = Some(now);
            p.generation = Some(generation);
            p.problem = None;
            Ok(true)
        }
        Err(e) => {
            let first = p.problem.as_deref() != Some(e.as_str());
            p.problem = Some(e.clone());
            if first {
                Err(e)
            } else {
                Ok(false)
            }
        }
    }
}

/// The background writer: every [`SNAPSHOT_INTERVAL`] a save when something changed, and one at
/// [`Writer::stop`].
pub struct Writer {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    store: Arc<dyn Store>,
    insights: Arc<Insights>,
    log: crate::server::LogFormat,
}

impl Writer {
    /// Starts the writer on the current runtime.
    pub fn spawn(
        store: Arc<dyn Store>,
        insights: Arc<Insights>,
        interval: Duration,
        log: crate::server::LogFormat,
    ) -> Writer {
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let (s, i) = (store.clone(), insights.clone());
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = rx.changed() => return,
                }
                if let Err(e) = save(s.as_ref(), &i, false).await {
                    crate::server::log::warn(log, &format!("dashboard snapshot: {e}"));
                }
            }
        });
        Writer {
            stop: tx,
            task,
            store,
            insights,
            log,
        }
    }

    /// Stops the timer and writes a last snapshot (bounded to 10 s).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let saved = tokio::time::timeout(
            Duration::from_secs(10),
            save(self.store.as_ref(), &self.insights, false),
        )
        .await;
        match saved {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => crate::server::log::warn(self.log, &format!("dashboard snapshot: {e}")),
            Err(_) => crate::server::log::warn(
                self.log,
                "dashboard snapshot: not written at stop: the storage did not answer within 10 s",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Range, StorageInfo};
    use super::*;
    use crate::key::Prefix;
    use crate::server::auth::{Auth, Role, TokenSpec};
    use crate::store::fs::FsStore;

    fn auth(names: &[&str]) -> Auth {
        Auth {
            tokens: names
                .iter()
                .map(|n| TokenSpec::new(*n, Role::ReadWrite, format!("{n}-secret-0123456789")))
                .collect(),
            anonymous_read: None,
            oidc: None,
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_snapshot_round_trips_through_the_storage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = FsStore::new(dir.path().join("s"), Prefix::default());
        fs.prepare().expect("store root");
        let store: Arc<dyn Store> = Arc::new(fs);
        let a = auth(&["ci", "gone"]);
        let before = Insights::new(&a, StorageInfo::default());
        let ci = before.slot(&a, Some(0));
        let gone = before.slot(&a, Some(1));
        before.stored(Some(&ci), "123", 4096);
        before.hit(Some(&ci), 0, "123", 4096);
        before.miss(Some(&gone));
        before.refused(Some(&ci), Kind::Refused, "not a valid Nx artifact: gzip");
        let report = super::super::runs::parse(
            br#"{"format":"nx-open-cache-run-report","version":1,"runId":"r1","tasks":[{"id":"a:build","hash":"123","outcome":"remote-hit","durationMs":3,"savedMs":500}]}"#,
        )
        .expect("report");
        assert!(before.run_report(&report, "ci"));
        let rt = runtime();
        // Three saves: both slots used, the newest wins.
        for _ in 0..3 {
            before.hit(Some(&ci), 0, "123", 4096);
            assert_eq!(rt.block_on(save(store.as_ref(), &before, false)), Ok(true));
        }
        assert_eq!(
            rt.block_on(save(store.as_ref(), &before, false)),
            Ok(false),
            "unchanged"
        );
        let want = before.summary(Range::Week);

        // A server with one token renamed: its counts are kept as a former token.
        let b = auth(&["ci"]);
        let after = Insights::new(&b, StorageInfo::default());
        assert_eq!(rt.block_on(load(store.as_ref(), &after)), None);
        let got = after.summary(Range::Week);
        for k in ["totals", "series", "artifacts", "reasons", "tasks"] {
            assert_eq!(got[k], want[k], "{k}");
        }
        assert_eq!(got["runs"]["savedMs"], 500);
        let tokens = got["tokens"].as_array().cloned().unwrap_or_default();
        assert!(tokens
            .iter()
            .any(|t| t["name"] == "gone" && t["current"] == false && t["misses"] == 1));
        assert_eq!(got["totals"]["counts"]["hits"], 4);
        assert_eq!(lock(&after.persisted).seq, 3);
    }

    #[test]
    fn a_corrupt_snapshot_is_ignored_with_one_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = FsStore::new(dir.path().join("s"), Prefix::default());
        fs.prepare().expect("store root");
        let store: Arc<dyn Store> = Arc::new(fs);
        let rt = runtime();
        let a = auth(&["ci"]);
        for (i, body) in [&b"{not json"[..], br#"{"format":"other","version":1}"#]
            .iter()
            .enumerate()
        {
            let k = key(i).expect("key");
            let mut s: BodyStream<'_> =
                futures_util::stream::once(async move { Ok(bytes::Bytes::from_static(body)) })
                    .boxed();
            let put = rt.block_on(store.put(&k, &mut s, Some(body.len() as u64)));
            assert!(matches!(put, Ok(PutOutcome::Stored(_))));
        }
        let insights = Insights::new(&a, StorageInfo::default());
        let line = rt
            .block_on(load(store.as_ref(), &insights))
            .unwrap_or_default();
        assert!(
            line.starts_with("dashboard snapshot ignored (")
                && line.contains(SNAPSHOT_KEYS[0])
                && line.contains(SNAPSHOT_KEYS[1])
                && !line.contains('\n'),
            "{line}"
        );
        assert_eq!(insights.summary(Range::Hour)["totals"]["counts"]["hits"], 0);
        // The next save replaces one of them, and a later start loads it.
        let ci = insights.slot(&a, Some(0));
        insights.hit(Some(&ci), 0, "1", 1);
        assert_eq!(
            rt.block_on(save(store.as_ref(), &insights, false)),
            Ok(true)
        );
        let again = Insights::new(&a, StorageInfo::default());
        let line = rt
            .block_on(load(store.as_ref(), &again))
            .unwrap_or_default();
        assert!(
            line.contains(SNAPSHOT_KEYS[0]) && !line.contains(SNAPSHOT_KEYS[1]),
            "{line}"
        );
        assert_eq!(again.summary(Range::Hour)["totals"]["counts"]["hits"], 1);
    }

    fn put(rt: &tokio::runtime::Runtime, store: &dyn Store, slot: usize, body: Vec<u8>) {
        let k = key(slot).expect("key");
        let len = body.len() as u64;
        let mut s: BodyStream<'_> =
            futures_util::stream::once(async move { Ok(bytes::Bytes::from(body)) }).boxed();
        let _ = rt.block_on(store.delete(&k));
        let put = rt.block_on(store.put(&k, &mut s, Some(len)));
        assert!(matches!(put, Ok(PutOutcome::Stored(_))));
    }

    #[test]
    fn the_most_recently_saved_snapshot_is_loaded_whatever_its_seq() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = FsStore::new(dir.path().join("s"), Prefix::default());
        fs.prepare().expect("store root");
        let store: Arc<dyn Store> = Arc::new(fs);
        let rt = runtime();
        let a = auth(&["ci"]);
        let (old, new) = (
            Insights::new(&a, StorageInfo::default()),
            Insights::new(&a, StorageInfo::default()),
        );
        let ci = new.slot(&a, Some(0));
        new.hit(Some(&ci), 0, "1", 1);
        let now = now_ms();
        // Another server's snapshot with a higher seq but saved earlier, and this one's.
        put(
            &rt,
            store.as_ref(),
            0,
            encode(&old, now - 60_000, 40, MAX_SNAPSHOT_BYTES).expect("old"),
        );
        put(
            &rt,
            store.as_ref(),
            1,
            encode(&new, now, 3, MAX_SNAPSHOT_BYTES).expect("new"),
        );
        let loaded = Insights::new(&a, StorageInfo::default());
        assert_eq!(rt.block_on(load(store.as_ref(), &loaded)), None);
        assert_eq!(loaded.summary(Range::Hour)["totals"]["counts"]["hits"], 1);
        assert_eq!(lock(&loaded.persisted).loaded_ms, Some(now));
    }

    #[test]
    fn a_snapshot_over_the_limit_leaves_out_the_oldest_names() {
        let a = auth(&["ci"]);
        let insights = Insights::new(&a, StorageInfo::default());
        let tasks: Vec<String> = (0..3000)
            .map(|n| format!(r#"{{"id":"p{n}:build","hash":"{n}","outcome":"stored"}}"#))
            .collect();
        let body = format!(
            r#"{{"format":"nx-open-cache-run-report","version":1,"runId":"r","tasks":[{}]}}"#,
            tasks.join(",")
        );
        let report = super::super::runs::parse(body.as_bytes()).expect("report");
        assert!(insights.run_report(&report, "ci"));
        let full = encode(&insights, 1, 1, MAX_SNAPSHOT_BYTES).expect("fits");
        let limit = full.len() - 1000;
        let cut = encode(&insights, 1, 1, limit).expect("cut to fit");
        assert!(cut.len() <= limit && cut.len() > limit / 2, "{}", cut.len());
        let back = Insights::new(&a, StorageInfo::default());
        restore(&back, &cut, 1).expect("restore");
        let runs = lock(&back.runs);
        assert_eq!(runs.task_of("2999"), Some("p2999:build"), "the newest kept");
        assert_eq!(runs.task_of("0"), None, "the oldest left out");
        drop(runs);
        assert!(
            encode(&insights, 1, 1, 100).is_err(),
            "too small for anything"
        );
    }
}
