//! The `http` backend: an upstream Nx-protocol server (our `nx-open-cache serve`, or any server that
//! implements Nx's self-hosted remote-cache API), reached with `GET`/`PUT <url>/v1/cache/<hash>`.
//!
//! The payload on this wire is the Nx artifact as is (no envelope): the upstream decides how it
//! stores and verifies objects. The bearer token comes from GitHub Actions' OIDC endpoint (with the
//! `oidcAudience` option), the file named by `NX_OPEN_CACHE_TOKEN_FILE`, or `NX_OPEN_CACHE_TOKEN`,
//! and is refreshed before it expires ([`super::http_token`]); without any no `Authorization`
//! header is sent (some servers allow anonymous reads). A 401 to a token that can be refreshed
//! makes the next request fetch a new one (a GET is sent once more with it at once).
//!
//! Reads stream the response into memory up to the inline limit, else into an unlinked spool file,
//! and check the received length against `Content-Length`. A 404 is a miss; 401/403 is a fault that
//! says the token was refused; anything else, a timeout or a connection failure is a fault naming
//! the URL and the status or cause. Connection failures (not timeouts), 429 and 5xx answers are
//! retried with jittered exponential backoff. Timeouts and retries are the resilience policy's
//! ([`super::resilience`]).
//!
//! Writes stream the request body straight through with its `Content-Length` (a body whose length
//! is unknown is spooled first to learn it). A streamed PUT is not retried: its body cannot be
//! replayed without keeping a copy, and a write that did not happen only costs the next run a
//! rebuild. 200 is stored, 409 already stored, 403 a refused write (a read-only token), 413 too
//! large; the proxy turns every fault into Nx's quiet "not stored".
//!
//! TLS (https URLs): the platform's verifier and roots (rustls-platform-verifier through reqwest:
//! on Linux the system CA bundle, honouring `SSL_CERT_FILE`/`SSL_CERT_DIR`; on macOS and Windows
//! the OS trust store), plus the PEM certificates in the file named by `NODE_EXTRA_CA_CERTS`, as
//! Node does. `NODE_TLS_REJECT_UNAUTHORIZED=0` turns verification off, with a warning.
//!
//! Run reports ([`HttpStore::send_run_report`]): the proxy forwards the plugin's report of a run to
//! `POST <url>/nx-open-cache/v1/runs` with the same token and TLS settings, within
//! [`RUN_REPORT_TIMEOUT`], never retried. An upstream that answers 404 (not an `nx-open-cache
//! serve`) is sent none again for the life of the process.

use super::http_token::{self, Presented, TokenConfig, TokenError, TokenSource};
use super::resilience::Resilience;
use super::spool::{self, Spool, Spooled};
use super::{
    Artifact, ArtifactBody, AsyncStore, BodyStream, Cause, ErrorKind, Found, PutOutcome, Store,
    StoreError, Upload, Written,
};
use crate::key::{Prefix, TaskHash};
use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use std::collections::HashMap;
use std::error::Error as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The environment variable holding the upstream's bearer token.
pub const TOKEN_ENV: &str = "NX_OPEN_CACHE_TOKEN";
/// Node's variable naming a PEM file of extra CA certificates; honoured the same way.
pub const EXTRA_CA_ENV: &str = "NODE_EXTRA_CA_CERTS";
/// Node's variable that, set to `0`, turns TLS certificate verification off.
pub const REJECT_UNAUTHORIZED_ENV: &str = "NODE_TLS_REJECT_UNAUTHORIZED";

/// Where `nx-open-cache serve` takes run reports, below the configured URL.
pub const RUN_REPORT_PATH: &str = "/nx-open-cache/v1/runs";
/// How long sending one run report may take, connection included.
pub const RUN_REPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// Upstreams remembered as taking no run reports (a process talks to few).
const MAX_NO_REPORT_UPSTREAMS: usize = 64;

/// Base URLs of upstreams that answered a run report 404, for the life of the process.
static NO_RUN_REPORTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn no_run_reports() -> std::sync::MutexGuard<'static, Vec<String>> {
    NO_RUN_REPORTS.lock().unwrap_or_else(|p| p.into_inner())
}

/// How forwarding a run report went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunReportSent {
    /// The upstream answered with this status (2xx: taken).
    Answered(u16),
    /// The upstream takes no run reports (it answered 404, now or earlier in this process).
    NotTaken,
    /// Not delivered: why (no secret, URLs redacted).
    Failed(String),
}

/// Longest piece of an error answer's body quoted in a fault.
const SNIPPET_LEN: usize = 300;
/// How `nx-open-cache serve` begins the answer to an upload its artifact check refused.
const REFUSED_BY_SERVE: &str = "nx-open-cache: not stored: ";
/// How `nx-open-cache serve` begins the 403 answer to an upload its own storage failed.
const STORAGE_FAULT_BY_SERVE: &str = "nx-open-cache: not stored (storage fault";

/// Timeouts, retries, spooling and TLS settings of an [`HttpStore`].
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Timeouts and GET retries: `connect` (TCP and TLS), `answer` (the next bytes of an answer,
    /// headers or body), `request` (one whole request, streaming included), `bulk_answer` (the
    /// server storing a large upload, one above the inline limit, after its last byte; small
    /// uploads get `answer`) and `http_get` (a GET after a connection failure, a 429 or a 5xx).
    pub resilience: Resilience,
    /// Artifacts up to this size are received in memory.
    pub inline_limit: u64,
    /// Where larger artifacts (and unsized uploads) are spooled.
    pub spool_dir: PathBuf,
    /// A PEM file of extra CA certificates trusted besides the platform's roots.
    pub extra_ca_file: Option<PathBuf>,
    /// Accept any server certificate (insecure; `NODE_TLS_REJECT_UNAUTHORIZED=0`).
    pub accept_invalid_certs: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            resilience: Resilience::default(),
            inline_limit: spool::INLINE_LIMIT,
            spool_dir: spool::dir(),
            extra_ca_file: None,
            accept_invalid_certs: false,
        }
    }
}

impl HttpOptions {
    /// The defaults, with the TLS settings Node reads from the environment
    /// (`NODE_EXTRA_CA_CERTS`, `NODE_TLS_REJECT_UNAUTHORIZED`).
    pub fn from_env(env: &HashMap<String, String>) -> Self {
        HttpOptions::new(Resilience::default(), env)
    }

    /// `resilience`'s timeouts and retries, with the TLS settings of the environment.
    pub fn new(resilience: Resilience, env: &HashMap<String, String>) -> Self {
        HttpOptions {
            resilience,
            extra_ca_file: env
                .get(EXTRA_CA_ENV)
                .filter(|v| !v.trim().is_empty())
                .map(PathBuf::from),
            accept_invalid_certs: env
                .get(REJECT_UNAUTHORIZED_ENV)
                .is_some_and(|v| v.trim() == "0"),
            ..HttpOptions::default()
        }
    }
}

/// A store on an upstream Nx-protocol server.
#[derive(Clone)]
pub struct HttpStore {
    /// GETs: connect, time-to-answer (`answer`, also between body reads) and request timeouts.
    client: reqwest::Client,
    /// PUTs: connect and request timeouts only; the upload's own stall and answer limits are
    /// applied around it (reqwest's read timeout would run from the start of the upload).
    put_client: reqwest::Client,
    /// The configured URL, without trailing slash.
    base: String,
    /// Where `Authorization: Bearer <token>` comes from; None: no Authorization header.
    auth: Option<Arc<TokenSource>>,
    /// Where the token comes from, as configured (for messages and descriptions).
    token_config: Arc<TokenConfig>,
    options: HttpOptions,
    warnings: Vec<String>,
}

/// A failed attempt, and whether another one may help.
struct Failure {
    error: StoreError,
    retry: bool,
}

fn unavailable(message: String) -> StoreError {
    StoreError::new(ErrorKind::Unavailable, message)
}

/// An error with its causes, e.g. `error sending request: client error (Connect): tcp connect
/// error: Connection refused (os error 111)`, without repeating a cause already in the text.
pub(crate) fn chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    // The URL is already in every message: keep reasons short (the run summary cuts long ones).
    if let Some(url) = e.url() {
        out = out.replace(&format!(" for url ({url})"), "");
    }
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A URL as it may be shown: without what it may carry besides where it points, the password
/// (a lone user name, often a token, too) and the query. `https://user:pass@host/x?sig=1` is shown
/// as `https://user:***@host/x?***`. Over-hiding is preferred: an `@` anywhere before the query
/// ends what is hidden (a password may hold a raw `/`).
pub fn redact_url(url: &str) -> String {
    let Some(i) = url.find("://") else {
        return url.to_owned();
    };
    let (scheme, rest) = url.split_at(i + 3);
    let (place, extra) = rest.split_at(rest.find(['?', '#']).unwrap_or(rest.len()));
    let mut out = String::from(scheme);
    match place.rfind('@') {
        Some(at) => {
            let (userinfo, host) = place.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str("***"),
            }
            out.push_str(host);
        }
        None => out.push_str(place),
    }
    if extra.starts_with('?') {
        out.push_str("?***");
    } else if extra.starts_with('#') {
        out.push_str("#***");
    }
    out
}

/// `text` with every URL in it shown as [`redact_url`] does (errors of the HTTP client may print
/// the URL of the request).
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let start = rest[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |j| j + 1);
        let len = rest[i..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '(' | ')'))
            .unwrap_or(rest.len() - i);
        out.push_str(&rest[..start]);
        out.push_str(&redact_url(&rest[start..i + len]));
        rest = &rest[i + len..];
    }
    out.push_str(rest);
    out
}

/// A fault of this store with every URL in its message redacted.
fn shown(mut e: StoreError) -> StoreError {
    e.message = redact_urls(&e.message);
    if let Some(c) = e.cause.as_mut() {
        c.key = redact_urls(&c.key);
        c.reason = redact_urls(&c.reason);
    }
    e
}

fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// The TLS settings of a client: none for plain http (redirects are not followed, so TLS is never
/// reached; this also works on a system without a CA bundle), else the platform's roots plus
/// `extra_roots`, verification off only when asked.
fn with_tls(
    b: reqwest::ClientBuilder,
    https: bool,
    extra_roots: &[reqwest::Certificate],
    accept_invalid_certs: bool,
) -> reqwest::ClientBuilder {
    if !https {
        return b.tls_certs_only(Vec::new());
    }
    let mut b = b;
    if !extra_roots.is_empty() {
        b = b.tls_certs_merge(extra_roots.to_vec());
    }
    if accept_invalid_certs {
        b = b.tls_danger_accept_invalid_certs(true);
    }
    b
}

impl HttpStore {
    /// Builds the client for `url` (validated by the configuration: `http(s)://host[:port][/base]`,
    /// no trailing slash). `token`: the bearer token, None or empty for anonymous access. Nothing is
    /// contacted yet. Problems with the extra CA file are warnings ([`HttpStore::warnings`]), not
    /// failures.
    pub fn new(url: &str, token: Option<&str>, options: HttpOptions) -> Result<Self, StoreError> {
        Self::with_token(url, TokenConfig::from_static(token), options)
    }

    /// [`HttpStore::new`] with the token from `token` ([`TokenConfig::select`]): GitHub Actions
    /// OIDC, a token file or `NX_OPEN_CACHE_TOKEN`. Nothing is fetched yet: the first request
    /// does.
    pub fn with_token(
        url: &str,
        token: TokenConfig,
        options: HttpOptions,
    ) -> Result<Self, StoreError> {
        Self::build(url, token, options).map_err(shown)
    }

    fn build(url: &str, token: TokenConfig, options: HttpOptions) -> Result<Self, StoreError> {
        let base = url.trim_end_matches('/').to_owned();
        let https = base.to_ascii_lowercase().starts_with("https://");
        let github_https = match &token.source {
            super::http_token::SourceSpec::GitHub { request_url, .. } => Some(
                request_url
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("https://"),
            ),
            _ => None,
        };
        let mut warnings = Vec::new();
        let mut extra_roots: Vec<reqwest::Certificate> = Vec::new();
        if https || github_https == Some(true) {
            if let Some(file) = &options.extra_ca_file {
                let shown = file.display();
                match std::fs::read(file) {
                    Err(e) => warnings.push(format!(
                        "warning: cannot read {EXTRA_CA_ENV} file {shown} ({e}): its certificates \
                         are not trusted, only the system's"
                    )),
                    Ok(pem) => match reqwest::Certificate::from_pem_bundle(&pem) {
                        Ok(certs) if !certs.is_empty() => extra_roots = certs,
                        Ok(_) => warnings.push(format!(
                            "warning: {EXTRA_CA_ENV} file {shown} holds no PEM certificate \
                             (-----BEGIN CERTIFICATE-----): only the system's roots are trusted"
                        )),
                        Err(e) => warnings.push(format!(
                            "warning: {EXTRA_CA_ENV} file {shown} is not a PEM certificate bundle \
                             ({e}): only the system's roots are trusted"
                        )),
                    },
                }
            }
        }
        if https && options.accept_invalid_certs {
            warnings.push(format!(
                "warning: {REJECT_UNAUTHORIZED_ENV}=0: the TLS certificate of {base} is not \
                 verified (insecure: anyone on the network path can read and change artifacts)"
            ));
        }
        let build = |read_timeout: Option<Duration>| {
            let mut b = reqwest::Client::builder()
                .connect_timeout(options.resilience.connect)
                .timeout(options.resilience.request)
                // Below a Node upstream's 5 s keep-alive (see `resilience::POOL_IDLE`).
                .pool_idle_timeout(options.resilience.pool_idle)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("nx-open-cache/", env!("CARGO_PKG_VERSION")));
            if let Some(t) = read_timeout {
                b = b.read_timeout(t);
            }
            b = with_tls(b, https, &extra_roots, options.accept_invalid_certs);
            b.build().map_err(|e| {
                unavailable(format!(
                    "http {base}: cannot set up the HTTP client: {}",
                    chain(&e)
                ))
            })
        };
        let client = build(Some(options.resilience.answer))?;
        let put_client = build(None)?;
        // GitHub's token endpoint: its own client (another host, maybe another scheme), with the
        // same TLS settings.
        let github_client = match github_https {
            None => None,
            Some(tls) => {
                let mut b = reqwest::Client::builder()
                    .connect_timeout(options.resilience.connect.min(http_token::FETCH_TIMEOUT))
                    .timeout(http_token::FETCH_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("nx-open-cache/", env!("CARGO_PKG_VERSION")));
                b = with_tls(b, tls, &extra_roots, options.accept_invalid_certs);
                Some(b.build().map_err(|e| {
                    unavailable(format!(
                        "http {base}: cannot set up the HTTP client for GitHub Actions' OIDC \
                         token endpoint: {}",
                        chain(&e)
                    ))
                })?)
            }
        };
        let auth = TokenSource::new(&token, github_client)
            .map_err(|e| unavailable(format!("http {base}: {e}")))?
            .map(Arc::new);
        Ok(HttpStore {
            client,
            put_client,
            base,
            auth,
            token_config: Arc::new(token),
            options,
            warnings: warnings.iter().map(|w| redact_urls(w)).collect(),
        })
    }

    /// [`HttpStore::with_token`] with the token source of the environment (the audience from
    /// `NX_OPEN_CACHE_OIDC_AUDIENCE`) and the TLS settings of [`HttpOptions::from_env`].
    pub fn from_env(url: &str, env: &HashMap<String, String>) -> Result<Self, StoreError> {
        let audience = env.get(http_token::OIDC_AUDIENCE_ENV).map(String::as_str);
        HttpStore::with_token(
            url,
            TokenConfig::select(audience, env),
            HttpOptions::from_env(env),
        )
    }

    /// Warnings found while building the client (unreadable extra CA file, verification off).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Whether requests carry a bearer token.
    pub fn has_token(&self) -> bool {
        self.auth.is_some()
    }

    /// Where the token comes from ([`TokenConfig::describe`]), never the token.
    pub fn token_source(&self) -> String {
        self.token_config.describe()
    }

    /// A spool for a body of `expected` bytes, as the options say.
    fn spool(&self, expected: Option<u64>) -> Spool {
        Spool::new(&self.options.spool_dir, self.options.inline_limit, expected)
    }

    /// Sends a run report (JSON) to `<url>/nx-open-cache/v1/runs` with this store's token and TLS
    /// settings, within [`RUN_REPORT_TIMEOUT`]; never retried. A 404 is remembered for the
    /// process: that upstream is not asked again.
    pub async fn send_run_report(&self, report: Bytes) -> RunReportSent {
        if no_run_reports().contains(&self.base) {
            return RunReportSent::NotTaken;
        }
        let url = format!("{}{RUN_REPORT_PATH}", self.base);
        let within = secs(RUN_REPORT_TIMEOUT);
        let started = std::time::Instant::now();
        // The token (fetched when due) within the same bound.
        let (req, presented) = match tokio::time::timeout(
            RUN_REPORT_TIMEOUT,
            self.request(Method::POST, &url),
        )
        .await
        {
            Err(_) => {
                return RunReportSent::Failed(format!(
                    "{}: no token within {within}",
                    redact_url(&url)
                ))
            }
            Ok(Err(e)) => return RunReportSent::Failed(e.message),
            Ok(Ok(r)) => r,
        };
        let left = RUN_REPORT_TIMEOUT
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1));
        let req = req
            .header(CONTENT_TYPE, "application/json")
            .timeout(left)
            .body(report);
        // reqwest's timeout covers the whole request; this bound guards against anything else.
        let answer = tokio::time::timeout(left, req.send()).await;
        if let Ok(Ok(resp)) = &answer {
            if resp.status() == StatusCode::UNAUTHORIZED {
                self.refused(presented.as_ref()).await;
            }
        }
        match answer {
            Err(_) => RunReportSent::Failed(format!(
                "{} did not answer within {within}",
                redact_url(&url)
            )),
            Ok(Err(e)) if e.is_timeout() => RunReportSent::Failed(format!(
                "{} did not answer within {within}",
                redact_url(&url)
            )),
            Ok(Err(e)) => {
                RunReportSent::Failed(redact_urls(&format!("{}: {}", redact_url(&url), chain(&e))))
            }
            Ok(Ok(resp)) if resp.status() == StatusCode::NOT_FOUND => {
                let mut known = no_run_reports();
                if known.len() < MAX_NO_REPORT_UPSTREAMS && !known.contains(&self.base) {
                    known.push(self.base.clone());
                }
                RunReportSent::NotTaken
            }
            Ok(Ok(resp)) => RunReportSent::Answered(resp.status().as_u16()),
        }
    }

    /// `<url>/v1/cache/<hash>`.
    pub fn object_url(&self, hash: &TaskHash) -> String {
        format!("{}/v1/cache/{}", self.base, hash.as_str())
    }

    /// A request with the current token (fetched first when it is due: see
    /// [`super::http_token`]), and which token it carries. A token that cannot be had is a fault
    /// naming its source ([`HttpStore::token_fault`]).
    async fn request(
        &self,
        method: Method,
        url: &str,
    ) -> Result<(reqwest::RequestBuilder, Option<Presented>), StoreError> {
        let what = method.to_string();
        let client = if method == Method::PUT {
            &self.put_client
        } else {
            &self.client
        };
        let mut req = client.request(method, url);
        let mut presented = None;
        if let Some(source) = &self.auth {
            let p = source
                .header()
                .await
                .map_err(|e| self.token_fault(&what, url, e))?;
            req = req.header(AUTHORIZATION, p.header.clone());
            presented = Some(p);
        }
        Ok((req, presented))
    }

    /// No token could be had (the endpoint refused or did not answer, the file is unreadable):
    /// a fault of the store, grouped by its reason, lasting when it cannot pass within the run.
    fn token_fault(&self, method: &str, url: &str, e: TokenError) -> StoreError {
        let base = redact_url(&self.base);
        let key = format!("http token {base}: {}", e.message);
        let reason = format!("server {base}: no token: {}", e.message);
        let cause = if e.lasting {
            Cause::lasting(key, reason)
        } else {
            Cause::new(key, reason)
        };
        unavailable(format!("http {method} {url}: no token: {}", e.message)).with_cause(cause)
    }

    /// After a 401 to `presented`: marks a token that can be refreshed stale, so that the next
    /// request fetches a new one. True when it was such a token.
    async fn refused(&self, presented: Option<&Presented>) -> bool {
        match (&self.auth, presented) {
            (Some(source), Some(p)) => source.mark_stale(p.generation).await,
            _ => false,
        }
    }

    /// A transport failure (no answer): connection refused/reset, DNS, TLS, timeouts.
    fn transport(&self, method: &str, url: &str, e: &reqwest::Error) -> Failure {
        let o = &self.options.resilience;
        let what = if e.is_timeout() {
            if e.is_connect() {
                format!("could not connect within {}", secs(o.connect))
            } else {
                format!(
                    "no answer in time (read timeout {}, total {})",
                    secs(o.answer),
                    secs(o.request)
                )
            }
        } else if e.is_connect() {
            "cannot connect".to_owned()
        } else {
            "request failed".to_owned()
        };
        let cause = chain(e);
        // rustls: "invalid peer certificate: UnknownIssuer", "certificate expired", ...
        let certificate = cause.contains("certificate");
        let hint = if cause.contains("CaUsedAsEndEntity") {
            " (the server presents a CA certificate (basicConstraints CA:TRUE) as its own, which \
             rustls refuses: give the server a certificate with CA:FALSE, e.g. one signed by your \
             CA, and put that CA in the file named by NODE_EXTRA_CA_CERTS)"
                .to_owned()
        } else if certificate {
            format!(
                " (the server's TLS certificate is not trusted: put its CA certificate in a PEM \
                 file named by {EXTRA_CA_ENV})"
            )
        } else {
            String::new()
        };
        let what = if certificate {
            "TLS handshake failed".to_owned()
        } else {
            what
        };
        // An unknown host stays unknown for the run; a temporary failure to resolve the name
        // (EAI_AGAIN), a refused connection or a hang may pass.
        let unknown_host = super::object::answer::unknown_host(&cause);
        let base = redact_url(&self.base);
        let summary = if unknown_host {
            Cause::lasting(
                format!("http unknown host {base}"),
                format!("server {base} is an unknown host: {cause}"),
            )
        } else {
            Cause::new(
                format!("http {what} {base}"),
                format!("server {base}: {what}{hint}: {cause}"),
            )
        };
        Failure {
            error: unavailable(format!("http {method} {url}: {what}{hint}: {cause}"))
                .with_cause(summary),
            // A refused or reset connection is worth another try; a hang is not (it would cost
            // another full timeout), nor is a certificate that will not change.
            retry: !e.is_timeout()
                && !certificate
                && (e.is_connect() || e.is_request() || e.is_body()),
        }
    }

    /// The start of an error answer's body, for the fault message.
    async fn snippet(resp: reqwest::Response) -> String {
        let mut stream = resp.bytes_stream();
        let mut got: Vec<u8> = Vec::new();
        while got.len() < SNIPPET_LEN {
            match stream.next().await {
                Some(Ok(chunk)) => got.extend_from_slice(&chunk),
                _ => break,
            }
        }
        let text = String::from_utf8_lossy(&got[..got.len().min(SNIPPET_LEN)]);
        let text: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let text = text.trim();
        if text.is_empty() {
            String::new()
        } else {
            format!("; the server said: {text}")
        }
    }

    /// What a "no token" refusal adds: where else a token can come from, or why the configured
    /// audience went unused.
    fn no_token_hint(&self) -> String {
        match &self.token_config.unused_audience {
            Some(audience) => format!(
                " (option {} {audience:?} is set, but {} and {} are not: on GitHub Actions give \
                 the job `permissions: id-token: write`)",
                http_token::OIDC_AUDIENCE_OPTION,
                http_token::GITHUB_REQUEST_URL_ENV,
                http_token::GITHUB_REQUEST_TOKEN_ENV
            ),
            None => format!(
                " (or name a file holding it in {}; on GitHub Actions the plugin option {} \
                 fetches one)",
                http_token::TOKEN_FILE_ENV,
                http_token::OIDC_AUDIENCE_OPTION
            ),
        }
    }

    /// 401/403: the token was refused (or is missing). One table gives both the fault's message
    /// and its root cause. `presented`: the token the request carried; `last`: no new token will
    /// be fetched for this refusal (a 401 to a token that can be refreshed, not refetched yet, is
    /// not lasting: the next request presents a new one).
    fn auth_fault(
        &self,
        method: &str,
        url: &str,
        status: StatusCode,
        said: &str,
        presented: Option<&Presented>,
        last: bool,
    ) -> StoreError {
        let status_text = format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        let base = redact_url(&self.base);
        let writing = method == "PUT";
        let label = self
            .auth
            .as_ref()
            .map_or_else(|| format!("the token in {TOKEN_ENV}"), |a| a.label());
        let expired = match (&self.auth, presented) {
            (Some(a), Some(p)) => a.expired_note(p),
            _ => String::new(),
        };
        let refreshable = self.auth.as_ref().is_some_and(|a| a.refreshable());
        let (why, cause) = match (self.auth.is_some(), status, writing) {
            // A server may read anonymously and want a token for writes only (`serve` with
            // anonymous reads): reads go on.
            (false, _, true) => (
                format!(
                    "the server refused the write ({status_text}): writes need a token: set \
                     {TOKEN_ENV}, or localMode read-only{}",
                    self.no_token_hint()
                ),
                Cause::writes_only(
                    format!("http write needs token {base}"),
                    format!(
                        "server {base} refused writes without a token ({status_text}): writes \
                         need a token: set {TOKEN_ENV}, or localMode read-only"
                    ),
                ),
            ),
            (false, _, false) => (
                format!(
                    "the server requires a token ({status_text}) and {TOKEN_ENV} is not set: set \
                     it to a token the server accepts{}",
                    self.no_token_hint()
                ),
                Cause::lasting(
                    format!("http no token {base}"),
                    format!(
                        "server {base} requires a token ({status_text}): {TOKEN_ENV} is not set"
                    ),
                ),
            ),
            // `serve` answers 403 to a write its own storage failed: not the token's fault.
            (true, StatusCode::FORBIDDEN, true) if said.contains(STORAGE_FAULT_BY_SERVE) => (
                format!(
                    "the server could not store the artifact ({status_text}): its storage \
                     failed (see the server's log)"
                ),
                Cause::new(
                    format!("http server storage fault {base}"),
                    format!(
                        "server {base} could not store artifacts ({status_text}): its storage \
                         failed (see the server's log)"
                    ),
                ),
            ),
            (true, StatusCode::FORBIDDEN, true) => (
                format!(
                    "the server refused the write ({status_text}; read-only token?): {label} may \
                     only read, or the server could not store the artifact"
                ),
                Cause::writes_only(
                    format!("http write refused {base}"),
                    format!(
                        "server {base} refused writes with {label} ({status_text}): a read-only \
                         token? then set localMode read-only (or NX_OPEN_CACHE_MODE); or the \
                         server could not store them"
                    ),
                ),
            ),
            (true, StatusCode::FORBIDDEN, false) => (
                format!("the server refused read access to {label} ({status_text})"),
                Cause::lasting(
                    format!("http read refused {base}"),
                    format!("server {base} refused read access to {label} ({status_text})"),
                ),
            ),
            (true, _, _) => {
                let next = if refreshable && !last {
                    "; a new one is fetched for the next request"
                } else if refreshable {
                    "; a new one was refused too: the server's answer says why (`nx-open-cache \
                     serve --explain-token` shows which rule a token matches)"
                } else {
                    ": check that it is a valid token of this server"
                };
                let key = format!("http token refused {base}");
                let reason = format!("server {base} refused {label} ({status_text}){expired}");
                (
                    format!("the server refused {label} ({status_text}){expired}{next}"),
                    if refreshable && !last {
                        Cause::new(key, reason)
                    } else {
                        Cause::lasting(key, reason)
                    },
                )
            }
        };
        unavailable(format!("http {method} {url}: {why}{said}")).with_cause(cause)
    }

    /// The cause of an unexpected answer to `what` (`reads`, `writes`): one per status, operation
    /// and server, without the URL (which names the hash). What the server said the first time
    /// is kept in the reason (the summary keeps a cause's first reason).
    fn answer_cause(&self, what: &str, status: StatusCode, said: &str) -> Cause {
        let base = redact_url(&self.base);
        Cause::new(
            format!("http {status} {what} {base}"),
            format!("server {base} answered {what} with {status}{said}"),
        )
    }

    async fn read(&self, hash: &TaskHash) -> Found {
        let url = self.object_url(hash);
        let retry = self.options.resilience.http_get;
        let mut attempt: u32 = 0;
        loop {
            match self.try_get(&url).await {
                Ok(found) => return Ok(found),
                Err(f) if f.retry && attempt < retry.retries => {
                    attempt += 1;
                    tokio::time::sleep(retry.delay(attempt)).await;
                }
                Err(f) => {
                    let mut error = f.error;
                    if attempt > 0 {
                        error
                            .message
                            .push_str(&format!(" ({} attempts)", attempt + 1));
                    }
                    return Err(error);
                }
            }
        }
    }

    async fn try_get(&self, url: &str) -> Result<Option<Artifact>, Failure> {
        let mut refetched = false;
        let (resp, presented) = loop {
            let (req, presented) =
                self.request(Method::GET, url)
                    .await
                    .map_err(|error| Failure {
                        error,
                        retry: false,
                    })?;
            let resp = req
                .send()
                .await
                .map_err(|e| self.transport("GET", url, &e))?;
            // A token that can be refreshed was refused (expired early, revoked, the server's
            // keys rotated): once more at once, with a new one.
            if resp.status() == StatusCode::UNAUTHORIZED
                && !refetched
                && self.refused(presented.as_ref()).await
            {
                refetched = true;
                continue;
            }
            break (resp, presented);
        };
        let status = resp.status();
        match status {
            StatusCode::OK => self.receive(url, resp).await.map(Some),
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                let said = Self::snippet(resp).await;
                Err(Failure {
                    error: self.auth_fault("GET", url, status, &said, presented.as_ref(), true),
                    retry: false,
                })
            }
            _ => {
                let said = Self::snippet(resp).await;
                Err(Failure {
                    error: unavailable(format!("http GET {url}: unexpected answer {status}{said}"))
                        .with_cause(self.answer_cause("reads", status, &said)),
                    retry: status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS,
                })
            }
        }
    }

    /// Receives a 200 answer's body: in memory up to the inline limit, else in a spool file.
    async fn receive(&self, url: &str, resp: reqwest::Response) -> Result<Artifact, Failure> {
        let declared = resp.content_length();
        let mut spool = self.spool(declared);
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                if e.is_timeout() {
                    let mut f = self.transport("GET", url, &e);
                    f.error.message = format!(
                        "{} (after {} bytes of the artifact)",
                        f.error.message,
                        spool.len()
                    );
                    f
                } else {
                    Failure {
                        error: unavailable(format!(
                            "http GET {url}: the download broke off after {} bytes: {}",
                            spool.len(),
                            chain(&e)
                        )),
                        retry: true,
                    }
                }
            })?;
            spool.push(&chunk).await.map_err(|error| Failure {
                error,
                retry: false,
            })?;
        }
        if let Some(n) = declared {
            if n != spool.len() {
                return Err(Failure {
                    error: unavailable(format!(
                        "http GET {url}: the answer ended after {} of its {n} bytes",
                        spool.len()
                    )),
                    retry: true,
                });
            }
        }
        let len = spool.len();
        let body = spool.finish().await.map_err(|error| Failure {
            error,
            retry: false,
        })?;
        let body = match body {
            Spooled::Memory(bytes) => ArtifactBody::Memory(bytes),
            Spooled::File(file) => ArtifactBody::File { file, offset: 0 },
        };
        // Nx's protocol carries no digest: nothing here vouches for the bytes.
        Ok(Artifact {
            len,
            body,
            digest: None,
        })
    }

    /// Streams `body` (checked against `len`) as a PUT and returns the answer and how many bytes
    /// went out. The last chunk is held back until the body has proved its length, so a body
    /// longer or shorter than declared never reaches the server complete. An error drops the
    /// request, which aborts the upload: the server stores nothing.
    async fn upload(
        &self,
        url: &str,
        len: u64,
        body: &mut BodyStream<'_>,
    ) -> Result<(reqwest::Response, u64, Option<Presented>), StoreError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        let (req, presented) = self.request(Method::PUT, url).await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let request = req
            .header(CONTENT_LENGTH, len)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(stream))
            .send();
        tokio::pin!(request);
        let sent = AtomicU64::new(0);
        let stall = self.options.resilience.answer;
        let pump = async {
            let mut received: u64 = 0;
            let mut pending: Option<Bytes> = None;
            loop {
                let next = super::next_chunk(body, received, Some(len)).await?;
                if let Some(c) = &next {
                    received += c.len() as u64;
                }
                if let Some(chunk) = pending.take() {
                    let n = chunk.len() as u64;
                    match tokio::time::timeout(stall, tx.send(Ok(chunk))).await {
                        Err(_) => {
                            return Err(unavailable(format!(
                                "http PUT {url}: the server stopped reading the upload for {} \
                                 after {} of {len} bytes",
                                secs(stall),
                                sent.load(Ordering::Relaxed)
                            )))
                        }
                        // The request is over (answered early or failed): its answer tells.
                        Ok(Err(_)) => return Ok(()),
                        Ok(Ok(())) => {
                            sent.fetch_add(n, Ordering::Relaxed);
                        }
                    }
                }
                if next.is_none() {
                    // The sender is dropped next, which ends the request body.
                    return Ok(());
                }
                pending = next;
            }
        };
        let early = tokio::select! {
            pumped = pump => {
                pumped?;
                None
            }
            answer = &mut request => Some(answer),
        };
        drop(tx);
        let answer = match early {
            Some(answer) => answer,
            None => {
                // Storing a large artifact (fsync, a cloud upload behind the server) takes longer.
                let wait = if len > self.options.inline_limit {
                    self.options.resilience.bulk_answer.max(stall)
                } else {
                    stall
                };
                match tokio::time::timeout(wait, &mut request).await {
                    Ok(answer) => answer,
                    Err(_) => {
                        return Err(unavailable(format!(
                            "http PUT {url}: no answer in time (nothing within {} after the \
                             last of its {len} bytes)",
                            secs(wait)
                        )))
                    }
                }
            }
        };
        let resp = answer.map_err(|e| self.transport("PUT", url, &e).error)?;
        Ok((resp, sent.load(Ordering::Relaxed), presented))
    }

    async fn write(&self, hash: &TaskHash, upload: Upload<'_, '_>) -> Written {
        let Upload { body, declared_len } = upload;
        let url = self.object_url(hash);
        let (len, answer) = match declared_len {
            Some(len) => (len, self.upload(&url, len, body).await?),
            None => {
                // Unknown length (Nx always sends one): spool to learn it, then send.
                let mut spool = self.spool(None);
                while let Some(chunk) = super::next_chunk(body, spool.len(), None).await? {
                    spool.push(&chunk).await?;
                }
                let len = spool.len();
                let mut spooled: BodyStream<'static> = match spool.finish().await? {
                    Spooled::Memory(bytes) => futures_util::stream::iter([Ok(bytes)]).boxed(),
                    Spooled::File(file) => {
                        use tokio::io::AsyncReadExt;
                        let reader = tokio::fs::File::from_std(file).take(len);
                        tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024).boxed()
                    }
                };
                (len, self.upload(&url, len, &mut spooled).await?)
            }
        };
        let (resp, sent, presented) = answer;
        let status = resp.status();
        // A refused token that can be refreshed: the next request fetches a new one (this upload
        // cannot be sent again: its body is gone).
        let last = !(status == StatusCode::UNAUTHORIZED && self.refused(presented.as_ref()).await);
        match status {
            StatusCode::CONFLICT => Ok(PutOutcome::AlreadyExists),
            s if s.is_success() && s != StatusCode::ACCEPTED && sent == len => {
                Ok(PutOutcome::Stored(len))
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                let said = Self::snippet(resp).await;
                Err(self.auth_fault("PUT", &url, status, &said, presented.as_ref(), last))
            }
            // `nx-open-cache serve` checked the upload and refused it (`not stored: <reason>`): a
            // refusal, not a fault of the store, and its reason is kept without the hash. Any
            // other 400 (another server, a proxy in between) stays a fault below.
            StatusCode::BAD_REQUEST if sent == len => {
                let said = Self::snippet(resp).await;
                if said.contains(REFUSED_BY_SERVE) {
                    Err(StoreError::new(
                        ErrorKind::Refused,
                        format!(
                            "{} refused the upload ({status}){said}",
                            AsyncStore::describe(self)
                        ),
                    ))
                } else {
                    Err(
                        unavailable(format!("http PUT {url}: unexpected answer {status}{said}"))
                            .with_cause(self.answer_cause("writes", status, &said)),
                    )
                }
            }
            StatusCode::PAYLOAD_TOO_LARGE => {
                let said = Self::snippet(resp).await;
                let base = redact_url(&self.base);
                Err(unavailable(format!(
                    "http PUT {url}: the server refused the artifact of {len} bytes as too large \
                     ({status}){said}"
                ))
                .with_cause(Cause::new(
                    format!("http too large {base}"),
                    format!("server {base} refused artifacts as too large ({status}){said}"),
                )))
            }
            _ => {
                let said = Self::snippet(resp).await;
                let partial = if sent < len {
                    format!(" after {sent} of {len} bytes")
                } else {
                    String::new()
                };
                Err(unavailable(format!(
                    "http PUT {url}: unexpected answer {status}{partial}{said}"
                ))
                .with_cause(self.answer_cause("writes", status, &said)))
            }
        }
    }
}

/// Every fault of this store is shown with its URLs redacted.
impl AsyncStore for HttpStore {
    async fn get(&self, hash: &TaskHash) -> Found {
        self.read(hash).await.map_err(shown)
    }

    async fn put(&self, hash: &TaskHash, upload: Upload<'_, '_>) -> Written {
        self.write(hash, upload).await.map_err(shown)
    }

    fn describe(&self) -> String {
        format!("http {}", redact_url(&self.base))
    }

    fn with_namespace(&self, ns: &Prefix) -> Result<Arc<dyn Store>, StoreError> {
        if ns.is_empty() {
            return Ok(Arc::new(self.clone()));
        }
        Err(unavailable(format!(
            "http {}: an upstream Nx-protocol server has no key prefix, so namespace {:?} cannot \
             be applied (the upstream's tokens choose its namespaces)",
            redact_url(&self.base),
            ns.as_str()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_settings() {
        let env: HashMap<String, String> = [
            (EXTRA_CA_ENV.to_owned(), "/etc/extra.pem".to_owned()),
            (REJECT_UNAUTHORIZED_ENV.to_owned(), "0".to_owned()),
        ]
        .into_iter()
        .collect();
        let o = HttpOptions::from_env(&env);
        assert_eq!(o.extra_ca_file, Some(PathBuf::from("/etc/extra.pem")));
        assert!(o.accept_invalid_certs);
        let o = HttpOptions::from_env(&HashMap::new());
        assert!(o.extra_ca_file.is_none() && !o.accept_invalid_certs);
    }

    #[test]
    fn urls_are_shown_without_credentials_or_query() {
        for (url, expected) in [
            (
                "https://user:pass@host:8443/base",
                "https://user:***@host:8443/base",
            ),
            ("https://:pass@host", "https://:***@host"),
            ("http://token@host/x", "http://***@host/x"),
            ("https://u:p/a@ss@host/p?x=1#f", "https://u:***@host/p?***"),
            ("https://host/p?sig=secret", "https://host/p?***"),
            ("https://host/base", "https://host/base"),
            ("https://host#frag", "https://host#***"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), expected, "{url}");
        }
        assert_eq!(
            redact_urls(
                "error sending request for url (https://u:pass@h/v1/cache/1): connect to \
                 http://x:y@z failed; \"https://t@q\""
            ),
            "error sending request for url (https://u:***@h/v1/cache/1): connect to \
             http://x:***@z failed; \"https://***@q\""
        );
    }

    #[tokio::test]
    async fn faults_never_show_a_password_in_the_url() {
        // A closed port: the connection is refused, the error names the URL.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(9);
        let base = HttpOptions::default();
        let options = HttpOptions {
            resilience: Resilience {
                http_get: crate::store::resilience::Retry {
                    retries: 0,
                    ..base.resilience.http_get
                },
                ..base.resilience.clone()
            },
            ..base
        };
        let store = HttpStore::new(
            &format!("http://user:hunter2-pass@127.0.0.1:{port}"),
            None,
            options,
        )
        .unwrap();
        // What callers hold.
        let store: Arc<dyn Store> = Arc::new(store);
        let hash = TaskHash::parse("1234").unwrap();
        let err = store.get(&hash).await.err().map(|e| e.message);
        let err = err.unwrap_or_default();
        assert!(err.contains("user:***@127.0.0.1"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let mut body: BodyStream<'_> =
            Box::pin(futures_util::stream::iter(vec![Ok::<_, std::io::Error>(
                Bytes::from_static(b"x"),
            )]));
        let err = store
            .put(&hash, &mut body, Some(1))
            .await
            .err()
            .map(|e| e.message);
        let err = err.unwrap_or_default();
        assert!(!err.is_empty() && !err.contains("hunter2"), "{err}");
        assert!(!store.describe().contains("hunter2"));
    }

    #[test]
    fn token_must_fit_a_header() {
        let err = HttpStore::new("http://127.0.0.1:1", Some("a\nb"), HttpOptions::default())
            .err()
            .map(|e| e.message);
        let err = err.unwrap_or_default();
        assert!(err.contains(TOKEN_ENV), "{err}");
        assert!(!err.contains("a\nb"), "{err}");
        let store = HttpStore::new("http://127.0.0.1:1", Some("  "), HttpOptions::default());
        assert!(store.is_ok_and(|s| !s.has_token()));
    }
}
