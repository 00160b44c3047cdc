//! Prometheus metrics of the server (`GET /metrics`, OpenMetrics text).
//!
//! Names (all prefixed `nx_open_cache_`):
//! - `requests_total{route,method,status}`: answered requests.
//! - `request_duration_seconds{route,method}`: histogram, time until the response head is ready.
//! - `received_bytes_total` / `sent_bytes_total`: artifact payload bytes stored / served.
//! - `hits_total` / `misses_total`: GET outcomes (a storage fault counts as a miss too).
//! - `stored_total` / `already_stored_total`: PUT outcomes (200 / 409).
//! - `storage_errors_total{operation}`: storage faults (`get`, `put`, `probe`).
//! - `refused_total{operation}`: objects read but not served (`get`) and uploads not stored
//!   (`put`) because they are not valid artifacts or cannot be opened or checked here.
//! - `uploads_in_flight`: PUT bodies being received right now.
//! - `rejected_uploads_total{reason}`: PUTs refused by a limit (`too_large`, `timeout`, `busy`,
//!   `length_required`, `bad_length`).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~65 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// The server's metric handles and their registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
    received: Counter,
    sent: Counter,
    hits: Counter,
    misses: Counter,
    stored: Counter,
    already_stored: Counter,
    storage_errors: Family<Labels, Counter>,
    rejected: Family<Labels, Counter>,
    refused: Family<Labels, Counter>,
    uploads_in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("nx_open_cache");
        let requests = Family::<Labels, Counter>::default();
        let latency = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let received = Counter::default();
        let sent = Counter::default();
        let hits = Counter::default();
        let misses = Counter::default();
        let stored = Counter::default();
        let already_stored = Counter::default();
        let storage_errors = Family::<Labels, Counter>::default();
        let rejected = Family::<Labels, Counter>::default();
        let refused = Family::<Labels, Counter>::default();
        let uploads_in_flight = Gauge::default();
        registry.register(
            "requests",
            "Answered requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time until the response head is ready, by route and method",
            latency.clone(),
        );
        registry.register(
            "received_bytes",
            "Artifact bytes stored (PUT payloads)",
            received.clone(),
        );
        registry.register(
            "sent_bytes",
            "Artifact bytes served (GET payloads)",
            sent.clone(),
        );
        registry.register("hits", "GETs answered with an artifact", hits.clone());
        registry.register(
            "misses",
            "GETs answered 404 (including storage faults)",
            misses.clone(),
        );
        registry.register("stored", "PUTs that stored an artifact", stored.clone());
        registry.register(
            "already_stored",
            "PUTs answered 409 (hash already stored)",
            already_stored.clone(),
        );
        registry.register(
            "storage_errors",
            "Storage faults by operation",
            storage_errors.clone(),
        );
        registry.register(
            "rejected_uploads",
            "PUTs refused by a limit, by reason",
            rejected.clone(),
        );
        registry.register(
            "refused",
            "Objects not served (get) or uploads not stored (put): not valid artifacts, or sealed in a way this server cannot open or check",
            refused.clone(),
        );
        registry.register(
            "uploads_in_flight",
            "PUT bodies being received",
            uploads_in_flight.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            received,
            sent,
            hits,
            misses,
            stored,
            already_stored,
            storage_errors,
            rejected,
            refused,
            uploads_in_flight,
        }
    }

    /// Records one answered request.
    pub fn request(&self, route: &'static str, method: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&vec![
                ("route", route.to_owned()),
                ("method", method.to_owned()),
                ("status", status.to_string()),
            ])
            .inc();
        self.latency
            .get_or_create(&vec![
                ("route", route.to_owned()),
                ("method", method.to_owned()),
            ])
            .observe(seconds);
    }

    pub fn hit(&self, bytes: u64) {
        self.hits.inc();
        self.sent.inc_by(bytes);
    }

    pub fn miss(&self) {
        self.misses.inc();
    }

    pub fn stored(&self, bytes: u64) {
        self.stored.inc();
        self.received.inc_by(bytes);
    }

    pub fn already_stored(&self) {
        self.already_stored.inc();
    }

    pub fn storage_error(&self, operation: &'static str) {
        self.storage_errors
            .get_or_create(&vec![("operation", operation.to_owned())])
            .inc();
    }

    pub fn rejected(&self, reason: &'static str) {
        self.rejected
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
    }

    /// Counts one refused object (`get`) or upload (`put`).
    pub fn refused(&self, operation: &'static str) {
        self.refused
            .get_or_create(&vec![("operation", operation.to_owned())])
            .inc();
    }

    /// Counts an upload as in flight until the guard is dropped.
    pub fn upload_started(&self) -> InFlight {
        self.uploads_in_flight.inc();
        InFlight(self.uploads_in_flight.clone())
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Decrements `uploads_in_flight` when dropped.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
