//! The `nx-open-cache serve` configuration: command-line options, then `NX_OPEN_CACHE_SERVER_*`
//! environment variables, then a config file (TOML or JSON), then defaults — the first source that
//! sets an option wins. Tokens are the exception: those of every source are used together (names
//! must be unique), and their secrets only ever come from the environment or from files.
//!
//! Every mistake names the option (as it was spelled in its source), the bad value and what is
//! allowed.
//!
//! The sources: the command line is parsed by clap (built from [`OPTIONS`]); the file is read
//! through serde (`toml` / `serde_json`) into a map. Two parts stay by hand: the environment (clap's
//! `env` feature reads the process environment, while [`resolve`] takes it as a map: the addon
//! passes `process.env` from JavaScript, tests their own) and the checks of each value (every
//! message names the source the value came from, which a derived parser cannot know).
//!
//! [`resolve`] goes through named stages: [`Sources::read`] (layering), [`storage`],
//! [`listen_and_tls`], [`upload_limits`], [`artifact_check`], [`retention`], [`log_format`],
//! [`tokens`].

use crate::archive::limits::Limit;
use crate::config::Backend;
use crate::key::Prefix;
use crate::server::auth::{Role, TokenSpec, ROLES};
use crate::server::LogFormat;
use crate::store::fs::Durability;
use crate::units::{DURATION_FORM, SIZE_FORM};
use crate::value::{bool_word, describe_json, one_of, ConfigError};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Prefix of the environment variables.
pub const ENV_PREFIX: &str = "NX_OPEN_CACHE_SERVER_";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";

/// One option: its name in the config file; the CLI flag is `--` + the name with `-`, the env var
/// [`ENV_PREFIX`] + the name upper-cased.
struct OptionSpec {
    key: &'static str,
    /// A switch (`--allow-anonymous`) takes no value on the command line (`--switch=false` works).
    switch: bool,
}

const fn opt(key: &'static str) -> OptionSpec {
    OptionSpec { key, switch: false }
}

const fn switch(key: &'static str) -> OptionSpec {
    OptionSpec { key, switch: true }
}

const OPTIONS: &[OptionSpec] = &[
    opt("storage"),
    switch("require_ready"),
    opt("listen"),
    opt("tls_cert"),
    opt("tls_key"),
    opt("tokens_file"),
    switch("allow_anonymous"),
    switch("ui_anonymous"),
    opt("max_artifact_size"),
    opt("upload_timeout"),
    opt("max_concurrent_uploads"),
    opt("max_connections"),
    opt("max_untrusted_connections"),
    opt("check_artifacts"),
    opt("max_artifact_entries"),
    opt("max_expanded_size"),
    opt("max_expansion_ratio"),
    opt("max_size"),
    opt("max_age"),
    opt("durability"),
    opt("log"),
    opt("s3_region"),
    opt("s3_endpoint"),
    switch("s3_force_path_style"),
    opt("az_account"),
    opt("az_endpoint"),
];

/// Keys a config file may hold besides [`OPTIONS`].
const FILE_ONLY_KEYS: &[&str] = &["tokens", "oidc_issuers", "oidc_rules"];
/// Keys of one `[[tokens]]` entry.
const TOKEN_KEYS: &[&str] = &[
    "name",
    "role",
    "secret_env",
    "secret_file",
    "write_prefix",
    "read_prefixes",
];
/// `--check-artifacts` values.
const CHECKS: &[&str] = &["on", "uploads", "off"];

fn flag(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

/// Every `NX_OPEN_CACHE_SERVER_*` variable `serve` reads (the plugin's check of unknown
/// `NX_OPEN_CACHE_*` variables, `crate::config::known_vars`, knows them from here).
pub fn env_names() -> Vec<String> {
    let mut names: Vec<String> = OPTIONS.iter().map(|o| env_name(o.key)).collect();
    names.extend(["TOKENS", "CONFIG"].map(|k| format!("{ENV_PREFIX}{k}")));
    names
}

/// A mistake that is not one option's (e.g. no token at all).
fn fail(message: impl Into<String>) -> ConfigError {
    ConfigError::new("", message)
}

fn err<T>(message: impl Into<String>) -> Result<T, ConfigError> {
    Err(fail(message))
}

/// A list of tokens in the simple form `name:role:secret[,...]`, and where it came from (for
/// error messages; never the secrets).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenList {
    pub source: String,
    pub text: String,
}

impl fmt::Debug for TokenList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenList({}, <redacted>)", self.source)
    }
}

/// The resolved `serve` configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    pub backend: Backend,
    pub prefix: Prefix,
    /// The storage as the user wrote it (for the startup line), e.g. `s3://cache/nx`.
    pub storage: String,
    /// Refuse to start when the storage is not ready (else a warning at start).
    pub require_ready: bool,
    pub listen: SocketAddr,
    /// PEM certificate chain and private key.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Tokens of the config file's `[[tokens]]` tables, their secrets read and checked.
    pub tokens: Vec<TokenSpec>,
    /// Tokens in the simple form (env `NX_OPEN_CACHE_SERVER_TOKENS`, `--tokens-file`).
    pub token_lists: Vec<TokenList>,
    /// OIDC issuers and rules (`[[oidc_issuers]]`, `[[oidc_rules]]` of the config file).
    pub oidc: Option<crate::server::oidc::OidcConfig>,
    pub allow_anonymous: bool,
    /// Requests without a token may see the dashboard (`/ui` and its API).
    pub ui_anonymous: bool,
    /// Upload limits; `None`: the server's defaults.
    pub max_artifact_size: Option<u64>,
    pub upload_timeout: Option<Duration>,
    pub max_concurrent_uploads: Option<usize>,
    /// Connection caps; `None`: the server's defaults (derived from the descriptor limit).
    pub max_connections: Option<usize>,
    pub max_untrusted_connections: Option<usize>,
    /// What is checked to be a valid Nx artifact (uploads, reads) and the check's bounds.
    pub validation: crate::store::validate::ValidationPolicy,
    /// Retention (fs storage only): total size and age limits.
    pub max_size: Option<u64>,
    pub max_age: Option<Duration>,
    /// What an fs upload's 200 promises about a machine crash (`--durability`).
    pub durability: Durability,
    /// `--log text` is [`LogFormat::Debug`]: one human line per request.
    pub log: LogFormat,
}

/// A raw option value and where it was found (`--listen`, `NX_OPEN_CACHE_SERVER_LISTEN`, `"listen"
/// in server.toml`).
#[derive(Debug, Clone)]
struct Raw {
    origin: String,
    value: Value,
}

impl Raw {
    fn error(&self, message: String) -> ConfigError {
        ConfigError::new(self.origin.clone(), message)
    }

    fn string(&self) -> Result<String, ConfigError> {
        match &self.value {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(self.error(format!(
                "{} must be a string, got {}",
                self.origin,
                describe_json(other)
            ))),
        }
    }

    fn bool(&self) -> Result<bool, ConfigError> {
        match &self.value {
            Value::Bool(b) => Ok(*b),
            Value::String(s) if s.trim().is_empty() => Ok(false),
            Value::String(s) => bool_word(s).ok_or_else(|| {
                self.error(format!(
                    "invalid value {s:?} for {}: expected true or false",
                    self.origin
                ))
            }),
            other => Err(self.error(format!(
                "{} must be true or false, got {}",
                self.origin,
                describe_json(other)
            ))),
        }
    }

    fn invalid<T>(&self, value: &str, allowed: &str) -> Result<T, ConfigError> {
        Err(self.error(format!(
            "invalid value {value:?} for {}: expected {allowed}",
            self.origin
        )))
    }
}

fn allowed_flags() -> String {
    let mut flags: Vec<String> = OPTIONS.iter().map(|o| flag(o.key)).collect();
    flags.push("--config".into());
    flags.push("--help".into());
    flags.join(", ")
}

/// The command line's parser: one clap argument per option (`--name value`, `--name=value`;
/// a switch alone means true), plus `--config`.
fn command() -> clap::Command {
    let mut cmd = clap::Command::new("nx-open-cache serve")
        .no_binary_name(true)
        .disable_help_flag(true)
        .disable_version_flag(true);
    for o in OPTIONS {
        let name = flag(o.key);
        let mut arg = clap::Arg::new(o.key)
            .long(name[2..].to_owned())
            .action(clap::ArgAction::Set)
            // `--max-connections -5` is a bad count (named as such), not an unknown option.
            .allow_negative_numbers(true);
        if o.switch {
            arg = arg
                .num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true");
        }
        cmd = cmd.arg(arg);
    }
    cmd.arg(
        clap::Arg::new("config")
            .long("config")
            .action(clap::ArgAction::Set),
    )
}

/// What clap refused, in this module's words (the option and what the options are).
fn command_line_error(e: &clap::Error) -> ConfigError {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.split(' ').next().unwrap_or("").to_owned(),
        _ => String::new(),
    };
    match e.kind() {
        ErrorKind::UnknownArgument if arg.starts_with("--") => {
            let name = arg.split('=').next().unwrap_or(&arg);
            fail(format!(
                "unknown option {name}; the options are: {}",
                allowed_flags()
            ))
        }
        ErrorKind::UnknownArgument => fail(format!(
            "unexpected argument {arg:?}: options start with -- ({})",
            allowed_flags()
        )),
        ErrorKind::ArgumentConflict => {
            ConfigError::new(arg.clone(), format!("option {arg} is given twice"))
        }
        ErrorKind::InvalidValue | ErrorKind::NoEquals => {
            ConfigError::new(arg.clone(), format!("option {arg} needs a value"))
        }
        _ => {
            // Other refusals: clap's own first line, without its "error: " prefix.
            let text = e.render().to_string();
            let line = text
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("error: ");
            fail(format!("{line}; the options are: {}", allowed_flags()))
        }
    }
}

/// Command-line options by config key, plus the `--config` file.
fn parse_args(
    args: &[String],
) -> Result<(HashMap<&'static str, Raw>, Option<String>), ConfigError> {
    for arg in args {
        let name = arg.split('=').next().unwrap_or(arg);
        if name == "--tokens" || name == "--token" {
            return err(format!(
                "{name} is not an option: secrets are never given on the command line; use the \
                 environment variable {ENV_PREFIX}TOKENS, --tokens-file <file> or [[tokens]] in the \
                 config file"
            ));
        }
    }
    let matches = command()
        .try_get_matches_from(args)
        .map_err(|e| command_line_error(&e))?;
    let mut found = HashMap::new();
    for o in OPTIONS {
        if let Some(v) = matches.get_one::<String>(o.key) {
            found.insert(
                o.key,
                Raw {
                    origin: flag(o.key),
                    value: Value::String(v.clone()),
                },
            );
        }
    }
    Ok((found, matches.get_one::<String>("config").cloned()))
}

/// The environment's `NX_OPEN_CACHE_SERVER_*` options; an unknown one is an error (a typo would
/// otherwise be silently ignored).
fn parse_env(env: &HashMap<String, String>) -> Result<HashMap<&'static str, Raw>, ConfigError> {
    let mut found = HashMap::new();
    let mut names: Vec<&String> = env.keys().filter(|k| k.starts_with(ENV_PREFIX)).collect();
    names.sort();
    for name in names {
        let value = &env[name];
        if value.is_empty()
            || name == &format!("{ENV_PREFIX}TOKENS")
            || name == &format!("{ENV_PREFIX}CONFIG")
        {
            continue;
        }
        let Some(spec) = OPTIONS.iter().find(|o| &env_name(o.key) == name) else {
            let known = env_names();
            let close =
                crate::config::did_you_mean(name, known.iter().map(String::as_str), ENV_PREFIX);
            return Err(ConfigError::new(
                name.clone(),
                match close {
                    Some(close) => {
                        format!("unknown environment variable {name}: did you mean {close}?")
                    }
                    None => format!(
                        "unknown environment variable {name}; the known ones are: {}",
                        known.join(", ")
                    ),
                },
            ));
        };
        found.insert(
            spec.key,
            Raw {
                origin: name.clone(),
                value: Value::String(value.clone()),
            },
        );
    }
    Ok(found)
}

/// Options by config key, and the raw tables of a config file's arrays (`[[tokens]]`,
/// `[[oidc_issuers]]`, `[[oidc_rules]]`) by key.
type FileContents = (
    HashMap<&'static str, Raw>,
    HashMap<&'static str, Vec<serde_json::Map<String, Value>>>,
);

/// Reads a TOML or JSON config file into its options and its `[[tokens]]` entries.
fn read_file(path: &Path) -> Result<FileContents, ConfigError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(format!("cannot read config file {shown}: {e}")))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    let value: Value = match ext.as_deref() {
        Some("toml") => {
            let table: toml::Table = toml::from_str(&text)
                .map_err(|e| fail(format!("config file {shown} is not valid TOML: {e}")))?;
            serde_json::to_value(table)
                .map_err(|e| fail(format!("config file {shown}: unsupported TOML value: {e}")))?
        }
        Some("json") => serde_json::from_str(&text)
            .map_err(|e| fail(format!("config file {shown} is not valid JSON: {e}")))?,
        _ => {
            return err(format!(
                "config file {shown}: unknown format; the file name must end in .toml or .json"
            ))
        }
    };
    let Value::Object(map) = value else {
        return err(format!(
            "config file {shown} must hold a table/object of options, got {}",
            describe_json(&value)
        ));
    };
    let mut found = HashMap::new();
    let mut tables: HashMap<&'static str, Vec<serde_json::Map<String, Value>>> = HashMap::new();
    for (key, value) in map {
        if let Some(table) = FILE_ONLY_KEYS.iter().find(|k| **k == key) {
            let Value::Array(items) = value else {
                return err(format!(
                    "\"{key}\" in {shown} must be an array of tables ([[{key}]]), got {}",
                    describe_json(&value)
                ));
            };
            let list = tables.entry(table).or_default();
            for (i, item) in items.into_iter().enumerate() {
                let Value::Object(t) = item else {
                    return err(format!(
                        "{key}[{i}] in {shown} must be a table/object, got {}",
                        describe_json(&item)
                    ));
                };
                list.push(t);
            }
            continue;
        }
        let Some(spec) = OPTIONS.iter().find(|o| o.key == key) else {
            let mut known: Vec<&str> = OPTIONS.iter().map(|o| o.key).collect();
            known.extend(FILE_ONLY_KEYS);
            let hint = if key == "secret" || key == "token" {
                " (secrets are never read from the config file)"
            } else {
                ""
            };
            return err(format!(
                "unknown key \"{key}\" in config file {shown}{hint}; the allowed keys are: {}",
                known.join(", ")
            ));
        };
        found.insert(
            spec.key,
            Raw {
                origin: format!("\"{key}\" in {shown}"),
                value,
            },
        );
    }
    Ok((found, tables))
}

/// The three sources of the options, layered: command line, environment, config file.
struct Sources<'a> {
    cli: HashMap<&'static str, Raw>,
    env_options: HashMap<&'static str, Raw>,
    file: HashMap<&'static str, Raw>,
    /// The config file (absolute), if any.
    config_file: Option<PathBuf>,
    /// The config file's `[[tokens]]`, `[[oidc_issuers]]` and `[[oidc_rules]]` tables.
    file_tables: HashMap<&'static str, Vec<serde_json::Map<String, Value>>>,
    env: &'a HashMap<String, String>,
    cwd: &'a Path,
}

impl<'a> Sources<'a> {
    /// Parses the command line and the environment, then reads the config file they name.
    fn read(
        args: &[String],
        env: &'a HashMap<String, String>,
        cwd: &'a Path,
    ) -> Result<Self, ConfigError> {
        let (cli, config_arg) = parse_args(args)?;
        let env_options = parse_env(env)?;
        let config_file = config_arg
            .or_else(|| {
                env.get(&format!("{ENV_PREFIX}CONFIG"))
                    .filter(|v| !v.is_empty())
                    .cloned()
            })
            .map(|f| absolute(cwd, Path::new(&f)));
        let (file, file_tables) = match &config_file {
            Some(f) => read_file(f)?,
            None => (HashMap::new(), HashMap::new()),
        };
        Ok(Sources {
            cli,
            env_options,
            file,
            config_file,
            file_tables,
            env,
            cwd,
        })
    }

    /// The config file's tables of the array `key` (`[[key]]`).
    fn table(&self, key: &str) -> &[serde_json::Map<String, Value>] {
        self.file_tables.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The value of `key` from the first source that sets it.
    fn pick(&self, key: &str) -> Option<&Raw> {
        self.cli
            .get(key)
            .or_else(|| self.env_options.get(key))
            .or_else(|| self.file.get(key))
    }

    /// The directory the config file's relative paths are taken from.
    fn file_base(&self) -> PathBuf {
        self.config_file
            .as_ref()
            .and_then(|f| f.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| self.cwd.to_path_buf())
    }

    /// Where a relative path of `key` is taken from: the file's directory when the file set it.
    fn base_of(&self, key: &str) -> PathBuf {
        if self.cli.contains_key(key) || self.env_options.contains_key(key) {
            self.cwd.to_path_buf()
        } else {
            self.file_base()
        }
    }

    fn path_of(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        let Some(raw) = self.pick(key) else {
            return Ok(None);
        };
        let s = raw.string()?;
        if s.is_empty() {
            return raw.invalid(&s, "a file path");
        }
        Ok(Some(absolute(&self.base_of(key), Path::new(&s))))
    }

    fn string_of(&self, key: &str) -> Result<Option<String>, ConfigError> {
        self.pick(key)
            .map(Raw::string)
            .transpose()
            .map(|o| o.filter(|s| !s.is_empty()))
    }

    fn bool_of(&self, key: &str) -> Result<bool, ConfigError> {
        self.pick(key)
            .map(Raw::bool)
            .transpose()
            .map(|o| o.unwrap_or(false))
    }

    fn url_of(&self, key: &str) -> Result<Option<String>, ConfigError> {
        let Some(v) = self.string_of(key)? else {
            return Ok(None);
        };
        let ok = (v.starts_with("http://") || v.starts_with("https://"))
            && !v.contains(char::is_whitespace)
            && !v.contains('?');
        match self.pick(key) {
            Some(raw) if !ok => raw.invalid(&v, "an http:// or https:// URL"),
            _ => Ok(Some(v.trim_end_matches('/').to_owned())),
        }
    }

    fn size_of(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        let Some(raw) = self.pick(key) else {
            return Ok(None);
        };
        let s = raw.string()?;
        match crate::units::parse_size(&raw.origin, &s) {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => raw.invalid(&s, SIZE_FORM),
        }
    }

    fn duration_of(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        let Some(raw) = self.pick(key) else {
            return Ok(None);
        };
        let s = raw.string()?;
        match crate::units::parse_duration(&raw.origin, &s) {
            Ok(d) if !d.is_zero() => Ok(Some(d)),
            _ => raw.invalid(&s, DURATION_FORM),
        }
    }

    fn count_of(&self, key: &str) -> Result<Option<usize>, ConfigError> {
        let Some(raw) = self.pick(key) else {
            return Ok(None);
        };
        let s = raw.string()?;
        match s.trim().parse::<usize>() {
            Ok(n) if (1..=100_000).contains(&n) => Ok(Some(n)),
            _ => raw.invalid(&s, "a whole number from 1 to 100000"),
        }
    }
}

fn absolute(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// `fs:/path`, `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`.
fn parse_storage(
    raw: &Raw,
    cwd: &Path,
    home: Option<&str>,
) -> Result<(String, Option<String>, String, Prefix), ConfigError> {
    const ALLOWED: &str =
        "fs:/path, s3://bucket[/prefix], gs://bucket[/prefix] or az://container[/prefix]";
    let text = raw.string()?;
    if let Some(path) = text.strip_prefix("fs:") {
        if path.is_empty() || path.contains('\0') {
            return raw.invalid(&text, &format!("{ALLOWED} (fs: needs a directory)"));
        }
        let abs = match (path.strip_prefix("~/"), home) {
            (Some(rest), Some(home)) => Path::new(home).join(rest),
            (Some(_), None) => {
                return Err(raw.error(format!(
                    "{} is {text:?} but HOME is not set to expand \"~\"",
                    raw.origin
                )))
            }
            _ => absolute(cwd, Path::new(path)),
        };
        return Ok((
            "fs".into(),
            None,
            abs.display().to_string(),
            Prefix::default(),
        ));
    }
    let (scheme, rest) = match text.split_once("://") {
        Some((s @ ("s3" | "gs" | "az"), rest)) => (s, rest),
        _ => return raw.invalid(&text, ALLOWED),
    };
    let (bucket, prefix) = match rest.split_once('/') {
        Some((b, p)) => (b, p),
        None => (rest, ""),
    };
    if bucket.is_empty()
        || bucket.len() > 222
        || !bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return raw.invalid(
            &text,
            &format!("{ALLOWED}, the bucket/container name made of ASCII letters, digits, '.', '-' and '_'"),
        );
    }
    let prefix = Prefix::parse(prefix).map_err(|e| {
        raw.error(format!(
            "invalid prefix {:?} in {} {text:?}: {}",
            e.value, raw.origin, e.reason
        ))
    })?;
    Ok((scheme.into(), Some(bucket.into()), String::new(), prefix))
}

/// The storage: the backend, the prefix inside it and the text the user wrote. Options of another
/// cloud than the storage's are refused by name.
fn storage(sources: &Sources) -> Result<(Backend, Prefix, String), ConfigError> {
    let Some(raw) = sources.pick("storage") else {
        return Err(ConfigError::new(
            "--storage",
            format!(
                "no storage: give --storage (or {ENV_PREFIX}STORAGE, or \"storage\" in the config \
                 file) as fs:/path, s3://bucket[/prefix], gs://bucket[/prefix] or \
                 az://container[/prefix]"
            ),
        ));
    };
    let text = raw.string()?;
    let home = sources
        .env
        .get("HOME")
        .map(String::as_str)
        .filter(|h| !h.is_empty());
    let (scheme, bucket, fs_path, prefix) = parse_storage(raw, &sources.base_of("storage"), home)?;
    for (keys, needed) in [
        (
            &["s3_region", "s3_endpoint", "s3_force_path_style"][..],
            "s3",
        ),
        (&["az_account", "az_endpoint"][..], "az"),
    ] {
        for key in keys {
            match sources.pick(key) {
                Some(other) if scheme != needed => {
                    return Err(other.error(format!(
                        "{} applies only to {needed}:// storage, but the storage is {text}",
                        other.origin
                    )))
                }
                _ => {}
            }
        }
    }
    let bucket = bucket.unwrap_or_default();
    let backend = match scheme.as_str() {
        "fs" => Backend::Fs {
            path: PathBuf::from(fs_path),
        },
        "s3" => Backend::S3 {
            bucket,
            region: sources.string_of("s3_region")?,
            endpoint: sources.url_of("s3_endpoint")?,
            force_path_style: sources.bool_of("s3_force_path_style")?,
        },
        "gs" => Backend::Gcs { bucket },
        _ => Backend::Azure {
            container: bucket,
            account_name: sources.string_of("az_account")?,
            endpoint: sources.url_of("az_endpoint")?,
        },
    };
    Ok((backend, prefix, text))
}

/// The address to listen on and the TLS files (both or neither).
fn listen_and_tls(
    sources: &Sources,
) -> Result<(SocketAddr, Option<(PathBuf, PathBuf)>), ConfigError> {
    let listen =
        match sources.pick("listen") {
            None => DEFAULT_LISTEN.parse().map_err(|e| fail(format!("{e}")))?,
            Some(raw) => {
                let s = raw.string()?;
                match s.parse::<SocketAddr>() {
                    Ok(a) => a,
                    Err(_) => return raw.invalid(
                        &s,
                        "an IP address and port such as 127.0.0.1:3000, 0.0.0.0:3000 or [::]:3000",
                    ),
                }
            }
        };
    let tls = match (sources.path_of("tls_cert")?, sources.path_of("tls_key")?) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::new(
                "--tls-key",
                "--tls-cert is given without --tls-key: TLS needs both PEM files",
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "--tls-cert",
                "--tls-key is given without --tls-cert: TLS needs both PEM files",
            ))
        }
    };
    Ok((listen, tls))
}

/// Upload and connection limits; `None`: the server's defaults.
struct UploadLimits {
    max_artifact_size: Option<u64>,
    upload_timeout: Option<Duration>,
    max_concurrent_uploads: Option<usize>,
    max_connections: Option<usize>,
    max_untrusted_connections: Option<usize>,
}

fn upload_limits(sources: &Sources) -> Result<UploadLimits, ConfigError> {
    Ok(UploadLimits {
        max_artifact_size: sources.size_of("max_artifact_size")?,
        upload_timeout: sources.duration_of("upload_timeout")?,
        max_concurrent_uploads: sources.count_of("max_concurrent_uploads")?,
        max_connections: sources.count_of("max_connections")?,
        max_untrusted_connections: sources.count_of("max_untrusted_connections")?,
    })
}

/// What is checked (`check_artifacts`) and the check's bounds, parsed as the plugin parses its own
/// (`crate::archive::limits`).
fn artifact_check(
    sources: &Sources,
) -> Result<crate::store::validate::ValidationPolicy, ConfigError> {
    let mut limits = crate::archive::ValidationLimits::default();
    for (key, limit) in [
        ("max_artifact_entries", Limit::Entries),
        ("max_expanded_size", Limit::ExpandedSize),
        ("max_expansion_ratio", Limit::ExpansionRatio),
    ] {
        if let Some(raw) = sources.pick(key) {
            let value = limit
                .parse_text(&raw.origin, &raw.string()?)
                .map_err(|m| raw.error(m))?;
            limit.set(&mut limits, value);
        }
    }
    let mut validation = crate::store::validate::ValidationPolicy::server(limits);
    if let Some(raw) = sources.pick("check_artifacts") {
        match raw.string()?.as_str() {
            "on" => {}
            "uploads" => validation.on_get = false,
            "off" => (validation.on_get, validation.on_put) = (false, false),
            other => return raw.invalid(other, &one_of(CHECKS)),
        }
    }
    Ok(validation)
}

/// Retention limits (`max_size`, `max_age`): fs storage only.
fn retention(
    sources: &Sources,
    backend: &Backend,
) -> Result<(Option<u64>, Option<Duration>), ConfigError> {
    let max_size = sources.size_of("max_size")?;
    let max_age = sources.duration_of("max_age")?;
    if !matches!(backend, Backend::Fs { .. }) {
        let scheme = match backend {
            Backend::S3 { .. } => "s3",
            Backend::Gcs { .. } => "gs",
            _ => "az",
        };
        for key in ["max_size", "max_age"] {
            if let Some(raw) = sources.pick(key) {
                return Err(raw.error(format!(
                    "{} applies only to fs: storage; for {scheme}:// storage use the bucket's own \
                     lifecycle rule to expire old artifacts (see the README, section Retention)",
                    raw.origin
                )));
            }
        }
    }
    Ok((max_size, max_age))
}

/// `--durability`: `full` (the default), `data` or `none`; fs storage only (a cloud store
/// answers after the service has the object).
fn durability(sources: &Sources, backend: &Backend) -> Result<Durability, ConfigError> {
    let Some(raw) = sources.pick("durability") else {
        return Ok(Durability::default());
    };
    let s = raw.string()?;
    let names = Durability::ALL.map(Durability::as_str);
    let Some(mode) = Durability::parse(&s) else {
        return raw.invalid(&s, &one_of(&names));
    };
    if !matches!(backend, Backend::Fs { .. }) {
        return Err(raw.error(format!(
            "{} applies only to fs: storage (a cloud store answers once the service has the \
             object)",
            raw.origin
        )));
    }
    Ok(mode)
}

/// `--log`: `text` (the default), `json` or `off`.
fn log_format(sources: &Sources) -> Result<LogFormat, ConfigError> {
    match sources.pick("log") {
        None => Ok(LogFormat::Debug),
        Some(raw) => {
            let s = raw.string()?;
            LogFormat::from_serve_name(&s)
                .map_or_else(|| raw.invalid(&s, &one_of(LogFormat::SERVE_NAMES)), Ok)
        }
    }
}

fn parse_prefix(value: &Value, what: &str) -> Result<Prefix, ConfigError> {
    let Value::String(s) = value else {
        return err(format!(
            "{what} must be a string, got {}",
            describe_json(value)
        ));
    };
    Prefix::parse(s).map_err(|e| fail(format!("invalid value {s:?} for {what}: {}", e.reason)))
}

/// Reads a secret from a file: the first line, without surrounding whitespace.
fn read_secret_file(path: &Path, what: &str) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        fail(format!(
            "{what}: cannot read secret file {}: {e}",
            path.display()
        ))
    })?;
    let secret = text.lines().next().unwrap_or("").trim().to_owned();
    if secret.is_empty() {
        return err(format!("{what}: secret file {} is empty", path.display()));
    }
    Ok(secret)
}

/// One `[[tokens]]` table of the config file, its secret read (from `secret_env` or
/// `secret_file`) and checked.
fn token_entry(
    t: &serde_json::Map<String, Value>,
    index: usize,
    file: &Path,
    base: &Path,
    env: &HashMap<String, String>,
) -> Result<TokenSpec, ConfigError> {
    let shown = file.display();
    let at = format!("tokens[{index}] in {shown}");
    for key in t.keys() {
        if !TOKEN_KEYS.contains(&key.as_str()) {
            let hint = if key == "secret" {
                " (secrets are never written in the config file: use secret_env or secret_file)"
            } else {
                ""
            };
            return err(format!(
                "unknown key \"{key}\" in {at}{hint}; the allowed keys are: {}",
                TOKEN_KEYS.join(", ")
            ));
        }
    }
    let name = match t.get("name") {
        Some(Value::String(s)) if valid_name(s) => s.clone(),
        Some(v) => {
            return err(format!(
                "invalid \"name\" {} in {at}: expected ASCII letters, digits, '.', '_' or '-'",
                describe_json(v)
            ))
        }
        None => return err(format!("{at} has no \"name\"")),
    };
    let at = format!("token \"{name}\" in {shown}");
    let role = match t.get("role") {
        Some(Value::String(s)) => Role::parse(s).ok(),
        _ => None,
    };
    let role = match (role, t.get("role")) {
        (Some(r), _) => r,
        (None, Some(v)) => {
            return err(format!(
                "invalid \"role\" {} for {at}: expected {}",
                describe_json(v),
                ROLES
                    .iter()
                    .map(|r| format!("{r:?}"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ))
        }
        (None, None) => {
            return err(format!(
                "{at} has no \"role\" (\"read-write\", \"read-only\" or \"admin\")"
            ))
        }
    };
    let secret = match (t.get("secret_env"), t.get("secret_file")) {
        (Some(Value::String(var)), None) => match env.get(var).map(|s| s.trim()) {
            Some(s) if !s.is_empty() => s.to_owned(),
            _ => {
                return err(format!(
                    "{at}: its secret_env {var:?} is not set (or empty) in the environment"
                ))
            }
        },
        (None, Some(Value::String(f))) => read_secret_file(&absolute(base, Path::new(f)), &at)?,
        (None, None) => {
            return err(format!(
                "{at} needs its secret from secret_env (an environment variable name) or \
                 secret_file (a file holding it); secrets are never written in the config file"
            ))
        }
        (Some(_), Some(_)) => {
            return err(format!("{at}: give secret_env or secret_file, not both"))
        }
        (Some(v), None) | (None, Some(v)) => {
            return err(format!(
                "{at}: secret_env / secret_file must be a string, got {}",
                describe_json(v)
            ))
        }
    };
    crate::server::auth::check_secret(&name, &secret)
        .map_err(|e| fail(format!("{e} (in {shown})")))?;
    let (write_prefix, read_prefixes) = table_namespaces(t, &at)?;
    Ok(TokenSpec {
        name,
        role,
        secret,
        write_prefix,
        read_prefixes,
    })
}

/// A table's `write_prefix` (default: the store root) and `read_prefixes` (default:
/// `[write_prefix]`); `at` names the table in errors.
pub(super) fn table_namespaces(
    t: &serde_json::Map<String, Value>,
    at: &str,
) -> Result<(Prefix, Vec<Prefix>), ConfigError> {
    let write_prefix = match t.get("write_prefix") {
        None => Prefix::default(),
        Some(v) => parse_prefix(v, &format!("\"write_prefix\" of {at}"))?,
    };
    let read_prefixes = match t.get("read_prefixes") {
        None => vec![write_prefix.clone()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| parse_prefix(v, &format!("\"read_prefixes\" of {at}")))
            .collect::<Result<Vec<_>, _>>()?,
        Some(v) => {
            return err(format!(
                "\"read_prefixes\" of {at} must be a non-empty array of prefixes, got {}",
                describe_json(v)
            ))
        }
    };
    Ok((write_prefix, read_prefixes))
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The tokens: the config file's `[[tokens]]`, the simple lists (`NX_OPEN_CACHE_SERVER_TOKENS`,
/// `--tokens-file`), and whether anonymous reads are allowed. Starting with none of them is
/// refused.
fn tokens(sources: &Sources) -> Result<Tokens, ConfigError> {
    let mut tokens = Vec::new();
    if let Some(f) = &sources.config_file {
        let base = sources.file_base();
        for (i, t) in sources.table("tokens").iter().enumerate() {
            tokens.push(token_entry(t, i, f, &base, sources.env)?);
        }
    }
    let mut token_lists = Vec::new();
    if let Some(text) = sources
        .env
        .get(&format!("{ENV_PREFIX}TOKENS"))
        .filter(|v| !v.trim().is_empty())
    {
        token_lists.push(TokenList {
            source: format!("{ENV_PREFIX}TOKENS"),
            text: text.trim().to_owned(),
        });
    }
    if let Some(path) = sources.path_of("tokens_file")? {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            fail(format!(
                "cannot read the tokens file {}: {e}",
                path.display()
            ))
        })?;
        let entries: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        if entries.is_empty() {
            return err(format!(
                "the tokens file {} holds no token (expected lines of name:role:secret)",
                path.display()
            ));
        }
        token_lists.push(TokenList {
            source: format!("tokens file {}", path.display()),
            text: entries.join(","),
        });
    }
    let allow_anonymous = sources.bool_of("allow_anonymous")?;
    let oidc = match &sources.config_file {
        Some(f) => super::oidc::parse(
            sources.table("oidc_issuers"),
            sources.table("oidc_rules"),
            f,
            &sources.file_base(),
        )?,
        None => None,
    };
    if tokens.is_empty() && token_lists.is_empty() && oidc.is_none() && !allow_anonymous {
        return err(format!(
            "refusing to start without any access token: set {ENV_PREFIX}TOKENS (e.g. \
             ci:read-write:<secret>,dev:read-only:<secret>), give --tokens-file <file>, or add \
             [[tokens]] or [[oidc_issuers]] + [[oidc_rules]] to the config file; to serve \
             anonymous read-only access only, pass --allow-anonymous explicitly"
        ));
    }
    Ok(Tokens {
        tokens,
        token_lists,
        oidc,
        allow_anonymous,
    })
}

/// Who may connect: [`tokens`]'s result.
struct Tokens {
    tokens: Vec<TokenSpec>,
    token_lists: Vec<TokenList>,
    oidc: Option<crate::server::oidc::OidcConfig>,
    allow_anonymous: bool,
}

/// Where a server started with `args` and `env` can be reached from its own host: the
/// `http(s)://ip:port` of its listen address (command line > environment > config file >
/// default, as `serve` resolves it), an unspecified address (0.0.0.0, ::) replaced by loopback.
/// For `nx-open-cache-server healthcheck`, which a container runs with the image's environment.
pub fn local_url(
    args: &[String],
    env: &HashMap<String, String>,
    cwd: &Path,
) -> Result<String, ConfigError> {
    let sources = Sources::read(args, env, cwd)?;
    let (mut listen, tls) = listen_and_tls(&sources)?;
    if listen.ip().is_unspecified() {
        listen.set_ip(if listen.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    Ok(format!("{scheme}://{listen}"))
}

/// Resolves the configuration: `args` are the words after `serve`, `env` the process environment,
/// `cwd` the directory relative paths are taken from.
pub fn resolve(
    args: &[String],
    env: &HashMap<String, String>,
    cwd: &Path,
) -> Result<ServeConfig, ConfigError> {
    let sources = Sources::read(args, env, cwd)?;
    let (backend, prefix, storage) = storage(&sources)?;
    let (listen, tls) = listen_and_tls(&sources)?;
    let uploads = upload_limits(&sources)?;
    let validation = artifact_check(&sources)?;
    let (max_size, max_age) = retention(&sources, &backend)?;
    let durability = durability(&sources, &backend)?;
    let log = log_format(&sources)?;
    let Tokens {
        tokens,
        token_lists,
        oidc,
        allow_anonymous,
    } = tokens(&sources)?;
    let require_ready = sources.bool_of("require_ready")?;
    let ui_anonymous = sources.bool_of("ui_anonymous")?;
    Ok(ServeConfig {
        backend,
        prefix,
        storage,
        require_ready,
        listen,
        tls,
        tokens,
        token_lists,
        oidc,
        allow_anonymous,
        ui_anonymous,
        max_artifact_size: uploads.max_artifact_size,
        upload_timeout: uploads.upload_timeout,
        max_concurrent_uploads: uploads.max_concurrent_uploads,
        max_connections: uploads.max_connections,
        max_untrusted_connections: uploads.max_untrusted_connections,
        validation,
        max_size,
        max_age,
        durability,
        log,
    })
}

/// The `serve --help` text: every option, its environment variable and config-file key.
pub fn help() -> String {
    format!(
        "Usage: nx-open-cache serve --storage <url> [options]

Runs an Nx remote-cache server (Nx's self-hosted cache protocol). Nx clients connect with
  NX_SELF_HOSTED_REMOTE_CACHE_SERVER=<url>  NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN=<secret>

Every option can also be set as an environment variable and in the config file:
precedence is command line > environment > config file > default.

  option                       env (NX_OPEN_CACHE_SERVER_...)  config-file key
  --config <file.toml|.json>   CONFIG                          -
      A TOML or JSON file with the options below (keys as in the third column) and
      [[tokens]] tables. Relative paths in it are taken from the file's directory.
  --storage <url>              STORAGE                         storage
      Where artifacts are kept (required): fs:/path, s3://bucket[/prefix],
      gs://bucket[/prefix], az://container[/prefix]. Cloud credentials come from the
      standard environment (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*).
  --require-ready              REQUIRE_READY=true              require_ready = true
      The storage is probed at start as /readyz probes it. When it is not ready
      (missing bucket, rejected credentials, unwritable directory), serve prints a
      warning with the reason and starts anyway (/readyz answers 503 until it is);
      with this option it refuses to start (exit 1) instead.
  --listen <ip:port>           LISTEN                          listen
      Address to listen on (default {DEFAULT_LISTEN}; use 0.0.0.0:3000 in a container).
  --tls-cert <file.pem>        TLS_CERT                        tls_cert
  --tls-key <file.pem>         TLS_KEY                         tls_key
      Serve HTTPS with this PEM certificate chain and private key (both or neither).
  --tokens-file <file>         TOKENS_FILE                     tokens_file
      A file with one token per line: name:role:secret (role read-write, read-only
      or admin: admin tokens open the dashboard /ui and nothing of the cache).
  (no flag: secrets are never   TOKENS                          [[tokens]]
   given on the command line)
      TOKENS is a comma-separated list of name:role:secret. A [[tokens]] table has
      name, role, secret_env (an env var holding the secret) or secret_file, and
      optionally write_prefix (where its uploads go) and read_prefixes (where its
      downloads are looked up, in order; default [write_prefix]).
      Tokens of all sources are used together; names must be unique.
  --allow-anonymous            ALLOW_ANONYMOUS=true            allow_anonymous = true
      Requests without a token may read (never write). Without any token, starting
      requires this option.
  --ui-anonymous               UI_ANONYMOUS=true               ui_anonymous = true
      Requests without a token may see the dashboard (/ui: counts, token and task
      names, hashes; never an artifact or a secret). Off: it needs an admin token.
  --max-artifact-size <size>   MAX_ARTIFACT_SIZE               max_artifact_size
      Largest accepted upload (default 4GiB); larger is refused with 413.
  --upload-timeout <duration>  UPLOAD_TIMEOUT                  upload_timeout
      An upload taking longer is abandoned, nothing stored (default 10m).
  --max-concurrent-uploads <n> MAX_CONCURRENT_UPLOADS          max_concurrent_uploads
      Uploads beyond this many at once get 503 with Retry-After (default 64).
  --max-connections <n>        MAX_CONNECTIONS                 max_connections
      Connections open at once (default 4096, and always below what the file-descriptor
      limit allows); the longest idle one is closed to make room for a new one.
  --max-untrusted-connections <n>  MAX_UNTRUSTED_CONNECTIONS  max_untrusted_connections
      Of those, connections that have not presented a valid token (new ones, anonymous
      readers, refused clients; default half of --max-connections).
  --check-artifacts <on|uploads|off> CHECK_ARTIFACTS       check_artifacts
      Every upload and every object read is checked to be a valid Nx artifact
      (default on): an upload that fails gets 400 with the reason, an object that
      fails is a miss and is removed. `uploads`: only uploads (when this server is
      the only writer of its storage); `off`: nothing (Nx may then fail on what it
      reads).
  --max-artifact-entries <n>   MAX_ARTIFACT_ENTRIES            max_artifact_entries
  --max-expanded-size <size>   MAX_EXPANDED_SIZE               max_expanded_size
  --max-expansion-ratio <n>    MAX_EXPANSION_RATIO             max_expansion_ratio
      Bounds of that check: at most this many entries (default 1000000), inflating
      to at most this size (default 32GiB) and to at most this many times its
      compressed size once above 256MiB (default 200).
  --max-size <size>            MAX_SIZE                        max_size
  --max-age <duration>         MAX_AGE                         max_age
      Retention for fs: storage: least recently used artifacts are removed in the
      background above this total size / after this long without access. For cloud
      storage use a bucket lifecycle rule instead.
  --durability <full|data|none> DURABILITY                   durability
      fs: storage: what an upload's 200 promises if the machine crashes (power loss,
      kernel panic). full (default): the artifact and its name are on disk first.
      data: the artifact is on disk before it is published, its name may be lost.
      none: nothing is forced to disk; the last ~30 s of uploads may be lost, and an
      artifact cut short is never served (it reads as a miss). See docs/serve.md.
  --log <text|json|off>        LOG                             log
      Request log on stderr (default text).
  --s3-region <region>         S3_REGION                       s3_region
  --s3-endpoint <url>          S3_ENDPOINT                     s3_endpoint
  --s3-force-path-style        S3_FORCE_PATH_STYLE=true        s3_force_path_style = true
      S3 and S3-compatible stores (MinIO, R2, Ceph...); defaults from AWS_REGION,
      AWS_ENDPOINT_URL.
  --az-account <name>          AZ_ACCOUNT                      az_account
  --az-endpoint <url>          AZ_ENDPOINT                     az_endpoint
      Azure storage account and blob endpoint (defaults from AZURE_STORAGE_*).

Sizes: a number with B, KB, MB, GB, TB, KiB, MiB, GiB or TiB (e.g. 2GiB).
Durations: a number with s, m, h, d or w (e.g. 10m, 30d).

OIDC identity (recommended for CI): [[oidc_issuers]] (name, issuer, audience,
jwks_url | jwks_file, algorithms, clock_skew, max_lifetime) and [[oidc_rules]]
(name, issuer, claims, role, write_prefix, read_prefixes | deny) in the config
file map a CI job's signed token to a role and namespaces; see docs/serve.md.
  --explain-token <jwt|->
      Prints what this configuration does with the token (- reads it from stdin):
      each check and rule, and the access granted; never the token. Exits 0 when it
      is accepted, 1 when refused.

Endpoints: /v1/cache/<hash> (GET, PUT), /healthz, /readyz, /metrics, /openapi.json,
/ui (the dashboard, admin tokens), /nx-open-cache/v1/runs (run reports, POST).
Stops gracefully on SIGTERM or SIGINT: requests in flight finish first.
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn resolve_ok(a: &[&str], e: &[(&str, &str)]) -> ServeConfig {
        match resolve(&args(a), &env(e), Path::new("/work")) {
            Ok(c) => c,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn resolve_err(a: &[&str], e: &[(&str, &str)]) -> String {
        match resolve(&args(a), &env(e), Path::new("/work")) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    const TOKENS: (&str, &str) = (
        "NX_OPEN_CACHE_SERVER_TOKENS",
        "ci:read-write:0123456789abcdef",
    );

    #[test]
    fn defaults_and_storage_forms() {
        let c = resolve_ok(&["--storage", "fs:cache"], &[TOKENS]);
        assert_eq!(
            c.backend,
            Backend::Fs {
                path: PathBuf::from("/work/cache")
            }
        );
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.max_artifact_size, None);
        assert_eq!(c.upload_timeout, None);
        assert_eq!(c.max_concurrent_uploads, None);
        assert_eq!(c.log, LogFormat::Debug);
        assert!(c.tls.is_none());
        assert_eq!(c.token_lists.len(), 1);

        let c = resolve_ok(
            &[
                "--storage=s3://bucket-1/nx/ci",
                "--s3-endpoint",
                "http://127.0.0.1:9000",
                "--s3-force-path-style",
            ],
            &[TOKENS],
        );
        assert_eq!(
            c.backend,
            Backend::S3 {
                bucket: "bucket-1".into(),
                region: None,
                endpoint: Some("http://127.0.0.1:9000".into()),
                force_path_style: true
            }
        );
        assert_eq!(c.prefix.as_str(), "nx/ci");
        let c = resolve_ok(&["--storage", "fs:~/nx"], &[TOKENS, ("HOME", "/home/u")]);
        assert_eq!(
            c.backend,
            Backend::Fs {
                path: PathBuf::from("/home/u/nx")
            }
        );
        let c = resolve_ok(&["--storage", "gs://b"], &[TOKENS]);
        assert_eq!(c.backend, Backend::Gcs { bucket: "b".into() });
        assert!(c.prefix.is_empty());
        let c = resolve_ok(&["--storage", "az://cont/p"], &[TOKENS]);
        assert!(matches!(c.backend, Backend::Azure { ref container, .. } if container == "cont"));
    }

    #[test]
    fn bad_storage_names_option_value_and_forms() {
        for bad in [
            "/tmp/x",
            "http://x",
            "s3://",
            "s3://bad bucket",
            "fs:",
            "gcs://b",
        ] {
            let e = resolve_err(&["--storage", bad], &[TOKENS]);
            assert!(
                e.contains("--storage")
                    && e.contains(&format!("{bad:?}"))
                    && e.contains("s3://bucket"),
                "{e}"
            );
        }
        let e = resolve_err(&["--storage", "s3://b/../x"], &[TOKENS]);
        assert!(e.contains("prefix") && e.contains(".."), "{e}");
        let e = resolve_err(&[], &[TOKENS]);
        assert!(e.contains("--storage"), "{e}");
    }

    #[test]
    fn precedence_cli_env_file_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        std::fs::write(&file, "storage = \"fs:data\"\nlisten = \"127.0.0.1:1\"\nlog = \"json\"\nupload_timeout = \"1m\"\n").unwrap();
        let f = file.to_str().unwrap();
        let c = resolve_ok(
            &["--config", f, "--listen", "127.0.0.1:3"],
            &[
                TOKENS,
                ("NX_OPEN_CACHE_SERVER_LISTEN", "127.0.0.1:2"),
                ("NX_OPEN_CACHE_SERVER_LOG", "off"),
            ],
        );
        assert_eq!(c.listen.port(), 3);
        assert_eq!(c.log, LogFormat::Off);
        assert_eq!(c.upload_timeout, Some(Duration::from_secs(60)));
        // Relative paths of the file are taken from its directory.
        assert_eq!(
            c.backend,
            Backend::Fs {
                path: dir.path().join("data")
            }
        );
        let c = resolve_ok(
            &["--config", f],
            &[TOKENS, ("NX_OPEN_CACHE_SERVER_LISTEN", "127.0.0.1:2")],
        );
        assert_eq!(c.listen.port(), 2);
        let c = resolve_ok(&[], &[TOKENS, ("NX_OPEN_CACHE_SERVER_CONFIG", f)]);
        assert_eq!(c.listen.port(), 1);
        assert_eq!(c.log, LogFormat::Json);
    }

    #[test]
    fn an_unknown_serve_variable_names_the_closest_known_one() {
        let e = resolve_err(
            &["--storage", "fs:/d"],
            &[TOKENS, ("NX_OPEN_CACHE_SERVER_LISTN", "127.0.0.1:1")],
        );
        assert!(
            e.ends_with(
                "unknown environment variable NX_OPEN_CACHE_SERVER_LISTN: did you mean \
                 NX_OPEN_CACHE_SERVER_LISTEN?"
            ),
            "{e}"
        );
        let e = resolve_err(
            &["--storage", "fs:/d"],
            &[TOKENS, ("NX_OPEN_CACHE_SERVER_ZQXJ", "1")],
        );
        assert!(
            e.contains("the known ones are: ") && e.contains("NX_OPEN_CACHE_SERVER_TOKENS"),
            "{e}"
        );
    }

    #[test]
    fn require_ready_from_the_flag_the_environment_and_the_config_file() {
        assert!(!resolve_ok(&["--storage", "fs:/d"], &[TOKENS]).require_ready);
        assert!(resolve_ok(&["--storage", "fs:/d", "--require-ready"], &[TOKENS]).require_ready);
        let env = ("NX_OPEN_CACHE_SERVER_REQUIRE_READY", "true");
        assert!(resolve_ok(&["--storage", "fs:/d"], &[TOKENS, env]).require_ready);
        let c = resolve_ok(
            &["--storage", "fs:/d", "--require-ready=false"],
            &[TOKENS, env],
        );
        assert!(
            !c.require_ready,
            "the command line wins over the environment"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        std::fs::write(&file, "storage = \"fs:/d\"\nrequire_ready = true\n").unwrap();
        assert!(resolve_ok(&["--config", file.to_str().unwrap()], &[TOKENS]).require_ready);
        let e = resolve_err(
            &["--storage", "fs:/d"],
            &[TOKENS, ("NX_OPEN_CACHE_SERVER_REQUIRE_READY", "maybe")],
        );
        assert!(
            e.contains("NX_OPEN_CACHE_SERVER_REQUIRE_READY") && e.contains("\"maybe\""),
            "{e}"
        );
    }

    #[test]
    fn durability_from_the_flag_the_environment_and_the_config_file() {
        assert_eq!(
            resolve_ok(&["--storage", "fs:/d"], &[TOKENS]).durability,
            Durability::Full
        );
        let c = resolve_ok(&["--storage", "fs:/d", "--durability", "none"], &[TOKENS]);
        assert_eq!(c.durability, Durability::None);
        let env = ("NX_OPEN_CACHE_SERVER_DURABILITY", "data");
        assert_eq!(
            resolve_ok(&["--storage", "fs:/d"], &[TOKENS, env]).durability,
            Durability::Data
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        std::fs::write(&file, "storage = \"fs:/d\"\ndurability = \"none\"\n").unwrap();
        let c = resolve_ok(&["--config", file.to_str().unwrap()], &[TOKENS]);
        assert_eq!(c.durability, Durability::None);
        let e = resolve_err(&["--storage", "fs:/d", "--durability", "fsync"], &[TOKENS]);
        assert!(
            e.contains("--durability") && e.contains("\"fsync\"") && e.contains("full"),
            "{e}"
        );
        let e = resolve_err(&["--storage", "s3://b", "--durability", "none"], &[TOKENS]);
        assert!(e.contains("applies only to fs: storage"), "{e}");
    }

    #[test]
    fn json_file_and_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.json");
        std::fs::write(&file, r#"{"storage": "fs:/d", "max_size": "10GiB", "max_age": "30d", "allow_anonymous": true}"#).unwrap();
        let c = resolve_ok(&["--config", file.to_str().unwrap()], &[]);
        assert_eq!(c.max_size, Some(10 << 30));
        assert_eq!(c.max_age, Some(Duration::from_secs(30 * 86400)));
        assert!(c.allow_anonymous);

        std::fs::write(&file, r#"{"storage": "fs:/d", "max_sise": "1GB"}"#).unwrap();
        let e = resolve_err(&["--config", file.to_str().unwrap()], &[TOKENS]);
        assert!(
            e.contains("\"max_sise\"") && e.contains("max_size") && e.contains("listen"),
            "{e}"
        );

        let yaml = dir.path().join("server.yaml");
        std::fs::write(&yaml, "storage: x").unwrap();
        let e = resolve_err(&["--config", yaml.to_str().unwrap()], &[TOKENS]);
        assert!(e.contains(".toml or .json"), "{e}");
        let e = resolve_err(&["--config", "/nonexistent/x.toml"], &[TOKENS]);
        assert!(e.contains("/nonexistent/x.toml"), "{e}");
    }

    #[test]
    fn bad_values_name_option_value_and_allowed() {
        let e = resolve_err(
            &["--storage", "fs:/d", "--max-artifact-size", "2XB"],
            &[TOKENS],
        );
        assert!(
            e.contains("--max-artifact-size") && e.contains("\"2XB\"") && e.contains("GiB"),
            "{e}"
        );
        let e = resolve_err(
            &["--storage", "fs:/d"],
            &[
                TOKENS,
                ("NX_OPEN_CACHE_SERVER_UPLOAD_TIMEOUT", "10 minutes"),
            ],
        );
        assert!(
            e.contains("NX_OPEN_CACHE_SERVER_UPLOAD_TIMEOUT")
                && e.contains("\"10 minutes\"")
                && e.contains("10m"),
            "{e}"
        );
        let e = resolve_err(&["--storage", "fs:/d", "--listen", "localhost"], &[TOKENS]);
        assert!(e.contains("--listen") && e.contains("0.0.0.0:3000"), "{e}");
        let e = resolve_err(&["--storage", "fs:/d", "--log", "yaml"], &[TOKENS]);
        assert!(e.contains("--log") && e.contains("\"json\""), "{e}");
        let e = resolve_err(
            &["--storage", "fs:/d", "--max-concurrent-uploads", "0"],
            &[TOKENS],
        );
        assert!(
            e.contains("--max-concurrent-uploads") && e.contains("\"0\""),
            "{e}"
        );
        let e = resolve_err(&["--storage", "fs:/d", "--bogus"], &[TOKENS]);
        assert!(e.contains("--bogus") && e.contains("--storage"), "{e}");
        let e = resolve_err(
            &["--storage", "fs:/d"],
            &[TOKENS, ("NX_OPEN_CACHE_SERVER_LISTN", "x")],
        );
        assert!(
            e.contains("NX_OPEN_CACHE_SERVER_LISTN") && e.contains("NX_OPEN_CACHE_SERVER_LISTEN"),
            "{e}"
        );
        let e = resolve_err(&["--storage", "fs:/d", "--tls-cert", "c.pem"], &[TOKENS]);
        assert!(e.contains("--tls-key"), "{e}");
        let e = resolve_err(&["--storage", "s3://b", "--max-size", "1GB"], &[TOKENS]);
        assert!(e.contains("--max-size") && e.contains("lifecycle"), "{e}");
        let e = resolve_err(
            &["--storage", "fs:/d", "--s3-endpoint", "http://x"],
            &[TOKENS],
        );
        assert!(e.contains("--s3-endpoint") && e.contains("s3://"), "{e}");
        let e = resolve_err(&["--storage", "fs:/d", "--tokens", "a:read-write:x"], &[]);
        assert!(e.contains("never given on the command line"), "{e}");
    }

    #[test]
    fn refuses_to_start_without_tokens() {
        let e = resolve_err(&["--storage", "fs:/d"], &[]);
        assert!(
            e.contains("refusing")
                && e.contains("NX_OPEN_CACHE_SERVER_TOKENS")
                && e.contains("--allow-anonymous"),
            "{e}"
        );
        let c = resolve_ok(&["--storage", "fs:/d", "--allow-anonymous"], &[]);
        assert!(c.allow_anonymous && c.token_lists.is_empty());
        let e = resolve_err(
            &["--storage", "fs:/d"],
            &[("NX_OPEN_CACHE_SERVER_ALLOW_ANONYMOUS", "maybe")],
        );
        assert!(
            e.contains("NX_OPEN_CACHE_SERVER_ALLOW_ANONYMOUS") && e.contains("\"maybe\""),
            "{e}"
        );
    }

    #[test]
    fn file_tokens_full_form() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pr.secret"), "prsecret-0123456789\n").unwrap();
        let file = dir.path().join("server.toml");
        std::fs::write(
            &file,
            r#"
storage = "fs:/d"
[[tokens]]
name = "main"
role = "read-write"
secret_env = "MAIN_SECRET"

[[tokens]]
name = "pr"
role = "read-write"
secret_file = "pr.secret"
write_prefix = "pr"
read_prefixes = ["pr", ""]
"#,
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let c = resolve_ok(&["--config", f], &[("MAIN_SECRET", "m1-0123456789abcdef")]);
        assert_eq!(c.tokens.len(), 2);
        assert_eq!(
            (c.tokens[0].name.as_str(), c.tokens[0].secret.as_str()),
            ("main", "m1-0123456789abcdef")
        );
        assert_eq!(c.tokens[1].secret, "prsecret-0123456789");
        assert_eq!(c.tokens[1].write_prefix.as_str(), "pr");
        assert_eq!(c.tokens[1].read_prefixes.len(), 2);
        assert!(!format!("{c:?}").contains("prsecret"));

        // Control and non-ASCII characters in a secret (environment or file) are refused, naming
        // the token and never showing the secret.
        for bad in [
            "m1-0123456789\u{1b}[2Jabc",
            "m1-0123456789abcdé",
            "m1-01234\u{7f}56789abc",
        ] {
            let e = resolve_err(&["--config", f], &[("MAIN_SECRET", bad)]);
            assert!(
                e.contains("\"main\"") && e.contains("printable ASCII"),
                "{e}"
            );
            assert!(!e.contains("m1-01234"), "{e}");
        }
        std::fs::write(dir.path().join("pr.secret"), "prsecret-\u{0}0123456789\n").unwrap();
        let e = resolve_err(&["--config", f], &[("MAIN_SECRET", "m1-0123456789abcdef")]);
        assert!(e.contains("\"pr\"") && !e.contains("prsecret"), "{e}");

        let e = resolve_err(&["--config", f], &[]);
        assert!(e.contains("MAIN_SECRET") && e.contains("\"main\""), "{e}");

        std::fs::write(&file, "storage = \"fs:/d\"\n[[tokens]]\nname = \"a\"\nrole = \"read-write\"\nsecret = \"inline\"\n").unwrap();
        let e = resolve_err(&["--config", f], &[]);
        assert!(
            e.contains("\"secret\"") && e.contains("secret_env") && !e.contains("inline"),
            "{e}"
        );
        std::fs::write(
            &file,
            "storage = \"fs:/d\"\n[[tokens]]\nname = \"a\"\nrole = \"owner\"\nsecret_env = \"X\"\n",
        )
        .unwrap();
        let e = resolve_err(&["--config", f], &[("X", "x")]);
        assert!(
            e.contains("\"owner\"") && e.contains("read-only") && e.contains("admin"),
            "{e}"
        );
        std::fs::write(
            &file,
            "storage = \"fs:/d\"\nui_anonymous = true\n[[tokens]]\nname = \"lead\"\nrole = \"admin\"\nsecret_env = \"X\"\n",
        )
        .unwrap();
        let c = resolve_ok(&["--config", f], &[("X", "admin-secret-0123456789")]);
        assert_eq!(c.tokens[0].role, Role::Admin);
        assert!(c.ui_anonymous);
        assert!(!resolve_ok(&["--storage", "fs:/d"], &[TOKENS]).ui_anonymous);
    }

    #[test]
    fn tokens_file_simple_form() {
        let dir = tempfile::tempdir().unwrap();
        let tf = dir.path().join("tokens");
        std::fs::write(
            &tf,
            "# ci\nci:read-write:aaaaaaaaaaaaaaaa\n\ndev:read-only:bbbbbbbbbbbbbbbb\n",
        )
        .unwrap();
        let c = resolve_ok(
            &["--storage", "fs:/d", "--tokens-file", tf.to_str().unwrap()],
            &[],
        );
        assert_eq!(c.token_lists.len(), 1);
        assert_eq!(
            c.token_lists[0].text,
            "ci:read-write:aaaaaaaaaaaaaaaa,dev:read-only:bbbbbbbbbbbbbbbb"
        );
        std::fs::write(&tf, "# nothing\n").unwrap();
        let e = resolve_err(
            &["--storage", "fs:/d", "--tokens-file", tf.to_str().unwrap()],
            &[],
        );
        assert!(e.contains("holds no token"), "{e}");
    }

    #[test]
    fn command_line_forms() {
        // A switch alone is true; with `=` it takes a yes/no word.
        let c = resolve_ok(&["--storage=fs:/d", "--allow-anonymous=false"], &[TOKENS]);
        assert!(!c.allow_anonymous);
        let c = resolve_ok(&["--allow-anonymous", "--storage", "fs:/d"], &[]);
        assert!(c.allow_anonymous);
        // A value may start with a dash only inline.
        let e = resolve_err(&["--storage", "fs:/d", "--listen"], &[TOKENS]);
        assert!(e.contains("--listen") && e.contains("needs a value"), "{e}");
        let e = resolve_err(
            &["--storage", "fs:/d", "--listen", "--log", "off"],
            &[TOKENS],
        );
        assert!(e.contains("--listen") && e.contains("needs a value"), "{e}");
        let e = resolve_err(
            &["--storage", "fs:/d", "--log", "off", "--log", "json"],
            &[TOKENS],
        );
        assert!(e.contains("--log") && e.contains("twice"), "{e}");
        let e = resolve_err(
            &["--storage", "fs:/d", "--max-connections", "-5"],
            &[TOKENS],
        );
        assert!(
            e.contains("--max-connections") && e.contains("\"-5\"") && e.contains("1 to 100000"),
            "{e}"
        );
        let e = resolve_err(&["--storage", "fs:/d", "stray"], &[TOKENS]);
        assert!(
            e.contains("\"stray\"") && e.contains("options start with --"),
            "{e}"
        );
        let e = resolve_err(&["--storage", "fs:/d", "--token=abc"], &[]);
        assert!(
            e.contains("never given on the command line") && !e.contains("abc"),
            "{e}"
        );
        // The option an error names is the one the user spelled.
        let err = resolve(
            &args(&["--storage", "fs:/d", "--log", "yaml"]),
            &env(&[TOKENS]),
            Path::new("/w"),
        )
        .unwrap_err();
        assert_eq!(err.option, "--log");
        let err = resolve(
            &args(&["--storage", "fs:/d"]),
            &env(&[TOKENS, ("NX_OPEN_CACHE_SERVER_LOG", "yaml")]),
            Path::new("/w"),
        )
        .unwrap_err();
        assert_eq!(err.option, "NX_OPEN_CACHE_SERVER_LOG");
        assert!(
            err.shown_by("serve").starts_with(
                "nx-open-cache serve: invalid value \"yaml\" for NX_OPEN_CACHE_SERVER_LOG"
            ),
            "{err}"
        );
    }
}
