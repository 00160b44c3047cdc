//! The proxy's per-request events (what the plugin's run history reads), the accounting of
//! artifact metadata keys (`<hash>-nxoc-meta`), and the run report it forwards to an `http`
//! upstream. Everything on 127.0.0.1.

mod common;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, post};
use axum::Router;
use common::{artifact, noise};
use nx_open_cache::config::resolve;
use nx_open_cache::host::registry::merge;
use nx_open_cache::proxy::{self, Proxy, RUN_REPORT_ROUTE};
use nx_open_cache::stats::{Done, Event, Op, Outcome, Snapshot, Stats, MAX_EVENTS};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn start(dir: &Path, options: serde_json::Value, env: &[(&str, &str)]) -> Proxy {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let config = resolve(&options, &env, dir).expect("valid config");
    proxy::start(&config, &env).expect("proxy starts")
}

async fn get(p: &Proxy, hash: &str) -> StatusCode {
    reqwest::Client::new()
        .get(format!("{}/v1/cache/{hash}", p.url))
        .bearer_auth(&p.token)
        .send()
        .await
        .expect("GET reaches the proxy")
        .status()
}

async fn put(p: &Proxy, hash: &str, body: Vec<u8>) -> StatusCode {
    reqwest::Client::new()
        .put(format!("{}/v1/cache/{hash}", p.url))
        .bearer_auth(&p.token)
        .body(body)
        .send()
        .await
        .expect("PUT reaches the proxy")
        .status()
}

/// The events without their times (which vary), as (hash, op, outcome, bytes).
fn shape(events: &[Event]) -> Vec<(&str, Op, Outcome, u64)> {
    events
        .iter()
        .map(|e| (e.hash.as_str(), e.op, e.outcome, e.bytes))
        .collect()
}

#[tokio::test]
async fn every_artifact_request_is_an_event_with_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(dir.path(), serde_json::json!({"path": "store"}), &[]);
    let data = artifact(20_000, 3);
    let len = data.len() as u64;
    assert_eq!(get(&p, "101").await, 404);
    assert_eq!(put(&p, "101", data.clone()).await, 200);
    assert_eq!(put(&p, "101", data).await, 409);
    assert_eq!(get(&p, "101").await, 200);
    // Nx's uploads are not checked; what is read is: noise is stored, then refused.
    assert_eq!(put(&p, "202", noise(3000, 9)).await, 200);
    assert_eq!(get(&p, "202").await, 404);
    // Unauthorised and invalid requests are no events.
    let anonymous = reqwest::Client::new()
        .get(format!("{}/v1/cache/303", p.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(get(&p, "bad.hash").await, 400);
    let live = p.stats();
    assert_eq!(live.events.len(), 6, "stats() carries the events so far");
    let s = p.stop().await;
    assert_eq!(
        shape(&s.events),
        vec![
            ("101", Op::Get, Outcome::Miss, 0),
            ("101", Op::Put, Outcome::Stored, len),
            ("101", Op::Put, Outcome::AlreadyStored, 0),
            ("101", Op::Get, Outcome::Hit, len),
            ("202", Op::Put, Outcome::Stored, 3000),
            ("202", Op::Get, Outcome::Refused, 0),
        ]
    );
    assert_eq!(s.events_dropped, 0);
    let refused = &s.events[5];
    let reason = refused.reason.as_deref().unwrap_or("");
    assert!(reason.contains("not a valid Nx artifact"), "{reason}");
    assert!(s.events[..5].iter().all(|e| e.reason.is_none()));
    // The counters are what they always were.
    assert_eq!((s.hits, s.misses, s.stored, s.already_stored), (1, 2, 2, 1));
    assert_eq!(s.refused_count, 1);
    // The JSON the host sends: camelCase, the reason only where there is one.
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["eventsDropped"], 0);
    assert_eq!(json["events"][2]["outcome"], "already-stored");
    assert_eq!(json["events"][0]["op"], "get");
    assert!(json["events"][0].get("reason").is_none());
    assert!(json["events"][5]["millis"].is_u64());
}

#[tokio::test]
async fn read_only_and_faults_are_events_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let ro = start(
        dir.path(),
        serde_json::json!({"path": "store"}),
        &[("NX_OPEN_CACHE_MODE", "read-only")],
    );
    assert_eq!(put(&ro, "7", artifact(100, 1)).await, 403);
    let s = ro.stop().await;
    assert_eq!(shape(&s.events), vec![("7", Op::Put, Outcome::ReadOnly, 0)]);
    let reason = s.events[0].reason.clone().unwrap_or_default();
    assert!(reason.contains("read-only"), "{reason}");
    assert_eq!(s.refused_writes, 1);

    std::fs::write(dir.path().join("not-a-dir"), b"x").unwrap();
    let broken = start(dir.path(), serde_json::json!({"path": "not-a-dir"}), &[]);
    assert_eq!(get(&broken, "8").await, 404);
    assert_eq!(put(&broken, "8", artifact(100, 2)).await, 403);
    let s = broken.stop().await;
    assert_eq!(
        shape(&s.events),
        vec![
            ("8", Op::Get, Outcome::Error, 0),
            ("8", Op::Put, Outcome::Error, 0)
        ]
    );
    for e in &s.events {
        let reason = e.reason.as_deref().unwrap_or("");
        assert!(reason.contains("not-a-dir"), "the fault's reason: {reason}");
    }
    assert_eq!(s.misses, 1, "a fault is still a miss");
}

#[tokio::test]
async fn meta_keys_are_served_and_stored_but_counted_apart() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(dir.path(), serde_json::json!({"path": "store"}), &[]);
    let meta = artifact(2000, 4);
    assert_eq!(get(&p, "555-nxoc-meta").await, 404);
    assert_eq!(put(&p, "555-nxoc-meta", meta.clone()).await, 200);
    assert_eq!(put(&p, "555-nxoc-meta", meta.clone()).await, 409);
    let body = reqwest::Client::new()
        .get(format!("{}/v1/cache/555-nxoc-meta", p.url))
        .bearer_auth(&p.token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(body.as_ref() == meta.as_slice(), "served byte for byte");
    // Beside an artifact of the same hash, which stays its own object.
    assert_eq!(get(&p, "555").await, 404);
    let s = p.stop().await;
    assert_eq!((s.meta_reads, s.meta_writes), (1, 1));
    assert_eq!(shape(&s.events), vec![("555", Op::Get, Outcome::Miss, 0)]);
    assert_eq!((s.hits, s.misses, s.stored, s.already_stored), (0, 1, 0, 0));
    assert_eq!((s.bytes_down, s.bytes_up), (0, 0));
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(
        (json["metaReads"].as_u64(), json["metaWrites"].as_u64()),
        (Some(1), Some(1))
    );
}

#[test]
fn events_are_bounded_and_the_rest_counted_as_dropped() {
    let stats = Stats::with_events();
    for i in 0..MAX_EVENTS + 25 {
        let hash = i.to_string();
        stats.request(Done {
            hash: &hash,
            op: Op::Get,
            outcome: Outcome::Miss,
            bytes: 0,
            millis: 1,
            timed: true,
            reason: None,
        });
    }
    let s = stats.snapshot();
    assert_eq!(s.events.len(), MAX_EVENTS);
    assert_eq!(s.events_dropped, 25);
    assert_eq!(s.events[0].hash, "0", "the oldest are kept");
    assert_eq!(
        s.misses as usize,
        MAX_EVENTS + 25,
        "every request is counted"
    );
    // A server's counters keep no events.
    let server = Stats::default();
    server.request(Done {
        hash: "1",
        op: Op::Get,
        outcome: Outcome::Hit,
        bytes: 5,
        millis: 1,
        timed: true,
        reason: None,
    });
    assert!(server.snapshot().events.is_empty());
    assert_eq!(server.snapshot().hits, 1);

    // Merged runs (an Nx without run ids): in order, still bounded.
    let mut a = s;
    let b = Snapshot {
        events: vec![Event {
            hash: "x".into(),
            op: Op::Put,
            outcome: Outcome::Stored,
            bytes: 1,
            millis: 1,
            reason: None,
        }],
        events_dropped: 2,
        meta_reads: 3,
        ..Snapshot::default()
    };
    merge(&mut a, b.clone());
    assert_eq!(
        (a.events.len(), a.events_dropped, a.meta_reads),
        (MAX_EVENTS, 28, 3)
    );
    let mut c = Snapshot::default();
    merge(&mut c, b.clone());
    merge(&mut c, b);
    assert_eq!(c.events.len(), 2);
    assert_eq!((c.events_dropped, c.meta_reads), (4, 6));
}

// --- run reports -----------------------------------------------------------------------------

/// What the upstream does with a run report.
#[derive(Clone, Copy)]
enum Upstream {
    Answer(u16),
    /// Never answers.
    Hang,
}

#[derive(Default)]
struct Seen {
    reports: Vec<(HeaderMap, Bytes)>,
}

struct Recorder {
    mode: Upstream,
    seen: Mutex<Seen>,
}

/// A small upstream on 127.0.0.1: cache reads miss, run reports are recorded.
async fn upstream(mode: Upstream) -> (String, Arc<Recorder>, tokio::task::JoinHandle<()>) {
    let rec = Arc::new(Recorder {
        mode,
        seen: Mutex::new(Seen::default()),
    });
    async fn report(
        State(rec): State<Arc<Recorder>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> axum::response::Response {
        rec.seen.lock().unwrap().reports.push((headers, body));
        match rec.mode {
            Upstream::Answer(status) => StatusCode::from_u16(status)
                .unwrap_or(StatusCode::OK)
                .into_response(),
            Upstream::Hang => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                StatusCode::OK.into_response()
            }
        }
    }
    let app = Router::new()
        .route("/nx-open-cache/v1/runs", post(report))
        .route("/v1/cache/{hash}", any(|| async { StatusCode::NOT_FOUND }))
        .with_state(rec.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), rec, task)
}

fn http_proxy(dir: &Path, url: &str) -> Proxy {
    start(
        dir,
        serde_json::json!({"backend": "http", "url": url}),
        &[("NX_OPEN_CACHE_TOKEN", "upstream-secret-token")],
    )
}

async fn post_report(p: &Proxy, body: Vec<u8>, token: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{}{RUN_REPORT_ROUTE}", p.url))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("the proxy answers")
}

fn report() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "format": "nx-open-cache-run-report", "version": 1, "runId": "r1",
        "startedAt": "2026-11-27T10:00:00.000Z", "endedAt": "2026-11-27T10:01:00.000Z",
        "nxVersion": "24.0.6", "command": "run-many -t build",
        "tasks": [{"id": "lib-a:build", "hash": "123", "outcome": "stored", "durationMs": 900}]
    }))
    .unwrap()
}

#[tokio::test]
async fn run_reports_are_forwarded_with_the_upstream_token() {
    let dir = tempfile::tempdir().unwrap();
    let (url, rec, server) = upstream(Upstream::Answer(202)).await;
    let p = http_proxy(dir.path(), &url);
    let body = report();
    let resp = post_report(&p, body.clone(), Some(&p.token)).await;
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(
        answer,
        serde_json::json!({"forwarded": true, "status": 202})
    );
    {
        let seen = rec.seen.lock().unwrap();
        assert_eq!(seen.reports.len(), 1);
        let (headers, got) = &seen.reports[0];
        assert_eq!(got.as_ref(), body.as_slice(), "forwarded byte for byte");
        assert_eq!(headers["authorization"], "Bearer upstream-secret-token");
        assert_eq!(headers["content-type"], "application/json");
    }
    // Refused before anything is forwarded: no token, not JSON, not an object, too large.
    assert_eq!(post_report(&p, report(), None).await.status(), 401);
    assert_eq!(post_report(&p, report(), Some("wrong")).await.status(), 401);
    let bad = post_report(&p, b"{not json".to_vec(), Some(&p.token)).await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("not valid JSON"));
    assert_eq!(
        post_report(&p, b"[1]".to_vec(), Some(&p.token))
            .await
            .status(),
        400
    );
    let mut huge = b"{\"x\":\"".to_vec();
    huge.extend(std::iter::repeat_n(b'a', proxy::MAX_RUN_REPORT_BYTES));
    huge.extend(b"\"}");
    assert_eq!(post_report(&p, huge, Some(&p.token)).await.status(), 413);
    assert_eq!(rec.seen.lock().unwrap().reports.len(), 1);
    // The report is no artifact request.
    let s = p.stop().await;
    assert!(s.events.is_empty() && s.error_count == 0, "{s:?}");
    server.abort();
}

#[tokio::test]
async fn an_upstream_without_run_reports_is_asked_once() {
    let dir = tempfile::tempdir().unwrap();
    let (url, rec, server) = upstream(Upstream::Answer(404)).await;
    let p = http_proxy(dir.path(), &url);
    for _ in 0..2 {
        let resp = post_report(&p, report(), Some(&p.token)).await;
        assert_eq!(resp.status(), 200);
        let answer: serde_json::Value =
            serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert_eq!(answer["forwarded"], false);
        assert!(answer["reason"].as_str().unwrap_or("").contains("404"));
    }
    p.stop().await;
    // Remembered for the process, also by the next run's proxy.
    let next = http_proxy(dir.path(), &url);
    assert_eq!(
        post_report(&next, report(), Some(&next.token))
            .await
            .status(),
        200
    );
    next.stop().await;
    assert_eq!(rec.seen.lock().unwrap().reports.len(), 1);
    server.abort();
}

#[tokio::test]
async fn a_hanging_upstream_costs_at_most_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (url, rec, server) = upstream(Upstream::Hang).await;
    let p = http_proxy(dir.path(), &url);
    let resp = post_report(&p, report(), Some(&p.token)).await;
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(answer["forwarded"], false);
    let reason = answer["reason"].as_str().unwrap_or("");
    assert!(reason.contains("did not answer within 2 s"), "{reason}");
    assert!(!reason.contains("upstream-secret-token"));
    assert_eq!(rec.seen.lock().unwrap().reports.len(), 1);
    // A later report is tried again (only a 404 is remembered).
    let again = post_report(&p, report(), Some(&p.token)).await;
    assert_eq!(again.status(), 200);
    assert_eq!(rec.seen.lock().unwrap().reports.len(), 2);
    p.stop().await;
    server.abort();
}

#[tokio::test]
async fn other_backends_take_the_report_and_do_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(dir.path(), serde_json::json!({"path": "store"}), &[]);
    assert_eq!(
        post_report(&p, report(), Some(&p.token)).await.status(),
        204
    );
    assert_eq!(
        post_report(&p, b"nope".to_vec(), Some(&p.token))
            .await
            .status(),
        400
    );
    let s = p.stop().await;
    assert!(s.events.is_empty());
}

#[test]
fn the_run_report_option_is_a_boolean_of_the_http_backend() {
    let dir = tempfile::tempdir().unwrap();
    let env = HashMap::new();
    let http = |v: serde_json::Value| serde_json::json!({"backend": "http", "url": "http://127.0.0.1:1", "runReport": v});
    assert!(resolve(&http(serde_json::json!(false)), &env, dir.path()).is_ok());
    assert!(resolve(&http(serde_json::json!(true)), &env, dir.path()).is_ok());
    let err = resolve(&http(serde_json::json!(5)), &env, dir.path()).unwrap_err();
    assert_eq!(err.option, "runReport");
    let fs = serde_json::json!({"path": "c", "runReport": false});
    let err = resolve(&fs, &env, dir.path()).unwrap_err();
    assert!(err.message.contains("does not apply"), "{}", err.message);
}

#[tokio::test]
async fn a_stopped_run_sends_its_report_straight_to_the_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let (url, rec, server) = upstream(Upstream::Answer(401)).await;
    let env: HashMap<String, String> = [(
        "NX_OPEN_CACHE_TOKEN".to_owned(),
        "upstream-secret-token".to_owned(),
    )]
    .into();
    let config = resolve(
        &serde_json::json!({"backend": "http", "url": url}),
        &env,
        dir.path(),
    )
    .unwrap();
    let sent = proxy::send_run_report(&config, &env, report()).await;
    let json = sent.as_ref().map(proxy::run_report_json);
    assert_eq!(
        json,
        Some(
            serde_json::json!({"forwarded": false, "status": 401, "reason": "the server answered 401"})
        )
    );
    {
        let seen = rec.seen.lock().unwrap();
        assert_eq!(seen.reports.len(), 1);
        assert_eq!(
            seen.reports[0].0["authorization"],
            "Bearer upstream-secret-token"
        );
        assert_eq!(seen.reports[0].1.as_ref(), report().as_slice());
    }
    // Checked before anything is sent.
    let bad = proxy::send_run_report(&config, &env, b"[]".to_vec()).await;
    assert!(matches!(
        bad,
        Some(nx_open_cache::store::http::RunReportSent::Failed(_))
    ));
    assert_eq!(rec.seen.lock().unwrap().reports.len(), 1);
    // Other backends: nothing to send.
    let fs = resolve(&serde_json::json!({"path": "c"}), &env, dir.path()).unwrap();
    assert!(proxy::send_run_report(&fs, &env, report()).await.is_none());
    server.abort();
}

/// The cost of booking one request, events off and on (the first 10,000 are kept, the rest only
/// counted). Opt-in, prints, asserts nothing about time:
/// `cargo test --profile fast --test proxy_events -- --ignored --nocapture booking_cost`.
#[test]
#[ignore]
fn booking_cost() {
    const N: usize = 1_000_000;
    let hashes: Vec<String> = (0..N as u64)
        .map(|i| (5_115_008_516_830_458_631u64 + i).to_string())
        .collect();
    let book = |stats: &Stats, range: std::ops::Range<usize>| {
        let started = std::time::Instant::now();
        let count = range.len();
        for i in range {
            stats.request(Done {
                hash: &hashes[i],
                op: if i % 2 == 0 { Op::Get } else { Op::Put },
                outcome: if i % 2 == 0 {
                    Outcome::Hit
                } else {
                    Outcome::Stored
                },
                bytes: 1000,
                millis: 1,
                timed: true,
                reason: None,
            });
        }
        started.elapsed().as_nanos() as f64 / count as f64
    };
    let off = Stats::default();
    let off_first = book(&off, 0..MAX_EVENTS);
    let off_rest = book(&off, MAX_EVENTS..N);
    let on = Stats::with_events();
    let on_first = book(&on, 0..MAX_EVENTS);
    let on_rest = book(&on, MAX_EVENTS..N);
    println!(
        "ns per booked request: events off {off_first:.0} / {off_rest:.0}; events on {on_first:.0} \
         (first {MAX_EVENTS}, kept) / {on_rest:.0} (the rest, counted as dropped)"
    );
}
