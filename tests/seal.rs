//! Signed and encrypted artifacts (`seal::SealedStore`) over the fs store: round trips, and every
//! tampering an adversary with write access to the storage can do. The tampering tests rewrite the
//! object file with a valid backend envelope (`envelope::seal`), so only the seal layer can catch
//! them.

mod common;

use common::{body, noise, read_all};
use nx_open_cache::envelope;
use nx_open_cache::key::{Prefix, TaskHash};
use nx_open_cache::seal::format::{self, CHUNK, HEADER_LEN};
use nx_open_cache::seal::keys::{
    generate_encryption_key, generate_signing_key, parse_encryption_keys, parse_public_key,
    parse_signing_key,
};
use nx_open_cache::seal::{SealConfig, SealedStore};
use nx_open_cache::store::fs::FsStore;
use nx_open_cache::store::{ErrorKind, PutOutcome, Store, StoreError};
use std::path::Path;
use std::sync::Arc;

fn hash(s: &str) -> TaskHash {
    TaskHash::parse(s).expect("valid test hash")
}

struct Keys {
    public: String,
    secret: String,
}

fn keypair() -> Keys {
    let (public, secret) = generate_signing_key().unwrap();
    Keys {
        public,
        secret: secret.to_string(),
    }
}

fn enc_key() -> String {
    generate_encryption_key().unwrap().to_string()
}

/// A configuration: `sign` (secret), `trusted` (public keys), `require`, `enc` (list).
fn config(sign: Option<&Keys>, trusted: &[&Keys], require: bool, enc: Option<&str>) -> SealConfig {
    SealConfig {
        signing_key: sign.map(|k| parse_signing_key(&k.secret).unwrap()),
        trusted_keys: trusted
            .iter()
            .map(|k| parse_public_key(&k.public).unwrap())
            .collect(),
        require_signature: require,
        encryption_keys: enc
            .map(|e| parse_encryption_keys(e).unwrap())
            .unwrap_or_default(),
    }
}

fn fs(dir: &Path) -> FsStore {
    let s = FsStore::new(dir.join("cache"), Prefix::default());
    s.prepare().unwrap();
    s
}

/// A sealed store over the fs store in `dir` (every store made on `dir` sees the same objects).
fn sealed(dir: &Path, c: SealConfig) -> SealedStore {
    SealedStore::new(Arc::new(fs(dir)), c).with_spool_dir(dir.join("spool"))
}

async fn put(s: &dyn Store, h: &str, data: &[u8]) -> PutOutcome {
    s.put(&hash(h), &mut body(data, 7000), Some(data.len() as u64))
        .await
        .expect("put")
}

async fn get_ok(s: &dyn Store, h: &str) -> Option<Vec<u8>> {
    s.get(&hash(h)).await.expect("get").map(read_all)
}

/// A refusal: `Refused`, with the reason alone (the server adds the hash, and refusals are
/// grouped by reason).
async fn refused(s: &dyn Store, h: &str) -> StoreError {
    match s.get(&hash(h)).await {
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::Refused, "{}", e.message);
            assert!(
                h.len() < 4 || !e.message.contains(h),
                "the reason alone: {}",
                e.message
            );
            e
        }
        Ok(Some(a)) => panic!("{h}: restored {} bytes of a bad object", a.len),
        Ok(None) => panic!("{h}: a plain miss, expected a refusal"),
    }
}

/// The payload the fs store keeps for `h` (the sealed object).
fn stored(dir: &Path, h: &str) -> Vec<u8> {
    let file = std::fs::read(fs(dir).object_path(&hash(h))).unwrap();
    envelope::open(&file).expect("valid envelope").to_vec()
}

/// Replaces the object of `h` with `payload` in a *valid* backend envelope.
fn restore_as(dir: &Path, h: &str, payload: &[u8]) {
    let path = fs(dir).object_path(&hash(h));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = path.with_extension("tamper");
    std::fs::write(&tmp, envelope::seal(payload)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

fn tamper(dir: &Path, h: &str, f: impl FnOnce(&mut Vec<u8>)) {
    let mut payload = stored(dir, h);
    f(&mut payload);
    restore_as(dir, h, &payload);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// An artifact with a recognisable marker in it.
fn artifact(len: usize, seed: u64) -> Vec<u8> {
    let mut data = noise(len.max(64), seed);
    data[10..42].copy_from_slice(b"MARKER-secret-build-output-xyz!!");
    data.truncate(len.max(64));
    data
}

#[tokio::test]
async fn round_trips_plain_signed_encrypted_both() {
    let k = keypair();
    let e = enc_key();
    let cases: Vec<(&str, SealConfig)> = vec![
        ("trusted-only", config(None, &[&k], false, None)),
        ("signed", config(Some(&k), &[&k], true, None)),
        ("encrypted", config(None, &[], false, Some(&e))),
        ("both", config(Some(&k), &[&k], true, Some(&e))),
    ];
    for (name, c) in cases {
        let signed = c.signing_key.is_some();
        let encrypted = !c.encryption_keys.is_empty();
        for (i, size) in [
            64usize,
            1000,
            CHUNK - 32,
            CHUNK,
            CHUNK + 1,
            200_000,
            3 << 20,
        ]
        .into_iter()
        .enumerate()
        {
            let dir = tempfile::tempdir().unwrap();
            // Large objects take the file paths: the fs store's and the spool's.
            let s = SealedStore::new(
                Arc::new(fs(dir.path()).with_inline_limit(if size > 1 << 20 {
                    0
                } else {
                    8 << 20
                })),
                c.clone(),
            )
            .with_spool_dir(dir.path().join("spool"))
            .with_inline_limit(if size > 1 << 20 { 0 } else { 8 << 20 });
            let data = artifact(size, i as u64);
            let h = format!("{name}-{i}");
            assert_eq!(
                put(&s, &h, &data).await,
                PutOutcome::Stored(data.len() as u64)
            );
            assert_eq!(get_ok(&s, &h).await.as_deref(), Some(&data[..]), "{h}");
            let raw = stored(dir.path(), &h);
            if signed || encrypted {
                assert_eq!(
                    raw.len() as u64,
                    format::sealed_len(data.len() as u64, signed, encrypted),
                    "{h}: declared length is exact"
                );
                assert!(raw.starts_with(b"NXOS"), "{h}");
            } else {
                assert_eq!(
                    raw, data,
                    "{h}: without signing or encryption, stored plain"
                );
            }
            assert_eq!(contains(&raw, b"MARKER-secret"), !encrypted, "{h}");
            // Unknown length (no Content-Length) streams too.
            let h2 = format!("{h}-unsized");
            s.put(&hash(&h2), &mut body(&data, 65536), None)
                .await
                .unwrap();
            assert_eq!(get_ok(&s, &h2).await.as_deref(), Some(&data[..]), "{h2}");
        }
        let dir = tempfile::tempdir().unwrap();
        let s = sealed(dir.path(), c);
        assert_eq!(get_ok(&s, "absent").await, None, "a miss stays a miss");
    }
}

#[tokio::test]
async fn a_body_shorter_or_longer_than_declared_is_a_bad_request() {
    let k = keypair();
    let dir = tempfile::tempdir().unwrap();
    let s = sealed(dir.path(), config(Some(&k), &[&k], true, Some(&enc_key())));
    let data = artifact(100_000, 1);
    for declared in [99_999u64, 100_001] {
        let err = s
            .put(&hash("h"), &mut body(&data, 4096), Some(declared))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest, "{}", err.message);
        assert!(err.message.contains("Content-Length"), "{}", err.message);
    }
    assert_eq!(get_ok(&s, "h").await, None, "nothing stored");
}

#[tokio::test]
async fn flipped_bytes_anywhere_are_refused_and_the_object_kept() {
    let k = keypair();
    let e = enc_key();
    for (name, c) in [
        ("signed", config(Some(&k), &[&k], true, None)),
        ("encrypted", config(None, &[], false, Some(&e))),
        ("both", config(Some(&k), &[&k], true, Some(&e))),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let s = sealed(dir.path(), c);
        let data = artifact(150_000, 3);
        put(&s, "h", &data).await;
        let original = stored(dir.path(), "h");
        let n = original.len();
        // Header fields, first chunk, a chunk boundary, the trailer (digest and signature).
        for at in [
            5,
            9,
            17,
            30,
            HEADER_LEN,
            HEADER_LEN + 70_000,
            n - 80,
            n - 40,
            n - 1,
        ] {
            restore_as(dir.path(), "h", &original);
            tamper(dir.path(), "h", |p| p[at] ^= 0x01);
            let err = refused(&s, "h").await;
            assert!(
                fs(dir.path()).object_path(&hash("h")).exists(),
                "{name}@{at}: not deleted"
            );
            let _ = err;
        }
        restore_as(dir.path(), "h", &original);
        assert_eq!(get_ok(&s, "h").await.as_deref(), Some(&data[..]), "{name}");
    }
}

#[tokio::test]
async fn truncated_objects_are_refused() {
    let k = keypair();
    let e = enc_key();
    for (name, c) in [
        ("signed", config(Some(&k), &[&k], true, None)),
        ("encrypted", config(None, &[], false, Some(&e))),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let s = sealed(dir.path(), c);
        let data = artifact(3 * CHUNK + 100, 4);
        put(&s, "h", &data).await;
        let original = stored(dir.path(), "h");
        let piece = CHUNK + 16;
        // Cut one byte, the whole last chunk (a clean chunk boundary), down to the header, below it.
        for len in [
            original.len() - 1,
            HEADER_LEN + 3 * piece,
            HEADER_LEN + piece,
            HEADER_LEN,
            20,
            4,
        ] {
            restore_as(dir.path(), "h", &original[..len]);
            let err = refused(&s, "h").await;
            assert!(
                err.message.contains("truncated")
                    || err.message.contains("altered")
                    || err.message.contains("signature does not match"),
                "{name} cut to {len}: {}",
                err.message
            );
        }
    }
}

#[tokio::test]
async fn swapped_and_replayed_objects_are_refused() {
    let k = keypair();
    let e = enc_key();
    for (name, c) in [
        ("signed", config(Some(&k), &[&k], true, None)),
        ("encrypted", config(None, &[], false, Some(&e))),
        ("both", config(Some(&k), &[&k], true, Some(&e))),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let s = sealed(dir.path(), c);
        put(&s, "aaa", &artifact(5000, 5)).await;
        put(&s, "bbb", &artifact(7000, 6)).await;
        // Swap: A's object under B's path (and B's under A's).
        let a = stored(dir.path(), "aaa");
        let b = stored(dir.path(), "bbb");
        restore_as(dir.path(), "bbb", &a);
        restore_as(dir.path(), "aaa", &b);
        let err = refused(&s, "bbb").await;
        refused(&s, "aaa").await;
        // Replay: a valid signed/encrypted object planted under a hash never written.
        restore_as(dir.path(), "ccc", &a);
        let err2 = refused(&s, "ccc").await;
        let expected = if name == "signed" {
            "signature does not match"
        } else {
            "copied from another hash"
        };
        assert!(err.message.contains(expected), "{name}: {}", err.message);
        assert!(err2.message.contains(expected), "{name}: {}", err2.message);
    }
}

#[tokio::test]
async fn signatures_by_untrusted_keys_and_forged_digests_are_refused() {
    let trusted = keypair();
    let attacker = keypair();
    let dir = tempfile::tempdir().unwrap();
    let reader = sealed(dir.path(), config(None, &[&trusted], true, None));
    // The attacker signs with their own key.
    let evil = sealed(dir.path(), config(Some(&attacker), &[], false, None));
    put(&evil, "h1", &artifact(1000, 7)).await;
    let err = refused(&reader, "h1").await;
    assert!(err.message.contains("untrusted key"), "{}", err.message);
    // The attacker cannot make a valid signature, but forges a signed object: new content, its
    // digest recomputed, the trusted writer's signer id and an old signature.
    let good = sealed(dir.path(), config(Some(&trusted), &[&trusted], true, None));
    put(&good, "h2", &artifact(1000, 8)).await;
    tamper(dir.path(), "h2", |p| {
        let body_end = p.len() - 96;
        p[HEADER_LEN + 100] ^= 0xff;
        use sha2::Digest;
        let d: [u8; 32] = sha2::Sha256::digest(&p[HEADER_LEN..body_end]).into();
        p[body_end..body_end + 32].copy_from_slice(&d);
    });
    let err = refused(&reader, "h2").await;
    assert!(
        err.message.contains("signature does not match"),
        "{}",
        err.message
    );
    // Trusted keys without requireSignature: a bad signature is still refused.
    let lax = sealed(dir.path(), config(None, &[&trusted], false, None));
    refused(&lax, "h2").await;
    refused(&lax, "h1").await;
}

#[tokio::test]
async fn unsigned_artifacts_are_refused_only_when_signatures_are_required() {
    let k = keypair();
    let e = enc_key();
    let dir = tempfile::tempdir().unwrap();
    // A plain (old-format / unconfigured writer) object and an encrypted-only one.
    put(&fs(dir.path()), "plain", &artifact(500, 9)).await;
    put(
        &sealed(dir.path(), config(None, &[], false, Some(&e))),
        "enc",
        &artifact(500, 10),
    )
    .await;
    let strict = sealed(dir.path(), config(None, &[&k], true, Some(&e)));
    for h in ["plain", "enc"] {
        let err = refused(&strict, h).await;
        assert!(err.message.contains("unsigned"), "{}", err.message);
    }
    let lax = sealed(dir.path(), config(None, &[&k], false, Some(&e)));
    assert_eq!(get_ok(&lax, "plain").await, Some(artifact(500, 9)));
    assert_eq!(get_ok(&lax, "enc").await, Some(artifact(500, 10)));
}

#[tokio::test]
async fn encryption_wrong_key_and_rotation() {
    let old = enc_key();
    let new = enc_key();
    let dir = tempfile::tempdir().unwrap();
    let data = artifact(300_000, 11);
    let before = sealed(dir.path(), config(None, &[], false, Some(&old)));
    put(&before, "old", &data).await;
    assert!(!contains(&stored(dir.path(), "old"), b"MARKER-secret"));
    // Wrong key: a refusal naming the key id and the variable.
    let wrong = sealed(dir.path(), config(None, &[], false, Some(&new)));
    let err = refused(&wrong, "old").await;
    assert!(
        err.message.contains("cannot decrypt: encrypted with key")
            && err.message.contains("NX_OPEN_CACHE_ENCRYPTION_KEY"),
        "{}",
        err.message
    );
    // No key at all.
    let none = sealed(dir.path(), config(None, &[], true, None));
    let _ = none;
    let k = keypair();
    let nokey = sealed(dir.path(), config(None, &[&k], false, None));
    let err = refused(&nokey, "old").await;
    assert!(
        err.message
            .starts_with("encrypted; no NX_OPEN_CACHE_ENCRYPTION_KEY here (encrypted with key "),
        "{}",
        err.message
    );
    // Rotation: [new, old] reads the old object, and writes with the new key.
    let rotated = sealed(
        dir.path(),
        config(None, &[], false, Some(&format!("{new},{old}"))),
    );
    assert_eq!(get_ok(&rotated, "old").await.as_deref(), Some(&data[..]));
    put(&rotated, "new", &data).await;
    assert_eq!(
        get_ok(&wrong, "new").await.as_deref(),
        Some(&data[..]),
        "new key only"
    );
    refused(&before, "new").await;
}

#[tokio::test]
async fn namespaces_keep_the_seal() {
    let k = keypair();
    let dir = tempfile::tempdir().unwrap();
    let s = sealed(dir.path(), config(Some(&k), &[&k], true, Some(&enc_key())));
    let ns = s
        .with_namespace(&Prefix::parse("trusted").unwrap())
        .unwrap();
    put(ns.as_ref(), "h", &artifact(2000, 12)).await;
    assert_eq!(get_ok(ns.as_ref(), "h").await, Some(artifact(2000, 12)));
    assert!(ns.describe().contains("signs"), "{}", ns.describe());
    assert_eq!(get_ok(&s, "h").await, None, "another namespace");
}

// ---- a reader without any seal setting -------------------------------------------------------

/// What a machine with no seal setting reads through: the layer every reader has.
fn keyless(dir: &Path, inline_limit: u64) -> Arc<dyn Store> {
    nx_open_cache::seal::wrap(
        Arc::new(fs(dir).with_inline_limit(inline_limit)),
        &SealConfig::default(),
    )
}

#[tokio::test]
async fn a_keyless_reader_never_serves_sealed_bytes() {
    let k = keypair();
    let e = enc_key();
    // Small objects (memory, on the worker), medium (memory, blocking pool), large (files).
    for (size, inline) in [(2_000usize, 8u64 << 20), (600_000, 8 << 20), (3 << 20, 0)] {
        let dir = tempfile::tempdir().unwrap();
        let data = artifact(size, size as u64);
        let writer = |c| {
            SealedStore::new(Arc::new(fs(dir.path()).with_inline_limit(inline)), c)
                .with_spool_dir(dir.path().join("spool"))
                .with_inline_limit(inline)
        };
        put(&writer(config(None, &[], false, Some(&e))), "enc", &data).await;
        put(
            &writer(config(Some(&k), &[&k], true, Some(&e))),
            "both",
            &data,
        )
        .await;
        put(
            &writer(config(Some(&k), &[&k], true, None)),
            "signed",
            &data,
        )
        .await;
        put(&fs(dir.path()), "plain", &data).await;
        let reader = keyless(dir.path(), inline);
        // Encrypted, with or without a signature: refused, never the ciphertext.
        for h in ["enc", "both"] {
            let err = refused(reader.as_ref(), h).await;
            assert!(
                err.message
                    .starts_with("encrypted; no NX_OPEN_CACHE_ENCRYPTION_KEY here"),
                "{size} {h}: {}",
                err.message
            );
        }
        // Signed only: the artifact inside, never the seal bytes.
        assert_eq!(
            get_ok(reader.as_ref(), "signed").await.as_deref(),
            Some(&data[..]),
            "{size}: the plain artifact of a signed object"
        );
        assert_eq!(
            get_ok(reader.as_ref(), "plain").await.as_deref(),
            Some(&data[..])
        );
        assert_eq!(get_ok(reader.as_ref(), "absent").await, None);
        // A signed object whose content no longer matches its digest is refused.
        tamper(dir.path(), "signed", |p| p[HEADER_LEN + 20] ^= 0x01);
        let err = refused(reader.as_ref(), "signed").await;
        assert!(err.message.starts_with("altered"), "{}", err.message);
        // Cut inside the header or the trailer: refused.
        restore_as(dir.path(), "cut", &stored(dir.path(), "enc")[..30]);
        refused(reader.as_ref(), "cut").await;
        // The layer changes nothing else: what it writes is plain, its description is the store's.
        put(reader.as_ref(), "written", &data).await;
        assert_eq!(stored(dir.path(), "written"), data);
        assert_eq!(reader.describe(), fs(dir.path()).describe());
    }
}

#[tokio::test]
async fn through_a_keyless_proxy_sealed_objects_are_misses_with_a_reason() {
    use nx_open_cache::config::resolve;
    use nx_open_cache::proxy;
    use serde_json::json;
    let k = keypair();
    let e = enc_key();
    let dir = tempfile::tempdir().unwrap();
    let start = |vars: &[(&str, &str)]| {
        let e = env(vars);
        let c = resolve(&json!({"path": "store"}), &e, dir.path()).unwrap();
        proxy::start(&c, &e).unwrap()
    };
    let client = reqwest::Client::new();
    let put = |p: &proxy::Proxy, h: &str, data: Vec<u8>| {
        client
            .put(format!("{}/v1/cache/{h}", p.url))
            .bearer_auth(&p.token)
            .body(data)
            .send()
    };
    let data = common::artifact(20_000, 17);
    // Main-branch CI: encrypts one hash, signs another.
    let enc = start(&[("NX_OPEN_CACHE_ENCRYPTION_KEY", &e)]);
    assert_eq!(put(&enc, "1111", data.clone()).await.unwrap().status(), 200);
    enc.stop().await;
    let signed = start(&[("NX_OPEN_CACHE_SIGNING_KEY", &k.secret)]);
    assert_eq!(
        put(&signed, "2222", data.clone()).await.unwrap().status(),
        200
    );
    signed.stop().await;
    // A pull request's job: no secrets at all.
    let pr = start(&[]);
    assert!(!pr.location.contains(';'), "{}", pr.location);
    let get = |h: &str| {
        client
            .get(format!("{}/v1/cache/{h}", pr.url))
            .bearer_auth(&pr.token)
            .send()
    };
    assert_eq!(get("1111").await.unwrap().status(), 404);
    let resp = get("2222").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), data);
    let stats = pr.stop().await;
    assert_eq!((stats.hits, stats.misses, stats.error_count), (1, 1, 0));
    assert_eq!(stats.refused_count, 1);
    assert_eq!(stats.refusals[0].hashes, ["1111"]);
    assert!(
        stats.refusals[0]
            .reason
            .starts_with("encrypted; no NX_OPEN_CACHE_ENCRYPTION_KEY here"),
        "{:?}",
        stats.refusals
    );
}

/// What the layer costs a reader without settings on a large plain object: a get of a 64 MiB
/// object (verified by the fs store, served from its file) read to the end, through the layer
/// vs straight from the fs store (what such a reader did before). Run with
/// `cargo test --release --test seal -- --ignored --nocapture keyless_read_cost`.
#[tokio::test]
#[ignore = "benchmark"]
async fn keyless_read_cost() {
    let dir = tempfile::tempdir().unwrap();
    let data = noise(64 << 20, 99);
    let plain: Arc<dyn Store> = Arc::new(fs(dir.path()));
    put(plain.as_ref(), "big", &data).await;
    let layered = keyless(dir.path(), nx_open_cache::store::spool::INLINE_LIMIT);
    let time = |s: Arc<dyn Store>| async move {
        let t = std::time::Instant::now();
        let got = read_all(s.get(&hash("big")).await.unwrap().unwrap());
        assert_eq!(got.len(), 64 << 20);
        t.elapsed().as_secs_f64()
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        a.push(time(plain.clone()).await);
        b.push(time(layered.clone()).await);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ma, mb) = (median(&mut a), median(&mut b));
    println!(
        "64 MiB plain get + read: fs store {:.1} ms, through the seal layer {:.1} ms, ratio {:.3}",
        ma * 1e3,
        mb * 1e3,
        mb / ma
    );
}

// ---- configuration -------------------------------------------------------------------------

fn env(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    let mut e: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    e.insert("HOME".into(), "/h".into());
    e
}

#[test]
fn configuration_from_options_and_environment() {
    use nx_open_cache::config::resolve;
    use serde_json::json;
    let k = keypair();
    let e1 = enc_key();
    let e2 = enc_key();
    let ws = Path::new("/ws");
    let c = resolve(&json!({}), &env(&[]), ws).unwrap();
    assert!(!c.seal.is_active(), "off by default");
    let c = resolve(
        &json!({"trustedKeys": [k.public], "requireSignature": true}),
        &env(&[
            ("NX_OPEN_CACHE_SIGNING_KEY", &k.secret),
            ("NX_OPEN_CACHE_ENCRYPTION_KEY", &format!("{e1},{e2}")),
        ]),
        ws,
    )
    .unwrap();
    assert!(c.seal.require_signature && c.seal.signing_key.is_some());
    assert_eq!(
        (c.seal.trusted_keys.len(), c.seal.encryption_keys.len()),
        (1, 2)
    );
    let shown = format!("{c:?}");
    assert!(
        !shown.contains(&k.secret) && !shown.contains(&e1),
        "{shown}"
    );
    // Mistakes name the option or variable, never echo a secret.
    type Case<'a> = (serde_json::Value, Vec<(&'a str, String)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            json!({"requireSignature": true}),
            vec![],
            "requireSignature",
            "trustedKeys\" is empty",
        ),
        (
            json!({"requireSignature": 1}),
            vec![],
            "requireSignature",
            "true or false",
        ),
        (
            json!({"trustedKeys": "abc"}),
            vec![],
            "trustedKeys",
            "must be an array",
        ),
        (
            json!({"trustedKeys": [k.public, "AAAA"]}),
            vec![],
            "trustedKeys",
            "entry 2",
        ),
        (
            json!({"trustedKeys": [3]}),
            vec![],
            "trustedKeys",
            "not a string",
        ),
        (
            json!({}),
            vec![(
                "NX_OPEN_CACHE_SIGNING_KEY",
                "c2VjcmV0LXNpZ25pbmcta2V5".into(),
            )],
            "NX_OPEN_CACHE_SIGNING_KEY",
            "18 bytes, not 32",
        ),
        (
            json!({}),
            vec![(
                "NX_OPEN_CACHE_ENCRYPTION_KEY",
                format!("{e1},c2VjcmV0LXNpZ25pbmcta2V5"),
            )],
            "NX_OPEN_CACHE_ENCRYPTION_KEY",
            "entry 2",
        ),
        (
            json!({"backend": "http", "url": "https://h", "trustedKeys": [k.public]}),
            vec![],
            "trustedKeys",
            "does not apply to backend \"http\"",
        ),
        (
            json!({"backend": "http", "url": "https://h"}),
            vec![("NX_OPEN_CACHE_ENCRYPTION_KEY", e1.clone())],
            "NX_OPEN_CACHE_ENCRYPTION_KEY",
            "backend \"http\"",
        ),
    ];
    for (options, vars, option, needle) in cases {
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let err = resolve(&options, &env(&vars), ws).unwrap_err();
        assert_eq!(err.option, option, "{options}");
        assert!(err.message.contains(needle), "{options}: {}", err.message);
        assert!(
            !err.message.contains("c2VjcmV0") && !err.message.contains(&e1),
            "secret echoed: {}",
            err.message
        );
    }
    // Keys in the wrong place: refused, by position and key id, never echoed.
    let key_id = |public: &str| {
        nx_open_cache::seal::keys::show_id(&nx_open_cache::seal::keys::signer_id(
            &parse_public_key(public).unwrap(),
        ))
    };
    let err = resolve(
        &json!({"trustedKeys": [k.public]}),
        &env(&[("NX_OPEN_CACHE_SIGNING_KEY", &k.public)]),
        ws,
    )
    .unwrap_err();
    assert_eq!(err.option, "NX_OPEN_CACHE_SIGNING_KEY");
    assert!(
        err.message.contains(&format!(
            "the value is a public key (key id {}, entry 1 of \"trustedKeys\")",
            key_id(&k.public)
        )) && !err.message.contains(&k.public),
        "{}",
        err.message
    );
    let other = keypair();
    let err = resolve(
        &json!({"trustedKeys": [other.public, k.public, k.secret]}),
        &env(&[]),
        ws,
    )
    .unwrap_err();
    assert_eq!(err.option, "trustedKeys");
    // The secret is either no valid public key at all, or the secret key of entry 2.
    assert!(
        err.message.contains("entry 3")
            && err
                .message
                .contains(&format!("key id {}", key_id(&k.public)))
            && !err.message.contains(&k.secret),
        "{}",
        err.message
    );
    // A secret alone in the list: refused when it cannot be a public key (15 in 16 secrets: no
    // valid point, or one outside the prime-order subgroup). Without more it may as well be a
    // public key with a typo: both are said, with the key id its public key would have, never a
    // public key to list.
    let lone = (0..200)
        .map(|_| keypair())
        .find(|p| parse_public_key(&p.secret).is_err())
        .expect("one in 200 secret keys is no valid point");
    let err = resolve(&json!({"trustedKeys": [lone.secret]}), &env(&[]), ws).unwrap_err();
    assert!(
        err.message.starts_with(
            "trustedKeys entry 1 is not a valid public key (value not shown): a mistyped or \
             truncated public key, or a secret key pasted by mistake"
        ) && err
            .message
            .contains(&format!("key id {}", key_id(&lone.public)))
            && !err.message.contains(&lone.public)
            && !err.message.contains(&lone.secret),
        "{}",
        err.message
    );
    // The same value in NX_OPEN_CACHE_SIGNING_KEY: provably the secret key, and its public key
    // is the one to list.
    let err = resolve(
        &json!({"trustedKeys": [lone.secret]}),
        &env(&[("NX_OPEN_CACHE_SIGNING_KEY", &lone.secret)]),
        ws,
    )
    .unwrap_err();
    assert!(
        err.message.starts_with(&format!(
            "trustedKeys entry 1 is a secret key, not a public key (value not shown): it is the \
             value of NX_OPEN_CACHE_SIGNING_KEY, whose public key is {} (key id {})",
            lone.public,
            key_id(&lone.public)
        )) && !err.message.contains(&lone.secret),
        "{}",
        err.message
    );
    for bad in ["not base64 at all, secret-ish", "c2VjcmV0LXRydXN0ZWQta2V5"] {
        let err = resolve(&json!({"trustedKeys": [bad]}), &env(&[]), ws).unwrap_err();
        assert!(
            err.message.contains("entry 1") && !err.message.contains(bad),
            "{}",
            err.message
        );
    }
    // Nor in a value of the wrong shape.
    for options in [
        json!({"trustedKeys": k.secret}),
        json!({"trustedKeys": [{"key": k.secret}]}),
        json!({"trustedKeys": [[k.secret]]}),
    ] {
        let err = resolve(&options, &env(&[]), ws).unwrap_err();
        assert_eq!(err.option, "trustedKeys");
        assert!(!err.message.contains(&k.secret), "{}", err.message);
    }
    // The right places still work, the signer's own key listed or not.
    for trusted in [
        vec![k.public.clone()],
        vec![other.public.clone(), k.public.clone()],
    ] {
        resolve(
            &json!({ "trustedKeys": trusted }),
            &env(&[("NX_OPEN_CACHE_SIGNING_KEY", &k.secret)]),
            ws,
        )
        .unwrap();
    }
    // The variable overrides the option, both ways.
    let opts = json!({"trustedKeys": [k.public], "requireSignature": true});
    let c = resolve(
        &opts,
        &env(&[("NX_OPEN_CACHE_REQUIRE_SIGNATURE", "false")]),
        ws,
    )
    .unwrap();
    assert!(!c.seal.require_signature);
    let opts = json!({"trustedKeys": [k.public]});
    let c = resolve(
        &opts,
        &env(&[("NX_OPEN_CACHE_REQUIRE_SIGNATURE", "true")]),
        ws,
    )
    .unwrap();
    assert!(c.seal.require_signature);
    let err = resolve(
        &opts,
        &env(&[("NX_OPEN_CACHE_REQUIRE_SIGNATURE", "maybe")]),
        ws,
    )
    .unwrap_err();
    assert_eq!(err.option, "NX_OPEN_CACHE_REQUIRE_SIGNATURE");
    let err = resolve(
        &json!({}),
        &env(&[("NX_OPEN_CACHE_REQUIRE_SIGNATURE", "1")]),
        ws,
    )
    .unwrap_err();
    assert!(err.message.contains("trustedKeys"), "{}", err.message);
    // The other backends accept the options.
    let c = resolve(
        &json!({"backend": "s3", "bucket": "b", "trustedKeys": [k.public], "requireSignature": "true"}),
        &env(&[]),
        ws,
    )
    .unwrap();
    assert!(c.seal.require_signature);
}

// ---- through the proxy, as Nx sees it --------------------------------------------------------

#[tokio::test]
async fn through_the_proxy_a_refused_artifact_is_a_404_and_a_warning() {
    use nx_open_cache::config::resolve;
    use nx_open_cache::proxy;
    use serde_json::json;
    let trusted = keypair();
    let dir = tempfile::tempdir().unwrap();
    let start = |options: serde_json::Value, vars: &[(&str, &str)]| {
        let e = env(vars);
        let c = resolve(&options, &e, dir.path()).unwrap();
        proxy::start(&c, &e).unwrap()
    };
    let client = reqwest::Client::new();
    // An untrusted run (no signing key) writes first.
    let pr = start(
        json!({"path": "store", "trustedKeys": [trusted.public]}),
        &[],
    );
    // Valid Nx artifacts: the proxy serves nothing else.
    let poisoned = common::artifact(10_000, 13);
    let status = client
        .put(format!("{}/v1/cache/4242", pr.url))
        .bearer_auth(&pr.token)
        .body(poisoned.clone())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    // It can read its own (unsigned) write: requireSignature is off there.
    let resp = client
        .get(format!("{}/v1/cache/4242", pr.url))
        .bearer_auth(&pr.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    pr.stop().await;
    // The trusted run refuses it: a miss, with the reason in the summary.
    let main = start(
        json!({"path": "store", "trustedKeys": [trusted.public], "requireSignature": true}),
        &[("NX_OPEN_CACHE_SIGNING_KEY", &trusted.secret)],
    );
    assert!(
        main.location.contains("requires signatures"),
        "{}",
        main.location
    );
    let resp = client
        .get(format!("{}/v1/cache/4242", main.url))
        .bearer_auth(&main.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // It rebuilds and stores its signed artifact, replacing the one it refuses.
    let good = common::artifact(12_000, 14);
    let status = client
        .put(format!("{}/v1/cache/4242", main.url))
        .bearer_auth(&main.token)
        .body(good.clone())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let stats = main.stop().await;
    assert_eq!((stats.hits, stats.misses, stats.stored), (0, 1, 1));
    assert_eq!(
        stats.error_count, 0,
        "a refusal is no fault: {:?}",
        stats.errors
    );
    // Routine for a signing run: its write replaces the object; counted apart, not a warning.
    assert_eq!((stats.refused_count, stats.routine_count), (0, 1));
    assert!(
        stats
            .refusals
            .iter()
            .any(|r| r.routine && r.reason.contains("unsigned") && r.hashes == ["4242"]),
        "{:?}",
        stats.refusals
    );
    // A third trusted reader (no signing key) restores the signed artifact.
    let reader = start(
        json!({"path": "store", "trustedKeys": [trusted.public], "requireSignature": true}),
        &[],
    );
    let resp = client
        .get(format!("{}/v1/cache/4242", reader.url))
        .bearer_auth(&reader.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), good);
    // The untrusted writer can no longer replace it: first writer wins for it.
    let pr = start(
        json!({"path": "store", "trustedKeys": [trusted.public]}),
        &[],
    );
    let status = client
        .put(format!("{}/v1/cache/4242", pr.url))
        .bearer_auth(&pr.token)
        .body(poisoned)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 409);
    pr.stop().await;
    reader.stop().await;
}

#[tokio::test]
async fn a_signing_writer_keeps_what_it_accepts() {
    let k = keypair();
    let dir = tempfile::tempdir().unwrap();
    let s = sealed(dir.path(), config(Some(&k), &[&k], true, None));
    put(&s, "h", &artifact(1000, 15)).await;
    let before = stored(dir.path(), "h");
    assert_eq!(
        put(&s, "h", &artifact(1000, 16)).await,
        PutOutcome::AlreadyExists
    );
    assert_eq!(stored(dir.path(), "h"), before);
}

#[tokio::test]
async fn doctor_without_the_signing_key_accepts_the_refused_probe() {
    use nx_open_cache::config::resolve;
    use serde_json::json;
    let k = keypair();
    let dir = tempfile::tempdir().unwrap();
    let opts = json!({"path": "store", "trustedKeys": [k.public], "requireSignature": true});
    for vars in [
        vec![],
        vec![("NX_OPEN_CACHE_SIGNING_KEY", k.secret.as_str())],
    ] {
        let e = env(&vars);
        let c = resolve(&opts, &e, dir.path()).unwrap();
        let report = nx_open_cache::doctor::run(&c, &e).await;
        let shown: Vec<String> = report
            .checks
            .iter()
            .map(|c| format!("{}: {:?} {}", c.name, c.outcome, c.detail))
            .collect();
        assert!(report.works, "{shown:?}");
    }
}
