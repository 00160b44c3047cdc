//! Operations endpoints (served without auth when `ServerSettings::operations` is on):
//! `/healthz` (liveness), `/readyz` (storage answers a probe), `/metrics`, `/openapi.json`.
//! None of them shows a secret, a filesystem path or a reason from the store.

use super::{text, AppState};
use crate::store::{ErrorKind, Store};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Our OpenAPI 3 document: Nx's remote-cache specification plus our statuses and endpoints.
pub const OPENAPI_JSON: &str = include_str!("../../openapi/nx-open-cache.json");

pub(super) async fn healthz() -> Response {
    text(StatusCode::OK, "ok")
}

/// Whether `store` is ready, as `/readyz` and `serve`'s start decide: its check answers within
/// [`crate::store::resilience::READY_PROBE`], and not with an outage (an object it refuses or
/// found corrupt is no outage). `Err` holds the kind (unavailable or full) and the reason.
pub async fn readiness(store: &dyn Store) -> Result<(), (ErrorKind, String)> {
    let bound = crate::store::resilience::READY_PROBE;
    match tokio::time::timeout(bound, store.check()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Full) => {
            Err((e.kind, e.message))
        }
        Ok(Err(_)) => Ok(()),
        Err(_) => Err((
            ErrorKind::Unavailable,
            format!("it did not answer within {} s", bound.as_secs()),
        )),
    }
}

/// `/readyz`, answered without a token: only "ready", "not ready: storage unavailable" or "not
/// ready: storage full" (never a path or a reason from the store); the reason goes to the log.
pub(super) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let Err((kind, reason)) = readiness(state.probe.as_ref()).await else {
        return text(StatusCode::OK, "ready");
    };
    super::observe::probe_failed(
        &state,
        &format!("not ready: {}: {reason}", state.probe.describe()),
    );
    let answer = if kind == ErrorKind::Full {
        "not ready: storage full"
    } else {
        "not ready: storage unavailable"
    };
    text(StatusCode::SERVICE_UNAVAILABLE, answer)
}

pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    match state.metrics.render() {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            body,
        )
            .into_response(),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot render metrics: {e}"),
        ),
    }
}

pub(super) async fn openapi() -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI_JSON,
    )
        .into_response()
}
