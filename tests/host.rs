//! The cache host: its lock, the registry of runs (one proxy each, when runs end, when the host
//! exits), the control channel and the hooks' client, over real loopback HTTP.

mod common;

use nx_open_cache::host::client::{self, AttachError, EndResult};
use nx_open_cache::host::liveness::{cmdline_matches, ClientProcess, Liveness};
use nx_open_cache::host::lock::HostLock;
use nx_open_cache::host::registry::{
    finish, merge, EndOutcome, Policy, RegisterError, Registry, RunRequest,
};
use nx_open_cache::host::{self, read_info, HostFiles, HostSettings};
use nx_open_cache::stats::{ErrorCount, RefusalCount, Snapshot};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Liveness decided by the test: `found` processes at registration, alive while `alive` is true.
struct FakeLiveness {
    found: bool,
    alive: Arc<AtomicBool>,
}

impl Liveness for FakeLiveness {
    fn find(&self, _argv: &[String]) -> Vec<ClientProcess> {
        if self.found {
            vec![ClientProcess { pid: 1, started: 1 }]
        } else {
            Vec::new()
        }
    }
    fn alive(&self, _process: &ClientProcess, _argv: &[String]) -> bool {
        self.alive.load(Ordering::SeqCst)
    }
}

fn unwatched() -> Box<dyn Liveness> {
    Box::new(FakeLiveness {
        found: false,
        alive: Arc::new(AtomicBool::new(false)),
    })
}

const POLICY: Policy = Policy {
    idle_grace: Duration::from_secs(5),
    silent_run_expiry: Duration::from_secs(3600),
    client_gone_grace: Duration::from_secs(5),
};

fn request(root: &Path, id: Option<&str>) -> RunRequest {
    RunRequest {
        id: id.map(str::to_owned),
        workspace_root: root.to_owned(),
        options: serde_json::json!({ "path": "store" }),
        env: Default::default(),
        argv: vec!["node".into(), "nx.js".into(), "run-many".into()],
    }
}

async fn get(url: &str, token: &str, hash: &str) -> Result<u16, reqwest::Error> {
    let resp = reqwest::Client::new()
        .get(format!("{url}/v1/cache/{hash}"))
        .bearer_auth(token)
        .send()
        .await?;
    Ok(resp.status().as_u16())
}

/// PUTs a valid Nx artifact whose one output file holds `content` (the proxy serves nothing else).
async fn put(url: &str, token: &str, hash: &str, content: &'static [u8]) -> u16 {
    let body = common::nx_store_archive(None, &[("dist/out", content)], b"", 0);
    reqwest::Client::new()
        .put(format!("{url}/v1/cache/{hash}"))
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .expect("PUT reaches the proxy")
        .status()
        .as_u16()
}

fn ended(outcome: EndOutcome) -> Vec<nx_open_cache::host::registry::FinishedRun> {
    match outcome {
        EndOutcome::Finished(runs) => runs,
        EndOutcome::Deferred { open } => panic!("deferred ({open} open), expected finished"),
        EndOutcome::Unknown => panic!("unknown run, expected finished"),
    }
}

mod lock {
    use super::*;

    #[test]
    fn only_one_opener_holds_the_lock_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("host.lock");
        assert!(!HostLock::is_held(&path).unwrap(), "no file: not held");
        let first = HostLock::try_acquire(&path)
            .unwrap()
            .expect("first takes it");
        assert!(
            HostLock::try_acquire(&path).unwrap().is_none(),
            "second is refused"
        );
        assert!(HostLock::is_held(&path).unwrap());
        assert!(first.still_at_path());
        drop(first);
        assert!(!HostLock::is_held(&path).unwrap(), "released on drop");
        assert!(HostLock::try_acquire(&path).unwrap().is_some());
    }

    #[test]
    fn of_many_starting_at_once_exactly_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = Arc::new(dir.path().join("host.lock"));
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let lock = HostLock::try_acquire(&path).unwrap();
                    let won = lock.is_some();
                    // Hold it until every thread has tried.
                    std::thread::sleep(Duration::from_millis(200));
                    won
                })
            })
            .collect();
        let winners = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|won| *won)
            .count();
        assert_eq!(winners, 1);
    }

    #[test]
    fn a_waiting_opener_gets_the_lock_once_the_holder_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.lock");
        let holder = HostLock::try_acquire(&path).unwrap().unwrap();
        let p = path.clone();
        let waiter = std::thread::spawn(move || {
            HostLock::acquire_within(&p, Duration::from_secs(10))
                .unwrap()
                .is_some()
        });
        std::thread::sleep(Duration::from_millis(300));
        drop(holder);
        assert!(waiter.join().unwrap());
        assert!(HostLock::acquire_within(&path, Duration::from_millis(100))
            .unwrap()
            .is_some());
    }

    #[test]
    fn a_lock_file_removed_under_the_holder_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.lock");
        let lock = HostLock::try_acquire(&path).unwrap().unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(!lock.still_at_path());
        // A new file at the path is not the locked one either.
        let _other = HostLock::try_acquire(&path).unwrap().unwrap();
        assert!(!lock.still_at_path());
    }

    /// The OS releases the lock when its holder dies, however it dies (`flock(1)` holds it here,
    /// the same `flock(2)` lock the host takes).
    #[cfg(target_os = "linux")]
    #[test]
    fn the_lock_of_a_killed_process_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.lock");
        std::fs::write(&path, b"").unwrap();
        use std::os::unix::process::CommandExt;
        // flock(1) and its `sleep` (which inherits the locked descriptor) in their own group.
        let mut holder = std::process::Command::new("flock")
            .arg("-n")
            .arg(&path)
            .args(["sleep", "60"])
            .process_group(0)
            .spawn()
            .expect("flock(1) from util-linux");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !HostLock::is_held(&path).unwrap() {
            assert!(Instant::now() < deadline, "flock(1) never took the lock");
            std::thread::sleep(Duration::from_millis(20));
        }
        let group = i32::try_from(holder.id()).unwrap();
        // SAFETY: kill(2) on a process group this test created.
        assert_eq!(unsafe { libc::kill(-group, libc::SIGKILL) }, 0);
        holder.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while HostLock::is_held(&path).unwrap() {
            assert!(Instant::now() < deadline, "the lock outlived its holders");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(HostLock::try_acquire(&path).unwrap().is_some());
    }
}

mod registry {
    use super::*;

    #[tokio::test]
    async fn each_run_has_its_own_proxy_and_ending_one_leaves_the_other_serving() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let mut reg = Registry::new(POLICY, unwatched(), now);
        let a = reg
            .register(&request(dir.path(), Some("111")), now)
            .unwrap();
        let b = reg
            .register(&request(dir.path(), Some("222")), now)
            .unwrap();
        assert_ne!(a.url, b.url);
        assert_ne!(a.token, b.token);
        assert_eq!(a.run_id, "111");
        assert_eq!(put(&a.url, &a.token, "1", b"artifact-a").await, 200);
        assert_eq!(get(&b.url, &b.token, "1").await.unwrap(), 200);
        assert_eq!(
            get(&a.url, &b.token, "1").await.unwrap(),
            401,
            "tokens are per run"
        );

        let ended_a = finish(ended(reg.end(Some("111"), now))).await.unwrap();
        assert_eq!(ended_a.run_id, "111");
        assert_eq!((ended_a.stats.stored, ended_a.stats.hits), (1, 0));
        assert!(
            get(&a.url, &a.token, "1").await.is_err(),
            "a's proxy stopped"
        );
        assert_eq!(
            get(&b.url, &b.token, "2").await.unwrap(),
            404,
            "b still serves"
        );
        assert!(matches!(reg.end(Some("111"), now), EndOutcome::Unknown));
        let ended_b = finish(ended(reg.end(Some("222"), now))).await.unwrap();
        assert_eq!(
            (
                ended_b.stats.hits,
                ended_b.stats.misses,
                ended_b.stats.stored
            ),
            (1, 1, 0),
            "b counts only its own traffic"
        );
    }

    #[tokio::test]
    async fn a_retried_registration_gets_the_same_proxy() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let mut reg = Registry::new(POLICY, unwatched(), now);
        let first = reg.register(&request(dir.path(), Some("7")), now).unwrap();
        let again = reg.register(&request(dir.path(), Some("7")), now).unwrap();
        assert_eq!(first, again);
        assert_eq!(reg.len(), 1);
        finish(ended(reg.end(Some("7"), now))).await;
    }

    #[tokio::test]
    async fn bad_ids_bad_options_and_no_cache_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let mut reg = Registry::new(POLICY, unwatched(), now);
        for id in ["", "../x", "a b", &"9".repeat(200)] {
            match reg.register(&request(dir.path(), Some(id)), now) {
                Err(RegisterError::Invalid(m)) => assert!(m.contains("invalid run id"), "{m}"),
                other => panic!("id {id:?}: {other:?}"),
            }
        }
        let mut bad = request(dir.path(), Some("1"));
        bad.options = serde_json::json!({ "backend": "nope" });
        match reg.register(&bad, now) {
            Err(RegisterError::Invalid(m)) => assert!(m.contains("\"backend\""), "{m}"),
            other => panic!("{other:?}"),
        }
        let mut off = request(dir.path(), Some("2"));
        off.env
            .insert("NX_OPEN_CACHE_MODE".into(), "no-cache".into());
        assert!(matches!(
            reg.register(&off, now),
            Err(RegisterError::Invalid(_))
        ));
        assert!(reg.is_empty());
    }

    #[tokio::test]
    async fn the_host_exits_after_the_idle_grace_and_then_refuses_runs() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut reg = Registry::new(POLICY, unwatched(), t0);
        reg.register(&request(dir.path(), Some("1")), t0).unwrap();
        let t1 = t0 + Duration::from_secs(100);
        assert!(reg.sweep(t1).exit.is_none(), "a run keeps it");
        finish(ended(reg.end(Some("1"), t1))).await;
        assert!(reg
            .sweep(t1 + POLICY.idle_grace - Duration::from_millis(1))
            .exit
            .is_none());
        let sweep = reg.sweep(t1 + POLICY.idle_grace);
        assert!(sweep.exit.is_some());
        assert!(sweep.remaining.is_empty());
        assert!(reg.is_closing());
        assert_eq!(
            reg.register(&request(dir.path(), Some("2")), t1)
                .unwrap_err(),
            RegisterError::Closing
        );
    }

    #[tokio::test]
    async fn a_silent_unwatched_run_keeps_the_host_until_the_expiry_and_traffic_renews_it() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut reg = Registry::new(POLICY, unwatched(), t0);
        let run = reg.register(&request(dir.path(), Some("1")), t0).unwrap();
        let expiry = POLICY.silent_run_expiry;
        assert!(reg.sweep(t0 + expiry / 2).exit.is_none());
        // Traffic, noticed by the next sweep.
        assert_eq!(get(&run.url, &run.token, "5").await.unwrap(), 404);
        let t1 = t0 + expiry - Duration::from_secs(1);
        assert!(reg.sweep(t1).exit.is_none());
        assert!(reg.sweep(t0 + expiry).exit.is_none(), "renewed at t1");
        let sweep = reg.sweep(t1 + expiry);
        assert!(sweep.exit.is_some(), "silent past the expiry");
        assert_eq!(sweep.remaining.len(), 1);
        let last = finish(sweep.remaining).await.unwrap();
        assert_eq!(last.stats.misses, 1);
    }

    #[tokio::test]
    async fn a_silent_run_is_not_stopped_while_another_run_keeps_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut reg = Registry::new(POLICY, unwatched(), t0);
        let silent = reg.register(&request(dir.path(), Some("1")), t0).unwrap();
        let t1 = t0 + POLICY.silent_run_expiry;
        reg.register(&request(dir.path(), Some("2")), t1).unwrap();
        let sweep = reg.sweep(t1 + Duration::from_secs(10));
        assert!(sweep.exit.is_none() && sweep.reaped.is_empty());
        assert_eq!(reg.len(), 2);
        assert_eq!(
            get(&silent.url, &silent.token, "9").await.unwrap(),
            404,
            "the silent run's proxy still answers"
        );
        for id in ["1", "2"] {
            finish(ended(reg.end(Some(id), t1))).await;
        }
    }

    #[tokio::test]
    async fn a_watched_run_lives_while_its_command_runs_and_ends_soon_after_it_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let alive = Arc::new(AtomicBool::new(true));
        let liveness = Box::new(FakeLiveness {
            found: true,
            alive: alive.clone(),
        });
        let t0 = Instant::now();
        let mut reg = Registry::new(POLICY, liveness, t0);
        let run = reg.register(&request(dir.path(), Some("1")), t0).unwrap();
        assert_eq!(reg.status(t0)[0].command, "running");
        let much_later = t0 + POLICY.silent_run_expiry * 10;
        assert!(
            reg.sweep(much_later).exit.is_none(),
            "silent for hours, but its command runs"
        );
        alive.store(false, Ordering::SeqCst);
        let t1 = much_later + Duration::from_secs(1);
        let sweep = reg.sweep(t1);
        assert!(sweep.reaped.is_empty(), "not before the grace");
        assert_eq!(reg.status(t1)[0].command, "gone");
        let sweep = reg.sweep(t1 + POLICY.client_gone_grace);
        assert_eq!(sweep.reaped.len(), 1);
        assert!(sweep.exit.is_none(), "the idle grace starts now");
        finish(sweep.reaped).await;
        assert!(get(&run.url, &run.token, "1").await.is_err());
        let t2 = t1 + POLICY.client_gone_grace + POLICY.idle_grace;
        assert!(reg.sweep(t2).exit.is_some());
    }

    #[tokio::test]
    async fn runs_of_an_nx_without_run_ids_stay_until_the_last_ends_which_reports_all() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let mut reg = Registry::new(POLICY, unwatched(), now);
        let a = reg.register(&request(dir.path(), None), now).unwrap();
        let b = reg.register(&request(dir.path(), None), now).unwrap();
        assert_ne!(a.run_id, b.run_id);
        assert_eq!(put(&a.url, &a.token, "1", b"one").await, 200);
        assert_eq!(put(&b.url, &b.token, "2", b"two").await, 200);
        assert!(matches!(
            reg.end(None, now),
            EndOutcome::Deferred { open: 1 }
        ));
        assert_eq!(
            get(&a.url, &a.token, "2").await.unwrap(),
            200,
            "a still serves"
        );
        assert_eq!(
            get(&b.url, &b.token, "1").await.unwrap(),
            200,
            "b still serves"
        );
        let all = finish(ended(reg.end(None, now))).await.unwrap();
        assert_eq!(all.runs, 2);
        assert_eq!((all.stats.stored, all.stats.hits), (2, 2));
        assert!(matches!(reg.end(None, now), EndOutcome::Unknown));
        assert!(reg.is_empty());
    }

    #[test]
    fn merged_counters_group_faults_and_refusals_by_reason() {
        let mut a = Snapshot {
            hits: 1,
            error_count: 2,
            errors: vec![ErrorCount {
                reason: "disk full".into(),
                count: 2,
                skipped: false,
            }],
            refused_count: 1,
            refusals: vec![RefusalCount {
                reason: "not gzip".into(),
                count: 1,
                hashes: vec!["h1".into()],
                routine: false,
            }],
            ..Snapshot::default()
        };
        let b = Snapshot {
            hits: 2,
            stored: 3,
            error_count: 2,
            errors: vec![
                ErrorCount {
                    reason: "disk full".into(),
                    count: 1,
                    skipped: false,
                },
                ErrorCount {
                    reason: "gone".into(),
                    count: 1,
                    skipped: false,
                },
            ],
            refused_count: 2,
            refusals: vec![RefusalCount {
                reason: "not gzip".into(),
                count: 2,
                hashes: vec!["h1".into(), "h2".into()],
                routine: false,
            }],
            ..Snapshot::default()
        };
        merge(&mut a, b);
        assert_eq!(
            (a.hits, a.stored, a.error_count, a.refused_count),
            (3, 3, 4, 3)
        );
        assert_eq!(a.errors.len(), 2);
        assert_eq!(a.errors[0].count, 3);
        assert_eq!(a.refusals[0].hashes, vec!["h1".to_owned(), "h2".to_owned()]);
    }
}

mod liveness {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_command_line_matches_nx_argv_despite_node_flags_and_a_relative_script() {
        let argv = v(&[
            "/usr/bin/node",
            "/w/node_modules/.bin/nx",
            "run-many",
            "-t",
            "build",
        ]);
        assert!(cmdline_matches(
            &v(&["node", "/w/node_modules/.bin/nx", "run-many", "-t", "build"]),
            &argv
        ));
        assert!(cmdline_matches(
            &v(&[
                "node",
                "--max-old-space-size=4096",
                "node_modules/.bin/nx",
                "run-many",
                "-t",
                "build"
            ]),
            &argv
        ));
        assert!(!cmdline_matches(
            &v(&["node", "/w/node_modules/.bin/nx", "run-many", "-t", "test"]),
            &argv
        ));
        assert!(!cmdline_matches(
            &v(&["node", "/w/other.js", "run-many", "-t", "build"]),
            &argv
        ));
        assert!(!cmdline_matches(&v(&["run-many", "-t", "build"]), &argv));
        assert!(
            !cmdline_matches(
                &v(&["/w/node_modules/.bin/nx", "run-many", "-t", "build"]),
                &argv
            ),
            "no executable before the script"
        );
        assert!(!cmdline_matches(&v(&["node", "x"]), &v(&["node"])));
    }

    // Not under `portable-fallbacks`, where Procfs finds nothing, as on systems without /proc.
    #[cfg(all(target_os = "linux", unix_native))]
    #[test]
    fn procfs_finds_a_running_command_and_sees_it_end() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("nx-client.sh");
        std::fs::write(&script, "sleep 60\n").unwrap();
        let token = format!("nxoc-{}", std::process::id());
        let mut child = std::process::Command::new("sh")
            .arg(&script)
            .args(["run-many", &token])
            .spawn()
            .unwrap();
        let argv = vec![
            "/usr/bin/node".to_owned(),
            script.to_string_lossy().into_owned(),
            "run-many".to_owned(),
            token.clone(),
        ];
        let deadline = Instant::now() + Duration::from_secs(10);
        let found = loop {
            let found = nx_open_cache::host::liveness::Procfs.find(&argv);
            if found.iter().any(|p| p.pid == child.id()) || Instant::now() > deadline {
                break found;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let client = found
            .iter()
            .find(|p| p.pid == child.id())
            .unwrap_or_else(|| panic!("not found: {found:?}"))
            .clone();
        assert!(nx_open_cache::host::liveness::Procfs.alive(&client, &argv));
        // sh forks to run sleep: the fork matched until its exec, and is not the command after it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while found
            .iter()
            .any(|p| p.pid != child.id() && nx_open_cache::host::liveness::Procfs.alive(p, &argv))
        {
            assert!(
                Instant::now() < deadline,
                "a fork still looks like the command"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!nx_open_cache::host::liveness::Procfs.alive(&client, &argv));
        assert!(nx_open_cache::host::liveness::Procfs.find(&argv).is_empty());
    }
}

mod host_process {
    use super::*;

    fn settings(dir: &Path, policy: Policy) -> HostSettings {
        let mut s = HostSettings::new(HostFiles::new(dir, "1.2.3"), "1.2.3");
        s.policy = policy;
        s.lock_wait = Duration::from_millis(200);
        s.sweep_every = Duration::from_millis(50);
        s.liveness = unwatched();
        s
    }

    const QUICK: Policy = Policy {
        idle_grace: Duration::from_millis(300),
        silent_run_expiry: Duration::from_secs(3600),
        client_gone_grace: Duration::from_millis(300),
    };

    #[tokio::test]
    async fn register_serve_end_then_exit_when_idle_releasing_everything() {
        let ws = tempfile::tempdir().unwrap();
        let dir = ws.path().join(".nx/workspace-data/nx-open-cache");
        let files = HostFiles::new(&dir, "1.2.3");
        let running = host::open(settings(&dir, QUICK))
            .unwrap()
            .expect("lock taken");
        let info = read_info(&files).unwrap().expect("host file written");
        assert_eq!(info.url, running.url);
        assert_eq!(info.pid, std::process::id());
        // File modes: Unix only (not under `portable-fallbacks`, which sets none).
        #[cfg(unix_native)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.info).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "host file is owner-only: {mode:o}");
        }
        assert!(HostLock::is_held(&files.lock).unwrap());
        assert!(
            host::open(settings(&dir, QUICK)).unwrap().is_none(),
            "a second host does not start"
        );

        let run = client::attach(&files, &request(ws.path(), Some("42")))
            .await
            .unwrap();
        assert_eq!(put(&run.url, &run.token, "7", b"artifact").await, 200);
        assert_eq!(get(&run.url, &run.token, "7").await.unwrap(), 200);
        let status = client::status(&files).await.unwrap().expect("a host runs");
        assert_eq!(status["runs"][0]["runId"], "42");
        let EndResult::Ended(summary) = client::end(&files, Some("42")).await.unwrap() else {
            panic!("expected the run's summary");
        };
        assert_eq!(summary["runId"], "42");
        assert_eq!(summary["stats"]["stored"], 1);
        assert_eq!(summary["stats"]["hits"], 1);
        assert!(summary["location"].as_str().unwrap().starts_with("fs "));
        assert_eq!(
            client::end(&files, Some("42")).await.unwrap(),
            EndResult::Unknown
        );

        let why = tokio::time::timeout(Duration::from_secs(10), running.wait())
            .await
            .expect("exits after the idle grace");
        assert!(why.contains("no run"), "{why}");
        assert!(!HostLock::is_held(&files.lock).unwrap(), "lock released");
        assert!(read_info(&files).unwrap().is_none(), "host file removed");
        assert_eq!(
            client::end(&files, Some("42")).await.unwrap(),
            EndResult::NoHost
        );
        assert!(matches!(
            client::attach(&files, &request(ws.path(), Some("43"))).await,
            Err(AttachError::NoHost(_))
        ));
    }

    #[tokio::test]
    async fn the_control_channel_needs_the_admin_token() {
        let ws = tempfile::tempdir().unwrap();
        let files = HostFiles::new(ws.path(), "1.2.3");
        let running = host::open(settings(ws.path(), QUICK)).unwrap().unwrap();
        let http = reqwest::Client::new();
        for token in [None, Some("wrong")] {
            let mut req = http
                .post(format!("{}/v1/runs", running.url))
                .body(serde_json::to_vec(&request(ws.path(), Some("1"))).unwrap());
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            assert_eq!(req.send().await.unwrap().status(), 401);
        }
        let resp = http
            .post(format!("{}/v1/host/stop", running.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        assert!(client::status(&files).await.unwrap().unwrap()["runs"]
            .as_array()
            .unwrap()
            .is_empty());
        // A request body that is not a run: 400 without echoing it.
        let info = read_info(&files).unwrap().unwrap();
        let resp = http
            .post(format!("{}/v1/runs", running.url))
            .bearer_auth(&info.token)
            .body(r#"{"workspaceRoot": "/x", "env": {"SECRET": 12345678}}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        assert!(!resp.text().await.unwrap().contains("12345678"));
        assert!(client::stop(&files).await.unwrap());
        tokio::time::timeout(Duration::from_secs(10), running.wait())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_stop_request_ends_the_runs_left_and_a_stale_host_file_means_no_host() {
        let ws = tempfile::tempdir().unwrap();
        let files = HostFiles::new(ws.path(), "1.2.3");
        let running = host::open(settings(ws.path(), QUICK)).unwrap().unwrap();
        let run = client::attach(&files, &request(ws.path(), Some("1")))
            .await
            .unwrap();
        let stale = read_info(&files).unwrap().unwrap();
        assert!(client::stop(&files).await.unwrap());
        let why = tokio::time::timeout(Duration::from_secs(20), running.wait())
            .await
            .unwrap();
        assert!(why.contains("stop"), "{why}");
        assert!(
            get(&run.url, &run.token, "1").await.is_err(),
            "its proxy stopped"
        );
        // A host file left by a host that died: the port no longer answers.
        std::fs::write(
            &files.info,
            serde_json::to_vec(&serde_json::json!({
                "pid": stale.pid, "version": stale.version, "url": stale.url,
                "token": stale.token, "startedAt": stale.started_at,
            }))
            .unwrap(),
        )
        .unwrap();
        let err = client::attach(&files, &request(ws.path(), Some("2")))
            .await
            .unwrap_err();
        assert!(err.retry(), "{err}");
        assert!(matches!(err, AttachError::NoHost(_)), "{err}");
        let err = client::end(&files, Some("1")).await.unwrap_err();
        assert!(err.contains("does not answer"), "{err}");
    }

    #[tokio::test]
    async fn two_hosts_starting_at_once_end_up_as_one() {
        let ws = tempfile::tempdir().unwrap();
        let dir = ws.path().to_owned();
        let starts: Vec<_> = (0..2)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || host::open(settings(&dir, QUICK)).unwrap())
            })
            .collect();
        let mut hosts: Vec<_> = starts
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(hosts.len(), 1, "exactly one host");
        let files = HostFiles::new(&dir, "1.2.3");
        let info = read_info(&files).unwrap().unwrap();
        assert_eq!(info.url, hosts[0].url);
        let host = hosts.remove(0);
        tokio::time::timeout(Duration::from_secs(10), host.wait())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_host_of_another_version_is_not_used() {
        let ws = tempfile::tempdir().unwrap();
        let old = host::open(settings(ws.path(), QUICK)).unwrap().unwrap();
        let newer = HostFiles::new(ws.path(), "2.0.0");
        assert_ne!(newer.lock, HostFiles::new(ws.path(), "1.2.3").lock);
        assert!(matches!(
            client::attach(&newer, &request(ws.path(), Some("1"))).await,
            Err(AttachError::NoHost(_))
        ));
        let mut s = settings(ws.path(), QUICK);
        s.files = newer.clone();
        s.version = "2.0.0".into();
        let new = host::open(s).unwrap().expect("its own lock");
        let run = client::attach(&newer, &request(ws.path(), Some("1")))
            .await
            .unwrap();
        assert!(run.url.starts_with("http://127.0.0.1:"));
        client::end(&newer, Some("1")).await.unwrap();
        for h in [old, new] {
            tokio::time::timeout(Duration::from_secs(10), h.wait())
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn after_nx_reset_a_host_with_runs_writes_its_files_again() {
        let ws = tempfile::tempdir().unwrap();
        let data = ws.path().join(".nx").join("workspace-data");
        let dir = data.join("nx-open-cache");
        let files = HostFiles::new(&dir, "1.2.3");
        let running = host::open(settings(&dir, QUICK)).unwrap().unwrap();
        let run = client::attach(&files, &request(ws.path(), Some("1")))
            .await
            .unwrap();
        std::fs::remove_dir_all(&data).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while read_info(&files).unwrap().is_none() {
            assert!(Instant::now() < deadline, "host file not written again");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(HostLock::is_held(&files.lock).unwrap(), "lock taken again");
        assert_eq!(get(&run.url, &run.token, "1").await.unwrap(), 404);
        assert!(matches!(
            client::end(&files, Some("1")).await.unwrap(),
            EndResult::Ended(_)
        ));
        tokio::time::timeout(Duration::from_secs(10), running.wait())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_deleted_workspace_or_an_idle_host_gets_nothing_written_again() {
        let ws = tempfile::tempdir().unwrap();
        let dir = ws.path().join("w").join(".nx").join("nx-open-cache");
        let files = HostFiles::new(&dir, "1.2.3");
        let mut slow = QUICK;
        slow.idle_grace = Duration::from_secs(1);
        // Idle: its directory removed, nothing comes back before it exits.
        let idle = host::open(settings(&dir, slow)).unwrap().unwrap();
        std::fs::remove_dir_all(ws.path().join("w")).unwrap();
        tokio::time::timeout(Duration::from_secs(10), idle.wait())
            .await
            .unwrap();
        assert!(!ws.path().join("w").exists());
        // With a run, but the whole workspace deleted: nothing comes back either.
        let busy = host::open(settings(&dir, slow)).unwrap().unwrap();
        client::attach(&files, &request(ws.path(), Some("1")))
            .await
            .unwrap();
        std::fs::remove_dir_all(ws.path().join("w")).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!ws.path().join("w").exists());
        busy.stop();
        tokio::time::timeout(Duration::from_secs(20), busy.wait())
            .await
            .unwrap();
        assert!(!ws.path().join("w").exists());
    }
}
