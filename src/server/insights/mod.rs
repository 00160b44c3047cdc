//! What the dashboard (`/ui`) shows, recorded as requests are answered: counts per minute over
//! the last days ([`ring`]), per token and per namespace, the largest and most-read artifacts,
//! refusals and errors by reason, and what run reports say per task ([`runs`]). Persisted as a
//! snapshot object in the storage ([`snapshot`]) so a restart keeps the last days.
//!
//! Cost on the request path: a cache request adds a few relaxed atomic increments (its minute,
//! its token, its namespace, the totals); a hit or a stored upload also tries a short mutex for
//! the most-read / largest lists, and skips it when another thread holds it (those lists are
//! approximate by design). Every map is bounded: tokens and namespaces are those configured,
//! artifacts [`READ_SLOTS`] / [`LARGEST`], reasons [`MAX_REASONS`], tasks and runs in [`runs`].

pub mod ring;
pub mod runs;
pub mod snapshot;

use crate::key::Prefix;
use crate::server::auth::Auth;
use crate::store::fs::Budget;
use ring::{Counts, Field, Ring, FIELDS, FIELD_NAMES};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// Artifacts whose reads are counted (Space-Saving: the least read one gives its slot).
pub const READ_SLOTS: usize = 512;
/// Largest artifacts kept.
pub const LARGEST: usize = 20;
/// Most-read artifacts shown.
pub const MOST_READ: usize = 20;
/// Distinct (kind, label) rows kept (Space-Saving: the least-counted one gives its place).
pub const MAX_REASONS: usize = 100;
/// Longest reason kept, in characters.
const MAX_REASON_CHARS: usize = 300;
/// Former token / namespace names kept from a snapshot.
const MAX_FORMER: usize = 64;
/// Tasks shown in the summary.
pub const TASKS_SHOWN: usize = 100;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis().try_into().unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counters of one token, namespace or of everything.
#[derive(Default)]
pub struct Counters([AtomicU64; FIELDS]);

impl Counters {
    fn add(&self, f: Field, n: u64) {
        ring::add_saturating(&self.0[f as usize], n);
    }
    fn get(&self) -> Counts {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
    fn load(&self, c: &Counts) {
        for (a, n) in self.0.iter().zip(c) {
            ring::add_saturating(a, *n);
        }
    }
}

/// A token or a namespace with its counters.
pub struct Named {
    pub name: Arc<str>,
    /// Tokens: the role; namespaces: none.
    pub role: Option<&'static str>,
    counters: Counters,
}

/// Where one request's counts go besides the totals: its token and namespaces (indexes into
/// [`Insights`]'s lists), resolved once at start.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub token: usize,
    pub write_ns: usize,
    pub read_ns: Vec<usize>,
}

/// The storage as the dashboard shows it: where, and the size it is held to.
#[derive(Clone, Default)]
pub struct StorageInfo {
    pub location: String,
    /// The fs size budget (`--max-size`): its limit and what it counts as used.
    pub budget: Option<Arc<Budget>>,
    pub max_age: Option<Duration>,
}

/// What kind of refusal or error a reason is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// An object or upload refused by the artifact check (or a seal).
    Refused,
    /// A storage fault.
    Error,
    /// An upload refused by a limit (size, time, slots, Content-Length).
    Limit,
    /// A token that may not do it (read-only PUT, admin on the cache route).
    Denied,
}

#[derive(Debug, Clone)]
struct ReadEntry {
    reads: u64,
    bytes: u64,
    ns: Arc<str>,
}

/// The most-read (Space-Saving over [`READ_SLOTS`]) and the largest artifacts.
#[derive(Default)]
struct Artifacts {
    reads: HashMap<Box<str>, ReadEntry>,
    /// (bytes, hash, namespace), largest first, at most [`LARGEST`].
    largest: Vec<(u64, Box<str>, Arc<str>)>,
}

impl Artifacts {
    fn read(&mut self, hash: &str, bytes: u64, ns: &Arc<str>) {
        if let Some(e) = self.reads.get_mut(hash) {
            e.reads = e.reads.saturating_add(1);
            e.bytes = bytes;
            return;
        }
        let mut floor = 0;
        if self.reads.len() >= READ_SLOTS {
            let Some((victim, min)) = self
                .reads
                .iter()
                .min_by_key(|(_, e)| e.reads)
                .map(|(k, e)| (k.clone(), e.reads))
            else {
                return;
            };
            self.reads.remove(&victim);
            floor = min;
        }
        self.reads.insert(
            hash.into(),
            ReadEntry {
                reads: floor.saturating_add(1),
                bytes,
                ns: ns.clone(),
            },
        );
    }

    /// Returns the new smallest size that can enter the list (0 while it is not full).
    fn sized(&mut self, hash: &str, bytes: u64, ns: &Arc<str>) -> u64 {
        if let Some(at) = self.largest.iter().position(|(_, h, _)| &**h == hash) {
            self.largest.remove(at);
        }
        let at = self.largest.partition_point(|(b, _, _)| *b >= bytes);
        if at < LARGEST {
            self.largest.insert(at, (bytes, hash.into(), ns.clone()));
            self.largest.truncate(LARGEST);
        }
        if self.largest.len() >= LARGEST {
            self.largest.last().map(|(b, _, _)| *b).unwrap_or(0)
        } else {
            0
        }
    }
}

/// One row of the reasons table: its count and the most recent full text (not persisted).
#[derive(Default)]
struct ReasonEntry {
    count: u64,
    sample: String,
}

/// Refusals and errors by (kind, label). The label is the server-worded form of a reason:
/// numbers become `N`, a `"quoted"` value (a token or namespace name, written with `{:?}`) becomes
/// `"…"`, and it ends at the first backtick, where a name taken from an archive (client-controlled)
/// begins. Space-Saving: when [`MAX_REASONS`] labels are kept, a new one takes the place of the
/// least-counted one (and starts from its count).
#[derive(Default)]
struct Reasons {
    by_kind: HashMap<Kind, HashMap<String, ReasonEntry>>,
    other: u64,
}

/// The fixed label of `reason` (see [`Reasons`]).
fn reason_label(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len().min(MAX_REASON_CHARS));
    let mut chars = reason.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' => break,
            '"' => {
                out.push_str("\"…\"");
                while let Some(q) = chars.next() {
                    match q {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            c if c.is_ascii_digit() => {
                out.push('N');
                while chars.next_if(char::is_ascii_digit).is_some() {}
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
        if out.chars().count() >= MAX_REASON_CHARS {
            break;
        }
    }
    let label = out.trim_end_matches([' ', ':', ',', '(', '[', '=']);
    if label.is_empty() {
        "(no reason given)".to_owned()
    } else {
        label.to_owned()
    }
}

impl Reasons {
    fn len(&self) -> usize {
        self.by_kind.values().map(HashMap::len).sum()
    }

    fn add(&mut self, kind: Kind, reason: &str, n: u64) {
        let label = reason_label(reason);
        let sample = |e: &mut ReasonEntry| {
            e.sample.clear();
            e.sample.extend(reason.chars().take(MAX_REASON_CHARS));
        };
        if let Some(e) = self
            .by_kind
            .get_mut(&kind)
            .and_then(|m| m.get_mut(label.as_str()))
        {
            e.count = e.count.saturating_add(n);
            sample(e);
            return;
        }
        let mut floor = 0;
        if self.len() >= MAX_REASONS {
            let victim = self
                .by_kind
                .iter()
                .flat_map(|(k, m)| m.iter().map(move |(l, e)| (e.count, *k, l)))
                .min_by_key(|(c, _, _)| *c)
                .map(|(c, k, l)| (c, k, l.clone()));
            let Some((count, k, l)) = victim else {
                self.other = self.other.saturating_add(n);
                return;
            };
            if let Some(m) = self.by_kind.get_mut(&k) {
                m.remove(&l);
            }
            floor = count;
        }
        let mut e = ReasonEntry {
            count: floor.saturating_add(n),
            sample: String::new(),
        };
        sample(&mut e);
        self.by_kind.entry(kind).or_default().insert(label, e);
    }

    /// (kind, label, count) of every row.
    fn rows(&self) -> impl Iterator<Item = (Kind, &str, &ReasonEntry)> {
        self.by_kind
            .iter()
            .flat_map(|(k, m)| m.iter().map(move |(l, e)| (*k, l.as_str(), e)))
    }
}

/// `m` locked unless another thread holds it (a poisoned lock is taken as it is).
fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Some(g),
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// The dashboard's data. One per server; shared with the snapshot writer.
pub struct Insights {
    started_ms: u64,
    ring: Ring,
    total: Counters,
    tokens: Vec<Named>,
    namespaces: Vec<Named>,
    /// Counts of tokens / namespaces a snapshot had that are no longer configured.
    former_tokens: Mutex<Vec<(String, Counts)>>,
    former_namespaces: Mutex<Vec<(String, Counts)>>,
    /// Requests refused for a missing or unknown token (401).
    unauthorized: AtomicU64,
    artifacts: Mutex<Artifacts>,
    /// The smallest size that enters the largest list (skips the lock below it).
    largest_floor: AtomicU64,
    reasons: Mutex<Reasons>,
    /// Reasons not put in the table because it was busy (shown as "other reasons").
    reasons_missed: AtomicU64,
    runs: Mutex<runs::Runs>,
    storage: StorageInfo,
    /// Snapshot bookkeeping.
    pub(crate) persisted: Mutex<snapshot::Persisted>,
}

/// The name a namespace is shown by.
fn ns_name(p: &Prefix) -> String {
    if p.is_empty() {
        "(root)".to_owned()
    } else {
        p.as_str().to_owned()
    }
}

impl Insights {
    /// The insights of a server with these access rules and storage.
    pub fn new(auth: &Auth, storage: StorageInfo) -> Insights {
        let principals = auth.principals();
        let mut tokens: Vec<Named> = principals
            .iter()
            .map(|t| Named {
                name: t.name.into(),
                role: Some(t.role.as_str()),
                counters: Counters::default(),
            })
            .collect();
        tokens.push(Named {
            name: "(anonymous)".into(),
            role: None,
            counters: Counters::default(),
        });
        let mut names: Vec<String> = Vec::new();
        let mut push = |p: &Prefix| {
            let n = ns_name(p);
            if !names.contains(&n) {
                names.push(n);
            }
        };
        for t in &principals {
            push(t.write_prefix);
            t.read_prefixes.iter().for_each(&mut push);
        }
        match &auth.anonymous_read {
            Some(p) if p.is_empty() => push(&Prefix::default()),
            Some(p) => p.iter().for_each(&mut push),
            None => {}
        }
        if names.is_empty() {
            names.push(ns_name(&Prefix::default()));
        }
        let namespaces = names
            .into_iter()
            .map(|n| Named {
                name: n.into(),
                role: None,
                counters: Counters::default(),
            })
            .collect();
        Insights {
            started_ms: now_ms(),
            ring: Ring::new(),
            total: Counters::default(),
            tokens,
            namespaces,
            former_tokens: Mutex::new(Vec::new()),
            former_namespaces: Mutex::new(Vec::new()),
            unauthorized: AtomicU64::new(0),
            artifacts: Mutex::new(Artifacts::default()),
            largest_floor: AtomicU64::new(0),
            reasons: Mutex::new(Reasons::default()),
            reasons_missed: AtomicU64::new(0),
            runs: Mutex::new(runs::Runs::default()),
            storage,
            persisted: Mutex::new(snapshot::Persisted::default()),
        }
    }

    /// The slot of the principal at `index` of `auth.principals()` (a token or an OIDC rule),
    /// or of anonymous reads (`None`).
    pub fn slot(&self, auth: &Auth, index: Option<usize>) -> Tally {
        let find = |p: &Prefix| {
            let n = ns_name(p);
            self.namespaces
                .iter()
                .position(|x| *x.name == *n)
                .unwrap_or(0)
        };
        let principals = auth.principals();
        match index.and_then(|i| principals.get(i).map(|t| (i, t))) {
            Some((i, t)) => Tally {
                token: i,
                write_ns: find(t.write_prefix),
                read_ns: if t.read_prefixes.is_empty() {
                    vec![find(t.write_prefix)]
                } else {
                    t.read_prefixes.iter().map(find).collect()
                },
            },
            None => {
                let read_ns = match &auth.anonymous_read {
                    Some(p) if !p.is_empty() => p.iter().map(find).collect(),
                    _ => vec![find(&Prefix::default())],
                };
                Tally {
                    token: self.tokens.len() - 1,
                    write_ns: read_ns.first().copied().unwrap_or(0),
                    read_ns,
                }
            }
        }
    }

    fn minute() -> u64 {
        now_ms() / 60_000
    }

    /// Adds `n` to `field` of the totals, this minute, the token and the namespace.
    fn count(&self, slot: Option<&Tally>, ns: Option<usize>, field: Field, n: u64) {
        self.count_at(Self::minute(), slot, ns, field, n)
    }

    fn count_at(&self, minute: u64, slot: Option<&Tally>, ns: Option<usize>, field: Field, n: u64) {
        self.total.add(field, n);
        self.ring.add(minute, field, n);
        if let Some(s) = slot {
            if let Some(t) = self.tokens.get(s.token) {
                t.counters.add(field, n);
            }
        }
        if let Some(ns) = ns.and_then(|i| self.namespaces.get(i)) {
            ns.counters.add(field, n);
        }
    }

    /// A GET served `hash` (`bytes`) from the `store`-th read namespace of `slot`.
    pub fn hit(&self, slot: Option<&Tally>, store: usize, hash: &str, bytes: u64) {
        let ns = slot.and_then(|s| s.read_ns.get(store).copied());
        let minute = Self::minute();
        self.count_at(minute, slot, ns, Field::Hits, 1);
        self.count_at(minute, slot, ns, Field::BytesSent, bytes);
        if let Some(mut a) = try_lock(&self.artifacts) {
            let name = self.ns_arc(ns);
            a.read(hash, bytes, &name);
            if bytes > self.largest_floor.load(Ordering::Relaxed) {
                let floor = a.sized(hash, bytes, &name);
                self.largest_floor.store(floor, Ordering::Relaxed);
            }
        }
    }

    /// A GET found nothing.
    pub fn miss(&self, slot: Option<&Tally>) {
        let ns = slot.and_then(|s| s.read_ns.first().copied());
        self.count(slot, ns, Field::Misses, 1);
    }

    /// A PUT stored `hash` (`bytes`).
    pub fn stored(&self, slot: Option<&Tally>, hash: &str, bytes: u64) {
        let ns = slot.map(|s| s.write_ns);
        let minute = Self::minute();
        self.count_at(minute, slot, ns, Field::Stored, 1);
        self.count_at(minute, slot, ns, Field::BytesReceived, bytes);
        if bytes > self.largest_floor.load(Ordering::Relaxed) {
            if let Some(mut a) = try_lock(&self.artifacts) {
                let floor = a.sized(hash, bytes, &self.ns_arc(ns));
                self.largest_floor.store(floor, Ordering::Relaxed);
            }
        }
    }

    /// A PUT of a hash already stored.
    pub fn already_stored(&self, slot: Option<&Tally>) {
        self.count(slot, slot.map(|s| s.write_ns), Field::AlreadyStored, 1);
    }

    /// Something refused (`kind`), with its reason (no hash in it).
    pub fn refused(&self, slot: Option<&Tally>, kind: Kind, reason: &str) {
        let field = if kind == Kind::Error {
            Field::Errors
        } else {
            Field::Refused
        };
        self.count(slot, None, field, 1);
        // Never waits on the data path: when the table is busy, counted under "other reasons".
        match try_lock(&self.reasons) {
            Some(mut r) => r.add(kind, reason, 1),
            None => {
                ring::add_saturating(&self.reasons_missed, 1);
            }
        }
    }

    /// A request without a valid token (401).
    pub fn unauthorized(&self) {
        ring::add_saturating(&self.unauthorized, 1);
        self.ring.add(Self::minute(), Field::Refused, 1);
        self.total.add(Field::Refused, 1);
    }

    fn ns_arc(&self, ns: Option<usize>) -> Arc<str> {
        ns.and_then(|i| self.namespaces.get(i))
            .map(|n| n.name.clone())
            .unwrap_or_else(|| "(root)".into())
    }

    /// A checked run report from the token named `token`: false when its run id was seen.
    pub fn run_report(&self, report: &runs::Report, token: &str) -> bool {
        let now = now_ms();
        let added = lock(&self.runs).add(report, token, now);
        if added {
            let saved: u64 = report
                .tasks
                .iter()
                .filter(|t| matches!(t.outcome, "remote-hit" | "local-hit"))
                .map(|t| t.saved_ms)
                .fold(0, u64::saturating_add);
            self.ring.add(now / 60_000, Field::SavedMs, saved);
            self.total.add(Field::SavedMs, saved);
        }
        added
    }

    /// The sum of every total (changes whenever anything is counted): the snapshot writer skips
    /// a write when it is unchanged.
    pub fn generation(&self) -> u64 {
        self.total
            .get()
            .iter()
            .fold(self.unauthorized.load(Ordering::Relaxed), |a, b| {
                a.wrapping_add(*b)
            })
            .wrapping_add(lock(&self.runs).reports)
    }

    /// The summary `GET /ui/api/summary` answers, for `range` (`1h`, `24h` or `7d`).
    pub fn summary(&self, range: Range) -> Value {
        self.summary_at(now_ms(), range)
    }

    /// [`Insights::summary`] as of `now` (ms since the epoch).
    pub fn summary_at(&self, now: u64, range: Range) -> Value {
        let (step, points) = range.step_and_points();
        let series = self.series_json(now / 60_000, step, points);
        let total = self.total.get();
        let tokens = named_json(&self.tokens, &self.former_tokens);
        let namespaces = named_json(&self.namespaces, &self.former_namespaces);
        let runs = lock(&self.runs);
        let (largest, most_read) = self.artifacts_json(&runs);
        let reasons = self.reasons_json();
        let tasks = tasks_json(&runs);
        let recent: Vec<&runs::RunRow> = runs.recent.iter().rev().collect();
        let lookups = total[Field::Hits as usize].saturating_add(total[Field::Misses as usize]);
        let persisted = lock(&self.persisted);
        json!({
            "format": "nx-open-cache-ui-summary",
            "version": 1,
            "now": now,
            "startedAt": self.started_ms,
            "range": range.as_str(),
            "totals": {
                "hitRate": if lookups > 0 { total[Field::Hits as usize] as f64 / lookups as f64 } else { 0.0 },
                "unauthorized": self.unauthorized.load(Ordering::Relaxed),
                "counts": counts_json(&total),
            },
            "series": { "stepMinutes": step, "points": series },
            "tokens": tokens,
            "namespaces": namespaces,
            "artifacts": { "largest": largest, "mostRead": most_read },
            "reasons": reasons,
            "storage": {
                "location": self.storage.location,
                "usedBytes": self.storage.budget.as_ref().and_then(|b| b.used()),
                "maxBytes": self.storage.budget.as_ref().map(|b| b.max()),
                "maxAgeSeconds": self.storage.max_age.map(|d| d.as_secs()),
            },
            "runs": {
                "reports": runs.reports,
                "savedMs": runs.saved_ms,
                "tasksKnown": runs.tasks.len(),
                "recent": recent,
            },
            "tasks": tasks,
            "snapshot": {
                "loadedFrom": persisted.loaded_ms,
                "savedAt": persisted.saved_ms,
                "problem": persisted.problem,
            },
        })
    }

    /// The per-minute counts of the last `points` steps of `step` minutes up to `minute`.
    fn series_json(&self, minute: u64, step: u64, points: u64) -> Vec<Value> {
        let series = self.ring.series(minute, step, points);
        let first = (minute + 1).saturating_sub(step * points);
        series
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut o = counts_json(c);
                o["t"] = json!((first + i as u64 * step) * 60_000);
                o
            })
            .collect()
    }

    /// The largest and the most-read artifacts, named by task where a run report named them.
    fn artifacts_json(&self, runs: &runs::Runs) -> (Vec<Value>, Vec<Value>) {
        let task_of = |h: &str| runs.task_of(h).map(str::to_owned);
        let a = lock(&self.artifacts);
        let largest: Vec<Value> = a
            .largest
            .iter()
            .map(|(b, h, ns)| json!({"hash": &**h, "namespace": &**ns, "bytes": b, "task": task_of(h)}))
            .collect();
        let mut reads: Vec<(&Box<str>, &ReadEntry)> = a.reads.iter().collect();
        reads.sort_by(|x, y| y.1.reads.cmp(&x.1.reads).then(x.0.cmp(y.0)));
        let most: Vec<Value> = reads
            .into_iter()
            .take(MOST_READ)
            .map(|(h, e)| {
                json!({"hash": &**h, "namespace": &*e.ns, "reads": e.reads, "bytes": e.bytes, "task": task_of(h)})
            })
            .collect();
        (largest, most)
    }

    /// Refusals and errors by reason, the most frequent first (401s and the overflow as rows).
    fn reasons_json(&self) -> Vec<Value> {
        let r = lock(&self.reasons);
        let mut list: Vec<Value> = r
            .rows()
            .map(|(k, label, e)| json!({"kind": k, "reason": label, "sample": e.sample, "count": e.count}))
            .collect();
        let unauthorized = self.unauthorized.load(Ordering::Relaxed);
        if unauthorized > 0 {
            list.push(json!({"kind": "denied", "reason": "missing or unknown token (401)", "count": unauthorized}));
        }
        let other = r
            .other
            .saturating_add(self.reasons_missed.load(Ordering::Relaxed));
        if other > 0 {
            list.push(json!({"kind": "other", "reason": "other reasons", "count": other}));
        }
        list.sort_by(|a, b| {
            b["count"]
                .as_u64()
                .cmp(&a["count"].as_u64())
                .then(a["reason"].as_str().cmp(&b["reason"].as_str()))
        });
        list
    }
}

/// Tokens or namespaces with their counts: the configured ones, then former names (from a snapshot).
fn named_json(list: &[Named], former: &Mutex<Vec<(String, Counts)>>) -> Vec<Value> {
    let mut out: Vec<Value> = list
        .iter()
        .map(|n| {
            let mut o = counts_json(&n.counters.get());
            o["name"] = json!(&*n.name);
            if let Some(r) = n.role {
                o["role"] = json!(r);
            }
            o["current"] = json!(true);
            o
        })
        .filter(|o| o["name"] != "(anonymous)" || FIELD_NAMES.iter().any(|f| o[*f] != 0))
        .collect();
    for (name, c) in lock(former).iter() {
        let mut o = counts_json(c);
        o["name"] = json!(name);
        o["current"] = json!(false);
        out.push(o);
    }
    out
}

/// The tasks of the run reports, the ones that miss most first (what a team looks at), then the
/// busiest.
fn tasks_json(runs: &runs::Runs) -> Vec<Value> {
    let mut tasks: Vec<(&String, &runs::TaskStats)> = runs.tasks.iter().collect();
    tasks.sort_by(|a, b| {
        b.1.misses()
            .cmp(&a.1.misses())
            .then(
                (b.1.hits().saturating_add(b.1.misses()))
                    .cmp(&a.1.hits().saturating_add(a.1.misses())),
            )
            .then(a.0.cmp(b.0))
    });
    tasks
        .into_iter()
        .take(TASKS_SHOWN)
        .map(|(id, s)| {
            let (project, target) = runs::split_task(id);
            let cacheable = s.hits().saturating_add(s.misses());
            json!({
                "id": id, "project": project, "target": target, "runs": s.runs,
                "hits": s.hits(), "remoteHits": s.remote_hits, "localHits": s.local_hits,
                "misses": s.misses(), "failed": s.failed, "notRun": s.not_run,
                "hitRate": if cacheable > 0 { s.hits() as f64 / cacheable as f64 } else { 0.0 },
                "savedMs": s.saved_ms,
                "avgRunMs": if s.misses() > 0 { s.run_ms / s.misses() } else { 0 },
                "bytes": s.bytes,
            })
        })
        .collect()
}

fn counts_json(c: &Counts) -> Value {
    let mut o = serde_json::Map::new();
    for (name, v) in FIELD_NAMES.iter().zip(c) {
        o.insert((*name).to_owned(), json!(v));
    }
    Value::Object(o)
}

/// The time range of the summary's series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    Hour,
    Day,
    Week,
}

impl Range {
    /// `1h`, `24h` or `7d`; anything else is `None`.
    pub fn parse(s: &str) -> Option<Range> {
        match s {
            "1h" => Some(Range::Hour),
            "24h" => Some(Range::Day),
            "7d" => Some(Range::Week),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Range::Hour => "1h",
            Range::Day => "24h",
            Range::Week => "7d",
        }
    }
    /// Minutes per point and number of points.
    fn step_and_points(self) -> (u64, u64) {
        match self {
            Range::Hour => (1, 60),
            Range::Day => (15, 96),
            Range::Week => (60, 168),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::auth::{Role, TokenSpec};

    fn auth() -> Auth {
        let mut pr = TokenSpec::new("pr", Role::ReadWrite, "pr-secret-0123456789");
        pr.write_prefix = Prefix::parse("pr").expect("prefix");
        pr.read_prefixes = vec![pr.write_prefix.clone(), Prefix::default()];
        Auth {
            tokens: vec![
                TokenSpec::new("ci", Role::ReadWrite, "ci-secret-0123456789"),
                pr,
                TokenSpec::new("lead", Role::Admin, "admin-secret-0123456789"),
            ],
            anonymous_read: None,
            oidc: None,
        }
    }

    #[test]
    fn counts_per_token_namespace_and_artifact() {
        let a = auth();
        let i = Insights::new(&a, StorageInfo::default());
        let ci = i.slot(&a, Some(0));
        let pr = i.slot(&a, Some(1));
        assert_eq!(pr.read_ns.len(), 2);
        i.stored(Some(&ci), "111", 5000);
        i.hit(Some(&pr), 1, "111", 5000);
        i.hit(Some(&pr), 1, "111", 5000);
        i.miss(Some(&pr));
        i.stored(Some(&pr), "222", 100);
        i.refused(Some(&pr), Kind::Limit, "too_large");
        i.unauthorized();
        let s = i.summary(Range::Hour);
        assert_eq!(s["totals"]["counts"]["hits"], 2);
        assert_eq!(s["totals"]["counts"]["misses"], 1);
        assert_eq!(s["totals"]["counts"]["stored"], 2);
        assert_eq!(s["totals"]["counts"]["bytesSent"], 10_000);
        assert_eq!(s["totals"]["counts"]["refused"], 2);
        let tokens = s["tokens"].as_array().cloned().unwrap_or_default();
        let pr_row = tokens.iter().find(|t| t["name"] == "pr").cloned();
        let pr_row = pr_row.unwrap_or_default();
        assert_eq!(
            (pr_row["hits"].clone(), pr_row["misses"].clone()),
            (json!(2), json!(1))
        );
        assert!(tokens.iter().all(|t| t["name"] != "(anonymous)"));
        let ns = s["namespaces"].as_array().cloned().unwrap_or_default();
        let root = ns
            .iter()
            .find(|n| n["name"] == "(root)")
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            (root["hits"].clone(), root["stored"].clone()),
            (json!(2), json!(1))
        );
        let prns = ns
            .iter()
            .find(|n| n["name"] == "pr")
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            (prns["misses"].clone(), prns["stored"].clone()),
            (json!(1), json!(1))
        );
        assert_eq!(s["artifacts"]["largest"][0]["hash"], "111");
        assert_eq!(s["artifacts"]["mostRead"][0]["reads"], 2);
        let minute = s["series"]["points"][59].clone();
        assert_eq!(minute["hits"], 2);
        assert!(s["reasons"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["reason"] == "too_large")));
    }

    /// What recording costs per request (printed, not asserted): `cargo test --profile fast
    /// --lib record_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn record_cost() {
        let a = auth();
        let i = Insights::new(&a, StorageInfo::default());
        let ci = i.slot(&a, Some(0));
        let hashes: Vec<String> = (0..16).map(|n| (1_000_000 + n).to_string()).collect();
        let n = 2_000_000;
        let t = std::time::Instant::now();
        for k in 0..n {
            i.hit(Some(&ci), 0, &hashes[k % 16], 1024);
        }
        let hit = t.elapsed().as_nanos() as f64 / n as f64;
        let t = std::time::Instant::now();
        for _ in 0..n {
            i.miss(Some(&ci));
        }
        let miss = t.elapsed().as_nanos() as f64 / n as f64;
        eprintln!("insights: {hit:.0} ns per hit, {miss:.0} ns per miss (one thread)");
    }

    #[test]
    fn artifact_and_reason_lists_stay_bounded() {
        let a = auth();
        let i = Insights::new(&a, StorageInfo::default());
        let ci = i.slot(&a, Some(0));
        // Reason words that differ before any digit: distinct labels.
        let word = |n: u64| -> String {
            let mut w = String::new();
            let mut n = n;
            loop {
                w.push(char::from(b'a' + (n % 26) as u8));
                n /= 26;
                if n == 0 {
                    return w;
                }
            }
        };
        for n in 0..5_000u64 {
            i.hit(Some(&ci), 0, &n.to_string(), n);
            i.refused(Some(&ci), Kind::Error, &format!("fault {}", word(n)));
        }
        for _ in 0..10 {
            i.hit(Some(&ci), 0, "42", 42);
        }
        let art = lock(&i.artifacts);
        assert!(art.reads.len() <= READ_SLOTS);
        assert_eq!(art.largest.len(), LARGEST);
        assert_eq!(art.largest[0].0, 4999);
        drop(art);
        let s = i.summary(Range::Day);
        assert_eq!(s["artifacts"]["mostRead"][0]["hash"], "42");
        let reasons = s["reasons"].as_array().map(Vec::len).unwrap_or(0);
        assert_eq!(reasons, MAX_REASONS);
        assert_eq!(s["series"]["points"].as_array().map(Vec::len), Some(96));
    }

    #[test]
    fn reasons_are_keyed_by_their_fixed_label_and_the_least_counted_goes() {
        let a = auth();
        let i = Insights::new(&a, StorageInfo::default());
        let ci = i.slot(&a, Some(0));
        // Client-controlled parts (numbers, quoted paths) do not make new rows.
        for n in 0..50 {
            i.refused(
                Some(&ci),
                Kind::Refused,
                &format!(
                    "upload not stored: not a valid Nx artifact: entry {n} links to \"../{n}\""
                ),
            );
        }
        i.refused(Some(&ci), Kind::Error, "storage unavailable");
        i.refused(Some(&ci), Kind::Error, "storage unavailable");
        let s = i.summary(Range::Day);
        let rows = s["reasons"].as_array().cloned().unwrap_or_default();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(
            rows[0]["reason"],
            "upload not stored: not a valid Nx artifact: entry N links to \"…\""
        );
        assert_eq!(rows[0]["count"], 50);
        assert_eq!(
            rows[0]["sample"],
            "upload not stored: not a valid Nx artifact: entry 49 links to \"../49\""
        );
        assert_eq!(
            reason_label("read not served: symlink to `../../x\"`: outside the outputs"),
            "read not served: symlink to"
        );
        assert_eq!(
            reason_label("token \"dev\\\"x\" is read-only: 12 MiB"),
            "token \"…\" is read-only: N MiB"
        );
        // A full table of junk labels does not freeze it: a real fault still gets a row.
        for n in 0..(MAX_REASONS as u64 * 3) {
            let junk: String = format!("{n:x}")
                .chars()
                .map(|c| char::from(b'g' + c.to_digit(16).unwrap_or(0) as u8))
                .collect();
            i.refused(Some(&ci), Kind::Refused, &format!("junk {junk}"));
        }
        i.refused(Some(&ci), Kind::Error, "cannot write: disk full");
        let s = i.summary(Range::Day);
        let rows = s["reasons"].as_array().cloned().unwrap_or_default();
        assert!(rows.len() <= MAX_REASONS + 1);
        assert!(rows
            .iter()
            .any(|r| r["reason"] == "cannot write: disk full"));
        assert!(rows.iter().any(|r| r["reason"]
            == "upload not stored: not a valid Nx artifact: entry N links to \"…\""
            && r["count"] == 50));
    }
}
