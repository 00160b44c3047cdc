//! `nx-open-cache serve --explain-token <jwt|->`: what the server configured by the other options
//! would do with a token: for an OIDC token every check (issuer, algorithm, key, signature, time,
//! audience) and each rule in order with why it matches or not; for a static token its name and
//! role. The token is never printed. `-` reads the token from standard input (keeps it out of the
//! shell history and the process list).

use super::config::{self, ServeConfig};
use crate::server::auth::Oidc;
use crate::value::ConfigError;
use std::collections::HashMap;
use std::io::Read as _;
use std::path::Path;

/// The flag.
pub const FLAG: &str = "--explain-token";

/// What was found: the text to print and whether the token is accepted.
pub struct Explained {
    pub text: String,
    pub accepted: bool,
}

/// Splits `--explain-token <value>` / `--explain-token=<value>` off the arguments: the other
/// arguments and the value (`None` without the flag).
pub fn split_args(args: &[String]) -> Result<(Vec<String>, Option<String>), ConfigError> {
    let mut rest = Vec::new();
    let mut value = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == FLAG {
            match args.get(i + 1) {
                Some(v) => value = Some(v.clone()),
                None => {
                    return Err(ConfigError::new(
                        FLAG,
                        format!(
                            "{FLAG} needs a value: the token, or - to read it from standard input"
                        ),
                    ))
                }
            }
            i += 2;
            continue;
        }
        if let Some(v) = a.strip_prefix(&format!("{FLAG}=")) {
            value = Some(v.to_owned());
        } else {
            rest.push(a.clone());
        }
        i += 1;
    }
    Ok((rest, value))
}

/// The token: the value itself, or standard input's first line for `-`.
fn read_token(value: &str) -> Result<String, String> {
    if value != "-" {
        return Ok(value.trim().to_owned());
    }
    let mut text = String::new();
    std::io::stdin()
        .take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(|e| format!("{FLAG} -: cannot read standard input: {e}"))?;
    Ok(text.lines().next().unwrap_or("").trim().to_owned())
}

/// Explains `value` (a token or `-`) against `config`.
pub fn explain(config: &ServeConfig, value: &str) -> Result<Explained, String> {
    let token = read_token(value)?;
    if token.is_empty() {
        return Err(format!("{FLAG}: the token is empty"));
    }
    let auth = super::build_auth(config)?;
    if let Some(i) = auth.find(token.as_bytes()) {
        let t = &auth.tokens[i];
        return Ok(Explained {
            text: format!(
                "static token {:?}: {}, writes {:?}, reads {:?}",
                t.name,
                t.role.as_str(),
                t.write_prefix.as_str(),
                t.read_prefixes
                    .iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
            ),
            accepted: true,
        });
    }
    let Some(Oidc(verifier)) = &auth.oidc else {
        return Ok(Explained {
            text: "refused: not one of the static tokens, and no OIDC issuer is configured \
                   ([[oidc_issuers]] in the config file)"
                .to_owned(),
            accepted: false,
        });
    };
    let runtime = crate::runtime::get()?;
    let verifier = verifier.clone();
    let explained = super::wait_for(runtime, async move { verifier.explain(&token).await })?;
    Ok(Explained {
        text: explained.lines.join("\n"),
        accepted: explained.accepted.is_some(),
    })
}

/// `--explain-token` from the words after `serve`: `Ok(None)` when the flag is absent; a
/// configuration mistake is `Err(Ok(..))`, a failure to explain `Err(Err(..))`.
pub fn run(
    args: &[String],
    env: &HashMap<String, String>,
    cwd: &Path,
) -> Result<Option<Explained>, Result<ConfigError, String>> {
    let (rest, value) = split_args(args).map_err(Ok)?;
    let Some(value) = value else {
        return Ok(None);
    };
    let config = config::resolve(&rest, env, cwd).map_err(Ok)?;
    explain(&config, &value).map(Some).map_err(Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_flag_is_split_off_in_both_forms() {
        let (rest, v) = split_args(&words(&["--config", "s.toml", FLAG, "a.b.c"]))
            .unwrap_or_else(|e| panic!("{}", e.message));
        assert_eq!(rest, words(&["--config", "s.toml"]));
        assert_eq!(v.as_deref(), Some("a.b.c"));
        let (rest, v) = split_args(&words(&[&format!("{FLAG}=-"), "--log", "json"]))
            .unwrap_or_else(|e| panic!("{}", e.message));
        assert_eq!(rest, words(&["--log", "json"]));
        assert_eq!(v.as_deref(), Some("-"));
        let (_, v) =
            split_args(&words(&["--log", "json"])).unwrap_or_else(|e| panic!("{}", e.message));
        assert!(v.is_none());
        assert!(split_args(&words(&[FLAG])).is_err());
    }
}
