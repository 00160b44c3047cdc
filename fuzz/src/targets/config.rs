//! The plugin's configuration: `config::resolve` on options and environment built from the input,
//! and the parsers behind it run on every string and number of the input: namespaces and prefixes
//! (`key`), keys (`trustedKeys`, `NX_OPEN_CACHE_SIGNING_KEY`, `NX_OPEN_CACHE_ENCRYPTION_KEY`),
//! sizes and durations (`units`), whole numbers (`number`), server tokens, roles, formats.
//!
//! An input is either JSON text, `{"options": {...}, "env": {"NAME": "value"}}` (how the seeds
//! from the README are written), or any other bytes, read as a [`Structured`] value with
//! `arbitrary`: option and variable names from the known sets, values from realistic words
//! (backends, durations, URLs, real keys) and planted secrets.
//!
//! Guarantees checked: no panic; a resolved configuration has timeouts within 1 s..1 h, artifact
//! limits within their ranges, at least one read namespace and a canonical prefix; an error names an option and says something; a
//! planted secret that the input holds only where secrets go (the key variables, `trustedKeys`,
//! a URL's password, query or fragment) appears in no error and no description; a parsed prefix
//! or hash is canonical; a key parser's error does not repeat the value; a whole number converts
//! exactly; a number is shown as a string that parses back to it.

use arbitrary::{Arbitrary, Unstructured};
use nx_open_cache::archive::{self, Format};
use nx_open_cache::config::{self, CacheConfig, ConfigError};
use nx_open_cache::key::{Prefix, TaskHash, MAX_HASH_LEN, MAX_PREFIX_LEN};
use nx_open_cache::seal::keys::{self as seal_keys, ENCRYPTION_KEY_VAR, SIGNING_KEY_VAR};
use nx_open_cache::server::{Auth, Role};
use nx_open_cache::{number, units};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

/// The variables the plugin's configuration reads.
pub const ENV_NAMES: &[&str] = &[
    "CI",
    "HOME",
    "USERPROFILE",
    "NX_OPEN_CACHE_MODE",
    "NX_OPEN_CACHE_DEBUG",
    "NX_OPEN_CACHE_TIMEOUT",
    "NX_OPEN_CACHE_CONNECT_TIMEOUT",
    config::WRITE_PREFIX_VAR,
    config::READ_PREFIXES_VAR,
    SIGNING_KEY_VAR,
    ENCRYPTION_KEY_VAR,
    seal_keys::REQUIRE_SIGNATURE_VAR,
    "NX_OPEN_CACHE_MAX_ARTIFACT_ENTRIES",
    "NX_OPEN_CACHE_MAX_EXPANDED_SIZE",
    "NX_OPEN_CACHE_MAX_EXPANSION_RATIO",
];

/// Option values worth combining: what users write, and the edges of each option.
const WORDS: &[&str] = &[
    "fs",
    "s3",
    "gcs",
    "azure",
    "http",
    "read-write",
    "read-only",
    "no-cache",
    "true",
    "false",
    "1",
    "0",
    "yes",
    "off",
    "30",
    "30s",
    "2m",
    "1h",
    "0.5",
    "3600",
    "3601",
    "1e300",
    "-1",
    "99999999999999999999",
    "NaN",
    "Infinity",
    "50GiB",
    "500MB",
    "30d",
    "~",
    "~/",
    "~/.cache/x",
    "/mnt/nx-cache",
    "../outside",
    ".nx/cache",
    "trusted",
    "untrusted",
    "trusted/",
    "a/b",
    "..",
    ".",
    "//",
    "http://",
    "https://",
    "cache.example.com",
    "127.0.0.1:3000",
    "user:",
    "@",
    "/base",
    "?q=1",
    "#frag",
    "/v1/cache",
    ",",
    " ",
    "my-bucket",
    "eu-west-1",
    "nx-cache",
    "acct",
    "ci:read-write:0123456789abcdef0123",
    "ro:read-only:fedcba9876543210fedc",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
];

/// Secrets the structured inputs plant: the fixed keys of the seal target, as users write them,
/// and a password.
fn planted() -> &'static [String] {
    static PLANTED: OnceLock<Vec<String>> = OnceLock::new();
    PLANTED.get_or_init(|| {
        use super::seal_open::{ENCRYPTION_KEY, OTHER_SIGNER_SEED, SIGNER_SEED};
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut v: Vec<String> = [SIGNER_SEED, OTHER_SIGNER_SEED, ENCRYPTION_KEY]
            .iter()
            .flat_map(|k| [b64.encode(k), hex::encode(k)])
            .collect();
        v.push("fuzzPlantedPassw0rd-7f3a9c".into());
        v
    })
}

/// Public keys the structured inputs can use (shown freely).
fn public_keys() -> &'static [String] {
    static KEYS: OnceLock<Vec<String>> = OnceLock::new();
    KEYS.get_or_init(|| {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let (s, o) = (super::seal_open::signer(), super::seal_open::other_signer());
        vec![
            b64.encode(s.verifying_key().as_bytes()),
            hex::encode(o.verifying_key().as_bytes()),
        ]
    })
}

/// The input of the structured form.
#[derive(Arbitrary, Debug)]
pub struct Structured {
    options: Vec<(OptionName, Val)>,
    env: Vec<(EnvName, Text)>,
    /// Options that are not an object (an array, a string...): the plugin must refuse them.
    not_an_object: Option<Val>,
}

#[derive(Arbitrary, Debug)]
enum OptionName {
    Known(u8),
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum EnvName {
    Known(u8),
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Val {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(Text),
    List(Vec<Val>),
    Map(Vec<(String, Val)>),
}

/// A string: pieces joined (so URLs, lists and keys can be assembled from words and secrets).
#[derive(Arbitrary, Debug)]
struct Text(Vec<Piece>);

#[derive(Arbitrary, Debug)]
enum Piece {
    Raw(String),
    Word(u8),
    Planted(u8),
    PublicKey(u8),
}

/// The plugin's option names, in the schema's order.
fn option_names() -> Vec<&'static str> {
    config::OPTIONS.iter().map(|o| o.name).collect()
}

fn pick<T: AsRef<str>>(list: &[T], i: u8) -> &str {
    list[usize::from(i) % list.len()].as_ref()
}

impl Text {
    fn build(&self) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Piece::Raw(s) => s.as_str(),
                Piece::Word(i) => pick(WORDS, *i),
                Piece::Planted(i) => pick(planted(), *i),
                Piece::PublicKey(i) => pick(public_keys(), *i),
            })
            .collect()
    }
}

impl Val {
    /// The JSON value (nesting cut at `depth`); numbers JSON cannot hold go to `odd_numbers`.
    fn build(&self, depth: u8, odd_numbers: &mut Vec<f64>) -> Value {
        if depth == 0 {
            return Value::Null;
        }
        match self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::Int(i) => Value::from(*i),
            Val::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or_else(|| {
                    odd_numbers.push(*f);
                    Value::Null
                }),
            Val::Text(t) => Value::String(t.build()),
            Val::List(items) => items
                .iter()
                .map(|v| v.build(depth - 1, odd_numbers))
                .collect(),
            Val::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.build(depth - 1, odd_numbers)))
                    .collect(),
            ),
        }
    }
}

/// Options, environment, and numbers that JSON cannot hold (`Infinity`, `NaN`).
struct Input {
    options: Value,
    env: HashMap<String, String>,
    odd_numbers: Vec<f64>,
}

fn from_json(data: &[u8]) -> Option<Input> {
    let value: Value = serde_json::from_slice(data).ok()?;
    let (options, env) = match value {
        Value::Object(mut m) if m.contains_key("options") || m.contains_key("env") => {
            let env = match m.remove("env") {
                Some(Value::Object(e)) => e
                    .into_iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => (k, s),
                        other => (k, other.to_string()),
                    })
                    .collect(),
                _ => HashMap::new(),
            };
            (m.remove("options").unwrap_or(Value::Null), env)
        }
        other => (other, HashMap::new()),
    };
    Some(Input {
        options,
        env,
        odd_numbers: Vec::new(),
    })
}

fn from_structured(data: &[u8]) -> Option<Input> {
    let s = Structured::arbitrary_take_rest(Unstructured::new(data)).ok()?;
    let mut odd_numbers = Vec::new();
    let options = match &s.not_an_object {
        Some(v) => v.build(4, &mut odd_numbers),
        None => {
            let mut map = Map::new();
            for (name, v) in &s.options {
                let name = match name {
                    OptionName::Known(i) => pick(&option_names(), *i).to_owned(),
                    OptionName::Other(s) => s.clone(),
                };
                map.insert(name, v.build(4, &mut odd_numbers));
            }
            Value::Object(map)
        }
    };
    let env = s
        .env
        .iter()
        .map(|(name, t)| {
            let name = match name {
                EnvName::Known(i) => pick(ENV_NAMES, *i).to_owned(),
                EnvName::Other(s) => s.clone(),
            };
            (name, t.build())
        })
        .collect();
    Some(Input {
        options,
        env,
        odd_numbers,
    })
}

pub fn run(data: &[u8]) {
    let input = if data.first() == Some(&b'{') {
        from_json(data)
    } else {
        from_structured(data)
    };
    let Some(input) = input else {
        parse_string(&String::from_utf8_lossy(data));
        return;
    };
    let result = config::resolve(&input.options, &input.env, Path::new("/ws"));
    let shown = match &result {
        Ok(c) => resolved(c),
        Err(e) => refused(e),
    };
    for secret in hidden_secrets(&input) {
        assert!(
            !shown.contains(secret),
            "secret {secret:?} shown in: {shown}"
        );
    }
    let mut strings = Vec::new();
    let mut numbers = input.odd_numbers.clone();
    collect(&input.options, &mut strings, &mut numbers);
    strings.extend(input.env.values().cloned());
    for s in &strings {
        parse_string(s);
    }
    for v in numbers {
        parse_number(v);
    }
}

/// Checks a resolved configuration; returns what a user is shown of it.
fn resolved(c: &CacheConfig) -> String {
    let (min, max) = config::DURATION_RANGE_SECS;
    for t in [c.timeouts.answer, c.timeouts.connect] {
        let secs = t.as_secs_f64();
        assert!((min..=max).contains(&secs), "timeout {t:?} out of range");
    }
    assert!(!c.namespaces.read.is_empty(), "no read namespace");
    let l = &c.limits;
    assert!(
        archive::limits::ENTRIES_RANGE.contains(&l.max_entries)
            && archive::limits::RATIO_RANGE.contains(&l.max_expansion_ratio)
            && l.max_expanded_bytes >= 1,
        "artifact limits out of range: {l:?}"
    );
    assert_eq!(Prefix::parse(c.prefix.as_str()).as_ref(), Ok(&c.prefix));
    format!(
        "{} {} | {} | {} | {}",
        c.backend.name(),
        c.backend.location(),
        c.seal.describe(),
        c.namespaces.describe(),
        c.mode_source
    )
}

/// Checks a configuration error; returns what a user is shown of it.
fn refused(e: &ConfigError) -> String {
    // The option is named, even when its name is empty (an option `""` in nx.json).
    assert!(
        !e.option.is_empty() || e.message.contains("\"\""),
        "an error naming no option: {e}"
    );
    assert!(!e.message.is_empty(), "an empty error for {}", e.option);
    format!("{e} {e:?}")
}

/// The planted secrets that the input holds only in secret places: the key variables,
/// `trustedKeys` entries, and the password, query or fragment of `url` / `endpoint`.
fn hidden_secrets(input: &Input) -> Vec<&'static str> {
    let mut public: Vec<String> = Vec::new();
    let mut secret: Vec<String> = Vec::new();
    for (k, v) in &input.env {
        public.push(k.clone());
        if k == SIGNING_KEY_VAR || k == ENCRYPTION_KEY_VAR {
            secret.push(v.clone());
        } else {
            public.push(v.clone());
        }
    }
    match &input.options {
        Value::Object(m) => {
            for (k, v) in m {
                public.push(k.clone());
                match (k.as_str(), v) {
                    ("trustedKeys", Value::Array(items)) => items.iter().for_each(|i| match i {
                        Value::String(s) => secret.push(s.clone()),
                        other => collect(other, &mut public, &mut Vec::new()),
                    }),
                    ("url" | "endpoint", Value::String(s)) => {
                        let (shown, hidden) = split_url(s);
                        public.push(shown);
                        secret.push(hidden);
                    }
                    _ => collect(v, &mut public, &mut Vec::new()),
                }
            }
        }
        other => collect(other, &mut public, &mut Vec::new()),
    }
    planted()
        .iter()
        .map(String::as_str)
        .filter(|p| secret.iter().any(|s| s.contains(p)) && !public.iter().any(|s| s.contains(p)))
        .collect()
}

/// A URL's parts that may be shown (scheme, user, host, path) and those that may not (password,
/// query, fragment).
fn split_url(url: &str) -> (String, String) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), String::new());
    };
    let cut = rest.find(['?', '#']).unwrap_or(rest.len());
    let (place, extra) = rest.split_at(cut);
    let (userinfo, host) = match place.rfind('@') {
        Some(at) => place.split_at(at),
        None => ("", place),
    };
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    (
        format!("{scheme}://{user}{host}"),
        format!("{password} {extra}"),
    )
}

/// Every string (keys included) and number in `v`.
fn collect(v: &Value, strings: &mut Vec<String>, numbers: &mut Vec<f64>) {
    match v {
        Value::String(s) => strings.push(s.clone()),
        Value::Number(n) => numbers.extend(n.as_f64()),
        Value::Array(items) => items.iter().for_each(|i| collect(i, strings, numbers)),
        Value::Object(m) => m.iter().for_each(|(k, v)| {
            strings.push(k.clone());
            collect(v, strings, numbers)
        }),
        Value::Null | Value::Bool(_) => {}
    }
}

/// The parsers of names, keys, sizes, durations, tokens on one string.
fn parse_string(s: &str) {
    if let Ok(p) = Prefix::parse(s) {
        assert_eq!(Prefix::parse(p.as_str()).as_ref(), Ok(&p), "prefix {s:?}");
        assert!(p.as_str().len() <= MAX_PREFIX_LEN);
        assert!(!p.as_str().split('/').any(|seg| seg == ".." || seg == "."));
        let _ = p.join(&p);
    }
    if let Ok(h) = TaskHash::parse(s) {
        assert!(h.as_str() == s && !s.is_empty() && s.len() <= MAX_HASH_LEN);
    }
    let _ = units::parse_size("--max-size", s);
    let _ = units::parse_duration("--max-age", s);
    for e in [
        seal_keys::decode_key32(s).err(),
        seal_keys::parse_public_key(s).err(),
        seal_keys::parse_signing_key(s).err(),
        seal_keys::parse_encryption_keys(s).err(),
    ]
    .into_iter()
    .flatten()
    {
        not_echoed(s, &e);
    }
    let _ = Auth::parse_tokens(s);
    let _ = Role::parse(s);
    let _ = Format::parse(s);
    if let Ok(v) = s.trim().parse::<f64>() {
        parse_number(v);
    }
}

/// A key parser's error must not repeat the value. Only values that cannot be part of the
/// parsers' own words are checked: those with a character the messages never use (they are made
/// of lower-case letters, digits, spaces, `,`, `:` and the `E` of Ed25519).
fn not_echoed(value: &str, message: &str) {
    let v = value.trim();
    let distinctive = v.chars().any(|c| {
        !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, ' ' | ',' | ':' | 'E'))
    });
    if v.len() >= 8 && distinctive {
        assert!(!message.contains(v), "key parser echoed {v:?}: {message}");
    }
}

/// The number conversions on one value.
fn parse_number(v: f64) {
    let shown = number::show(v);
    if v.is_finite() {
        assert_eq!(shown.parse::<f64>().ok(), Some(v), "shown as {shown}");
    }
    let _ = config::non_finite_option("timeout", &shown);
    if let Ok(n) = number::whole("code", v, 0..=u32::MAX) {
        assert_eq!(f64::from(n), v);
    }
    if let Ok(n) = number::whole("n", v, i64::MIN..=i64::MAX) {
        assert_eq!(n as f64, v);
    }
    if let Ok(n) = number::whole("n", v, 0..=u64::MAX) {
        assert_eq!(n as f64, v);
    }
    let _ = archive::code_from_number(v);
    let _ = archive::level_from_number(v);
    let _ = archive::threads_from_number(v);
}
