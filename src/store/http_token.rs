//! Where the `http` backend's bearer token comes from, and keeping it fresh during a run.
//!
//! The in-process proxy (and the cache host's proxies) present this token to the upstream server;
//! Nx's own client never sees it (it talks to the proxy with the run's own secret). The source is
//! chosen once per store ([`TokenConfig::select`]), the first that applies:
//!
//! 1. **GitHub Actions OIDC**: an audience is configured (plugin option `oidcAudience`, or
//!    `NX_OPEN_CACHE_OIDC_AUDIENCE`, which wins) and the job may ask for ID tokens: both
//!    `ACTIONS_ID_TOKEN_REQUEST_URL` and `ACTIONS_ID_TOKEN_REQUEST_TOKEN` are set (a job with
//!    `permissions: id-token: write`). The token is fetched with
//!    `GET <ACTIONS_ID_TOKEN_REQUEST_URL>&audience=<percent-encoded audience>` (`?audience=` when
//!    the URL has no query) and `Authorization: Bearer <ACTIONS_ID_TOKEN_REQUEST_TOKEN>`; GitHub
//!    answers `{"value": "<jwt>"}`. Within [`FETCH_TIMEOUT`], at most [`MAX_ANSWER_BYTES`].
//! 2. **`NX_OPEN_CACHE_TOKEN_FILE`**: a file holding the token on its first line (GitLab,
//!    Buildkite, CircleCI or a Kubernetes projected token write one); read again when the token in
//!    it nears expiry or the file changed (its modification time or length, looked at most once
//!    per [`FILE_CHECK_INTERVAL`]).
//! 3. **`NX_OPEN_CACHE_TOKEN`**, as is (on GitLab, `id_tokens: NX_OPEN_CACHE_TOKEN: aud: ...`
//!    fills it directly). It is never refreshed: when it is a JWT whose `exp` has passed, a refusal
//!    says so and how to get tokens that are refreshed.
//!
//! An audience without the GitHub variables (a local build, another CI) falls back to 2 and 3:
//! it never breaks a build, and the configuration shows that the audience went unused.
//!
//! **Refresh.** A fetched (or read) token is used until less than min([`MAX_REFRESH_MARGIN`],
//! lifetime / 4) of its life remains, then fetched again by the first request that needs it while
//! the others wait for that one fetch (single-flight). Its `exp` and `iat` are read from the JWT's
//! payload without verifying it, for scheduling only (the server verifies); a token that is not a
//! JWT, or has no `exp`, never expires for this purpose. A 401 from the upstream marks the token
//! stale ([`TokenSource::mark_stale`]): the next request fetches a new one. A failed fetch is a
//! fault of the store (the run goes on without the remote cache); while the token fetched before
//! is still within its `exp` it keeps being sent, and a failed fetch is not tried again for
//! [`RETRY_AFTER_FAILURE`].
//!
//! Messages name the source and the status or cause, never a token (nor the request token).

use super::http::{chain, redact_url, redact_urls, TOKEN_ENV};
use base64::Engine as _;
use futures_util::StreamExt;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

/// A file holding the bearer token, read again when it changes or the token nears expiry.
pub const TOKEN_FILE_ENV: &str = "NX_OPEN_CACHE_TOKEN_FILE";
/// The plugin option naming the audience of GitHub Actions OIDC tokens.
pub const OIDC_AUDIENCE_OPTION: &str = "oidcAudience";
/// The variable that sets (and overrides) [`OIDC_AUDIENCE_OPTION`].
pub const OIDC_AUDIENCE_ENV: &str = "NX_OPEN_CACHE_OIDC_AUDIENCE";
/// GitHub Actions: where a job with `id-token: write` asks for ID tokens.
pub const GITHUB_REQUEST_URL_ENV: &str = "ACTIONS_ID_TOKEN_REQUEST_URL";
/// GitHub Actions: the bearer token of that request.
pub const GITHUB_REQUEST_TOKEN_ENV: &str = "ACTIONS_ID_TOKEN_REQUEST_TOKEN";

/// How long fetching one token may take, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer of the token endpoint read (GitHub's are about 1-2 KiB).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The largest token file read.
pub const MAX_FILE_BYTES: u64 = 64 * 1024;
/// The longest a token is refreshed before its `exp` (shorter for short-lived tokens: a quarter
/// of their lifetime).
pub const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// After a failed fetch, requests get that failure (or the previous token, while it lasts)
/// without fetching again for this long.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);
/// How often the token file's modification time is looked at.
pub const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// A token just fetched is used at least this long, even when its `exp` is near (a clock ahead
/// of the issuer's, a very short lifetime): no fetch per request.
const MIN_REUSE: Duration = Duration::from_secs(1);
/// The longest token accepted from the endpoint or the file.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Longest piece of the token endpoint's error answer quoted.
const SNIPPET_LEN: usize = 200;

/// Where the token comes from, as selected from the options and the environment.
#[derive(Clone)]
pub enum SourceSpec {
    /// No token: no `Authorization` header.
    None,
    /// `NX_OPEN_CACHE_TOKEN` (trimmed, not empty).
    Static(Zeroizing<String>),
    /// GitHub Actions' OIDC token endpoint.
    GitHub {
        request_url: Zeroizing<String>,
        request_token: Zeroizing<String>,
        audience: String,
    },
    /// `NX_OPEN_CACHE_TOKEN_FILE`.
    File(PathBuf),
}

/// The token source of an `http` store, and an audience that went unused (configured, but the
/// GitHub variables are missing). Its `Debug` output is [`TokenConfig::describe`]: no secret.
#[derive(Clone)]
pub struct TokenConfig {
    pub source: SourceSpec,
    /// `oidcAudience` (or its variable) when the GitHub Actions variables are not set.
    pub unused_audience: Option<String>,
}

impl fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

fn set(env: &HashMap<String, String>, name: &str) -> Option<String> {
    env.get(name)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

impl TokenConfig {
    /// The source by the order in the module's documentation: GitHub Actions OIDC when an
    /// `audience` is given and both GitHub variables are set, else `NX_OPEN_CACHE_TOKEN_FILE`,
    /// else `NX_OPEN_CACHE_TOKEN`, else none. `audience` is the resolved option (the plugin's
    /// configuration gives it, the variable included).
    pub fn select(audience: Option<&str>, env: &HashMap<String, String>) -> Self {
        let audience = audience
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned);
        let github = (
            set(env, GITHUB_REQUEST_URL_ENV),
            set(env, GITHUB_REQUEST_TOKEN_ENV),
        );
        if let (Some(audience), (Some(request_url), Some(request_token))) = (&audience, github) {
            return TokenConfig {
                source: SourceSpec::GitHub {
                    request_url: Zeroizing::new(request_url),
                    request_token: Zeroizing::new(request_token),
                    audience: audience.clone(),
                },
                unused_audience: None,
            };
        }
        let source = if let Some(path) = set(env, TOKEN_FILE_ENV) {
            SourceSpec::File(PathBuf::from(path))
        } else if let Some(token) = env
            .get(TOKEN_ENV)
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
        {
            SourceSpec::Static(Zeroizing::new(token.to_owned()))
        } else {
            SourceSpec::None
        };
        TokenConfig {
            source,
            unused_audience: audience,
        }
    }

    /// `NX_OPEN_CACHE_TOKEN`'s value as given (None or blank: no token).
    pub fn from_static(token: Option<&str>) -> Self {
        TokenConfig {
            source: match token.map(str::trim).filter(|t| !t.is_empty()) {
                Some(t) => SourceSpec::Static(Zeroizing::new(t.to_owned())),
                None => SourceSpec::None,
            },
            unused_audience: None,
        }
    }

    /// Where the token comes from, for the configuration's output (`nx-open-cache config`,
    /// doctor, the debug line): e.g. `GitHub Actions OIDC, audience "https://cache.example.com"`,
    /// `NX_OPEN_CACHE_TOKEN_FILE (/run/token)`, `NX_OPEN_CACHE_TOKEN (a JWT, expired 5 min ago)`.
    /// Never the token.
    pub fn describe(&self) -> String {
        let mut out = match &self.source {
            SourceSpec::None => format!("none ({TOKEN_ENV} is not set)"),
            SourceSpec::Static(token) => match jwt_times(token) {
                Some(JwtTimes { exp: Some(exp), .. }) => {
                    let now = unix_now();
                    if exp <= now {
                        format!(
                            "{TOKEN_ENV} (a JWT that expired {} ago; it is never refreshed)",
                            span(now.saturating_sub(exp))
                        )
                    } else {
                        format!(
                            "{TOKEN_ENV} (a JWT that expires in {}; it is never refreshed)",
                            span(exp.saturating_sub(now))
                        )
                    }
                }
                _ => TOKEN_ENV.to_owned(),
            },
            SourceSpec::GitHub { audience, .. } => {
                format!("GitHub Actions OIDC, audience {audience:?}")
            }
            SourceSpec::File(path) => format!("{TOKEN_FILE_ENV} ({})", path.display()),
        };
        if let Some(audience) = &self.unused_audience {
            out.push_str(&format!(
                "; oidcAudience {audience:?} unused: {GITHUB_REQUEST_URL_ENV} and \
                 {GITHUB_REQUEST_TOKEN_ENV} are not set (not GitHub Actions, or the job lacks \
                 `permissions: id-token: write`)"
            ));
        }
        out
    }
}

/// A duration in whole units, for messages: `42 s`, `5 min`, `3 h`, `2 d`.
fn span(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 2 * 3600 => format!("{} min", s / 60),
        s if s < 2 * 86400 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86400),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn to_system_time(unix: i64) -> SystemTime {
    match u64::try_from(unix) {
        Ok(s) => UNIX_EPOCH
            .checked_add(Duration::from_secs(s))
            .unwrap_or(UNIX_EPOCH),
        Err(_) => UNIX_EPOCH,
    }
}

/// The `exp` and `iat` of a JWT's payload (unix seconds), read without verifying anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwtTimes {
    pub exp: Option<i64>,
    pub iat: Option<i64>,
}

/// `exp` and `iat` when `token` has the shape of a JWT (`header.payload.signature`, the payload
/// base64url JSON); None otherwise. Only for scheduling refreshes and for messages.
pub fn jwt_times(token: &str) -> Option<JwtTimes> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > MAX_TOKEN_LEN {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let claims = claims.as_object()?;
    let time = |name: &str| {
        claims.get(name).and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
        })
    };
    Some(JwtTimes {
        exp: time("exp"),
        iat: time("iat"),
    })
}

/// When a token should be replaced and when it is no longer usable at all, from its JWT times.
fn schedule(token: &str, now: SystemTime) -> (Option<SystemTime>, Option<SystemTime>) {
    let Some(JwtTimes {
        exp: Some(exp),
        iat,
    }) = jwt_times(token)
    else {
        return (None, None);
    };
    let expires = to_system_time(exp);
    let lifetime = match iat {
        Some(iat) if iat < exp => {
            Duration::from_secs(u64::try_from(exp.saturating_sub(iat)).unwrap_or(0))
        }
        _ => expires.duration_since(now).unwrap_or(Duration::ZERO),
    };
    let margin = (lifetime / 4).min(MAX_REFRESH_MARGIN);
    let refresh = expires
        .checked_sub(margin)
        .unwrap_or(UNIX_EPOCH)
        .max(now + MIN_REUSE);
    (Some(refresh), Some(expires))
}

/// `audience` percent-encoded for a query (everything but RFC 3986's unreserved characters).
pub fn percent_encode(audience: &str) -> String {
    let mut out = String::with_capacity(audience.len() * 3);
    for b in audience.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// GitHub's token request for `audience`: `<request_url>&audience=...`, or `?audience=` when the
/// URL has no query.
pub fn github_token_url(request_url: &str, audience: &str) -> String {
    let sep = if request_url.contains('?') { '&' } else { '?' };
    format!("{request_url}{sep}audience={}", percent_encode(audience))
}

/// Why no token could be had: the message (no token in it) and whether it can pass within the
/// run (a refused request token cannot; a timeout may).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    pub message: String,
    pub lasting: bool,
}

impl TokenError {
    fn passing(message: String) -> Self {
        TokenError {
            message,
            lasting: false,
        }
    }
}

/// The `Authorization` value a request carries, and which token it was (for [`TokenSource::mark_stale`]).
#[derive(Clone)]
pub struct Presented {
    pub header: HeaderValue,
    /// 0 for `NX_OPEN_CACHE_TOKEN`; counts fetches otherwise.
    pub generation: u64,
    /// The JWT's `exp`, if it has one.
    pub expires_at: Option<SystemTime>,
}

impl fmt::Debug for Presented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Presented")
            .field("generation", &self.generation)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// `Bearer <token>`, marked sensitive; `what` names the token for the error.
fn bearer(token: &str, what: &str) -> Result<HeaderValue, String> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        format!(
            "{what} contains characters that cannot be sent in an HTTP header (only visible ASCII \
             is allowed)"
        )
    })?;
    v.set_sensitive(true);
    Ok(v)
}

struct Current {
    header: HeaderValue,
    generation: u64,
    expires_at: Option<SystemTime>,
    refresh_at: Option<SystemTime>,
    /// Refused by the upstream (401): fetched again by the next request.
    stale: bool,
    /// The token file's modification time and length when it was read.
    file_stamp: Option<(Option<SystemTime>, u64)>,
    checked_at: Instant,
}

impl Current {
    fn presented(&self) -> Presented {
        Presented {
            header: self.header.clone(),
            generation: self.generation,
            expires_at: self.expires_at,
        }
    }

    /// It may still be sent: not refused, not past its `exp`.
    fn usable(&self, now: SystemTime) -> bool {
        !self.stale && self.expires_at.is_none_or(|e| now < e)
    }
}

#[derive(Default)]
struct State {
    current: Option<Current>,
    generation: u64,
    failure: Option<(Instant, TokenError)>,
}

enum Kind {
    Static {
        header: HeaderValue,
        expires_at: Option<SystemTime>,
    },
    GitHub {
        client: reqwest::Client,
        url: Zeroizing<String>,
        /// The request URL as it may be shown.
        shown: String,
        request_auth: HeaderValue,
        request_token: Zeroizing<String>,
        audience: String,
    },
    File {
        path: PathBuf,
    },
}

/// A token, kept fresh: see the module's documentation.
pub struct TokenSource {
    kind: Kind,
    state: tokio::sync::Mutex<State>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenSource({})", self.label())
    }
}

/// A token read from the endpoint or the file, with the file's stamp.
struct Fetched {
    token: Zeroizing<String>,
    file_stamp: Option<(Option<SystemTime>, u64)>,
}

impl TokenSource {
    /// The source of `config` (None: no token). `github_client` is the HTTP client for GitHub's
    /// token endpoint (the caller's TLS settings); needed for that source only. Fails on a
    /// `NX_OPEN_CACHE_TOKEN` that cannot be sent in a header.
    pub fn new(
        config: &TokenConfig,
        github_client: Option<reqwest::Client>,
    ) -> Result<Option<Self>, String> {
        let kind = match &config.source {
            SourceSpec::None => return Ok(None),
            SourceSpec::Static(token) => Kind::Static {
                header: bearer(token, TOKEN_ENV)?,
                expires_at: jwt_times(token).and_then(|t| t.exp).map(to_system_time),
            },
            SourceSpec::GitHub {
                request_url,
                request_token,
                audience,
            } => {
                let client = github_client.ok_or_else(|| {
                    "no HTTP client for GitHub Actions' OIDC token endpoint".to_owned()
                })?;
                Kind::GitHub {
                    client,
                    url: Zeroizing::new(github_token_url(request_url, audience)),
                    shown: redact_url(request_url),
                    request_auth: bearer(request_token, GITHUB_REQUEST_TOKEN_ENV)?,
                    request_token: request_token.clone(),
                    audience: audience.clone(),
                }
            }
            SourceSpec::File(path) => Kind::File { path: path.clone() },
        };
        Ok(Some(TokenSource {
            kind,
            state: tokio::sync::Mutex::new(State::default()),
        }))
    }

    /// The token as messages name it: `the token in NX_OPEN_CACHE_TOKEN`, `the GitHub Actions
    /// OIDC token (audience "...")`, `the token in NX_OPEN_CACHE_TOKEN_FILE (/path)`.
    pub fn label(&self) -> String {
        match &self.kind {
            Kind::Static { .. } => format!("the token in {TOKEN_ENV}"),
            Kind::GitHub { audience, .. } => {
                format!("the GitHub Actions OIDC token (audience {audience:?})")
            }
            Kind::File { path } => {
                format!("the token in {TOKEN_FILE_ENV} ({})", path.display())
            }
        }
    }

    /// Whether a new token can be had during the run (GitHub, the file).
    pub fn refreshable(&self) -> bool {
        !matches!(self.kind, Kind::Static { .. })
    }

    /// What a refusal of `presented` should add when it was past its `exp`: that it expired and
    /// how to get tokens that are refreshed. Empty otherwise.
    pub fn expired_note(&self, presented: &Presented) -> String {
        let Some(exp) = presented.expires_at else {
            return String::new();
        };
        let Ok(ago) = SystemTime::now().duration_since(exp) else {
            return String::new();
        };
        let ago = span(i64::try_from(ago.as_secs()).unwrap_or(i64::MAX));
        match &self.kind {
            Kind::Static { .. } => format!(
                " ({TOKEN_ENV} holds a JWT that expired {ago} ago, and a token in {TOKEN_ENV} is \
                 never refreshed: for tokens renewed during the run, write it to a file named by \
                 {TOKEN_FILE_ENV} that your CI keeps current, or on GitHub Actions set the plugin \
                 option {OIDC_AUDIENCE_OPTION} (with `permissions: id-token: write`))"
            ),
            Kind::File { path } => format!(
                " (the JWT in {} expired {ago} ago: whatever writes {TOKEN_FILE_ENV} has not \
                 renewed it)",
                path.display()
            ),
            Kind::GitHub { .. } => format!(" (it expired {ago} ago)"),
        }
    }

    /// The `Authorization` value for the next request: the current token, or a new one when it
    /// nears expiry, was refused, or (file) the file changed. Concurrent callers share one fetch.
    pub async fn header(&self) -> Result<Presented, TokenError> {
        if let Kind::Static { header, expires_at } = &self.kind {
            return Ok(Presented {
                header: header.clone(),
                generation: 0,
                expires_at: *expires_at,
            });
        }
        let mut st = self.state.lock().await;
        let now = SystemTime::now();
        if let Some(cur) = st.current.as_mut() {
            if !cur.stale && !self.due(cur, now).await {
                return Ok(cur.presented());
            }
        }
        if let Some((at, err)) = &st.failure {
            if at.elapsed() < RETRY_AFTER_FAILURE {
                return match st.current.as_ref().filter(|c| c.usable(now)) {
                    Some(c) => Ok(c.presented()),
                    None => Err(err.clone()),
                };
            }
        }
        match self.fetch().await {
            Ok(fetched) => {
                let header = bearer(&fetched.token, &self.label()).map_err(TokenError::passing);
                let header = match header {
                    Ok(h) => h,
                    Err(e) => {
                        st.failure = Some((Instant::now(), e.clone()));
                        return Err(e);
                    }
                };
                let now = SystemTime::now();
                let (refresh_at, expires_at) = schedule(&fetched.token, now);
                st.generation += 1;
                let cur = Current {
                    header,
                    generation: st.generation,
                    expires_at,
                    refresh_at,
                    stale: false,
                    file_stamp: fetched.file_stamp,
                    checked_at: Instant::now(),
                };
                let presented = cur.presented();
                st.current = Some(cur);
                st.failure = None;
                Ok(presented)
            }
            Err(e) => {
                st.failure = Some((Instant::now(), e.clone()));
                match st.current.as_ref().filter(|c| c.usable(now)) {
                    Some(c) => Ok(c.presented()),
                    None => Err(e),
                }
            }
        }
    }

    /// Marks the token of `generation` stale after the upstream refused it (401): the next
    /// request fetches a new one. False for `NX_OPEN_CACHE_TOKEN` (nothing to refresh).
    pub async fn mark_stale(&self, generation: u64) -> bool {
        if !self.refreshable() {
            return false;
        }
        let mut st = self.state.lock().await;
        if let Some(cur) = st.current.as_mut() {
            if cur.generation == generation {
                cur.stale = true;
            }
        }
        true
    }

    /// Whether `cur` should be replaced now: near its `exp`, or (file) the file changed.
    async fn due(&self, cur: &mut Current, now: SystemTime) -> bool {
        if cur.refresh_at.is_some_and(|t| now >= t) {
            return true;
        }
        if let Kind::File { path } = &self.kind {
            if cur.checked_at.elapsed() >= FILE_CHECK_INTERVAL {
                cur.checked_at = Instant::now();
                let stamp = tokio::fs::metadata(path)
                    .await
                    .ok()
                    .map(|m| (m.modified().ok(), m.len()));
                return stamp.is_none() || stamp != cur.file_stamp;
            }
        }
        false
    }

    async fn fetch(&self) -> Result<Fetched, TokenError> {
        match &self.kind {
            Kind::Static { .. } => {
                Err(TokenError::passing(format!("{TOKEN_ENV} is never fetched")))
            }
            Kind::GitHub {
                client,
                url,
                shown,
                request_auth,
                request_token,
                audience,
            } => {
                let what = format!(
                    "GitHub Actions' OIDC token endpoint ({GITHUB_REQUEST_URL_ENV}, {shown}, \
                     audience {audience:?})"
                );
                let got = tokio::time::timeout(
                    FETCH_TIMEOUT,
                    fetch_github(client, url, request_auth, request_token, &what),
                )
                .await;
                let token = match got {
                    Ok(r) => r?,
                    Err(_) => {
                        return Err(TokenError::passing(format!(
                            "cannot get a token from {what}: no answer within {} s",
                            FETCH_TIMEOUT.as_secs()
                        )))
                    }
                };
                Ok(Fetched {
                    token,
                    file_stamp: None,
                })
            }
            Kind::File { path } => read_token_file(path).await,
        }
    }
}

async fn fetch_github(
    client: &reqwest::Client,
    url: &str,
    request_auth: &HeaderValue,
    request_token: &str,
    what: &str,
) -> Result<Zeroizing<String>, TokenError> {
    let resp = client
        .get(url)
        .header(AUTHORIZATION, request_auth.clone())
        .header(ACCEPT, "application/json")
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .map_err(|e| {
            let cause = if e.is_timeout() {
                format!("no answer within {} s", FETCH_TIMEOUT.as_secs())
            } else {
                redact_urls(&chain(&e))
            };
            TokenError::passing(format!("cannot get a token from {what}: {cause}"))
        })?;
    let status = resp.status();
    let mut body: Vec<u8> = Vec::new();
    let mut stream = resp.bytes_stream();
    let mut too_long = false;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            TokenError::passing(format!(
                "cannot get a token from {what}: the answer ({status}) broke off: {}",
                redact_urls(&chain(&e))
            ))
        })?;
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            too_long = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    let body = Zeroizing::new(body);
    if !status.is_success() {
        return Err(refused(status, &body, request_token, what));
    }
    if too_long {
        return Err(TokenError::passing(format!(
            "cannot get a token from {what}: its answer is longer than {MAX_ANSWER_BYTES} bytes"
        )));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        value: Option<String>,
    }
    let not_json = || {
        TokenError::passing(format!(
            "cannot get a token from {what}: its answer ({status}) is not JSON of the form \
             {{\"value\": \"<token>\"}}"
        ))
    };
    let answer: Answer = serde_json::from_slice(&body).map_err(|_| not_json())?;
    let token = Zeroizing::new(answer.value.ok_or_else(not_json)?);
    let trimmed = token.trim();
    if trimmed.is_empty() || trimmed.len() > MAX_TOKEN_LEN {
        return Err(TokenError::passing(format!(
            "cannot get a token from {what}: its answer holds an empty or overlong \"value\""
        )));
    }
    Ok(Zeroizing::new(trimmed.to_owned()))
}

/// GitHub's endpoint answered `status` (not a success) with `body`: the error, with what it said
/// (the request token masked, cut, control characters removed).
fn refused(
    status: reqwest::StatusCode,
    body: &[u8],
    request_token: &str,
    what: &str,
) -> TokenError {
    let whole = String::from_utf8_lossy(body).replace(request_token, "***");
    let text: String = whole.chars().take(SNIPPET_LEN).collect();
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let said = match text.trim() {
        "" => String::new(),
        t => format!("; it said: {t}"),
    };
    let code = status.as_u16();
    let hint = if matches!(code, 401 | 403) {
        format!(
            " ({GITHUB_REQUEST_TOKEN_ENV} was refused: it is the job's own and only valid \
             while the job runs)"
        )
    } else {
        String::new()
    };
    TokenError {
        message: format!("cannot get a token from {what}: it answered {status}{hint}{said}"),
        // A refused request token, a wrong URL: the same for the rest of the run.
        lasting: matches!(code, 400 | 401 | 403 | 404),
    }
}

/// The first line of the token file, trimmed, with the file's stamp.
async fn read_token_file(path: &Path) -> Result<Fetched, TokenError> {
    use tokio::io::AsyncReadExt;
    let shown = path.display();
    let what = format!("{TOKEN_FILE_ENV} {shown}");
    let fail = |why: String| TokenError::passing(format!("cannot read the token in {what}: {why}"));
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let meta = file.metadata().await.map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".into()));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(fail(format!(
            "it is longer than {MAX_FILE_BYTES} bytes (a token file holds one token)"
        )));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| fail("it is not UTF-8 text".into()))?;
    let first = text.lines().next().unwrap_or("").trim();
    if first.is_empty() {
        return Err(fail("its first line is empty".into()));
    }
    if first.len() > MAX_TOKEN_LEN {
        return Err(fail(format!(
            "its first line is longer than {MAX_TOKEN_LEN} bytes"
        )));
    }
    Ok(Fetched {
        token: Zeroizing::new(first.to_owned()),
        file_stamp: Some((meta.modified().ok(), meta.len())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &serde_json::Value) -> String {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.{}",
            b64(br#"{"alg":"RS256","typ":"JWT"}"#),
            b64(claims.to_string().as_bytes()),
            b64(b"sig")
        )
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn jwt_times_are_read_without_verification() {
        let t = jwt(&serde_json::json!({"exp": 2000, "iat": 1000, "sub": "x"}));
        assert_eq!(
            jwt_times(&t),
            Some(JwtTimes {
                exp: Some(2000),
                iat: Some(1000)
            })
        );
        assert_eq!(jwt_times("opaque-secret"), None);
        assert_eq!(jwt_times("a.b"), None);
        assert_eq!(jwt_times("a.!!!.c"), None);
        assert_eq!(jwt_times("a.b.c.d"), None);
        let no_exp = jwt(&serde_json::json!({"sub": "x"}));
        assert_eq!(
            jwt_times(&no_exp),
            Some(JwtTimes {
                exp: None,
                iat: None
            })
        );
    }

    #[test]
    fn refresh_leaves_a_quarter_of_the_lifetime_at_most_a_minute() {
        let now = SystemTime::now();
        let unix = unix_now();
        // One hour: refreshed a minute before exp.
        let t = jwt(&serde_json::json!({"exp": unix + 3600, "iat": unix}));
        let (refresh, expires) = schedule(&t, now);
        assert_eq!(expires, Some(to_system_time(unix + 3600)));
        assert_eq!(refresh, Some(to_system_time(unix + 3600 - 60)));
        // Forty seconds: ten seconds before.
        let t = jwt(&serde_json::json!({"exp": unix + 40, "iat": unix}));
        assert_eq!(schedule(&t, now).0, Some(to_system_time(unix + 30)));
        // Not a JWT: never.
        assert_eq!(schedule("opaque", now), (None, None));
        // Already past: still used for a moment, not fetched per request.
        let t = jwt(&serde_json::json!({"exp": unix - 10, "iat": unix - 100}));
        assert!(schedule(&t, now).0.is_some_and(|r| r > now));
    }

    #[test]
    fn the_audience_is_percent_encoded_into_the_query() {
        assert_eq!(
            github_token_url(
                "https://gh/token?api-version=2.0",
                "https://cache.example.com"
            ),
            "https://gh/token?api-version=2.0&audience=https%3A%2F%2Fcache.example.com"
        );
        assert_eq!(
            github_token_url("https://gh/token", "a b&c=d~_.-"),
            "https://gh/token?audience=a%20b%26c%3Dd~_.-"
        );
    }

    #[test]
    fn selection_order_and_fallback() {
        let gh = [
            (GITHUB_REQUEST_URL_ENV, "https://gh/t?x=1"),
            (GITHUB_REQUEST_TOKEN_ENV, "req-secret"),
            (TOKEN_FILE_ENV, "/run/token"),
            (TOKEN_ENV, "static-secret"),
        ];
        let c = TokenConfig::select(Some("aud"), &env(&gh));
        assert!(matches!(c.source, SourceSpec::GitHub { .. }));
        assert_eq!(c.describe(), "GitHub Actions OIDC, audience \"aud\"");
        // No audience: GitHub's variables are not used.
        let c = TokenConfig::select(None, &env(&gh));
        assert_eq!(c.describe(), "NX_OPEN_CACHE_TOKEN_FILE (/run/token)");
        // An audience without GitHub's variables falls back, and says so.
        let c = TokenConfig::select(Some("aud"), &env(&gh[2..]));
        assert!(matches!(c.source, SourceSpec::File(_)));
        assert!(c.describe().contains("oidcAudience \"aud\" unused"));
        let c = TokenConfig::select(Some("aud"), &env(&gh[3..]));
        assert!(c
            .describe()
            .starts_with("NX_OPEN_CACHE_TOKEN; oidcAudience"));
        let c = TokenConfig::select(Some(" "), &env(&[(TOKEN_ENV, "  ")]));
        assert!(matches!(c.source, SourceSpec::None));
        assert_eq!(c.describe(), "none (NX_OPEN_CACHE_TOKEN is not set)");
        // Never a secret, in any description.
        for n in 0..gh.len() {
            let c = TokenConfig::select(Some("aud"), &env(&gh[n..]));
            let shown = format!("{} {c:?}", c.describe());
            assert!(
                !shown.contains("secret") && !shown.contains("x=1"),
                "{shown}"
            );
        }
        // An expired JWT in NX_OPEN_CACHE_TOKEN is described as such.
        let old = jwt(&serde_json::json!({"exp": unix_now() - 600}));
        let c = TokenConfig::select(None, &env(&[(TOKEN_ENV, &old)]));
        assert_eq!(
            c.describe(),
            "NX_OPEN_CACHE_TOKEN (a JWT that expired 10 min ago; it is never refreshed)"
        );
    }

    #[tokio::test]
    async fn an_expired_static_jwt_says_how_to_get_fresh_tokens() {
        let old = jwt(&serde_json::json!({"exp": unix_now() - 7200}));
        let source = TokenSource::new(&TokenConfig::from_static(Some(&old)), None)
            .unwrap()
            .unwrap();
        assert!(!source.refreshable());
        let p = source.header().await.unwrap();
        let note = source.expired_note(&p);
        assert!(note.contains("expired 2 h ago"), "{note}");
        assert!(note.contains(TOKEN_FILE_ENV) && note.contains(OIDC_AUDIENCE_OPTION));
        assert!(!note.contains(&old));
        assert!(!source.mark_stale(p.generation).await);
        // A live one adds nothing.
        let live = jwt(&serde_json::json!({"exp": unix_now() + 7200}));
        let source = TokenSource::new(&TokenConfig::from_static(Some(&live)), None)
            .unwrap()
            .unwrap();
        let p = source.header().await.unwrap();
        assert_eq!(source.expired_note(&p), "");
    }
}
