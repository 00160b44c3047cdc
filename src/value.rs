//! What every configuration layer shares (the plugin's options in `config`, `serve`'s options in
//! `serve::config`, the seal layer's keys in `seal::keys`): the one error type, and the helpers
//! that read and describe values. Depends on no layer, so no layer depends on another for these.

use serde_json::Value;
use std::collections::HashMap;
use std::fmt;

/// A configuration mistake: the option as the user spelled it (`timeout`, `--listen`,
/// `NX_OPEN_CACHE_SERVER_LISTEN`, `"listen" in server.toml`; empty when the mistake is not one
/// option's) and the message, which names the option, the value and what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub option: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(option: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            option: option.into(),
            message: message.into(),
        }
    }

    /// `invalid value "x" for option "name": expected ...`.
    pub fn invalid(option: &str, value: &str, allowed: &str) -> Self {
        ConfigError::new(
            option,
            format!("invalid value {value:?} for option \"{option}\": expected {allowed}"),
        )
    }

    /// The message as a command shows it, e.g. `nx-open-cache serve: ...`.
    pub fn shown_by(&self, command: &str) -> String {
        format!("nx-open-cache {command}: {}", self.message)
    }
}

/// `nx-open-cache: <message>`.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nx-open-cache: {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// `one of "a", "b", "c"`.
pub fn one_of(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
    format!("one of {}", quoted.join(", "))
}

/// What a JSON (or TOML) value is, with its content: `string "x"`, `number 3`, `an array`. Not for
/// values that may be secrets.
pub fn describe_json(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "a table/object".into(),
    }
}

/// A yes/no word of a variable or a flag, any case, spaces trimmed: `true 1 yes on` or
/// `false 0 no off`; `None` for anything else.
pub fn bool_word(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// True when variable `name` is set to a yes word ([`bool_word`]).
pub(crate) fn truthy(env: &HashMap<String, String>, name: &str) -> bool {
    env.get(name).and_then(|v| bool_word(v)) == Some(true)
}

/// A boolean option of a JSON object: `true` / `false`, or the strings `"true"` / `"false"`
/// (what a command-line flag gives); `None` when unset or null.
pub fn bool_option(
    options: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<bool>, ConfigError> {
    match options.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
        Some(other) => Err(ConfigError::new(
            name,
            format!(
                "option \"{name}\" must be true or false, got {}",
                describe_json(other)
            ),
        )),
    }
}

/// A string option of a JSON object; `None` when unset or null.
pub fn string_option<'a>(
    options: &'a serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, ConfigError> {
    match options.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(ConfigError::new(
            name,
            format!(
                "option \"{name}\" must be a string, got {}",
                describe_json(other)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn words_and_descriptions() {
        for (w, b) in [
            ("1", Some(true)),
            (" ON ", Some(true)),
            ("No", Some(false)),
            ("", None),
            ("maybe", None),
        ] {
            assert_eq!(bool_word(w), b, "{w}");
        }
        let env: HashMap<String, String> = [
            ("A".to_owned(), "yes".to_owned()),
            ("B".to_owned(), "0".to_owned()),
        ]
        .into();
        assert!(truthy(&env, "A") && !truthy(&env, "B") && !truthy(&env, "C"));
        assert_eq!(one_of(&["a", "b"]), "one of \"a\", \"b\"");
        assert_eq!(describe_json(&json!("x")), "string \"x\"");
        assert_eq!(describe_json(&json!(3)), "number 3");
        let o = json!({"a": "true", "b": 1, "c": null});
        let o = o.as_object().unwrap();
        assert_eq!(bool_option(o, "a"), Ok(Some(true)));
        assert_eq!(bool_option(o, "c"), Ok(None));
        let e = bool_option(o, "b").unwrap_err();
        assert_eq!(
            (e.option.as_str(), e.message.as_str()),
            ("b", "option \"b\" must be true or false, got number 1")
        );
        assert_eq!(
            e.shown_by("serve"),
            "nx-open-cache serve: option \"b\" must be true or false, got number 1"
        );
        assert!(string_option(o, "b")
            .unwrap_err()
            .message
            .contains("must be a string"));
    }
}
