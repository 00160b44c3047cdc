//! One resilience policy: every timeout, retry and breaker setting of the storage clients (http,
//! object stores), of the guard in front of them and of the server's bound on a store call,
//! resolved once from the configuration ([`Resilience::from_config`]) and handed to each.
//!
//! Users set two of them (`connectTimeout` and `timeout`, see the README's "Timeouts and
//! retries"); the rest are fixed here:
//! - a whole request, streaming included, and one storage call through the guard: 15 min;
//! - the answer to a large upload (multipart parts and completion, the publishing copy, an http
//!   upstream storing gigabytes after the last byte): 5 min;
//! - retries of transient faults (refused or reset connections, 429, 5xx): two, with
//!   exponential backoff and jitter; an http GET retries itself, an object store through
//!   `object_store`'s retry configuration (within 30 s);
//! - the outage breaker: opened by the start-up probe failing (it may take `timeout`), by three
//!   faults in a row, or at once by one fault whose root cause cannot fix itself within the run
//!   (a bucket that does not exist, credentials or a token missing or refused, an unknown host:
//!   [`super::Cause::lasting`]); no cool-down (a store that failed is skipped for the rest of the
//!   run);
//! - the server gives a store call 60 s more than its upload deadline, and its readiness probe
//!   (`/readyz`) 5 s;
//! - a pooled connection (object stores, http upstreams) idle for 3 s is closed rather than
//!   reused ([`POOL_IDLE`]);
//! - a create-if-absent upload whose connection was reset after the request went out is sent
//!   once more ([`resend_create`]), the one case `object_store` does not retry for it.

use crate::config::{CacheConfig, Timeouts};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::{BackoffConfig, ClientOptions, RetryConfig};
use std::time::Duration;

/// `connectTimeout`'s default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `timeout`'s default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// What the server adds to its upload deadline before it abandons a store call.
pub const STORE_MARGIN: Duration = Duration::from_secs(60);
/// How long the server's readiness probe (`/readyz`) waits for the store.
pub const READY_PROBE: Duration = Duration::from_secs(5);
/// A pooled connection idle this long is closed rather than reused. Below the shortest keep-alive
/// timeout of the servers in use (Node's default of 5 s, which Azurite and Node-based http
/// upstreams keep), so a request never goes out on a connection the server is closing at that
/// moment. The trade-off: on a real cloud (keep-alive of a minute or more), a request after an
/// idle gap longer than this opens a new connection and pays a new TLS handshake (one or two
/// round trips); during a build's steady traffic, connections are reused.
pub const POOL_IDLE: Duration = Duration::from_secs(3);

/// Whether a create-if-absent upload of a content-addressed object that failed with `e` is sent
/// once more: only when its connection was reset or cut after the request went out, without an
/// answer (`object_store`'s [`HttpErrorKind::Interrupted`]). That is the one transport fault
/// `object_store` does not retry for a PUT (not idempotent to it); the create-if-absent mode makes
/// it safe here (if the first did land, the second answers "already exists"). Never on a timeout
/// (the store may be hanging: the client's budget is spent), a failed connect or a request not
/// sent (`object_store` already retried those), or an answer of the store (a status).
pub fn resend_create(e: &object_store::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(http) = s.downcast_ref::<HttpError>() {
            return http.kind() == HttpErrorKind::Interrupted;
        }
        source = s.source();
    }
    false
}

/// Retries of a transient fault, with exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    /// Extra attempts after the first.
    pub retries: u32,
    /// First delay; doubled per attempt.
    pub first_delay: Duration,
    /// Cap on one delay.
    pub max_delay: Duration,
    /// No retry is started once this long has passed since the first attempt (object stores).
    pub within: Duration,
}

impl Retry {
    /// Delay before retry `n` (1-based): `first_delay * 2^(n-1)`, at most `max_delay`, with full
    /// jitter over its upper half.
    pub fn delay(&self, n: u32) -> Duration {
        let top = self
            .first_delay
            .saturating_mul(1u32 << n.saturating_sub(1).min(10))
            .min(self.max_delay);
        let mut r = [0u8; 4];
        // Without OS randomness the delay is just not jittered.
        let _ = getrandom::fill(&mut r);
        let fraction = f64::from(u32::from_le_bytes(r)) / f64::from(u32::MAX);
        top.mul_f64(0.5 + fraction / 2.0)
    }

    /// The same policy as `object_store` takes it.
    pub fn object_store(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: self.first_delay,
                max_backoff: self.max_delay,
                base: 2.0,
            },
            max_retries: self.retries as usize,
            retry_timeout: self.within,
        }
    }
}

/// The guard's settings: start-up probe, call limit and outage breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardPolicy {
    /// How long the probe (and the requests waiting for it) may take.
    pub probe_timeout: Duration,
    /// Longest one storage call may take, transfer included.
    pub call_timeout: Duration,
    /// Consecutive store faults that open the breaker (at least 1).
    pub failures_to_open: u32,
    /// `None`: once open, the store is skipped for the rest of the run. `Some(d)`: after `d`, one
    /// call is let through; its success closes the breaker.
    pub cool_down: Option<Duration>,
}

impl Default for GuardPolicy {
    fn default() -> Self {
        Resilience::default().guard
    }
}

/// Every timeout, retry and breaker setting, resolved once.
#[derive(Debug, Clone, PartialEq)]
pub struct Resilience {
    /// Establishing a connection (TCP and TLS): `connectTimeout`.
    pub connect: Duration,
    /// Waiting for an answer, or for more bytes of a transfer under way: `timeout`.
    pub answer: Duration,
    /// Waiting for the answer to a large upload (see the module documentation).
    pub bulk_answer: Duration,
    /// Cap on one request, streaming included.
    pub request: Duration,
    /// Retries of an http upstream's GET (a streamed PUT is never retried: its body is gone).
    pub http_get: Retry,
    /// Retries inside the object-store clients.
    pub object: Retry,
    /// The guard in front of the store.
    pub guard: GuardPolicy,
    /// What the server adds to its upload deadline before it abandons a store call.
    pub store_margin: Duration,
    /// How long the server's readiness probe (`/readyz`) waits for the store.
    pub ready_probe: Duration,
    /// How long a pooled connection may stay idle before it is closed ([`POOL_IDLE`]).
    pub pool_idle: Duration,
}

impl Default for Resilience {
    fn default() -> Self {
        Resilience::new(&Timeouts::default())
    }
}

impl Resilience {
    /// The policy for the configured timeouts.
    pub fn new(timeouts: &Timeouts) -> Self {
        let request = Duration::from_secs(15 * 60);
        Resilience {
            connect: timeouts.connect,
            answer: timeouts.answer,
            bulk_answer: Duration::from_secs(5 * 60),
            request,
            http_get: Retry {
                retries: 2,
                first_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(5),
                within: request,
            },
            object: Retry {
                retries: 2,
                first_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(2),
                within: Duration::from_secs(30),
            },
            guard: GuardPolicy {
                // The start-up check may take as long as any answer.
                probe_timeout: timeouts.answer,
                call_timeout: request,
                failures_to_open: 3,
                cool_down: None,
            },
            store_margin: STORE_MARGIN,
            ready_probe: READY_PROBE,
            pool_idle: POOL_IDLE,
        }
    }

    /// The policy of a run's configuration.
    pub fn from_config(config: &CacheConfig) -> Self {
        Resilience::new(&config.timeouts)
    }

    /// How long the server lets one store write take: its upload deadline (the body is bounded
    /// by it) plus the margin, a safety net for a store that hangs.
    pub fn store_bound(upload_timeout: Duration) -> Duration {
        upload_timeout + STORE_MARGIN
    }

    /// An object-store client's options: `bulk` for the calls of a large upload (longer answer
    /// timeout).
    pub fn object_client(&self, allow_http: bool, bulk: bool) -> ClientOptions {
        let answer = if bulk { self.bulk_answer } else { self.answer };
        ClientOptions::new()
            .with_connect_timeout(self.connect)
            .with_read_timeout(answer)
            .with_timeout(self.request)
            .with_pool_idle_timeout(self.pool_idle)
            .with_allow_http(allow_http)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_and_capped() {
        let r = Resilience::default().http_get;
        for n in 1..=20 {
            let d = r.delay(n);
            let top = r
                .first_delay
                .saturating_mul(1u32 << (n - 1).min(10))
                .min(r.max_delay);
            assert!(d >= top / 2 && d <= top, "attempt {n}: {d:?} vs {top:?}");
        }
    }

    #[test]
    fn the_configured_timeouts_reach_every_client_and_the_guard() {
        let t = Timeouts {
            connect: Duration::from_secs(2),
            answer: Duration::from_secs(7),
        };
        let r = Resilience::new(&t);
        assert_eq!((r.connect, r.answer), (t.connect, t.answer));
        assert_eq!(r.guard.probe_timeout, t.answer);
        assert_eq!(r.guard.call_timeout, r.request);
        assert_eq!(r.object.object_store().max_retries, 2);
        // Below Node's (and Azurite's) 5 s keep-alive.
        assert_eq!(r.pool_idle, POOL_IDLE);
        assert!(POOL_IDLE < Duration::from_secs(5));
        assert_eq!(
            Resilience::store_bound(Duration::from_secs(600)),
            Duration::from_secs(660)
        );
    }
}
