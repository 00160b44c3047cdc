//! The http backend's token sources against stand-ins on 127.0.0.1: GitHub Actions' OIDC token
//! endpoint (checks the request token, records the audience, answers `{"value": <jwt>}` with
//! tokens living a few seconds) and an upstream Nx-protocol server that records the
//! `Authorization` header of every request (and answers 401 when told to). The tokens are
//! unsigned but well-formed JWTs: the client only reads their `exp` and `iat` to schedule.

mod common;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use common::{body, hash};
use nx_open_cache::config::resolve;
use nx_open_cache::proxy;
use nx_open_cache::store::http::{HttpOptions, HttpStore, TOKEN_ENV};
use nx_open_cache::store::http_token::{
    TokenConfig, GITHUB_REQUEST_TOKEN_ENV, GITHUB_REQUEST_URL_ENV, OIDC_AUDIENCE_ENV,
    TOKEN_FILE_ENV,
};
use nx_open_cache::store::resilience::{Resilience, Retry};
use nx_open_cache::store::Store;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const REQUEST_TOKEN: &str = "gh-request-token-secret";
const AUDIENCE: &str = "https://cache.example.com/a b";
/// How long the stand-in's tokens live: refreshed a second (a quarter) before their exp.
const LIFETIME: u64 = 4;
/// Upper bound on any call, so that a wrong implementation fails instead of hanging.
const BOUND: Duration = Duration::from_secs(20);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An unsigned, well-formed JWT (`header.payload.sig`, base64url) with these claims.
fn jwt(claims: serde_json::Value) -> String {
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    format!(
        "{}.{}.{}",
        b64(br#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#),
        b64(claims.to_string().as_bytes()),
        b64(b"not-a-signature")
    )
}

/// The `n` claim of a token the stand-in issued.
fn serial(authorization: &str) -> u64 {
    let token = authorization.strip_prefix("Bearer ").unwrap_or("");
    let payload = token.split('.').nth(1).unwrap_or("");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap_or_default();
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["n"].as_u64())
        .unwrap_or(0)
}

#[derive(Default)]
struct GitHub {
    /// Token requests answered with a token.
    issued: AtomicUsize,
    /// Every request's query string.
    queries: Mutex<Vec<String>>,
}

async fn github_token(State(gh): State<Arc<GitHub>>, req: Request) -> Response {
    let query = req.uri().query().unwrap_or("").to_owned();
    gh.queries.lock().unwrap().push(query);
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {REQUEST_TOKEN}") {
        return (StatusCode::UNAUTHORIZED, "Bad credentials").into_response();
    }
    let n = gh.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let now = unix_now();
    let token = jwt(serde_json::json!({
        "iss": "https://token.actions.githubusercontent.com",
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + LIFETIME,
        "n": n,
    }));
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "count": 1, "value": token }).to_string(),
    )
        .into_response()
}

#[derive(Default)]
struct Upstream {
    /// The Authorization header of every request, in order.
    seen: Mutex<Vec<String>>,
    /// Answer the next request 401.
    refuse_next: AtomicBool,
    /// Answer every request 401.
    refuse_all: AtomicBool,
}

impl Upstream {
    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn upstream_answer(State(up): State<Arc<Upstream>>, req: Request) -> Response {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    up.seen.lock().unwrap().push(auth);
    let put = req.method() == axum::http::Method::PUT;
    // Read what comes (an upload), bounded.
    let _ = axum::body::to_bytes(req.into_body(), 1 << 20).await;
    if up.refuse_next.swap(false, Ordering::SeqCst) || up.refuse_all.load(Ordering::SeqCst) {
        return (
            StatusCode::UNAUTHORIZED,
            "nx-open-cache: OIDC token refused: expired",
        )
            .into_response();
    }
    if put {
        StatusCode::OK.into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

async fn github() -> (Arc<GitHub>, String) {
    let gh = Arc::new(GitHub::default());
    let router = axum::Router::new()
        .route("/_apis/token", axum::routing::get(github_token))
        .with_state(gh.clone());
    let addr = serve(router).await;
    // As GitHub gives it: with a query of its own.
    (gh, format!("http://{addr}/_apis/token?api-version=2.0"))
}

async fn upstream() -> (Arc<Upstream>, String) {
    let up = Arc::new(Upstream::default());
    let router = axum::Router::new()
        .fallback(upstream_answer)
        .with_state(up.clone());
    let addr = serve(router).await;
    (up, format!("http://{addr}"))
}

fn options(spool: &Path) -> HttpOptions {
    let base = Resilience::default();
    HttpOptions {
        resilience: Resilience {
            answer: Duration::from_secs(5),
            http_get: Retry {
                retries: 0,
                ..base.http_get
            },
            ..base
        },
        spool_dir: spool.to_path_buf(),
        ..HttpOptions::default()
    }
}

fn github_env(request_url: &str, request_token: &str) -> HashMap<String, String> {
    [
        (GITHUB_REQUEST_URL_ENV, request_url),
        (GITHUB_REQUEST_TOKEN_ENV, request_token),
        // Lower in the order: not used while GitHub's variables and an audience are there.
        (TOKEN_ENV, "static-token-not-used"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn github_store(
    base: &str,
    request_url: &str,
    request_token: &str,
    spool: &Path,
) -> Arc<dyn Store> {
    let config = TokenConfig::select(Some(AUDIENCE), &github_env(request_url, request_token));
    Arc::new(HttpStore::with_token(base, config, options(spool)).expect("client builds"))
}

async fn get(store: &Arc<dyn Store>, h: &str) -> Result<(), String> {
    match tokio::time::timeout(BOUND, store.get(&hash(h))).await {
        Err(_) => panic!("GET {h} hung"),
        Ok(Ok(None)) => Ok(()),
        Ok(Ok(Some(_))) => panic!("GET {h}: the stand-in stores nothing"),
        Ok(Err(e)) => Err(e.message),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_tokens_are_fetched_once_reused_and_refreshed_before_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let (gh, request_url) = github().await;
    let (up, base) = upstream().await;
    let store = github_store(&base, &request_url, REQUEST_TOKEN, dir.path());

    get(&store, "1").await.unwrap();
    assert_eq!(
        gh.issued.load(Ordering::SeqCst),
        1,
        "the first request fetches"
    );
    // GitHub's own query is kept, the audience is added percent-encoded.
    assert_eq!(
        gh.queries.lock().unwrap().clone(),
        ["api-version=2.0&audience=https%3A%2F%2Fcache.example.com%2Fa%20b"]
    );
    for h in ["2", "3", "4"] {
        get(&store, h).await.unwrap();
    }
    assert_eq!(
        gh.issued.load(Ordering::SeqCst),
        1,
        "later requests reuse it"
    );
    let seen = up.seen();
    assert_eq!(seen.len(), 4);
    assert!(seen.iter().all(|a| serial(a) == 1), "one token: {seen:?}");
    assert!(seen.iter().all(|a| !a.contains("static-token")));

    // Most of its life gone (less than a quarter left): the next request presents a new one.
    tokio::time::sleep(Duration::from_millis(3300)).await;
    get(&store, "5").await.unwrap();
    assert_eq!(gh.issued.load(Ordering::SeqCst), 2);
    assert_eq!(
        serial(&up.seen()[4]),
        2,
        "a new token after most of the lifetime"
    );
    get(&store, "6").await.unwrap();
    assert_eq!(gh.issued.load(Ordering::SeqCst), 2);
    assert_eq!(serial(&up.seen()[5]), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let (gh, request_url) = github().await;
    let (up, base) = upstream().await;
    let store = github_store(&base, &request_url, REQUEST_TOKEN, dir.path());
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            get(&store, &format!("{}", 100 + i)).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(gh.issued.load(Ordering::SeqCst), 1, "single-flight");
    assert_eq!(gh.queries.lock().unwrap().len(), 1);
    let seen = up.seen();
    assert_eq!(seen.len(), 16);
    assert!(seen.iter().all(|a| serial(a) == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_token_is_a_fault_naming_the_endpoint_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let (gh, request_url) = github().await;
    let (up, base) = upstream().await;
    let wrong = "wrong-request-token-value";
    let store = github_store(&base, &request_url, wrong, dir.path());
    let err = get(&store, "1").await.expect_err("no token, no request");
    assert!(
        err.contains("GitHub Actions' OIDC token endpoint") && err.contains("401 Unauthorized"),
        "{err}"
    );
    assert!(err.contains("ACTIONS_ID_TOKEN_REQUEST_URL"), "{err}");
    assert!(
        !err.contains(wrong) && !err.contains("api-version"),
        "{err}"
    );
    assert!(up.seen().is_empty(), "the upstream was never asked");
    // The failure is remembered for a moment: the endpoint is not hammered.
    let again = get(&store, "2").await.expect_err("still no token");
    assert_eq!(again, err.replace("/1:", "/2:"));
    assert_eq!(gh.queries.lock().unwrap().len(), 1);
    let upload = store
        .put(&hash("3"), &mut body(b"artifact", 4), Some(8))
        .await
        .expect_err("no token, no upload")
        .message;
    assert!(
        upload.contains("401 Unauthorized") && !upload.contains(wrong),
        "{upload}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_from_the_upstream_makes_the_next_request_fetch_again() {
    let dir = tempfile::tempdir().unwrap();
    let (gh, request_url) = github().await;
    let (up, base) = upstream().await;
    let store = github_store(&base, &request_url, REQUEST_TOKEN, dir.path());
    get(&store, "1").await.unwrap();
    // A GET refused: sent once more at once, with a new token.
    up.refuse_next.store(true, Ordering::SeqCst);
    get(&store, "2").await.unwrap();
    assert_eq!(gh.issued.load(Ordering::SeqCst), 2);
    let seen: Vec<u64> = up.seen().iter().map(|a| serial(a)).collect();
    assert_eq!(seen, [1, 1, 2]);
    // An upload refused: a fault (its body is gone), and the next request presents a new token.
    up.refuse_next.store(true, Ordering::SeqCst);
    let err = store
        .put(&hash("3"), &mut body(b"artifact", 4), Some(8))
        .await
        .expect_err("refused")
        .cause
        .expect("a cause");
    assert!(!err.lasting, "a new token may be accepted: {err:?}");
    assert!(err.reason.contains("GitHub Actions OIDC token"), "{err:?}");
    get(&store, "4").await.unwrap();
    assert_eq!(gh.issued.load(Ordering::SeqCst), 3);
    let seen: Vec<u64> = up.seen().iter().map(|a| serial(a)).collect();
    assert_eq!(seen, [1, 1, 2, 2, 3]);
    // Refused again with a new token: lasting, with the server's reason.
    up.refuse_all.store(true, Ordering::SeqCst);
    let e = store.get(&hash("5")).await.expect_err("refused");
    let cause = e.cause.expect("a cause");
    assert!(cause.lasting, "{cause:?}");
    assert!(
        e.message.contains("OIDC token refused: expired"),
        "{}",
        e.message
    );
    assert_eq!(gh.issued.load(Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_file_is_read_again_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (up, base) = upstream().await;
    let file = dir.path().join("token");
    let now = unix_now();
    let first = jwt(serde_json::json!({"n": 1, "iat": now, "exp": now + 3600}));
    std::fs::write(&file, format!("{first}\n")).unwrap();
    let env: HashMap<String, String> = [
        (TOKEN_FILE_ENV.to_owned(), file.display().to_string()),
        (TOKEN_ENV.to_owned(), "static-token-not-used".to_owned()),
        // An audience without GitHub's variables: falls back to the file.
        (OIDC_AUDIENCE_ENV.to_owned(), AUDIENCE.to_owned()),
    ]
    .into();
    let config = TokenConfig::select(Some(AUDIENCE), &env);
    assert!(config
        .describe()
        .starts_with(&format!("{TOKEN_FILE_ENV} (")));
    let store: Arc<dyn Store> =
        Arc::new(HttpStore::with_token(&base, config, options(dir.path())).unwrap());
    get(&store, "1").await.unwrap();
    get(&store, "2").await.unwrap();
    // Rewritten (as a CI renews it): the next look at the file (at most a second later) sees it.
    let second = jwt(serde_json::json!({"n": 2, "iat": now, "exp": now + 3600, "x": "longer"}));
    std::fs::write(&file, format!("{second}\nsecond line ignored\n")).unwrap();
    let later = filetime::FileTime::from_system_time(SystemTime::now() + Duration::from_secs(5));
    filetime::set_file_mtime(&file, later).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    get(&store, "3").await.unwrap();
    let seen: Vec<u64> = up.seen().iter().map(|a| serial(a)).collect();
    assert_eq!(seen, [1, 1, 2]);
    // Emptied mid-write: the token read before is kept while it lasts.
    std::fs::write(&file, "").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    get(&store, "4").await.unwrap();
    assert_eq!(serial(&up.seen()[3]), 2);
    // Gone, on a new store: a fault naming the file.
    std::fs::remove_file(&file).unwrap();
    let store: Arc<dyn Store> = Arc::new(
        HttpStore::with_token(&base, TokenConfig::select(None, &env), options(dir.path())).unwrap(),
    );
    let err = get(&store, "5").await.expect_err("no file");
    assert!(
        err.contains(TOKEN_FILE_ENV) && err.contains(&file.display().to_string()),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_jwt_in_the_token_variable_says_how_to_get_fresh_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (up, base) = upstream().await;
    up.refuse_all.store(true, Ordering::SeqCst);
    let old = jwt(serde_json::json!({"exp": unix_now() - 3 * 3600, "iat": unix_now() - 4 * 3600}));
    let store = HttpStore::new(&base, Some(&old), options(dir.path())).unwrap();
    let e = store.get(&hash("1")).await.expect_err("refused");
    for needle in [
        "refused the token in NX_OPEN_CACHE_TOKEN (401 Unauthorized)",
        "expired 3 h ago",
        "never refreshed",
        TOKEN_FILE_ENV,
        "oidcAudience",
    ] {
        assert!(e.message.contains(needle), "{needle}: {}", e.message);
    }
    let cause = e.cause.expect("a cause");
    assert!(
        cause.lasting && cause.reason.contains("expired 3 h ago"),
        "{cause:?}"
    );
    assert!(!e.message.contains(&old) && !cause.reason.contains(&old));
    assert_eq!(up.seen().len(), 1, "a static token is never fetched again");
    // Without a token, the refusal says where one can come from.
    let anonymous = HttpStore::new(&base, None, options(dir.path())).unwrap();
    let e = anonymous
        .get(&hash("1"))
        .await
        .expect_err("refused")
        .message;
    assert!(
        e.contains("NX_OPEN_CACHE_TOKEN is not set") && e.contains("oidcAudience"),
        "{e}"
    );
    // An audience without GitHub's variables: said so.
    let env: HashMap<String, String> = [(OIDC_AUDIENCE_ENV.to_owned(), AUDIENCE.to_owned())].into();
    let fallback = HttpStore::from_env(&base, &env).unwrap();
    assert!(!fallback.has_token());
    let e = fallback.get(&hash("1")).await.expect_err("refused").message;
    assert!(
        e.contains("id-token: write") && e.contains(GITHUB_REQUEST_URL_ENV),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_presents_the_oidc_token_nx_never_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let (gh, request_url) = github().await;
    let (up, base) = upstream().await;
    let options = serde_json::json!({"backend": "http", "url": base, "oidcAudience": AUDIENCE});
    let env = github_env(&request_url, REQUEST_TOKEN);
    let config = resolve(&options, &env, dir.path()).expect("config");
    assert_eq!(
        config.token_source(&env).as_deref(),
        Some(format!("GitHub Actions OIDC, audience {AUDIENCE:?}").as_str())
    );
    let p = proxy::start(&config, &env).expect("proxy");
    let client = reqwest::Client::new();
    for i in 0..3 {
        let url = format!("{}/v1/cache/{}", p.url, 2000 + i);
        let resp = client.get(&url).bearer_auth(&p.token).send().await.unwrap();
        assert_eq!(resp.status(), 404);
    }
    let nx_secret = p.token.clone();
    let s = p.stop().await;
    assert_eq!(s.error_count, 0, "{:?}", s.errors);
    assert_eq!(gh.issued.load(Ordering::SeqCst), 1);
    let seen = up.seen();
    // The start-up check and the three lookups, all with the OIDC token, never Nx's secret.
    assert!(seen.len() >= 3, "{seen:?}");
    assert!(seen.iter().all(|a| serial(a) == 1), "{seen:?}");
    assert!(seen.iter().all(|a| !a.contains(&nx_secret)));
}
