//! Every request is observed once, here: the run summary ([`Stats`](crate::stats::Stats)), the
//! metrics ([`super::metrics`]) and the log ([`super::log`]) are updated together, so that a
//! handler only says what happened and never counts it itself.
//!
//! - [`observe`] (the outermost middleware) counts and logs every answered request: its route,
//!   method, status and time, plus what its cache handler recorded (hash, token name, bytes).
//! - An [`Observer`], one per cache request, turns what the handler tells it into counters:
//!   a hit, a miss, an upload's end, a limit that refused it, a refused object, a fault.
//!   `cache_millis` counts the requests that reached storage (a lookup or an upload), as it
//!   always did: a request refused before (no token, bad hash, read-only, a limit) adds no time.
//! - Faults and refusals are logged once per reason in the text format and always in JSON, with
//!   every client-controlled part escaped by [`log::warn`].

use super::insights::{Kind, Tally};
use super::log::{self, LogFormat};
use super::{AppState, Trusted};
use crate::key::TaskHash;
use crate::stats::{Done, Fault, Op, Outcome};
use crate::store::StoreError;
use axum::body::Body;
use axum::extract::State;
use axum::http::Request;
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;
use std::time::Instant;

/// Longest hash kept for the log line (the path's hash may be anything a client sends).
const MAX_SHOWN_HASH_CHARS: usize = 160;

/// The cache operation a request performs, as the metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Get,
    Put,
}

impl Operation {
    fn label(self) -> &'static str {
        match self {
            Operation::Get => "get",
            Operation::Put => "put",
        }
    }

    fn op(self) -> Op {
        match self {
            Operation::Get => Op::Get,
            Operation::Put => Op::Put,
        }
    }
}

/// A limit that refused an upload: the `reason` label of `rejected_uploads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    LengthRequired,
    TooLarge,
    Busy,
    Timeout,
    BadLength,
}

impl Limit {
    /// What the dashboard calls it.
    fn words(self) -> &'static str {
        match self {
            Limit::LengthRequired => "upload without Content-Length (411)",
            Limit::TooLarge => "upload larger than --max-artifact-size (413)",
            Limit::Busy => "too many uploads at once (503)",
            Limit::Timeout => "upload not finished within --upload-timeout (408)",
            Limit::BadLength => "upload body not matching its Content-Length (400)",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Limit::LengthRequired => "length_required",
            Limit::TooLarge => "too_large",
            Limit::Busy => "busy",
            Limit::Timeout => "timeout",
            Limit::BadLength => "bad_length",
        }
    }
}

/// Why an upload from a valid token is answered before its body reaches the store.
#[derive(Debug)]
pub(crate) enum Early {
    /// The hash is not valid: the message says why (400).
    BadHash(String),
    /// The token or the mode does not write: the message says which (403).
    NotWritable(String),
    /// No Content-Length where one is required (411).
    LengthRequired,
    /// The declared length is over the artifact limit `cap` (413).
    TooLarge { declared: u64, cap: u64 },
    /// Too many uploads at once (503).
    Busy,
}

/// How an upload that reached the store ended.
#[derive(Debug)]
pub(crate) enum Upload {
    /// Stored, this many payload bytes.
    Stored(u64),
    /// The hash was stored already (first writer wins).
    AlreadyStored,
    /// The body did not arrive within the upload timeout; nothing was stored.
    TimedOut,
    /// The body grew past the artifact limit; nothing was stored.
    TooLarge,
    /// The store refused the upload (not a valid artifact): the reason, for the client too.
    Refused(String),
    /// The body does not match its Content-Length: the store's message.
    BadLength(String),
    /// A storage fault: for the summary and the log (never shown to the client).
    Fault(StorageFault),
}

/// A storage fault of one request, as the run summary books it: under its root cause when the
/// store gave one, else under its message with the hash taken out, so that one fault on many
/// requests is one line with a count.
#[derive(Debug)]
pub(crate) struct StorageFault {
    /// What groups it.
    key: String,
    /// What the summary says: no hash.
    reason: String,
    /// The store was skipped for the rest of the run for this cause.
    skipped: bool,
    /// The log line: the full message, hash included.
    logged: String,
}

/// `text` with every whole occurrence of `hash` replaced by `<hash>`: one not inside a longer run
/// of letters and digits (a port `41139` keeps its digits when the hash is `1139`).
fn without_hash(text: &str, hash: &TaskHash) -> String {
    let hash = hash.as_str();
    if hash.is_empty() {
        return text.to_owned();
    }
    let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(hash) {
        let end = at + hash.len();
        let whole = !word(rest[..at].chars().next_back()) && !word(rest[end..].chars().next());
        out.push_str(&rest[..at]);
        out.push_str(if whole { "<hash>" } else { hash });
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

impl StorageFault {
    /// `error` of a `get` (read) or `put` (write) of `hash` on `store`.
    pub(crate) fn of(
        operation: Operation,
        hash: &TaskHash,
        store: &str,
        error: &StoreError,
    ) -> Self {
        let (verb, preposition) = match operation {
            Operation::Get => ("read", "from"),
            Operation::Put => ("write", "to"),
        };
        let logged = format!("{verb} {hash} {preposition} {store}: {}", error.message);
        match &error.cause {
            Some(cause) => StorageFault {
                key: without_hash(&cause.key, hash),
                reason: without_hash(&cause.reason, hash),
                skipped: cause.skipped,
                logged,
            },
            None => {
                let reason = format!(
                    "{verb} {preposition} {store}: {}",
                    without_hash(&error.message, hash)
                );
                StorageFault {
                    key: reason.clone(),
                    reason,
                    skipped: false,
                    logged,
                }
            }
        }
    }

    /// A write of `hash` on `store` that did not finish: `why`.
    pub(crate) fn write_unfinished(hash: &TaskHash, store: &str, why: &str) -> Self {
        let reason = format!("write to {store}: {why}");
        StorageFault {
            key: reason.clone(),
            reason,
            skipped: false,
            logged: format!("write {hash} to {store}: {why}"),
        }
    }
}

/// What a cache handler recorded, read by [`observe`] for the request line.
#[derive(Clone, Default)]
struct Observed {
    hash: String,
    token: Option<String>,
    bytes: u64,
}

/// The observer of one cache request (`GET`/`PUT /v1/cache/{hash}`).
pub(crate) struct Observer<'s> {
    state: &'s AppState,
    operation: Operation,
    started: Instant,
    /// The hash as the client wrote it, for the log line (cut to [`MAX_SHOWN_HASH_CHARS`] there).
    shown: &'s str,
    /// The token's name once the caller presented a valid one.
    token: Option<&'s str>,
    /// Where the dashboard counts this request (token or anonymous, and namespaces).
    slot: Option<&'s Tally>,
    /// Payload bytes served or stored.
    bytes: u64,
    /// Why a lookup found nothing to serve: the last refusal or fault (for its event).
    problem: Option<(Outcome, String)>,
}

impl<'s> Observer<'s> {
    /// Starts observing a request for `shown`, the hash as the client wrote it.
    pub(crate) fn new(state: &'s AppState, operation: Operation, shown: &'s str) -> Observer<'s> {
        Observer {
            state,
            operation,
            started: Instant::now(),
            shown,
            token: None,
            slot: None,
            bytes: 0,
            problem: None,
        }
    }

    /// The caller presented the valid token named `name`, counted in `slot`.
    pub(crate) fn token(&mut self, name: &'s str, slot: &'s Tally) {
        self.token = Some(name);
        self.slot = Some(slot);
    }

    /// The caller reads anonymously, counted in `slot`.
    pub(crate) fn anonymous(&mut self, slot: &'s Tally) {
        self.slot = Some(slot);
    }

    /// The token may not use the cache (`reason`).
    pub(crate) fn denied(&self, reason: &str) {
        if let Some(i) = &self.state.insights {
            i.refused(self.slot, Kind::Denied, reason);
        }
    }

    /// The dashboard's counts, for an artifact (not its metadata, `<hash>-nxoc-meta`: a hit or a
    /// store of it is not one of the cache's).
    fn counted(&self) -> Option<&Arc<super::insights::Insights>> {
        self.state
            .insights
            .as_ref()
            .filter(|_| !crate::stats::is_meta_key(self.shown))
    }

    /// Books the request in the run's counters and events (`timed`: it reached storage).
    fn done(&self, outcome: Outcome, bytes: u64, timed: bool, reason: Option<&str>) {
        let millis = self.started.elapsed().as_millis();
        self.state.stats.request(Done {
            hash: self.shown,
            op: self.operation.op(),
            outcome,
            bytes,
            millis: millis.try_into().unwrap_or(u64::MAX),
            timed,
            reason,
        });
    }

    /// A lookup in the `store`-th of the caller's namespaces served `hash`, `bytes` payload bytes.
    pub(crate) fn hit(&mut self, store: usize, hash: &TaskHash, bytes: u64) {
        self.bytes = bytes;
        self.done(Outcome::Hit, bytes, true, None);
        self.state.metrics.hit(bytes);
        if let Some(i) = self.counted() {
            i.hit(self.slot, store, hash.as_str(), bytes);
        }
    }

    /// A lookup found nothing to serve (faults and refusals included, recorded on their own).
    pub(crate) fn miss(&mut self) {
        let (outcome, reason) = match &self.problem {
            Some((outcome, reason)) => (*outcome, Some(reason.as_str())),
            None => (Outcome::Miss, None),
        };
        self.done(outcome, 0, true, reason);
        self.state.metrics.miss();
        if let Some(i) = self.counted() {
            i.miss(self.slot);
        }
    }

    /// A miss without a lookup (the `no-cache` mode): it takes no storage time.
    pub(crate) fn miss_without_lookup(&mut self) {
        self.done(Outcome::Miss, 0, false, Some("no-cache mode"));
        self.state.metrics.miss();
        if let Some(i) = self.counted() {
            i.miss(self.slot);
        }
    }

    /// An upload answered before its body reached the store.
    pub(crate) fn turned_away(&self, early: &Early) {
        match early {
            Early::BadHash(_) => {}
            Early::NotWritable(why) => {
                let why = why.strip_prefix("nx-open-cache: ").unwrap_or(why);
                self.done(Outcome::ReadOnly, 0, false, Some(why));
                self.denied(why);
            }
            Early::LengthRequired => {
                self.done(Outcome::Refused, 0, false, Some("no Content-Length"));
                self.limited(Limit::LengthRequired);
            }
            Early::TooLarge { declared, cap } => {
                let why = format!("{declared} bytes, over the limit of {cap} bytes");
                self.done(Outcome::Refused, 0, false, Some(&why));
                self.limited(Limit::TooLarge);
            }
            Early::Busy => {
                self.done(Outcome::Error, 0, false, Some("too many uploads at once"));
                self.limited(Limit::Busy);
            }
        }
    }

    fn limited(&self, limit: Limit) {
        self.state.metrics.rejected(limit.label());
        if let Some(i) = &self.state.insights {
            i.refused(self.slot, Kind::Limit, limit.words());
        }
    }

    /// An upload reached the store and ended as `upload`; `hash` is its parsed hash.
    pub(crate) fn uploaded(&mut self, hash: &TaskHash, upload: &Upload) {
        match upload {
            Upload::Stored(n) => {
                self.bytes = *n;
                self.done(Outcome::Stored, *n, true, None);
                self.state.metrics.stored(*n);
                if let Some(i) = self.counted() {
                    i.stored(self.slot, hash.as_str(), *n);
                }
            }
            Upload::AlreadyStored => {
                self.done(Outcome::AlreadyStored, 0, true, None);
                self.state.metrics.already_stored();
                if let Some(i) = self.counted() {
                    i.already_stored(self.slot);
                }
            }
            Upload::TimedOut => {
                let why = "upload not finished within the upload timeout";
                self.done(Outcome::Error, 0, true, Some(why));
                self.limited(Limit::Timeout);
            }
            Upload::TooLarge => {
                let why = "larger than the artifact limit";
                self.done(Outcome::Refused, 0, true, Some(why));
                self.limited(Limit::TooLarge);
            }
            Upload::Refused(reason) => {
                self.done(Outcome::Refused, 0, true, Some(reason));
                self.refused(hash, reason, false);
            }
            Upload::BadLength(why) => {
                self.done(Outcome::Refused, 0, true, Some(why));
                self.limited(Limit::BadLength);
            }
            Upload::Fault(fault) => {
                self.done(Outcome::Error, 0, true, Some(&fault.reason));
                self.fault(fault);
            }
        }
    }

    /// The store read `hash` but refused it (`get`), or refused its upload (`put`). Logged the
    /// first time per reason in the text format, always in JSON. `routine`: part of normal
    /// operation (an unsigned object this signing writer replaces): counted apart, not logged.
    pub(crate) fn refused(&mut self, hash: &TaskHash, reason: &str, routine: bool) {
        if self.operation == Operation::Get {
            let outcome = if routine {
                Outcome::Miss
            } else {
                Outcome::Refused
            };
            self.problem = Some((outcome, reason.to_owned()));
        }
        self.state.metrics.refused(self.operation.label());
        if let (Some(i), false) = (&self.state.insights, routine) {
            let verb = match self.operation {
                Operation::Get => "read not served",
                Operation::Put => "upload not stored",
            };
            i.refused(self.slot, Kind::Refused, &format!("{verb}: {reason}"));
        }
        let first = self.state.stats.refusal(reason, hash.as_str(), routine);
        if !routine && (first || self.state.log == LogFormat::Json) {
            let verb = match self.operation {
                Operation::Get => "not served",
                Operation::Put => "not stored",
            };
            log::warn(self.state.log, &format!("{hash} {verb}: {reason}"));
        }
    }

    /// A storage fault of this request, booked under its cause; logged the first time per cause
    /// in the text format (with the hash), always in JSON.
    pub(crate) fn fault(&mut self, fault: &StorageFault) {
        if self.operation == Operation::Get {
            self.problem = Some((Outcome::Error, fault.reason.clone()));
        }
        self.state.metrics.storage_error(self.operation.label());
        if let Some(i) = &self.state.insights {
            i.refused(self.slot, Kind::Error, &fault.reason);
        }
        let first = self.state.stats.fault(Fault {
            key: &fault.key,
            reason: &fault.reason,
            skipped: fault.skipped,
        });
        if first || self.state.log == LogFormat::Json {
            log::warn(self.state.log, &fault.logged);
        }
    }

    /// `response`, carrying what the log line needs (when there is a log), and marked trusted
    /// when a valid token was presented (the connection counts as trusted from then on,
    /// [`super::listen`]).
    pub(crate) fn answer(self, mut response: Response) -> Response {
        if self.token.is_some() {
            response.extensions_mut().insert(Trusted);
        }
        if self.state.log != LogFormat::Off {
            response.extensions_mut().insert(Observed {
                hash: self.shown.chars().take(MAX_SHOWN_HASH_CHARS).collect(),
                token: self.token.map(str::to_owned),
                bytes: self.bytes,
            });
        }
        response
    }
}

/// `/readyz` found the storage not ready: a `probe` fault in the metrics and the log (not in the
/// run summary: a probe is no cache request).
pub(crate) fn probe_failed(state: &AppState, reason: &str) {
    state.metrics.storage_error("probe");
    log::warn(state.log, reason);
}

/// A token's namespace could not be made when the server started: a fault in the summary,
/// logged (no request, so no metric).
pub(crate) fn namespace_failed(state: &AppState, reason: &str, logged: bool) {
    state.stats.error(reason);
    if logged {
        log::warn(state.log, reason);
    }
}

/// A handler panicked: counted and logged (the request itself is answered 500 and observed by
/// [`observe`] like any other).
pub(crate) fn panicked(state: &AppState, message: &str) {
    state.metrics.panicked();
    log::warn(state.log, message);
}

/// The route a path goes to, as a metrics label (the path itself would be unbounded).
fn route_label(path: &str, operations: bool) -> &'static str {
    if let Some(rest) = path.strip_prefix("/v1/cache/") {
        return if rest.is_empty() || rest.contains('/') {
            "unmatched"
        } else {
            "cache"
        };
    }
    match (path, operations) {
        ("/ui", true) => "ui",
        ("/ui/api/summary", true) => "ui_summary",
        ("/nx-open-cache/v1/runs", true) => "runs",
        ("/healthz", true) => "healthz",
        ("/readyz", true) => "readyz",
        ("/metrics", true) => "metrics",
        ("/openapi.json", true) => "openapi",
        _ => "unmatched",
    }
}

/// The outermost middleware (the only one): counts and logs every answered request, and runs the
/// rest guarded against panics ([`super::panics::guarded`]).
pub(super) async fn observe(
    State(state): State<Arc<AppState>>,
    req: Request<Body>,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = route_label(req.uri().path(), state.operations);
    let method = req.method().clone();
    let uri = req.uri().clone();
    let response = super::panics::guarded(&state, &method, &uri, next.run(req)).await;
    let elapsed = started.elapsed();
    let status = response.status();
    state.metrics.request(
        route,
        method.as_str(),
        status.as_u16(),
        elapsed.as_secs_f64(),
    );
    let observed = response.extensions().get::<Observed>();
    log::request(
        state.log,
        &log::RequestLine {
            method: method.as_str(),
            route,
            status: status.as_u16(),
            elapsed,
            hash: observed.map(|o| o.hash.as_str()),
            token: observed.and_then(|o| o.token.as_deref()),
            bytes: observed.map(|o| o.bytes).unwrap_or(0),
        },
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_hashes_are_taken_out() {
        let hash = TaskHash::parse("1139").expect("a valid hash");
        assert_eq!(
            without_hash(
                "GET http://127.0.0.1:41139/v1/cache/1139: 500 (1139)",
                &hash
            ),
            "GET http://127.0.0.1:41139/v1/cache/<hash>: 500 (<hash>)"
        );
        assert_eq!(
            without_hash("11390 a1139 1139b", &hash),
            "11390 a1139 1139b"
        );
        assert_eq!(without_hash("1139", &hash), "<hash>");
        assert_eq!(without_hash("", &hash), "");
    }
}
