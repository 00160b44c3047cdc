//! The proxy over real HTTP on loopback: the status codes Nx's client relies on, auth, modes, faults.

mod common;

use common::{artifact, noise, object_files};
use nx_open_cache::config::{resolve, Mode};
use nx_open_cache::proxy::{self, Proxy};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

fn start(dir: &Path, options: serde_json::Value, env: &[(&str, &str)]) -> Proxy {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let config = resolve(&options, &env, dir).expect("valid config");
    proxy::start(&config, &env).expect("proxy starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn get(p: &Proxy, hash: &str) -> reqwest::Response {
    client()
        .get(format!("{}/v1/cache/{hash}", p.url))
        .bearer_auth(&p.token)
        .send()
        .await
        .expect("GET reaches the proxy")
}

async fn put(p: &Proxy, hash: &str, body: Vec<u8>) -> reqwest::StatusCode {
    client()
        .put(format!("{}/v1/cache/{hash}", p.url))
        .bearer_auth(&p.token)
        .body(body)
        .send()
        .await
        .expect("PUT reaches the proxy")
        .status()
}

#[tokio::test]
async fn protocol_round_trip_and_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(dir.path(), serde_json::json!({"path": "store"}), &[]);
    assert!(p.url.starts_with("http://127.0.0.1:"));
    assert_eq!(get(&p, "111").await.status(), 404);
    let data = artifact(300_000, 5);
    let len = data.len() as u64;
    assert_eq!(put(&p, "111", data.clone()).await, 200);
    assert_eq!(put(&p, "111", b"other".to_vec()).await, 409);
    let resp = get(&p, "111").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/octet-stream"
    );
    assert_eq!(resp.bytes().await.unwrap().to_vec(), data);
    // A hash that could escape the directory never reaches storage.
    let bad = client()
        .get(format!("{}/v1/cache/..%2Fx", p.url))
        .bearer_auth(&p.token)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let s = p.stop().await;
    assert_eq!((s.hits, s.misses, s.stored, s.already_stored), (1, 1, 1, 1));
    assert_eq!((s.bytes_down, s.bytes_up), (len, len));
    assert_eq!(s.error_count, 0);
}

#[tokio::test]
async fn large_artifacts_stream_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(dir.path(), serde_json::json!({"path": "store"}), &[]);
    let data = artifact(40 << 20, 11);
    assert_eq!(put(&p, "big", data.clone()).await, 200);
    let got = get(&p, "big").await.bytes().await.unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got.as_ref() == data.as_slice());
    p.stop().await;
}

#[tokio::test]
async fn token_is_required_and_401_is_text_plain() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(dir.path(), serde_json::json!({"path": "store"}), &[]);
    for auth in [
        None,
        Some("Bearer wrong"),
        Some(&*format!("Bearer {}x", p.token)),
        Some(&*format!("Basic {}", p.token)),
    ] {
        let mut req = client()
            .put(format!("{}/v1/cache/1", p.url))
            .body(vec![1u8; 1000]);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{auth:?}");
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "text/plain"
        );
    }
    assert!(object_files(&dir.path().join("store")).is_empty());
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_of_one_hash_one_200_rest_409() {
    let dir = tempfile::tempdir().unwrap();
    let p = std::sync::Arc::new(start(dir.path(), serde_json::json!({"path": "store"}), &[]));
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let data = artifact(1 << 20, i + 100);
            (put(&p, "4242", data.clone()).await, data)
        }));
    }
    let mut ok = Vec::new();
    let mut conflicts = 0;
    for t in tasks {
        let (status, data) = t.await.unwrap();
        match status.as_u16() {
            200 => ok.push(data),
            409 => conflicts += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok.len(), conflicts), (1, 15));
    assert_eq!(get(&p, "4242").await.bytes().await.unwrap().to_vec(), ok[0]);
    assert_eq!(object_files(&dir.path().join("store")).len(), 1);
}

#[tokio::test]
async fn read_only_mode_serves_but_never_writes() {
    let dir = tempfile::tempdir().unwrap();
    let rw = start(dir.path(), serde_json::json!({"path": "store"}), &[]);
    let seed = artifact(10, 1);
    assert_eq!(put(&rw, "1", seed.clone()).await, 200);
    rw.stop().await;
    let before = object_files(&dir.path().join("store"));
    let ro = start(
        dir.path(),
        serde_json::json!({"path": "store"}),
        &[("NX_OPEN_CACHE_MODE", "read-only")],
    );
    assert_eq!(ro.mode, Mode::ReadOnly);
    assert_eq!(put(&ro, "2", vec![7u8; 100_000]).await, 403);
    assert_eq!(get(&ro, "1").await.bytes().await.unwrap().to_vec(), seed);
    let s = ro.stop().await;
    assert_eq!((s.refused_writes, s.hits, s.error_count), (1, 1, 0));
    assert_eq!(object_files(&dir.path().join("store")), before);
}

#[tokio::test]
async fn storage_faults_become_misses_and_refusals_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("not-a-dir"), b"x").unwrap();
    let p = start(dir.path(), serde_json::json!({"path": "not-a-dir"}), &[]);
    assert_eq!(get(&p, "1").await.status(), 404);
    assert_eq!(put(&p, "1", b"data".to_vec()).await, 403);
    assert_eq!(put(&p, "2", b"data".to_vec()).await, 403);
    let s = p.stop().await;
    assert!(s.error_count >= 3, "{s:?}");
    assert!(
        s.errors.iter().all(|e| e.reason.contains("not-a-dir")),
        "every reason names the path: {:?}",
        s.errors
    );
}

#[tokio::test]
async fn corrupt_entry_is_a_miss_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(dir.path(), serde_json::json!({"path": "store"}), &[]);
    assert_eq!(put(&p, "66", noise(5000, 1)).await, 200);
    let files = object_files(&dir.path().join("store"));
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&files[0], bytes).unwrap();
    assert_eq!(get(&p, "66").await.status(), 404);
    let s = p.stop().await;
    assert_eq!((s.hits, s.misses, s.error_count), (0, 1, 1));
    assert!(
        s.errors[0].reason.contains("digest mismatch"),
        "{:?}",
        s.errors
    );
}

/// A client that declares more bytes than it sends and hangs up: nothing may become visible.
#[tokio::test]
async fn truncated_upload_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(dir.path(), serde_json::json!({"path": "store"}), &[]);
    let addr = p.url.trim_start_matches("http://").to_owned();
    let token = p.token.clone();
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "PUT /v1/cache/77 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 100000\r\n\r\n"
        )
        .unwrap();
        s.write_all(&[1u8; 5000]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    })
    .await
    .unwrap();
    assert_eq!(get(&p, "77").await.status(), 404);
    assert!(object_files(&dir.path().join("store")).is_empty());
    let s = p.stop().await;
    assert_eq!(s.stored, 0);
}

#[tokio::test]
async fn missing_directory_is_created_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(dir.path(), serde_json::json!({"path": "a/b/c"}), &[]);
    assert!(dir.path().join("a/b/c").is_dir());
    assert_eq!(put(&p, "1", b"x".to_vec()).await, 200);
    p.stop().await;
}
