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
/// How often the snapshot is written (when something changed).
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(300);
/// Largest snapshot read back.
const MAX_SNAPSHOT_BYTES: u64 = 32 * 1024 * 1024;
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

/// The snapshot of `insights` as of `now` (ms), numbered `seq`.
pub fn encode(insights: &Insights, now: u64, seq: u64) -> Vec<u8> {
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
    let (reasons, other_reasons) = {
        let r = lock(&insights.reasons);
        (
            r.counts
                .iter()
                .map(|((k, reason), n)| (*k, reason.clone(), *n))
                .collect(),
            r.other,
        )
    };
    let snapshot = Snapshot {
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
    };
    serde_json::to_vec(&snapshot).unwrap_or_default()
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
    insights
        .unauthorized
        .fetch_add(s.unauthorized, Ordering::Relaxed);
    {
        let mut r = lock(&insights.reasons);
        for (k, reason, n) in s.reasons.iter().take(super::MAX_REASONS) {
            r.add(*k, reason, *n);
        }
        r.other += s.other_reasons;
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
    if artifact.len > MAX_SNAPSHOT_BYTES {
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
    let mut best: Option<(u64, Vec<u8>)> = None;
    let mut problems = Vec::new();
    for (i, name) in SNAPSHOT_KEYS.iter().enumerate() {
        match read_slot(store, i).await {
            Ok(Some(bytes)) => match decode(&bytes) {
                Ok(d) if best.as_ref().is_none_or(|(s, _)| d.snapshot.seq > *s) => {
                    best = Some((d.snapshot.seq, bytes))
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
    let bytes = encode(insights, now, seq);
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
}
