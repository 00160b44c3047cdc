//! The cloud emulators the tests run against: moto_server (S3), fake-gcs-server (GCS) and Azurite
//! (Azure Blob), started per test through `node scripts/emulators.js start <kind>` (run
//! `node scripts/emulators.js install` first; `npm test` does) and stopped when the test ends.
//!
//! `NX_OPEN_CACHE_TEST_EMULATOR_S3` / `_GCS` / `_AZURE` may hold the JSON line that
//! `emulators.js start` prints, to use an emulator that is already running. Without an emulator the
//! tests fail; `NX_OPEN_CACHE_TEST_SKIP_CLOUD=1` skips them explicitly.

use nx_open_cache::config::{resolve, Backend};
use nx_open_cache::key::Prefix;
use nx_open_cache::store::object::ObjectStoreBackend;
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `NX_OPEN_CACHE_TEST_SKIP_CLOUD=1`: the cloud tests are skipped explicitly.
pub fn skip() -> bool {
    std::env::var("NX_OPEN_CACHE_TEST_SKIP_CLOUD").is_ok_and(|v| v == "1")
}

/// One running emulator (ours to stop, or an external one named by env).
pub struct Emulator {
    info: Value,
    child: Option<Child>,
    spool: tempfile::TempDir,
}

impl Emulator {
    pub fn start(kind: &'static str) -> Emulator {
        Emulator::start_with(kind, &[])
    }

    /// `flags` go to `emulators.js start` (e.g. `--auth`); such an emulator is never shared.
    pub fn start_with(kind: &'static str, flags: &[&str]) -> Emulator {
        let spool = tempfile::tempdir().expect("temp dir");
        let var = format!("NX_OPEN_CACHE_TEST_EMULATOR_{}", kind.to_ascii_uppercase());
        if let (Ok(json), true) = (std::env::var(&var), flags.is_empty()) {
            let info = serde_json::from_str(&json)
                .unwrap_or_else(|e| panic!("{var} is not the JSON of `emulators.js start`: {e}"));
            return Emulator {
                info,
                child: None,
                spool,
            };
        }
        let root = env!("CARGO_MANIFEST_DIR");
        let script = format!("{root}/scripts/emulators.js");
        let mut child = Command::new("node")
            .args([script.as_str(), "start", kind])
            .args(flags)
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run `node {script} start {kind}` ({e}); set NX_OPEN_CACHE_TEST_SKIP_CLOUD=1 to skip the cloud tests")
            });
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        // The script gives up on its own after its bounded readiness wait, which ends this read.
        let _ = BufReader::new(stdout).read_line(&mut line);
        let info: Value = match serde_json::from_str(line.trim()) {
            Ok(v) => v,
            Err(_) => {
                let _ = child.kill();
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                let _ = child.wait();
                panic!(
                    "the {kind} emulator did not start (`node scripts/emulators.js start {kind}`): {}{}\n\
                     run `node scripts/emulators.js install` first, or set NX_OPEN_CACHE_TEST_SKIP_CLOUD=1 to skip",
                    line.trim(),
                    err.trim()
                );
            }
        };
        Emulator {
            info,
            child: Some(child),
            spool,
        }
    }

    pub fn env(&self) -> HashMap<String, String> {
        let mut env: HashMap<String, String> = self.info["env"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        env.insert("HOME".into(), "/nonexistent-home".into());
        env
    }

    /// s3 started with `--auth`: `env()` with the keys of a user allowed only s3:ListBucket and
    /// s3:GetObject.
    pub fn read_only_env(&self) -> HashMap<String, String> {
        let mut env = self.env();
        let keys = self.info["readOnlyEnv"]
            .as_object()
            .expect("readOnlyEnv: an s3 emulator started with --auth");
        for (k, v) in keys {
            if let Some(v) = v.as_str() {
                env.insert(k.clone(), v.to_owned());
            }
        }
        env
    }

    pub fn options(&self) -> serde_json::Map<String, Value> {
        self.info["options"]
            .as_object()
            .cloned()
            .expect("emulator options")
    }

    /// A store on this emulator with a prefix, optional option overrides and env overrides.
    pub fn store_with(
        &self,
        prefix: &str,
        options: &[(&str, Value)],
        env: &[(&str, Option<&str>)],
    ) -> ObjectStoreBackend {
        let mut o = self.options();
        o.insert("prefix".into(), Value::String(prefix.into()));
        for (k, v) in options {
            o.insert(k.to_string(), v.clone());
        }
        let mut e = self.env();
        for (k, v) in env {
            match v {
                Some(v) => e.insert(k.to_string(), v.to_string()),
                None => e.remove(*k),
            };
        }
        let (backend, prefix) = config_of(o, &e);
        ObjectStoreBackend::from_config(&backend, prefix, &e)
            .expect("client builds")
            .with_spool_dir(self.spool.path().join("spool"))
    }

    pub fn store(&self, prefix: &str) -> ObjectStoreBackend {
        self.store_with(prefix, &[], &[])
    }

    /// Spool files left behind (there must never be any).
    pub fn spool_leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.spool.path().join("spool"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let Some(child) = &mut self.child else {
            return;
        };
        // SIGTERM lets the controller stop the emulator; SIGKILL if it does not within 10 s.
        // SAFETY: plain kill(2) on the pid of a child we spawned and have not reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        for _ in 0..100 {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The backend and prefix of emulator options, through the real config resolution.
pub fn config_of(
    o: serde_json::Map<String, Value>,
    env: &HashMap<String, String>,
) -> (Backend, Prefix) {
    let config = resolve(&Value::Object(o), env, std::path::Path::new("/ws"))
        .expect("valid emulator config");
    (config.backend, config.prefix)
}
