//! The dashboard over real HTTP on 127.0.0.1: who may see it (401 / 403 / 200, `--ui-anonymous`),
//! the admin role kept out of the cache, the run-report endpoint's checks (400 naming the field,
//! 413, 403, 401), the page's security headers, the reserved snapshot keys, and the summary's
//! counts against `/metrics`.

mod common;

use nx_open_cache::config::Mode;
use nx_open_cache::key::Prefix;
use nx_open_cache::server::insights::{Insights, StorageInfo};
use nx_open_cache::server::{
    self, Auth, Limits, LogFormat, Role, RunningServer, ServerSettings, TokenSpec, UiSettings,
};
use nx_open_cache::stats::Stats;
use nx_open_cache::store::fs::FsStore;
use std::sync::Arc;

const RW: &str = "rw-secret-0123456789abcdef";
const RO: &str = "ro-secret-0123456789abcdef";
const ADMIN: &str = "admin-secret-0123456789abcdef";

struct Server {
    running: RunningServer,
    url: String,
    _dir: tempfile::TempDir,
}

async fn start(anonymous_ui: bool) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStore::new(dir.path().join("store"), Prefix::default());
    store.prepare().expect("store root");
    let auth = Auth {
        tokens: vec![
            TokenSpec::new("ci", Role::ReadWrite, RW),
            TokenSpec::new("dev", Role::ReadOnly, RO),
            TokenSpec::new("lead", Role::Admin, ADMIN),
        ],
        anonymous_read: None,
        oidc: None,
    };
    let insights = Arc::new(Insights::new(&auth, StorageInfo::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let running = server::serve_with_ui(
        listener,
        ServerSettings {
            store: Arc::new(store),
            auth,
            mode: Mode::ReadWrite,
            limits: Limits::server(),
            operations: true,
            log: LogFormat::Off,
            stats: Arc::new(Stats::default()),
        },
        None,
        UiSettings {
            insights,
            anonymous: anonymous_ui,
        },
    )
    .expect("server starts");
    Server {
        url: format!("http://{}", running.addr),
        running,
        _dir: dir,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn get(s: &Server, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = client().get(format!("{}{path}", s.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("GET reaches the server")
}

async fn post_report(s: &Server, token: Option<&str>, body: Vec<u8>) -> reqwest::Response {
    let mut req = client()
        .post(format!("{}/nx-open-cache/v1/runs", s.url))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("POST reaches the server")
}

/// A valid Nx artifact of about `len` bytes (what serve's check accepts).
fn artifact(len: usize) -> Vec<u8> {
    common::artifact(len, len as u64)
}

fn report(run_id: &str, tasks: &str) -> Vec<u8> {
    format!(
        r#"{{"format":"nx-open-cache-run-report","version":1,"runId":"{run_id}","startedAt":"2026-01-01T00:00:00Z","endedAt":"2026-01-01T00:00:09Z","nxVersion":"24.0.6","command":"run-many -t build","tasks":[{tasks}]}}"#
    )
    .into_bytes()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_default()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_dashboard_needs_an_admin_token() {
    let s = start(false).await;
    // The page itself holds no data: served to anyone, with a strict policy.
    let page = get(&s, "/ui", None).await;
    assert_eq!(page.status(), 200);
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        csp.starts_with("default-src 'none'; script-src 'sha256-")
            && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert_eq!(
        page.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    assert!(page
        .text()
        .await
        .unwrap_or_default()
        .contains("<title>nx-open-cache dashboard"));
    // Its API: 401 without a token or with an unknown one, 403 for the other roles, 200 admin.
    assert_eq!(get(&s, "/ui/api/summary", None).await.status(), 401);
    assert_eq!(
        get(&s, "/ui/api/summary", Some("x-unknown-0123456789"))
            .await
            .status(),
        401
    );
    let rw = get(&s, "/ui/api/summary", Some(RW)).await;
    assert_eq!(rw.status(), 403);
    let said = rw.text().await.unwrap_or_default();
    assert!(
        said.contains("\"ci\"") && said.contains("admin") && !said.contains(RW),
        "{said}"
    );
    assert_eq!(get(&s, "/ui/api/summary", Some(RO)).await.status(), 403);
    let ok = get(&s, "/ui/api/summary?range=1h", Some(ADMIN)).await;
    assert_eq!(ok.status(), 200);
    let v: serde_json::Value = ok.text().await.map(|t| json(&t)).unwrap_or_default();
    assert_eq!(v["format"], "nx-open-cache-ui-summary");
    assert_eq!(v["series"]["points"].as_array().map(Vec::len), Some(60));
    assert_eq!(
        get(&s, "/ui/api/summary?range=2y", Some(ADMIN))
            .await
            .status(),
        400
    );
    // The admin token opens nothing of the cache.
    let r = get(&s, "/v1/cache/123", Some(ADMIN)).await;
    assert_eq!(r.status(), 403);
    let r = client()
        .put(format!("{}/v1/cache/123", s.url))
        .bearer_auth(ADMIN)
        .body(artifact(10))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 403);
    // The snapshot's keys are not reachable through the cache route.
    let r = get(&s, "/v1/cache/nx-open-cache-ui-snapshot-a", Some(RW)).await;
    assert_eq!(r.status(), 400);
    // In any letter case (a case-insensitive filesystem would take it for the same file).
    for k in ["NX-OPEN-CACHE-UI-snapshot-a", "Nx-Open-Cache-Ui-SNAPSHOT-b"] {
        let r = get(&s, &format!("/v1/cache/{k}"), Some(RW)).await;
        assert_eq!(r.status(), 400, "{k}");
        let r = client()
            .put(format!("{}/v1/cache/{k}", s.url))
            .bearer_auth(RW)
            .body(artifact(10))
            .send()
            .await
            .expect("PUT");
        assert_eq!(r.status(), 400, "{k}");
    }
    s.running.stop().await;
}

#[tokio::test]
async fn anonymous_dashboard_only_when_configured() {
    let s = start(true).await;
    let r = get(&s, "/ui/api/summary", None).await;
    assert_eq!(r.status(), 200);
    let v = json(&r.text().await.unwrap_or_default());
    assert_eq!(v["format"], "nx-open-cache-ui-summary");
    assert!(
        v["storage"]["location"].is_null(),
        "no storage location without a token"
    );
    // A wrong token is still refused, and other roles still get 403.
    assert_eq!(
        get(&s, "/ui/api/summary", Some("x-unknown-0123456789"))
            .await
            .status(),
        401
    );
    assert_eq!(get(&s, "/ui/api/summary", Some(RW)).await.status(), 403);
    // Anonymous dashboard is not anonymous cache access.
    assert_eq!(get(&s, "/v1/cache/123", None).await.status(), 401);
    s.running.stop().await;
}

#[tokio::test]
async fn run_reports_are_checked_and_counted() {
    let s = start(false).await;
    let task = r#"{"id":"lib-a:build","hash":"111","outcome":"remote-hit","durationMs":30,"savedMs":4000,"bytes":100}"#;
    assert_eq!(
        post_report(&s, None, report("r1", task)).await.status(),
        401
    );
    // Read-only tokens report too (developer machines); a report decides no access.
    let ro = post_report(&s, Some(RO), report("r1", task)).await;
    assert_eq!(ro.status(), 200);
    let bad = post_report(
        &s,
        Some(RW),
        report(
            "r1",
            r#"{"id":"lib-a:build","hash":"111","outcome":"maybe","durationMs":1}"#,
        ),
    )
    .await;
    assert_eq!(bad.status(), 400);
    let said = bad.text().await.unwrap_or_default();
    assert!(said.contains("tasks[0].outcome"), "{said}");
    let big = vec![b' '; 1024 * 1024 + 1];
    assert_eq!(post_report(&s, Some(RW), big).await.status(), 413);
    let many = vec![task; 5001].join(",");
    let r = post_report(&s, Some(ADMIN), report("r2", &many)).await;
    assert_eq!(r.status(), 400);
    let ok = post_report(
        &s,
        Some(RW),
        report(
            "r1",
            &format!(
                r#"{task},{{"id":"lib-b:build","hash":"222","outcome":"stored","durationMs":9000}}"#
            ),
        ),
    )
    .await;
    assert_eq!(ok.status(), 200);
    // A run id is taken once per token: "r1" of token "dev" did not pre-empt "ci"'s.
    let again = post_report(&s, Some(RW), report("r1", task)).await;
    let v: serde_json::Value = again.text().await.map(|t| json(&t)).unwrap_or_default();
    assert_eq!(v["duplicate"], true);
    // A skipped task (no durationMs) and a command longer than 512 characters: accepted, cut.
    let long = format!("run-many --projects={}", "p,".repeat(400));
    let skipped = format!(
        r#"{{"format":"nx-open-cache-run-report","version":1,"runId":"r3","command":"{long}","tasks":[{{"id":"lib-c:build","hash":"333","outcome":"not-run"}}]}}"#
    );
    let r = post_report(&s, Some(RW), skipped.into_bytes()).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let v: serde_json::Value = get(&s, "/ui/api/summary", Some(ADMIN))
        .await
        .text()
        .await
        .map(|t| json(&t))
        .unwrap_or_default();
    assert_eq!(v["runs"]["reports"], 3);
    assert_eq!(v["runs"]["savedMs"], 8000);
    // The 401 above is the dashboard's, not a cache refusal.
    assert_eq!(v["totals"]["counts"]["refused"], 0);
    let command = v["runs"]["recent"][0]["command"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(command.chars().count(), 512);
    let tasks = v["tasks"].as_array().cloned().unwrap_or_default();
    let a = tasks
        .iter()
        .find(|t| t["id"] == "lib-a:build")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (a["project"].clone(), a["hits"].clone()),
        ("lib-a".into(), 2.into())
    );
    let b = tasks
        .iter()
        .find(|t| t["id"] == "lib-b:build")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (b["misses"].clone(), b["avgRunMs"].clone()),
        (1.into(), 9000.into())
    );
    assert_eq!(v["runs"]["recent"][0]["token"], "ci");
    assert_eq!(v["runs"]["recent"][2]["token"], "dev");
    assert!(tasks
        .iter()
        .any(|t| t["id"] == "lib-c:build" && t["notRun"] == 1));
    s.running.stop().await;
}

#[tokio::test]
async fn summary_counts_match_the_metrics() {
    let s = start(false).await;
    for (i, h) in ["1001", "1002", "1003"].iter().enumerate() {
        let r = client()
            .put(format!("{}/v1/cache/{h}", s.url))
            .bearer_auth(RW)
            .body(artifact(1000 * (i + 1)))
            .send()
            .await
            .expect("PUT");
        assert_eq!(r.status(), 200);
    }
    for h in ["1001", "1001", "1002", "9999"] {
        get(&s, &format!("/v1/cache/{h}"), Some(RO)).await;
    }
    let r = client()
        .put(format!("{}/v1/cache/1004", s.url))
        .bearer_auth(RO)
        .body(artifact(20))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 403);
    get(&s, "/v1/cache/1001", None).await;
    let metrics = get(&s, "/metrics", None)
        .await
        .text()
        .await
        .unwrap_or_default();
    let v: serde_json::Value = get(&s, "/ui/api/summary", Some(ADMIN))
        .await
        .text()
        .await
        .map(|t| json(&t))
        .unwrap_or_default();
    let c = &v["totals"]["counts"];
    assert_eq!(c["hits"], metric(&metrics, "nx_open_cache_hits_total"));
    assert_eq!(c["misses"], metric(&metrics, "nx_open_cache_misses_total"));
    assert_eq!(c["stored"], metric(&metrics, "nx_open_cache_stored_total"));
    assert_eq!(
        c["bytesSent"],
        metric(&metrics, "nx_open_cache_sent_bytes_total")
    );
    assert_eq!(
        c["bytesReceived"],
        metric(&metrics, "nx_open_cache_received_bytes_total")
    );
    assert_eq!(
        (c["hits"].clone(), c["misses"].clone()),
        (3.into(), 1.into())
    );
    assert_eq!(v["totals"]["unauthorized"], 1);
    let tokens = v["tokens"].as_array().cloned().unwrap_or_default();
    let dev = tokens
        .iter()
        .find(|t| t["name"] == "dev")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (dev["hits"].clone(), dev["misses"].clone()),
        (3.into(), 1.into())
    );
    assert_eq!(v["artifacts"]["mostRead"][0]["hash"], "1001");
    assert_eq!(v["artifacts"]["largest"][0]["hash"], "1003");
    let reasons = v["reasons"].as_array().cloned().unwrap_or_default();
    assert!(
        reasons.iter().any(|r| r["kind"] == "denied"
            && r["reason"]
                .as_str()
                .is_some_and(|x| x.contains("read-only"))),
        "{reasons:?}"
    );
    s.running.stop().await;
}
