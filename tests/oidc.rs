//! OIDC identity in the real `serve` (configuration file, verifier, server) on 127.0.0.1, with a
//! local issuer (discovery document and JWKS served by this test, Ed25519 keys made per run) and
//! real signatures: the main and PR rules put writes and reads in their namespaces, and every
//! kind of bad token is refused with a 401 saying why (never the token); unknown `kid` then a
//! key rotation (one fetch, rate-limited), cached keys through a JWKS outage, no keys at all, the
//! lifetime cap, and `--explain-token`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use nx_open_cache::serve::{self, RunningServe};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

const AUD: &str = "https://cache.example.test";
const REPO: &str = "acme/monorepo";

/// The local issuer: its keys (kid, key), whether it is down, how often its JWKS was fetched.
struct Issuer {
    url: String,
    keys: Mutex<Vec<(String, SigningKey)>>,
    down: AtomicBool,
    jwks_fetches: AtomicUsize,
}

fn new_key() -> SigningKey {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("random seed");
    SigningKey::from_bytes(&seed)
}

type JsonAnswer = Result<String, StatusCode>;

async fn discovery(State(i): State<Arc<Issuer>>) -> JsonAnswer {
    if i.down.load(Ordering::SeqCst) {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    Ok(json!({"issuer": i.url, "jwks_uri": format!("{}/jwks", i.url)}).to_string())
}

async fn jwks(State(i): State<Arc<Issuer>>) -> JsonAnswer {
    if i.down.load(Ordering::SeqCst) {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    i.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let keys = i.keys.lock().expect("keys");
    let list: Vec<Value> = keys
        .iter()
        .map(|(kid, k)| {
            json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig", "alg": "EdDSA",
                   "x": B64.encode(k.verifying_key().as_bytes())})
        })
        .collect();
    Ok(json!({ "keys": list }).to_string())
}

async fn start_issuer() -> Arc<Issuer> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let issuer = Arc::new(Issuer {
        url: format!("http://{addr}"),
        keys: Mutex::new(vec![("k1".into(), new_key())]),
        down: AtomicBool::new(false),
        jwks_fetches: AtomicUsize::new(0),
    });
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .with_state(issuer.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    issuer
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A compact JWS with `header` and `claims`, signed by `key` (Ed25519).
fn sign_with(header: &Value, claims: &Value, key: &SigningKey) -> String {
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", B64.encode(sig.to_bytes()))
}

impl Issuer {
    fn key(&self, kid: &str) -> SigningKey {
        let keys = self.keys.lock().expect("keys");
        keys.iter()
            .find(|(k, _)| k == kid)
            .map(|(_, k)| k.clone())
            .expect("known kid")
    }

    /// Claims of a GitHub Actions job of `REPO` on `git_ref` for `event`, valid for 10 minutes.
    fn claims(&self, git_ref: &str, event: &str) -> Value {
        json!({
            "iss": self.url, "aud": AUD, "sub": format!("repo:{REPO}:ref:{git_ref}"),
            "repository": REPO, "ref": git_ref, "event_name": event,
            "iat": now() - 5, "nbf": now() - 5, "exp": now() + 600,
        })
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_kid(claims, "k1")
    }

    fn sign_kid(&self, claims: &Value, kid: &str) -> String {
        sign_with(
            &json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}),
            claims,
            &self.key(kid),
        )
    }
}

const CONFIG: &str = r#"
[[oidc_issuers]]
name = "ci"
issuer = "ISSUER"
audience = ["https://cache.example.test"]
max_lifetime = "1h"

[[oidc_rules]]
name = "main"
issuer = "ci"
claims = { repository = "acme/monorepo", ref = "refs/heads/main" }
role = "read-write"
write_prefix = "trusted"
read_prefixes = ["trusted"]

[[oidc_rules]]
name = "pr"
issuer = "ci"
claims = { repository = "acme/monorepo", event_name = ["pull_request", "merge_group"] }
role = "read-write"
write_prefix = "pr"
read_prefixes = ["trusted", "pr"]

[[oidc_rules]]
name = "other"
issuer = "ci"
deny = true
"#;

fn config_for(dir: &Path, issuer_url: &str) -> nx_open_cache::serve::config::ServeConfig {
    let file = dir.join("server.toml");
    std::fs::write(&file, CONFIG.replace("ISSUER", issuer_url)).expect("write config");
    let storage = format!("fs:{}", dir.join("store").display());
    let args: Vec<String> = [
        "--storage",
        &storage,
        "--listen",
        "127.0.0.1:0",
        "--log",
        "off",
        "--check-artifacts",
        "off",
        "--config",
        &file.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    serve::config::resolve(&args, &HashMap::new(), dir).expect("configuration")
}

fn start(dir: &Path, issuer: &Issuer) -> RunningServe {
    serve::start(&config_for(dir, &issuer.url), &HashMap::new()).expect("serve starts")
}

const HASH: &str = "1234567890123456";

async fn put(s: &RunningServe, token: &str, hash: &str, body: &[u8]) -> (u16, String) {
    let resp = reqwest::Client::new()
        .put(format!("{}/v1/cache/{hash}", s.url))
        .bearer_auth(token)
        .body(body.to_vec())
        .send()
        .await
        .expect("PUT answered");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

async fn get_hash(s: &RunningServe, token: &str, hash: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/cache/{hash}", s.url))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET answered");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// A 401 whose body says `why`, and never holds the token.
async fn refused(s: &RunningServe, token: &str, why: &str) {
    let (status, body) = get_hash(s, token, HASH).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body.starts_with("nx-open-cache: OIDC token refused: "),
        "{body}"
    );
    assert!(body.contains(why), "wanted {why:?} in {body:?}");
    assert!(!body.contains(token) && !body.contains(token.split('.').nth(2).unwrap_or("~")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn main_and_pr_tokens_write_and_read_their_namespaces() {
    let dir = tempfile::tempdir().expect("tempdir");
    let issuer = start_issuer().await;
    let s = start(dir.path(), &issuer);
    assert!(s.banner.contains("OIDC issuers: ci"), "{}", s.banner);
    let main = issuer.sign(&issuer.claims("refs/heads/main", "push"));
    let pr = issuer.sign(&issuer.claims("refs/pull/7/merge", "pull_request"));
    assert_eq!(put(&s, &main, "1000000000000001", b"main").await.0, 200);
    assert_eq!(put(&s, &pr, "2000000000000002", b"pr").await.0, 200);
    assert!(dir.path().join("store/trusted").is_dir());
    assert!(dir.path().join("store/pr").is_dir());
    // The PR reads main's artifacts; main never reads the PR's.
    assert_eq!(
        get_hash(&s, &pr, "1000000000000001").await,
        (200, "main".into())
    );
    assert_eq!(get_hash(&s, &main, "2000000000000002").await.0, 404);
    // A PR cannot put an artifact where main reads it: its write of main's hash lands in pr/.
    assert_eq!(put(&s, &pr, "3000000000000003", b"poison").await.0, 200);
    assert_eq!(get_hash(&s, &main, "3000000000000003").await.0, 404);
    // Tokens are cached after the first check: many requests, one key fetch.
    for _ in 0..20 {
        assert_eq!(get_hash(&s, &main, "1000000000000001").await.0, 200);
    }
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_with_the_reason_never_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let issuer = start_issuer().await;
    let s = start(dir.path(), &issuer);
    let good = issuer.claims("refs/heads/main", "push");
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    refused(
        &s,
        &issuer.sign(&with("exp", json!(now() - 3600))),
        "expired",
    )
    .await;
    refused(
        &s,
        &issuer.sign(&with("nbf", json!(now() + 3600))),
        "not valid yet",
    )
    .await;
    refused(
        &s,
        &issuer.sign(&with("aud", json!("https://other.test"))),
        "audience",
    )
    .await;
    refused(
        &s,
        &issuer.sign(&with("iss", json!("https://evil.test"))),
        "not configured",
    )
    .await;
    refused(
        &s,
        &issuer.sign(&with("repository", json!("evil/monorepo"))),
        "rule \"other\" denies",
    )
    .await;
    let mut no_exp = good.clone();
    no_exp.as_object_mut().expect("object").remove("exp");
    refused(&s, &issuer.sign(&no_exp), "\"exp\"").await;
    let long = with("exp", json!(now() + 3 * 3600));
    refused(&s, &issuer.sign(&long), "max_lifetime").await;
    // Unsigned.
    let none = format!(
        "{}.{}.",
        B64.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
        B64.encode(good.to_string())
    );
    let (status, body) = get_hash(&s, &none, HASH).await;
    assert_eq!(status, 401, "{body}");
    let none_sig = format!("{none}AAAA");
    refused(&s, &none_sig, "alg \"none\"").await;
    // HS256 with the public key as the HMAC secret (the classic key-confusion attack).
    let public = issuer.key("k1").verifying_key();
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some("k1".into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &good,
        &jsonwebtoken::EncodingKey::from_secret(public.as_bytes()),
    )
    .expect("HS256 token");
    refused(&s, &hs, "HMAC").await;
    // A tampered payload keeps the original signature.
    let token = issuer.sign(&good);
    let parts: Vec<&str> = token.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(with("ref", json!("refs/heads/main2")).to_string()),
        parts[2]
    );
    refused(&s, &tampered, "signature does not verify").await;
    // Signed by a key the issuer does not publish, under its kid.
    let forged = sign_with(&json!({"alg": "EdDSA", "kid": "k1"}), &good, &new_key());
    refused(&s, &forged, "signature does not verify").await;
    // Not a JWT at all: the ordinary 401.
    let (status, body) = get_hash(&s, "not-a-token-0123456789", HASH).await;
    assert_eq!(status, 401);
    assert!(!body.contains("OIDC"), "{body}");
    // A refused PUT stores nothing.
    let (status, _) = put(&s, &issuer.sign(&with("aud", json!("x"))), HASH, b"x").await;
    assert_eq!(status, 401);
    assert!(!dir.path().join("store/trusted").exists());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_outage_and_no_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let issuer = start_issuer().await;
    let s = start(dir.path(), &issuer);
    assert_eq!(
        issuer.jwks_fetches.load(Ordering::SeqCst),
        1,
        "fetched at start"
    );
    let main = issuer.claims("refs/heads/main", "push");
    assert_eq!(get_hash(&s, &issuer.sign(&main), HASH).await.0, 404);
    // Rotation: a new key appears; a token naming it makes the server fetch the JWKS again.
    issuer
        .keys
        .lock()
        .expect("keys")
        .push(("k2".into(), new_key()));
    let rotated = issuer.sign_kid(&main, "k2");
    assert_eq!(
        get_hash(&s, &rotated, HASH).await.0,
        404,
        "accepted: a miss"
    );
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 2);
    // Made-up kids cost at most one fetch a minute.
    for i in 0..5 {
        let fake = sign_with(
            &json!({"alg": "EdDSA", "kid": format!("x{i}")}),
            &main,
            &new_key(),
        );
        refused(&s, &fake, "no EdDSA key with kid").await;
    }
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 2);
    // The issuer goes down: keys already held keep working for new tokens.
    issuer.down.store(true, Ordering::SeqCst);
    let mut later = main.clone();
    later["jti"] = json!("another token");
    assert_eq!(
        get_hash(&s, &issuer.sign_kid(&later, "k2"), HASH).await.0,
        404
    );
    s.stop().await;

    // A server that never got keys: a clear 401, and it starts anyway.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let s2 = start(dir2.path(), &issuer);
    refused(&s2, &issuer.sign(&main), "cannot be fetched").await;
    // Back up: after the minute's rate limit the keys are fetched on the next token (not
    // waited for here); explain says why it is refused meanwhile.
    s2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_token_shows_the_checks_and_rules_without_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let issuer = start_issuer().await;
    let config = config_for(dir.path(), &issuer.url);
    let pr = issuer.sign(&issuer.claims("refs/pull/7/merge", "pull_request"));
    let (text, accepted) = tokio::task::spawn_blocking({
        let pr = pr.clone();
        move || {
            let e = serve::explain::explain(&config, &pr).expect("explained");
            (e.text, e.accepted)
        }
    })
    .await
    .expect("joined");
    assert!(accepted, "{text}");
    assert!(text.contains("signature: valid"), "{text}");
    assert!(
        text.contains(
            "\"main\" (read-write, writes \"trusted\", reads \"trusted\"): does not match"
        ),
        "{text}"
    );
    assert!(
        text.contains("ref = \"refs/heads/main\": no (the token has \"refs/pull/7/merge\")"),
        "{text}"
    );
    assert!(text.contains("\"pr\""), "{text}");
    assert!(
        text.contains(
            "accepted: rule \"pr\": read-write, writes \"pr\", reads \"trusted\", \"pr\""
        ),
        "{text}"
    );
    assert!(!text.contains(&pr) && !text.contains(pr.split('.').nth(2).unwrap_or("~")));
    let config = config_for(dir.path(), &issuer.url);
    let other = issuer.sign(&json!({
        "iss": issuer.url, "aud": AUD, "repository": "evil/x", "exp": now() + 60, "iat": now()
    }));
    let (text, accepted) = tokio::task::spawn_blocking(move || {
        let e = serve::explain::explain(&config, &other).expect("explained");
        (e.text, e.accepted)
    })
    .await
    .expect("joined");
    assert!(!accepted, "{text}");
    assert!(text.contains("\"other\" (deny): MATCHES"), "{text}");
    assert!(
        text.ends_with("refused: rule \"other\" denies this token"),
        "{text}"
    );
}

#[test]
fn config_mistakes_name_the_table_key_and_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = format!("fs:{}", dir.path().join("store").display());
    let check = |toml: &str, want: &str| {
        let file = dir.path().join("s.toml");
        std::fs::write(&file, toml).expect("write");
        let args: Vec<String> = [
            "--storage",
            &storage,
            "--config",
            &file.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let e = serve::config::resolve(&args, &HashMap::new(), dir.path())
            .err()
            .map(|e| e.message)
            .unwrap_or_default();
        assert!(e.contains(want), "wanted {want:?} in {e:?}");
    };
    let issuer = "[[oidc_issuers]]\nname = \"gh\"\nissuer = \"https://token.actions.githubusercontent.com\"\naudience = \"x\"\n";
    let rule = "[[oidc_rules]]\nname = \"r\"\nrole = \"read-only\"\n";
    check(
        &format!("{issuer}algorithms = [\"HS256\"]\n{rule}"),
        "never accepted",
    );
    check(
        &format!("{issuer}algorithms = [\"RS512\"]\n{rule}"),
        "RS256, ES256, EdDSA",
    );
    check(
        &issuer.replace("https://token", "http://token"),
        "must use https",
    );
    check(
        &issuer.replace("audience = \"x\"\n", ""),
        "has no \"audience\"",
    );
    check(issuer, "no [[oidc_rules]] that grants access");
    check(
        &format!("{issuer}{rule}issuer = \"gl\"\n"),
        "names issuer \"gl\"",
    );
    check(
        &format!("{issuer}{rule}claims = {{ ref = \"refs/[x\" }}\n"),
        "invalid glob",
    );
    check(
        &format!("{issuer}{rule}deny = true\n"),
        "denies (deny = true) and also gives",
    );
    check(
        &format!("{issuer}{rule}colour = 1\n"),
        "unknown key \"colour\" in OIDC rule \"r\"",
    );
    check(
        &format!("{issuer}max_lifetime = \"30d\"\n{rule}"),
        "at most",
    );
    check(rule, "no [[oidc_issuers]]");
}
