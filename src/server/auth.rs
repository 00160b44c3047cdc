//! Who may do what: bearer tokens with a role and a namespace, OIDC tokens whose claims a rule
//! maps to a role and namespaces ([`super::oidc`]), optional anonymous reads.
//!
//! Secrets are compared in constant time and never appear in errors, logs or metrics; a token is
//! known there by its name only.

use super::oidc::Verifier;
use crate::key::Prefix;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The token roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// GET and PUT; may post run reports.
    ReadWrite,
    /// GET only; a PUT is answered 403 and nothing is stored.
    ReadOnly,
    /// The dashboard (`/ui`, its API) and run reports only: no artifact is read or written with
    /// it (a cache request is answered 403), so a leaked admin token exposes no artifact.
    Admin,
}

/// Role names as written in `NX_OPEN_CACHE_SERVER_TOKENS` and the config file.
pub const ROLES: &[&str] = &["read-write", "read-only", "admin"];

impl Role {
    /// `read-write`, `read-only` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ReadWrite => "read-write",
            Role::ReadOnly => "read-only",
            Role::Admin => "admin",
        }
    }

    /// Whether the role reads and writes artifacts (not only the dashboard).
    pub fn uses_cache(self) -> bool {
        self != Role::Admin
    }

    /// Parses `read-write` / `read-only` / `admin`; the error names the value and the allowed
    /// roles.
    pub fn parse(value: &str) -> Result<Role, String> {
        match value {
            "read-write" => Ok(Role::ReadWrite),
            "read-only" => Ok(Role::ReadOnly),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?} (allowed: {})",
                ROLES.join(", ")
            )),
        }
    }
}

/// One accepted bearer token.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSpec {
    /// Shown in logs and metrics, never the secret.
    pub name: String,
    pub role: Role,
    pub secret: String,
    /// Where PUTs go, inside the store's own prefix (empty: the store's prefix itself).
    pub write_prefix: Prefix,
    /// GET tries these in order and the first hit wins (usually `[write_prefix]`).
    pub read_prefixes: Vec<Prefix>,
}

impl std::fmt::Debug for TokenSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSpec")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("secret", &"<redacted>")
            .field("write_prefix", &self.write_prefix)
            .field("read_prefixes", &self.read_prefixes)
            .finish()
    }
}

impl TokenSpec {
    /// A token without namespace: writes to and reads from the store's own prefix.
    pub fn new(name: impl Into<String>, role: Role, secret: impl Into<String>) -> TokenSpec {
        TokenSpec {
            name: name.into(),
            role,
            secret: secret.into(),
            write_prefix: Prefix::default(),
            read_prefixes: vec![Prefix::default()],
        }
    }
}

/// The server's access rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    pub tokens: Vec<TokenSpec>,
    /// `Some(prefixes)`: requests without an `Authorization` header may GET, from these prefixes
    /// in order. `None`: no anonymous access.
    pub anonymous_read: Option<Vec<Prefix>>,
    /// OIDC identity: issuers, their keys and the rules from claims to access.
    pub oidc: Option<Oidc>,
}

/// The OIDC verifier of a server (compared by identity).
#[derive(Clone)]
pub struct Oidc(pub Arc<Verifier>);

impl PartialEq for Oidc {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Oidc {}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Someone requests may act as: a token, or an OIDC rule that grants access.
pub struct PrincipalSpec<'a> {
    pub name: &'a str,
    pub role: Role,
    pub write_prefix: &'a Prefix,
    pub read_prefixes: &'a [Prefix],
}

/// Shortest secret accepted (see [`check_secret`]).
pub const MIN_SECRET_LEN: usize = 16;

/// A token's secret must have at least [`MIN_SECRET_LEN`] characters, all printable ASCII
/// without spaces (no control character, no escape sequence, nothing a header could not carry).
/// The error names the token, never the secret.
pub fn check_secret(name: &str, secret: &str) -> Result<(), String> {
    if secret.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
        return Err(format!(
            "token {name:?}: the secret (not shown) must be printable ASCII without spaces, \
             control or non-ASCII characters; use a random hex or base64 string"
        ));
    }
    if secret.len() < MIN_SECRET_LEN {
        return Err(format!(
            "token {name:?}: the secret is shorter than {MIN_SECRET_LEN} characters"
        ));
    }
    Ok(())
}

impl Auth {
    /// The principals, in order: the tokens, then the OIDC rules that grant access (deny rules
    /// have none). The server keeps one slot of counts for each.
    pub fn principals(&self) -> Vec<PrincipalSpec<'_>> {
        let mut out: Vec<PrincipalSpec<'_>> = self
            .tokens
            .iter()
            .map(|t| PrincipalSpec {
                name: &t.name,
                role: t.role,
                write_prefix: &t.write_prefix,
                read_prefixes: &t.read_prefixes,
            })
            .collect();
        if let Some(Oidc(v)) = &self.oidc {
            out.extend(v.rules().filter_map(|(name, grant)| {
                grant.map(|g| PrincipalSpec {
                    name,
                    role: g.role,
                    write_prefix: &g.write_prefix,
                    read_prefixes: &g.read_prefixes,
                })
            }));
        }
        out
    }

    /// For each OIDC rule, the index of its principal in [`Auth::principals`] (`None`: a deny
    /// rule).
    pub fn rule_principals(&self) -> Vec<Option<usize>> {
        let mut next = self.tokens.len();
        match &self.oidc {
            None => Vec::new(),
            Some(Oidc(v)) => v
                .rules()
                .map(|(_, grant)| {
                    grant.map(|_| {
                        next += 1;
                        next - 1
                    })
                })
                .collect(),
        }
    }

    /// The proxy's form: one read-write (or read-only) token, no namespaces, no anonymous access.
    pub fn single(secret: String, role: Role) -> Auth {
        Auth {
            tokens: vec![TokenSpec::new("proxy", role, secret)],
            anonymous_read: None,
            oidc: None,
        }
    }

    /// `name:role:secret[,name:role:secret...]` (`NX_OPEN_CACHE_SERVER_TOKENS`). Errors name the
    /// entry by position and name and the allowed roles, never the secret; an invalid name or
    /// role is not shown either (fields in the wrong order would put the secret there).
    pub fn parse_tokens(list: &str) -> Result<Vec<TokenSpec>, String> {
        let mut tokens: Vec<TokenSpec> = Vec::new();
        for (i, entry) in list.split(',').enumerate() {
            let entry = entry.trim();
            let n = i + 1;
            if entry.is_empty() {
                return Err(format!(
                    "token entry {n} is empty (expected name:role:secret, role one of {})",
                    ROLES.join(", ")
                ));
            }
            let mut parts = entry.splitn(3, ':');
            let (Some(name), Some(role), Some(secret)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!(
                    "token entry {n} is not name:role:secret (role one of {})",
                    ROLES.join(", ")
                ));
            };
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            {
                return Err(format!(
                    "token entry {n}: the name (not shown) must be non-empty ASCII letters, \
                     digits, '_', '-' or '.' (the form is name:role:secret)"
                ));
            }
            // Until the role is known good, the fields may be out of order: no value is shown.
            let Ok(role) = Role::parse(role) else {
                return Err(format!(
                    "token entry {n}: the role (not shown) is not one of {} (the form is \
                     name:role:secret)",
                    ROLES.join(", ")
                ));
            };
            check_secret(name, secret)?;
            if tokens.iter().any(|t| t.name == name) {
                return Err(format!("token name {name:?} is used twice"));
            }
            if tokens
                .iter()
                .any(|t| bool::from(t.secret.as_bytes().ct_eq(secret.as_bytes())))
            {
                return Err(format!(
                    "token {name:?} has the same secret as another token"
                ));
            }
            tokens.push(TokenSpec::new(name, role, secret));
        }
        Ok(tokens)
    }

    /// Index of the token whose secret is `presented`. Every secret is compared, in constant
    /// time, whatever matches first.
    pub fn find(&self, presented: &[u8]) -> Option<usize> {
        let mut found = None;
        for (i, t) in self.tokens.iter().enumerate() {
            if bool::from(t.secret.as_bytes().ct_eq(presented)) && found.is_none() {
                found = Some(i);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_token_lists() {
        let tokens = Auth::parse_tokens(
            "ci:read-write:0123456789abcdef0,dev:read-only:zyxwvutsrqponmlk,lead:admin:adminsecret-0123456",
        )
        .map_err(|e| e.to_string());
        let tokens = tokens.as_deref().unwrap_or(&[]);
        assert_eq!(tokens.len(), 3);
        assert_eq!(tokens[2].role, Role::Admin);
        assert!(!Role::Admin.uses_cache() && Role::ReadOnly.uses_cache());
        assert_eq!(tokens[0].name, "ci");
        assert_eq!(tokens[0].role, Role::ReadWrite);
        assert_eq!(tokens[1].role, Role::ReadOnly);
        let auth = Auth {
            tokens: tokens.to_vec(),
            anonymous_read: None,
            oidc: None,
        };
        assert_eq!(auth.find(b"zyxwvutsrqponmlk"), Some(1));
        assert_eq!(auth.find(b"zyxwvutsrqponml"), None);
    }

    #[test]
    fn token_errors_name_the_entry_not_the_secret() {
        let secret = "supersecretvalue123";
        for (list, want) in [
            (format!("ci:owner:{secret}"), "read-write, read-only, admin"),
            (format!("ci:{secret}"), "entry 1"),
            ("ci:read-only:short".to_string(), "shorter"),
            (format!("{secret}:ci:read-write"), "entry 1"),
            (format!("ci:{secret}:read-write"), "entry 1"),
            (
                format!("ci:read-write:{secret}\u{1b}[2J"),
                "printable ASCII",
            ),
            (format!("ci:read-write:{secret}é"), "non-ASCII"),
            (format!("a:read-only:{secret},,"), "entry 2"),
            (
                format!("a:read-only:{secret},a:read-write:{secret}x"),
                "twice",
            ),
            (
                format!("a:read-only:{secret},b:read-write:{secret}"),
                "same secret",
            ),
        ] {
            let err = Auth::parse_tokens(&list).err().unwrap_or_default();
            assert!(err.contains(want), "{list}: {err}");
            assert!(!err.contains(secret), "{err}");
        }
    }
}
