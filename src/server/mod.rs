//! The Nx-protocol HTTP server (`/v1/cache/{hash}`), mapping GET/PUT onto a [`Store`]. The
//! in-process proxy ([`serve`]) and the standalone `nx-open-cache serve` ([`serve_server`],
//! [`serve_tls`], [`app`]) are two ways to start it.
//!
//! Status codes follow what Nx's client (nx 24) accepts, so that a storage fault never fails a build:
//! GET answers 200 (artifact) or 404 (miss, also for any fault, which is recorded); PUT answers 200
//! (stored), 409 (already stored) or 403 (not stored: read-only token or mode, or a fault, which is
//! recorded). An object the store reads but refuses (not a valid artifact, or sealed in a way this
//! reader cannot open or check) is a miss too, counted as a refusal, not a fault. 401 carries
//! `Content-Type: text/plain`, as Nx requires. Limits add 400 (bad hash, a body that does not match
//! its Content-Length, or an upload the store refuses, with the reason), 408 (upload timeout), 411 (no Content-Length),
//! 413 (too large) and 503 + `Retry-After` (too many uploads at once). A handler that panics is
//! answered 500 and the server keeps serving ([`panics`]).
//!
//! Refused requests cost little: a 401 is answered at once and its connection closed; another
//! early answer to a PUT first reads a body of at most [`limits::REFUSED_BODY_DRAIN`] bytes (the
//! connection stays usable) and otherwise closes the connection. Closing after an unread body
//! lingers briefly so the client reads the answer rather than a reset ([`listen`]). Connections
//! are capped in number, and those without a valid token more tightly ([`conns`]).

pub mod auth;
pub mod conns;
mod file_body;
pub mod insights;
pub mod limits;
pub mod listen;
pub mod log;
pub mod metrics;
mod observe;
pub mod oidc;
mod ops;
pub mod panics;
mod ui;
mod workers;

pub use auth::{Auth, Role, TokenSpec};
pub use conns::Caps;
pub use limits::Limits;
pub use log::LogFormat;
pub use ops::{readiness, OPENAPI_JSON};

use crate::config::Mode;
use crate::key::{Prefix, TaskHash};
use crate::stats::Stats;
use crate::store::{Artifact, ArtifactBody, BodyStream, ErrorKind, PutOutcome, Store};
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use insights::{Insights, Tally};
use limits::{Cut, UploadBody, REFUSED_BODY_DRAIN};
use listen::{Served, Transport};
use metrics::Metrics;
use observe::{Early, Observer, Operation, StorageFault, Upload};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

/// How long `stop` waits for requests in flight before cutting them off.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long a connection may take to send a request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything the server needs.
pub struct ServerSettings {
    pub store: Arc<dyn Store>,
    pub auth: Auth,
    /// Proxy: the plugin's mode; server: `ReadWrite` (roles decide per token).
    pub mode: Mode,
    pub limits: Limits,
    /// true: `/healthz`, `/readyz`, `/metrics` and `/openapi.json` are served (without auth).
    pub operations: bool,
    pub log: LogFormat,
    /// Where the run-summary counters go (shared with the caller).
    pub stats: Arc<Stats>,
}

/// The dashboard of `serve` (`/ui`, `/ui/api/summary`) and its run reports
/// (`POST /nx-open-cache/v1/runs`); the counts it shows are recorded as requests are answered.
#[derive(Clone)]
pub struct UiSettings {
    pub insights: Arc<Insights>,
    /// Requests without a token may see the dashboard (`--ui-anonymous`; never by default).
    pub anonymous: bool,
}

/// What the in-process proxy needs to serve.
pub struct ProxySettings {
    pub store: Arc<dyn Store>,
    pub mode: Mode,
    /// The bearer token Nx must present (`NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN`).
    pub token: String,
    /// Log every request to stderr.
    pub debug: bool,
    /// Where the counters go (shared with the caller for faults found before serving).
    pub stats: Arc<Stats>,
}

/// A running server; dropping it without `stop` leaves it running until the runtime ends.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    /// The connection caps in force.
    pub caps: Caps,
    shutdown: watch::Sender<Option<Duration>>,
    task: Option<JoinHandle<()>>,
}

/// The proxy's name for a running server.
pub type RunningProxy = RunningServer;

impl RunningServer {
    /// Stops accepting, lets requests in flight finish (bounded by [`SHUTDOWN_GRACE`]), then
    /// returns. Requests still running after the grace are cut off; an upload cut off stores
    /// nothing.
    pub async fn stop(self) {
        self.stop_within(SHUTDOWN_GRACE).await
    }

    /// [`RunningServer::stop`] with another grace period.
    pub async fn stop_within(mut self, grace: Duration) {
        let _ = self.shutdown.send(Some(grace));
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            // The accept loop enforces the grace itself; this bound only guards against a hang.
            if tokio::time::timeout(grace + Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

/// Random bearer token: 32 bytes from the OS, hex.
pub fn random_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| format!("cannot read OS randomness for the token: {e}"))?;
    Ok(hex::encode(bytes))
}

/// Serves the proxy on an already bound listener. Must be called inside a tokio runtime.
pub fn serve(
    listener: tokio::net::TcpListener,
    settings: ProxySettings,
) -> std::io::Result<RunningProxy> {
    serve_server(
        listener,
        ServerSettings {
            store: settings.store,
            auth: Auth::single(settings.token, Role::ReadWrite),
            mode: settings.mode,
            limits: Limits::proxy(),
            operations: false,
            log: if settings.debug {
                LogFormat::Debug
            } else {
                LogFormat::Off
            },
            stats: settings.stats,
        },
    )
}

/// Serves [`app`] on a bound plain-TCP listener. Must be called inside a tokio runtime. Fails
/// when a token's namespace cannot be made (the error names it).
pub fn serve_server(
    listener: tokio::net::TcpListener,
    settings: ServerSettings,
) -> std::io::Result<RunningServer> {
    start(listener, settings, Transport::Plain, None, Vec::new())
}

/// [`serve_server`] (or [`serve_tls`] with `tls`) with the dashboard and the run-report
/// endpoint (`settings.operations` must be on for them to be routed).
pub fn serve_with_ui(
    listener: tokio::net::TcpListener,
    settings: ServerSettings,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    ui: UiSettings,
) -> std::io::Result<RunningServer> {
    let transport = match tls {
        Some(tls) => Transport::Tls(tokio_rustls::TlsAcceptor::from(tls)),
        None => Transport::Plain,
    };
    start(listener, settings, transport, Some(ui), Vec::new())
}

/// A route of its own (path and handlers) served beside the cache routes, e.g. the proxy's run
/// report; it does its own authorisation.
pub type ExtraRoute = (&'static str, axum::routing::MethodRouter);

/// [`serve_server`] with `extra` routes.
pub fn serve_server_with(
    listener: tokio::net::TcpListener,
    settings: ServerSettings,
    extra: Vec<ExtraRoute>,
) -> std::io::Result<RunningServer> {
    start(listener, settings, Transport::Plain, None, extra)
}

/// [`serve_server`] over TLS (HTTP/1.1; each handshake in its connection's own task).
pub fn serve_tls(
    listener: tokio::net::TcpListener,
    settings: ServerSettings,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
) -> std::io::Result<RunningServer> {
    start(
        listener,
        settings,
        Transport::Tls(tokio_rustls::TlsAcceptor::from(tls)),
        None,
        Vec::new(),
    )
}

fn start(
    listener: tokio::net::TcpListener,
    settings: ServerSettings,
    transport: Transport,
    ui: Option<UiSettings>,
    extra: Vec<ExtraRoute>,
) -> std::io::Result<RunningServer> {
    let addr = listener.local_addr()?;
    workers::start();
    let stats = settings.stats.clone();
    let log = settings.log;
    let caps = Caps::resolve(
        settings.limits.max_connections,
        settings.limits.max_untrusted_connections,
    );
    let state =
        build_state(settings, true, ui).map_err(|(_, reason)| std::io::Error::other(reason))?;
    let served = Served {
        registry: conns::Registry::new(caps, state.metrics.connections()),
        app: router_with(state, extra),
        transport,
        log,
    };
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(listen::accept_loop(listener, served, rx));
    Ok(RunningServer {
        addr,
        stats,
        caps,
        shutdown: tx,
        task: Some(task),
    })
}

/// One token with its stores resolved.
struct Principal {
    name: String,
    role: Role,
    write: Arc<dyn Store>,
    reads: Vec<Arc<dyn Store>>,
    /// Where its requests are counted for the dashboard.
    slot: Tally,
}

pub(crate) struct AppState {
    auth: Auth,
    principals: Vec<Principal>,
    /// The OIDC verifier and, for each of its rules, the index of its principal.
    oidc: Option<(Arc<oidc::Verifier>, Vec<Option<usize>>)>,
    anonymous: Option<Vec<Arc<dyn Store>>>,
    anonymous_slot: Tally,
    mode: Mode,
    limits: Limits,
    uploads: Arc<Semaphore>,
    log: LogFormat,
    stats: Arc<Stats>,
    metrics: Metrics,
    /// The base store, for `/readyz`.
    probe: Arc<dyn Store>,
    /// The 401 message (the proxy names Nx's variable).
    unauthorized: &'static str,
    operations: bool,
    /// The dashboard's counts (`serve` only).
    insights: Option<Arc<Insights>>,
    /// Requests without a token may see the dashboard.
    ui_anonymous: bool,
}

/// The axum app. A token namespace that cannot be made (prefix too long) turns that token's
/// storage into a fault (GET 404, PUT 403, recorded); [`try_app`] refuses it instead.
pub fn app(settings: ServerSettings) -> Router {
    router(build_state(settings, false, None).unwrap_or_else(|(state, _)| state))
}

/// [`app`], failing with a message naming the token and prefix when a namespace cannot be made.
pub fn try_app(settings: ServerSettings) -> Result<Router, String> {
    build_state(settings, true, None)
        .map(router)
        .map_err(|(_, reason)| reason)
}

type Built = Result<Arc<AppState>, (Arc<AppState>, String)>;

fn build_state(settings: ServerSettings, strict: bool, ui: Option<UiSettings>) -> Built {
    let insights = ui.as_ref().map(|u| u.insights.clone());
    let slot = |index: Option<usize>| {
        insights
            .as_ref()
            .map(|i| i.slot(&settings.auth, index))
            .unwrap_or_default()
    };
    let specs = settings.auth.principals();
    let slots: Vec<Tally> = (0..specs.len()).map(|i| slot(Some(i))).collect();
    let anonymous_slot = slot(None);
    let base = settings.store;
    let mut stores: HashMap<String, Arc<dyn Store>> = HashMap::new();
    stores.insert(String::new(), base.clone());
    let mut first_error: Option<String> = None;
    let mut resolve = |owner: &str, prefix: &Prefix| -> Arc<dyn Store> {
        if let Some(s) = stores.get(prefix.as_str()) {
            return s.clone();
        }
        let store = match base.with_namespace(prefix) {
            Ok(s) => s,
            Err(e) => {
                let reason = format!("{owner}: {}", e.message);
                first_error.get_or_insert_with(|| reason.clone());
                Arc::new(crate::store::unavailable::UnavailableStore::new(
                    base.describe(),
                    reason,
                ))
            }
        };
        stores.insert(prefix.as_str().to_owned(), store.clone());
        store
    };
    let tokens = settings.auth.tokens.len();
    let principals: Vec<Principal> = specs
        .iter()
        .zip(slots)
        .enumerate()
        .map(|(i, (t, slot))| {
            let owner = if i < tokens {
                format!("token {:?}", t.name)
            } else {
                format!("OIDC rule {:?}", t.name)
            };
            let reads = if t.read_prefixes.is_empty() {
                vec![resolve(&owner, t.write_prefix)]
            } else {
                t.read_prefixes.iter().map(|p| resolve(&owner, p)).collect()
            };
            Principal {
                name: t.name.to_owned(),
                role: t.role,
                write: resolve(&owner, t.write_prefix),
                reads,
                slot,
            }
        })
        .collect();
    let oidc = settings
        .auth
        .oidc
        .as_ref()
        .map(|o| (o.0.clone(), settings.auth.rule_principals()));
    drop(specs);
    let anonymous = settings.auth.anonymous_read.as_ref().map(|prefixes| {
        if prefixes.is_empty() {
            vec![base.clone()]
        } else {
            prefixes
                .iter()
                .map(|p| resolve("anonymous read", p))
                .collect()
        }
    });
    let unauthorized = if settings.operations {
        "nx-open-cache: missing or invalid access token"
    } else {
        "nx-open-cache: missing or invalid access token (NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN)"
    };
    let state = Arc::new(AppState {
        auth: settings.auth,
        principals,
        oidc,
        anonymous,
        anonymous_slot,
        mode: settings.mode,
        uploads: Arc::new(Semaphore::new(
            settings.limits.max_concurrent_uploads.max(1),
        )),
        limits: settings.limits,
        log: settings.log,
        stats: settings.stats,
        metrics: Metrics::new(),
        probe: base,
        unauthorized,
        operations: settings.operations,
        insights,
        ui_anonymous: ui.is_some_and(|u| u.anonymous),
    });
    match first_error {
        Some(reason) => {
            // Strict: the caller reports the reason; otherwise the log says it.
            observe::namespace_failed(&state, &reason, !strict);
            if strict {
                Err((state, reason))
            } else {
                Ok(state)
            }
        }
        None => Ok(state),
    }
}

/// Response markers read by the connection ([`listen`]): a valid token was presented.
#[derive(Clone, Copy)]
pub(crate) struct Trusted;

/// Response marker: the answer leaves part of the request body unread (the connection closes).
#[derive(Clone, Copy)]
pub(crate) struct UnreadBody;

fn router(state: Arc<AppState>) -> Router {
    router_with(state, Vec::new())
}

fn router_with(state: Arc<AppState>, extra: Vec<ExtraRoute>) -> Router {
    let mut router = Router::new().route("/v1/cache/{hash}", get(get_artifact).put(put_artifact));
    for (path, route) in extra {
        router = router.route_service(path, route);
    }
    if state.operations {
        router = router
            .route("/healthz", get(ops::healthz))
            .route("/readyz", get(ops::readyz))
            .route("/metrics", get(ops::metrics))
            .route("/openapi.json", get(ops::openapi));
        if state.insights.is_some() {
            router = router
                .route("/ui", get(ui::page))
                .route("/ui/api/summary", get(ui::summary))
                .route(
                    "/nx-open-cache/v1/runs",
                    axum::routing::post(ui::run_report),
                );
        }
    }
    router
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .with_state(state)
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found")
}

pub(crate) fn text(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
        message.to_owned(),
    )
        .into_response()
}

/// Who is asking.
enum Access<'a> {
    Token(&'a Principal),
    Anonymous(&'a [Arc<dyn Store>]),
    /// No valid token; for an OIDC token, why it was refused.
    Denied(Option<String>),
}

/// The principal of a token: a static token (compared in constant time), else a verified OIDC
/// token's rule.
async fn access<'a>(state: &'a AppState, headers: &HeaderMap) -> Access<'a> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return match &state.anonymous {
            Some(stores) => Access::Anonymous(stores),
            None => Access::Denied(None),
        };
    };
    let Some(presented) = value
        .as_bytes()
        .strip_prefix(b"Bearer ")
        .or_else(|| value.as_bytes().strip_prefix(b"bearer "))
    else {
        return Access::Denied(None);
    };
    let principal = |i: usize| match state.principals.get(i) {
        Some(p) => Access::Token(p),
        None => Access::Denied(None),
    };
    if let Some(i) = state.auth.find(presented) {
        return principal(i);
    }
    let Some((verifier, of_rule)) = &state.oidc else {
        return Access::Denied(None);
    };
    if !oidc::looks_like_jwt(presented) {
        return Access::Denied(None);
    }
    match verifier.verify(presented).await {
        Ok(v) => match of_rule.get(v.rule).copied().flatten() {
            Some(i) => principal(i),
            None => Access::Denied(Some("internal: the rule has no principal".to_owned())),
        },
        Err(reason) => Access::Denied(Some(reason)),
    }
}

fn bad_hash(raw: &Result<Path<String>, PathRejection>) -> Result<TaskHash, String> {
    match raw {
        Ok(Path(raw)) if insights::snapshot::reserved(raw) => Err(format!(
            "nx-open-cache: hash {raw:?} is reserved for the server's own objects"
        )),
        Ok(Path(raw)) => TaskHash::parse(raw).map_err(|e| format!("nx-open-cache: {e}")),
        Err(e) => Err(format!("nx-open-cache: invalid hash in the path: {e}")),
    }
}

fn raw_hash(raw: &Result<Path<String>, PathRejection>) -> &str {
    match raw {
        Ok(Path(raw)) => raw,
        Err(_) => "?",
    }
}

async fn get_artifact(
    State(state): State<Arc<AppState>>,
    raw: Result<Path<String>, PathRejection>,
    req: Request<Body>,
) -> Response {
    let mut obs = Observer::new(&state, Operation::Get, raw_hash(&raw));
    // The request's own headers (the `HeaderMap` extractor would copy them).
    let stores: &[Arc<dyn Store>] = match access(&state, req.headers()).await {
        Access::Token(p) => {
            obs.token(&p.name, &p.slot);
            if !p.role.uses_cache() {
                obs.denied("admin token: the dashboard only");
                return obs.answer(text(
                    StatusCode::FORBIDDEN,
                    &format!(
                        "nx-open-cache: token {:?} is an admin token: it opens the dashboard, not the cache",
                        p.name
                    ),
                ));
            }
            &p.reads
        }
        Access::Anonymous(stores) => {
            obs.anonymous(&state.anonymous_slot);
            stores
        }
        Access::Denied(why) => return obs.answer(unauthorized(&state, why.as_deref())),
    };
    let hash = match bad_hash(&raw) {
        Ok(h) => h,
        Err(e) => return obs.answer(text(StatusCode::BAD_REQUEST, &e)),
    };
    if state.mode == Mode::NoCache {
        obs.miss_without_lookup();
        return obs.answer(StatusCode::NOT_FOUND.into_response());
    }
    for (i, store) in stores.iter().enumerate() {
        match store.get(&hash).await {
            Ok(Some(artifact)) => {
                obs.hit(i, &hash, artifact.len);
                return obs.answer(artifact_response(artifact));
            }
            Ok(None) => {}
            Err(e) if e.kind == ErrorKind::Refused => {
                // Routine only where this server writes: its write replaces the object.
                match e.cause.as_deref().filter(|c| c.routine) {
                    Some(c) if state.mode == Mode::ReadWrite => obs.refused(&hash, &c.reason, true),
                    _ => obs.refused(&hash, &e.message, false),
                }
            }
            Err(e) => obs.fault(&StorageFault::of(
                Operation::Get,
                &hash,
                &store.describe(),
                &e,
            )),
        }
    }
    obs.miss();
    obs.answer(StatusCode::NOT_FOUND.into_response())
}

/// 200 with the artifact's payload, streamed from its file or sent from memory.
fn artifact_response(artifact: Artifact) -> Response {
    let body = match artifact.body {
        ArtifactBody::Memory(bytes) => Body::from(bytes),
        // Positioned reads from the payload's offset: exactly `len` bytes, the file checked
        // unchanged after every chunk (see `file_body`).
        ArtifactBody::File { file, offset } => {
            Body::new(file_body::FileBody::new(file, offset, artifact.len))
        }
    };
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(artifact.len));
    resp
}

/// 401, `Content-Type: text/plain` exactly (Nx requires it). The connection is closed after it:
/// a client without a valid token keeps no connection open.
fn unauthorized(state: &AppState, oidc_refusal: Option<&str>) -> Response {
    if let Some(i) = &state.insights {
        i.unauthorized();
    }
    unauthorized_uncounted(state, oidc_refusal)
}

/// A 401 not counted as a cache refusal (the dashboard's API and run reports); for a refused
/// OIDC token its body says why.
fn unauthorized_uncounted(state: &AppState, oidc_refusal: Option<&str>) -> Response {
    let message = match oidc_refusal {
        Some(why) => format!("nx-open-cache: OIDC token refused: {why}"),
        None => state.unauthorized.to_owned(),
    };
    let mut resp = text(StatusCode::UNAUTHORIZED, &message);
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// An early answer to a PUT of a client with a valid token: a body of at most
/// [`REFUSED_BODY_DRAIN`] bytes is read first, so the connection stays usable; a larger one is
/// left unread and the connection closes after the answer.
async fn early(mut body: UploadBody, declared: Option<u64>, resp: Response) -> Response {
    if declared.is_some_and(|d| d > REFUSED_BODY_DRAIN) {
        return closing(resp, false);
    }
    body.set_cap(Some(REFUSED_BODY_DRAIN));
    let complete = body.drain().await;
    closing(resp, complete)
}

/// `resp`; when the request body was not read to its end, the connection closes after it.
fn closing(mut resp: Response, complete: bool) -> Response {
    if !complete {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp.extensions_mut().insert(UnreadBody);
    }
    resp
}

/// `PUT /v1/cache/{hash}` in stages: authorise (token, hash, role and mode), admit (the upload
/// limits), store (the body streamed into the token's store), answer.
async fn put_artifact(
    State(state): State<Arc<AppState>>,
    raw: Result<Path<String>, PathRejection>,
    req: Request<Body>,
) -> Response {
    let mut obs = Observer::new(&state, Operation::Put, raw_hash(&raw));
    let (parts, body) = req.into_parts();
    let declared: Option<u64> = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = UploadBody::new(
        body,
        state.limits.max_artifact_bytes,
        state.limits.upload_timeout,
    );
    let principal = match access(&state, &parts.headers).await {
        Access::Token(p) => p,
        Access::Anonymous(_) => {
            // At once: nothing of the body is read before the answer.
            return obs.answer(closing(unauthorized(&state, None), declared == Some(0)));
        }
        Access::Denied(why) => {
            let resp = unauthorized(&state, why.as_deref());
            return obs.answer(closing(resp, declared == Some(0)));
        }
    };
    obs.token(&principal.name, &principal.slot);
    let admitted = authorise(&state, principal, &raw)
        .and_then(|hash| admit(&state, declared).map(|slot| (hash, slot)));
    let (hash, _slot) = match admitted {
        Ok(a) => a,
        Err(refused) => {
            obs.turned_away(&refused);
            return obs.answer(early(body, declared, early_answer(refused)).await);
        }
    };
    let (upload, complete) = store_upload(&state, principal, &hash, body, declared).await;
    obs.uploaded(&hash, &upload);
    obs.answer(closing(upload_answer(&state, upload), complete))
}

/// The hash is valid, and the token and the mode write.
fn authorise(
    state: &AppState,
    principal: &Principal,
    raw: &Result<Path<String>, PathRejection>,
) -> Result<TaskHash, Early> {
    let hash = bad_hash(raw).map_err(Early::BadHash)?;
    if state.mode != Mode::ReadWrite {
        return Err(Early::NotWritable(format!(
            "nx-open-cache is in {} mode: not stored",
            state.mode.as_str()
        )));
    }
    if principal.role == Role::ReadOnly {
        return Err(Early::NotWritable(format!(
            "nx-open-cache: token {:?} is read-only: not stored",
            principal.name
        )));
    }
    if principal.role == Role::Admin {
        return Err(Early::NotWritable(format!(
            "nx-open-cache: token {:?} is an admin token: it opens the dashboard, not the cache; not stored",
            principal.name
        )));
    }
    Ok(hash)
}

/// An upload slot, held until the answer: it counts toward `max_concurrent_uploads` and
/// `uploads_in_flight`.
struct Slot {
    _permit: OwnedSemaphorePermit,
    _in_flight: metrics::InFlight,
}

/// The limits admit the upload: a Content-Length where one is required, no more than the
/// artifact limit declared, and a free upload slot.
fn admit(state: &AppState, declared: Option<u64>) -> Result<Slot, Early> {
    if declared.is_none() && state.limits.require_content_length {
        return Err(Early::LengthRequired);
    }
    if let (Some(declared), Some(cap)) = (declared, state.limits.max_artifact_bytes) {
        if declared > cap {
            return Err(Early::TooLarge { declared, cap });
        }
    }
    let permit = state
        .uploads
        .clone()
        .try_acquire_owned()
        .map_err(|_| Early::Busy)?;
    Ok(Slot {
        _permit: permit,
        _in_flight: state.metrics.upload_started(),
    })
}

/// The answer to an upload refused before its body reached the store.
fn early_answer(early: Early) -> Response {
    match early {
        Early::BadHash(message) => text(StatusCode::BAD_REQUEST, &message),
        Early::NotWritable(message) => text(StatusCode::FORBIDDEN, &message),
        Early::LengthRequired => text(
            StatusCode::LENGTH_REQUIRED,
            "nx-open-cache: a PUT needs a Content-Length header",
        ),
        Early::TooLarge { declared, cap } => text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "nx-open-cache: artifact of {declared} bytes is larger than the limit of {cap} bytes"
            ),
        ),
        Early::Busy => {
            let mut resp = text(
                StatusCode::SERVICE_UNAVAILABLE,
                "nx-open-cache: too many uploads at once, retry later",
            );
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(limits::RETRY_AFTER_SECS),
            );
            resp
        }
    }
}

/// Streams the body into the token's store; then reads what the store left of the body. Returns
/// how the upload ended and whether the body was read to its end.
async fn store_upload(
    state: &AppState,
    principal: &Principal,
    hash: &TaskHash,
    mut body: UploadBody,
    declared: Option<u64>,
) -> (Upload, bool) {
    // Safety net for a store that hangs (the body itself is bounded by the upload deadline).
    let store_bound =
        crate::store::resilience::Resilience::store_bound(state.limits.upload_timeout);
    let result = {
        let mut stream: BodyStream<'_> = (&mut body).boxed();
        tokio::time::timeout(
            store_bound,
            principal.write.put(hash, &mut stream, declared),
        )
        .await
    };
    let complete = body.drain().await;
    let upload = match (result, body.cut()) {
        (_, Some(Cut::TimedOut)) => Upload::TimedOut,
        (_, Some(Cut::TooLarge)) => Upload::TooLarge,
        (Ok(Ok(PutOutcome::Stored(n))), _) => Upload::Stored(n),
        (Ok(Ok(PutOutcome::AlreadyExists)), _) => Upload::AlreadyStored,
        (Ok(Err(e)), _) if e.kind == ErrorKind::Refused => Upload::Refused(e.message),
        (Ok(Err(e)), _) if e.kind == ErrorKind::BadRequest => Upload::BadLength(e.message),
        (Ok(Err(e)), _) => Upload::Fault(StorageFault::of(
            Operation::Put,
            hash,
            &principal.write.describe(),
            &e,
        )),
        (Err(_), _) => Upload::Fault(StorageFault::write_unfinished(
            hash,
            &principal.write.describe(),
            &format!("storage did not finish within {} s", store_bound.as_secs()),
        )),
    };
    (upload, complete)
}

/// The answer to an upload that reached the store.
fn upload_answer(state: &AppState, upload: Upload) -> Response {
    match upload {
        Upload::Stored(_) => StatusCode::OK.into_response(),
        Upload::AlreadyStored => StatusCode::CONFLICT.into_response(),
        Upload::TooLarge => text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "nx-open-cache: artifact is larger than the limit of {} bytes: not stored",
                state.limits.max_artifact_bytes.unwrap_or(u64::MAX)
            ),
        ),
        Upload::TimedOut => text(
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "nx-open-cache: upload not finished within {} s: not stored",
                state.limits.upload_timeout.as_secs()
            ),
        ),
        // `serve` tells a bad client 400. Behind the proxy the refusal comes from a store (an
        // upstream server's check): Nx takes 403 as "not stored" quietly, and the run summary
        // names the reason.
        Upload::Refused(reason) => text(
            if state.operations {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::FORBIDDEN
            },
            &format!("nx-open-cache: not stored: {reason}"),
        ),
        Upload::BadLength(message) => text(
            StatusCode::BAD_REQUEST,
            &format!("nx-open-cache: {message}"),
        ),
        Upload::Fault(_) => text(
            StatusCode::FORBIDDEN,
            "nx-open-cache: not stored (storage fault, see the run summary)",
        ),
    }
}
