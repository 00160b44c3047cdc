//! The in-process cache proxy the Nx plugin starts for each run: resolved config in, a loopback
//! server with a random port and bearer token out.
//!
//! Besides Nx's `/v1/cache/{hash}`, the proxy takes the plugin's run report at
//! `POST /nx-open-cache/v1/run-report` (bearer: the proxy's token; a JSON object of at most
//! [`MAX_RUN_REPORT_BYTES`]; 400 otherwise, 413 when larger). With the `http` backend it is
//! forwarded to the upstream's `POST /nx-open-cache/v1/runs` ([`HttpStore::send_run_report`]) and
//! answered 200 `{"forwarded": bool, "status"?: upstream status, "reason"?: why not}`, whatever
//! the upstream did; with any other backend it is answered 204 and dropped (the history is local).

use crate::config::{Backend, CacheConfig, Mode};
use crate::server::{self, Auth, Limits, LogFormat, RunningProxy, ServerSettings, TokenSpec};
use crate::stats::{Snapshot, Stats};
use crate::store::fs::FsStore;
use crate::store::guard::GuardedStore;
use crate::store::http::{HttpOptions, HttpStore, RunReportSent};
use crate::store::http_token::TokenConfig;
use crate::store::object::ObjectStoreBackend;
use crate::store::resilience::Resilience;
use crate::store::unavailable::UnavailableStore;
use crate::store::validate::{self, ValidationPolicy};
use crate::store::Store;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Where the plugin posts its run report.
pub const RUN_REPORT_ROUTE: &str = "/nx-open-cache/v1/run-report";
/// The largest run report taken.
pub const MAX_RUN_REPORT_BYTES: usize = 1024 * 1024;

pub struct Proxy {
    running: RunningProxy,
    pub url: String,
    pub token: String,
    /// e.g. `fs /mnt/nx-cache`.
    pub location: String,
    pub mode: Mode,
}

/// Builds the configured store; cloud credentials come from `env` (the caller's environment, which
/// the plugin may extend for this proxy only). A client that cannot be built becomes a store that
/// answers every call with the reason, recorded in `stats` (the proxy then answers misses) instead
/// of failing: a cache outage never fails a build. Whether the store works is `Store::check`'s
/// business (the guard's start-up probe).
pub fn open_store(
    config: &CacheConfig,
    env: &HashMap<String, String>,
    stats: &Arc<Stats>,
) -> Arc<dyn Store> {
    open_store_with(config, &Resilience::from_config(config), env, stats)
}

/// [`open_store`] with the run's resilience policy, already resolved.
pub fn open_store_with(
    config: &CacheConfig,
    resilience: &Resilience,
    env: &HashMap<String, String>,
    stats: &Arc<Stats>,
) -> Arc<dyn Store> {
    open_backend(config, resilience, env, stats).0
}

/// [`open_store_with`], and the `http` backend's store itself (for run reports).
fn open_backend(
    config: &CacheConfig,
    resilience: &Resilience,
    env: &HashMap<String, String>,
    stats: &Arc<Stats>,
) -> (Arc<dyn Store>, Option<HttpStore>) {
    let mut upstream = None;
    let store: Arc<dyn Store> = match &config.backend {
        Backend::Fs { path } => {
            let store = FsStore::new(path.clone(), config.prefix.clone());
            if config.mode != Mode::NoCache {
                // Creates the directory when it can; when it cannot, the guard's start-up check
                // (`start`) or doctor's setup step reports why.
                let _ = store.prepare();
            }
            Arc::new(store)
        }
        Backend::Http { url, oidc_audience } => match HttpStore::with_token(
            url,
            TokenConfig::select(oidc_audience.as_deref(), env),
            HttpOptions::new(resilience.clone(), env),
        ) {
            Ok(store) => {
                if config.mode != Mode::NoCache {
                    // Warnings (extra CA file unreadable, verification off): one line each, and in
                    // the run summary.
                    for w in store.warnings() {
                        if stats.error(w) {
                            eprintln!("nx-open-cache: {w}");
                        }
                    }
                }
                upstream = Some(store.clone());
                Arc::new(store)
            }
            Err(e) => {
                if config.mode != Mode::NoCache {
                    stats.error(&e.message);
                }
                Arc::new(UnavailableStore::new(format!("http {url}"), e.message))
            }
        },
        Backend::S3 { .. } | Backend::Gcs { .. } | Backend::Azure { .. } => {
            match ObjectStoreBackend::from_config_with(
                &config.backend,
                config.prefix.clone(),
                env,
                resilience,
            ) {
                // The bucket and the credentials are checked by the guard's start-up probe
                // (`start`) or by doctor's first step.
                Ok(store) => Arc::new(store),
                Err(e) => {
                    if config.mode != Mode::NoCache {
                        stats.error(&e.message);
                    }
                    let location =
                        format!("{} {}", config.backend.name(), config.backend.location());
                    Arc::new(UnavailableStore::new(location, e.message))
                }
            }
        }
    };
    // Signatures and encryption (`trustedKeys`, `NX_OPEN_CACHE_SIGNING_KEY`, ...): a layer in
    // front of the backend, namespaces included; nothing changes when none is set.
    (crate::seal::wrap(store, &config.seal), upstream)
}

/// Starts a proxy on 127.0.0.1 (random port) on the shared runtime; `env` is the environment the
/// storage client reads its credentials from.
pub fn start(config: &CacheConfig, env: &HashMap<String, String>) -> Result<Proxy, String> {
    let runtime = crate::runtime::get()?;
    let stats = Arc::new(Stats::with_events());
    // Every timeout, retry and breaker setting of this run, resolved once.
    let resilience = Resilience::from_config(config);
    let (opened, upstream) = open_backend(config, &resilience, env, &stats);
    let store: Arc<dyn Store> = if config.mode == Mode::NoCache {
        opened
    } else {
        // backend -> seal -> validating -> guard: what is read is checked to be a valid Nx
        // artifact before Nx gets it (Nx's own uploads are not checked).
        let checked = validate::wrap(
            opened,
            ValidationPolicy::proxy(config.mode == Mode::ReadWrite, config.limits.clone()),
        );
        let _inside = runtime.enter();
        Arc::new(GuardedStore::new(checked, resilience.guard))
    };
    let location = if config.namespaces.is_default() {
        store.describe()
    } else {
        format!("{}; {}", store.describe(), config.namespaces.describe())
    };
    let token = server::random_token()?;
    let std_listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot configure the proxy socket: {e}"))?;
    let _guard = runtime.enter();
    let listener = tokio::net::TcpListener::from_std(std_listener)
        .map_err(|e| format!("cannot register the proxy socket: {e}"))?;
    let reports = Arc::new(RunReports {
        token: token.clone(),
        upstream,
    });
    let running = server::serve_server_with(
        listener,
        proxy_settings(config, store, &token, stats),
        vec![(
            RUN_REPORT_ROUTE,
            axum::routing::post(run_report).with_state(reports),
        )],
    )
    .map_err(|e| format!("cannot start the proxy: {e}"))?;
    Ok(Proxy {
        url: format!("http://{}", running.addr),
        running,
        token,
        location,
        mode: config.mode,
    })
}

/// The proxy's server: one token (Nx's), whose namespace is the configured trust namespaces
/// (`writePrefix` / `readPrefixes`; by default the store root), proxy limits, no operations routes.
pub fn proxy_settings(
    config: &CacheConfig,
    store: Arc<dyn Store>,
    token: &str,
    stats: Arc<Stats>,
) -> ServerSettings {
    let mut spec = TokenSpec::new("proxy", server::Role::ReadWrite, token);
    spec.write_prefix = config.namespaces.write.clone();
    spec.read_prefixes = config.namespaces.read.clone();
    ServerSettings {
        store,
        auth: Auth {
            tokens: vec![spec],
            anonymous_read: None,
            oidc: None,
        },
        mode: config.mode,
        limits: Limits::proxy(),
        operations: false,
        log: if config.debug {
            LogFormat::Debug
        } else {
            LogFormat::Off
        },
        stats,
    }
}

/// What the run-report route needs.
struct RunReports {
    /// The proxy's token (Nx's).
    token: String,
    /// The `http` backend's store; `None` for other backends.
    upstream: Option<HttpStore>,
}

fn plain(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
        message.to_owned(),
    )
        .into_response()
}

/// `POST /nx-open-cache/v1/run-report` (see the module documentation).
async fn run_report(State(reports): State<Arc<RunReports>>, req: Request<Body>) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or(b"");
    if !bool::from(presented.ct_eq(reports.token.as_bytes())) {
        let mut resp = plain(
            StatusCode::UNAUTHORIZED,
            "nx-open-cache: missing or invalid access token",
        );
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return resp;
    }
    let mut resp = run_report_answer(&reports, req.into_body()).await;
    resp.extensions_mut().insert(server::Trusted);
    resp
}

/// A run report checked the way the proxy's route checks it: a JSON object of at most
/// [`MAX_RUN_REPORT_BYTES`]; the error says what is wrong, without quoting it.
pub fn check_run_report(report: &[u8]) -> Result<(), String> {
    if report.len() > MAX_RUN_REPORT_BYTES {
        return Err(format!(
            "a run report is at most {MAX_RUN_REPORT_BYTES} bytes, this one has {}",
            report.len()
        ));
    }
    match serde_json::from_slice::<serde_json::Value>(report) {
        Ok(v) if v.is_object() => Ok(()),
        Ok(_) => Err("a run report is a JSON object".to_owned()),
        // The position only: no need to echo the report.
        Err(e) => Err(format!(
            "the run report is not valid JSON ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        )),
    }
}

/// Sends a run report straight to the configured `http` upstream, as the proxy's route forwards
/// it (same token, TLS settings, bound and 404 memory), for a run whose proxy has stopped
/// already. `None`: the backend is not `http` (nothing to send). Never fails: what went wrong
/// is in the answer.
pub async fn send_run_report(
    config: &CacheConfig,
    env: &HashMap<String, String>,
    report: Vec<u8>,
) -> Option<RunReportSent> {
    let Backend::Http { url, oidc_audience } = &config.backend else {
        return None;
    };
    if let Err(e) = check_run_report(&report) {
        return Some(RunReportSent::Failed(e));
    }
    let options = HttpOptions::new(Resilience::from_config(config), env);
    let token = TokenConfig::select(oidc_audience.as_deref(), env);
    match HttpStore::with_token(url, token, options) {
        Ok(store) => Some(store.send_run_report(report.into()).await),
        Err(e) => Some(RunReportSent::Failed(e.message)),
    }
}

async fn run_report_answer(reports: &RunReports, body: Body) -> Response {
    let body = match axum::body::to_bytes(body, MAX_RUN_REPORT_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            let mut resp = plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "nx-open-cache: a run report is at most {MAX_RUN_REPORT_BYTES} bytes (or it was \
                     not received whole)"
                ),
            );
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
    };
    if let Err(e) = check_run_report(&body) {
        return plain(StatusCode::BAD_REQUEST, &format!("nx-open-cache: {e}"));
    }
    let Some(upstream) = &reports.upstream else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let answer = run_report_json(&upstream.send_run_report(body).await);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        answer.to_string(),
    )
        .into_response()
}

/// `{"forwarded": bool, "status"?: upstream status, "reason"?: why not}`.
pub fn run_report_json(sent: &RunReportSent) -> serde_json::Value {
    match sent {
        RunReportSent::Answered(status) if (200..300).contains(status) => serde_json::json!({
            "forwarded": true,
            "status": status,
        }),
        RunReportSent::Answered(status) => serde_json::json!({
            "forwarded": false,
            "status": status,
            "reason": format!("the server answered {status}"),
        }),
        RunReportSent::NotTaken => serde_json::json!({
            "forwarded": false,
            "reason": NOT_TAKEN,
        }),
        RunReportSent::Failed(reason) => serde_json::json!({
            "forwarded": false,
            "reason": reason,
        }),
    }
}

/// Why a run report was not sent to an upstream that answered 404.
pub const NOT_TAKEN: &str =
    "the server takes no run reports (it answered 404: not an nx-open-cache serve)";

impl Proxy {
    /// A number that changes whenever the proxy served a request (cheaper than [`Proxy::stats`]).
    pub fn traffic(&self) -> u64 {
        self.running.stats.traffic()
    }

    pub fn stats(&self) -> Snapshot {
        self.running.stats.snapshot()
    }

    /// Stops the server (requests in flight finish) and returns the final counters.
    pub async fn stop(self) -> Snapshot {
        let stats = self.running.stats.clone();
        self.running.stop().await;
        stats.snapshot()
    }
}
