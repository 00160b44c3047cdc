//! `nx-open-cache serve` on fs storage in which someone with write access to the directory planted
//! symbolic links: a client with a read-write token can neither read files from outside the root
//! nor make the server create files outside it. The real `serve` (configuration, store, server)
//! on 127.0.0.1. Unix only (symbolic links made with std::os::unix).
#![cfg(unix)]

mod common;

use nx_open_cache::key::TaskHash;
use nx_open_cache::serve::{self, RunningServe};
use nx_open_cache::store::fs::FsStore;
use std::path::{Path, PathBuf};

const SECRET: &str = "rw-secret-0123456789abcdef";

fn start(storage: &Path) -> RunningServe {
    let env = common::serve_env(SECRET);
    // The bodies here are short markers, not Nx artifacts: this test is about the links.
    let extra = ["--check-artifacts", "off"];
    let config = common::serve_fs_config(storage, SECRET, &extra, storage);
    serve::start(&config, &env).expect("serve starts")
}

async fn put(s: &RunningServe, hash: &str, body: &[u8]) -> u16 {
    reqwest::Client::new()
        .put(format!("{}/v1/cache/{hash}", s.url))
        .bearer_auth(SECRET)
        .body(body.to_vec())
        .send()
        .await
        .expect("PUT answered")
        .status()
        .as_u16()
}

async fn get(s: &RunningServe, hash: &str) -> (u16, Vec<u8>) {
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/cache/{hash}", s.url))
        .bearer_auth(SECRET)
        .send()
        .await
        .expect("GET answered");
    let status = resp.status().as_u16();
    (status, resp.bytes().await.expect("body").to_vec())
}

/// Every file below `dir` with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("list").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).expect("read")));
            }
        }
    }
    out.sort();
    out
}

fn object_path(storage: &Path, hash: &str) -> PathBuf {
    FsStore::new(storage, Default::default()).object_path(&TaskHash::parse(hash).expect("hash"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_links_neither_serve_nor_receive_files_outside_the_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = dir.path().join("store");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&storage).expect("store dir");
    std::fs::create_dir_all(&outside).expect("outside dir");
    let server = start(&storage);

    // A fan-out directory linked to a directory holding a valid object for the hash: a read
    // would serve it if the link were followed.
    let secret_hash = "7001";
    let object = object_path(&storage, secret_hash);
    let bb = object.parent().expect("bb");
    let aa = bb.parent().expect("aa");
    let planted_tree = outside.join("tree");
    std::fs::create_dir_all(planted_tree.join(bb.file_name().expect("bb name")))
        .expect("planted tree");
    std::fs::write(
        planted_tree
            .join(bb.file_name().expect("bb name"))
            .join(secret_hash),
        nx_open_cache::envelope::seal(b"bytes from outside the cache directory"),
    )
    .expect("planted object");
    std::os::unix::fs::symlink(&planted_tree, aa).expect("link aa");

    // An object name linked to a file outside (as an attacker would an authorized_keys).
    let victim = outside.join("authorized_keys");
    std::fs::write(&victim, b"ssh-ed25519 AAAA... admin\n").expect("victim");
    let linked_hash = "7002";
    let linked = object_path(&storage, linked_hash);
    std::fs::create_dir_all(linked.parent().expect("parent")).expect("fan dirs");
    std::os::unix::fs::symlink(&victim, &linked).expect("link object");

    let before = files(&outside);
    assert_eq!(
        get(&server, secret_hash).await.0,
        404,
        "never served from outside"
    );
    assert_eq!(get(&server, linked_hash).await.0, 404);
    assert_eq!(files(&outside), before, "nothing outside changed");
    // Both links were at names the store owns: removed, so the hash works again.
    assert_eq!(put(&server, secret_hash, b"first build").await, 200);
    assert_eq!(
        get(&server, secret_hash).await,
        (200, b"first build".to_vec())
    );

    // A write through the object-name link would overwrite the file outside.
    std::fs::create_dir_all(linked.parent().expect("parent")).expect("fan dirs");
    std::os::unix::fs::symlink(&victim, &linked).expect("link object again");
    assert_eq!(
        put(&server, linked_hash, b"ssh-ed25519 evil").await,
        403,
        "not stored"
    );
    assert_eq!(files(&outside), before, "nothing outside changed");
    assert_eq!(put(&server, linked_hash, b"second").await, 200);
    assert_eq!(get(&server, linked_hash).await, (200, b"second".to_vec()));
    assert_eq!(files(&outside), before, "nothing outside changed");

    // The temp directory linked to a directory outside: no upload writes there.
    let tmp = storage.join(".tmp");
    std::fs::remove_dir_all(&tmp).expect("remove .tmp");
    let catcher = outside.join("catcher");
    std::fs::create_dir_all(&catcher).expect("catcher");
    std::os::unix::fs::symlink(&catcher, &tmp).expect("link .tmp");
    assert_eq!(put(&server, "7003", b"a new artifact").await, 403);
    assert!(files(&catcher).is_empty(), "no temp file outside the root");
    assert_eq!(put(&server, "7003", b"a new artifact").await, 200);
    assert_eq!(
        get(&server, "7003").await,
        (200, b"a new artifact".to_vec())
    );
    assert!(files(&catcher).is_empty());
    server.stop().await;
}
