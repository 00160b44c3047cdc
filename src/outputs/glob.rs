//! Nx's glob dialect for output entries, compiled onto `globset`.
//!
//! Nx hands plain globs (`*`, `**`, `?`, `[...]`, `{a,b}`) to globset with `literal_separator`, and
//! rewrites extglobs (`!(a|b)`, `?(x)`, `+(x)`, `@(x)`, `*(x)`, `(a|b)`, `{,x}`) into a set of
//! including and excluding plain globs first. That rewrite is approximate, and the approximations
//! are part of Nx's behaviour (a negated group in the last segment only excludes the exact name,
//! an optional group in a middle segment turns the segment into `*`, ...), so this module
//! reproduces the rewrite rule for rule rather than implementing exact extglob semantics.
//!
//! The set semantics: a path matches when it matches an including glob and no excluding one; a
//! set without including globs matches everything not excluded. A glob ending in `/` means
//! everything below (`dir/` is `dir/**`).

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

/// A glob that cannot be compiled: the glob as written and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobError {
    /// The glob as the caller wrote it.
    pub glob: String,
    /// Why it is invalid.
    pub reason: String,
}

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid glob '{}': {}", self.glob, self.reason)
    }
}

impl std::error::Error for GlobError {}

/// Whether a path segment carries glob syntax: an unescaped `*`, `?`, `[`, `{`, `}` or `(`.
/// `@scope`, `a+b` and `x\*` (an escaped `*`) are names.
fn is_pattern_segment(segment: &str) -> bool {
    let mut chars = segment.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if cfg!(not(windows)) => {
                chars.next();
            }
            '*' | '?' | '[' | '{' | '}' | '(' => return true,
            _ => {}
        }
    }
    false
}

/// Whether Nx treats an output entry as a glob rather than a plain path: a negation (leading
/// `!`) or a segment with unescaped glob syntax (`*`, `?`, `[`, `{`, `}`, `(`).
pub fn contains_glob_pattern(value: &str) -> bool {
    value.starts_with('!') || value.split('/').any(is_pattern_segment)
}

/// Upper bound on the plain globs one extglob may expand into (each optional group doubles them).
const MAX_ALTERNATIVES: usize = 4096;

/// The directory a glob reads from: its leading segments up to the first one with glob syntax,
/// without a trailing `/`. `""` is the root, and so is `.`.
pub fn target_directory(glob: &str) -> &str {
    let mut end = 0;
    for segment in glob.split('/') {
        if is_pattern_segment(segment) {
            break;
        }
        end = (end + segment.len() + 1).min(glob.len());
    }
    let dir = glob[..end].trim_end_matches('/');
    if dir.split('/').all(|s| s.is_empty() || s == ".") {
        ""
    } else {
        dir
    }
}

/// A compiled set of Nx globs (see the module documentation for the semantics).
#[derive(Debug)]
pub struct NxGlobSet {
    include: GlobSet,
    exclude: GlobSet,
}

impl NxGlobSet {
    /// Compiles `globs`; the error names the glob (as written) that fails.
    pub fn new<S: AsRef<str>>(globs: &[S]) -> Result<NxGlobSet, GlobError> {
        let mut plain: Vec<(String, &str)> = Vec::new();
        for glob in globs {
            let glob = glob.as_ref();
            for part in split_outer_braces(glob) {
                let body = part.strip_prefix('!').unwrap_or(part);
                if body.contains(['!', '|', '(']) || body.contains("{,") {
                    for converted in convert_extglob(part).map_err(|reason| GlobError {
                        glob: glob.to_owned(),
                        reason,
                    })? {
                        plain.push((converted, glob));
                    }
                } else {
                    plain.push((part.to_owned(), glob));
                }
            }
        }
        let mut include = GlobSetBuilder::new();
        let mut exclude = GlobSetBuilder::new();
        for (pattern, original) in plain {
            let (negated, body) = match pattern.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, pattern.as_str()),
            };
            let body = if body.ends_with('/') {
                format!("{body}**")
            } else {
                body.to_owned()
            };
            let compiled = GlobBuilder::new(&body)
                .literal_separator(true)
                .build()
                .map_err(|e| GlobError {
                    glob: original.to_owned(),
                    reason: e.to_string(),
                })?;
            if negated {
                exclude.add(compiled);
            } else {
                include.add(compiled);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build().map_err(|e| GlobError {
                glob: globs
                    .iter()
                    .map(|g| g.as_ref())
                    .collect::<Vec<_>>()
                    .join(", "),
                reason: e.to_string(),
            })
        };
        Ok(NxGlobSet {
            include: build(include)?,
            exclude: build(exclude)?,
        })
    }

    /// Whether `path` is selected.
    pub fn is_match<P: AsRef<Path>>(&self, path: P) -> bool {
        let path = path.as_ref();
        if self.include.is_empty() {
            !self.exclude.is_match(path)
        } else if self.exclude.is_empty() {
            self.include.is_match(path)
        } else {
            self.include.is_match(path) && !self.exclude.is_match(path)
        }
    }
}

/// Compiled sets by their globs: a task's outputs are expanded more than once per run (hashing,
/// storing, restoring), and compiling a set costs more than matching with it.
static CACHE: OnceLock<Mutex<HashMap<String, Arc<NxGlobSet>>>> = OnceLock::new();
/// Beyond this many sets the cache starts over (a bound on memory, not a tuning knob).
const CACHE_LIMIT: usize = 4096;

/// [`NxGlobSet::new`], compiled once per distinct list of globs (in that order) per process.
pub fn cached_set(globs: &[String]) -> Result<Arc<NxGlobSet>, GlobError> {
    let key = globs.join("\0");
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(set) = cache.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return Ok(set);
    }
    let set = Arc::new(NxGlobSet::new(globs)?);
    if let Ok(mut m) = cache.lock() {
        if m.len() >= CACHE_LIMIT {
            m.clear();
        }
        m.insert(key, Arc::clone(&set));
    }
    Ok(set)
}

/// `{a,b,c}` as a whole glob (its first brace closing at the last character) is split into its
/// alternatives, each rewritten on its own; anything else is returned unchanged.
fn split_outer_braces(glob: &str) -> Vec<&str> {
    let bytes = glob.as_bytes();
    if bytes.first() != Some(&b'{') || bytes.last() != Some(&b'}') {
        return vec![glob];
    }
    let mut depth = 0usize;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'{' {
            depth += 1;
        } else if b == b'}' {
            depth = depth.saturating_sub(1);
            if depth == 0 && i != bytes.len() - 1 {
                return vec![glob];
            }
        }
    }
    let inner = &glob[1..glob.len() - 1];
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, b) in inner.bytes().enumerate() {
        match b {
            b'{' => depth += 1,
            b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
}

/// One piece of a path segment, as Nx's extglob grammar reads it.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    /// `*(..)`
    ZeroOrMore(String),
    /// `?(..)` and `{,..}`
    ZeroOrOne(String),
    /// `+(..)`
    OneOrMore(String),
    /// `@(..)`
    ExactOne(String),
    /// `!(..)`
    Negated(String),
    /// `!(..).`
    NegatedFileName(String),
    /// `!(..)*`
    NegatedWildcard(String),
    /// `(..)`
    Group(String),
    /// Anything else, kept verbatim.
    Text(String),
}

fn braced(items: &str) -> String {
    if items.contains(',') {
        format!("{{{items}}}")
    } else {
        items.to_owned()
    }
}

impl Piece {
    fn render(&self) -> String {
        match self {
            Piece::ZeroOrMore(s)
            | Piece::ZeroOrOne(s)
            | Piece::OneOrMore(s)
            | Piece::ExactOne(s)
            | Piece::Negated(s)
            | Piece::Group(s) => braced(s),
            Piece::NegatedFileName(s) => format!("{}.", braced(s)),
            Piece::NegatedWildcard(s) => format!("{}*", braced(s)),
            Piece::Text(s) => s.clone(),
        }
    }
}

/// The alternatives inside a group, `|` or `,` separated, as one `,`-separated list.
fn group_items(inner: &str) -> String {
    inner.replace('|', ",")
}

/// Reads `(...)` content up to the first `close` in `s` (which starts after the opening
/// delimiter): the items and the rest after the closing delimiter.
fn take_group(s: &str, close: char) -> Option<(String, &str)> {
    let end = s.find(close)?;
    Some((group_items(&s[..end]), &s[end + close.len_utf8()..]))
}

/// One piece at the start of `t`, and what remains. Like Nx's parser, a group that does not
/// close falls through to plain text (which may then read nothing: the caller's error).
fn piece(t: &str) -> (Piece, &str) {
    if let Some(rest) = t.strip_prefix('(') {
        if let Some((g, r)) = take_group(rest, ')') {
            return (Piece::Group(g), r);
        }
    }
    for (open, make) in [
        ("*(", Piece::ZeroOrMore as fn(String) -> Piece),
        ("?(", Piece::ZeroOrOne),
        ("+(", Piece::OneOrMore),
        ("@(", Piece::ExactOne),
    ] {
        if let Some(rest) = t.strip_prefix(open) {
            if let Some((g, r)) = take_group(rest, ')') {
                return (make(g), r);
            }
        }
    }
    if let Some(rest) = t.strip_prefix("!(") {
        if let Some((g, r)) = take_group(rest, ')') {
            if let Some(r2) = r.strip_prefix('.') {
                return (Piece::NegatedFileName(g), r2);
            }
            if let Some(r2) = r.strip_prefix('*') {
                return (Piece::NegatedWildcard(g), r2);
            }
            return (Piece::Negated(g), r);
        }
    }
    if let Some(rest) = t.strip_prefix("{,") {
        if let Some((g, r)) = take_group(rest, '}') {
            return (Piece::ZeroOrOne(g), r);
        }
    }
    if let Some(c) = t.chars().next() {
        if matches!(c, '?' | '+' | '@' | '!') && !t[1..].starts_with('(') {
            return (Piece::Text(c.to_string()), &t[1..]);
        }
    }
    // Plain text: up to the first `{,` if there is one, else up to the first `?+@!(`.
    let end = match t.find("{,") {
        Some(i) => i,
        None => t.find(['?', '+', '@', '!', '(']).unwrap_or(t.len()),
    };
    (Piece::Text(t[..end].to_owned()), &t[end..])
}

/// The pieces of one path segment. A `?`, `+`, `@` or `!` that opens no group stands for itself
/// (`@scope`, `g+en`, the `?` wildcard). Errors where Nx's parser stops making progress (a group
/// that never closes).
fn parse_segment(segment: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = segment;
    while !rest.is_empty() {
        let before = rest.len();
        let (p, r) = piece(rest);
        if r.len() == before {
            return Err(format!(
                "cannot read the extglob segment '{segment}' at '{rest}'"
            ));
        }
        pieces.push(p);
        rest = r;
    }
    Ok(pieces)
}

/// The alternatives one segment expands into: (text, excluding?).
fn expand_segment(
    existing: &str,
    pieces: &[Piece],
    last: bool,
    negative: bool,
    out: &mut Vec<(String, bool)>,
) -> Result<(), String> {
    if out.len() > MAX_ALTERNATIVES {
        return Err(format!("expands into more than {MAX_ALTERNATIVES} globs"));
    }
    let Some(first) = pieces.first() else {
        out.push((existing.to_owned(), negative));
        return Ok(());
    };
    let rest = &pieces[1..];
    let with = format!("{existing}{}", first.render());
    // Leaving a `*(..)` or `!(..)` group out of a middle segment makes the segment `*`.
    let without = if last { existing } else { "*" };
    match first {
        Piece::ZeroOrMore(_) => {
            expand_segment(without, rest, last, negative, out)?;
            expand_segment(&with, rest, last, negative, out)
        }
        Piece::ZeroOrOne(_) => {
            expand_segment(existing, rest, last, negative, out)?;
            expand_segment(&with, rest, last, negative, out)
        }
        Piece::Negated(_) => {
            expand_segment(without, rest, last, negative, out)?;
            expand_segment(&with, rest, last, true, out)
        }
        Piece::NegatedFileName(_) => {
            expand_segment("*.", rest, last, negative, out)?;
            expand_segment(&with, rest, last, true, out)
        }
        Piece::NegatedWildcard(_) => {
            expand_segment("*", rest, last, negative, out)?;
            expand_segment(&with, rest, last, true, out)
        }
        Piece::OneOrMore(_) | Piece::ExactOne(_) | Piece::Group(_) | Piece::Text(_) => {
            expand_segment(&with, rest, last, negative, out)
        }
    }
}

/// Rewrites one extglob into plain globs (`!`-prefixed ones exclude), the way Nx does.
pub(crate) fn convert_extglob(glob: &str) -> Result<Vec<String>, String> {
    let (negated, body) = match glob.strip_prefix('!') {
        Some(rest) if !rest.starts_with('(') => (true, rest),
        _ => (false, glob),
    };
    let mut segments: Vec<Vec<(String, bool)>> = Vec::new();
    let parts: Vec<&str> = body.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let pieces = parse_segment(part)?;
        let mut alternatives = Vec::new();
        expand_segment("", &pieces, i == parts.len() - 1, false, &mut alternatives)?;
        segments.push(alternatives);
    }
    let total = segments
        .iter()
        .try_fold(1usize, |acc, s| acc.checked_mul(s.len()))
        .filter(|n| *n <= MAX_ALTERNATIVES)
        .ok_or_else(|| format!("expands into more than {MAX_ALTERNATIVES} globs"))?;
    let mut out = std::collections::BTreeSet::new();
    let mut index = vec![0usize; segments.len()];
    for _ in 0..total {
        let mut path = String::new();
        let mut negative = false;
        let mut whole = false;
        for (i, seg) in segments.iter().enumerate() {
            let (text, neg) = &seg[index[i]];
            whole = i == segments.len() - 1;
            path.push_str(text);
            path.push('/');
            if *neg {
                negative = true;
                if !whole {
                    break;
                }
            }
        }
        if whole {
            path.pop();
        }
        out.insert(if negative || negated {
            format!("!{path}")
        } else {
            path
        });
        // Next combination (odometer, last segment fastest).
        for i in (0..index.len()).rev() {
            index[i] += 1;
            if index[i] < segments[i].len() {
                break;
            }
            index[i] = 0;
        }
    }
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(g: &str) -> Vec<String> {
        convert_extglob(g).unwrap()
    }

    #[test]
    fn rewrites_extglobs_like_nx() {
        assert_eq!(
            conv("dist/!(cache|cache2)/**/!(README|LICENSE).(js|ts)"),
            [
                "!dist/*/**/{README,LICENSE}.{js,ts}",
                "!dist/{cache,cache2}/",
                "dist/*/**/*.{js,ts}"
            ]
        );
        assert_eq!(
            conv("packages/!(package-a)*"),
            ["!packages/package-a*", "packages/*"]
        );
        assert_eq!(
            conv("packages/!(package-a)*/package.json"),
            ["!packages/package-a*/", "packages/*/package.json"]
        );
        // `+`, `@`, `?` and `!` that open no group stand for themselves.
        assert_eq!(
            conv("libs/**/?(*.)+spec.ts?(.snap)"),
            [
                "libs/**/*.+spec.ts",
                "libs/**/*.+spec.ts.snap",
                "libs/**/+spec.ts",
                "libs/**/+spec.ts.snap"
            ]
        );
        assert_eq!(conv("@scope/+(index).js"), ["@scope/index.js"]);
        assert_eq!(conv("a/x?(s)y/b"), ["a/xsy/b", "a/xy/b"]);
        // The last-segment quirk: `!(a)` there only excludes the exact name `a`.
        assert_eq!(conv("dist/!(a|b)"), ["!dist/{a,b}", "dist/"]);
        assert_eq!(
            conv("**/*.spec.ts{,.snap}"),
            ["**/*.spec.ts", "**/*.spec.ts.snap"]
        );
    }

    #[test]
    fn unreadable_extglobs_are_errors() {
        assert!(convert_extglob("dist/!(a").is_err());
        assert!(convert_extglob("dist/a(b").is_err());
        assert!(convert_extglob("?(").is_err());
        assert!(convert_extglob("a/@(b/c)").is_err());
        assert!(convert_extglob("dist/x!y").is_ok());
    }

    #[test]
    fn set_semantics() {
        let s = NxGlobSet::new(&["dist/!(a|b)"]).unwrap();
        assert!(s.is_match("dist/c"));
        assert!(s.is_match("dist/a/x.js"));
        assert!(!s.is_match("dist/a"));
        let s = NxGlobSet::new(&["!dist/**"]).unwrap();
        assert!(s.is_match("other/x"));
        assert!(!s.is_match("dist/x"));
        let s = NxGlobSet::new(&["{dist,out}/**"]).unwrap();
        assert!(s.is_match("out/x"));
        let s = NxGlobSet::new(&["dist/"]).unwrap();
        assert!(s.is_match("dist/a/b"));
        assert!(!s.is_match("other"));
    }

    #[test]
    fn target_directories() {
        assert_eq!(target_directory("dist/app/**/*.js"), "dist/app");
        assert_eq!(target_directory("dist/app/"), "dist/app");
        assert_eq!(target_directory("top.js"), "top.js");
        assert_eq!(target_directory("**/*.js"), "");
        assert_eq!(target_directory("@scope/a+b/!(x)"), "@scope/a+b");
        assert_eq!(target_directory("{a,b}/x"), "");
        assert_eq!(target_directory("out//sub/*"), "out//sub");
        assert_eq!(target_directory("./*.js"), "");
        assert_eq!(target_directory("./out/*.js"), "./out");
        assert_eq!(target_directory("lib/\\*"), "lib/\\*");
        assert!(!contains_glob_pattern("lib/\\*"));
        assert!(!contains_glob_pattern("@scope/a+b/x!y"));
        assert!(contains_glob_pattern("!x"));
        assert!(contains_glob_pattern("a/b}"));
    }

    #[test]
    fn invalid_globs_name_the_glob() {
        let e = NxGlobSet::new(&["dist/[a"]).unwrap_err();
        assert_eq!(e.glob, "dist/[a");
        assert!(e.to_string().contains("dist/[a"), "{e}");
        assert!(NxGlobSet::new(&["dist/{a"]).is_err());
    }
}
