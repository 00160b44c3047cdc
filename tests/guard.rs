//! The guard in front of every store: a dead or failing store is probed once, then skipped, so it
//! costs a build seconds, not minutes. Stores here are scripted doubles: the guard's logic is
//! about call outcomes, not about any backend (the end-to-end tests use real dead servers).

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use nx_open_cache::key::{Prefix, TaskHash};
use nx_open_cache::store::guard::{GuardPolicy, GuardedStore};
use nx_open_cache::store::{
    Artifact, ArtifactBody, BodyStream, Cause, ErrorKind, PutOutcome, Store, StoreError, PROBE_HASH,
};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Works,
    Fails,
    Hangs,
    Corrupt,
    /// Fails with a cause that cannot fix itself within the run (a bucket that does not exist).
    Lasting,
    /// Reads work; writes are refused (a read-only token).
    WritesRefused,
}

struct Scripted {
    behaviour: std::sync::Mutex<Behaviour>,
    calls: AtomicU32,
    probed: AtomicBool,
}

impl Scripted {
    fn new(b: Behaviour) -> Arc<Self> {
        Arc::new(Scripted {
            behaviour: std::sync::Mutex::new(b),
            calls: AtomicU32::new(0),
            probed: AtomicBool::new(false),
        })
    }
    fn set(&self, b: Behaviour) {
        *self.behaviour.lock().unwrap() = b;
    }
    async fn act(&self, hash: &TaskHash, writing: bool) -> Result<(), StoreError> {
        if hash.as_str() == PROBE_HASH {
            self.probed.store(true, Ordering::SeqCst);
        } else {
            self.calls.fetch_add(1, Ordering::SeqCst);
        }
        let b = *self.behaviour.lock().unwrap();
        match b {
            Behaviour::Works => Ok(()),
            Behaviour::Fails => Err(StoreError::new(
                ErrorKind::Unavailable,
                "test store: HTTP 500 from 127.0.0.1",
            )),
            Behaviour::Corrupt => Err(StoreError::new(ErrorKind::Corrupt, "digest mismatch")),
            Behaviour::Lasting => Err(StoreError::new(
                ErrorKind::Unavailable,
                format!("test store {hash}: the bucket does not exist"),
            )
            .with_cause(Cause::lasting("no bucket", "bucket acme does not exist"))),
            Behaviour::WritesRefused if !writing => Ok(()),
            Behaviour::WritesRefused => Err(StoreError::new(
                ErrorKind::Unavailable,
                format!("test store {hash}: 403 on write"),
            )
            .with_cause(Cause::writes_only(
                "write refused",
                "writes refused (read-only token?)",
            ))),
            Behaviour::Hangs => {
                futures_util::future::pending::<()>().await;
                Ok(())
            }
        }
    }
}

struct Handle(Arc<Scripted>);

impl Store for Handle {
    fn get<'a>(
        &'a self,
        hash: &'a TaskHash,
    ) -> BoxFuture<'a, Result<Option<Artifact>, StoreError>> {
        Box::pin(async move {
            self.0.act(hash, false).await?;
            Ok(Some(Artifact {
                len: 2,
                body: ArtifactBody::Memory(Bytes::from_static(b"ok")),
                digest: None,
            }))
        })
    }
    fn put<'a>(
        &'a self,
        hash: &'a TaskHash,
        body: &'a mut BodyStream<'_>,
        _declared_len: Option<u64>,
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        Box::pin(async move {
            self.0.act(hash, true).await?;
            let mut n = 0u64;
            while let Some(Ok(c)) = body.next().await {
                n += c.len() as u64;
            }
            Ok(PutOutcome::Stored(n))
        })
    }
    fn describe(&self) -> String {
        "test store".into()
    }
    fn with_namespace(&self, _ns: &Prefix) -> Result<Arc<dyn Store>, StoreError> {
        Ok(Arc::new(Handle(self.0.clone())))
    }
}

fn hash(s: &str) -> TaskHash {
    TaskHash::parse(s).unwrap()
}

fn policy() -> GuardPolicy {
    GuardPolicy {
        probe_timeout: Duration::from_millis(300),
        call_timeout: Duration::from_secs(30),
        failures_to_open: 3,
        cool_down: None,
    }
}

fn body(data: &'static [u8]) -> BodyStream<'static> {
    futures_util::stream::iter(vec![Ok(Bytes::from_static(data))]).boxed()
}

#[tokio::test]
async fn a_hanging_store_is_probed_once_then_skipped() {
    let s = Scripted::new(Behaviour::Hangs);
    let g = GuardedStore::new(Arc::new(Handle(s.clone())), policy());
    // Sixteen lookups at once, as Nx would send them: none reaches the store.
    let lookups = (0..16).map(|i| {
        let h = hash(&format!("{}", 1000 + i));
        let g = &g;
        async move { g.get(&h).await }
    });
    let results = futures_util::future::join_all(lookups).await;
    for r in results {
        let e = r.expect_err("skipped");
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(e.message.contains("did not answer within"), "{}", e.message);
        assert!(e.message.contains("test store"), "{}", e.message);
    }
    let e = g
        .put(&hash("5"), &mut body(b"x"), Some(1))
        .await
        .expect_err("skipped");
    assert!(e.message.starts_with("skipped"), "{}", e.message);
    assert!(s.probed.load(Ordering::SeqCst));
    assert_eq!(
        s.calls.load(Ordering::SeqCst),
        0,
        "only the probe reached the store"
    );
    assert!(g.open_reason().is_some());
}

#[tokio::test]
async fn consecutive_failures_open_the_breaker_for_the_run() {
    let s = Scripted::new(Behaviour::Works);
    let g = GuardedStore::new(Arc::new(Handle(s.clone())), policy());
    assert!(
        g.get(&hash("1")).await.unwrap().is_some(),
        "probe passed, store used"
    );
    s.set(Behaviour::Fails);
    for i in 0..3 {
        let e = g.get(&hash(&format!("2{i}"))).await.expect_err("fault");
        assert!(e.message.contains("HTTP 500"), "{}", e.message);
    }
    let before = s.calls.load(Ordering::SeqCst);
    for i in 0..50 {
        let e = g.get(&hash(&format!("3{i}"))).await.expect_err("skipped");
        assert!(e.message.starts_with("skipped"), "{}", e.message);
        assert!(
            e.message.contains("3 storage calls failed in a row"),
            "{}",
            e.message
        );
        let e = g
            .put(&hash(&format!("4{i}")), &mut body(b"x"), Some(1))
            .await
            .expect_err("skipped");
        assert!(
            e.message.contains("HTTP 500"),
            "the last reason is kept: {}",
            e.message
        );
    }
    assert_eq!(
        s.calls.load(Ordering::SeqCst),
        before,
        "no call reached the store"
    );
    s.set(Behaviour::Works);
    assert!(
        g.get(&hash("6")).await.is_err(),
        "no cool-down: skipped for the rest of the run"
    );
}

#[tokio::test]
async fn a_success_resets_the_count_and_corruption_does_not_count() {
    let s = Scripted::new(Behaviour::Works);
    let g = GuardedStore::without_probe(Arc::new(Handle(s.clone())), policy());
    for round in 0..5 {
        s.set(Behaviour::Fails);
        for i in 0..2 {
            assert!(g.get(&hash(&format!("1{round}{i}"))).await.is_err());
        }
        s.set(Behaviour::Corrupt);
        assert!(g.get(&hash(&format!("2{round}"))).await.is_err());
        s.set(Behaviour::Works);
        assert!(
            g.get(&hash(&format!("3{round}"))).await.is_ok(),
            "round {round}"
        );
    }
    assert!(g.open_reason().is_none());
}

#[tokio::test]
async fn after_the_cool_down_one_trial_call_decides() {
    let s = Scripted::new(Behaviour::Fails);
    let mut p = policy();
    p.cool_down = Some(Duration::from_millis(50));
    let g = GuardedStore::without_probe(Arc::new(Handle(s.clone())), p);
    for i in 0..3 {
        assert!(g.get(&hash(&format!("1{i}"))).await.is_err());
    }
    assert!(g.open_reason().is_some());
    // Still failing: the trial re-opens it.
    tokio::time::sleep(Duration::from_millis(80)).await;
    let calls = s.calls.load(Ordering::SeqCst);
    assert!(g.get(&hash("20")).await.is_err());
    assert_eq!(s.calls.load(Ordering::SeqCst), calls + 1, "one trial call");
    let e = g.get(&hash("21")).await.expect_err("open again");
    assert!(
        e.message.contains("still failing after the cool-down"),
        "{}",
        e.message
    );
    // Recovered: the trial closes it.
    s.set(Behaviour::Works);
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(g.get(&hash("22")).await.is_ok());
    assert!(g.open_reason().is_none());
    assert!(g.get(&hash("23")).await.is_ok());
}

#[tokio::test]
async fn a_cancelled_trial_call_lets_the_next_call_try() {
    let s = Scripted::new(Behaviour::Fails);
    let mut p = policy();
    // No wait: once the breaker is open, every call may be the trial.
    p.cool_down = Some(Duration::ZERO);
    let g = GuardedStore::without_probe(Arc::new(Handle(s.clone())), p);
    for i in 0..3 {
        assert!(g.get(&hash(&format!("1{i}"))).await.is_err());
    }
    assert!(g.open_reason().is_some());
    // The trial call hangs and its future is dropped after the first poll (its client went away,
    // a timeout above it fired).
    s.set(Behaviour::Hangs);
    let calls = s.calls.load(Ordering::SeqCst);
    assert!(
        g.get(&hash("20")).now_or_never().is_none(),
        "the trial hangs"
    );
    assert_eq!(
        s.calls.load(Ordering::SeqCst),
        calls + 1,
        "the trial reached the store"
    );
    // The next call is the trial now; the store has recovered, so it closes the breaker.
    s.set(Behaviour::Works);
    assert!(g.get(&hash("21")).await.is_ok());
    assert!(g.open_reason().is_none());
    assert_eq!(s.calls.load(Ordering::SeqCst), calls + 2);
}

#[tokio::test]
async fn a_call_over_its_time_limit_is_abandoned_and_counted() {
    let s = Scripted::new(Behaviour::Hangs);
    let mut p = policy();
    p.call_timeout = Duration::from_millis(100);
    p.failures_to_open = 2;
    let g = GuardedStore::without_probe(Arc::new(Handle(s.clone())), p);
    for i in 0..2 {
        let e = g.get(&hash(&format!("{i}"))).await.expect_err("abandoned");
        assert!(e.message.contains("took longer than"), "{}", e.message);
    }
    let e = g.get(&hash("9")).await.expect_err("open");
    assert!(e.message.starts_with("skipped"), "{}", e.message);
    assert_eq!(s.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn namespaces_share_the_breaker() {
    let s = Scripted::new(Behaviour::Fails);
    let g = GuardedStore::without_probe(Arc::new(Handle(s.clone())), policy());
    let ns = g.with_namespace(&Prefix::parse("pr").unwrap()).unwrap();
    for i in 0..3 {
        assert!(ns.get(&hash(&format!("{i}"))).await.is_err());
    }
    let e = g.get(&hash("7")).await.expect_err("open for all views");
    assert!(e.message.starts_with("skipped"), "{}", e.message);
}

#[tokio::test]
async fn a_lasting_cause_skips_the_store_at_once_with_that_cause() {
    let s = Scripted::new(Behaviour::Works);
    let g = GuardedStore::new(Arc::new(Handle(s.clone())), policy());
    assert!(g.get(&hash("1")).await.unwrap().is_some(), "probe passed");
    s.set(Behaviour::Lasting);
    let first = g.get(&hash("2")).await.expect_err("fault");
    assert!(first
        .cause
        .as_ref()
        .is_some_and(|c| c.lasting && !c.skipped));
    let calls = s.calls.load(Ordering::SeqCst);
    for i in 0..20 {
        let e = g
            .put(&hash(&format!("3{i}")), &mut body(b"x"), Some(1))
            .await
            .expect_err("skipped");
        let cause = e.cause.expect("the skip carries the cause");
        assert_eq!(
            (cause.key.as_str(), cause.reason.as_str(), cause.skipped),
            ("no bucket", "bucket acme does not exist", true)
        );
    }
    assert_eq!(
        s.calls.load(Ordering::SeqCst),
        calls,
        "one fault, then no call"
    );
    assert_eq!(
        g.open_reason().as_deref(),
        Some("bucket acme does not exist")
    );
}

#[tokio::test]
async fn a_lasting_cause_at_the_probe_is_the_skip_reason_itself() {
    let s = Scripted::new(Behaviour::Lasting);
    let g = GuardedStore::new(Arc::new(Handle(s.clone())), policy());
    let e = g.get(&hash("1")).await.expect_err("skipped");
    let cause = e.cause.expect("cause");
    assert_eq!(
        (cause.reason.as_str(), cause.skipped),
        ("bucket acme does not exist", true)
    );
    assert_eq!(s.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn refused_writes_never_open_the_breaker_reads_go_on() {
    let s = Scripted::new(Behaviour::WritesRefused);
    let g = GuardedStore::new(Arc::new(Handle(s.clone())), policy());
    for i in 0..10 {
        let e = g
            .put(&hash(&format!("5{i}")), &mut body(b"x"), Some(1))
            .await
            .expect_err("refused");
        assert!(e.message.contains("403"), "{}", e.message);
    }
    assert!(g.open_reason().is_none(), "ten refused writes in a row");
    assert!(g.get(&hash("6")).await.unwrap().is_some(), "reads go on");
}
