//! Keeps a failing store from slowing a build down.
//!
//! A [`GuardedStore`] wraps any store with three things:
//! - a start-up probe: the store's own check (`Store::check`: a listing, a directory check, or a
//!   lookup of a hash that is never stored), started as soon as the guard is made. Requests that
//!   arrive before it answers wait for it (at most the probe timeout); a probe that fails or does
//!   not answer in time opens the breaker at once, so a dead store costs one probe timeout per
//!   run, not one per request;
//! - a time limit on every storage call (on top of the backend's own connect/read timeouts);
//! - an outage breaker: after `failures_to_open` consecutive faults, or at once after a fault
//!   whose root cause cannot fix itself within the run (a bucket that does not exist, credentials
//!   or a token missing or refused, an unknown host: [`Cause::lasting`]), every call is skipped
//!   with the same cause (one line in the run summary) for the rest of the run, or until a
//!   cool-down has passed, after which one call is let through to try again. That trial holds a permit:
//!   a trial whose future is dropped before it ends gives the permit back, so the next call
//!   tries (a cancelled trial never keeps the breaker open for good).
//!
//! The settings come from the one resilience policy ([`super::resilience`]).
//!
//! Only faults of the store itself count (unreachable, timeouts, disk full); a corrupt object or a
//! client's bad upload says nothing about the store's health.

use super::{AsyncStore, Cause, ErrorKind, Found, Store, StoreError, Upload, Written};
use crate::key::{Prefix, TaskHash};
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub use super::resilience::GuardPolicy;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Probe {
    Pending,
    Done,
}

#[derive(Debug)]
struct Open {
    /// Why the store is skipped; every skipped call carries it.
    cause: Cause,
    since: Instant,
    /// A trial call after the cool-down is in flight.
    trial: bool,
}

struct State {
    probe: watch::Receiver<Probe>,
    consecutive: AtomicU32,
    open: Mutex<Option<Open>>,
}

/// A store behind a start-up probe, call time limits and an outage breaker.
#[derive(Clone)]
pub struct GuardedStore {
    inner: Arc<dyn Store>,
    policy: GuardPolicy,
    state: Arc<State>,
}

/// What a call may do now.
enum Gate {
    Go,
    /// The one trial call after a cool-down.
    Trial(TrialPermit),
    Skip(Cause),
}

/// The right to make the one trial call after a cool-down. Dropped without a recorded outcome
/// (the call's future was cancelled), it gives the right back, so a later call can try: a
/// cancelled trial never leaves the breaker open for good.
struct TrialPermit {
    /// `None` once spent.
    state: Option<Arc<State>>,
}

impl TrialPermit {
    /// The trial's outcome was recorded: nothing to give back.
    fn spend(mut self) {
        self.state = None;
    }
}

impl Drop for TrialPermit {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            if let Some(o) = state.lock_open().as_mut() {
                o.trial = false;
            }
        }
    }
}

impl GuardedStore {
    /// Wraps `inner` and starts the probe on the current tokio runtime (call inside one).
    pub fn new(inner: Arc<dyn Store>, policy: GuardPolicy) -> Self {
        let (tx, rx) = watch::channel(Probe::Pending);
        let state = Arc::new(State {
            probe: rx,
            consecutive: AtomicU32::new(0),
            open: Mutex::new(None),
        });
        let probe_store = inner.clone();
        let probe_state = state.clone();
        let timeout = policy.probe_timeout;
        let location = inner.describe();
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(timeout, probe_store.check()).await;
            let failure = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(e)) if counts(&e) => Some(match e.cause {
                    // A known root cause is the summary's line itself.
                    Some(cause) => *cause,
                    None => {
                        let reason = format!("the store failed its start-up check: {}", e.message);
                        Cause::plain(reason)
                    }
                }),
                Ok(Err(_)) => None,
                Err(_) => {
                    let reason = format!(
                        "{location} did not answer within {} s (start-up check)",
                        timeout.as_secs_f32()
                    );
                    Some(Cause::plain(reason))
                }
            };
            if let Some(cause) = failure {
                probe_state.open(cause);
            }
            let _ = tx.send(Probe::Done);
        });
        GuardedStore {
            inner,
            policy,
            state,
        }
    }

    /// Wraps `inner` with a probe that already passed (tests, and stores checked elsewhere).
    pub fn without_probe(inner: Arc<dyn Store>, policy: GuardPolicy) -> Self {
        let (_tx, rx) = watch::channel(Probe::Done);
        GuardedStore {
            inner,
            policy,
            state: Arc::new(State {
                probe: rx,
                consecutive: AtomicU32::new(0),
                open: Mutex::new(None),
            }),
        }
    }

    /// Why the store is being skipped, if it is.
    pub fn open_reason(&self) -> Option<String> {
        self.state
            .lock_open()
            .as_ref()
            .map(|o| o.cause.reason.clone())
    }

    async fn gate(&self) -> Gate {
        let mut probe = self.state.probe.clone();
        if *probe.borrow() == Probe::Pending {
            // The probe's own timeout bounds this; the margin covers scheduling.
            let wait = self.policy.probe_timeout + Duration::from_secs(1);
            let _ = tokio::time::timeout(wait, probe.wait_for(|p| *p == Probe::Done)).await;
        }
        let mut open = self.state.lock_open();
        match open.as_mut() {
            None => Gate::Go,
            Some(o) => match self.policy.cool_down {
                Some(d) if !o.trial && o.since.elapsed() >= d => {
                    o.trial = true;
                    Gate::Trial(TrialPermit {
                        state: Some(self.state.clone()),
                    })
                }
                _ => Gate::Skip(o.cause.clone()),
            },
        }
    }

    /// A call not made: it carries the breaker's cause, marked skipped.
    fn skipped(cause: Cause) -> StoreError {
        StoreError::new(
            ErrorKind::Unavailable,
            format!("skipped (store not used for this run): {}", cause.reason),
        )
        .with_cause(Cause {
            skipped: true,
            ..cause
        })
    }

    /// Books the outcome of a call that went through (a trial's permit is spent here: a failed
    /// trial opens the breaker anew, with a new cool-down).
    fn record<T>(&self, result: &Result<T, StoreError>, trial: Option<TrialPermit>) {
        let trial = match trial {
            Some(permit) => {
                permit.spend();
                true
            }
            None => false,
        };
        match result {
            // A refused write says nothing about the store's health either way: the count of
            // faults in a row is neither fed nor reset.
            Err(e) if e.cause.as_ref().is_some_and(|c| c.writes_only) && !trial => {}
            Err(e) if counts(e) => {
                let n = self.state.consecutive.fetch_add(1, Ordering::SeqCst) + 1;
                let last = e.cause.as_ref().map_or(e.message.as_str(), |c| &c.reason);
                if let Some(cause) = e.cause.as_ref().filter(|c| c.lasting) {
                    // It will not fix itself: no point in a second try this run.
                    self.state.open(Cause::clone(cause));
                } else if trial {
                    let reason = format!("still failing after the cool-down: {last}");
                    self.state.open(Cause::plain(reason));
                } else if n >= self.policy.failures_to_open.max(1) {
                    let reason = format!(
                        "{n} storage calls failed in a row on {}, the last with: {last}",
                        self.inner.describe()
                    );
                    self.state.open(Cause::new(
                        format!("breaker {}", self.inner.describe()),
                        reason,
                    ));
                }
            }
            _ => {
                self.state.consecutive.store(0, Ordering::SeqCst);
                if trial || result.is_ok() {
                    *self.state.lock_open() = None;
                }
            }
        }
    }

    /// One storage call through the gate, within the call limit, its outcome booked.
    async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let trial = match self.gate().await {
            Gate::Skip(cause) => return Err(Self::skipped(cause)),
            Gate::Trial(permit) => Some(permit),
            Gate::Go => None,
        };
        let result = tokio::time::timeout(self.policy.call_timeout, call)
            .await
            .unwrap_or_else(|_| Err(self.timed_out(what)));
        self.record(&result, trial);
        result
    }

    fn timed_out(&self, what: &str) -> StoreError {
        StoreError::new(
            ErrorKind::Unavailable,
            format!(
                "{what} on {} took longer than {} s and was abandoned",
                self.inner.describe(),
                self.policy.call_timeout.as_secs_f32()
            ),
        )
    }
}

impl State {
    fn lock_open(&self) -> std::sync::MutexGuard<'_, Option<Open>> {
        // A poisoned lock only means a panic elsewhere while holding it; the data is a plain value.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open(&self, cause: Cause) {
        *self.lock_open() = Some(Open {
            cause,
            since: Instant::now(),
            trial: false,
        });
    }
}

/// Faults that say the store is unhealthy (a refused write does not: reads go on).
fn counts(e: &StoreError) -> bool {
    matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Full)
        && !e.cause.as_ref().is_some_and(|c| c.writes_only)
}

impl AsyncStore for GuardedStore {
    async fn get(&self, hash: &TaskHash) -> Found {
        self.call("a read", self.inner.get(hash)).await
    }

    async fn put(&self, hash: &TaskHash, upload: Upload<'_, '_>) -> Written {
        let Upload { body, declared_len } = upload;
        self.call("a write", self.inner.put(hash, body, declared_len))
            .await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn inner(&self) -> Option<&Arc<dyn Store>> {
        Some(&self.inner)
    }

    fn with_namespace(&self, ns: &Prefix) -> Result<Arc<dyn Store>, StoreError> {
        // The namespaced view shares this guard's probe and breaker: it is the same store.
        let mut view = self.clone();
        view.inner = self.inner.with_namespace(ns)?;
        Ok(Arc::new(view))
    }
}
