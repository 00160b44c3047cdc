//! OIDC identity for `serve`: a CI job presents the short-lived token its CI signed for it
//! (GitHub Actions, GitLab CI, ...), and rules from the token's claims decide its role and
//! namespaces. No shared secret to leak, and the branch decides what a job may write.
//!
//! Verification follows RFC 8725 and fails closed: the token's `iss` picks a configured issuer
//! (an unknown issuer is refused), its `alg` must be one the issuer allows (RS256, ES256 or EdDSA
//! only: never `none`, never an HMAC, so a public key can never serve as an HMAC secret), its
//! `kid` names a key of the issuer's JWKS ([`keys`]), the signature is checked by `jsonwebtoken`,
//! `exp` is required, `nbf` and `iat` are honoured with the issuer's clock skew, `aud` must hold
//! one of the issuer's audiences, and a lifetime (`exp` - `iat`) above the issuer's maximum is
//! refused. Then the rules ([`rules`]) are tried in order; the first match gives the access (or
//! refuses, for a deny rule); no match is refused.
//!
//! Keys: fetched at start (a failure is a warning), again when a token names an unknown `kid` (at
//! most once a minute per issuer: a key rotation is picked up, a flood of made-up kids costs one
//! fetch a minute) and in the background when older than an hour; a failed fetch keeps the keys
//! already held. Verified tokens are kept (found by their bytes) until they expire, so a CI job's
//! many requests pay one signature check; the cache is emptied when an issuer's
//! keys change (a key removed from the JWKS stops working at once).

pub mod keys;
pub mod rules;

use crate::key::Prefix;
use crate::server::auth::Role;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, Validation};
use rules::{Condition, Rule};
use serde_json::{Map, Value};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The accepted signature algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Es256,
    EdDsa,
}

/// Their names as in a JWT header and the config file.
pub const ALGS: &[&str] = &["RS256", "ES256", "EdDSA"];

impl Alg {
    pub fn parse(name: &str) -> Option<Alg> {
        match name {
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            "EdDSA" => Some(Alg::EdDsa),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            Alg::Rs256 => Algorithm::RS256,
            Alg::Es256 => Algorithm::ES256,
            Alg::EdDsa => Algorithm::EdDSA,
        }
    }
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `<issuer>/.well-known/openid-configuration` names the JWKS.
    Discovery,
    /// A configured JWKS URL.
    Url(String),
    /// A JWKS file (air-gapped): read at start and again on an unknown `kid`.
    File(PathBuf),
}

/// One trusted issuer (`[[oidc_issuers]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerSpec {
    pub name: String,
    /// The exact `iss`.
    pub issuer: String,
    /// `aud` must hold one of these.
    pub audiences: Vec<String>,
    pub keys: KeySource,
    pub algorithms: Vec<Alg>,
    pub clock_skew: Duration,
    pub max_lifetime: Duration,
}

/// Defaults of an issuer's optional keys.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(6 * 3600);

/// What a rule grants (a token's role and namespaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub role: Role,
    pub write_prefix: Prefix,
    pub read_prefixes: Vec<Prefix>,
}

/// One rule (`[[oidc_rules]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    pub name: String,
    /// The issuer's name; `None`: any issuer.
    pub issuer: Option<String>,
    pub conditions: Vec<Condition>,
    /// `None`: a deny rule.
    pub grant: Option<Grant>,
}

/// The OIDC part of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OidcConfig {
    pub issuers: Vec<IssuerSpec>,
    pub rules: Vec<RuleSpec>,
}

/// Longest token considered (GitHub's are ~1 KB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Unknown `kid`: at most one key fetch per issuer in this time.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// How often keys are fetched again in the background.
pub const KEYS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Verified tokens kept at most, and the longest kept (longer ones are checked on every request):
/// at most 16 MiB.
const CACHE_ENTRIES: usize = 4096;
const MAX_CACHED_TOKEN_BYTES: usize = 4096;

/// The keys an issuer holds now.
#[derive(Default)]
struct Held {
    keys: Vec<Arc<keys::Key>>,
    /// The usable keys as published (kid, alg and key material), to tell a change.
    fingerprint: String,
    fetched: Option<Instant>,
    /// Why the last fetch failed (cleared by a success).
    error: Option<String>,
}

struct Issuer {
    spec: IssuerSpec,
    held: RwLock<Held>,
    /// When keys were last fetched; held while fetching (one fetch at a time).
    fetching: tokio::sync::Mutex<Fetched>,
}

/// When an issuer's keys were last fetched or tried.
#[derive(Default)]
struct Fetched {
    /// Any fetch (at start, in the background, for a kid).
    any: Option<Instant>,
    /// A fetch for a token whose kid was unknown: at most one per [`REFETCH_INTERVAL`], so a
    /// flood of made-up kids costs one fetch a minute, while a key rotated in right after a
    /// scheduled fetch is still picked up.
    for_kid: Option<Instant>,
}

/// A verified token as cached: the rule it matched, when it expires (Unix seconds) and the key
/// generation it was verified under.
#[derive(Clone, Copy)]
struct Cached {
    rule: usize,
    exp: u64,
    generation: u64,
}

/// The issuers, their keys, the rules and the verified tokens.
pub struct Verifier {
    issuers: Vec<Issuer>,
    rules: Vec<Rule>,
    client: reqwest::Client,
    /// Verified tokens by their bytes (compared whole; the hash only spreads them: entries come
    /// only from verified tokens, so nobody can choose colliding keys).
    cache: RwLock<HashMap<Box<[u8]>, Cached, xxhash_rust::xxh3::Xxh3DefaultBuilder>>,
    /// Bumped whenever an issuer's keys change: a cached token verified under an older
    /// generation is checked again (a key removed or replaced stops working at once, even for a
    /// check that was running while the keys changed).
    generation: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field(
                "issuers",
                &self
                    .issuers
                    .iter()
                    .map(|i| &i.spec.name)
                    .collect::<Vec<_>>(),
            )
            .field(
                "rules",
                &self.rules.iter().map(|r| &r.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A verified token: the matching rule's index and the claims.
pub struct Verified {
    pub rule: usize,
    pub exp: u64,
}

/// What `--explain-token` prints, and whether the token is accepted (the rule's index).
pub struct Explanation {
    pub lines: Vec<String>,
    pub accepted: Option<usize>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `"123 s"`, `"5 min"`, `"2 h"` for a number of seconds.
fn ago(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs} s"),
        120..=7199 => format!("{} min", secs / 60),
        _ => format!("{} h", secs / 3600),
    }
}

/// Whether `token` has the shape of a JWT (three base64url parts): only those are checked as
/// OIDC tokens (a static secret never is).
pub fn looks_like_jwt(token: &[u8]) -> bool {
    token.len() <= MAX_TOKEN_BYTES
        && token.iter().filter(|b| **b == b'.').count() == 2
        && token
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
}

/// A JWT part's JSON object, unverified.
fn part(token: &str, index: usize, what: &str) -> Result<Map<String, Value>, String> {
    let raw = token.split('.').nth(index).unwrap_or("");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw.trim_end_matches('='))
        .map_err(|_| format!("the {what} is not base64url"))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(format!("the {what} is not a JSON object")),
    }
}

fn string_claim<'a>(m: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    m.get(name).and_then(Value::as_str)
}

fn number_claim(m: &Map<String, Value>, name: &str) -> Result<Option<u64>, String> {
    match m.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| *f >= 0.0 && f.is_finite())
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or_else(|| format!("the {name:?} claim is not a number of seconds")),
    }
}

/// The steps of a check, kept for `--explain-token` only.
struct Trace<'a>(Option<&'a mut Vec<String>>);

impl Trace<'_> {
    fn say(&mut self, line: impl FnOnce() -> String) {
        if let Some(lines) = self.0.as_deref_mut() {
            lines.push(line());
        }
    }
}

impl Verifier {
    /// Compiles the rules and reads key files; nothing is fetched yet ([`Verifier::prefetch`]).
    /// Errors name the rule or issuer and the value.
    pub fn new(config: &OidcConfig) -> Result<Verifier, String> {
        let mut rules = Vec::new();
        for spec in &config.rules {
            let issuer = match &spec.issuer {
                None => None,
                Some(name) => Some(
                    config
                        .issuers
                        .iter()
                        .position(|i| i.name == *name)
                        .ok_or_else(|| {
                            format!(
                                "rule {:?} names issuer {name:?}, which is not configured \
                                 (issuers: {})",
                                spec.name,
                                config
                                    .issuers
                                    .iter()
                                    .map(|i| format!("{:?}", i.name))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        })?,
                ),
            };
            rules.push(Rule::compile(spec, issuer)?);
        }
        let mut issuers = Vec::new();
        for spec in &config.issuers {
            let mut held = Held::default();
            if let KeySource::File(path) = &spec.keys {
                let parsed = read_key_file(path, &spec.name)?;
                held.keys = parsed.keys.into_iter().map(Arc::new).collect();
                held.fingerprint = parsed.fingerprint;
                held.fetched = Some(Instant::now());
            }
            issuers.push(Issuer {
                spec: spec.clone(),
                held: RwLock::new(held),
                fetching: tokio::sync::Mutex::new(Fetched::default()),
            });
        }
        Ok(Verifier {
            issuers,
            rules,
            client: keys::client()?,
            cache: RwLock::new(HashMap::default()),
            generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The rules' names and grants, in order (`None`: a deny rule).
    pub fn rules(&self) -> impl Iterator<Item = (&str, Option<&Grant>)> {
        self.rules
            .iter()
            .map(|r| (r.name.as_str(), r.grant.as_ref()))
    }

    /// Fetches every issuer's keys once; returns one warning per issuer whose keys could not be
    /// fetched (the server still starts: keys are fetched again on the first token).
    pub async fn prefetch(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for issuer in &self.issuers {
            if matches!(issuer.spec.keys, KeySource::File(_)) {
                continue;
            }
            let mut last = issuer.fetching.lock().await;
            if let Err(e) = self.fetch_keys(issuer, &mut last).await {
                warnings.push(format!(
                    "warning: OIDC issuer {:?}: cannot fetch its keys now ({e}); tokens of it are \
                     refused until they can be fetched (tried again on the next token, at most \
                     once a minute)",
                    issuer.spec.name
                ));
            }
        }
        warnings
    }

    /// One line per issuer for the startup line: name, issuer and keys held.
    pub fn describe(&self) -> Vec<String> {
        self.issuers
            .iter()
            .map(|i| {
                let n = i.held.read().map(|h| h.keys.len()).unwrap_or(0);
                format!("{} ({}, {n} keys)", i.spec.name, i.spec.issuer)
            })
            .collect()
    }

    /// Fetches (or re-reads) `issuer`'s keys; `last` is its fetch lock's record.
    async fn fetch_keys(&self, issuer: &Issuer, last: &mut Fetched) -> Result<(), String> {
        last.any = Some(Instant::now());
        let fetched = match &issuer.spec.keys {
            KeySource::File(path) => read_key_file(path, &issuer.spec.name),
            KeySource::Url(url) => keys::fetch(&self.client, url).await,
            KeySource::Discovery => match keys::discover(&self.client, &issuer.spec.issuer).await {
                Ok(url) => keys::fetch(&self.client, &url).await,
                Err(e) => Err(e),
            },
        };
        let Ok(mut held) = issuer.held.write() else {
            return Err("internal: the key store is poisoned".to_owned());
        };
        match fetched {
            Ok(parsed) => {
                let changed = held.fingerprint != parsed.fingerprint;
                held.keys = parsed.keys.into_iter().map(Arc::new).collect();
                held.fingerprint = parsed.fingerprint;
                held.fetched = Some(Instant::now());
                held.error = None;
                if changed {
                    // Removed or replaced keys stop working at once: no token verified with
                    // them is kept.
                    self.generation
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if let Ok(mut c) = self.cache.write() {
                        c.clear();
                    }
                }
                Ok(())
            }
            Err(e) => {
                held.error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// The key for `kid` (or the only key of `alg` when the token names none); fetches the keys
    /// when none is held for it (at most once per [`REFETCH_INTERVAL`]).
    async fn key(
        self: &Arc<Self>,
        index: usize,
        kid: Option<&str>,
        alg: Alg,
        trace: &mut Trace<'_>,
    ) -> Result<Arc<keys::Key>, String> {
        let Some(issuer) = self.issuers.get(index) else {
            return Err("internal: no such issuer".to_owned());
        };
        if let Some(key) = self.held_key(issuer, kid, alg)? {
            return Ok(key);
        }
        let shown_kid = kid.map_or("(none)".to_owned(), |k| format!("{k:?}"));
        let name = &issuer.spec.name;
        let mut last = issuer.fetching.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(key) = self.held_key(issuer, kid, alg)? {
            return Ok(key);
        }
        match last.for_kid {
            Some(t) if t.elapsed() < REFETCH_INTERVAL => {
                let error = issuer.held.read().ok().and_then(|h| h.error.clone());
                trace.say(|| format!("keys: none for kid {shown_kid}; fetched {} ago, not again before a minute has passed", ago(t.elapsed().as_secs())));
                return Err(match error {
                    Some(e) => format!("the keys of issuer {name:?} cannot be fetched: {e}"),
                    None => format!(
                        "issuer {name:?} has no {} key with kid {shown_kid} (its keys were \
                         fetched {} ago; they are fetched again at most once a minute)",
                        alg.as_str(),
                        ago(t.elapsed().as_secs())
                    ),
                });
            }
            _ => {}
        }
        trace.say(|| {
            format!("keys: none held for kid {shown_kid}: fetching issuer {name:?}'s keys")
        });
        last.for_kid = Some(Instant::now());
        if let Err(e) = self.fetch_keys(issuer, &mut last).await {
            return Err(format!(
                "the keys of issuer {name:?} cannot be fetched: {e}"
            ));
        }
        match self.held_key(issuer, kid, alg)? {
            Some(key) => Ok(key),
            None => Err(format!(
                "issuer {name:?} has no {} key with kid {shown_kid} (its keys were just fetched)",
                alg.as_str()
            )),
        }
    }

    /// The held key for `kid` and `alg`; `None` when none fits.
    fn held_key(
        &self,
        issuer: &Issuer,
        kid: Option<&str>,
        alg: Alg,
    ) -> Result<Option<Arc<keys::Key>>, String> {
        let held = issuer
            .held
            .read()
            .map_err(|_| "internal: the key store is poisoned".to_owned())?;
        let found = match kid {
            Some(kid) => held
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid) && k.alg == alg),
            None => {
                let mut of_alg = held.keys.iter().filter(|k| k.alg == alg);
                match (of_alg.next(), of_alg.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                }
            }
        };
        Ok(found.cloned())
    }

    /// Fetches every issuer's keys (not a `jwks_file`'s) every [`KEYS_MAX_AGE`] in the
    /// background, for as long as the verifier is in use; a failed fetch keeps the keys held.
    pub fn spawn_refresh(self: &Arc<Self>, runtime: &tokio::runtime::Runtime) {
        let weak = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(KEYS_MAX_AGE).await;
                let Some(me) = weak.upgrade() else {
                    return;
                };
                for issuer in &me.issuers {
                    if matches!(issuer.spec.keys, KeySource::File(_)) {
                        continue;
                    }
                    let mut last = issuer.fetching.lock().await;
                    let _ = me.fetch_keys(issuer, &mut last).await;
                }
            }
        });
    }

    /// A verified token's rule, from the cache, when it is there and not expired.
    pub fn cached(&self, token: &[u8]) -> Option<usize> {
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let cache = self.cache.read().ok()?;
        let hit = cache.get(token)?;
        (hit.exp > now_secs() && hit.generation == generation).then_some(hit.rule)
    }

    /// Keeps `verified` for `token`, unless the keys changed since `generation` (when its check
    /// began).
    fn remember(&self, token: &[u8], verified: &Verified, generation: u64) {
        if self.generation.load(std::sync::atomic::Ordering::SeqCst) != generation
            || token.len() > MAX_CACHED_TOKEN_BYTES
        {
            return;
        }
        let Ok(mut cache) = self.cache.write() else {
            return;
        };
        if cache.len() >= CACHE_ENTRIES {
            let now = now_secs();
            cache.retain(|_, c| c.exp > now);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(
            token.into(),
            Cached {
                rule: verified.rule,
                exp: verified.exp,
                generation,
            },
        );
    }

    /// Verifies `token` and finds its rule: `Ok` for a rule that grants access, `Err(reason)`
    /// otherwise (the reason names what is wrong, never the token).
    pub async fn verify(self: &Arc<Self>, token: &[u8]) -> Result<Verified, String> {
        if let Some(rule) = self.cached(token) {
            return Ok(Verified { rule, exp: 0 });
        }
        let text = std::str::from_utf8(token).map_err(|_| "not a JWT".to_owned())?;
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let (issuer, claims, exp) = self.check(text, &mut Trace(None)).await?;
        let verified = self.decide(issuer, &claims, exp, &mut Trace(None))?;
        self.remember(token, &verified, generation);
        Ok(verified)
    }

    /// Every check of `token`, one line each, and the rules in order with why each matches or
    /// not. The token itself is never part of it.
    pub async fn explain(self: &Arc<Self>, token: &str) -> Explanation {
        let mut lines = Vec::new();
        let token = token.trim();
        let checked = {
            let mut trace = Trace(Some(&mut lines));
            if !looks_like_jwt(token.as_bytes()) {
                Err(format!(
                    "not a JWT (three base64url parts separated by dots, at most {MAX_TOKEN_BYTES} bytes)"
                ))
            } else {
                self.check(token, &mut trace).await
            }
        };
        let (issuer, claims, exp) = match checked {
            Ok(c) => c,
            Err(e) => {
                lines.push(format!("refused: {e}"));
                return Explanation {
                    lines,
                    accepted: None,
                };
            }
        };
        let names: Vec<String> = self.issuers.iter().map(|i| i.spec.name.clone()).collect();
        lines.push("rules (the first that matches decides):".to_owned());
        for (i, rule) in self.rules.iter().enumerate() {
            let v = rule.verdict(issuer, &names, &claims);
            let what = match &rule.grant {
                None => "deny".to_owned(),
                Some(g) => describe_grant(g),
            };
            lines.push(format!(
                "  {}. {:?} ({what}): {}",
                i + 1,
                rule.name,
                if v.matched {
                    "MATCHES"
                } else {
                    "does not match"
                }
            ));
            lines.extend(v.lines.into_iter().map(|l| format!("       {l}")));
            if v.matched {
                break;
            }
        }
        let decided = self.decide(issuer, &claims, exp, &mut Trace(None));
        match decided {
            Ok(v) => {
                let grant = self.rules.get(v.rule).and_then(|r| r.grant.as_ref());
                lines.push(format!(
                    "accepted: rule {:?}: {}",
                    self.rules
                        .get(v.rule)
                        .map(|r| r.name.as_str())
                        .unwrap_or("?"),
                    grant.map(describe_grant).unwrap_or_default()
                ));
                Explanation {
                    lines,
                    accepted: Some(v.rule),
                }
            }
            Err(e) => {
                lines.push(format!("refused: {e}"));
                Explanation {
                    lines,
                    accepted: None,
                }
            }
        }
    }

    /// The signature and the standard claims: the issuer's index, the claims and `exp`.
    async fn check(
        self: &Arc<Self>,
        token: &str,
        trace: &mut Trace<'_>,
    ) -> Result<(usize, Map<String, Value>, u64), String> {
        let header = part(token, 0, "header")?;
        let alg_name = string_claim(&header, "alg").unwrap_or("");
        let kid = string_claim(&header, "kid");
        trace.say(|| {
            format!(
                "header: alg {alg_name:?}, kid {}",
                kid.map_or("(none)".to_owned(), |k| format!("{k:?}"))
            )
        });
        let Some(alg) = Alg::parse(alg_name) else {
            let why = if alg_name.eq_ignore_ascii_case("none") {
                format!("unsigned tokens (alg {alg_name:?}) are never accepted")
            } else if alg_name.starts_with("HS") {
                format!(
                    "alg {alg_name:?} (an HMAC) is never accepted: a token must be signed with \
                     the issuer's private key"
                )
            } else {
                format!(
                    "alg {alg_name:?} is not accepted (accepted: {})",
                    ALGS.join(", ")
                )
            };
            return Err(why);
        };
        if header.get("crit").is_some() {
            return Err(
                "the header has \"crit\" extensions, which this server does not know".to_owned(),
            );
        }
        let unverified = part(token, 1, "payload")?;
        let Some(iss) = string_claim(&unverified, "iss") else {
            return Err("the token has no \"iss\" (issuer) claim".to_owned());
        };
        let Some(index) = self.issuers.iter().position(|i| i.spec.issuer == iss) else {
            return Err(format!("issuer {iss:?} is not configured"));
        };
        let spec = &self.issuers[index].spec;
        trace.say(|| format!("issuer: {iss:?} is configured as {:?}", spec.name));
        if !spec.algorithms.contains(&alg) {
            return Err(format!(
                "alg {alg_name:?} is not allowed for issuer {:?} (allowed: {})",
                spec.name,
                spec.algorithms
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let key = self.key(index, kid, alg, trace).await?;
        let mut validation = Validation::new(alg.jwt());
        validation.leeway = spec.clock_skew.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&spec.issuer]);
        validation.set_audience(&spec.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let now = now_secs();
        let claims = match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
        {
            Ok(data) => data.claims,
            Err(e) => return Err(self.decode_error(index, e.kind(), &unverified, now)),
        };
        trace.say(|| "signature: valid".to_owned());
        let exp = number_claim(&claims, "exp")?.unwrap_or(0);
        let iat = number_claim(&claims, "iat")?;
        let nbf = number_claim(&claims, "nbf")?;
        let skew = spec.clock_skew.as_secs();
        if let Some(iat) = iat.filter(|iat| *iat > now + skew) {
            return Err(format!(
                "the token is issued in the future (iat {} s ahead, clock skew allowed {skew} s)",
                iat - now
            ));
        }
        let start = iat.or(nbf).unwrap_or(now);
        let lifetime = exp.saturating_sub(start);
        if lifetime > spec.max_lifetime.as_secs() + skew {
            return Err(format!(
                "the token lives {} (exp - iat), longer than max_lifetime {} of issuer {:?}",
                ago(lifetime),
                ago(spec.max_lifetime.as_secs()),
                spec.name
            ));
        }
        trace.say(|| {
            format!(
                "time: valid for {} more (lifetime {}), audience {}",
                ago(exp.saturating_sub(now)),
                ago(lifetime),
                claims
                    .get("aud")
                    .map_or("(none)".to_owned(), Value::to_string)
            )
        });
        Ok((index, claims, exp))
    }

    /// The first rule for a checked token: `Ok` when it grants access.
    fn decide(
        &self,
        issuer: usize,
        claims: &Map<String, Value>,
        exp: u64,
        _trace: &mut Trace<'_>,
    ) -> Result<Verified, String> {
        let name = self
            .issuers
            .get(issuer)
            .map(|i| i.spec.name.as_str())
            .unwrap_or("?");
        match rules::first_match(&self.rules, issuer, claims) {
            None => Err(format!(
                "no rule matches this token of issuer {name:?} (`nx-open-cache serve \
                 --explain-token` shows why)"
            )),
            Some(i) => match self.rules.get(i) {
                Some(r) if r.grant.is_some() => Ok(Verified { rule: i, exp }),
                Some(r) => Err(format!("rule {:?} denies this token", r.name)),
                None => Err("internal: no such rule".to_owned()),
            },
        }
    }

    /// A failed `jsonwebtoken::decode` in words.
    fn decode_error(
        &self,
        index: usize,
        kind: &jsonwebtoken::errors::ErrorKind,
        unverified: &Map<String, Value>,
        now: u64,
    ) -> String {
        use jsonwebtoken::errors::ErrorKind as K;
        let spec = &self.issuers[index].spec;
        match kind {
            K::InvalidSignature => format!(
                "the signature does not verify with issuer {:?}'s key (tampered, or signed by \
                 another key)",
                spec.name
            ),
            K::ExpiredSignature => {
                let exp = number_claim(unverified, "exp").ok().flatten().unwrap_or(0);
                format!(
                    "the token expired {} ago (clock skew allowed {} s)",
                    ago(now.saturating_sub(exp)),
                    spec.clock_skew.as_secs()
                )
            }
            K::ImmatureSignature => {
                let nbf = number_claim(unverified, "nbf").ok().flatten().unwrap_or(0);
                format!(
                    "the token is not valid yet (nbf in {}, clock skew allowed {} s)",
                    ago(nbf.saturating_sub(now)),
                    spec.clock_skew.as_secs()
                )
            }
            K::InvalidAudience => format!(
                "the audience {} is not one this server accepts from issuer {:?}",
                unverified
                    .get("aud")
                    .map_or("(none)".to_owned(), |a| a.to_string()),
                spec.name
            ),
            K::InvalidIssuer => format!("the issuer is not {:?}", spec.issuer),
            K::MissingRequiredClaim(c) => format!("the token has no {c:?} claim"),
            K::InvalidClaimFormat(c) => format!("the {c:?} claim has the wrong type"),
            K::InvalidAlgorithm => "the algorithm does not fit the key".to_owned(),
            other => format!("the token cannot be verified: {other:?}"),
        }
    }
}

/// `read-write, writes "pr", reads "trusted", "pr"`.
pub fn describe_grant(g: &Grant) -> String {
    let ns = |p: &Prefix| {
        if p.as_str().is_empty() {
            "(root)".to_owned()
        } else {
            format!("{:?}", p.as_str())
        }
    };
    format!(
        "{}, writes {}, reads {}",
        g.role.as_str(),
        ns(&g.write_prefix),
        g.read_prefixes
            .iter()
            .map(ns)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn read_key_file(path: &std::path::Path, issuer: &str) -> Result<keys::Parsed, String> {
    let bytes = std::fs::read(path).map_err(|e| {
        format!(
            "OIDC issuer {issuer:?}: cannot read jwks_file {}: {e}",
            path.display()
        )
    })?;
    keys::parse(&bytes, &path.display().to_string())
        .map_err(|e| format!("OIDC issuer {issuer:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a cached OIDC token costs per request next to a static token: the lookup by its bytes
    /// against the constant-time comparison. Timing, so opt-in:
    /// `cargo test --release --lib oidc::tests::cached_lookup_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn cached_lookup_cost() {
        let config = OidcConfig {
            issuers: vec![IssuerSpec {
                name: "ci".into(),
                issuer: "https://issuer.test".into(),
                audiences: vec!["a".into()],
                keys: KeySource::Url("https://issuer.test/jwks".into()),
                algorithms: vec![Alg::Rs256],
                clock_skew: DEFAULT_CLOCK_SKEW,
                max_lifetime: DEFAULT_MAX_LIFETIME,
            }],
            rules: Vec::new(),
        };
        let Ok(v) = Verifier::new(&config) else {
            panic!("verifier")
        };
        // An RS256 token's length (header, GitHub-sized claims, 2048-bit signature).
        let token = vec![b'a'; 1100];
        v.remember(
            &token,
            &Verified {
                rule: 0,
                exp: now_secs() + 3600,
            },
            0,
        );
        let auth =
            crate::server::auth::Auth::single("0123456789abcdef0123".into(), Role::ReadWrite);
        let n = 1_000_000u32;
        let t = Instant::now();
        let mut hits = 0u32;
        for _ in 0..n {
            hits += u32::from(v.cached(std::hint::black_box(&token)).is_some());
        }
        let oidc = t.elapsed();
        let t = Instant::now();
        for _ in 0..n {
            hits += u32::from(
                auth.find(std::hint::black_box(b"0123456789abcdef0123"))
                    .is_some(),
            );
        }
        let stat = t.elapsed();
        assert_eq!(hits, 2 * n);
        println!(
            "per request: cached OIDC token {:.0} ns, static token {:.0} ns",
            oidc.as_nanos() as f64 / f64::from(n),
            stat.as_nanos() as f64 / f64::from(n)
        );
    }
}
