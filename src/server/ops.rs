//! Operations endpoints (served without auth when `ServerSettings::operations` is on):
//! `/healthz` (liveness), `/readyz` (storage answers a probe), `/metrics`, `/openapi.json`.

use super::{text, AppState};
use crate::key::TaskHash;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;

/// Our OpenAPI 3 document: Nx's remote-cache specification plus our statuses and endpoints.
pub const OPENAPI_JSON: &str = include_str!("../../openapi/nx-open-cache.json");

/// The hash `/readyz` looks up: valid, and not a hash Nx produces (Nx hashes are digits).
pub const PROBE_HASH: &str = "nx-open-cache-readiness-probe";

/// How long `/readyz` waits for the storage.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) async fn healthz() -> Response {
    text(StatusCode::OK, "ok")
}

pub(super) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let hash = match TaskHash::parse(PROBE_HASH) {
        Ok(h) => h,
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    match tokio::time::timeout(PROBE_TIMEOUT, state.probe.get(&hash)).await {
        Ok(Ok(_)) => text(StatusCode::OK, "ready"),
        Ok(Err(e)) => {
            state.metrics.storage_error("probe");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("storage not ready: {}", e.message),
            )
        }
        Err(_) => {
            state.metrics.storage_error("probe");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "storage not ready: {} did not answer within {} s",
                    state.probe.describe(),
                    PROBE_TIMEOUT.as_secs()
                ),
            )
        }
    }
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
