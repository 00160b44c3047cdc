//! `doctor` against real stores: a working fs store, a read-only mode, a missing directory, S3
//! with refused credentials (moto in auth mode), and read-only setups (a read-only token of
//! `serve`, S3 credentials that may only read): a warning that says read-only mode. Each failure
//! carries a fix.

mod common;

use nx_open_cache::config::resolve;
use nx_open_cache::doctor::{self, Check, Outcome, Report, Status};
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
    if std::env::var("NX_OPEN_CACHE_TEST_SKIP_CLOUD").is_ok_and(|v| v == "1") {
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
    // The steps list, then list objects (setup) and read, write and delete them.
    for permission in [
        "s3:ListBucket",
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
    ] {
        assert!(fix.contains(permission), "{permission}: {fix}");
    }
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

fn check<'a>(r: &'a Report, name: &str) -> &'a Check {
    r.checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name} check in {r:#?}"))
}

/// Reads work and writes are refused: a warning (the cache works, status Warning) whose fix is
/// read-only mode, by the option of this run's mode (localMode, or ciMode on CI).
fn assert_read_only_warning(r: &Report, option: &str) {
    assert!(r.works, "{r:#?}");
    assert_eq!(r.status, Status::Warning, "{r:#?}");
    assert_eq!(outcome(r, "read"), Outcome::Ok, "{r:#?}");
    let write = check(r, "write");
    assert_eq!(write.outcome, Outcome::Warning, "{r:#?}");
    let fix = write.fix.as_deref().unwrap_or_default();
    assert!(
        fix.starts_with(&format!(
            "reads work, writes are refused: set {option} \"read-only\" in the nx-open-cache \
             plugin options (or NX_OPEN_CACHE_MODE=read-only) on this machine"
        )),
        "{fix}"
    );
    for step in ["read back", "delete"] {
        assert_eq!(outcome(r, step), Outcome::Skipped, "{step}: {r:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_token_of_serve_is_a_warning_on_a_developer_machine_broken_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (ro, rw) = ("doctor-read-only-token-1", "doctor-read-write-token-1");
    let args: Vec<String> = [
        "--storage",
        &format!("fs:{}", dir.path().join("storage").display()),
        "--listen",
        "127.0.0.1:0",
        "--log",
        "off",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let server_env: HashMap<String, String> = [(
        "NX_OPEN_CACHE_SERVER_TOKENS".to_owned(),
        format!("dev:read-only:{ro},ci:read-write:{rw}"),
    )]
    .into();
    let config = nx_open_cache::serve::config::resolve(&args, &server_env, dir.path())
        .expect("serve config");
    let up = nx_open_cache::serve::start(&config, &server_env).expect("serve starts");
    let options = json!({ "backend": "http", "url": up.url });
    let token = |t: &str, more: &[(&str, &str)]| {
        let mut e = env(more);
        e.insert("NX_OPEN_CACHE_TOKEN".into(), t.into());
        e
    };
    let dev = run(options.clone(), &token(ro, &[]), dir.path()).await;
    let ci = run(options.clone(), &token(ro, &[("CI", "true")]), dir.path()).await;
    let explicit = run(
        options.clone(),
        &token(ro, &[("NX_OPEN_CACHE_MODE", "read-write")]),
        dir.path(),
    )
    .await;
    let read_only = run(
        options.clone(),
        &token(ro, &[("NX_OPEN_CACHE_MODE", "read-only")]),
        dir.path(),
    )
    .await;
    let writer = run(options, &token(rw, &[]), dir.path()).await;
    up.stop().await;
    assert_read_only_warning(&dev, "localMode");
    assert!(
        check(&dev, "write").detail.contains("403"),
        "{:?}",
        check(&dev, "write")
    );
    // On CI (and with read-write set explicitly) this machine is meant to write: broken, and
    // the fix is a read-write token first.
    for (r, source, option) in [
        (&ci, "default (CI detected)", "ciMode"),
        (&explicit, "NX_OPEN_CACHE_MODE", "localMode"),
    ] {
        assert!(!r.works, "{r:#?}");
        assert_eq!(r.status, Status::Broken, "{r:#?}");
        assert_eq!(outcome(r, "read"), Outcome::Ok, "{r:#?}");
        let write = check(r, "write");
        assert_eq!(write.outcome, Outcome::Failed, "{r:#?}");
        assert_eq!(
            write.fix.as_deref().unwrap_or_default(),
            format!(
                "reads work, writes are refused, and this machine is meant to write (mode \
                 read-write from {source}): use a read-write token in NX_OPEN_CACHE_TOKEN; if it \
                 should only read, set {option} \"read-only\" in the nx-open-cache plugin options \
                 (or NX_OPEN_CACHE_MODE=read-only)"
            )
        );
    }
    // Already read-only: the write is skipped, and that passes.
    assert_eq!(read_only.status, Status::Works, "{read_only:#?}");
    assert_eq!(outcome(&read_only, "write"), Outcome::Skipped);
    assert!(check(&read_only, "write")
        .detail
        .contains("mode is read-only"));
    // A read-write token writes (the http backend cannot delete: skipped, still ok).
    assert_eq!(writer.status, Status::Works, "{writer:#?}");
    assert_eq!(outcome(&writer, "write"), Outcome::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_credentials_that_may_only_read_are_a_warning_that_says_read_only_mode() {
    if std::env::var("NX_OPEN_CACHE_TEST_SKIP_CLOUD").is_ok_and(|v| v == "1") {
        return;
    }
    let emu = common::emulator::Emulator::start_with("s3", &["--auth"]);
    let options = serde_json::Value::Object(emu.options());
    let dir = tempfile::tempdir().unwrap();
    let reader = run(options.clone(), &emu.read_only_env(), dir.path()).await;
    let mut read_only_env = emu.read_only_env();
    read_only_env.insert("NX_OPEN_CACHE_MODE".into(), "read-only".into());
    let read_only = run(options, &read_only_env, dir.path()).await;
    drop(emu);
    assert_eq!(outcome(&reader, "setup"), Outcome::Ok, "{reader:#?}");
    assert_read_only_warning(&reader, "localMode");
    let detail = &check(&reader, "write").detail;
    assert!(detail.contains("AccessDenied"), "{detail}");
    assert_eq!(read_only.status, Status::Works, "{read_only:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_warnings_and_key_ids_come_with_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("cache");
    std::fs::create_dir(&store).unwrap();
    let (public, secret) = nx_open_cache::seal::keys::generate_signing_key().unwrap();
    let (other, _) = nx_open_cache::seal::keys::generate_signing_key().unwrap();
    let id = |k: &str| nx_open_cache::seal::keys::public_key_id(k).unwrap();
    let r = run(
        json!({ "path": store, "trustedKeys": [other] }),
        &env(&[
            ("NX_OPEN_CACHE_SIGNING_KEY", secret.as_str()),
            ("NX_OPEN_CACHE_TOKN", "x"),
        ]),
        dir.path(),
    )
    .await;
    assert!(r.works, "{r:#?}");
    assert_eq!(r.status, Status::Warning, "{r:#?}");
    assert_eq!(
        r.keys,
        format!("signs with key {}, trusts {}", id(&public), id(&other))
    );
    assert_eq!(r.warnings.len(), 2, "{:#?}", r.warnings);
    assert!(r
        .warnings
        .iter()
        .any(|w| w.ends_with("did you mean NX_OPEN_CACHE_TOKEN?")));
    assert!(r
        .warnings
        .iter()
        .any(|w| w.contains(&format!("signs with key {}, but", id(&public)))));
    assert!(!format!("{r:?}").contains(secret.as_str()));
}
