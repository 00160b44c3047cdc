//! The effective cache configuration: plugin options from nx.json, then environment overrides.
//!
//! Every mistake is reported before any task runs, naming the option, the value and what is allowed.

use crate::archive::limits::Limit;
use crate::archive::ValidationLimits;
use crate::key::Prefix;
use crate::store::http::{redact_url, redact_urls};
pub use crate::value::ConfigError;
use crate::value::{bool_option, describe_json, one_of, string_option, truthy};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default shared directory for the fs backend: per user, shared by every checkout on the machine.
pub const DEFAULT_FS_PATH: &str = "~/.cache/nx-open-cache";

/// The JSON type of an option's value, as nx.json holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    String,
    Boolean,
    /// A number; its string form (`"200"`) is accepted too.
    Number,
    /// An array of strings.
    StringArray,
    /// A string with a unit (`"30s"`, `"8GiB"`) or a number (seconds, bytes).
    StringOrNumber,
}

impl JsonType {
    /// The JSON Schema type the generator writes for it.
    pub fn schema_type(self) -> &'static str {
        match self {
            JsonType::String | JsonType::StringOrNumber => "string",
            JsonType::Boolean => "boolean",
            JsonType::Number => "number",
            JsonType::StringArray => "array",
        }
    }

    /// Every JSON type `resolve` accepts for it.
    pub fn accepts(self) -> &'static [&'static str] {
        match self {
            JsonType::String => &["string"],
            // `"true"` / `"false"` too (flags typed on a command line arrive as text).
            JsonType::Boolean => &["boolean", "string"],
            JsonType::Number | JsonType::StringOrNumber => &["number", "string"],
            JsonType::StringArray => &["array"],
        }
    }
}

/// An option's default, as the README gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionDefault {
    /// No default: unset (or, for `region` / `accountName`, from the cloud's own variables).
    None,
    Text(&'static str),
    Whole(u64),
    Bool(bool),
}

impl OptionDefault {
    pub fn to_json(self) -> Value {
        match self {
            OptionDefault::None => Value::Null,
            OptionDefault::Text(t) => Value::String(t.to_owned()),
            OptionDefault::Whole(n) => Value::from(n),
            OptionDefault::Bool(b) => Value::Bool(b),
        }
    }
}

/// One plugin option: the single description of it that `resolve`, the generator (through the
/// addon's `optionSchema()`) and the documentation share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionSpec {
    pub name: &'static str,
    pub json_type: JsonType,
    /// The backends it applies to; empty: all of them.
    pub backends: &'static [&'static str],
    pub default: OptionDefault,
    /// The variable that overrides it, if any.
    pub env: Option<&'static str>,
    /// The values it may take, when it is one of a list.
    pub choices: &'static [&'static str],
    pub description: &'static str,
}

impl OptionSpec {
    /// Whether it applies to `backend`.
    pub fn applies_to(&self, backend: &str) -> bool {
        self.backends.is_empty() || self.backends.contains(&backend)
    }
}

/// The storage backends, in the order the README lists them.
pub const BACKENDS: &[&str] = &["fs", "s3", "gcs", "azure", "http"];
/// The cache modes.
pub const MODES: &[&str] = &["read-write", "read-only", "no-cache"];
/// The backends that take trust namespaces, a prefix and the seal layer (not `http`: the server
/// decides where artifacts go and what it stores).
const STORE_BACKENDS: &[&str] = &["fs", "s3", "gcs", "azure"];

pub const WRITE_PREFIX_VAR: &str = "NX_OPEN_CACHE_WRITE_PREFIX";
pub const READ_PREFIXES_VAR: &str = "NX_OPEN_CACHE_READ_PREFIXES";
/// Overrides `localMode` and `ciMode`.
pub const MODE_VAR: &str = "NX_OPEN_CACHE_MODE";
pub const TIMEOUT_VAR: &str = "NX_OPEN_CACHE_TIMEOUT";
pub const CONNECT_TIMEOUT_VAR: &str = "NX_OPEN_CACHE_CONNECT_TIMEOUT";
pub const MAX_ARTIFACT_ENTRIES_VAR: &str = "NX_OPEN_CACHE_MAX_ARTIFACT_ENTRIES";
pub const MAX_EXPANDED_SIZE_VAR: &str = "NX_OPEN_CACHE_MAX_EXPANDED_SIZE";
pub const MAX_EXPANSION_RATIO_VAR: &str = "NX_OPEN_CACHE_MAX_EXPANSION_RATIO";
/// `NX_OPEN_CACHE_DEBUG`: log every request.
pub const DEBUG_VAR: &str = "NX_OPEN_CACHE_DEBUG";

/// What every nx-open-cache variable starts with.
pub const VAR_PREFIX: &str = "NX_OPEN_CACHE_";

/// The `NX_OPEN_CACHE_*` variables read outside the options: by the core (keys, the http
/// backend's token, debug) and by the JavaScript layer (lib/). With the options' variables
/// ([`OPTIONS`]) and `serve`'s ([`crate::serve::config::env_names`]) they are every variable
/// nx-open-cache knows ([`known_vars`]); any other is warned about.
pub const OTHER_VARS: &[&str] = &[
    crate::seal::keys::SIGNING_KEY_VAR,
    crate::seal::keys::ENCRYPTION_KEY_VAR,
    crate::seal::keys::ENCRYPTION_KEY_FROM_VAR,
    crate::store::http::TOKEN_ENV,
    crate::store::http_token::TOKEN_FILE_ENV,
    DEBUG_VAR,
    // lib/plugin.js: where the run's cache proxy runs, and the proxy URL it set itself.
    "NX_OPEN_CACHE_HOST",
    "NX_OPEN_CACHE_PROXY_URL",
    // lib/plugin.js: how the run summary is shown.
    "NX_OPEN_CACHE_SUMMARY",
    // lib/history.js: the run history (on/off) and its bounds.
    "NX_OPEN_CACHE_HISTORY",
    "NX_OPEN_CACHE_HISTORY_RUNS",
    "NX_OPEN_CACHE_HISTORY_MB",
    // lib/run-report.js: `off` sends the http backend's server no run report.
    "NX_OPEN_CACHE_RUN_REPORT",
];

/// Variables of this repository's test harness (`NX_OPEN_CACHE_TEST_*`): never warned about.
const TEST_VAR_PREFIX: &str = "NX_OPEN_CACHE_TEST_";

/// Every `NX_OPEN_CACHE_*` variable nx-open-cache reads, sorted: the options' variables, the
/// others ([`OTHER_VARS`]) and `serve`'s.
pub fn known_vars() -> Vec<String> {
    let mut names: Vec<String> = OPTIONS
        .iter()
        .filter_map(|o| o.env)
        .chain(OTHER_VARS.iter().copied())
        .map(str::to_owned)
        .chain(crate::serve::config::env_names())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The distance between two words: insertions, deletions, substitutions and swaps of neighbours
/// (optimal string alignment), compared without case.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
}

/// The candidate closest to `word`, when it is close: at most a third of its length in edits
/// (and at most 3), so `TOKN` finds `TOKEN` but `X` finds nothing. `strip` is a common prefix left
/// out of the comparison (e.g. `NX_OPEN_CACHE_`). Bounded: words longer than 100 characters are
/// not compared.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    strip: &str,
) -> Option<&'a str> {
    let core = |w: &'a str| w.strip_prefix(strip).unwrap_or(w);
    let mine = word.strip_prefix(strip).unwrap_or(word);
    if mine.len() > 100 {
        return None;
    }
    candidates
        .into_iter()
        .filter(|c| c.len() <= 100 + strip.len())
        .map(|c| (edit_distance(mine, core(c)), c))
        .filter(|(d, c)| *d <= (core(c).chars().count() / 3).clamp(1, 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The warnings for `NX_OPEN_CACHE_*` variables nx-open-cache does not know (a typo would be
/// silently ignored otherwise), sorted, each with a "did you mean" when a known one is close.
/// Never shows a value.
pub fn unknown_var_warnings(env: &HashMap<String, String>) -> Vec<String> {
    let known = known_vars();
    let mut unknown: Vec<&String> = env
        .keys()
        .filter(|k| k.starts_with(VAR_PREFIX) && !k.starts_with(TEST_VAR_PREFIX))
        .filter(|k| !known.contains(k))
        .collect();
    unknown.sort();
    unknown
        .into_iter()
        .map(
            |name| match did_you_mean(name, known.iter().map(String::as_str), VAR_PREFIX) {
                Some(close) => {
                    format!("unknown environment variable {name} (ignored): did you mean {close}?")
                }
                None => format!(
                    "unknown environment variable {name} (ignored): no known variable is close \
                     (the README lists them; `nx-open-cache config` shows what is in effect)"
                ),
            },
        )
        .collect()
}

/// What may be wrong although the configuration is valid: unknown `NX_OPEN_CACHE_*` variables,
/// a signing key whose public key is not in `trustedKeys`. The plugin prints each once per run;
/// `doctor` and `nx-open-cache config` show them. Never shows a secret.
pub fn warnings(seal: &crate::seal::SealConfig, env: &HashMap<String, String>) -> Vec<String> {
    let mut out = unknown_var_warnings(env);
    out.extend(seal.untrusted_signing_key());
    out
}

/// Every option the plugin understands (the fuzz targets pick them by index: add new ones last).
pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "backend",
        json_type: JsonType::String,
        backends: &[],
        default: OptionDefault::Text("fs"),
        env: None,
        choices: BACKENDS,
        description: "Storage backend.",
    },
    OptionSpec {
        name: "path",
        json_type: JsonType::String,
        backends: &["fs"],
        default: OptionDefault::Text(DEFAULT_FS_PATH),
        env: None,
        choices: &[],
        description: "The shared cache directory: absolute, relative to the workspace root (and inside it), or starting with ~/.",
    },
    OptionSpec {
        name: "prefix",
        json_type: JsonType::String,
        backends: STORE_BACKENDS,
        default: OptionDefault::None,
        env: None,
        choices: &[],
        description: "A namespace inside the store: /-separated segments of A-Z a-z 0-9 . _ -.",
    },
    OptionSpec {
        name: "localMode",
        json_type: JsonType::String,
        backends: &[],
        default: OptionDefault::Text("read-write"),
        env: Some(MODE_VAR),
        choices: MODES,
        description: "Cache mode outside CI.",
    },
    OptionSpec {
        name: "ciMode",
        json_type: JsonType::String,
        backends: &[],
        default: OptionDefault::Text("read-write"),
        env: Some(MODE_VAR),
        choices: MODES,
        description: "Cache mode when the CI variable is set (and not false / 0).",
    },
    OptionSpec {
        name: "bucket",
        json_type: JsonType::String,
        backends: &["s3", "gcs"],
        default: OptionDefault::None,
        env: None,
        choices: &[],
        description: "The bucket.",
    },
    OptionSpec {
        name: "region",
        json_type: JsonType::String,
        backends: &["s3"],
        default: OptionDefault::None,
        env: None,
        choices: &[],
        description: "The bucket's region (else AWS_REGION / AWS_DEFAULT_REGION, else us-east-1).",
    },
    OptionSpec {
        name: "endpoint",
        json_type: JsonType::String,
        backends: &["s3", "azure"],
        default: OptionDefault::None,
        env: None,
        choices: &[],
        description: "s3: an S3-compatible endpoint (MinIO, R2, Ceph, SeaweedFS...); azure: the account's blob service URL (e.g. Azurite).",
    },
    OptionSpec {
        name: "forcePathStyle",
        json_type: JsonType::Boolean,
        backends: &["s3"],
        default: OptionDefault::Bool(false),
        env: None,
        choices: &[],
        description: "Path-style requests (<endpoint>/<bucket>/<key>), which most S3-compatible stores need.",
    },
    OptionSpec {
        name: "container",
        json_type: JsonType::String,
        backends: &["azure"],
        default: OptionDefault::None,
        env: None,
        choices: &[],
        description: "The blob container.",
    },
    OptionSpec {
        name: "accountName",
        json_type: JsonType::String,
        backends: &["azure"],
        default: OptionDefault::None,
        env: None,
        choices: &[],
        description: "The storage account (else AZURE_STORAGE_ACCOUNT_NAME or the connection string).",
    },
    OptionSpec {
        name: "url",
        json_type: JsonType::String,
        backends: &["http"],
        default: OptionDefault::None,
        env: None,
        choices: &[],
        description: "The base URL of an Nx-protocol server, http:// or https://, no trailing slash; the token comes from GitHub Actions OIDC (oidcAudience), NX_OPEN_CACHE_TOKEN_FILE or NX_OPEN_CACHE_TOKEN.",
    },
    OptionSpec {
        name: "runReport",
        json_type: JsonType::Boolean,
        backends: &["http"],
        default: OptionDefault::Bool(true),
        env: None,
        choices: &[],
        description: "After each run, send the server a small run report (task ids, hashes, outcomes, durations) for its dashboard; false (or NX_OPEN_CACHE_RUN_REPORT=off) sends none.",
    },
    OptionSpec {
        name: "timeout",
        json_type: JsonType::StringOrNumber,
        backends: &[],
        default: OptionDefault::Text("10s"),
        env: Some(TIMEOUT_VAR),
        choices: &[],
        description: "How long a storage call may wait for the store to answer: seconds, or \"30s\", \"2m\"; 1 s to 1 h.",
    },
    OptionSpec {
        name: "connectTimeout",
        json_type: JsonType::StringOrNumber,
        backends: &[],
        default: OptionDefault::Text("5s"),
        env: Some(CONNECT_TIMEOUT_VAR),
        choices: &[],
        description: "How long connecting to the store may take; same forms and range as timeout.",
    },
    OptionSpec {
        name: "writePrefix",
        json_type: JsonType::String,
        backends: STORE_BACKENDS,
        default: OptionDefault::None,
        env: Some(WRITE_PREFIX_VAR),
        choices: &[],
        description: "Trust namespace this run writes to, relative to prefix (default: the store root).",
    },
    OptionSpec {
        name: "readPrefixes",
        json_type: JsonType::StringArray,
        backends: STORE_BACKENDS,
        default: OptionDefault::None,
        env: Some(READ_PREFIXES_VAR),
        choices: &[],
        description: "Trust namespaces this run reads, in order, relative to prefix (default: [writePrefix]).",
    },
    OptionSpec {
        name: "trustedKeys",
        json_type: JsonType::StringArray,
        backends: STORE_BACKENDS,
        default: OptionDefault::None,
        env: None,
        choices: &[],
        description: "Base64 Ed25519 public keys whose signatures are accepted (nx-open-cache keygen prints a pair).",
    },
    OptionSpec {
        name: "requireSignature",
        json_type: JsonType::Boolean,
        backends: STORE_BACKENDS,
        default: OptionDefault::Bool(false),
        env: Some(crate::seal::keys::REQUIRE_SIGNATURE_VAR),
        choices: &[],
        description: "Refuse artifacts not signed by one of trustedKeys.",
    },
    OptionSpec {
        name: "maxArtifactEntries",
        json_type: JsonType::Number,
        backends: &[],
        default: OptionDefault::Whole(1_000_000),
        env: Some(MAX_ARTIFACT_ENTRIES_VAR),
        choices: &[],
        description: "The artifact check: an artifact read with more paths is a miss; 1 to 100000000.",
    },
    OptionSpec {
        name: "maxExpandedSize",
        json_type: JsonType::StringOrNumber,
        backends: &[],
        default: OptionDefault::Text("32GiB"),
        env: Some(MAX_EXPANDED_SIZE_VAR),
        choices: &[],
        description: "The artifact check: one whose tar stream inflates to more is a miss; a size such as 8GiB or 500MB, or a number of bytes.",
    },
    OptionSpec {
        name: "maxExpansionRatio",
        json_type: JsonType::Number,
        backends: &[],
        default: OptionDefault::Whole(200),
        env: Some(MAX_EXPANSION_RATIO_VAR),
        choices: &[],
        description: "The artifact check: one that inflates to more than this many times its compressed size, once above 256 MiB, is a miss; 1 to 1000000.",
    },
    OptionSpec {
        name: crate::store::http_token::OIDC_AUDIENCE_OPTION,
        json_type: JsonType::String,
        backends: &["http"],
        default: OptionDefault::None,
        env: Some(crate::store::http_token::OIDC_AUDIENCE_ENV),
        choices: &[],
        description: "On GitHub Actions (job permission id-token: write), fetch the server's token from GitHub's OIDC endpoint for this audience and refresh it during the run, e.g. \"https://cache.example.com\"; elsewhere NX_OPEN_CACHE_TOKEN_FILE or NX_OPEN_CACHE_TOKEN is used.",
    },
];

/// The option called `name`.
pub fn option(name: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|o| o.name == name)
}

/// The names of every option, for messages.
fn option_names() -> String {
    let names: Vec<&str> = OPTIONS.iter().map(|o| o.name).collect();
    names.join(", ")
}

/// What the cache may do in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    ReadWrite,
    ReadOnly,
    NoCache,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::ReadWrite => "read-write",
            Mode::ReadOnly => "read-only",
            Mode::NoCache => "no-cache",
        }
    }

    fn parse(option: &str, value: &str) -> Result<Mode, ConfigError> {
        match value {
            "read-write" => Ok(Mode::ReadWrite),
            "read-only" => Ok(Mode::ReadOnly),
            "no-cache" => Ok(Mode::NoCache),
            _ => Err(ConfigError::invalid(option, value, &one_of(MODES))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Fs {
        path: PathBuf,
    },
    /// Amazon S3 or an S3-compatible store (MinIO, R2, Ceph, SeaweedFS...) through `endpoint`.
    S3 {
        bucket: String,
        /// Falls back to AWS_REGION / AWS_DEFAULT_REGION, then us-east-1.
        region: Option<String>,
        /// e.g. `https://minio.internal:9000`; http is allowed for an explicit endpoint.
        endpoint: Option<String>,
        /// Path-style requests (`<endpoint>/<bucket>/<key>`) instead of virtual-hosted ones.
        force_path_style: bool,
    },
    /// Google Cloud Storage.
    Gcs {
        bucket: String,
    },
    /// Azure Blob Storage.
    Azure {
        container: String,
        /// Falls back to AZURE_STORAGE_ACCOUNT_NAME or the connection string.
        account_name: Option<String>,
        /// Blob service URL of the account, e.g. `http://127.0.0.1:10000/devstoreaccount1`.
        endpoint: Option<String>,
    },
    /// An Nx-protocol server (ours or any other): `<url>/v1/cache/<hash>`. The token comes from
    /// GitHub Actions OIDC, `NX_OPEN_CACHE_TOKEN_FILE` or `NX_OPEN_CACHE_TOKEN` (never from
    /// nx.json): see [`crate::store::http_token`].
    Http {
        /// `http(s)://host[:port][/base]`, no trailing slash.
        url: String,
        /// `oidcAudience` / `NX_OPEN_CACHE_OIDC_AUDIENCE` (the variable wins): the audience of
        /// GitHub Actions OIDC tokens, used when the job can ask for them.
        oidc_audience: Option<String>,
    },
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Fs { .. } => "fs",
            Backend::S3 { .. } => "s3",
            Backend::Gcs { .. } => "gcs",
            Backend::Azure { .. } => "azure",
            Backend::Http { .. } => "http",
        }
    }

    pub fn location(&self) -> String {
        match self {
            Backend::Fs { path } => path.display().to_string(),
            Backend::S3 { bucket, .. } | Backend::Gcs { bucket } => bucket.clone(),
            Backend::Azure {
                container,
                account_name,
                ..
            } => match account_name {
                Some(a) => format!("{a}/{container}"),
                None => container.clone(),
            },
            Backend::Http { url, .. } => redact_url(url),
        }
    }
}

/// How long a storage call may wait (see `timeout` / `connectTimeout` in the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting to the store.
    pub connect: Duration,
    /// Waiting for the store to answer, or for more bytes while a transfer is under way; also the
    /// start-up check's limit.
    pub answer: Duration,
}

/// The defaults, and every timeout, retry and breaker setting derived from these two, are the
/// resilience policy's (`store::resilience`).
pub use crate::store::resilience::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT};

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: DEFAULT_CONNECT_TIMEOUT,
            answer: DEFAULT_TIMEOUT,
        }
    }
}

/// Trust namespaces: where a run writes and where it reads, both relative to `prefix`.
///
/// The default (write to the store root, read from it) is a cache without namespaces. The
/// `ci-split` preset writes untrusted builds to `untrusted/` and lets them read `trusted/` first;
/// trusted builds (main-branch CI) write and read `trusted/` only, so they never restore what an
/// untrusted build stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespaces {
    /// `writePrefix` / `NX_OPEN_CACHE_WRITE_PREFIX`; empty: the store root (inside `prefix`).
    pub write: Prefix,
    /// `readPrefixes` / `NX_OPEN_CACHE_READ_PREFIXES`, in order, never empty; default `[write]`.
    pub read: Vec<Prefix>,
    /// Where these came from, for diagnostics: `default`, `options`, or the variables that set them.
    pub source: String,
}

impl Default for Namespaces {
    fn default() -> Self {
        Namespaces {
            write: Prefix::default(),
            read: vec![Prefix::default()],
            source: "default".into(),
        }
    }
}

impl Namespaces {
    /// True for the plain layout (write and read the store root only).
    pub fn is_default(&self) -> bool {
        self.write.is_empty() && self.read.len() == 1 && self.read[0].is_empty()
    }

    /// e.g. `writes untrusted/, reads trusted/ then untrusted/` (`/` for the store root).
    pub fn describe(&self) -> String {
        let show = |p: &Prefix| {
            if p.is_empty() {
                "/".to_owned()
            } else {
                format!("{}/", p.as_str())
            }
        };
        let reads: Vec<String> = self.read.iter().map(show).collect();
        format!(
            "writes {}, reads {}",
            show(&self.write),
            reads.join(" then ")
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    pub backend: Backend,
    pub timeouts: Timeouts,
    pub prefix: Prefix,
    /// Trust namespaces (`writePrefix` / `readPrefixes`): where this run's writes go and where its
    /// reads look, in order (first hit wins), both inside `prefix`.
    pub namespaces: Namespaces,
    /// Signatures and encryption (`trustedKeys`, `requireSignature`, `NX_OPEN_CACHE_SIGNING_KEY`,
    /// `NX_OPEN_CACHE_ENCRYPTION_KEY`); its Debug output shows key ids only.
    pub seal: crate::seal::SealConfig,
    /// The artifact check's bounds (`maxArtifactEntries`, `maxExpandedSize`, `maxExpansionRatio`
    /// and their variables) for what this run reads.
    pub limits: ValidationLimits,
    pub mode: Mode,
    /// Where the mode came from, for summaries and diagnostics.
    pub mode_source: String,
    /// `NX_OPEN_CACHE_DEBUG`: log every request.
    pub debug: bool,
    /// What may be wrong although every value is valid ([`warnings`]).
    pub warnings: Vec<String>,
}

impl CacheConfig {
    /// The `http` backend: where its bearer token comes from, as the configuration's output shows
    /// it (e.g. `GitHub Actions OIDC, audience "https://cache.example.com"`), never the token.
    /// None for the other backends.
    pub fn token_source(&self, env: &HashMap<String, String>) -> Option<String> {
        match &self.backend {
            Backend::Http { oidc_audience, .. } => Some(
                crate::store::http_token::TokenConfig::select(oidc_audience.as_deref(), env)
                    .describe(),
            ),
            _ => None,
        }
    }
}

/// Refuses options that do not apply to `backend` (e.g. `path` with `backend: "s3"`): they would
/// be silently ignored otherwise.
fn only_options(
    options: &serde_json::Map<String, Value>,
    backend: &str,
) -> Result<(), ConfigError> {
    for (key, value) in options {
        // An empty `prefix` is the store root, which every backend has.
        let unset = value.is_null() || (key == "prefix" && value.as_str() == Some(""));
        if unset || option(key).is_none_or(|o| o.applies_to(backend)) {
            continue;
        }
        let own: Vec<&str> = OPTIONS
            .iter()
            .filter(|o| o.applies_to(backend))
            .map(|o| o.name)
            .collect();
        return Err(ConfigError {
            option: key.clone(),
            message: format!(
                "option \"{key}\" does not apply to backend \"{backend}\"; its options are: {}",
                own.join(", ")
            ),
        });
    }
    Ok(())
}

/// A bucket or container name: required, ASCII letters, digits, '.', '-', '_' (the union of what
/// S3, GCS and Azure allow; each service applies its own stricter rules).
fn required_name(
    options: &serde_json::Map<String, Value>,
    backend: &str,
    name: &str,
    example: &str,
) -> Result<String, ConfigError> {
    let value = string_option(options, name)?.unwrap_or("");
    if value.is_empty() {
        return Err(ConfigError {
            option: name.to_owned(),
            message: format!("backend \"{backend}\" needs option \"{name}\" (e.g. {example})"),
        });
    }
    if value.len() > 222
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(ConfigError::invalid(
            name,
            value,
            "a bucket/container name of ASCII letters, digits, '.', '-' and '_'",
        ));
    }
    Ok(value.to_owned())
}

/// An optional region or account name: non-empty, ASCII letters, digits and '-'.
fn optional_token(
    options: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<String>, ConfigError> {
    match string_option(options, name)? {
        None | Some("") => Ok(None),
        Some(v) if v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => {
            Ok(Some(v.to_owned()))
        }
        Some(v) => Err(ConfigError::invalid(
            name,
            v,
            "ASCII letters, digits and '-' (e.g. \"eu-west-1\")",
        )),
    }
}

/// An optional endpoint URL: `http://` or `https://`, a host, no query, no credentials.
fn optional_url(
    options: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<String>, ConfigError> {
    let Some(v) = string_option(options, name)?.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"));
    let host = rest.map(|r| r.split('/').next().unwrap_or(""));
    let ok = match (rest, host) {
        (Some(r), Some(h)) => {
            !h.is_empty()
                && !h.contains('@')
                && !r.contains('?')
                && !r.contains('#')
                && !r.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        _ => false,
    };
    if !ok {
        return Err(ConfigError::invalid(
            name,
            &redact_url(v),
            "an http:// or https:// URL with a host and no credentials, query or fragment",
        ));
    }
    Ok(Some(v.trim_end_matches('/').to_owned()))
}

/// The http backend's `url`: required, `http://` or `https://`, a host, an optional base path, no
/// trailing slash (Nx-protocol paths `/v1/cache/<hash>` are appended to it), no credentials (the
/// token comes from `NX_OPEN_CACHE_TOKEN`), query or fragment.
fn http_url(options: &serde_json::Map<String, Value>) -> Result<String, ConfigError> {
    const EXPECTED: &str =
        "an http:// or https:// URL with a host and no trailing slash, e.g. \"https://cache.example.com\"";
    let value = string_option(options, "url")?.unwrap_or("");
    if value.is_empty() {
        return Err(ConfigError {
            option: "url".into(),
            message: "backend \"http\" needs option \"url\": the base URL of the Nx-protocol \
                      server, e.g. --url=https://cache.example.com"
                .into(),
        });
    }
    let bad = |why: &str| ConfigError {
        option: "url".into(),
        message: format!(
            "invalid value {:?} for option \"url\": {why}; expected {EXPECTED}",
            redact_url(value)
        ),
    };
    let lower = value.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(bad(if value.contains("://") {
            "the scheme must be http or https"
        } else {
            "the scheme (https:// or http://) is missing"
        }));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("it contains whitespace or control characters"));
    }
    let after_scheme = value.split_once("://").map_or("", |(_, rest)| rest);
    if after_scheme.is_empty() || after_scheme.starts_with('/') {
        return Err(bad("it has no host"));
    }
    if value.ends_with('/') {
        return Err(bad(
            "it ends with a slash (the paths /v1/cache/<hash> are appended to it)",
        ));
    }
    let parsed = reqwest::Url::parse(value).map_err(|e| {
        bad(&format!(
            "it is not a valid URL ({})",
            redact_urls(&e.to_string())
        ))
    })?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            "credentials do not belong in the URL (the token comes from NX_OPEN_CACHE_TOKEN)",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("it has a query or a fragment"));
    }
    if parsed.path().trim_end_matches('/').ends_with("/v1/cache") {
        return Err(bad(
            "give the server's base URL, without /v1/cache (nx-open-cache appends it)",
        ));
    }
    Ok(value.to_owned())
}

/// `writePrefix` / `readPrefixes` (and their variables) mean nothing to the http backend: the
/// server puts each token's writes and reads where its token namespaces say.
fn refuse_namespaces_for_http(
    options: &serde_json::Map<String, Value>,
    env: &HashMap<String, String>,
) -> Result<(), ConfigError> {
    let why = "the server's token namespaces do that: give the untrusted and trusted builds \
               different tokens whose write_prefix / read_prefixes make the split (README: \"Tokens, \
               roles and namespaces\")";
    for name in ["writePrefix", "readPrefixes"] {
        if options.get(name).is_some_and(|v| !v.is_null()) {
            return Err(ConfigError {
                option: name.into(),
                message: format!("option \"{name}\" does not apply to backend \"http\": {why}"),
            });
        }
    }
    for var in [WRITE_PREFIX_VAR, READ_PREFIXES_VAR] {
        if let Some(v) = env.get(var).filter(|v| !v.trim().is_empty()) {
            return Err(ConfigError {
                option: var.into(),
                message: format!(
                    "{var} is set ({v:?}) but does not apply to backend \"http\": {why}; unset it"
                ),
            });
        }
    }
    Ok(())
}

/// True when the `CI` variable says this is a CI run.
pub fn is_ci(env: &HashMap<String, String>) -> bool {
    env.get("CI")
        .map(|v| {
            let v = v.trim().to_ascii_lowercase();
            !(v.is_empty() || v == "0" || v == "false")
        })
        .unwrap_or(false)
}

fn home_dir(env: &HashMap<String, String>) -> Option<PathBuf> {
    env.get("HOME")
        .or_else(|| env.get("USERPROFILE"))
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// Resolves the fs `path` option: `~` and `~/...` from HOME, relative paths from the workspace root.
fn resolve_path(
    raw: &str,
    env: &HashMap<String, String>,
    workspace_root: &Path,
) -> Result<PathBuf, ConfigError> {
    if raw.trim().is_empty() {
        return Err(ConfigError {
            option: "path".into(),
            message: "option \"path\" is empty: give the shared cache directory (absolute, relative to the workspace root, or starting with ~/)".into(),
        });
    }
    if raw.contains('\0') {
        return Err(ConfigError::invalid(
            "path",
            raw,
            "a path without NUL bytes",
        ));
    }
    let rest = if raw == "~" {
        Some("")
    } else {
        raw.strip_prefix("~/")
    };
    if let Some(rest) = rest {
        let home = home_dir(env).ok_or_else(|| ConfigError {
            option: "path".into(),
            message: format!(
                "option \"path\" is {raw:?} but neither HOME nor USERPROFILE is set to expand \"~\""
            ),
        })?;
        return Ok(if rest.is_empty() {
            home
        } else {
            home.join(rest)
        });
    }
    let p = Path::new(raw);
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    // A relative path names a directory inside the workspace; `../` out of it is most likely a
    // mistake (it depends on where the checkout is): say how to name an outside directory.
    let mut depth: i64 = 0;
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => depth -= 1,
            std::path::Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return Err(ConfigError {
                option: "path".into(),
                message: format!(
                    "invalid value {raw:?} for option \"path\": a relative path must stay inside \
                     the workspace; for a directory outside it use an absolute path (e.g. \
                     \"/mnt/nx-cache\") or one starting with \"~/\""
                ),
            });
        }
    }
    Ok(workspace_root.join(p))
}

/// The range of the duration options (`timeout`, `connectTimeout`), in seconds: 1 s to 1 h.
pub const DURATION_RANGE_SECS: (f64, f64) = (1.0, 3600.0);

/// A duration option: seconds as a number, or a string with a unit (`s`, `m`, `h`), from the
/// option or its environment variable (which wins), within [`DURATION_RANGE_SECS`]. The range is
/// checked on the number before it becomes a `Duration` (whose conversion panics on huge values).
fn duration_option(
    options: &serde_json::Map<String, Value>,
    name: &str,
    env: &HashMap<String, String>,
    var: &str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let bad = |value: &str, why: &str| duration_error(name, var, value, why);
    let (shown, secs) = match (env.get(var).filter(|v| !v.is_empty()), options.get(name)) {
        (Some(v), _) => (format!("{v:?}"), crate::units::seconds(v)),
        (None, None | Some(Value::Null)) => return Ok(default),
        (None, Some(Value::Number(n))) => (
            n.to_string(),
            n.as_f64().ok_or_else(|| "not a number".to_owned()),
        ),
        (None, Some(Value::String(v))) => (format!("{v:?}"), crate::units::seconds(v)),
        (None, Some(other)) => return Err(bad(&describe_json(other), "not a number or a string")),
    };
    let secs = secs.map_err(|why| bad(&shown, &why))?;
    let (min, max) = DURATION_RANGE_SECS;
    if secs.is_nan() || secs <= 0.0 {
        return Err(bad(&shown, "not a positive number"));
    }
    if !(min..=max).contains(&secs) {
        return Err(bad(&shown, "out of range"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| bad(&shown, "out of range"))
}

/// The duration options and their variables.
const DURATION_OPTIONS: [(&str, &str); 2] = [
    ("timeout", TIMEOUT_VAR),
    ("connectTimeout", CONNECT_TIMEOUT_VAR),
];

fn duration_error(name: &str, var: &str, value: &str, why: &str) -> ConfigError {
    ConfigError {
        option: name.to_owned(),
        message: format!(
            "invalid value {value} for option \"{name}\" ({var}): {why}; expected seconds as a \
             number (e.g. 30) or a string with a unit (e.g. \"30s\", \"2m\"), between 1 s and 1 h"
        ),
    }
}

/// The error for a plugin option whose value is a number JSON cannot hold (`Infinity`, `NaN`: what
/// `JSON.parse` makes of `1e309`), which so never reaches [`resolve`]; `shown` as JavaScript
/// prints it.
pub fn non_finite_option(name: &str, shown: &str) -> ConfigError {
    if let Some((name, var)) = DURATION_OPTIONS.iter().find(|(n, _)| *n == name) {
        return duration_error(name, var, shown, "not a finite number");
    }
    if let Some((name, var, limit)) = LIMIT_OPTIONS.iter().find(|(n, _, _)| *n == name) {
        return ConfigError {
            option: (*name).to_owned(),
            message: format!(
                "invalid value {shown} for {}: not a finite number; expected {}",
                limit_label(name, var),
                limit.form()
            ),
        };
    }
    ConfigError {
        option: name.to_owned(),
        message: format!("invalid value {shown} for option \"{name}\": not a finite number"),
    }
}

/// The artifact check's bounds: option, variable, bound (parsed as `serve` parses its own).
const LIMIT_OPTIONS: [(&str, &str, Limit); 3] = [
    (
        "maxArtifactEntries",
        MAX_ARTIFACT_ENTRIES_VAR,
        Limit::Entries,
    ),
    (
        "maxExpandedSize",
        MAX_EXPANDED_SIZE_VAR,
        Limit::ExpandedSize,
    ),
    (
        "maxExpansionRatio",
        MAX_EXPANSION_RATIO_VAR,
        Limit::ExpansionRatio,
    ),
];

fn limit_label(name: &str, var: &str) -> String {
    format!("option \"{name}\" ({var})")
}

/// The bounds of the artifact check for what the proxy reads: the defaults, then each option,
/// then its variable (which wins). Text is parsed like `serve`'s flags (a size needs a unit); an
/// nx.json number is a count, a ratio or a number of bytes, range-checked before any conversion.
fn validation_limits(
    options: &serde_json::Map<String, Value>,
    env: &HashMap<String, String>,
) -> Result<ValidationLimits, ConfigError> {
    let mut limits = ValidationLimits::default();
    for (name, var, limit) in LIMIT_OPTIONS {
        let label = limit_label(name, var);
        let value = match (
            env.get(var).filter(|v| !v.trim().is_empty()),
            options.get(name),
        ) {
            (Some(v), _) => limit.parse_text(&label, v),
            (None, None | Some(Value::Null)) => continue,
            (None, Some(Value::String(v))) => limit.parse_text(&label, v),
            (None, Some(Value::Number(n))) => match n.as_u64() {
                // Exact for every whole number JSON holds; fractions and negatives as f64.
                Some(whole) => limit.parse_whole(&label, whole),
                None => limit.parse_number(&label, n.as_f64().unwrap_or(f64::NAN)),
            },
            (None, Some(other)) => Err(format!(
                "{label} must be a number or a string, got {}; expected {}",
                describe_json(other),
                limit.form()
            )),
        };
        let value = value.map_err(|message| ConfigError {
            option: name.to_owned(),
            message,
        })?;
        limit.set(&mut limits, value);
    }
    Ok(limits)
}

/// What a namespace prefix may look like, for error messages.
const NAMESPACE_FORM: &str = "a key prefix relative to \"prefix\": ASCII letters, digits, '_', \
     '-', '.', segments separated by '/', no '.' or '..' segments (e.g. \"trusted\" or \"untrusted\")";

/// One namespace prefix from `option` (an option name or a variable); `label` names it in the
/// message, e.g. `option "writePrefix"` or `entry 2 of NX_OPEN_CACHE_READ_PREFIXES`.
fn namespace_prefix(option: &str, label: &str, raw: &str) -> Result<Prefix, ConfigError> {
    Prefix::parse(raw).map_err(|e| ConfigError {
        option: option.to_owned(),
        message: format!(
            "invalid value {raw:?} for {label}: {}; expected {NAMESPACE_FORM}",
            e.reason
        ),
    })
}

/// Refuses a read list that names one prefix twice (the second would never be asked first).
fn no_duplicates(option: &str, label: &str, list: &[Prefix]) -> Result<(), ConfigError> {
    for (i, p) in list.iter().enumerate() {
        if list[..i].contains(p) {
            return Err(ConfigError {
                option: option.to_owned(),
                message: format!(
                    "{label} lists {:?} twice; expected each prefix once, in the order to read them",
                    p.as_str()
                ),
            });
        }
    }
    Ok(())
}

/// `writePrefix` / `readPrefixes` from the options, then `NX_OPEN_CACHE_WRITE_PREFIX` /
/// `NX_OPEN_CACHE_READ_PREFIXES` (comma-separated), which win. Reads default to `[write]`; a
/// write prefix from the environment without a read list from the environment also reads only
/// there (the options' read list is for the builds that keep the options' write prefix).
fn namespaces(
    options: &serde_json::Map<String, Value>,
    env: &HashMap<String, String>,
) -> Result<Namespaces, ConfigError> {
    let opt_write = string_option(options, "writePrefix")?
        .map(|raw| namespace_prefix("writePrefix", "option \"writePrefix\"", raw))
        .transpose()?;
    let opt_read = match options.get("readPrefixes") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(ConfigError {
                    option: "readPrefixes".into(),
                    message:
                        "option \"readPrefixes\" is an empty array; expected at least one \
                              prefix, in the order to read them (e.g. [\"trusted\", \"untrusted\"])"
                            .into(),
                });
            }
            let mut list = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let label = format!("entry {} of option \"readPrefixes\"", i + 1);
                match item {
                    Value::String(raw) => list.push(namespace_prefix("readPrefixes", &label, raw)?),
                    other => {
                        return Err(ConfigError {
                            option: "readPrefixes".into(),
                            message: format!(
                                "{label} must be a string, got {}; expected {NAMESPACE_FORM}",
                                describe_json(other)
                            ),
                        })
                    }
                }
            }
            no_duplicates("readPrefixes", "option \"readPrefixes\"", &list)?;
            Some(list)
        }
        Some(other) => {
            return Err(ConfigError {
                option: "readPrefixes".into(),
                message: format!(
                    "option \"readPrefixes\" must be an array of prefixes, got {}; expected e.g. \
                     [\"trusted\", \"untrusted\"]",
                    describe_json(other)
                ),
            })
        }
    };
    let env_write = env
        .get(WRITE_PREFIX_VAR)
        .filter(|v| !v.trim().is_empty())
        .map(|raw| namespace_prefix(WRITE_PREFIX_VAR, WRITE_PREFIX_VAR, raw.trim()))
        .transpose()?;
    let env_read = match env.get(READ_PREFIXES_VAR).filter(|v| !v.trim().is_empty()) {
        None => None,
        Some(raw) => {
            let mut list = Vec::new();
            for (i, entry) in raw.split(',').enumerate() {
                let entry = entry.trim();
                let label = format!("entry {} of {READ_PREFIXES_VAR} ({raw:?})", i + 1);
                if entry.is_empty() {
                    return Err(ConfigError {
                        option: READ_PREFIXES_VAR.into(),
                        message: format!(
                            "{label} is empty; expected comma-separated prefixes in the order to \
                             read them (e.g. \"trusted,untrusted\"), each {NAMESPACE_FORM}"
                        ),
                    });
                }
                list.push(namespace_prefix(READ_PREFIXES_VAR, &label, entry)?);
            }
            no_duplicates(READ_PREFIXES_VAR, READ_PREFIXES_VAR, &list)?;
            Some(list)
        }
    };

    let mut sources: Vec<&str> = Vec::new();
    let write = match (env_write, opt_write) {
        (Some(w), _) => {
            sources.push(WRITE_PREFIX_VAR);
            w
        }
        (None, Some(w)) => {
            sources.push("writePrefix");
            w
        }
        (None, None) => Prefix::default(),
    };
    let write_from_env = sources.first() == Some(&WRITE_PREFIX_VAR);
    let read = match (env_read, opt_read) {
        (Some(r), _) => {
            sources.push(READ_PREFIXES_VAR);
            r
        }
        (None, Some(r)) if !write_from_env => {
            sources.push("readPrefixes");
            r
        }
        _ => vec![write.clone()],
    };
    Ok(Namespaces {
        write,
        read,
        source: if sources.is_empty() {
            "default".into()
        } else {
            sources.join(", ")
        },
    })
}

/// Builds the effective configuration from the plugin options and the environment, in stages:
/// the options object and its keys, the backend, the key prefix and namespaces, the seal and the
/// artifact check's limits, the mode, the timeouts.
pub fn resolve(
    options: &Value,
    env: &HashMap<String, String>,
    workspace_root: &Path,
) -> Result<CacheConfig, ConfigError> {
    let empty = serde_json::Map::new();
    let options = options_object(options, &empty)?;
    let backend = backend(options, env, workspace_root)?;
    let http = matches!(backend, Backend::Http { .. });
    let prefix = match string_option(options, "prefix")? {
        None => Prefix::default(),
        Some(raw) => Prefix::parse(raw).map_err(|e| ConfigError {
            option: "prefix".into(),
            message: format!("invalid value {raw:?} for option \"prefix\": {}", e.reason),
        })?,
    };
    let namespaces = if http {
        Namespaces::default()
    } else {
        namespaces(options, env)?
    };
    let seal = crate::seal::keys::from_options(options, env, http)?;
    let limits = validation_limits(options, env)?;
    let (mode, mode_source) = mode(options, env)?;
    let [(answer, answer_var), (connect, connect_var)] = DURATION_OPTIONS;
    let timeouts = Timeouts {
        connect: duration_option(options, connect, env, connect_var, DEFAULT_CONNECT_TIMEOUT)?,
        answer: duration_option(options, answer, env, answer_var, DEFAULT_TIMEOUT)?,
    };
    Ok(CacheConfig {
        backend,
        timeouts,
        prefix,
        namespaces,
        limits,
        mode,
        mode_source,
        debug: truthy(env, DEBUG_VAR),
        warnings: warnings(&seal, env),
        seal,
    })
}

/// The plugin options as an object (`null`: none), every key a known option.
fn options_object<'a>(
    options: &'a Value,
    empty: &'a serde_json::Map<String, Value>,
) -> Result<&'a serde_json::Map<String, Value>, ConfigError> {
    let options = match options {
        Value::Null => empty,
        Value::Object(map) => map,
        other => {
            return Err(ConfigError {
                option: "options".into(),
                message: format!(
                    "the plugin options in nx.json must be an object, got {}",
                    describe_json(other)
                ),
            })
        }
    };
    for key in options.keys() {
        if option(key).is_none() {
            let close = did_you_mean(key, OPTIONS.iter().map(|o| o.name), "")
                .map(|c| format!(" (did you mean \"{c}\"?)"))
                .unwrap_or_default();
            return Err(ConfigError {
                option: key.clone(),
                message: format!(
                    "unknown option \"{key}\" in the nx-open-cache plugin options{close}; known \
                     options: {}",
                    option_names()
                ),
            });
        }
    }
    Ok(options)
}

/// The backend and its own options (each refused where it does not apply).
fn backend(
    options: &serde_json::Map<String, Value>,
    env: &HashMap<String, String>,
    workspace_root: &Path,
) -> Result<Backend, ConfigError> {
    Ok(match string_option(options, "backend")?.unwrap_or("fs") {
        "fs" => {
            only_options(options, "fs")?;
            let raw = string_option(options, "path")?.unwrap_or(DEFAULT_FS_PATH);
            Backend::Fs {
                path: resolve_path(raw, env, workspace_root)?,
            }
        }
        "http" => {
            // The options of the other backends' own layers first, each refused with its reason.
            refuse_namespaces_for_http(options, env)?;
            if string_option(options, "prefix")?.is_some_and(|p| !p.is_empty()) {
                return Err(ConfigError {
                    option: "prefix".into(),
                    message: "option \"prefix\" does not apply to backend \"http\": the server \
                              decides where artifacts go (its tokens carry the namespaces)"
                        .into(),
                });
            }
            crate::seal::keys::from_options(options, env, true)?;
            only_options(options, "http")?;
            // Read by lib/run-report.js; checked here like every option.
            bool_option(options, "runReport")?;
            Backend::Http {
                url: http_url(options)?,
                oidc_audience: oidc_audience(options, env)?,
            }
        }
        "s3" => {
            only_options(options, "s3")?;
            Backend::S3 {
                bucket: required_name(options, "s3", "bucket", "--bucket=my-cache")?,
                region: optional_token(options, "region")?,
                endpoint: optional_url(options, "endpoint")?,
                force_path_style: bool_option(options, "forcePathStyle")?.unwrap_or(false),
            }
        }
        "gcs" => {
            only_options(options, "gcs")?;
            Backend::Gcs {
                bucket: required_name(options, "gcs", "bucket", "--bucket=my-cache")?,
            }
        }
        "azure" => {
            only_options(options, "azure")?;
            Backend::Azure {
                container: required_name(options, "azure", "container", "--container=nx-cache")?,
                account_name: optional_token(options, "accountName")?,
                endpoint: optional_url(options, "endpoint")?,
            }
        }
        other => return Err(ConfigError::invalid("backend", other, &one_of(BACKENDS))),
    })
}

/// The audience of GitHub Actions OIDC tokens: `NX_OPEN_CACHE_OIDC_AUDIENCE` (when set and not
/// blank), else `oidcAudience`. Any visible text up to 1024 bytes (usually the server's URL); it
/// is percent-encoded into the token request.
fn oidc_audience(
    options: &serde_json::Map<String, Value>,
    env: &HashMap<String, String>,
) -> Result<Option<String>, ConfigError> {
    use crate::store::http_token::{OIDC_AUDIENCE_ENV, OIDC_AUDIENCE_OPTION};
    const EXPECTED: &str =
        "an audience the server accepts, e.g. \"https://cache.example.com\" (visible text, at most 1024 bytes)";
    let (value, from) = match env.get(OIDC_AUDIENCE_ENV).filter(|v| !v.trim().is_empty()) {
        Some(v) => (v.trim(), OIDC_AUDIENCE_ENV),
        None => match string_option(options, OIDC_AUDIENCE_OPTION)? {
            None => return Ok(None),
            Some(v) => (v, OIDC_AUDIENCE_OPTION),
        },
    };
    if value.trim().is_empty() || value.len() > 1024 || value.chars().any(char::is_control) {
        let shown: String = value.chars().take(100).collect();
        return Err(ConfigError::new(
            from,
            if from == OIDC_AUDIENCE_OPTION {
                format!("invalid value {shown:?} for option \"{from}\": expected {EXPECTED}")
            } else {
                format!("invalid value {shown:?} for {from}: expected {EXPECTED}")
            },
        ));
    }
    Ok(Some(value.trim().to_owned()))
}

/// The mode and why it applies: `NX_OPEN_CACHE_MODE`, else `ciMode` on CI, else `localMode`.
fn mode(
    options: &serde_json::Map<String, Value>,
    env: &HashMap<String, String>,
) -> Result<(Mode, String), ConfigError> {
    let local = string_option(options, "localMode")?
        .map(|v| Mode::parse("localMode", v))
        .transpose()?;
    let ci = string_option(options, "ciMode")?
        .map(|v| Mode::parse("ciMode", v))
        .transpose()?;
    Ok(match env.get(MODE_VAR).filter(|v| !v.is_empty()) {
        Some(v) => (Mode::parse(MODE_VAR, v)?, MODE_VAR.to_owned()),
        None if is_ci(env) => match ci {
            Some(m) => (m, "ciMode (CI detected)".to_owned()),
            None => (Mode::ReadWrite, "default (CI detected)".to_owned()),
        },
        None => match local {
            Some(m) => (m, "localMode".to_owned()),
            None => (Mode::ReadWrite, "default".to_owned()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A test environment; HOME is set unless the test sets it (or an empty value to unset it).
    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        let mut env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.entry("HOME".into()).or_insert_with(|| "/h".into());
        env.retain(|_, v| !v.is_empty());
        env
    }

    fn ws() -> &'static Path {
        Path::new("/ws")
    }

    #[test]
    fn defaults() {
        let c = resolve(&Value::Null, &env(&[("HOME", "/home/u")]), ws()).unwrap();
        assert_eq!(
            c.backend,
            Backend::Fs {
                path: "/home/u/.cache/nx-open-cache".into()
            }
        );
        assert_eq!(c.mode, Mode::ReadWrite);
        assert!(c.prefix.is_empty());
        assert!(!c.debug);
    }

    #[test]
    fn paths() {
        let e = env(&[("HOME", "/h")]);
        let p = |raw: &str| match resolve(&json!({ "path": raw }), &e, ws()).unwrap().backend {
            Backend::Fs { path } => path,
            other => panic!("not fs: {other:?}"),
        };
        assert_eq!(p("/mnt/c"), PathBuf::from("/mnt/c"));
        assert_eq!(p("cache"), PathBuf::from("/ws/cache"));
        assert_eq!(p("~/x"), PathBuf::from("/h/x"));
        assert_eq!(p("~"), PathBuf::from("/h"));
        let err = resolve(&json!({"path": "  "}), &e, ws()).unwrap_err();
        assert_eq!(err.option, "path");
        let err = resolve(&json!({"path": "~/x"}), &env(&[("HOME", "")]), ws()).unwrap_err();
        assert!(err.message.contains("HOME"), "{}", err.message);
    }

    #[test]
    fn modes_and_ci() {
        let o = json!({"localMode": "read-only", "ciMode": "no-cache"});
        let c = resolve(&o, &env(&[]), ws()).unwrap();
        assert_eq!(
            (c.mode, c.mode_source.as_str()),
            (Mode::ReadOnly, "localMode")
        );
        let c = resolve(&o, &env(&[("CI", "true")]), ws()).unwrap();
        assert_eq!(c.mode, Mode::NoCache);
        let c = resolve(&o, &env(&[("CI", "false")]), ws()).unwrap();
        assert_eq!(c.mode, Mode::ReadOnly);
        let c = resolve(
            &o,
            &env(&[("CI", "1"), ("NX_OPEN_CACHE_MODE", "read-write")]),
            ws(),
        )
        .unwrap();
        assert_eq!(
            (c.mode, c.mode_source.as_str()),
            (Mode::ReadWrite, "NX_OPEN_CACHE_MODE")
        );
    }

    #[test]
    fn timeouts_from_options_and_env() {
        let c = resolve(&json!({}), &env(&[]), ws()).unwrap();
        assert_eq!(c.timeouts, Timeouts::default());
        let c = resolve(
            &json!({"timeout": "2m", "connectTimeout": 3}),
            &env(&[]),
            ws(),
        )
        .unwrap();
        assert_eq!(c.timeouts.answer, Duration::from_secs(120));
        assert_eq!(c.timeouts.connect, Duration::from_secs(3));
        let c = resolve(
            &json!({"timeout": "2m"}),
            &env(&[("NX_OPEN_CACHE_TIMEOUT", "7s")]),
            ws(),
        )
        .unwrap();
        assert_eq!(c.timeouts.answer, Duration::from_secs(7), "env wins");
        let err = resolve(
            &json!({}),
            &env(&[("NX_OPEN_CACHE_CONNECT_TIMEOUT", "x")]),
            ws(),
        )
        .unwrap_err();
        assert_eq!(err.option, "connectTimeout");
        assert!(
            err.message.contains("NX_OPEN_CACHE_CONNECT_TIMEOUT"),
            "{}",
            err.message
        );
        // Relative paths inside the workspace are fine, `..` included.
        let c = resolve(&json!({"path": "tmp/../.cache/nx"}), &env(&[]), ws()).unwrap();
        assert_eq!(c.backend.location(), "/ws/tmp/../.cache/nx");
    }

    #[test]
    fn errors_name_option_value_and_allowed() {
        let cases = [
            (json!({"backend": "nope"}), "backend", "\"nope\""),
            (json!({"backend": "http"}), "url", "needs option \"url\""),
            (
                json!({"backend": "s3"}),
                "bucket",
                "needs option \"bucket\"",
            ),
            (
                json!({"backend": "s3", "bucket": "b", "path": "x"}),
                "path",
                "does not apply to backend \"s3\"",
            ),
            (
                json!({"backend": "s3", "bucket": "b", "endpoint": "ftp://x"}),
                "endpoint",
                "http:// or https://",
            ),
            (
                json!({"backend": "s3", "bucket": "b", "endpoint": "https://u:p@h"}),
                "endpoint",
                "no credentials",
            ),
            (
                json!({"backend": "s3", "bucket": "b", "forcePathStyle": 1}),
                "forcePathStyle",
                "true or false",
            ),
            (
                json!({"backend": "s3", "bucket": "a/b"}),
                "bucket",
                "\"a/b\"",
            ),
            (json!({"backend": "azure"}), "container", "--container"),
            (
                json!({"backend": "azure", "container": "c", "region": "x"}),
                "region",
                "does not apply",
            ),
            (
                json!({"localMode": "read"}),
                "localMode",
                "\"read-write\", \"read-only\", \"no-cache\"",
            ),
            (json!({"ciMode": "rw"}), "ciMode", "\"rw\""),
            (json!({"prefix": "../x"}), "prefix", "\"../x\""),
            (json!({"pth": "x"}), "pth", "known options"),
            (json!({"path": 3}), "path", "number 3"),
            (json!({"path": "../cache"}), "path", "absolute path"),
            (
                json!({"path": "a/../../cache"}),
                "path",
                "inside the workspace",
            ),
            (json!({"timeout": "soon"}), "timeout", "\"soon\""),
            (json!({"timeout": 0}), "timeout", "positive"),
            (json!({"timeout": 7200}), "timeout", "between 1 s and 1 h"),
            (
                json!({"connectTimeout": true}),
                "connectTimeout",
                "boolean true",
            ),
            (json!({"prefix": "a b"}), "prefix", "\"a b\""),
            (
                json!({"backend": "http", "url": "cache.example.com"}),
                "url",
                "http",
            ),
            (
                json!({"backend": "http", "url": "https://cache.example.com/"}),
                "url",
                "slash",
            ),
        ];
        for (opts, option, needle) in cases {
            let err = resolve(&opts, &env(&[("HOME", "/h")]), ws()).unwrap_err();
            assert_eq!(err.option, option, "{opts}");
            assert!(err.message.contains(needle), "{opts}: {}", err.message);
        }
        let err = resolve(&json!({}), &env(&[("NX_OPEN_CACHE_MODE", "ro")]), ws()).unwrap_err();
        assert_eq!(err.option, "NX_OPEN_CACHE_MODE");
        assert!(err.to_string().starts_with("nx-open-cache: "));
        let err = resolve(&json!([1]), &env(&[]), ws()).unwrap_err();
        assert!(err.message.contains("must be an object"));
    }

    #[test]
    fn cloud_backends() {
        let e = env(&[]);
        let c = resolve(
            &json!({"backend": "s3", "bucket": "my-cache", "region": "eu-west-1",
                    "endpoint": "http://127.0.0.1:9000/", "forcePathStyle": true, "prefix": "team"}),
            &e,
            ws(),
        )
        .unwrap();
        assert_eq!(
            c.backend,
            Backend::S3 {
                bucket: "my-cache".into(),
                region: Some("eu-west-1".into()),
                endpoint: Some("http://127.0.0.1:9000".into()),
                force_path_style: true,
            }
        );
        assert_eq!(c.prefix.as_str(), "team");
        let c = resolve(&json!({"backend": "gcs", "bucket": "b"}), &e, ws()).unwrap();
        assert_eq!(c.backend, Backend::Gcs { bucket: "b".into() });
        let c = resolve(
            &json!({"backend": "azure", "container": "c", "accountName": "acct"}),
            &e,
            ws(),
        )
        .unwrap();
        assert_eq!(c.backend.location(), "acct/c");
        assert_eq!(c.backend.name(), "azure");
    }

    #[test]
    fn http_backend() {
        let e = env(&[]);
        for url in [
            "https://cache.example.com",
            "http://127.0.0.1:3000",
            "https://cache.example.com/nx/base",
            "HTTPS://Cache.example.com:8443",
        ] {
            let c = resolve(&json!({"backend": "http", "url": url}), &e, ws()).unwrap();
            assert_eq!(
                c.backend,
                Backend::Http {
                    url: url.into(),
                    oidc_audience: None
                }
            );
            assert_eq!(
                (c.backend.name(), c.backend.location()),
                ("http", url.into())
            );
        }
        let cases = [
            ("https://cache.example.com/", "ends with a slash"),
            ("http://127.0.0.1:3000/", "ends with a slash"),
            (
                "cache.example.com",
                "scheme (https:// or http://) is missing",
            ),
            ("cache.example.com:3000", "is missing"),
            ("ftp://cache.example.com", "must be http or https"),
            ("https://", "no host"),
            ("http:///x", "no host"),
            ("https://:3000", "not a valid URL"),
            ("https://host:99999", "not a valid URL"),
            ("https://u:p@host", "credentials"),
            ("https://host?x=1", "query"),
            ("https://host#f", "fragment"),
            ("https://host /x", "whitespace"),
            ("https://host/v1/cache", "without /v1/cache"),
        ];
        for (url, needle) in cases {
            let err = resolve(&json!({"backend": "http", "url": url}), &e, ws()).unwrap_err();
            assert_eq!(err.option, "url", "{url}");
            assert!(err.message.contains(needle), "{url}: {}", err.message);
            assert!(
                err.message.contains(&format!("{:?}", redact_url(url)))
                    && err.message.contains("e.g. \"https://cache.example.com\""),
                "{url}: {}",
                err.message
            );
        }
        let err = resolve(&json!({"backend": "http"}), &e, ws()).unwrap_err();
        assert_eq!(err.option, "url");
        assert!(err.message.contains("--url=https://"), "{}", err.message);
        let err = resolve(
            &json!({"backend": "http", "url": "https://h", "bucket": "b"}),
            &e,
            ws(),
        )
        .unwrap_err();
        assert_eq!(err.option, "bucket");
        assert!(err.message.contains("backend \"http\""), "{}", err.message);
        let err = resolve(
            &json!({"backend": "http", "url": "https://h", "prefix": "team"}),
            &e,
            ws(),
        )
        .unwrap_err();
        assert_eq!(err.option, "prefix");
        // A token never comes from nx.json.
        let err = resolve(
            &json!({"backend": "http", "url": "https://h", "token": "s3cret"}),
            &e,
            ws(),
        )
        .unwrap_err();
        assert_eq!(err.option, "token");
        assert!(!err.message.contains("s3cret"), "{}", err.message);
    }

    #[test]
    fn urls_in_errors_never_show_a_password() {
        let e = env(&[]);
        for (options, option) in [
            (
                json!({"backend": "http", "url": "https://ci:hunter2-pw@cache.example.com"}),
                "url",
            ),
            (
                json!({"backend": "http", "url": "https://ci:hunter2-pw@cache.example.com:99999"}),
                "url",
            ),
            (
                json!({"backend": "http", "url": "https://cache.example.com/?token=hunter2-pw"}),
                "url",
            ),
            (
                json!({"backend": "s3", "bucket": "b", "endpoint": "https://k:hunter2-pw@minio"}),
                "endpoint",
            ),
        ] {
            let err = resolve(&options, &e, ws()).unwrap_err();
            assert_eq!(err.option, option);
            assert!(!err.message.contains("hunter2"), "{}", err.message);
            assert!(err.message.contains("***"), "{}", err.message);
        }
    }

    #[test]
    fn durations_are_range_checked_before_any_conversion() {
        let opts = |name: &str, v: Value| {
            let mut o = serde_json::Map::new();
            o.insert(name.to_owned(), v);
            Value::Object(o)
        };
        type Case<'a> = (Value, Vec<(&'a str, &'a str)>, &'a str, String);
        let mut cases: Vec<Case> = Vec::new();
        for (name, var) in DURATION_OPTIONS {
            let err = non_finite_option(name, "Infinity");
            assert_eq!(err.option, name);
            assert!(
                err.message.contains("invalid value Infinity")
                    && err.message.contains("between 1 s and 1 h"),
                "{}",
                err.message
            );
            for raw in [
                "1e300",
                "99999999999999999999",
                "1e309",
                "-1e309",
                "-5",
                "0",
                "NaN",
                "nan",
                "Infinity",
                "-inf",
                "3601",
                "0.5",
                "99999999999999999999999w",
                "1e300s",
                "",
            ] {
                if !raw.is_empty() {
                    cases.push((json!({}), vec![(var, raw)], name, raw.to_owned()));
                }
                cases.push((opts(name, json!(raw)), vec![], name, raw.to_owned()));
            }
            for n in [
                json!(1e300),
                json!(f64::MAX),
                json!(-1),
                json!(0.25),
                json!(u64::MAX),
                json!(i64::MIN),
                json!(7200),
            ] {
                let shown = n.to_string();
                cases.push((opts(name, n), vec![], name, shown));
            }
        }
        for (options, vars, option, raw) in cases {
            let err = resolve(&options, &env(&vars), ws()).unwrap_err();
            assert_eq!(err.option, option, "{options} {vars:?}");
            assert!(
                err.message.contains(&raw)
                    && err.message.contains("between 1 s and 1 h")
                    && err.message.contains(&format!("option \"{option}\"")),
                "{options} {vars:?}: {}",
                err.message
            );
        }
        // The bounds themselves are fine, in every form.
        for (v, secs) in [
            (json!(1), 1.0),
            (json!(3600), 3600.0),
            (json!("1h"), 3600.0),
            (json!("60m"), 3600.0),
            (json!("1.5"), 1.5),
            (json!(" 2s "), 2.0),
        ] {
            let c = resolve(&opts("timeout", v.clone()), &env(&[]), ws()).unwrap();
            assert_eq!(c.timeouts.answer.as_secs_f64(), secs, "{v}");
        }
    }

    #[test]
    fn trust_namespaces() {
        let p = |s: &str| Prefix::parse(s).unwrap();
        // Default: the store root, as without namespaces.
        let c = resolve(&json!({}), &env(&[]), ws()).unwrap();
        assert!(c.namespaces.is_default());
        assert_eq!(c.namespaces.source, "default");
        // The ci-split preset: untrusted by default, trusted first.
        let split = json!({"writePrefix": "untrusted", "readPrefixes": ["trusted", "untrusted/"]});
        let c = resolve(&split, &env(&[]), ws()).unwrap();
        assert_eq!(c.namespaces.write, p("untrusted"));
        assert_eq!(c.namespaces.read, vec![p("trusted"), p("untrusted")]);
        assert_eq!(c.namespaces.source, "writePrefix, readPrefixes");
        assert_eq!(
            c.namespaces.describe(),
            "writes untrusted/, reads trusted/ then untrusted/"
        );
        // A trusted build opts in through the environment.
        let c = resolve(
            &split,
            &env(&[
                ("NX_OPEN_CACHE_WRITE_PREFIX", "trusted"),
                ("NX_OPEN_CACHE_READ_PREFIXES", "trusted"),
            ]),
            ws(),
        )
        .unwrap();
        assert_eq!(c.namespaces.write, p("trusted"));
        assert_eq!(c.namespaces.read, vec![p("trusted")]);
        // The write variable alone reads only where it writes, never the options' read list.
        let c = resolve(
            &split,
            &env(&[("NX_OPEN_CACHE_WRITE_PREFIX", "trusted")]),
            ws(),
        )
        .unwrap();
        assert_eq!(c.namespaces.read, vec![p("trusted")]);
        assert_eq!(c.namespaces.source, "NX_OPEN_CACHE_WRITE_PREFIX");
        // A read list from the environment, spaces trimmed; reads default to the write prefix.
        let c = resolve(
            &json!({"writePrefix": "untrusted"}),
            &env(&[("NX_OPEN_CACHE_READ_PREFIXES", " team/trusted , untrusted ")]),
            ws(),
        )
        .unwrap();
        assert_eq!(c.namespaces.read, vec![p("team/trusted"), p("untrusted")]);
        let c = resolve(&json!({"writePrefix": "pr"}), &env(&[]), ws()).unwrap();
        assert_eq!(c.namespaces.read, vec![p("pr")]);
        // Every backend but http.
        for backend in [
            json!({"backend": "s3", "bucket": "b"}),
            json!({"backend": "gcs", "bucket": "b"}),
            json!({"backend": "azure", "container": "c"}),
            json!({"backend": "fs", "path": "/c"}),
        ] {
            let mut o = backend.clone();
            o["writePrefix"] = json!("untrusted");
            o["readPrefixes"] = json!(["trusted", "untrusted"]);
            let c = resolve(&o, &env(&[]), ws()).unwrap();
            assert_eq!(c.namespaces.read.len(), 2, "{o}");
        }
    }

    #[test]
    fn trust_namespace_errors() {
        let cases = [
            (
                json!({"writePrefix": "../x"}),
                &[][..],
                "writePrefix",
                "\"../x\"",
            ),
            (
                json!({"writePrefix": "a b"}),
                &[],
                "writePrefix",
                "e.g. \"trusted\"",
            ),
            (json!({"writePrefix": 1}), &[], "writePrefix", "number 1"),
            (
                json!({"readPrefixes": "trusted"}),
                &[],
                "readPrefixes",
                "array",
            ),
            (
                json!({"readPrefixes": []}),
                &[],
                "readPrefixes",
                "empty array",
            ),
            (
                json!({"readPrefixes": ["trusted", 2]}),
                &[],
                "readPrefixes",
                "entry 2 of option \"readPrefixes\" must be a string, got number 2",
            ),
            (
                json!({"readPrefixes": ["trusted", "/abs"]}),
                &[],
                "readPrefixes",
                "entry 2 of option \"readPrefixes\"",
            ),
            (
                json!({"readPrefixes": ["trusted", "trusted/"]}),
                &[],
                "readPrefixes",
                "twice",
            ),
            (
                json!({}),
                &[("NX_OPEN_CACHE_WRITE_PREFIX", "a/../b")][..],
                "NX_OPEN_CACHE_WRITE_PREFIX",
                "'.' and '..'",
            ),
            (
                json!({}),
                &[("NX_OPEN_CACHE_READ_PREFIXES", "trusted,,untrusted")],
                "NX_OPEN_CACHE_READ_PREFIXES",
                "entry 2 of NX_OPEN_CACHE_READ_PREFIXES (\"trusted,,untrusted\") is empty",
            ),
            (
                json!({}),
                &[("NX_OPEN_CACHE_READ_PREFIXES", "trusted;untrusted")],
                "NX_OPEN_CACHE_READ_PREFIXES",
                "\"trusted;untrusted\"",
            ),
            (
                json!({}),
                &[("NX_OPEN_CACHE_READ_PREFIXES", "a,b,a")],
                "NX_OPEN_CACHE_READ_PREFIXES",
                "twice",
            ),
            (
                json!({"backend": "http", "url": "https://h", "writePrefix": "untrusted"}),
                &[],
                "writePrefix",
                "token namespaces",
            ),
            (
                json!({"backend": "http", "url": "https://h", "readPrefixes": ["trusted"]}),
                &[],
                "readPrefixes",
                "does not apply to backend \"http\"",
            ),
            (
                json!({"backend": "http", "url": "https://h"}),
                &[("NX_OPEN_CACHE_WRITE_PREFIX", "trusted")],
                "NX_OPEN_CACHE_WRITE_PREFIX",
                "token namespaces",
            ),
        ];
        for (opts, vars, option, needle) in cases {
            let err = resolve(&opts, &env(vars), ws()).unwrap_err();
            assert_eq!(err.option, option, "{opts} {vars:?}");
            assert!(
                err.message.contains(needle),
                "{opts} {vars:?}: {}",
                err.message
            );
        }
        // Every prefix error says what is allowed.
        let err = resolve(&json!({"writePrefix": "a b"}), &env(&[]), ws()).unwrap_err();
        assert!(
            err.message.contains("relative to \"prefix\""),
            "{}",
            err.message
        );
    }

    #[test]
    fn artifact_limits_from_options_and_env() {
        let c = resolve(&json!({}), &env(&[]), ws()).unwrap();
        assert_eq!(c.limits, ValidationLimits::default());
        let c = resolve(
            &json!({"maxArtifactEntries": 5000, "maxExpandedSize": "2GiB", "maxExpansionRatio": "50"}),
            &env(&[]),
            ws(),
        )
        .unwrap();
        assert_eq!(
            (
                c.limits.max_entries,
                c.limits.max_expanded_bytes,
                c.limits.max_expansion_ratio
            ),
            (5000, 2 << 30, 50)
        );
        // Bytes as a number; the range's ends.
        let c = resolve(
            &json!({"maxExpandedSize": 1048576, "maxArtifactEntries": 100_000_000, "maxExpansionRatio": 1}),
            &env(&[]),
            ws(),
        )
        .unwrap();
        assert_eq!(
            (
                c.limits.max_entries,
                c.limits.max_expanded_bytes,
                c.limits.max_expansion_ratio
            ),
            (100_000_000, 1 << 20, 1)
        );
        // The variables win over the options; an empty one is unset.
        let c = resolve(
            &json!({"maxArtifactEntries": 5000, "maxExpandedSize": "2GiB", "maxExpansionRatio": 50}),
            &env(&[
                ("NX_OPEN_CACHE_MAX_ARTIFACT_ENTRIES", "7"),
                ("NX_OPEN_CACHE_MAX_EXPANDED_SIZE", "1KiB"),
                ("NX_OPEN_CACHE_MAX_EXPANSION_RATIO", " "),
            ]),
            ws(),
        )
        .unwrap();
        assert_eq!(
            (
                c.limits.max_entries,
                c.limits.max_expanded_bytes,
                c.limits.max_expansion_ratio
            ),
            (7, 1024, 50)
        );
        // Other bounds keep their defaults.
        assert_eq!(
            c.limits.ratio_floor_bytes,
            ValidationLimits::default().ratio_floor_bytes
        );
        // Every backend takes them (the http backend's proxy checks what the server sends).
        let c = resolve(
            &json!({"backend": "http", "url": "https://c.example", "maxArtifactEntries": 9}),
            &env(&[]),
            ws(),
        )
        .unwrap();
        assert_eq!(c.limits.max_entries, 9);
    }

    #[test]
    fn artifact_limits_are_range_checked_before_any_conversion() {
        type Case = (
            Value,
            Vec<(&'static str, &'static str)>,
            &'static str,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                json!({"maxArtifactEntries": 0}),
                vec![],
                "maxArtifactEntries",
                "invalid value 0 ",
            ),
            (
                json!({"maxArtifactEntries": 100_000_001}),
                vec![],
                "maxArtifactEntries",
                "100000001",
            ),
            (
                json!({"maxArtifactEntries": -1}),
                vec![],
                "maxArtifactEntries",
                "-1",
            ),
            (
                json!({"maxArtifactEntries": 2.5}),
                vec![],
                "maxArtifactEntries",
                "2.5",
            ),
            (
                json!({"maxArtifactEntries": 1e300}),
                vec![],
                "maxArtifactEntries",
                "1e+300",
            ),
            (
                json!({"maxArtifactEntries": u64::MAX}),
                vec![],
                "maxArtifactEntries",
                "18446744073709551615",
            ),
            (
                json!({"maxArtifactEntries": "many"}),
                vec![],
                "maxArtifactEntries",
                "\"many\"",
            ),
            (
                json!({"maxArtifactEntries": true}),
                vec![],
                "maxArtifactEntries",
                "boolean true",
            ),
            (
                json!({"maxExpandedSize": 0}),
                vec![],
                "maxExpandedSize",
                "invalid value 0 ",
            ),
            (
                json!({"maxExpandedSize": -5}),
                vec![],
                "maxExpandedSize",
                "-5",
            ),
            (
                json!({"maxExpandedSize": 0.5}),
                vec![],
                "maxExpandedSize",
                "0.5",
            ),
            (
                json!({"maxExpandedSize": "32"}),
                vec![],
                "maxExpandedSize",
                "\"32\"",
            ),
            (
                json!({"maxExpandedSize": "1e400GiB"}),
                vec![],
                "maxExpandedSize",
                "1e400GiB",
            ),
            (
                json!({"maxExpandedSize": "99999999999TiB"}),
                vec![],
                "maxExpandedSize",
                "99999999999TiB",
            ),
            (
                json!({"maxExpandedSize": ["1GiB"]}),
                vec![],
                "maxExpandedSize",
                "an array",
            ),
            (
                json!({"maxExpansionRatio": 1_000_001}),
                vec![],
                "maxExpansionRatio",
                "1000001",
            ),
            (
                json!({"maxExpansionRatio": "0"}),
                vec![],
                "maxExpansionRatio",
                "\"0\"",
            ),
            // A bad variable is an error even when the option is fine.
            (
                json!({"maxArtifactEntries": 10}),
                vec![("NX_OPEN_CACHE_MAX_ARTIFACT_ENTRIES", "1e6")],
                "maxArtifactEntries",
                "\"1e6\"",
            ),
            (
                json!({}),
                vec![("NX_OPEN_CACHE_MAX_EXPANDED_SIZE", "1000")],
                "maxExpandedSize",
                "\"1000\"",
            ),
            (
                json!({}),
                vec![("NX_OPEN_CACHE_MAX_EXPANSION_RATIO", "-2")],
                "maxExpansionRatio",
                "\"-2\"",
            ),
        ];
        for (options, vars, option, shown) in cases {
            let err = resolve(&options, &env(&vars), ws()).unwrap_err();
            assert_eq!(err.option, option, "{options} {vars:?}");
            let (_, var, limit) = LIMIT_OPTIONS
                .iter()
                .find(|(n, _, _)| *n == option)
                .copied()
                .unwrap();
            assert!(
                err.message.contains(shown)
                    && err
                        .message
                        .contains(&format!("option \"{option}\" ({var})"))
                    && (err.message.ends_with(&limit.form())
                        || err.message.ends_with(&limit.text_form())),
                "{options} {vars:?}: {}",
                err.message
            );
        }
        // What JSON cannot hold (`Infinity` from JavaScript) is named the same way.
        let err = non_finite_option("maxExpandedSize", "Infinity");
        assert_eq!(err.option, "maxExpandedSize");
        assert!(
            err.message.starts_with(
                "invalid value Infinity for option \"maxExpandedSize\" (NX_OPEN_CACHE_MAX_EXPANDED_SIZE): not a finite number; expected a size"
            ),
            "{}",
            err.message
        );
    }

    #[test]
    fn debug_flag() {
        let c = resolve(
            &json!({}),
            &env(&[("HOME", "/h"), ("NX_OPEN_CACHE_DEBUG", "1")]),
            ws(),
        )
        .unwrap();
        assert!(c.debug);
    }

    #[test]
    fn the_option_schema_is_what_resolve_does() {
        // Names are unique and every backend-specific option names real backends.
        for (i, o) in OPTIONS.iter().enumerate() {
            assert!(OPTIONS[..i].iter().all(|p| p.name != o.name), "{}", o.name);
            assert!(
                o.backends.iter().all(|b| BACKENDS.contains(b)),
                "{}",
                o.name
            );
            assert!(!o.description.is_empty(), "{}", o.name);
        }
        // The defaults are what resolve gives without options.
        let c = resolve(&json!({}), &env(&[("HOME", "/h")]), ws()).unwrap();
        let default_of = |name: &str| option(name).unwrap().default;
        let text = |name: &str| match default_of(name) {
            OptionDefault::Text(t) => t,
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(text("backend"), c.backend.name());
        assert_eq!(c.backend.location(), text("path").replace('~', "/h"));
        assert_eq!(text("localMode"), c.mode.as_str());
        let ci = resolve(&json!({}), &env(&[("CI", "1")]), ws()).unwrap();
        assert_eq!(text("ciMode"), ci.mode.as_str());
        let secs = |name: &str| crate::units::seconds(text(name)).unwrap();
        assert_eq!(secs("timeout"), c.timeouts.answer.as_secs_f64());
        assert_eq!(secs("connectTimeout"), c.timeouts.connect.as_secs_f64());
        for (name, _, limit) in LIMIT_OPTIONS {
            let v = match default_of(name) {
                OptionDefault::Whole(n) => n,
                OptionDefault::Text(t) => limit.parse_text(name, t).unwrap(),
                other => panic!("{name}: {other:?}"),
            };
            assert_eq!(v, limit.get(&c.limits), "{name}");
        }
        assert_eq!(default_of("forcePathStyle"), OptionDefault::Bool(false));
        assert_eq!(default_of("requireSignature"), OptionDefault::Bool(false));
        assert!(!c.seal.require_signature);
        // The variables the tables of resolve read are the schema's.
        for (name, var) in DURATION_OPTIONS {
            assert_eq!(option(name).unwrap().env, Some(var));
        }
        for (name, var, _) in LIMIT_OPTIONS {
            assert_eq!(option(name).unwrap().env, Some(var));
        }
        // Each option applies to the backends the schema says, and is refused elsewhere.
        let minimal = |backend: &str| match backend {
            "fs" => json!({"backend": "fs", "path": "/c"}),
            "s3" => json!({"backend": "s3", "bucket": "b"}),
            "gcs" => json!({"backend": "gcs", "bucket": "b"}),
            "azure" => json!({"backend": "azure", "container": "c"}),
            "http" => json!({"backend": "http", "url": "https://h"}),
            other => panic!("{other}"),
        };
        let sample = |o: &OptionSpec| match o.name {
            "backend" => None,
            "trustedKeys" => Some(json!([])),
            "readPrefixes" => Some(json!(["a"])),
            "url" => Some(json!("https://h")),
            "endpoint" => Some(json!("https://e")),
            "timeout" | "connectTimeout" => Some(json!("5s")),
            "maxExpandedSize" => Some(json!("1GiB")),
            "path" => Some(json!("/c")),
            "bucket" | "container" => Some(json!("b")),
            _ if !o.choices.is_empty() => Some(json!(o.choices[0])),
            _ => match o.json_type {
                JsonType::Boolean => Some(json!(false)),
                JsonType::Number => Some(json!(7)),
                _ => Some(json!("x")),
            },
        };
        for backend in BACKENDS {
            for o in OPTIONS {
                let Some(value) = sample(o) else { continue };
                let mut options = minimal(backend);
                options[o.name] = value;
                let r = resolve(&options, &env(&[]), ws());
                if o.applies_to(backend) {
                    assert!(r.is_ok(), "{options}: {r:?}");
                } else {
                    let err = r.unwrap_err();
                    assert_eq!(err.option, o.name, "{options}");
                    assert!(err.message.contains("does not apply"), "{}", err.message);
                }
            }
        }
        // Choices are what resolve accepts.
        assert_eq!(option("backend").unwrap().choices, BACKENDS);
        for mode in MODES {
            let c = resolve(&json!({"localMode": mode}), &env(&[]), ws()).unwrap();
            assert_eq!(c.mode.as_str(), *mode);
        }
    }

    #[test]
    fn unknown_variables_are_warned_about_with_the_closest_known_one() {
        let secret = "value-never-shown";
        let c = resolve(
            &Value::Null,
            &env(&[
                ("NX_OPEN_CACHE_TOKN", secret),
                ("NX_OPEN_CACHE_SERVR_LISTEN", secret),
                ("NX_OPEN_CACHE_REQUIRE_SIGNATRUE", secret),
                ("NX_OPEN_CACHE_ZQXJ", secret),
                ("NX_OPEN_CACHE_TEST_LARGE_MIB", "1"),
                ("NX_OPEN_CACHE_TOKEN", secret),
                ("NX_OTHER_THING", secret),
            ]),
            ws(),
        )
        .unwrap();
        assert_eq!(c.warnings.len(), 4, "{:#?}", c.warnings);
        let w = |name: &str| {
            c.warnings
                .iter()
                .find(|w| w.contains(&format!("variable {name} ")))
                .unwrap_or_else(|| panic!("no warning for {name}: {:#?}", c.warnings))
                .clone()
        };
        assert_eq!(
            w("NX_OPEN_CACHE_TOKN"),
            "unknown environment variable NX_OPEN_CACHE_TOKN (ignored): did you mean NX_OPEN_CACHE_TOKEN?"
        );
        assert!(
            w("NX_OPEN_CACHE_SERVR_LISTEN").ends_with("did you mean NX_OPEN_CACHE_SERVER_LISTEN?")
        );
        assert!(w("NX_OPEN_CACHE_REQUIRE_SIGNATRUE")
            .ends_with("did you mean NX_OPEN_CACHE_REQUIRE_SIGNATURE?"));
        // Far from every name: said so, without the whole list (some 40 names).
        assert_eq!(
            w("NX_OPEN_CACHE_ZQXJ"),
            "unknown environment variable NX_OPEN_CACHE_ZQXJ (ignored): no known variable is close \
             (the README lists them; `nx-open-cache config` shows what is in effect)"
        );
        assert!(c.warnings.iter().all(|w| !w.contains(secret)));
        // Every known variable is known: the options', the core's and lib/'s, serve's.
        let all: Vec<(String, String)> = known_vars()
            .into_iter()
            .map(|k| (k, String::new()))
            .collect();
        let e: HashMap<String, String> = all.into_iter().collect();
        assert!(unknown_var_warnings(&e).is_empty());
        for name in [
            "NX_OPEN_CACHE_SUMMARY",
            "NX_OPEN_CACHE_HISTORY",
            "NX_OPEN_CACHE_HISTORY_RUNS",
            "NX_OPEN_CACHE_HISTORY_MB",
            "NX_OPEN_CACHE_HOST",
            "NX_OPEN_CACHE_PROXY_URL",
            "NX_OPEN_CACHE_SERVER_TOKENS",
            "NX_OPEN_CACHE_SERVER_LISTEN",
            "NX_OPEN_CACHE_MODE",
            "NX_OPEN_CACHE_SIGNING_KEY",
        ] {
            assert!(known_vars().iter().any(|k| k == name), "{name}");
        }
    }

    #[test]
    fn an_unknown_option_names_the_closest_known_one() {
        let err = |o: Value| resolve(&o, &env(&[]), ws()).unwrap_err().message;
        assert!(
            err(json!({"trustedKey": []})).contains("unknown option \"trustedKey\" in the nx-open-cache plugin options (did you mean \"trustedKeys\"?)"),
            "{}",
            err(json!({"trustedKey": []}))
        );
        assert!(err(json!({"pth": "x"})).contains("(did you mean \"path\"?)"));
        assert!(err(json!({"localmode": "read-only"})).contains("(did you mean \"localMode\"?)"));
        assert!(err(json!({"requireSignatures": true}))
            .contains("(did you mean \"requireSignature\"?)"));
        let far = err(json!({"frobnicate": 1}));
        assert!(
            !far.contains("did you mean") && far.contains("known options: backend"),
            "{far}"
        );
    }

    #[test]
    fn edit_distance_counts_swaps_as_one() {
        assert_eq!(edit_distance("TOKEN", "TOKN"), 1);
        assert_eq!(edit_distance("TOKEN", "TOKNE"), 1);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(did_you_mean("X", ["HOST", "MODE"], ""), None);
        assert_eq!(did_you_mean(&"A".repeat(500), ["A"], ""), None);
    }

    #[test]
    fn a_signing_key_whose_public_key_is_not_trusted_is_a_warning_with_key_ids() {
        let (public, secret) = crate::seal::keys::generate_signing_key().unwrap();
        let (other, _) = crate::seal::keys::generate_signing_key().unwrap();
        let id = |k: &str| crate::seal::keys::public_key_id(k).unwrap();
        let signing = [("NX_OPEN_CACHE_SIGNING_KEY", secret.as_str())];
        let c = resolve(
            &json!({"path": "/c", "trustedKeys": [other]}),
            &env(&signing),
            ws(),
        )
        .unwrap();
        assert_eq!(c.warnings.len(), 1, "{:#?}", c.warnings);
        let w = &c.warnings[0];
        assert!(
            w.starts_with(&format!(
                "NX_OPEN_CACHE_SIGNING_KEY signs with key {}, but \"trustedKeys\" lists {}: other machines will refuse",
                id(&public),
                id(&other)
            )),
            "{w}"
        );
        assert!(!w.contains(secret.as_str()));
        let c = resolve(&json!({"path": "/c"}), &env(&signing), ws()).unwrap();
        assert!(
            c.warnings[0].contains("no machine checks signatures (\"trustedKeys\" is empty), so signing protects nothing"),
            "{:?}",
            c.warnings
        );
        let c = resolve(
            &json!({"path": "/c", "trustedKeys": [other, public], "requireSignature": true}),
            &env(&signing),
            ws(),
        )
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(
            c.seal.describe(),
            format!(
                "signs with key {}, trusts {}, {} (requires signatures)",
                id(&public),
                id(&other),
                id(&public)
            )
        );
    }
}
