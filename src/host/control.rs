//! The host's control channel: HTTP/1.1 and JSON on 127.0.0.1. Every request carries the admin
//! token (`Authorization: Bearer <token>`) that only the owner-only host file holds; without it the
//! answer is 401 and nothing else happens.
//!
//! | request | answers |
//! |---|---|
//! | `POST /v1/runs` ([`RunRequest`]) | 200 [`Attached`]; 400 `{"error"}` (bad request or configuration); 500 `{"error"}` (the run's proxy did not start); 503 `{"error"}` (the host is exiting: find or start another) |
//! | `DELETE /v1/runs/{id}` | 200 `{"ended": Ended}` (the proxy stopped); 404 (no such run) |
//! | `DELETE /v1/runs` | an Nx without run ids: 200 `{"ended": Ended}` (the last open run ended: the counters of all) or `{"deferred": n}` (n others still run); 404 |
//! | `GET /v1/host` | 200 `{pid, version, url, startedAt, runs: [RunStatus]}` |
//! | `POST /v1/host/stop` | 200; the host exits (runs still registered are stopped) |
//!
//! Error texts never hold a request's environment values or a token.

use super::registry::{finish, EndOutcome, RegisterError, Registry, RunRequest};
use super::{log, HostInfo};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use subtle::ConstantTimeEq;
use tokio::sync::{watch, Notify};

/// What the handlers and the host's lifetime task share.
pub struct ControlState {
    registry: Mutex<Registry>,
    pub info: HostInfo,
    /// Notified to make the host exit.
    pub stop: Arc<Notify>,
    orphaned: AtomicBool,
}

impl ControlState {
    pub fn new(registry: Registry, info: HostInfo) -> Self {
        ControlState {
            registry: Mutex::new(registry),
            info,
            stop: Arc::new(Notify::new()),
            orphaned: AtomicBool::new(false),
        }
    }

    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Another host owns the directory now: this one takes no new runs.
    pub fn set_orphaned(&self) {
        self.orphaned.store(true, Ordering::SeqCst);
    }

    pub fn is_orphaned(&self) -> bool {
        self.orphaned.load(Ordering::SeqCst)
    }
}

/// Serves the control channel until `shutdown` turns true (requests in flight finish).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ControlState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await;
    if let Err(e) = served {
        log(&format!("control channel failed: {e}"));
    }
}

/// The control channel's routes.
pub fn router(state: Arc<ControlState>) -> Router {
    Router::new()
        .route("/v1/runs", post(register).delete(end_anonymous))
        .route("/v1/runs/{id}", delete(end_run))
        .route("/v1/host", get(status))
        .route("/v1/host/stop", post(stop))
        .with_state(state)
}

fn json(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `None` when the request carries the admin token; the 401 otherwise.
fn unauthorized(state: &ControlState, headers: &HeaderMap) -> Option<Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(presented.as_bytes().ct_eq(state.info.token.as_bytes())) {
        None
    } else {
        Some(error(
            StatusCode::UNAUTHORIZED,
            "not this host's admin token",
        ))
    }
}

async fn register(
    State(state): State<Arc<ControlState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(denied) = unauthorized(&state, &headers) {
        return denied;
    }
    if state.is_orphaned() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the cache host is exiting");
    }
    let req: RunRequest = match serde_json::from_slice(&body) {
        Ok(req) => req,
        // serde's message may quote a value (an environment value can be a secret): position only.
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "invalid run request ({:?} error at line {} column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                ),
            )
        }
    };
    let shared = state.clone();
    // Resolving the configuration and starting the proxy touch the disk (store directory, profile
    // files): off the async workers.
    let outcome = tokio::task::spawn_blocking(move || {
        let registered = shared.registry().register(&req, Instant::now());
        (req.id, registered)
    })
    .await;
    match outcome {
        Ok((id, Ok(attached))) => {
            log(&format!(
                "run {} registered ({}, {})",
                id.as_deref().unwrap_or(&attached.run_id),
                attached.location,
                attached.mode
            ));
            json(StatusCode::OK, &attached)
        }
        Ok((_, Err(RegisterError::Closing))) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &RegisterError::Closing.to_string(),
        ),
        Ok((_, Err(RegisterError::Invalid(m)))) => error(StatusCode::BAD_REQUEST, &m),
        Ok((_, Err(RegisterError::Failed(m)))) => {
            log(&format!("a run's proxy did not start: {m}"));
            error(StatusCode::INTERNAL_SERVER_ERROR, &m)
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn end_run(
    State(state): State<Arc<ControlState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    end(state, headers, Some(id)).await
}

async fn end_anonymous(State(state): State<Arc<ControlState>>, headers: HeaderMap) -> Response {
    end(state, headers, None).await
}

async fn end(state: Arc<ControlState>, headers: HeaderMap, id: Option<String>) -> Response {
    if let Some(denied) = unauthorized(&state, &headers) {
        return denied;
    }
    let outcome = state.registry().end(id.as_deref(), Instant::now());
    match outcome {
        EndOutcome::Finished(runs) => match finish(runs).await {
            Some(ended) => {
                let s = &ended.stats;
                log(&format!(
                    "run {} ended: {} hits, {} misses, {} stored, {} errors",
                    ended.run_id, s.hits, s.misses, s.stored, s.error_count
                ));
                json(StatusCode::OK, &serde_json::json!({ "ended": ended }))
            }
            None => error(StatusCode::NOT_FOUND, "no such run"),
        },
        EndOutcome::Deferred { open } => {
            json(StatusCode::OK, &serde_json::json!({ "deferred": open }))
        }
        EndOutcome::Unknown => error(StatusCode::NOT_FOUND, "no such run"),
    }
}

async fn status(State(state): State<Arc<ControlState>>, headers: HeaderMap) -> Response {
    if let Some(denied) = unauthorized(&state, &headers) {
        return denied;
    }
    let runs = state.registry().status(Instant::now());
    json(
        StatusCode::OK,
        &serde_json::json!({
            "pid": state.info.pid,
            "version": state.info.version,
            "url": state.info.url,
            "startedAt": state.info.started_at,
            "runs": runs,
        }),
    )
}

async fn stop(State(state): State<Arc<ControlState>>, headers: HeaderMap) -> Response {
    if let Some(denied) = unauthorized(&state, &headers) {
        return denied;
    }
    state.stop.notify_one();
    json(StatusCode::OK, &serde_json::json!({ "stopping": true }))
}
