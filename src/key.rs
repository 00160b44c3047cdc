//! Validation of the names that reach storage: task hashes and key prefixes.
//!
//! Nothing from a request or from configuration touches a path or a URL before it passes here.

use std::fmt;

/// Longest hash accepted (Nx hashes are decimal u64 strings, well below this).
pub const MAX_HASH_LEN: usize = 128;
/// Longest key prefix accepted.
pub const MAX_PREFIX_LEN: usize = 256;

/// Why a hash or prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidName {
    pub what: &'static str,
    pub value: String,
    pub reason: &'static str,
}

impl fmt::Display for InvalidName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} {:?}: {}", self.what, self.value, self.reason)
    }
}

impl std::error::Error for InvalidName {}

/// A validated task hash: `[A-Za-z0-9_-]{1,128}`, ASCII only.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskHash(String);

impl TaskHash {
    pub fn parse(value: &str) -> Result<Self, InvalidName> {
        let bad = |reason| InvalidName {
            what: "hash",
            value: value.chars().take(160).collect(),
            reason,
        };
        if value.is_empty() {
            return Err(bad("it is empty"));
        }
        if value.len() > MAX_HASH_LEN {
            return Err(bad("it is longer than 128 characters"));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(bad("only ASCII letters, digits, '_' and '-' are allowed"));
        }
        Ok(TaskHash(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated key prefix: empty, or `/`-separated segments of `[A-Za-z0-9._-]`, none of them `.`
/// or `..`. A trailing `/` is accepted and dropped; the stored form has no leading or trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prefix(String);

impl Prefix {
    pub fn parse(value: &str) -> Result<Self, InvalidName> {
        let bad = |reason| InvalidName {
            what: "prefix",
            value: value.to_owned(),
            reason,
        };
        if value.len() > MAX_PREFIX_LEN {
            return Err(bad("it is longer than 256 characters"));
        }
        let trimmed = value.strip_suffix('/').unwrap_or(value);
        if trimmed.is_empty() {
            return Ok(Prefix::default());
        }
        for segment in trimmed.split('/') {
            if segment.is_empty() {
                return Err(bad("it has an empty segment (leading '/' or '//')"));
            }
            if segment == "." || segment == ".." {
                return Err(bad("'.' and '..' segments are not allowed"));
            }
            if !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            {
                return Err(bad(
                    "only ASCII letters, digits, '_', '-', '.' and '/' between segments are allowed",
                ));
            }
        }
        Ok(Prefix(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `self/ns`: a namespace inside this prefix (either side may be empty).
    pub fn join(&self, ns: &Prefix) -> Result<Prefix, InvalidName> {
        match (self.is_empty(), ns.is_empty()) {
            (_, true) => Ok(self.clone()),
            (true, false) => Ok(ns.clone()),
            (false, false) => Prefix::parse(&format!("{}/{}", self.0, ns.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_nx_hashes() {
        for h in ["380853340397997038", "a", "A_b-9", &"x".repeat(128)] {
            assert_eq!(TaskHash::parse(h).map(|h| h.0), Ok(h.to_string()));
        }
    }

    #[test]
    fn refuses_bad_hashes() {
        for h in [
            "",
            "../x",
            "a/b",
            "a.b",
            "é",
            "a b",
            "%2e%2e",
            &"x".repeat(129),
        ] {
            let err = TaskHash::parse(h).expect_err(h);
            assert_eq!(err.what, "hash");
            assert!(err.to_string().contains("invalid hash"), "{err}");
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(Prefix::parse("").map(|p| p.0), Ok(String::new()));
        assert_eq!(Prefix::parse("team-a/").map(|p| p.0), Ok("team-a".into()));
        assert_eq!(Prefix::parse("a/b.c/d").map(|p| p.0), Ok("a/b.c/d".into()));
        for p in ["/abs", "a//b", "..", "a/../b", "a b", "ü", "./a"] {
            assert!(Prefix::parse(p).is_err(), "{p} should be refused");
        }
        let base = Prefix::parse("team").map_err(|e| e.to_string());
        let pr = Prefix::parse("pr/42").map_err(|e| e.to_string());
        let (base, pr) = (base.as_ref().ok(), pr.as_ref().ok());
        let joined = base.zip(pr).map(|(b, p)| b.join(p).map(|j| j.0));
        assert_eq!(joined, Some(Ok("team/pr/42".into())));
        let empty = Prefix::default();
        assert_eq!(
            pr.map(|p| empty.join(p).map(|j| j.0)),
            Some(Ok("pr/42".into()))
        );
        assert_eq!(
            base.map(|b| b.join(&empty).map(|j| j.0)),
            Some(Ok("team".into()))
        );
        let long = Prefix::parse(&"a".repeat(200)).map_err(|e| e.to_string());
        let too_long = long.as_ref().ok().map(|l| l.join(l).is_err());
        assert_eq!(too_long, Some(true));
    }
}
