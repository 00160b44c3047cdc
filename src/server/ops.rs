//! Operations endpoints (served without auth when `ServerSettings::operations` is on):
//! `/healthz` (liveness), `/readyz` (storage answers a probe), `/metrics`, `/openapi.json`.
//! None of them shows a secret, a filesystem path or a reason from the store.

use super::{text, AppState};
use crate::store::ErrorKind;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Our OpenAPI 3 document: Nx's remote-cache specification plus our statuses and endpoints.
pub const OPENAPI_JSON: &str = include_str!("../../openapi/nx-open-cache.json");

pub(super) async fn healthz() -> Response {
    text(StatusCode::OK, "ok")
}

/// `/readyz`, answered without a token: only "ready", "not ready: storage unavailable" or "not
/// ready: storage full" (never a path or a reason from the store); the reason goes to the log.
pub(super) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let bound = crate::store::resilience::READY_PROBE;
    let failed = match tokio::time::timeout(bound, state.probe.check()).await {
        Ok(Ok(())) => None,
        // The store answered: an object it refuses or found corrupt is no outage.
        Ok(Err(e)) if matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Full) => {
            Some((e.kind, e.message))
        }
        Ok(Err(_)) => None,
        Err(_) => Some((
            ErrorKind::Unavailable,
            format!("it did not answer within {} s", bound.as_secs()),
        )),
    };
    let Some((kind, reason)) = failed else {
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
