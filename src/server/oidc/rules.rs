//! Rules from a verified token's claims to access: conditions on claims (equality, globs, lists),
//! tried in order, the first match wins.
//!
//! A condition's value is a string (equality, or a glob when it holds `*`, `?` or `[`: `*` stays
//! within one `/`-separated segment, `**` crosses them) or a list of those (any one matches). A
//! claim that is a number or a boolean is compared by its JSON text (`"true"`, `"123"`); a
//! missing claim, or one that is an array or an object, never matches: a rule cannot be met by
//! leaving a claim out.

use super::{Grant, RuleSpec};
use globset::{GlobBuilder, GlobMatcher};
use serde_json::{Map, Value};

/// One accepted value of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    Glob(String),
}

impl Pattern {
    /// A glob when the text holds a glob character, else an exact value.
    pub fn parse(text: &str) -> Pattern {
        if text.contains(['*', '?', '[']) {
            Pattern::Glob(text.to_owned())
        } else {
            Pattern::Exact(text.to_owned())
        }
    }

    /// As written in the config file.
    pub fn as_str(&self) -> &str {
        match self {
            Pattern::Exact(s) | Pattern::Glob(s) => s,
        }
    }
}

/// One condition: the claim must match one of the patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub claim: String,
    pub any_of: Vec<Pattern>,
}

/// A pattern ready to match.
enum Compiled {
    Exact(String),
    Glob(GlobMatcher),
}

/// Compiles a glob: `*` within a segment, `**` across segments. The error names the pattern.
pub fn compile_glob(pattern: &str) -> Result<GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("invalid glob {pattern:?}: {}", e.kind()))
}

/// A rule ready to match.
pub struct Rule {
    pub name: String,
    /// Index of the issuer the rule is for; `None`: any issuer.
    pub issuer: Option<usize>,
    conditions: Vec<(String, Vec<(Compiled, String)>)>,
    /// `None`: a deny rule.
    pub grant: Option<Grant>,
}

/// Why a rule matches a token or not, for `--explain-token`.
pub struct Verdict {
    pub matched: bool,
    /// One line per condition, e.g. `repository = "acme/monorepo": yes`.
    pub lines: Vec<String>,
}

/// The value of a claim as conditions see it: strings as they are, numbers and booleans by
/// their JSON text; `None` for missing, null, arrays and objects.
pub fn claim_text(claims: &Map<String, Value>, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

impl Rule {
    /// Compiles `spec`; `issuer` is the index of its issuer (resolved by the caller).
    pub fn compile(spec: &RuleSpec, issuer: Option<usize>) -> Result<Rule, String> {
        let mut conditions = Vec::new();
        for c in &spec.conditions {
            let mut any = Vec::new();
            for p in &c.any_of {
                let compiled =
                    match p {
                        Pattern::Exact(s) => Compiled::Exact(s.clone()),
                        Pattern::Glob(g) => Compiled::Glob(compile_glob(g).map_err(|e| {
                            format!("rule {:?}, claim {:?}: {e}", spec.name, c.claim)
                        })?),
                    };
                any.push((compiled, p.as_str().to_owned()));
            }
            conditions.push((c.claim.clone(), any));
        }
        Ok(Rule {
            name: spec.name.clone(),
            issuer,
            conditions,
            grant: spec.grant.clone(),
        })
    }

    /// Whether the token of `issuer` with these claims meets every condition.
    pub fn matches(&self, issuer: usize, claims: &Map<String, Value>) -> bool {
        if self.issuer.is_some_and(|i| i != issuer) {
            return false;
        }
        self.conditions.iter().all(|(claim, any)| {
            claim_text(claims, claim).is_some_and(|v| any.iter().any(|(p, _)| p.matches(&v)))
        })
    }

    /// [`Rule::matches`] with the reason of each condition.
    pub fn verdict(
        &self,
        issuer: usize,
        issuer_names: &[String],
        claims: &Map<String, Value>,
    ) -> Verdict {
        let mut lines = Vec::new();
        if let Some(i) = self.issuer.filter(|i| *i != issuer) {
            let wanted = issuer_names.get(i).map(String::as_str).unwrap_or("?");
            lines.push(format!("issuer is {wanted:?}: no"));
            return Verdict {
                matched: false,
                lines,
            };
        }
        let mut matched = true;
        for (claim, any) in &self.conditions {
            let wanted = if any.len() == 1 {
                format!("{:?}", any[0].1)
            } else {
                format!(
                    "one of [{}]",
                    any.iter()
                        .map(|(_, s)| format!("{s:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let line = match claim_text(claims, claim) {
                None => {
                    matched = false;
                    format!("{claim} = {wanted}: no (the token has no such claim, or not a string)")
                }
                Some(v) if any.iter().any(|(p, _)| p.matches(&v)) => {
                    format!("{claim} = {wanted}: yes ({v:?})")
                }
                Some(v) => {
                    matched = false;
                    format!("{claim} = {wanted}: no (the token has {v:?})")
                }
            };
            lines.push(line);
        }
        if self.conditions.is_empty() {
            lines.push("no condition: every token of its issuer".to_owned());
        }
        Verdict { matched, lines }
    }
}

impl Compiled {
    fn matches(&self, value: &str) -> bool {
        match self {
            Compiled::Exact(s) => s == value,
            Compiled::Glob(g) => g.is_match(value),
        }
    }
}

/// The first rule that matches, by index.
pub fn first_match(rules: &[Rule], issuer: usize, claims: &Map<String, Value>) -> Option<usize> {
    rules.iter().position(|r| r.matches(issuer, claims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Prefix;
    use crate::server::auth::Role;
    use serde_json::json;

    fn rule(name: &str, issuer: Option<usize>, conds: &[(&str, &[&str])], deny: bool) -> Rule {
        let spec = RuleSpec {
            name: name.into(),
            issuer: None,
            conditions: conds
                .iter()
                .map(|(c, v)| Condition {
                    claim: (*c).into(),
                    any_of: v.iter().map(|s| Pattern::parse(s)).collect(),
                })
                .collect(),
            grant: (!deny).then(|| Grant {
                role: Role::ReadWrite,
                write_prefix: Prefix::default(),
                read_prefixes: vec![Prefix::default()],
            }),
        };
        Rule::compile(&spec, issuer).unwrap_or_else(|e| panic!("{e}"))
    }

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn first_match_wins_with_equality_globs_and_lists() {
        let rules = vec![
            rule(
                "main",
                Some(0),
                &[
                    ("repository", &["acme/monorepo"]),
                    ("ref", &["refs/heads/main"]),
                ],
                false,
            ),
            rule(
                "release",
                Some(0),
                &[
                    ("repository", &["acme/monorepo"]),
                    ("ref", &["refs/heads/release/**"]),
                ],
                false,
            ),
            rule(
                "pr",
                Some(0),
                &[
                    ("repository", &["acme/monorepo"]),
                    ("event_name", &["pull_request", "merge_group"]),
                ],
                false,
            ),
            rule("rest", Some(0), &[], true),
        ];
        let main = claims(
            json!({"repository": "acme/monorepo", "ref": "refs/heads/main", "event_name": "push"}),
        );
        assert_eq!(first_match(&rules, 0, &main), Some(0));
        let rel = claims(
            json!({"repository": "acme/monorepo", "ref": "refs/heads/release/1.2/x", "event_name": "push"}),
        );
        assert_eq!(first_match(&rules, 0, &rel), Some(1));
        let pr = claims(
            json!({"repository": "acme/monorepo", "ref": "refs/pull/7/merge", "event_name": "merge_group"}),
        );
        assert_eq!(first_match(&rules, 0, &pr), Some(2));
        let other = claims(json!({"repository": "evil/monorepo", "ref": "refs/heads/main"}));
        assert_eq!(first_match(&rules, 0, &other), Some(3));
        // Another issuer: no rule of issuer 0 applies.
        assert_eq!(first_match(&rules, 1, &main), None);
    }

    #[test]
    fn a_glob_star_stays_within_a_segment() {
        let r = rule("r", None, &[("ref", &["refs/heads/*"])], false);
        assert!(r.matches(0, &claims(json!({"ref": "refs/heads/main"}))));
        assert!(!r.matches(0, &claims(json!({"ref": "refs/heads/feat/x"}))));
        assert!(!r.matches(0, &claims(json!({"ref": "refs/heads"}))));
    }

    #[test]
    fn missing_and_structured_claims_never_match_numbers_and_booleans_by_text() {
        let r = rule(
            "r",
            None,
            &[("ref_protected", &["true"]), ("project_id", &["42"])],
            false,
        );
        assert!(r.matches(0, &claims(json!({"ref_protected": true, "project_id": 42}))));
        assert!(r.matches(
            0,
            &claims(json!({"ref_protected": "true", "project_id": "42"}))
        ));
        assert!(!r.matches(0, &claims(json!({"project_id": 42}))));
        assert!(!r.matches(
            0,
            &claims(json!({"ref_protected": ["true"], "project_id": 42}))
        ));
        assert!(!r.matches(0, &claims(json!({"ref_protected": null, "project_id": 42}))));
        // A glob cannot be met by a missing claim either.
        let any = rule("any", None, &[("environment", &["*"])], false);
        assert!(!any.matches(0, &claims(json!({}))));
    }

    #[test]
    fn verdicts_say_which_condition_failed_and_what_the_token_has() {
        let r = rule(
            "main",
            Some(0),
            &[
                ("repository", &["acme/monorepo"]),
                ("ref", &["refs/heads/main"]),
            ],
            false,
        );
        let v = r.verdict(
            0,
            &["gh".into()],
            &claims(json!({"repository": "acme/monorepo", "ref": "refs/heads/x"})),
        );
        assert!(!v.matched);
        assert!(
            v.lines[0].ends_with("yes (\"acme/monorepo\")"),
            "{:?}",
            v.lines
        );
        assert!(
            v.lines[1].contains("no (the token has \"refs/heads/x\")"),
            "{:?}",
            v.lines
        );
        let v = r.verdict(1, &["gh".into(), "gl".into()], &claims(json!({})));
        assert_eq!(v.lines, vec!["issuer is \"gh\": no".to_string()]);
    }

    #[test]
    fn a_bad_glob_is_named() {
        let spec = RuleSpec {
            name: "r".into(),
            issuer: None,
            conditions: vec![Condition {
                claim: "ref".into(),
                any_of: vec![Pattern::parse("refs/[heads")],
            }],
            grant: None,
        };
        let e = Rule::compile(&spec, None).err().unwrap_or_default();
        assert!(e.contains("refs/[heads") && e.contains("\"ref\""), "{e}");
    }
}
