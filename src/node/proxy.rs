//! Bindings for the cache proxy and configuration.

use super::JsOptions;
use crate::{config, proxy, runtime, stats};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

/// The effective configuration, as the plugin and diagnostics show it.
#[napi(object)]
pub struct ResolvedConfig {
    /// `fs`, `s3`, `gcs`, `azure` or `http`.
    pub backend: String,
    /// Where artifacts go: the fs directory (absolute), the s3/gcs bucket, the azure
    /// `<account>/<container>`, or the http server's URL.
    pub location: String,
    pub prefix: String,
    /// Trust namespace this run writes to, relative to `prefix` (`""`: the store root).
    pub write_prefix: String,
    /// Namespaces this run reads from, in order (first hit wins), relative to `prefix`.
    pub read_prefixes: Vec<String>,
    /// `read-write`, `read-only` or `no-cache`.
    pub mode: String,
    /// Why this mode applies, e.g. `ciMode (CI detected)`.
    pub mode_source: String,
    pub debug: bool,
    /// The artifact check's bounds for what this run reads: most paths in one artifact...
    pub max_artifact_entries: i64,
    /// ...most bytes its tar stream may inflate to...
    pub max_expanded_size: i64,
    /// ...and most times its compressed size, once above 256 MiB.
    pub max_expansion_ratio: i64,
    /// The key id of `NX_OPEN_CACHE_SIGNING_KEY` (as `nx-open-cache keygen` prints it), if set.
    pub signing_key_id: Option<String>,
    /// The key ids of `trustedKeys`, in order.
    pub trusted_key_ids: Vec<String>,
    /// Refuse artifacts not signed by a trusted key (`requireSignature`).
    pub require_signature: bool,
    /// The key ids of `NX_OPEN_CACHE_ENCRYPTION_KEY` (the first encrypts).
    pub encryption_key_ids: Vec<String>,
    /// The keys in one line, e.g. `signs with key a64d..., trusts a64d..., 9f1c...`; empty
    /// without signing or encryption.
    pub keys: String,
    /// What may be wrong although every value is valid (unknown `NX_OPEN_CACHE_*` variables, a
    /// signing key whose public key is not in `trustedKeys`): the plugin prints each once.
    pub warnings: Vec<String>,
    /// The `http` backend: where its bearer token comes from (e.g. `GitHub Actions OIDC,
    /// audience "https://cache.example.com"`, `NX_OPEN_CACHE_TOKEN_FILE (/run/token)`,
    /// `NX_OPEN_CACHE_TOKEN`), never the token; absent for the other backends.
    pub token_source: Option<String>,
}

/// Counters of one proxy's traffic.
#[napi(object)]
pub struct CacheStats {
    pub hits: i64,
    pub misses: i64,
    pub stored: i64,
    pub already_stored: i64,
    pub refused_writes: i64,
    pub bytes_down: i64,
    pub bytes_up: i64,
    pub cache_millis: i64,
    pub error_count: i64,
    pub errors: Vec<CacheError>,
    /// Objects not served (or uploads not stored): not valid artifacts, or sealed in a way this
    /// machine cannot open or check. Each is also a miss (or a write not stored). Routine
    /// refusals are not counted here.
    pub refused_count: i64,
    /// Routine refusals (an unsigned object this signing run replaces): each also a miss.
    pub routine_count: i64,
    pub refusals: Vec<CacheRefusal>,
    /// Artifact metadata (`<hash>-nxoc-meta`) served: not in hits or misses.
    pub meta_reads: i64,
    /// Artifact metadata stored: not in stored.
    pub meta_writes: i64,
    /// One per artifact request (metadata excluded), in order: at most 10,000 per run.
    pub events: Vec<CacheEvent>,
    /// Requests past the 10,000 events kept.
    pub events_dropped: i64,
}

/// One artifact request of the run.
#[napi(object)]
pub struct CacheEvent {
    pub hash: String,
    #[napi(ts_type = "'get' | 'put'")]
    pub op: String,
    #[napi(
        ts_type = "'hit' | 'miss' | 'stored' | 'already-stored' | 'refused' | 'error' | 'read-only'"
    )]
    pub outcome: String,
    /// Payload bytes served (hit) or stored (stored); 0 otherwise.
    pub bytes: i64,
    /// Time in the request until its outcome was known, in milliseconds.
    pub millis: i64,
    /// Why (refused, error, read-only, a miss with a cause), in plain words.
    pub reason: Option<String>,
}

/// One refusal reason, how often, and the first hashes it concerned.
#[napi(object)]
pub struct CacheRefusal {
    pub reason: String,
    pub count: i64,
    pub hashes: Vec<String>,
    /// Part of normal operation: counted in `routineCount`, not in `refusedCount`.
    pub routine: bool,
}

/// One fault cause, without hashes, and how many requests it concerned.
#[napi(object)]
pub struct CacheError {
    pub reason: String,
    pub count: i64,
    /// The store was skipped for the rest of the run because of it.
    pub skipped: bool,
}

fn n(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl From<stats::Snapshot> for CacheStats {
    fn from(s: stats::Snapshot) -> Self {
        CacheStats {
            hits: n(s.hits),
            misses: n(s.misses),
            stored: n(s.stored),
            already_stored: n(s.already_stored),
            refused_writes: n(s.refused_writes),
            bytes_down: n(s.bytes_down),
            bytes_up: n(s.bytes_up),
            cache_millis: n(s.cache_millis),
            error_count: n(s.error_count),
            errors: s
                .errors
                .into_iter()
                .map(|e| CacheError {
                    reason: e.reason,
                    count: n(e.count),
                    skipped: e.skipped,
                })
                .collect(),
            refused_count: n(s.refused_count),
            routine_count: n(s.routine_count),
            refusals: s
                .refusals
                .into_iter()
                .map(|r| CacheRefusal {
                    reason: r.reason,
                    count: n(r.count),
                    hashes: r.hashes,
                    routine: r.routine,
                })
                .collect(),
            meta_reads: n(s.meta_reads),
            meta_writes: n(s.meta_writes),
            events: s
                .events
                .into_iter()
                .map(|e| CacheEvent {
                    hash: e.hash,
                    op: match e.op {
                        stats::Op::Get => "get",
                        stats::Op::Put => "put",
                    }
                    .to_owned(),
                    outcome: e.outcome.as_str().to_owned(),
                    bytes: n(e.bytes),
                    millis: n(e.millis),
                    reason: e.reason,
                })
                .collect(),
            events_dropped: n(s.events_dropped),
        }
    }
}

/// How sending a run report went.
#[napi(object)]
pub struct RunReportResult {
    /// The server took it (2xx).
    pub forwarded: bool,
    /// The server's answer, when there was one.
    pub status: Option<u32>,
    /// Why it was not taken, in plain words.
    pub reason: Option<String>,
}

/// Sends a run report (JSON text, at most 1 MiB) to the `http` backend's server
/// (`POST <url>/nx-open-cache/v1/runs`, with `NX_OPEN_CACHE_TOKEN` and the TLS settings of
/// `env`), within 2 s; an upstream that answered 404 is not asked again in this process. Null
/// when the backend is not `http`. Never rejects for the server's sake (only for invalid options).
#[napi(
    ts_args_type = "workspaceRoot: string, options: any | undefined | null, env: Record<string, string>, report: string"
)]
pub async fn send_run_report(
    workspace_root: String,
    options: JsOptions,
    env: HashMap<String, String>,
    report: String,
) -> Result<Option<RunReportResult>> {
    let config = resolve(&workspace_root, options, env.clone())?;
    let runtime = runtime::get().map_err(|e| Error::new(Status::GenericFailure, e))?;
    let sent = runtime
        .spawn(async move { proxy::send_run_report(&config, &env, report.into_bytes()).await })
        .await
        .map_err(|e| Error::new(Status::GenericFailure, format!("run report failed: {e}")))?;
    Ok(sent.map(|sent| {
        let json = proxy::run_report_json(&sent);
        RunReportResult {
            forwarded: json["forwarded"].as_bool().unwrap_or(false),
            status: json["status"].as_u64().and_then(|s| u32::try_from(s).ok()),
            reason: json["reason"].as_str().map(str::to_owned),
        }
    }))
}

fn resolve(
    workspace_root: &str,
    options: JsOptions,
    env: HashMap<String, String>,
) -> Result<config::CacheConfig> {
    config::resolve(&options.value(), &env, Path::new(workspace_root))
        .map_err(|e| Error::new(Status::InvalidArg, e.to_string()))
}

/// Resolves plugin options (from nx.json) and environment into the effective configuration.
/// Throws an error naming the option, the value and the allowed values on any mistake.
#[napi(
    ts_args_type = "workspaceRoot: string, options: any | undefined | null, env: Record<string, string>",
    catch_unwind
)]
pub fn resolve_config(
    workspace_root: String,
    options: JsOptions,
    env: HashMap<String, String>,
) -> Result<ResolvedConfig> {
    let env_used = env.clone();
    Ok(shown(&resolve(&workspace_root, options, env)?, &env_used))
}

fn shown(c: &config::CacheConfig, env: &HashMap<String, String>) -> ResolvedConfig {
    ResolvedConfig {
        backend: c.backend.name().to_owned(),
        location: c.backend.location(),
        prefix: c.prefix.as_str().to_owned(),
        write_prefix: c.namespaces.write.as_str().to_owned(),
        read_prefixes: c
            .namespaces
            .read
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        mode: c.mode.as_str().to_owned(),
        mode_source: c.mode_source.clone(),
        debug: c.debug,
        max_artifact_entries: n(c.limits.max_entries),
        max_expanded_size: n(c.limits.max_expanded_bytes),
        max_expansion_ratio: n(c.limits.max_expansion_ratio),
        signing_key_id: c.seal.signing_key_id(),
        trusted_key_ids: c.seal.trusted_key_ids(),
        require_signature: c.seal.require_signature,
        encryption_key_ids: c.seal.encryption_key_ids(),
        keys: c.seal.describe(),
        warnings: c.warnings.clone(),
        token_source: c.token_source(env),
    }
}

/// A run's configuration, resolved once: what the plugin shows and decides on (`config`), and
/// the proxy it starts from the same resolution (`startProxy`), so the options are not resolved
/// again.
#[napi]
pub struct RunConfig {
    config: config::CacheConfig,
    env: HashMap<String, String>,
}

/// Resolves a run's options and environment once (throws like `resolveConfig` on a mistake).
#[napi(
    ts_args_type = "workspaceRoot: string, options: any | undefined | null, env: Record<string, string>",
    catch_unwind
)]
pub fn resolve_run(
    workspace_root: String,
    options: JsOptions,
    env: HashMap<String, String>,
) -> Result<RunConfig> {
    let config = resolve(&workspace_root, options, env.clone())?;
    Ok(RunConfig { config, env })
}

#[napi]
impl RunConfig {
    /// The effective configuration, as `resolveConfig` shows it.
    #[napi(getter, catch_unwind)]
    pub fn config(&self) -> ResolvedConfig {
        shown(&self.config, &self.env)
    }

    /// Starts the proxy of this configuration.
    #[napi(catch_unwind)]
    pub fn start_proxy(&self) -> Result<CacheProxy> {
        CacheProxy::from_config(&self.config, &self.env)
    }
}

/// An Nx remote-cache proxy on 127.0.0.1 with a random port and bearer token, serving from the
/// configured storage on native threads (the JS event loop is never blocked by cache traffic).
#[napi]
pub struct CacheProxy {
    inner: Mutex<Option<proxy::Proxy>>,
    url: String,
    token: String,
    location: String,
    mode: String,
}

#[napi]
impl CacheProxy {
    /// Resolves the configuration and starts the proxy.
    #[napi(
        factory,
        ts_args_type = "workspaceRoot: string, options: any | undefined | null, env: Record<string, string>",
        catch_unwind
    )]
    pub fn start(
        workspace_root: String,
        options: JsOptions,
        env: HashMap<String, String>,
    ) -> Result<CacheProxy> {
        let config = resolve(&workspace_root, options, env.clone())?;
        CacheProxy::from_config(&config, &env)
    }

    fn from_config(
        config: &config::CacheConfig,
        env: &HashMap<String, String>,
    ) -> Result<CacheProxy> {
        let p = proxy::start(config, env).map_err(|e| Error::new(Status::GenericFailure, e))?;
        Ok(CacheProxy {
            url: p.url.clone(),
            token: p.token.clone(),
            location: p.location.clone(),
            mode: p.mode.as_str().to_owned(),
            inner: Mutex::new(Some(p)),
        })
    }

    /// `http://127.0.0.1:<port>`: the value for NX_SELF_HOSTED_REMOTE_CACHE_SERVER.
    #[napi(getter, catch_unwind)]
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The value for NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN.
    #[napi(getter, catch_unwind)]
    pub fn token(&self) -> String {
        self.token.clone()
    }

    /// Where artifacts go, e.g. `fs /mnt/nx-cache`.
    #[napi(getter, catch_unwind)]
    pub fn location(&self) -> String {
        self.location.clone()
    }

    #[napi(getter, catch_unwind)]
    pub fn mode(&self) -> String {
        self.mode.clone()
    }

    /// The counters so far (zero after `stop`).
    #[napi(catch_unwind)]
    pub fn stats(&self) -> CacheStats {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().map(|p| p.stats()).unwrap_or_default().into()
    }

    /// Stops accepting requests, lets those in flight finish, and resolves with the final counters.
    /// Calling it again resolves with zero counters.
    #[napi(catch_unwind)]
    pub async fn stop(&self) -> Result<CacheStats> {
        let taken = {
            let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            guard.take()
        };
        let Some(p) = taken else {
            return Ok(stats::Snapshot::default().into());
        };
        let runtime = runtime::get().map_err(|e| Error::new(Status::GenericFailure, e))?;
        let snapshot = runtime
            .spawn(p.stop())
            .await
            .map_err(|e| Error::new(Status::GenericFailure, format!("proxy stop failed: {e}")))?;
        Ok(snapshot.into())
    }
}
