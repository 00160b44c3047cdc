//! The dashboard of `serve`: `GET /ui` (one self-contained page, `ui.html`: inline CSS, JS and
//! SVG, no request but same-origin API calls, a strict Content-Security-Policy), `GET
//! /ui/api/summary` (what it shows, as JSON) and `POST /nx-open-cache/v1/runs` (run reports).
//!
//! Access: the page itself holds no data and is served to anyone; its API answers admin tokens
//! (401 without a valid token, 403 for a token of another role), or requests without a token when
//! `--ui-anonymous` is set. The page sends the token as a bearer header from JavaScript (kept in
//! the tab's sessionStorage), never in a URL. Run reports are accepted from every valid token
//! (read-only too: developer machines, where most remote hits happen, usually have one); they are
//! display-only and decide no access.

use super::insights::runs::{self, MAX_REPORT_BYTES};
use super::insights::Range;
use super::{access, closing, text, unauthorized_uncounted, Access, AppState, Trusted};
use crate::server::auth::Role;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The page.
const PAGE: &str = include_str!("ui.html");

/// How long a run report's body may take to arrive.
const REPORT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// `'sha256-…'` of the text between `open` and the next `</` tag of `page`.
fn inline_hash(page: &str, open: &str) -> String {
    let body = page
        .split_once(open)
        .and_then(|(_, rest)| rest.split_once("</"))
        .map(|(body, _)| body)
        .unwrap_or("");
    let digest = Sha256::digest(body.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The page's Content-Security-Policy: nothing but its own inline script and style (by hash),
/// same-origin API calls and inline images; no frames, forms or base URL.
fn policy() -> &'static str {
    static POLICY: OnceLock<String> = OnceLock::new();
    POLICY.get_or_init(|| {
        format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src data:; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            inline_hash(PAGE, "<script>"),
            inline_hash(PAGE, "<style>")
        )
    })
}

fn private(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// `GET /ui`: the page.
pub(super) async fn page() -> Response {
    let mut resp = (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        PAGE,
    )
        .into_response();
    private(&mut resp);
    if let Ok(v) = HeaderValue::from_str(policy()) {
        resp.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, v);
    }
    resp.headers_mut()
        .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

/// Who may see the dashboard: `Ok(trusted)` (a valid token was presented), or the answer.
async fn viewer(state: &AppState, headers: &HeaderMap) -> Result<bool, Box<Response>> {
    match access(state, headers).await {
        Access::Token(p) if p.role == Role::Admin => Ok(true),
        Access::Token(p) => {
            let mut resp = text(
                StatusCode::FORBIDDEN,
                &format!(
                    "nx-open-cache: token {:?} is {}: the dashboard needs a token with the admin role",
                    p.name,
                    p.role.as_str()
                ),
            );
            resp.extensions_mut().insert(Trusted);
            Err(Box::new(resp))
        }
        Access::Anonymous(_) | Access::Denied(_)
            if state.ui_anonymous && headers.get(header::AUTHORIZATION).is_none() =>
        {
            Ok(false)
        }
        Access::Anonymous(_) => Err(Box::new(unauthorized_uncounted(state, None))),
        Access::Denied(why) => Err(Box::new(unauthorized_uncounted(state, why.as_deref()))),
    }
}

/// `GET /ui/api/summary[?range=1h|24h|7d]` (default 24h).
pub(super) async fn summary(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let trusted = match viewer(&state, req.headers()).await {
        Ok(t) => t,
        Err(resp) => return *resp,
    };
    let Some(insights) = &state.insights else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    let mut range = Range::Day;
    for pair in req.uri().query().unwrap_or("").split('&') {
        if let Some(v) = pair.strip_prefix("range=") {
            match Range::parse(v) {
                Some(r) => range = r,
                None => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        "nx-open-cache: invalid range: expected 1h, 24h or 7d",
                    )
                }
            }
        }
    }
    let mut summary = insights.summary(range);
    if !trusted {
        // Without a token (--ui-anonymous): no storage location (a path or bucket name).
        summary["storage"]["location"] = serde_json::Value::Null;
        // Nor the runs' commands: Nx's argv can hold a secret (`--token=...`).
        if let Some(recent) = summary["runs"]["recent"].as_array_mut() {
            for r in recent {
                r["command"] = serde_json::Value::Null;
            }
        }
    }
    let body = summary.to_string();
    let mut resp = (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    private(&mut resp);
    if trusted {
        resp.extensions_mut().insert(Trusted);
    }
    resp
}

/// `POST /nx-open-cache/v1/runs`: a run report from any valid token (display-only).
pub(super) async fn run_report(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let principal = match access(&state, req.headers()).await {
        Access::Token(p) => p,
        Access::Anonymous(_) => return closing(unauthorized_uncounted(&state, None), false),
        Access::Denied(why) => {
            return closing(unauthorized_uncounted(&state, why.as_deref()), false);
        }
    };
    let early = |status: StatusCode, message: &str| {
        let mut resp = closing(text(status, message), false);
        resp.extensions_mut().insert(Trusted);
        resp
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || format!("nx-open-cache: a run report is at most {MAX_REPORT_BYTES} bytes");
    if declared.is_some_and(|d| d > MAX_REPORT_BYTES as u64) {
        return early(StatusCode::PAYLOAD_TOO_LARGE, &too_large());
    }
    let read = tokio::time::timeout(REPORT_BODY_TIMEOUT, async {
        let mut stream = req.into_body().into_data_stream();
        let mut body: Vec<u8> = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| false)?;
            if body.len() + chunk.len() > MAX_REPORT_BYTES {
                return Err(true);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    })
    .await;
    let body = match read {
        Ok(Ok(b)) => b,
        Ok(Err(true)) => return early(StatusCode::PAYLOAD_TOO_LARGE, &too_large()),
        Ok(Err(false)) => {
            return early(
                StatusCode::BAD_REQUEST,
                "nx-open-cache: the run report's body could not be read",
            )
        }
        Err(_) => {
            return early(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "nx-open-cache: the run report did not arrive within {} s",
                    REPORT_BODY_TIMEOUT.as_secs()
                ),
            )
        }
    };
    let report = match runs::parse(&body) {
        Ok(r) => r,
        Err(e) => {
            let mut resp = text(
                StatusCode::BAD_REQUEST,
                &format!("nx-open-cache: invalid run report: {e}"),
            );
            resp.extensions_mut().insert(Trusted);
            return resp;
        }
    };
    let Some(insights) = &state.insights else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    let added = insights.run_report(&report, &principal.name);
    let mut resp = (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        serde_json::json!({ "accepted": added, "duplicate": !added, "tasks": report.tasks.len() })
            .to_string(),
    )
        .into_response();
    resp.extensions_mut().insert(Trusted);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_exactly_the_inline_script_and_style() {
        let p = policy();
        assert!(
            p.starts_with("default-src 'none'; script-src 'sha256-"),
            "{p}"
        );
        assert!(
            !p.contains("unsafe") && p.contains("connect-src 'self'"),
            "{p}"
        );
        assert_eq!(PAGE.matches("<script>").count(), 1);
        assert_eq!(PAGE.matches("<style>").count(), 1);
        // No external resource and no inline handler or style attribute (the policy would block
        // them).
        for banned in [
            "https://",
            " onclick=",
            " onload=",
            " style=\"",
            "<link",
            "src=\"",
            "href=\"h",
        ] {
            assert!(!PAGE.contains(banned), "{banned}");
        }
        // The one http:// is the SVG namespace name (no request goes there).
        assert_eq!(
            PAGE.matches("http://").count(),
            PAGE.matches("http://www.w3.org/2000/svg").count()
        );
    }
}
