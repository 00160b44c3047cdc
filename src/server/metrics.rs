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
use std::sync::OnceLock;

type Labels = Vec<(&'static str, String)>;

/// Slots of the table of request series (a few times the combinations the server answers).
const SERIES_SLOTS: usize = 512;

/// The handles of one (route, method, status): a clone of a family's series shares its value.
struct Series {
    route: &'static str,
    method: &'static str,
    status: u16,
    requests: Counter,
    /// `None` where no histogram is kept (unmatched paths, 405).
    latency: Option<Histogram>,
}

/// Where the lookup of (route, method, status) starts in the table (FNV-1a).
fn slot_of(route: &str, method: &str, status: u16) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for b in route
        .bytes()
        .chain([0])
        .chain(method.bytes())
        .chain(status.to_le_bytes())
    {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h as usize % SERIES_SLOTS
}

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
    /// The series of the requests seen so far, found without allocating (open addressing; a
    /// slot, once set, never changes). Each is made in its family on first use, as before.
    series: Box<[OnceLock<Series>]>,
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
            series: (0..SERIES_SLOTS).map(|_| OnceLock::new()).collect(),
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
        match self.series(route, method, status) {
            Some(s) => {
                s.requests.inc();
                if let Some(h) = &s.latency {
                    h.observe(seconds);
                }
            }
            // The table is full (not with the server's own routes): through the families.
            None => {
                let made = self.make_series(route, method, status);
                made.requests.inc();
                if let Some(h) = &made.latency {
                    h.observe(seconds);
                }
            }
        }
    }

    /// The handles of (route, method, status) from the table, made on first use.
    fn series(&self, route: &'static str, method: &'static str, status: u16) -> Option<&Series> {
        let start = slot_of(route, method, status);
        (0..SERIES_SLOTS).find_map(|i| {
            let slot = &self.series[(start + i) % SERIES_SLOTS];
            let s = slot.get_or_init(|| self.make_series(route, method, status));
            (s.status == status && s.method == method && s.route == route).then_some(s)
        })
    }

    /// Makes (or finds) the series of (route, method, status) in the families.
    fn make_series(&self, route: &'static str, method: &'static str, status: u16) -> Series {
        let requests = self
            .requests
            .get_or_create(&vec![
                ("route", route.to_owned()),
                ("method", method.to_owned()),
                ("status", status.to_string()),
            ])
            .clone();
        // A histogram is large: only for what the routes serve.
        let latency = (route != "unmatched" && status != 405).then(|| {
            self.latency
                .get_or_create(&vec![
                    ("route", route.to_owned()),
                    ("method", method.to_owned()),
                ])
                .clone()
        });
        Series {
            route,
            method,
            status,
            requests,
            latency,
        }
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

    fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
    }

    /// Counts through the table of handles are the families' series: the same text as when
    /// each request looked its series up.
    #[test]
    fn requests_counted_through_the_table_show_in_the_families() {
        let m = Metrics::new();
        for _ in 0..3 {
            m.request("cache", "GET", 200, 0.001);
        }
        m.request("cache", "GET", 404, 0.001);
        m.request("cache", "BREW", 405, 0.001);
        m.request("unmatched", "GET", 404, 0.001);
        let text = m.render().unwrap_or_default();
        let requests =
            |labels: &str| line(&text, &format!("nx_open_cache_requests_total{{{labels}}}"));
        assert_eq!(
            requests(r#"route="cache",method="GET",status="200""#),
            Some(r#"nx_open_cache_requests_total{route="cache",method="GET",status="200"} 3"#)
        );
        assert!(requests(r#"route="cache",method="GET",status="404""#)
            .is_some_and(|l| l.ends_with(" 1")));
        assert!(requests(r#"route="cache",method="other",status="405""#)
            .is_some_and(|l| l.ends_with(" 1")));
        assert!(requests(r#"route="unmatched",method="GET",status="404""#)
            .is_some_and(|l| l.ends_with(" 1")));
        // One histogram, for what the cache route served (not 405, not unmatched).
        let count = line(
            &text,
            r#"nx_open_cache_request_duration_seconds_count{route="cache",method="GET"}"#,
        );
        assert!(count.is_some_and(|l| l.ends_with(" 4")), "{text}");
        assert_eq!(
            text.matches("request_duration_seconds_count{").count(),
            1,
            "{text}"
        );
        // Series appear when first used, as before.
        assert!(!text.contains("status=\"500\""));
    }

    /// More combinations than the table holds still count (through the families).
    #[test]
    fn a_full_table_still_counts() {
        let m = Metrics::new();
        for status in 0..(SERIES_SLOTS as u16 + 10) {
            m.request("cache", "PUT", status, 0.001);
        }
        m.request("cache", "PUT", 7, 0.001);
        m.request("cache", "PUT", SERIES_SLOTS as u16 + 5, 0.001);
        let text = m.render().unwrap_or_default();
        let series = |status: u16| {
            line(
                &text,
                &format!(
                    r#"nx_open_cache_requests_total{{route="cache",method="PUT",status="{status}"}}"#
                ),
            )
        };
        assert!(series(7).is_some_and(|l| l.ends_with(" 2")));
        assert!(series(SERIES_SLOTS as u16 + 5).is_some_and(|l| l.ends_with(" 2")));
        assert!(series(1).is_some_and(|l| l.ends_with(" 1")));
    }

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
