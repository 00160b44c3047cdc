//! The Nx-protocol HTTP server. Here: the in-process proxy that Nx's own remote-cache client talks to
//! (`/v1/cache/{hash}`), mapping GET/PUT onto a [`Store`].
//!
//! Status codes follow what Nx's client (nx 24) accepts, so that a storage fault never fails a build:
//! GET answers 200 (artifact) or 404 (miss, also for any fault, which is recorded); PUT answers 200
//! (stored), 409 (already stored) or 403 (not stored: read-only mode or a fault, which is recorded).
//! 401 carries `Content-Type: text/plain`, as Nx requires. The request body is always read to the end
//! before an early answer so Nx sees the status, not a reset connection.

use crate::config::Mode;
use crate::key::TaskHash;
use crate::stats::Stats;
use crate::store::{ArtifactBody, BodyStream, ErrorKind, PutOutcome, Store};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long `stop` waits for requests in flight before cutting them off.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What the proxy needs to serve.
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

struct AppState {
    store: Arc<dyn Store>,
    mode: Mode,
    token: String,
    debug: bool,
    stats: Arc<Stats>,
}

/// A running proxy; dropping it without `stop` leaves it running until the runtime ends.
pub struct RunningProxy {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningProxy {
    /// Stops accepting, lets requests in flight finish (bounded by [`SHUTDOWN_GRACE`]).
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err() {
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
    let addr = listener.local_addr()?;
    let stats = settings.stats;
    let state = Arc::new(AppState {
        store: settings.store,
        mode: settings.mode,
        token: settings.token,
        debug: settings.debug,
        stats: stats.clone(),
    });
    let app = router(state);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = rx.await;
        });
        if let Err(e) = server.await {
            eprintln!("nx-open-cache: proxy stopped with an error: {e}");
        }
    });
    Ok(RunningProxy {
        addr,
        stats,
        shutdown: Some(tx),
        task: Some(task),
    })
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/cache/{hash}", get(get_artifact).put(put_artifact))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

fn text(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
        message.to_owned(),
    )
        .into_response()
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(
    State(state): State<Arc<AppState>>,
    req: Request<Body>,
    next: Next,
) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match presented {
        Some(token) if same(token, state.token.as_bytes()) => next.run(req).await,
        _ => {
            // Read and drop the body so the client sees the 401, not a reset connection.
            drain(req.into_body().into_data_stream().boxed()).await;
            text(
                StatusCode::UNAUTHORIZED,
                "nx-open-cache: missing or invalid access token (NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN)",
            )
        }
    }
}

async fn drain(mut body: futures_util::stream::BoxStream<'_, Result<bytes::Bytes, axum::Error>>) {
    while let Some(chunk) = body.next().await {
        if chunk.is_err() {
            break;
        }
    }
}

fn log(
    state: &AppState,
    method: &str,
    hash: &str,
    status: StatusCode,
    bytes: u64,
    started: Instant,
) {
    if state.debug {
        eprintln!(
            "nx-open-cache: {method} {hash} -> {} {bytes} B {} ms",
            status.as_u16(),
            started.elapsed().as_millis()
        );
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    started.elapsed().as_millis().try_into().unwrap_or(u64::MAX)
}

async fn get_artifact(State(state): State<Arc<AppState>>, Path(raw): Path<String>) -> Response {
    let started = Instant::now();
    let hash = match TaskHash::parse(&raw) {
        Ok(h) => h,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    if state.mode == Mode::NoCache {
        state.stats.miss();
        return StatusCode::NOT_FOUND.into_response();
    }
    let result = state.store.get(&hash).await;
    state.stats.add_time(elapsed_ms(started));
    let response = match result {
        Ok(Some(artifact)) => {
            state.stats.hit(artifact.len);
            let body = match artifact.body {
                ArtifactBody::Memory(bytes) => Body::from(bytes),
                ArtifactBody::File { file, .. } => {
                    // The file is positioned at the payload; stream exactly `len` bytes of it.
                    use tokio::io::AsyncReadExt;
                    let reader = tokio::fs::File::from_std(file).take(artifact.len);
                    Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
                        reader,
                        256 * 1024,
                    ))
                }
            };
            let mut resp = Response::new(body);
            let headers: &mut HeaderMap = resp.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(artifact.len));
            log(&state, "GET", &raw, StatusCode::OK, artifact.len, started);
            return resp;
        }
        Ok(None) => {
            state.stats.miss();
            StatusCode::NOT_FOUND
        }
        Err(e) => {
            state.stats.miss();
            record(&state, &format!("read {}: {}", hash, e.message));
            StatusCode::NOT_FOUND
        }
    };
    log(&state, "GET", &raw, response, 0, started);
    response.into_response()
}

fn record(state: &AppState, reason: &str) {
    let first = state.stats.error(reason);
    if first && state.debug {
        eprintln!("nx-open-cache: warning: {reason}");
    }
}

async fn put_artifact(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
    req: Request<Body>,
) -> Response {
    let started = Instant::now();
    let declared_len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body: BodyStream<'static> = req
        .into_body()
        .into_data_stream()
        .map(|r| r.map_err(std::io::Error::other))
        .boxed();
    let hash = match TaskHash::parse(&raw) {
        Ok(h) => h,
        Err(e) => {
            drain_io(&mut body).await;
            return text(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    if state.mode != Mode::ReadWrite {
        drain_io(&mut body).await;
        state.stats.refused_write();
        log(&state, "PUT", &raw, StatusCode::FORBIDDEN, 0, started);
        return text(
            StatusCode::FORBIDDEN,
            &format!(
                "nx-open-cache is in {} mode: not stored",
                state.mode.as_str()
            ),
        );
    }
    let result = state.store.put(&hash, &mut body, declared_len).await;
    drain_io(&mut body).await;
    state.stats.add_time(elapsed_ms(started));
    let (status, bytes) = match result {
        Ok(PutOutcome::Stored(n)) => {
            state.stats.stored(n);
            (StatusCode::OK, n)
        }
        Ok(PutOutcome::AlreadyExists) => {
            state.stats.already_stored();
            (StatusCode::CONFLICT, 0)
        }
        Err(e) if e.kind == ErrorKind::BadRequest => {
            log(&state, "PUT", &raw, StatusCode::BAD_REQUEST, 0, started);
            return text(
                StatusCode::BAD_REQUEST,
                &format!("nx-open-cache: {}", e.message),
            );
        }
        Err(e) => {
            record(&state, &format!("write {}: {}", hash, e.message));
            (StatusCode::FORBIDDEN, 0)
        }
    };
    log(&state, "PUT", &raw, status, bytes, started);
    if status == StatusCode::FORBIDDEN {
        return text(
            status,
            "nx-open-cache: not stored (storage fault, see the run summary)",
        );
    }
    status.into_response()
}

async fn drain_io(body: &mut BodyStream<'_>) {
    while let Some(chunk) = body.next().await {
        if chunk.is_err() {
            break;
        }
    }
}
