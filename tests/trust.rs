//! Trust namespaces through the proxy over real HTTP on loopback: an untrusted run (ci-split:
//! writes `untrusted/`, reads `trusted/` then `untrusted/`) never reaches what a trusted run
//! (writes and reads `trusted/` only) restores.

mod common;

use common::{artifact, object_files};
use nx_open_cache::config::resolve;
use nx_open_cache::proxy::{self, Proxy};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const CI_SPLIT: &str = r#"{"path": "store", "prefix": "team", "writePrefix": "untrusted", "readPrefixes": ["trusted", "untrusted"]}"#;
const TRUSTED_ENV: &[(&str, &str)] = &[
    ("NX_OPEN_CACHE_WRITE_PREFIX", "trusted"),
    ("NX_OPEN_CACHE_READ_PREFIXES", "trusted"),
];

fn start(dir: &Path, options: &str, env: &[(&str, &str)]) -> Proxy {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let options: serde_json::Value = serde_json::from_str(options).expect("test options are JSON");
    let config = resolve(&options, &env, dir).expect("valid config");
    proxy::start(&config, &env).expect("proxy starts")
}

async fn get(p: &Proxy, hash: &str) -> (u16, Vec<u8>) {
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/cache/{hash}", p.url))
        .bearer_auth(&p.token)
        .send()
        .await
        .expect("GET reaches the proxy");
    let status = resp.status().as_u16();
    (status, resp.bytes().await.expect("body").to_vec())
}

async fn put(p: &Proxy, hash: &str, body: Vec<u8>) -> u16 {
    reqwest::Client::new()
        .put(format!("{}/v1/cache/{hash}", p.url))
        .bearer_auth(&p.token)
        .body(body)
        .send()
        .await
        .expect("PUT reaches the proxy")
        .status()
        .as_u16()
}

/// Object paths relative to the store root, e.g. `team/untrusted/ab/cd/1234`.
fn objects(store: &Path) -> Vec<String> {
    object_files(store)
        .into_iter()
        .map(|p: PathBuf| {
            p.strip_prefix(store)
                .expect("inside the store")
                .to_string_lossy()
                .replace('\\', "/")
        })
        .collect()
}

fn namespace_of(object: &str) -> &str {
    object.split('/').nth(1).unwrap_or("")
}

#[tokio::test]
async fn untrusted_writes_never_reach_a_trusted_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // Valid Nx artifacts (the proxy serves nothing else); the poisoned one differs in content.
    let poisoned = artifact(1000, 666);
    let clean = artifact(50_000, 3);

    // The PR run stores first, under the hash the main run will compute.
    let pr = start(dir.path(), CI_SPLIT, &[]);
    assert!(
        pr.location
            .ends_with("; writes untrusted/, reads trusted/ then untrusted/"),
        "{}",
        pr.location
    );
    assert_eq!(get(&pr, "42").await.0, 404);
    assert_eq!(put(&pr, "42", poisoned.clone()).await, 200);
    assert_eq!(get(&pr, "42").await, (200, poisoned.clone()));
    pr.stop().await;
    let after_pr = objects(&store);
    assert_eq!(after_pr.len(), 1, "{after_pr:?}");
    assert!(after_pr[0].starts_with("team/untrusted/"), "{after_pr:?}");

    // The main run: a miss, so it rebuilds and stores the clean artifact under trusted/.
    let main = start(dir.path(), CI_SPLIT, TRUSTED_ENV);
    assert!(
        main.location.ends_with("; writes trusted/, reads trusted/"),
        "{}",
        main.location
    );
    assert_eq!(
        get(&main, "42").await.0,
        404,
        "the untrusted artifact was read"
    );
    assert_eq!(put(&main, "42", clean.clone()).await, 200);
    assert_eq!(get(&main, "42").await, (200, clean.clone()));
    let s = main.stop().await;
    assert_eq!((s.hits, s.misses, s.stored), (1, 1, 1));
    let mut spaces: Vec<&str> = Vec::new();
    let all = objects(&store);
    for o in &all {
        spaces.push(namespace_of(o));
    }
    spaces.sort();
    assert_eq!(spaces, ["trusted", "untrusted"], "{all:?}");

    // A later PR run reads trusted/ first: the clean artifact, not its own poisoned one.
    let pr2 = start(dir.path(), CI_SPLIT, &[]);
    assert_eq!(get(&pr2, "42").await, (200, clean.clone()));
    // It can still not write over trusted/: its writes go to untrusted/, where 42 exists.
    assert_eq!(put(&pr2, "42", artifact(10, 1)).await, 409);
    // A hash only in untrusted/ is found there (second in the read order).
    let pr_only = artifact(100, 7);
    assert_eq!(put(&pr2, "7", pr_only.clone()).await, 200);
    assert_eq!(get(&pr2, "7").await, (200, pr_only));
    pr2.stop().await;
    let trusted: Vec<String> = objects(&store)
        .into_iter()
        .filter(|o| namespace_of(o) == "trusted")
        .collect();
    assert_eq!(trusted.len(), 1, "only the main run wrote to trusted/");

    // And the trusted run still never sees the PR-only hash.
    let main2 = start(dir.path(), CI_SPLIT, TRUSTED_ENV);
    assert_eq!(get(&main2, "7").await.0, 404);
    main2.stop().await;
}

#[tokio::test]
async fn default_layout_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let p = start(dir.path(), r#"{"path": "store"}"#, &[]);
    assert!(!p.location.contains("writes"), "{}", p.location);
    assert_eq!(put(&p, "1", b"x".to_vec()).await, 200);
    p.stop().await;
    let all = objects(&store);
    assert_eq!(all.len(), 1);
    // <fan>/<fan>/<hash>: no namespace directory.
    assert_eq!(all[0].split('/').count(), 3, "{all:?}");
}

#[tokio::test]
async fn a_read_only_trusted_reader_reads_both_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let opts = r#"{"path": "store"}"#;
    let a = start(dir.path(), opts, &[("NX_OPEN_CACHE_WRITE_PREFIX", "a")]);
    let (from_a, from_b, only_b) = (artifact(10, 1), artifact(10, 2), artifact(10, 3));
    assert_eq!(put(&a, "5", from_a.clone()).await, 200);
    a.stop().await;
    let b = start(dir.path(), opts, &[("NX_OPEN_CACHE_WRITE_PREFIX", "b")]);
    assert_eq!(put(&b, "5", from_b.clone()).await, 200);
    assert_eq!(put(&b, "6", only_b.clone()).await, 200);
    b.stop().await;
    let ab = start(
        dir.path(),
        opts,
        &[
            ("NX_OPEN_CACHE_READ_PREFIXES", "a,b"),
            ("NX_OPEN_CACHE_MODE", "read-only"),
        ],
    );
    assert_eq!(get(&ab, "5").await, (200, from_a.clone()));
    assert_eq!(get(&ab, "6").await, (200, only_b));
    assert_eq!(put(&ab, "9", b"x".to_vec()).await, 403);
    ab.stop().await;
    let ba = start(dir.path(), opts, &[("NX_OPEN_CACHE_READ_PREFIXES", "b,a")]);
    assert_eq!(get(&ba, "5").await, (200, from_b));
    ba.stop().await;
}
