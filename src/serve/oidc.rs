//! The config file's `[[oidc_issuers]]` and `[[oidc_rules]]` tables (see docs/serve.md, "OIDC
//! identity"). Every mistake names the table (by position and name), the key, the value and what
//! is allowed.

use crate::server::auth::{Role, ROLES};
use crate::server::oidc::keys::check_url;
use crate::server::oidc::rules::{compile_glob, Condition, Pattern};
use crate::server::oidc::{
    Alg, Grant, IssuerSpec, KeySource, OidcConfig, RuleSpec, ALGS, DEFAULT_CLOCK_SKEW,
    DEFAULT_MAX_LIFETIME,
};
use crate::value::{describe_json, ConfigError};
use serde_json::{Map, Value};
use std::path::Path;
use std::time::Duration;

/// Keys of one `[[oidc_issuers]]` table.
const ISSUER_KEYS: &[&str] = &[
    "name",
    "issuer",
    "audience",
    "jwks_url",
    "jwks_file",
    "algorithms",
    "clock_skew",
    "max_lifetime",
];
/// Keys of one `[[oidc_rules]]` table.
const RULE_KEYS: &[&str] = &[
    "name",
    "issuer",
    "claims",
    "role",
    "write_prefix",
    "read_prefixes",
    "deny",
    "allow_any_repository",
];
/// Issuers shared by every repository of a public service: anyone can get a token from them
/// for any audience, from a repository of their own.
const SHARED_ISSUERS: &[&str] = &[
    "https://token.actions.githubusercontent.com",
    "https://gitlab.com",
];
/// Claims that say whose repository (or project) a token is for.
const REPOSITORY_CLAIMS: &[&str] = &[
    "repository",
    "repository_id",
    "repository_owner",
    "repository_owner_id",
    "job_workflow_ref",
    "sub",
    "project_path",
    "project_id",
    "namespace_path",
    "namespace_id",
];

/// Whether `rule` names the repositories it grants to: a condition on a repository claim whose
/// patterns all begin with something other than a wildcard.
fn scoped(rule: &RuleSpec) -> bool {
    rule.conditions.iter().any(|c| {
        REPOSITORY_CLAIMS.contains(&c.claim.as_str())
            && c.any_of
                .iter()
                .all(|p| !p.as_str().is_empty() && !p.as_str().starts_with(['*', '?', '[']))
    })
}
/// Longest accepted lifetime setting and clock skew.
const MAX_LIFETIME_LIMIT: Duration = Duration::from_secs(7 * 86400);
const MAX_SKEW: Duration = Duration::from_secs(600);

fn fail<T>(message: String) -> Result<T, ConfigError> {
    Err(ConfigError::new("", message))
}

/// A name: A-Z a-z 0-9 . _ -, at most 64 characters.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn unknown_keys(t: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<(), ConfigError> {
    match t.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => fail(format!(
            "unknown key \"{k}\" in {at}; the allowed keys are: {}",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

fn name_of(
    t: &Map<String, Value>,
    table: &str,
    i: usize,
    file: &str,
) -> Result<String, ConfigError> {
    match t.get("name") {
        Some(Value::String(s)) if valid_name(s) => Ok(s.clone()),
        Some(v) => fail(format!(
            "invalid \"name\" {} in {table}[{i}] in {file}: expected ASCII letters, digits, '.', \
             '_' or '-' (at most 64)",
            describe_json(v)
        )),
        None => fail(format!("{table}[{i}] in {file} has no \"name\"")),
    }
}

/// A required or optional string.
fn string(t: &Map<String, Value>, key: &str, at: &str) -> Result<Option<String>, ConfigError> {
    match t.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
        Some(v) => fail(format!(
            "\"{key}\" of {at} must be a non-empty string, got {}",
            describe_json(v)
        )),
    }
}

/// A string or a non-empty array of strings.
fn strings(
    t: &Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Option<Vec<String>>, ConfigError> {
    let bad = |v: &Value| {
        fail(format!(
            "\"{key}\" of {at} must be a string or a non-empty array of strings, got {}",
            describe_json(v)
        ))
    };
    match t.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(vec![s.clone()])),
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut out = Vec::new();
            for item in items {
                match item {
                    Value::String(s) if !s.is_empty() => out.push(s.clone()),
                    other => return bad(other),
                }
            }
            Ok(Some(out))
        }
        Some(v) => bad(v),
    }
}

fn duration(
    t: &Map<String, Value>,
    key: &str,
    at: &str,
    default: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let Some(text) = string(t, key, at)? else {
        return Ok(default);
    };
    let d = crate::units::parse_duration(&format!("\"{key}\" of {at}"), &text)
        .map_err(|e| ConfigError::new("", e))?;
    if d > max {
        return fail(format!(
            "invalid value {text:?} for \"{key}\" of {at}: at most {}",
            crate::units::format_duration(max)
        ));
    }
    Ok(d)
}

fn issuer(
    t: &Map<String, Value>,
    i: usize,
    file: &Path,
    base: &Path,
) -> Result<IssuerSpec, ConfigError> {
    let shown = file.display().to_string();
    let name = name_of(t, "oidc_issuers", i, &shown)?;
    let at = format!("OIDC issuer \"{name}\" in {shown}");
    unknown_keys(t, ISSUER_KEYS, &at)?;
    let Some(iss) = string(t, "issuer", &at)? else {
        return fail(format!(
            "{at} has no \"issuer\" (the exact `iss` of its tokens, e.g. \
             \"https://token.actions.githubusercontent.com\")"
        ));
    };
    check_url(&iss, &format!("\"issuer\" of {at}")).or_else(fail)?;
    let Some(audiences) = strings(t, "audience", &at)? else {
        return fail(format!(
            "{at} has no \"audience\": tokens must be made for this server (e.g. its URL); \
             without an audience check a token made for any other service would be accepted"
        ));
    };
    let keys = match (string(t, "jwks_url", &at)?, string(t, "jwks_file", &at)?) {
        (Some(_), Some(_)) => return fail(format!("{at}: give jwks_url or jwks_file, not both")),
        (Some(url), None) => {
            check_url(&url, &format!("\"jwks_url\" of {at}")).or_else(fail)?;
            KeySource::Url(url)
        }
        (None, Some(f)) => {
            let p = Path::new(&f);
            KeySource::File(if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            })
        }
        (None, None) => KeySource::Discovery,
    };
    let algorithms = match strings(t, "algorithms", &at)? {
        None => vec![Alg::Rs256, Alg::Es256, Alg::EdDsa],
        Some(names) => {
            let mut out = Vec::new();
            for n in names {
                match Alg::parse(&n) {
                    Some(a) if !out.contains(&a) => out.push(a),
                    Some(_) => {}
                    None => {
                        let why = if n.eq_ignore_ascii_case("none") || n.starts_with("HS") {
                            " (unsigned and HMAC tokens are never accepted)"
                        } else {
                            ""
                        };
                        return fail(format!(
                            "invalid algorithm {n:?} in \"algorithms\" of {at}: expected {}{why}",
                            ALGS.join(", ")
                        ));
                    }
                }
            }
            out
        }
    };
    Ok(IssuerSpec {
        name,
        issuer: iss,
        audiences,
        keys,
        algorithms,
        clock_skew: duration(t, "clock_skew", &at, DEFAULT_CLOCK_SKEW, MAX_SKEW)?,
        max_lifetime: duration(
            t,
            "max_lifetime",
            &at,
            DEFAULT_MAX_LIFETIME,
            MAX_LIFETIME_LIMIT,
        )?,
    })
}

fn conditions(t: &Map<String, Value>, at: &str) -> Result<Vec<Condition>, ConfigError> {
    let claims = match t.get("claims") {
        None => return Ok(Vec::new()),
        Some(Value::Object(m)) => m,
        Some(v) => {
            return fail(format!(
                "\"claims\" of {at} must be a table of claim = value (or [values]), got {}",
                describe_json(v)
            ))
        }
    };
    let mut out = Vec::new();
    for (claim, value) in claims {
        let what = format!("claim \"{claim}\" of {at}");
        let texts = match value {
            Value::String(s) => vec![s.clone()],
            Value::Bool(b) => vec![b.to_string()],
            Value::Number(n) => vec![n.to_string()],
            Value::Array(items) if !items.is_empty() => {
                let mut v = Vec::new();
                for item in items {
                    match item {
                        Value::String(s) => v.push(s.clone()),
                        Value::Bool(b) => v.push(b.to_string()),
                        Value::Number(n) => v.push(n.to_string()),
                        other => {
                            return fail(format!(
                                "{what}: list items must be strings, got {}",
                                describe_json(other)
                            ))
                        }
                    }
                }
                v
            }
            other => {
                return fail(format!(
                    "{what} must be a string, a glob or a non-empty list of them, got {}",
                    describe_json(other)
                ))
            }
        };
        let mut any_of = Vec::new();
        for text in texts {
            let p = Pattern::parse(&text);
            if let Pattern::Glob(g) = &p {
                compile_glob(g).map_err(|e| ConfigError::new("", format!("{what}: {e}")))?;
            }
            any_of.push(p);
        }
        out.push(Condition {
            claim: claim.clone(),
            any_of,
        });
    }
    Ok(out)
}

fn rule(t: &Map<String, Value>, i: usize, file: &str) -> Result<(RuleSpec, bool), ConfigError> {
    let name = name_of(t, "oidc_rules", i, file)?;
    let at = format!("OIDC rule \"{name}\" in {file}");
    unknown_keys(t, RULE_KEYS, &at)?;
    let issuer = string(t, "issuer", &at)?;
    let conditions = conditions(t, &at)?;
    let deny = match t.get("deny") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return fail(format!(
                "\"deny\" of {at} must be true or false, got {}",
                describe_json(v)
            ))
        }
    };
    let any_repository = match t.get("allow_any_repository") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return fail(format!(
                "\"allow_any_repository\" of {at} must be true or false, got {}",
                describe_json(v)
            ))
        }
    };
    let has_grant_keys = ["role", "write_prefix", "read_prefixes"]
        .iter()
        .any(|k| t.contains_key(*k));
    if deny {
        if has_grant_keys {
            return fail(format!(
                "{at} denies (deny = true) and also gives role/write_prefix/read_prefixes: \
                 remove one or the other"
            ));
        }
        return Ok((
            RuleSpec {
                name,
                issuer,
                conditions,
                grant: None,
            },
            any_repository,
        ));
    }
    let role = match t.get("role") {
        Some(Value::String(s)) => {
            Role::parse(s).map_err(|e| ConfigError::new("", format!("\"role\" of {at}: {e}")))?
        }
        Some(v) => {
            return fail(format!(
                "invalid \"role\" {} for {at}: expected {}",
                describe_json(v),
                ROLES.join(", ")
            ))
        }
        None => {
            return fail(format!(
                "{at} has no \"role\" ({}), nor deny = true",
                ROLES.join(", ")
            ))
        }
    };
    let (write_prefix, read_prefixes) = super::config::table_namespaces(t, &at)?;
    Ok((
        RuleSpec {
            name,
            issuer,
            conditions,
            grant: Some(Grant {
                role,
                write_prefix,
                read_prefixes,
            }),
        },
        any_repository,
    ))
}

/// The OIDC configuration of the config file `file` (relative key files from `base`); `None`
/// when it has neither table.
pub fn parse(
    issuers: &[Map<String, Value>],
    rules: &[Map<String, Value>],
    file: &Path,
    base: &Path,
) -> Result<Option<OidcConfig>, ConfigError> {
    if issuers.is_empty() && rules.is_empty() {
        return Ok(None);
    }
    let shown = file.display().to_string();
    let mut config = OidcConfig::default();
    for (i, t) in issuers.iter().enumerate() {
        let spec = issuer(t, i, file, base)?;
        if config.issuers.iter().any(|x| x.name == spec.name) {
            return fail(format!(
                "OIDC issuer name {:?} is used twice in {shown}",
                spec.name
            ));
        }
        if config.issuers.iter().any(|x| x.issuer == spec.issuer) {
            return fail(format!(
                "OIDC issuer {:?} is configured twice in {shown} (give one [[oidc_issuers]] \
                 several audiences instead)",
                spec.issuer
            ));
        }
        config.issuers.push(spec);
    }
    for (i, t) in rules.iter().enumerate() {
        let (spec, any_repository) = rule(t, i, &shown)?;
        if config.rules.iter().any(|x| x.name == spec.name) {
            return fail(format!(
                "OIDC rule name {:?} is used twice in {shown}",
                spec.name
            ));
        }
        if let Some(name) = &spec.issuer {
            if !config.issuers.iter().any(|x| x.name == *name) {
                return fail(format!(
                    "OIDC rule {:?} in {shown} names issuer {name:?}, which is not in \
                     [[oidc_issuers]] (names: {})",
                    spec.name,
                    config
                        .issuers
                        .iter()
                        .map(|x| format!("{:?}", x.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        let shared = config.issuers.iter().find(|x| {
            SHARED_ISSUERS.contains(&x.issuer.trim_end_matches('/'))
                && spec.issuer.as_ref().is_none_or(|n| *n == x.name)
        });
        if let Some(shared) =
            shared.filter(|_| spec.grant.is_some() && !any_repository && !scoped(&spec))
        {
            return fail(format!(
                "OIDC rule {:?} in {shown} grants access to tokens of {:?} without naming a \
                 repository: anyone can get a token of that issuer, from a repository of their \
                 own, so the rule would let any of them in. Add a claim that names yours (e.g. \
                 repository = \"acme/monorepo\" on GitHub, project_path = \"acme/monorepo\" on \
                 GitLab), or set allow_any_repository = true if that is what you want",
                spec.name, shared.issuer
            ));
        }
        config.rules.push(spec);
    }
    if config.issuers.is_empty() {
        return fail(format!(
            "{shown} has [[oidc_rules]] but no [[oidc_issuers]]: rules need an issuer whose \
             tokens they apply to"
        ));
    }
    if !config.rules.iter().any(|r| r.grant.is_some()) {
        return fail(format!(
            "{shown} has [[oidc_issuers]] but no [[oidc_rules]] that grants access: every OIDC \
             token would be refused (add a rule with a role, e.g. role = \"read-only\")"
        ));
    }
    Ok(Some(config))
}
