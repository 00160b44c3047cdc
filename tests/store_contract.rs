//! The store contract: one set of behaviours that every backend and every wrapper keeps, run
//! against each of them (as object_store runs one integration suite for every backend):
//!
//! | subject  | what it is                                                          |
//! |----------|---------------------------------------------------------------------|
//! | fs       | `FsStore` in a temp directory                                       |
//! | s3 gcs azure | `ObjectStoreBackend` on moto / fake-gcs-server / Azurite (127.0.0.1) |
//! | http     | `HttpStore` against `nx-open-cache serve` (fs storage, checks on)   |
//! | guard    | `GuardedStore` over fs (start-up probe, call limit, breaker)        |
//! | seal     | `SealedStore` over fs: signed, encrypted, signatures required       |
//! | validate | the plugin's artifact check (`ValidatingStore`, proxy policy) over fs |
//!
//! The behaviours: a miss is `Ok(None)`; what is stored comes back byte for byte, with or without
//! a declared length; the first writer wins, also under 16 concurrent writers of one hash; a
//! corrupted object is never served and the next write replaces it; objects the subject's own checks
//! refuse are misses (and uploads they refuse are `Refused`, nothing stored); large objects stream
//! both ways in bounded memory; namespaces are isolated; a store that cannot be reached answers
//! with a fault that says where. Backend-specific behaviour (credentials, layouts, retries, TLS)
//! stays in the per-backend test files.
//!
//! Every payload is a valid Nx artifact, so the checking subjects accept it.

mod common;

use common::emulator::{self, Emulator};
use common::{artifact, body, hash, read_all};
use nx_open_cache::archive::ValidationLimits;
use nx_open_cache::key::{Prefix, TaskHash};
use nx_open_cache::seal::keys::{
    generate_encryption_key, generate_signing_key, parse_encryption_keys, parse_public_key,
    parse_signing_key,
};
use nx_open_cache::seal::{SealConfig, SealedStore};
use nx_open_cache::serve::{self, RunningServe};
use nx_open_cache::store::fs::FsStore;
use nx_open_cache::store::guard::{GuardPolicy, GuardedStore};
use nx_open_cache::store::http::{HttpOptions, HttpStore};
use nx_open_cache::store::object::ObjectStoreBackend;
use nx_open_cache::store::resilience::{Resilience, Retry};
use nx_open_cache::store::validate::{ValidatingStore, ValidationPolicy};
use nx_open_cache::store::{ErrorKind, PutOutcome, Store, StoreError};
use object_store::{ObjectStoreExt, PutPayload};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Fs,
    S3,
    Gcs,
    Azure,
    Http,
    Guard,
    Seal,
    Validate,
}

impl Kind {
    fn cloud(self) -> Option<&'static str> {
        match self {
            Kind::S3 => Some("s3"),
            Kind::Gcs => Some("gcs"),
            Kind::Azure => Some("azure"),
            _ => None,
        }
    }
}

/// Where a subject's objects are kept, for tampering behind its back.
enum Raw {
    /// An fs store's root directory (objects are files named by their hash).
    Dir(PathBuf),
    /// A client on the same bucket and prefix.
    Cloud(Box<ObjectStoreBackend>),
}

/// One store under test and what the behaviours need around it.
struct Subject {
    kind: Kind,
    store: Arc<dyn Store>,
    /// The same storage beneath the subject's own checks, to plant objects they must refuse;
    /// `None` where the subject has no checks of its own (it keeps and serves any bytes).
    beneath: Option<Arc<dyn Store>>,
    /// The subject refuses uploads that are not valid artifacts (`Refused`, nothing stored).
    checks_uploads: bool,
    /// `with_namespace` gives isolated stores (the Nx protocol has none: http refuses them).
    namespaces: bool,
    raw: Raw,
    server: Option<RunningServe>,
    _emulator: Option<Emulator>,
    _dir: tempfile::TempDir,
    _turn: Turn,
}

/// The large-object behaviour runs alone (the process's peak memory is what it measures); the
/// others share their turns.
static TURNS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

enum Turn {
    Shared(#[allow(dead_code)] tokio::sync::RwLockReadGuard<'static, ()>),
    Alone(#[allow(dead_code)] tokio::sync::RwLockWriteGuard<'static, ()>),
}

const RW: &str = "contract-rw-secret-0123456789";

fn fs_in(root: &Path) -> FsStore {
    let fs = FsStore::new(root.to_path_buf(), Prefix::default());
    fs.prepare().expect("store directory");
    fs
}

/// Signing (its public key trusted), encryption, signatures required.
fn seal_config() -> SealConfig {
    let (public, secret) = generate_signing_key().expect("signing key");
    let enc = generate_encryption_key().expect("encryption key");
    SealConfig {
        signing_key: Some(parse_signing_key(&secret).expect("parse signing key")),
        trusted_keys: vec![parse_public_key(&public).expect("parse public key")],
        require_signature: true,
        encryption_keys: parse_encryption_keys(&enc).expect("parse encryption key"),
    }
}

/// `nx-open-cache serve` on 127.0.0.1 over fs storage in `root`, with one read-write token.
fn start_serve(root: &Path) -> RunningServe {
    let args: Vec<String> = [
        "--storage",
        &format!("fs:{}", root.display()),
        "--listen",
        "127.0.0.1:0",
        "--log",
        "off",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let env: HashMap<String, String> = [(
        "NX_OPEN_CACHE_SERVER_TOKENS".to_owned(),
        format!("ci:read-write:{RW}"),
    )]
    .into();
    let config = serve::config::resolve(&args, &env, root).expect("serve configuration");
    serve::start(&config, &env).expect("serve starts")
}

fn http_options(spool: &Path) -> HttpOptions {
    let base = Resilience::default();
    HttpOptions {
        resilience: Resilience {
            connect: Duration::from_secs(2),
            http_get: Retry {
                retries: 1,
                first_delay: Duration::from_millis(20),
                ..base.http_get
            },
            ..base
        },
        spool_dir: spool.to_path_buf(),
        ..HttpOptions::default()
    }
}

impl Subject {
    async fn new(kind: Kind) -> Subject {
        Subject::with_turn(kind, Turn::Shared(TURNS.read().await)).await
    }

    /// A subject for a behaviour that runs alone.
    async fn alone(kind: Kind) -> Subject {
        Subject::with_turn(kind, Turn::Alone(TURNS.write().await)).await
    }

    async fn with_turn(kind: Kind, turn: Turn) -> Subject {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("store");
        let spool = dir.path().join("spool");
        let fs = || Arc::new(fs_in(&root)) as Arc<dyn Store>;
        let mut s = Subject {
            kind,
            store: fs(),
            beneath: None,
            checks_uploads: false,
            namespaces: true,
            raw: Raw::Dir(root.clone()),
            server: None,
            _emulator: None,
            _dir: dir,
            _turn: turn,
        };
        match kind {
            Kind::Fs => {}
            Kind::S3 | Kind::Gcs | Kind::Azure => {
                let emu = Emulator::start(kind.cloud().unwrap_or_default());
                s.store = Arc::new(emu.store("contract"));
                s.raw = Raw::Cloud(Box::new(emu.store("contract")));
                s._emulator = Some(emu);
            }
            Kind::Http => {
                let server = start_serve(&root);
                s.store = Arc::new(
                    HttpStore::new(&server.url, Some(RW), http_options(&spool))
                        .expect("http client"),
                );
                s.server = Some(server);
                s.beneath = Some(fs());
                s.checks_uploads = true;
                s.namespaces = false;
            }
            Kind::Guard => {
                s.store = Arc::new(GuardedStore::new(fs(), GuardPolicy::default()));
            }
            Kind::Seal => {
                s.store = Arc::new(SealedStore::new(fs(), seal_config()).with_spool_dir(&spool));
                s.beneath = Some(fs());
            }
            Kind::Validate => {
                s.store = Arc::new(ValidatingStore::new(
                    fs(),
                    ValidationPolicy::proxy(true, ValidationLimits::default()),
                ));
                s.beneath = Some(fs());
            }
        }
        s
    }

    /// Flips one byte in the middle of what the storage holds for `h`.
    async fn corrupt(&self, h: &TaskHash) {
        match &self.raw {
            Raw::Dir(root) => {
                let path = common::object_files(root)
                    .into_iter()
                    .find(|p| p.file_name().is_some_and(|n| n == h.as_str()))
                    .unwrap_or_else(|| panic!("{:?}: no object file for {h}", self.kind));
                let mut bytes = std::fs::read(&path).expect("read the object file");
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0xff;
                std::fs::write(&path, bytes).expect("rewrite the object file");
            }
            Raw::Cloud(c) => {
                let key = c.object_key(h);
                let mut bytes = c
                    .client()
                    .get(&key)
                    .await
                    .expect("raw get")
                    .bytes()
                    .await
                    .expect("raw body")
                    .to_vec();
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0xff;
                c.client()
                    .put(&key, PutPayload::from(bytes))
                    .await
                    .expect("raw overwrite");
            }
        }
    }

    /// Stops what the subject started, and checks that no spool file was left behind with a name
    /// (spool files are unlinked when made; one still listed would be a leak on disk).
    async fn finish(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
        let mut left: Vec<String> = std::fs::read_dir(self._dir.path().join("spool"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.path().display().to_string())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(emu) = &self._emulator {
            left.extend(emu.spool_leftovers());
        }
        assert!(
            left.is_empty(),
            "{:?}: spool files left: {left:?}",
            self.kind
        );
    }
}

/// The same kind of subject on storage that cannot be used, and a word its faults must contain
/// (where it is).
async fn broken(
    kind: Kind,
) -> (
    Arc<dyn Store>,
    String,
    tempfile::TempDir,
    Option<RunningServe>,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    // A directory below a regular file: every access fails (ENOTDIR).
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"a file, not a directory").expect("write blocker");
    let root = blocker.join("store");
    let fs = || Arc::new(FsStore::new(root.clone(), Prefix::default())) as Arc<dyn Store>;
    let shown = root.display().to_string();
    let (store, needle): (Arc<dyn Store>, String) = match kind {
        Kind::Fs => (fs(), shown),
        Kind::S3 | Kind::Gcs | Kind::Azure => {
            // The emulator goes away after the client is made: nothing answers there any more.
            let emu = Emulator::start(kind.cloud().unwrap_or_default());
            let store = emu.store("contract");
            let o = emu.options();
            let bucket = o.get("bucket").or_else(|| o.get("container"));
            let needle = format!(
                "{}/contract",
                bucket.and_then(|b| b.as_str()).unwrap_or("?")
            );
            drop(emu);
            (Arc::new(store), needle)
        }
        Kind::Http => {
            let addr = common::closed_port();
            let store = HttpStore::new(
                &format!("http://{addr}"),
                Some(RW),
                http_options(dir.path()),
            )
            .expect("http client");
            (Arc::new(store), addr.to_string())
        }
        Kind::Guard => (
            Arc::new(GuardedStore::new(fs(), GuardPolicy::default())),
            shown,
        ),
        Kind::Seal => (
            Arc::new(SealedStore::new(fs(), seal_config()).with_spool_dir(dir.path())),
            shown,
        ),
        Kind::Validate => (
            Arc::new(ValidatingStore::new(
                fs(),
                ValidationPolicy::proxy(true, ValidationLimits::default()),
            )),
            shown,
        ),
    };
    (store, needle, dir, None)
}

async fn put(s: &dyn Store, h: &TaskHash, data: &[u8]) -> Result<PutOutcome, StoreError> {
    s.put(h, &mut body(data, 64 * 1024), Some(data.len() as u64))
        .await
}

async fn got(s: &dyn Store, h: &TaskHash) -> Option<Vec<u8>> {
    s.get(h)
        .await
        .unwrap_or_else(|e| panic!("get {h}: {:?}: {}", e.kind, e.message))
        .map(read_all)
}

// ------------------------------------------------------------------------------------------------
// The behaviours.

/// A miss, round trips of several sizes (declared length or not, in memory and spooled), and a
/// second writer changes nothing.
async fn round_trip(kind: Kind) {
    let s = Subject::new(kind).await;
    let st = s.store.as_ref();
    // Sizes below and above the 8 MiB kept in memory, each with and without a declared length.
    for (i, len) in [10usize, 300_000, 3 << 20, 9 << 20].into_iter().enumerate() {
        let h = hash(&format!("10{i}"));
        assert_eq!(got(st, &h).await, None, "{kind:?}: an empty store misses");
        let data = artifact(len, i as u64);
        let declared = (i % 2 == 0).then_some(data.len() as u64);
        let stored = st
            .put(&h, &mut body(&data, 7000), declared)
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: put {len}: {}", e.message));
        assert_eq!(stored, PutOutcome::Stored(data.len() as u64), "{kind:?}");
        assert!(
            got(st, &h).await == Some(data.clone()),
            "{kind:?}: bytes back"
        );
        let other = artifact(len, 99);
        assert_eq!(
            put(st, &h, &other).await,
            Ok(PutOutcome::AlreadyExists),
            "{kind:?}: the first writer wins"
        );
        assert!(got(st, &h).await == Some(data), "{kind:?}: unchanged");
    }
    s.finish().await;
}

/// An artifact's metadata (`<hash>-nxoc-meta`, what the plugin stores beside each artifact) is an
/// object of its own: accepted as a key, stored and served like any artifact, first writer wins,
/// and it never stands for the artifact of `<hash>` (nor the artifact for it).
async fn meta_keys_are_objects_of_their_own(kind: Kind) {
    let s = Subject::new(kind).await;
    let st = s.store.as_ref();
    let h = hash("4711");
    let meta = hash("4711-nxoc-meta");
    let data = artifact(3000, 1);
    let info = artifact(500, 2);
    assert_eq!(got(st, &meta).await, None, "{kind:?}: no meta yet");
    assert_eq!(
        put(st, &meta, &info).await,
        Ok(PutOutcome::Stored(info.len() as u64)),
        "{kind:?}"
    );
    assert_eq!(
        got(st, &h).await,
        None,
        "{kind:?}: the meta is not the artifact"
    );
    assert_eq!(
        put(st, &h, &data).await,
        Ok(PutOutcome::Stored(data.len() as u64)),
        "{kind:?}"
    );
    assert!(
        got(st, &meta).await == Some(info.clone()),
        "{kind:?}: meta back"
    );
    assert!(got(st, &h).await == Some(data), "{kind:?}: artifact back");
    assert_eq!(
        put(st, &meta, &artifact(500, 3)).await,
        Ok(PutOutcome::AlreadyExists),
        "{kind:?}"
    );
    assert!(got(st, &meta).await == Some(info), "{kind:?}: unchanged");
    s.finish().await;
}

/// 16 writers of one hash at once: exactly one stores, every reader sees its bytes.
async fn first_writer_wins_under_16_writers(kind: Kind) {
    let s = Subject::new(kind).await;
    let h = hash("4242");
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let store = s.store.clone();
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let data = artifact(256 << 10, 500 + i);
            let out = put(store.as_ref(), &h, &data).await;
            (out, data)
        }));
    }
    let mut stored = Vec::new();
    let mut already = 0;
    for t in tasks {
        match t.await.expect("writer task") {
            (Ok(PutOutcome::Stored(_)), data) => stored.push(data),
            (Ok(PutOutcome::AlreadyExists), _) => already += 1,
            (Err(e), _) => panic!("{kind:?}: a writer failed: {:?}: {}", e.kind, e.message),
        }
    }
    assert_eq!(
        (stored.len(), already),
        (1, 15),
        "{kind:?}: exactly one writer stores"
    );
    assert!(
        got(s.store.as_ref(), &h).await.as_ref() == stored.first(),
        "{kind:?}: the winner's bytes"
    );
    s.finish().await;
}

/// A corrupted object (verified in memory, and verified from a file above the inline limit) is
/// never served: a miss or a `Corrupt` fault; the next write stores a good object.
async fn corrupt_objects_are_never_served(kind: Kind) {
    let s = Subject::new(kind).await;
    let st = s.store.as_ref();
    for (i, len) in [5000usize, 9 << 20].into_iter().enumerate() {
        let h = hash(&format!("66{i}"));
        let data = artifact(len, 3 + i as u64);
        assert_eq!(
            put(st, &h, &data).await,
            Ok(PutOutcome::Stored(data.len() as u64))
        );
        s.corrupt(&h).await;
        match st.get(&h).await {
            Ok(None) => {}
            Err(e) if e.kind == ErrorKind::Corrupt => {
                assert!(
                    e.message.contains(h.as_str()),
                    "{kind:?}: names the hash: {}",
                    e.message
                )
            }
            Err(e) => panic!(
                "{kind:?}: corruption must be Corrupt: {:?}: {}",
                e.kind, e.message
            ),
            Ok(Some(_)) => panic!("{kind:?}: a corrupted object was served"),
        }
        assert_eq!(
            put(st, &h, &data).await,
            Ok(PutOutcome::Stored(data.len() as u64)),
            "{kind:?}: the corrupted object was removed, the next build stores a good one"
        );
        assert!(got(st, &h).await == Some(data), "{kind:?}: good bytes back");
    }
    s.finish().await;
}

/// Objects the subject's checks refuse, planted beneath them, are misses (`Refused` with a reason,
/// never a store fault); uploads they refuse store nothing.
async fn refused_objects_are_misses(kind: Kind) {
    let s = Subject::new(kind).await;
    let st = s.store.as_ref();
    let Some(beneath) = &s.beneath else {
        panic!("{kind:?} has no checks of its own");
    };
    // Not an Nx artifact at all; for the seal, a valid artifact without a signature.
    let planted = if kind == Kind::Seal {
        artifact(1000, 7)
    } else {
        b"not an Nx artifact".to_vec()
    };
    let h = hash("77");
    assert_eq!(
        put(beneath.as_ref(), &h, &planted).await,
        Ok(PutOutcome::Stored(planted.len() as u64))
    );
    match st.get(&h).await {
        Ok(None) => {}
        Err(e) if e.kind == ErrorKind::Refused => {
            assert!(!e.message.is_empty(), "{kind:?}: a refusal says why");
            assert!(
                !e.message.contains(h.as_str()),
                "{kind:?}: the reason is without the hash (refusals are grouped by reason): {}",
                e.message
            );
        }
        Err(e) => panic!("{kind:?}: must be Refused: {:?}: {}", e.kind, e.message),
        Ok(Some(_)) => panic!("{kind:?}: a refused object was served"),
    }
    if s.checks_uploads {
        let h = hash("78");
        let e = put(st, &h, b"not an Nx artifact either")
            .await
            .expect_err("a refused upload");
        assert_eq!(e.kind, ErrorKind::Refused, "{kind:?}: {}", e.message);
        assert!(
            got(beneath.as_ref(), &h).await.is_none(),
            "{kind:?}: nothing stored"
        );
    }
    s.finish().await;
}

/// A large artifact (`NX_OPEN_CACHE_TEST_LARGE_MIB`, default 128) goes up from a stream and comes
/// back as a file, byte for byte, while the process grows by less than the artifact.
async fn large_objects_stream_in_bounded_memory(kind: Kind) {
    let s = Subject::alone(kind).await;
    let mib = common::large_mib();
    assert!(
        mib >= 96,
        "NX_OPEN_CACHE_TEST_LARGE_MIB={mib}: at least 96, so that half of it held in memory is over the bound"
    );
    let path = s._dir.path().join("large.tar.gz");
    let (len, expected) = common::large_artifact_file(&path, mib << 20, 9);
    let h = hash("777");
    let rss_before = common::reset_peak_rss();
    assert_eq!(
        s.store
            .put(&h, &mut common::file_body(&path), Some(len))
            .await,
        Ok(PutOutcome::Stored(len)),
        "{kind:?}"
    );
    let artifact = s.store.get(&h).await.expect("get").expect("hit");
    assert_eq!(artifact.len, len, "{kind:?}");
    let (read, digest) = common::digest_file_artifact(artifact);
    let peak = common::proc_status_kib("VmHWM:");
    assert_eq!(read, len, "{kind:?}");
    assert!(digest == expected, "{kind:?}: bytes intact");
    let growth_mib = peak.saturating_sub(rss_before) / 1024;
    eprintln!(
        "{kind:?}: {mib} MiB up + down: RSS before {} MiB, peak {} MiB, growth {growth_mib} MiB",
        rss_before / 1024,
        peak / 1024
    );
    // Measured growth: 1-20 MiB for 128 MiB (the clouds' multipart parts the most); an object
    // held whole, or half of it, in memory would be caught.
    let bound = 48;
    assert!(rss_before > 0, "/proc/self/status gives no VmRSS here");
    assert!(
        growth_mib < bound,
        "{kind:?}: memory grew by {growth_mib} MiB moving {mib} MiB (bound {bound} MiB)"
    );
    s.finish().await;
}

/// Namespaces: the same hash in two namespaces and the root are three objects.
async fn namespaces_are_isolated(kind: Kind) {
    let s = Subject::new(kind).await;
    let ns = |n: &str| Prefix::parse(n).expect("namespace");
    if !s.namespaces {
        let e = s
            .store
            .with_namespace(&ns("team-a"))
            .err()
            .unwrap_or_else(|| panic!("{kind:?} must refuse namespaces"));
        assert!(!e.message.is_empty());
        s.finish().await;
        return;
    }
    let a = s.store.with_namespace(&ns("team-a")).expect("namespace a");
    let b = s.store.with_namespace(&ns("team-b")).expect("namespace b");
    let h = hash("31");
    let (da, db) = (artifact(2000, 1), artifact(2000, 2));
    assert_eq!(
        put(a.as_ref(), &h, &da).await,
        Ok(PutOutcome::Stored(da.len() as u64))
    );
    assert_eq!(
        got(b.as_ref(), &h).await,
        None,
        "{kind:?}: b does not see a"
    );
    assert_eq!(
        got(s.store.as_ref(), &h).await,
        None,
        "{kind:?}: the root does not see a"
    );
    assert_eq!(
        put(b.as_ref(), &h, &db).await,
        Ok(PutOutcome::Stored(db.len() as u64))
    );
    assert!(got(a.as_ref(), &h).await == Some(da), "{kind:?}");
    assert!(got(b.as_ref(), &h).await == Some(db), "{kind:?}");
    s.finish().await;
}

/// A store that cannot be used answers every call with an `Unavailable` fault that says where,
/// within a bound; it never panics, hangs or answers a hit.
async fn faults_become_reasons(kind: Kind) {
    let (store, needle, _dir, _server) = broken(kind).await;
    let bound = Duration::from_secs(60);
    let data = artifact(1000, 5);
    let h = hash("55");
    let get = tokio::time::timeout(bound, store.get(&h))
        .await
        .unwrap_or_else(|_| panic!("{kind:?}: get did not answer within {bound:?}"));
    let put = tokio::time::timeout(bound, put(store.as_ref(), &h, &data))
        .await
        .unwrap_or_else(|_| panic!("{kind:?}: put did not answer within {bound:?}"));
    let check = tokio::time::timeout(bound, store.check())
        .await
        .unwrap_or_else(|_| panic!("{kind:?}: check did not answer within {bound:?}"));
    for (call, e) in [
        ("get", get.map(|_| ()).err()),
        ("put", put.map(|_| ()).err()),
        ("check", check.err()),
    ] {
        let e = e.unwrap_or_else(|| panic!("{kind:?}: {call} on an unusable store succeeded"));
        assert_eq!(
            e.kind,
            ErrorKind::Unavailable,
            "{kind:?} {call}: {}",
            e.message
        );
        assert!(
            e.message.contains(&needle),
            "{kind:?} {call}: the fault must say where ({needle}): {}",
            e.message
        );
    }
}

// ------------------------------------------------------------------------------------------------
// Every behaviour for every subject.

macro_rules! contract {
    ($module:ident, $kind:ident, [$($behaviour:ident),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $behaviour() {
                    if super::Kind::$kind.cloud().is_some() && super::emulator::skip() {
                        eprintln!("skipped: NX_OPEN_CACHE_TEST_SKIP_CLOUD=1");
                        return;
                    }
                    super::$behaviour(super::Kind::$kind).await;
                }
            )*
        }
    };
}

macro_rules! every_behaviour {
    ($module:ident, $kind:ident $(, $extra:ident)*) => {
        contract!(
            $module,
            $kind,
            [
                round_trip,
                meta_keys_are_objects_of_their_own,
                first_writer_wins_under_16_writers,
                corrupt_objects_are_never_served,
                large_objects_stream_in_bounded_memory,
                namespaces_are_isolated,
                faults_become_reasons,
                $($extra,)*
            ]
        );
    };
}

every_behaviour!(fs, Fs);
every_behaviour!(s3, S3);
every_behaviour!(gcs, Gcs);
every_behaviour!(azure, Azure);
every_behaviour!(http, Http, refused_objects_are_misses);
every_behaviour!(guard, Guard);
every_behaviour!(seal, Seal, refused_objects_are_misses);
every_behaviour!(validate, Validate, refused_objects_are_misses);
