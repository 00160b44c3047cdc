//! The hooks' side of the control channel: find the host through its file, register a run, end
//! it. Starting a host process is the caller's business (the plugin spawns `lib/host.js`); these
//! calls say when one is needed ([`AttachError::retry`]).

use super::registry::{Attached, RunRequest};
use super::{read_info, HostFiles, HostInfo};
use reqwest::StatusCode;
use std::fmt;
use std::time::Duration;

/// Connecting to a live host on loopback takes microseconds; this only bounds a wedged one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Registering starts a proxy; ending waits for its requests in flight (bounded by the server's
/// shutdown grace).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a run could not be registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachError {
    /// No host file, or it names a host that is not there (a crash left it, or another process
    /// now has its port).
    NoHost(String),
    /// The host is exiting.
    Closing,
    /// The host refused the request (a configuration mistake).
    Rejected(String),
    /// The host could not serve the run (its proxy did not start), or answered nonsense.
    Failed(String),
}

impl AttachError {
    /// Whether starting a host (or waiting for one that is starting) and trying again may help.
    pub fn retry(&self) -> bool {
        matches!(self, AttachError::NoHost(_) | AttachError::Closing)
    }
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachError::NoHost(m) | AttachError::Rejected(m) | AttachError::Failed(m) => {
                write!(f, "{m}")
            }
            AttachError::Closing => write!(f, "the cache host is exiting"),
        }
    }
}

/// What ending a run gave.
#[derive(Debug, Clone, PartialEq)]
pub enum EndResult {
    /// The run's final counters and where it went (JSON of [`super::registry::Ended`]).
    Ended(serde_json::Value),
    /// An Nx without run ids: `n` other runs still run; the last to end gets the counters.
    Deferred(u64),
    /// The host does not know the run.
    Unknown,
    /// No host is running.
    NoHost,
}

fn http() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot build the control client: {e}"))
}

/// The error message a host answered with.
async fn message(resp: reqwest::Response) -> String {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("the cache host answered {status}"))
}

/// Sends one control request to the host named by the host file; `Ok(None)` when there is no
/// host file, `Err` when the host is not there.
async fn send(
    files: &HostFiles,
    method: reqwest::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Option<(HostInfo, reqwest::Response)>, String> {
    let Some(info) = read_info(files)? else {
        return Ok(None);
    };
    let mut req = http()?
        .request(method, format!("{}{path}", info.url))
        .bearer_auth(&info.token);
    if let Some(body) = body {
        req = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
    }
    match req.send().await {
        Ok(resp) => Ok(Some((info, resp))),
        Err(e) => Err(format!(
            "the cache host (pid {}, {}) does not answer: {e}",
            info.pid, info.url
        )),
    }
}

/// Registers a run at the running host.
pub async fn attach(files: &HostFiles, req: &RunRequest) -> Result<Attached, AttachError> {
    let body = serde_json::to_vec(req).map_err(|e| AttachError::Failed(e.to_string()))?;
    let sent = send(files, reqwest::Method::POST, "/v1/runs", Some(body))
        .await
        .map_err(AttachError::NoHost)?;
    let Some((info, resp)) = sent else {
        return Err(AttachError::NoHost(format!(
            "no cache host running ({} absent)",
            files.info.display()
        )));
    };
    match resp.status() {
        StatusCode::OK => {
            let text = resp
                .text()
                .await
                .map_err(|e| AttachError::Failed(format!("cannot read the host's answer: {e}")))?;
            serde_json::from_str(&text)
                .map_err(|e| AttachError::Failed(format!("the host's answer is not a run: {e}")))
        }
        StatusCode::UNAUTHORIZED => Err(AttachError::NoHost(format!(
            "{} is stale: the process at {} is not its host",
            files.info.display(),
            info.url
        ))),
        StatusCode::SERVICE_UNAVAILABLE => Err(AttachError::Closing),
        StatusCode::BAD_REQUEST => Err(AttachError::Rejected(message(resp).await)),
        _ => Err(AttachError::Failed(message(resp).await)),
    }
}

/// Ends run `id` (`None`: a run of an Nx without run ids) at the running host.
pub async fn end(files: &HostFiles, id: Option<&str>) -> Result<EndResult, String> {
    let path = match id {
        Some(id) => format!("/v1/runs/{id}"),
        None => "/v1/runs".to_owned(),
    };
    let Some((_, resp)) = send(files, reqwest::Method::DELETE, &path, None).await? else {
        return Ok(EndResult::NoHost);
    };
    match resp.status() {
        StatusCode::OK => {
            let text = resp
                .text()
                .await
                .map_err(|e| format!("cannot read the host's answer: {e}"))?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| format!("the host's answer is not JSON: {e}"))?;
            if let Some(open) = value.get("deferred").and_then(serde_json::Value::as_u64) {
                return Ok(EndResult::Deferred(open));
            }
            value
                .get("ended")
                .cloned()
                .map(EndResult::Ended)
                .ok_or_else(|| "the host's answer names no run".to_owned())
        }
        StatusCode::NOT_FOUND => Ok(EndResult::Unknown),
        StatusCode::UNAUTHORIZED => Ok(EndResult::NoHost),
        _ => Err(message(resp).await),
    }
}

/// The running host's state (`GET /v1/host`), `None` when no host runs.
pub async fn status(files: &HostFiles) -> Result<Option<serde_json::Value>, String> {
    let sent = match send(files, reqwest::Method::GET, "/v1/host", None).await {
        Ok(sent) => sent,
        // A host file without a host: none runs.
        Err(_) => return Ok(None),
    };
    let Some((_, resp)) = sent else {
        return Ok(None);
    };
    if resp.status() != StatusCode::OK {
        return Ok(None);
    }
    let text = resp
        .text()
        .await
        .map_err(|e| format!("cannot read the host's answer: {e}"))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| format!("the host's answer is not JSON: {e}"))
}

/// Asks the running host to exit; false when none runs.
pub async fn stop(files: &HostFiles) -> Result<bool, String> {
    match send(files, reqwest::Method::POST, "/v1/host/stop", None).await {
        Ok(Some((_, resp))) => Ok(resp.status() == StatusCode::OK),
        Ok(None) | Err(_) => Ok(false),
    }
}
