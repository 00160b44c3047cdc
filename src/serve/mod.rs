//! `nx-open-cache serve`: the standalone Nx remote-cache server. Configuration in, a running
//! [`crate::server`] out (plain HTTP or TLS), with one startup line saying what it serves.

pub mod config;
pub mod explain;
pub mod health;
pub mod oidc;
pub mod tls;

use crate::config::Backend;
use crate::key::Prefix;
use crate::server::auth::{check_secret, Auth, Oidc, Role, TokenSpec};
use crate::server::insights::snapshot::{self, Writer, SNAPSHOT_INTERVAL};
use crate::server::insights::{Insights, StorageInfo};
use crate::server::limits::Limits;
use crate::server::oidc::Verifier;
use crate::server::{Caps, LogFormat, RunningServer, ServerSettings, UiSettings};
use crate::stats::Stats;
use crate::store::fs::{Budget, FsStore};
use crate::store::object::ObjectStoreBackend;
use crate::store::validate;
use crate::store::Store;
use config::ServeConfig;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// A running `serve` server.
pub struct RunningServe {
    /// `http://<addr>` or `https://<addr>` (the bound address, so port 0 shows the real port).
    pub url: String,
    pub addr: SocketAddr,
    /// The startup line that was printed.
    pub banner: String,
    server: RunningServer,
    retention: Option<crate::retention::BackgroundHandle>,
    /// The dashboard's snapshot writer.
    snapshots: Writer,
    /// The dashboard's counts.
    pub insights: Arc<Insights>,
}

/// How often background retention runs (fs storage with --max-size or --max-age).
pub const RETENTION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);

impl RunningServe {
    /// Stops accepting and writes the dashboard's snapshot (bounded) while requests in flight
    /// finish (bounded grace): the snapshot starts at once, not after the grace, so a container
    /// runtime's stop timeout (Docker's 10 s) does not kill it first. Then stops background
    /// retention and returns.
    pub async fn stop(self) {
        tokio::join!(self.server.stop(), self.snapshots.stop());
        if let Some(r) = self.retention {
            r.stop().await;
        }
    }
}

/// The access rules of `config`: tokens of the config file, then those of the simple lists
/// (`NX_OPEN_CACHE_SERVER_TOKENS`, `--tokens-file`); names and secrets must be unique.
pub fn build_auth(config: &ServeConfig) -> Result<Auth, String> {
    let mut tokens: Vec<TokenSpec> = Vec::new();
    for t in &config.tokens {
        check_secret(&t.name, &t.secret)?;
        tokens.push(t.clone());
    }
    for list in &config.token_lists {
        let parsed = Auth::parse_tokens(&list.text).map_err(|e| format!("{}: {e}", list.source))?;
        tokens.extend(parsed);
    }
    for (i, t) in tokens.iter().enumerate() {
        for other in &tokens[..i] {
            if other.name == t.name {
                return Err(format!(
                    "token name {:?} is used twice (names must be unique across the config file, \
                     NX_OPEN_CACHE_SERVER_TOKENS and the tokens file)",
                    t.name
                ));
            }
            if other.secret == t.secret {
                return Err(format!(
                    "tokens {:?} and {:?} have the same secret",
                    other.name, t.name
                ));
            }
        }
    }
    let oidc = match &config.oidc {
        None => None,
        Some(o) => {
            for r in &o.rules {
                if tokens.iter().any(|t| t.name == r.name) {
                    return Err(format!(
                        "OIDC rule {:?} has the name of a token: names must be unique across \
                         tokens and rules (they name who did what in logs and metrics)",
                        r.name
                    ));
                }
            }
            Some(Oidc(Arc::new(Verifier::new(o)?)))
        }
    };
    Ok(Auth {
        tokens,
        anonymous_read: config.allow_anonymous.then(|| vec![Prefix::default()]),
        oidc,
    })
}

/// Checks what [`config::resolve`] cannot: the tokens (secret length, unique names and secrets)
/// and the TLS files. A failure here is a configuration mistake, not a failure to start.
pub fn validate(config: &ServeConfig) -> Result<(), String> {
    build_auth(config)?;
    if let Some((cert, key)) = &config.tls {
        tls::load_config(cert, key)?;
    }
    Ok(())
}

/// The server limits of `config` (the server's defaults where it sets none).
pub fn limits(config: &ServeConfig) -> Limits {
    let defaults = Limits::server();
    Limits {
        max_artifact_bytes: config.max_artifact_size.or(defaults.max_artifact_bytes),
        upload_timeout: config.upload_timeout.unwrap_or(defaults.upload_timeout),
        max_concurrent_uploads: config
            .max_concurrent_uploads
            .unwrap_or(defaults.max_concurrent_uploads),
        require_content_length: true,
        max_connections: config.max_connections,
        max_untrusted_connections: config.max_untrusted_connections,
    }
}

/// Opens the configured storage; cloud credentials come from `env`. Nothing is contacted for
/// clouds here (see [`probe`]); an fs directory is created (when it does not exist and cannot be,
/// `Err`; when it exists but cannot be used, the second value says why: the probe at start
/// reports it and `/readyz` answers 503 until it can be used).
/// `budget`: the size budget an fs store holds its uploads to (see [`fs_budget`]); `writes`:
/// whether a token may upload (an fs directory must then take new entries to be ready).
pub fn open_store(
    config: &ServeConfig,
    env: &HashMap<String, String>,
    budget: Option<Arc<Budget>>,
    writes: bool,
) -> Result<(Arc<dyn Store>, Option<String>), String> {
    match &config.backend {
        Backend::Fs { path } => {
            let mut store = FsStore::new(path.clone(), config.prefix.clone())
                .with_budget(budget)
                .with_durability(config.durability);
            if writes {
                store = store.expecting_writes();
            }
            // Nothing there and it cannot be made (a wrong path, a parent this user may not
            // write): serve stops. A directory that cannot be used now, or something else in its
            // place, is the probe's to report, like a missing bucket (the same warning, or the
            // same refusal with --require-ready); for a directory, with this reason (for a file
            // in its place, the probe's "is not a directory" says more than "File exists").
            let prepared = store.prepare().err().map(|e| e.message);
            if let Some(reason) = prepared.as_ref().filter(|_| !path.exists()) {
                return Err(format!("--storage {}: {reason}", config.storage));
            }
            Ok((Arc::new(store), prepared.filter(|_| path.is_dir())))
        }
        other => ObjectStoreBackend::from_config(other, config.prefix.clone(), env)
            .map(|s| (Arc::new(s) as Arc<dyn Store>, None))
            .map_err(|e| format!("--storage {}: {}", config.storage, e.message)),
    }
}

/// Runs `work` on the shared runtime and waits for it from this (non-async) thread; works
/// whether or not the caller is itself on a runtime.
pub fn wait_for<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    runtime.spawn(async move {
        let _ = tx.send(work.await);
    });
    rx.recv()
        .map_err(|_| "the work stopped without an answer".to_owned())
}

/// Probes `store` as `/readyz` does (bounded by its timeout), from a thread outside the runtime
/// or inside another one. `Err`: why it is not ready, on one line (the store's reason, whose
/// cloud XML bodies have line breaks; no secret).
pub fn probe(runtime: &tokio::runtime::Runtime, store: &Arc<dyn Store>) -> Result<(), String> {
    let probed = store.clone();
    match wait_for(runtime, async move {
        crate::server::readiness(probed.as_ref()).await
    }) {
        Ok(answer) => {
            answer.map_err(|(_, reason)| reason.split_whitespace().collect::<Vec<_>>().join(" "))
        }
        Err(_) => Err("the probe stopped without an answer".to_owned()),
    }
}

/// What `serve` says at start when the storage is not ready and it starts anyway: on stderr,
/// where the request log goes (a JSON line with `--log json`).
/// `writes`: whether a token may upload (with read-only tokens only, no upload is tried).
fn not_ready_warning(config: &ServeConfig, location: &str, reason: &str, writes: bool) -> String {
    let consequence = if writes {
        "until it is, Nx clients get misses and failed uploads (their builds still pass, \
         uncached) and /readyz answers 503"
    } else {
        "until it is, Nx clients get misses (their builds still pass, uncached) and /readyz \
         answers 503"
    };
    let fix = "fix the storage, or pass --require-ready to refuse to start instead";
    match config.log {
        LogFormat::Json => serde_json::json!({
            "level": "warn",
            "msg": "storage not ready at start",
            "storage": location,
            "reason": reason,
            "consequence": consequence,
            "fix": fix,
        })
        .to_string(),
        _ => format!(
            "nx-open-cache serve: WARNING: storage {location} is not ready: {reason}\n\
             nx-open-cache serve: WARNING: {consequence}; {fix}"
        ),
    }
}

/// The size budget of fs storage with `--max-size`, shared by the store (its uploads) and
/// background retention (woken when uploads cross it).
pub fn fs_budget(config: &ServeConfig) -> Option<Arc<Budget>> {
    match (&config.backend, config.max_size) {
        (Backend::Fs { .. }, Some(max)) => Some(Budget::new(max)),
        _ => None,
    }
}

/// ` | OIDC issuers: github (https://..., 2 keys) | rules: main, pr, other (deny)`, or nothing.
fn oidc_summary(auth: &Auth) -> String {
    let Some(Oidc(v)) = &auth.oidc else {
        return String::new();
    };
    let rules: Vec<String> = v
        .rules()
        .map(|(name, grant)| match grant {
            Some(g) => format!("{name} ({})", crate::server::oidc::describe_grant(g)),
            None => format!("{name} (deny)"),
        })
        .collect();
    format!(
        " | OIDC issuers: {} | OIDC rules (first match): {}",
        v.describe().join(", "),
        rules.join("; ")
    )
}

/// What the startup line shows besides the configuration.
struct Shown<'a> {
    url: &'a str,
    location: &'a str,
    auth: &'a Auth,
    limits: &'a Limits,
    caps: Caps,
}

/// The startup line: URL, storage, tokens (names and roles, never secrets), anonymous access,
/// limits, connection caps, retention.
fn banner(config: &ServeConfig, shown: &Shown<'_>) -> String {
    let Shown {
        url,
        location,
        auth,
        limits,
        caps,
    } = *shown;
    let tokens: Vec<String> = auth
        .tokens
        .iter()
        .map(|t| {
            let mut s = format!("{} ({})", t.name, t.role.as_str());
            if !t.write_prefix.is_empty() || t.read_prefixes != [Prefix::default()] {
                let reads: Vec<String> = t
                    .read_prefixes
                    .iter()
                    .map(|p| format!("{:?}", p.as_str()))
                    .collect();
                s.push_str(&format!(
                    " writes {:?} reads [{}]",
                    t.write_prefix.as_str(),
                    reads.join(", ")
                ));
            }
            s
        })
        .collect();
    let max = limits
        .max_artifact_bytes
        .map(crate::units::format_bytes)
        .unwrap_or_else(|| "unlimited".into());
    let retention = match (config.max_size, config.max_age) {
        (None, None) => "off".to_owned(),
        (size, age) => {
            let mut parts = vec![format!(
                "every {}",
                crate::units::format_duration(RETENTION_INTERVAL)
            )];
            if let Some(s) = size {
                parts.push(format!("max size {}", crate::units::format_bytes(s)));
            }
            if let Some(a) = age {
                parts.push(format!("max age {}", crate::units::format_duration(a)));
            }
            parts.join(", ")
        }
    };
    let checked = match (config.validation.on_put, config.validation.on_get) {
        (true, true) => "uploads and reads",
        (true, false) => "uploads",
        (false, true) => "reads",
        (false, false) => "off",
    };
    match config.log {
        LogFormat::Json => serde_json::json!({
            "level": "info",
            "msg": "nx-open-cache serve started",
            "url": url,
            "storage": location,
            "tokens": auth.tokens.iter().map(|t| serde_json::json!({
                "name": t.name,
                "role": t.role.as_str(),
                "write_prefix": t.write_prefix.as_str(),
                "read_prefixes": t.read_prefixes.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "oidc": auth.oidc.as_ref().map(|o| serde_json::json!({
                "issuers": o.0.describe(),
                "rules": o.0.rules().map(|(name, grant)| serde_json::json!({
                    "name": name,
                    "access": grant.map_or("deny".to_owned(), crate::server::oidc::describe_grant),
                })).collect::<Vec<_>>(),
            })),
            "anonymous_read": config.allow_anonymous,
            "max_artifact_bytes": limits.max_artifact_bytes,
            "upload_timeout_s": limits.upload_timeout.as_secs(),
            "max_concurrent_uploads": limits.max_concurrent_uploads,
            "max_connections": caps.total,
            "max_untrusted_connections": caps.untrusted,
            "retention": retention,
            "artifacts_checked": checked,
            "dashboard": format!("{url}/ui"),
            "dashboard_anonymous": config.ui_anonymous,
        })
        .to_string(),
        _ => format!(
            "nx-open-cache serve: listening on {url} | storage {location} | tokens: {}{} | anonymous read {} | \
             max artifact {max}, upload timeout {}, {} concurrent uploads | {} connections, {} without a \
             token | retention {retention} | dashboard {url}/ui{} | artifacts checked: {checked}",
            if tokens.is_empty() { "none".to_owned() } else { tokens.join(", ") },
            oidc_summary(auth),
            if config.allow_anonymous { "on" } else { "off" },
            crate::units::format_duration(limits.upload_timeout),
            limits.max_concurrent_uploads,
            caps.total,
            caps.untrusted,
            if config.ui_anonymous { " (anonymous)" } else { "" },
        ),
    }
}

/// Binds, opens the store and starts serving on the shared runtime; prints the startup line on
/// stdout. `env` is the environment cloud credentials are read from.
pub fn start(config: &ServeConfig, env: &HashMap<String, String>) -> Result<RunningServe, String> {
    let auth = build_auth(config)?;
    let limits = limits(config);
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls::load_config(cert, key)?),
        None => None,
    };
    crate::runtime::limit_malloc_arenas();
    let runtime = crate::runtime::get()?;
    let budget = fs_budget(config);
    let writes = auth.principals().iter().any(|t| t.role == Role::ReadWrite);
    if let Some(Oidc(v)) = &auth.oidc {
        let verifier = v.clone();
        let warnings = wait_for(runtime, async move { verifier.prefetch().await })?;
        for warning in warnings {
            eprintln!("nx-open-cache serve: {warning}");
        }
    }
    // Uploads and reads are checked to be valid Nx artifacts (a bad writer gets 400 at once; an
    // object written before, or by another writer of the storage, is a miss).
    let (opened, prepared) = open_store(config, env, budget.clone(), writes)?;
    // The dashboard's snapshot is the server's own JSON object: written beside the artifacts,
    // not through the artifact check.
    let own = opened.clone();
    let store = validate::wrap(opened, config.validation.clone());
    let location = store.describe();
    // The probe's reason, or the one an fs directory could not be prepared for (more precise).
    if let Err(reason) = probe(runtime, &store).map_err(|probed| prepared.unwrap_or(probed)) {
        if config.require_ready {
            return Err(format!(
                "storage {location} is not ready: {reason}; refusing to start (--require-ready)"
            ));
        }
        eprintln!("{}", not_ready_warning(config, &location, &reason, writes));
    }
    let std_listener = std::net::TcpListener::bind(config.listen)
        .map_err(|e| format!("--listen {}: cannot listen there: {e}", config.listen))?;
    std_listener.set_nonblocking(true).map_err(|e| {
        format!(
            "--listen {}: cannot configure the socket: {e}",
            config.listen
        )
    })?;
    let _guard = runtime.enter();
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(|e| {
        format!(
            "--listen {}: cannot register the socket: {e}",
            config.listen
        )
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("--listen {}: {e}", config.listen))?;
    let insights = Arc::new(Insights::new(
        &auth,
        StorageInfo {
            location: location.clone(),
            budget: budget.clone(),
            max_age: config.max_age,
        },
    ));
    if let Some(line) = load_snapshot(runtime, &own, &insights) {
        eprintln!("{}", snapshot_warning(config.log, &line));
    }
    let settings = ServerSettings {
        store,
        auth: auth.clone(),
        mode: crate::config::Mode::ReadWrite,
        limits: limits.clone(),
        operations: true,
        log: config.log,
        stats: Arc::new(Stats::default()),
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let ui = UiSettings {
        insights: insights.clone(),
        anonymous: config.ui_anonymous,
    };
    let server = crate::server::serve_with_ui(listener, settings, tls, ui);
    let server = server.map_err(|e| format!("cannot start the server: {e}"))?;
    let policy = crate::retention::Policy {
        max_bytes: config.max_size,
        max_age: config.max_age,
    };
    let retention = match &config.backend {
        Backend::Fs { path } if policy.is_active() => Some(crate::retention::spawn_background(
            path.clone(),
            policy,
            RETENTION_INTERVAL,
            budget,
        )),
        _ => None,
    };
    let url = format!("{scheme}://{addr}");
    let banner = banner(
        config,
        &Shown {
            url: &url,
            location: &location,
            auth: &auth,
            limits: &limits,
            caps: server.caps,
        },
    );
    println!("{banner}");
    let snapshots = Writer::spawn(own, insights.clone(), SNAPSHOT_INTERVAL, config.log);
    Ok(RunningServe {
        url,
        addr,
        banner,
        server,
        retention,
        snapshots,
        insights,
    })
}

/// Reads the dashboard's snapshot from `store` into `insights` (bounded to 10 s). Returns the
/// line to log when one was there but could not be used.
fn load_snapshot(
    runtime: &tokio::runtime::Runtime,
    store: &Arc<dyn Store>,
    insights: &Arc<Insights>,
) -> Option<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (store, insights) = (store.clone(), insights.clone());
    runtime.spawn(async move {
        let loaded = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            snapshot::load(store.as_ref(), &insights),
        )
        .await
        .unwrap_or_else(|_| {
            Some("dashboard snapshot not read: the storage did not answer within 10 s".to_owned())
        });
        let _ = tx.send(loaded);
    });
    rx.recv().ok().flatten()
}

/// The one line a snapshot that could not be used gets on stderr (whatever `--log` says: it is
/// about the server's start, like the startup line).
fn snapshot_warning(log: LogFormat, line: &str) -> String {
    match log {
        LogFormat::Json => serde_json::json!({"level": "warn", "msg": line}).to_string(),
        _ => format!(
            "nx-open-cache serve: warning: {}",
            crate::server::log::escape(line)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_not_ready_warning_speaks_of_uploads_only_when_a_token_may_upload() {
        let args: Vec<String> = ["--storage", "fs:/d"].map(str::to_owned).to_vec();
        let env = HashMap::from([(
            "NX_OPEN_CACHE_SERVER_TOKENS".to_owned(),
            "dev:read-only:0123456789abcdef".to_owned(),
        )]);
        let config = config::resolve(&args, &env, std::path::Path::new("/w")).expect("config");
        let reader = not_ready_warning(&config, "fs /d", "gone", false);
        assert!(
            reader.contains("Nx clients get misses (their builds still pass, uncached)")
                && !reader.contains("upload"),
            "{reader}"
        );
        let writer = not_ready_warning(&config, "fs /d", "gone", true);
        assert!(writer.contains("misses and failed uploads"), "{writer}");
    }
}
