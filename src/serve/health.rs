//! `nx-open-cache-server healthcheck`: one GET of the server's `/healthz`, for container health
//! checks (an image without curl or a shell still has the server binary).

use std::time::Duration;

/// GETs `url` and succeeds on 200. `https` URLs are probed without checking the certificate:
/// the probe asks whether the local process answers and sends no secret. The error names the URL
/// and what went wrong (no answer, or the status).
pub fn probe(url: &str, timeout: Duration) -> Result<(), String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "invalid URL {url:?}: expected http://host:port/path or https://..."
        ));
    }
    let runtime = crate::runtime::get()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .tls_danger_accept_invalid_certs(true)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let response = client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: no answer: {e}"))?;
        let status = response.status();
        if status == reqwest::StatusCode::OK {
            Ok(())
        } else {
            Err(format!("GET {url}: status {status} (expected 200 OK)"))
        }
    })
}
