//! Prometheus metrics of the server (`GET /metrics`, OpenMetrics text).
//!
//! Names (all prefixed `nx_open_cache_`):
//! - `requests_total{route,method,status}`: answered requests.
//! - `request_duration_seconds{route,method}`: histogram, time until the response head is ready,
//!   of the requests a route serves (not of unmatched paths, nor of methods answered 405).
//!
//! Every label value comes from a fixed set, whatever clients send: `route` is the matched route
//! (`unmatched` for any other path), `method` one of [`METHODS`] or `other`, `status` a code the
//! server itself answered. So `/metrics` stays small (a few tens of KB at most).
//! - `received_bytes_total` / `sent_bytes_total`: artifact payload bytes stored / served.
//! - `hits_total` / `misses_total`: GET outcomes (a storage fault counts as a miss too).
//! - `stored_total` / `already_stored_total`: PUT outcomes (200 / 409).
//! - `storage_errors_total{operation}`: storage faults (`get`, `put`, `probe`).
//! - `refused_total{operation}`: objects read but not served (`get`) and uploads not stored
//!   (`put`) because they are not valid artifacts or cannot be opened or checked here.
//! - `uploads_in_flight`: PUT bodies being received right now.
//! - `rejected_uploads_total{reason}`: PUTs refused by a limit (`too_large`, `timeout`, `busy`,
//!   `length_required`, `bad_length`).
//! - `panics_total`: requests whose handler panicked (answered 500; the server keeps serving).
//! - `open_connections{trust}`: connections open now, `trusted` (a valid token was presented on
//!   it) or `untrusted` (not yet, or never).
//! - `evicted_connections_total`: idle connections closed to make room for new ones.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// The methods that keep their name in labels; any other is `other`.
pub const METHODS: &[&str] = &["GET", "PUT", "HEAD", "POST", "DELETE", "OPTIONS", "PATCH"];

/// The `method` label of a request method: itself when in [`METHODS`], else `other`.
pub fn method_label(method: &str) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

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
    panics: Counter,
    connections: ConnectionMetrics,
}

/// The connection gauges and counter, shared with the accept loop.
#[derive(Clone, Default)]
pub struct ConnectionMetrics {
    /// `open_connections{trust="trusted"}`.
    pub trusted: Gauge,
    /// `open_connections{trust="untrusted"}`.
    pub untrusted: Gauge,
    pub evicted: Counter,
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
        let panics = Counter::default();
        let open_connections = Family::<Labels, Gauge>::default();
        // Handles on the two series (a gauge clone shares its value). One statement each: the
        // family's read guard must be gone before the next series is inserted.
        let trusted = open_connections
            .get_or_create(&vec![("trust", "trusted".to_owned())])
            .clone();
        let untrusted = open_connections
            .get_or_create(&vec![("trust", "untrusted".to_owned())])
            .clone();
        let connections = ConnectionMetrics {
            trusted,
            untrusted,
            evicted: Counter::default(),
        };
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
        registry.register(
            "panics",
            "Requests whose handler panicked (answered 500)",
            panics.clone(),
        );
        registry.register(
            "open_connections",
            "Connections open, by whether a valid token was presented on them",
            open_connections,
        );
        registry.register(
            "evicted_connections",
            "Idle connections closed to make room for new ones",
            connections.evicted.clone(),
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
            panics,
            connections,
        }
    }

    /// Records one answered request (any method: it is labelled by [`method_label`]).
    pub fn request(&self, route: &'static str, method: &str, status: u16, seconds: f64) {
        let method = method_label(method);
        self.requests
            .get_or_create(&vec![
                ("route", route.to_owned()),
                ("method", method.to_owned()),
                ("status", status.to_string()),
            ])
            .inc();
        // A histogram is large: only for what the routes serve.
        if route == "unmatched" || status == 405 {
            return;
        }
        self.latency
            .get_or_create(&vec![
                ("route", route.to_owned()),
                ("method", method.to_owned()),
            ])
            .observe(seconds);
    }

    /// Counts a request whose handler panicked.
    pub fn panicked(&self) {
        self.panics.inc();
    }

    /// The connection gauges and counter (for the accept loop).
    pub fn connections(&self) -> ConnectionMetrics {
        self.connections.clone()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route with every method and every status the server can answer for it, all at
    /// once: the largest `/metrics` can get.
    #[test]
    fn every_label_combination_fits_in_64_kib() {
        let m = Metrics::new();
        let mut methods: Vec<&str> = METHODS.to_vec();
        methods.extend(["BREW", "X-ANYTHING"]);
        let cache_get: &[u16] = &[200, 400, 401, 404, 500];
        let cache_put: &[u16] = &[200, 400, 401, 403, 408, 409, 411, 413, 500, 503];
        let ops_get: &[u16] = &[200, 500, 503];
        for method in &methods {
            let cache = match *method {
                "GET" | "HEAD" => cache_get,
                "PUT" => cache_put,
                _ => &[405],
            };
            for status in cache {
                m.request("cache", method, *status, 0.01);
            }
            for route in ["healthz", "readyz", "metrics", "openapi"] {
                let ops = if matches!(*method, "GET" | "HEAD") {
                    ops_get
                } else {
                    &[405]
                };
                for status in ops {
                    m.request(route, method, *status, 0.01);
                }
            }
            m.request("unmatched", method, 404, 0.01);
        }
        for op in ["get", "put", "probe"] {
            m.storage_error(op);
            m.refused(op);
        }
        for reason in [
            "too_large",
            "timeout",
            "busy",
            "length_required",
            "bad_length",
        ] {
            m.rejected(reason);
        }
        m.panicked();
        let text = m.render().unwrap_or_default();
        eprintln!("/metrics at its largest: {} bytes", text.len());
        assert!(text.len() < 64 * 1024, "{} bytes", text.len());
        assert!(!text.contains("BREW") && text.contains("method=\"other\""));
    }
}
