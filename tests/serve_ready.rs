//! `nx-open-cache serve` probes its storage at start, as `/readyz` does: storage that is not ready
//! (here a regular file where the fs directory should be) starts with a warning and `/readyz`
//! answering 503, or, with `--require-ready`, does not start and says why. The real `serve`
//! (configuration, store, server) on 127.0.0.1.

mod common;

use nx_open_cache::serve;
use std::collections::HashMap;
use std::path::Path;

const SECRET: &str = "rw-secret-0123456789abcdef";

fn env() -> HashMap<String, String> {
    common::serve_env(SECRET)
}

fn config(storage: &Path, extra: &[&str]) -> serve::config::ServeConfig {
    common::serve_fs_config(storage, SECRET, extra, storage.parent().expect("parent"))
}

async fn readyz(url: &str) -> (u16, String) {
    let resp = reqwest::get(format!("{url}/readyz"))
        .await
        .expect("/readyz answered");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_that_is_not_ready_starts_with_readyz_503_or_is_refused_with_require_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = dir.path().join("cache");
    std::fs::write(&storage, b"a file where the cache directory should be").expect("write");

    let running = serve::start(&config(&storage, &[]), &env()).expect("starts anyway");
    assert_eq!(
        readyz(&running.url).await,
        (503, "not ready: storage unavailable".to_owned())
    );
    running.stop().await;

    let refused = serve::start(&config(&storage, &["--require-ready"]), &env())
        .err()
        .expect("refused");
    let shown = storage.display().to_string();
    assert_eq!(
        refused,
        format!(
            "storage fs {shown} is not ready: cache path {shown} is not a directory; refusing to \
             start (--require-ready)"
        )
    );
    assert!(!refused.contains(SECRET), "{refused}");

    // A directory that cannot be made (here its parent is a file; as with a parent this user may
    // not write): serve stops, with or without --require-ready, saying why.
    let under_file = storage.join("cache");
    for extra in [&[][..], &["--require-ready"][..]] {
        let stopped = serve::start(&config(&under_file, extra), &env())
            .err()
            .expect("stops");
        let shown = under_file.display().to_string();
        assert!(
            stopped.starts_with(&format!(
                "--storage fs:{shown}: cannot create cache directory {shown}: "
            )),
            "{stopped}"
        );
    }

    // Once the directory is there, --require-ready starts and /readyz answers 200.
    std::fs::remove_file(&storage).expect("remove");
    std::fs::create_dir(&storage).expect("mkdir");
    let running = serve::start(&config(&storage, &["--require-ready"]), &env()).expect("starts");
    assert_eq!(readyz(&running.url).await, (200, "ready".to_owned()));
    running.stop().await;
}
