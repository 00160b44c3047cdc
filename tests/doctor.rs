//! `doctor` against real stores: a working fs store, a read-only mode, a missing directory, and S3
//! with refused credentials (moto in auth mode). Each failure carries a fix.

mod common;

use nx_open_cache::config::resolve;
use nx_open_cache::doctor::{self, Outcome, Report};
use serde_json::json;
use std::collections::HashMap;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    let mut e: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    e.insert("HOME".into(), "/nonexistent-home".into());
    e
}

async fn run(
    options: serde_json::Value,
    env: &HashMap<String, String>,
    root: &std::path::Path,
) -> Report {
    let cfg = resolve(&options, env, root).expect("valid config");
    doctor::run(&cfg, env).await
}

fn outcome(r: &Report, name: &str) -> Outcome {
    r.checks
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.outcome)
        .unwrap_or_else(|| panic!("no {name} check in {r:?}"))
}

fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_working_fs_store_passes_every_step_and_is_left_clean() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("cache");
    std::fs::create_dir(&store).unwrap();
    let r = run(json!({ "path": store }), &env(&[]), dir.path()).await;
    assert!(r.works, "{r:#?}");
    for step in ["setup", "read", "write", "read back", "delete"] {
        assert_eq!(outcome(&r, step), Outcome::Ok, "{step}: {r:#?}");
    }
    assert_eq!(r.mode, "read-write");
    assert!(
        files_under(&store).iter().all(|f| f.contains(".tmp")),
        "probe removed: {:?}",
        files_under(&store)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_mode_reads_but_never_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("cache");
    std::fs::create_dir(&store).unwrap();
    let r = run(
        json!({ "path": store }),
        &env(&[("NX_OPEN_CACHE_MODE", "read-only")]),
        dir.path(),
    )
    .await;
    assert!(r.works, "{r:#?}");
    assert_eq!(outcome(&r, "read"), Outcome::Ok);
    for step in ["write", "read back", "delete"] {
        assert_eq!(outcome(&r, step), Outcome::Skipped, "{step}");
    }
    assert!(
        r.checks
            .iter()
            .any(|c| c.detail.contains("mode is read-only")),
        "{r:#?}"
    );
    assert!(files_under(&store).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_directory_fails_with_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    // The parent is a regular file: the store directory cannot be made.
    std::fs::write(dir.path().join("not-mounted"), b"a file").unwrap();
    let missing = dir.path().join("not-mounted").join("cache");
    let r = run(json!({ "path": missing }), &env(&[]), dir.path()).await;
    assert!(!r.works, "{r:#?}");
    let failed: Vec<_> = r
        .checks
        .iter()
        .filter(|c| c.outcome == Outcome::Failed)
        .collect();
    assert!(!failed.is_empty(), "{r:#?}");
    for c in &failed {
        assert!(c.detail.contains("not-mounted"), "{c:?}");
        let fix = c.fix.as_deref().unwrap_or_default();
        assert!(
            fix.contains("create") && fix.contains("not-mounted"),
            "{c:?}"
        );
    }
    assert_eq!(outcome(&r, "setup"), Outcome::Failed);
    assert_eq!(outcome(&r, "write"), Outcome::Skipped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_s3_credentials_fail_with_the_credential_fix() {
    if std::env::var("NX_OPEN_CACHE_SKIP_CLOUD_TESTS").is_ok_and(|v| v == "1") {
        return;
    }
    // Stopped when dropped, also when an assertion below fails.
    let emu = common::emulator::Emulator::start_with("s3", &["--auth"]);
    let mut e = emu.env();
    let options = serde_json::Value::Object(emu.options());
    let dir = tempfile::tempdir().unwrap();
    let good = run(options.clone(), &e, dir.path()).await;
    e.insert(
        "AWS_SECRET_ACCESS_KEY".into(),
        "wrong-secret-wrong-secret".into(),
    );
    let bad = run(options, &e, dir.path()).await;
    drop(emu);
    assert!(good.works, "{good:#?}");
    assert_eq!(outcome(&good, "delete"), Outcome::Ok, "{good:#?}");
    assert!(!bad.works, "{bad:#?}");
    let read = bad
        .checks
        .iter()
        .find(|c| c.name == "read")
        .expect("read check");
    assert_eq!(read.outcome, Outcome::Failed);
    assert!(read.detail.contains("credentials"), "{read:?}");
    let fix = read.fix.as_deref().unwrap_or_default();
    assert!(fix.contains("AWS_ACCESS_KEY_ID"), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_trust_namespaces_the_probe_runs_where_the_run_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("cache");
    std::fs::create_dir(&store).unwrap();
    let opts = json!({ "path": store, "writePrefix": "untrusted", "readPrefixes": ["trusted", "untrusted"] });
    let r = run(opts.clone(), &env(&[]), dir.path()).await;
    assert!(r.works, "{r:#?}");
    let setup = r
        .checks
        .iter()
        .find(|c| c.name == "setup")
        .expect("setup check");
    assert!(
        setup.detail.contains("(prefix untrusted)"),
        "{}",
        setup.detail
    );
    let r = run(
        opts,
        &env(&[("NX_OPEN_CACHE_WRITE_PREFIX", "trusted")]),
        dir.path(),
    )
    .await;
    assert!(r.works, "{r:#?}");
    let setup = r
        .checks
        .iter()
        .find(|c| c.name == "setup")
        .expect("setup check");
    assert!(
        setup.detail.contains("(prefix trusted)"),
        "{}",
        setup.detail
    );
    assert!(files_under(&store).is_empty(), "{:?}", files_under(&store));
}
