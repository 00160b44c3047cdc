//! `nx-open-cache doctor`: checks that the configured cache works, step by step, and says how to
//! fix what does not.
//!
//! Steps: the store's client is set up (credentials found, directory usable); a lookup of a hash
//! that is never stored answers (the store is reachable and accepts the credentials); then, unless
//! the mode forbids writing, an artifact is written under a unique hash, read back byte for byte and
//! deleted again. Every step is timed.
//!
//! The verdict ([`Status`]): the cache works; it works with a warning (reads work but writes are
//! refused, as with a read-only token, while the mode is read-write by default on a developer
//! machine: the fix is read-only mode); or it does not work (also when writes are refused on CI or
//! with read-write mode set explicitly: that machine is meant to write). The configuration's warnings (unknown variables, a signing key that is not
//! trusted) come with the report.

use crate::config::{Backend, CacheConfig, Mode};
use crate::key::TaskHash;
use crate::stats::Stats;
use crate::store::PROBE_HASH;
use crate::store::{ArtifactBody, Deleted, ErrorKind, PutOutcome, Store, StoreError};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Length of the write probe's terminal output (random hex).
const PROBE_LEN: usize = 4096;
/// No step may take longer than this (the store's own timeouts are usually shorter).
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// The outcome of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    /// Not run: the mode forbids it or an earlier step failed.
    Skipped,
    /// Refused in a way that has a setting for it: a write refused while reads work (the fix is
    /// read-only mode).
    Warning,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Warning => "warning",
        }
    }
}

/// The verdict of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Every step that ran passed.
    Works,
    /// The cache can be used as it is, but something should change: reads work and writes are
    /// refused (set read-only mode), or the configuration has warnings.
    Warning,
    /// Nx runs would go uncached (or not stored, for reasons without a setting).
    Broken,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Works => "ok",
            Status::Warning => "warning",
            Status::Broken => "broken",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Outcome,
    pub millis: u64,
    /// What was seen (the error message on failure).
    pub detail: String,
    /// What to do about a failure.
    pub fix: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub backend: String,
    pub location: String,
    pub mode: String,
    pub mode_source: String,
    pub checks: Vec<Check>,
    /// The store was reached and every step that ran passed or only warned.
    pub works: bool,
    pub status: Status,
    /// The keys by id (`signs with key ..., trusts ...`); empty without signing or encryption.
    pub keys: String,
    /// The configuration's warnings ([`crate::config::warnings`]).
    pub warnings: Vec<String>,
}

fn ms(started: Instant) -> u64 {
    started.elapsed().as_millis().try_into().unwrap_or(u64::MAX)
}

/// What to do about a storage error, by backend and symptom.
pub fn fix_for(backend: &Backend, e: &StoreError) -> Option<String> {
    let m = e.message.to_ascii_lowercase();
    if e.kind == ErrorKind::Full {
        return Some(format!(
            "free space on {} (or set retention: `nx-open-cache gc --max-size ...`)",
            backend.location()
        ));
    }
    if m.contains("credentials") || (m.contains("token") && m.contains("refused")) {
        return Some(
            match backend {
                Backend::S3 { .. } => {
                    "give this machine AWS credentials: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY, \
                     AWS_PROFILE, web identity (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN) or an \
                     instance role, allowed s3:ListBucket on the bucket (setup lists it, and \
                     without it a miss is refused instead of not found) and s3:GetObject, \
                     s3:PutObject and s3:DeleteObject on its objects (read-only machines: \
                     s3:ListBucket and s3:GetObject)"
                }
                Backend::Gcs { .. } => {
                    "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file (or run on a \
                     GCE/GKE identity) with Storage Object Admin on the bucket"
                }
                Backend::Azure { .. } => {
                    "set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME with \
                     AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN, or use a workload identity"
                }
                Backend::Http { .. } => {
                    "set NX_OPEN_CACHE_TOKEN to a token the server accepts (a read-write one to \
                     store), or name a file holding it in NX_OPEN_CACHE_TOKEN_FILE; on GitHub \
                     Actions set the plugin option oidcAudience (job permission id-token: write) \
                     to have a token fetched and refreshed"
                }
                Backend::Fs { .. } => "check the directory's permissions",
            }
            .to_owned(),
        );
    }
    if m.contains("may not exist") || m.contains("no such bucket") || m.contains("nosuchbucket") {
        return Some(match backend {
            Backend::Azure { container, .. } => {
                format!("create the container {container:?} or fix the `container` option")
            }
            other => format!(
                "create the bucket {:?} or fix the `bucket` option",
                other.location()
            ),
        });
    }
    if let Backend::Fs { path } = backend {
        if m.contains("read-only file system") {
            return Some(format!(
                "make {} writable for this user, or point `path` at a directory that is",
                path.display()
            ));
        }
        if m.contains("permission denied") {
            return Some(format!(
                "make {} readable and writable for this user (readable is enough in read-only \
                 mode), or point `path` at a directory that is",
                path.display()
            ));
        }
        return Some(format!(
            "create {} (or mount the shared directory there), or fix the `path` option",
            path.display()
        ));
    }
    if m.contains("timed out")
        || m.contains("timeout")
        || m.contains("did not answer")
        || m.contains("connect")
        || m.contains("dns")
    {
        return Some(match backend {
            Backend::Http { url, .. } => format!(
                "check that {url} is reachable from this machine (network, proxy, TLS: \
                 NODE_EXTRA_CA_CERTS for a private CA)"
            ),
            _ => "check the `endpoint` / `region` options, the network and any proxy between this \
                  machine and the store"
                .to_owned(),
        });
    }
    None
}

/// Whether a write failed because the store refused it (a read-only token, credentials without
/// write permission, a read-only directory or mount) rather than because it is unreachable or
/// full. Asked only after reads with the same credentials worked.
fn refused_write(e: &StoreError) -> bool {
    if e.kind != ErrorKind::Unavailable {
        return false;
    }
    let m = e.message.to_ascii_lowercase();
    // A status code as a word of its own (never a piece of an object key's hex).
    let status = |code: &str| {
        m.match_indices(code).any(|(i, _)| {
            let before = m[..i].chars().next_back();
            let after = m[i + code.len()..].chars().next();
            !before.is_some_and(|c| c.is_ascii_alphanumeric())
                && !after.is_some_and(|c| c.is_ascii_alphanumeric())
        })
    };
    if status("403") || status("401") {
        return true;
    }
    [
        "forbidden",
        "refused the write",
        "read-only token",
        "accessdenied",
        "access denied",
        "permissiondenied",
        "permission denied",
        "not authorized",
        "authorizationpermissionmismatch",
        "credentials were refused",
        "credentials missing or refused",
        "read-only file system",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

/// The mode option of this machine: `ciMode` on CI, else `localMode`.
fn mode_option(env: &HashMap<String, String>) -> &'static str {
    if crate::config::is_ci(env) {
        "ciMode"
    } else {
        "localMode"
    }
}

/// What lets this machine write, by backend.
fn writer(config: &CacheConfig) -> &'static str {
    match &config.backend {
        Backend::Http { .. } => "a read-write token in NX_OPEN_CACHE_TOKEN",
        Backend::Fs { .. } => "a directory this user may write",
        _ => "credentials allowed to write",
    }
}

/// Whether this machine is meant to write, so that refused writes are a broken cache: the mode
/// is read-write on CI (where the writers are), or set to read-write explicitly. Only the default
/// mode on a developer machine, with writes refused, is a read-only setup (a warning).
fn meant_to_write(config: &CacheConfig, env: &HashMap<String, String>) -> bool {
    config.mode == Mode::ReadWrite && (crate::config::is_ci(env) || config.mode_source != "default")
}

/// The fix for writes refused while reads work: read-only mode, by the option this run's mode
/// comes from (`ciMode` on CI), or writing credentials; for a machine meant to write
/// ([`meant_to_write`]), writing credentials first.
fn read_only_fix(config: &CacheConfig, env: &HashMap<String, String>) -> String {
    let option = mode_option(env);
    let var = crate::config::MODE_VAR;
    let writer = writer(config);
    if meant_to_write(config, env) {
        return format!(
            "reads work, writes are refused, and this machine is meant to write (mode read-write \
             from {}): use {writer}; if it should only read, set {option} \"read-only\" in the \
             nx-open-cache plugin options (or {var}=read-only)",
            config.mode_source
        );
    }
    format!(
        "reads work, writes are refused: set {option} \"read-only\" in the nx-open-cache plugin \
         options (or {var}=read-only) on this machine; to store from here, use {writer}"
    )
}

/// The outcome of refused writes while reads work: broken for a machine meant to write, else a
/// warning (a read-only setup).
fn refused_outcome(config: &CacheConfig, env: &HashMap<String, String>) -> Outcome {
    if meant_to_write(config, env) {
        Outcome::Failed
    } else {
        Outcome::Warning
    }
}

fn random_hash() -> Result<TaskHash, String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| format!("cannot read OS randomness: {e}"))?;
    TaskHash::parse(&format!("nx-open-cache-doctor-{}", hex::encode(bytes)))
        .map_err(|e| e.to_string())
}

/// The probe: a valid Nx artifact (servers and proxies check what they store and serve) with no
/// outputs and a random terminal output of [`PROBE_LEN`] hex characters, in Nx's own format.
fn probe_payload() -> Result<Vec<u8>, String> {
    let mut noise = vec![0u8; PROBE_LEN / 2];
    getrandom::fill(&mut noise).map_err(|e| format!("cannot read OS randomness: {e}"))?;
    crate::archive::pack_to_vec(&crate::archive::PackOptions {
        root: std::env::temp_dir(),
        files: Vec::new(),
        entries: Vec::new(),
        terminal_output: hex::encode(noise),
        code: 0,
        format: crate::archive::Format::Nx,
        level: Some(1),
        threads: None,
    })
    .map_err(|e| format!("cannot make the probe artifact: {e}"))
}

fn read_body(body: ArtifactBody, len: u64) -> Result<Vec<u8>, String> {
    match body {
        ArtifactBody::Memory(b) => Ok(b.to_vec()),
        ArtifactBody::File { file, .. } => {
            let mut out = Vec::new();
            file.take(len)
                .read_to_end(&mut out)
                .map_err(|e| format!("reading the artifact back: {e}"))?;
            Ok(out)
        }
    }
}

async fn timed<T>(
    fut: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(STEP_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::new(
                ErrorKind::Unavailable,
                format!("no answer within {} s", STEP_TIMEOUT.as_secs()),
            ))
        })
}

/// Runs every check against `store` (already built from `config`).
pub async fn check_store(
    config: &CacheConfig,
    env: &HashMap<String, String>,
    store: Arc<dyn Store>,
    setup: Check,
) -> Report {
    let mut checks = vec![setup];
    let failed = |name, started, e: &StoreError| Check {
        name,
        outcome: Outcome::Failed,
        millis: ms(started),
        detail: e.message.clone(),
        fix: fix_for(&config.backend, e),
    };
    let skipped = |name, why: &str| Check {
        name,
        outcome: Outcome::Skipped,
        millis: 0,
        detail: why.to_owned(),
        fix: None,
    };
    // 1. Reach: a lookup of a hash that is never stored.
    let started = Instant::now();
    let reached = match TaskHash::parse(PROBE_HASH) {
        Ok(h) => timed(store.get(&h)).await.map(|_| ()),
        Err(e) => Err(StoreError::new(ErrorKind::Unavailable, e.to_string())),
    };
    let reachable = match &reached {
        Ok(()) => {
            checks.push(Check {
                name: "read",
                outcome: Outcome::Ok,
                millis: ms(started),
                detail: "a lookup was answered".into(),
                fix: None,
            });
            true
        }
        Err(e) => {
            checks.push(failed("read", started, e));
            false
        }
    };
    // 2. Write, read back, delete.
    if !reachable {
        for name in ["write", "read back", "delete"] {
            checks.push(skipped(name, "the store could not be read"));
        }
    } else if config.mode != Mode::ReadWrite {
        for name in ["write", "read back", "delete"] {
            checks.push(skipped(
                name,
                &format!("mode is {}: nothing is written", config.mode.as_str()),
            ));
        }
    } else {
        write_read_delete(store.as_ref(), &mut checks, config, env).await;
    }
    // The read-only fix is said once (a read-only directory refuses both setup's temp directory
    // and the write).
    let read_only = Some(read_only_fix(config, env));
    for i in 1..checks.len() {
        let said = |c: &Check| c.fix == read_only && c.outcome == checks[i].outcome;
        if checks[i].fix == read_only && checks[..i].iter().any(said) {
            checks[i].fix = None;
        }
    }
    let works = reachable
        && checks
            .iter()
            .all(|c| c.outcome != Outcome::Failed || c.name == "delete");
    let status = if !works {
        Status::Broken
    } else if !config.warnings.is_empty() || checks.iter().any(|c| c.outcome == Outcome::Warning) {
        Status::Warning
    } else {
        Status::Works
    };
    Report {
        backend: config.backend.name().to_owned(),
        location: store.describe(),
        mode: config.mode.as_str().to_owned(),
        mode_source: config.mode_source.clone(),
        checks,
        works,
        status,
        keys: config.seal.describe(),
        warnings: config.warnings.clone(),
    }
}

async fn write_read_delete(
    store: &dyn Store,
    checks: &mut Vec<Check>,
    config: &CacheConfig,
    env: &HashMap<String, String>,
) {
    let local = |name, detail: String| Check {
        name,
        outcome: Outcome::Failed,
        millis: 0,
        detail,
        fix: None,
    };
    let (hash, data) = match random_hash().and_then(|h| Ok((h, probe_payload()?))) {
        Ok(x) => x,
        Err(e) => {
            checks.push(local("write", e));
            return;
        }
    };
    if !write_probe(store, checks, config, env, &hash, &data).await {
        for name in ["read back", "delete"] {
            checks.push(Check {
                name,
                outcome: Outcome::Skipped,
                millis: 0,
                detail: "nothing was written".into(),
                fix: None,
            });
        }
        return;
    }
    checks.push(read_back(store, config, &hash, &data).await);
    checks.push(delete_probe(store, &hash).await);
}

/// Writes the probe artifact; true when it was stored (or already there).
async fn write_probe(
    store: &dyn Store,
    checks: &mut Vec<Check>,
    config: &CacheConfig,
    env: &HashMap<String, String>,
    hash: &TaskHash,
    data: &[u8],
) -> bool {
    let started = Instant::now();
    let bytes = Bytes::copy_from_slice(data);
    let mut body = futures_util::stream::iter(vec![Ok::<Bytes, std::io::Error>(bytes)]).boxed();
    match timed(store.put(hash, &mut body, Some(data.len() as u64))).await {
        Ok(PutOutcome::Stored(_)) | Ok(PutOutcome::AlreadyExists) => {
            checks.push(Check {
                name: "write",
                outcome: Outcome::Ok,
                millis: ms(started),
                detail: format!("{} bytes stored under {hash}", data.len()),
                fix: None,
            });
            true
        }
        Err(e) => {
            // Reads worked with the same credentials: a refusal is a read-only setup, whose
            // setting is read-only mode (a warning, not a broken cache), unless this machine is
            // meant to write.
            let refused = refused_write(&e);
            checks.push(Check {
                name: "write",
                outcome: if refused {
                    refused_outcome(config, env)
                } else {
                    Outcome::Failed
                },
                millis: ms(started),
                detail: e.message.clone(),
                fix: if refused {
                    Some(read_only_fix(config, env))
                } else {
                    fix_for(&config.backend, &e).or_else(|| {
                        Some("check that these credentials may write to the store".into())
                    })
                },
            });
            false
        }
    }
}

/// Reads the probe artifact back and compares it with what was written.
async fn read_back(store: &dyn Store, config: &CacheConfig, hash: &TaskHash, data: &[u8]) -> Check {
    let started = Instant::now();
    let back = match timed(store.get(hash)).await {
        Ok(Some(a)) => read_body(a.body, a.len).map(|b| b == data),
        Ok(None) => Err("the artifact just written is not found".to_owned()),
        Err(e) => Err(e.message),
    };
    match back {
        Ok(true) => Check {
            name: "read back",
            outcome: Outcome::Ok,
            millis: ms(started),
            detail: "the same bytes came back".into(),
            fix: None,
        },
        Ok(false) => Check {
            name: "read back",
            outcome: Outcome::Failed,
            millis: ms(started),
            detail: "different bytes came back".into(),
            fix: Some("something between this machine and the store alters data".into()),
        },
        // requireSignature without the signing key: this machine's writes are unsigned and so
        // refused on read, by design (they are never restored by anyone).
        Err(detail)
            if config.seal.require_signature
                && config.seal.signing_key.is_none()
                && detail.contains(crate::seal::format::UNSIGNED_REFUSAL) =>
        {
            Check {
                name: "read back",
                outcome: Outcome::Ok,
                millis: ms(started),
                detail: format!(
                    "written and refused on read as unsigned, as expected: requireSignature is on \
                     and {} is not set here, so what this machine stores is never restored",
                    crate::seal::keys::SIGNING_KEY_VAR
                ),
                fix: None,
            }
        }
        Err(detail) => Check {
            name: "read back",
            outcome: Outcome::Failed,
            millis: ms(started),
            detail,
            fix: Some("the store accepted a write it cannot serve: check read permissions".into()),
        },
    }
}

/// Deletes the probe artifact (where the store can).
async fn delete_probe(store: &dyn Store, hash: &TaskHash) -> Check {
    let started = Instant::now();
    match timed(store.delete(hash)).await {
        Ok(Deleted::Removed) | Ok(Deleted::Absent) => Check {
            name: "delete",
            outcome: Outcome::Ok,
            millis: ms(started),
            detail: "the probe artifact was removed".into(),
            fix: None,
        },
        Ok(Deleted::Unsupported) => Check {
            name: "delete",
            outcome: Outcome::Skipped,
            millis: 0,
            detail: format!(
                "this store cannot delete (the Nx protocol has none): {hash} stays, a few KB"
            ),
            fix: None,
        },
        Err(e) => Check {
            name: "delete",
            outcome: Outcome::Failed,
            millis: ms(started),
            detail: e.message.clone(),
            fix: Some(format!(
                "not needed for caching; remove {hash} by hand, or allow deletes to let doctor clean up"
            )),
        },
    }
}

/// Builds the configured store and runs every check (inside a tokio runtime).
pub async fn run(config: &CacheConfig, env: &HashMap<String, String>) -> Report {
    let started = Instant::now();
    let stats = Arc::new(Stats::default());
    let opened = crate::proxy::open_store(config, env, &stats);
    // With trust namespaces the probe goes where this run writes (`writePrefix`): credentials that
    // enforce the split may allow nothing else.
    let store = if config.namespaces.is_default() {
        opened
    } else {
        match opened.with_namespace(&config.namespaces.write) {
            Ok(s) => s,
            Err(e) => {
                stats.error(&e.message);
                opened
            }
        }
    };
    // Setup: the client could be built (faults recorded by open_store: credentials unusable, a
    // bad CA file...) and the store's own check passes (directory usable, bucket listed).
    let recorded = stats.snapshot().errors.first().map(|e| e.reason.clone());
    let checked = match recorded {
        Some(reason) => Err(StoreError::new(ErrorKind::Unavailable, reason)),
        None => timed(store.check()).await,
    };
    let setup = match checked {
        Ok(()) => Check {
            name: "setup",
            outcome: Outcome::Ok,
            millis: ms(started),
            detail: format!(
                "{} client ready for {}{}",
                config.backend.name(),
                store.describe(),
                config
                    .token_source(env)
                    .map(|t| format!(" (token: {t})"))
                    .unwrap_or_default()
            ),
            fix: None,
        },
        // Refused by a directory: a read-only one (a read-only mount) when a lookup works, which
        // is asked first; else this user may not even read it.
        Err(e) if matches!(config.backend, Backend::Fs { .. }) && refused_write(&e) => {
            let readable = match TaskHash::parse(PROBE_HASH) {
                Ok(h) => timed(store.get(&h)).await.is_ok(),
                Err(_) => false,
            };
            let read_write = config.mode == Mode::ReadWrite;
            Check {
                name: "setup",
                outcome: match (readable, read_write) {
                    (false, _) => Outcome::Failed,
                    (true, true) => refused_outcome(config, env),
                    (true, false) => Outcome::Ok,
                },
                millis: ms(started),
                detail: if readable && !read_write {
                    format!(
                        "{}: fine, mode is {} (nothing is written)",
                        e.message,
                        config.mode.as_str()
                    )
                } else {
                    e.message.clone()
                },
                fix: match (readable, read_write) {
                    (false, _) => Some(format!(
                        "this user may not read {} either: make it readable (and writable, to \
                         store) for this user, or point `path` at a directory that is",
                        config.backend.location()
                    )),
                    (true, true) => Some(read_only_fix(config, env)),
                    (true, false) => None,
                },
            }
        }
        Err(e) => Check {
            name: "setup",
            outcome: Outcome::Failed,
            millis: ms(started),
            detail: e.message.clone(),
            fix: fix_for(&config.backend, &e),
        },
    };
    let setup_failed = setup.outcome == Outcome::Failed;
    let mut report = check_store(config, env, store, setup).await;
    if setup_failed {
        report.works = false;
        report.status = Status::Broken;
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_write_is_told_by_its_status_or_code_never_by_digits_in_a_key() {
        let e = |m: &str| StoreError::new(ErrorKind::Unavailable, m);
        for refused in [
            "http PUT http://h/v1/cache/1: the server refused the write (403 Forbidden; read-only token?)",
            "s3 b/k: writing failed: credentials were refused (AccessDenied: Access Denied)",
            "fs /mnt/c: cannot create the temp directory: Permission denied (os error 13)",
            "fs /mnt/c: Read-only file system (os error 30)",
            "http PUT http://h/v1/cache/1: the server requires a token (401 Unauthorized)",
        ] {
            assert!(refused_write(&e(refused)), "{refused}");
        }
        for other in [
            "s3 b/nx-open-cache-doctor-a403b401c4030000: no answer within 60 s",
            "http PUT http://h:4031/v1/cache/1: connection refused",
            "s3 b/k: 503 Service Unavailable",
        ] {
            assert!(!refused_write(&e(other)), "{other}");
        }
        let full = StoreError::new(ErrorKind::Full, "403 free of 9 GiB");
        assert!(!refused_write(&full));
    }

    #[test]
    fn the_write_probe_is_a_valid_nx_artifact_and_differs_each_time() {
        let a = probe_payload().expect("probe");
        let b = probe_payload().expect("probe");
        assert_ne!(a, b, "each probe is unique");
        let checked =
            crate::archive::validate_slice(&a, &crate::archive::ValidationLimits::default())
                .expect("servers and proxies accept the probe");
        assert_eq!(checked.code, 0);
    }
}
