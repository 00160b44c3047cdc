//! The http backend against real Nx-protocol servers on 127.0.0.1: this crate's own server (the
//! proxy's `serve` over an fs store), raw TCP servers that misbehave on purpose (hang, 500, 413,
//! truncated answers, closed port), and a TLS front (tokio-rustls, certificates made with the
//! `openssl` CLI) for the certificate checks.

mod common;

use common::{artifact, body, closed_port, hash, noise, read_all};
use nx_open_cache::config::{resolve, Mode};
use nx_open_cache::key::Prefix;
use nx_open_cache::proxy;
use nx_open_cache::server::{self, ProxySettings, RunningProxy};
use nx_open_cache::stats::Stats;
use nx_open_cache::store::fs::FsStore;
use nx_open_cache::store::http::{HttpOptions, HttpStore, TOKEN_ENV};
use nx_open_cache::store::resilience::{Resilience, Retry};
use nx_open_cache::store::{ArtifactBody, PutOutcome, Store};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "upstream-secret-token";

/// Short timeouts so that failure paths finish in well under a second each.
fn quick(spool: &Path) -> HttpOptions {
    let base = Resilience::default();
    let resilience = Resilience {
        connect: Duration::from_secs(2),
        answer: Duration::from_millis(400),
        request: Duration::from_secs(60),
        http_get: Retry {
            retries: 2,
            first_delay: Duration::from_millis(20),
            ..base.http_get
        },
        ..base
    };
    HttpOptions {
        resilience,
        spool_dir: spool.to_path_buf(),
        ..HttpOptions::default()
    }
}

/// Upper bound on any single failing call, so a wrong implementation fails instead of hanging.
const BOUND: Duration = Duration::from_secs(30);

/// This crate's Nx-protocol server over an fs store in `dir`.
async fn upstream(dir: &Path, mode: Mode) -> RunningProxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let fs = FsStore::new(dir.join("store"), Prefix::default());
    fs.prepare().expect("upstream store directory");
    server::serve(
        listener,
        ProxySettings {
            store: Arc::new(fs),
            mode,
            token: TOKEN.to_owned(),
            debug: false,
            stats: Arc::new(Stats::default()),
        },
    )
    .expect("upstream serves")
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

fn store(url: &str, token: Option<&str>, options: HttpOptions) -> HttpStore {
    HttpStore::new(url, token, options).expect("client builds")
}

// --- raw servers -----------------------------------------------------------------------------

/// What a raw server answers to the n-th request (0-based): the full HTTP response bytes.
type Answer = Arc<dyn Fn(usize, &str) -> Vec<u8> + Send + Sync>;

/// A raw HTTP/1.1 server: reads each request (head and Content-Length body), counts it, writes the
/// bytes `answer` gives, and closes the connection when they do not say `Connection: keep-alive`.
async fn raw_server(answer: Answer) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let answer = answer.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf: Vec<u8> = Vec::new();
                loop {
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break Some(i + 4);
                        }
                        let mut chunk = [0u8; 8192];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => break None,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let Some(head_end) = head_end else { return };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let mut chunk = [0u8; 65536];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + len);
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    let response = answer(n, head.lines().next().unwrap_or(""));
                    if sock.write_all(&response).await.is_err() {
                        return;
                    }
                    if !String::from_utf8_lossy(&response).contains("Connection: keep-alive") {
                        let _ = sock.shutdown().await;
                        return;
                    }
                }
            });
        }
    });
    (addr, count)
}

fn response(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Accepts connections and never answers (keeps them open, reads and drops what comes).
async fn hanging_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sink = [0u8; 65536];
                // Reads for a bounded time (the test ends long before), never writes.
                let _ = tokio::time::timeout(Duration::from_secs(60), async {
                    while let Ok(n) = sock.read(&mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
            });
        }
    });
    addr
}

// --- tests -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_miss_and_second_writer() {
    let dir = tempfile::tempdir().unwrap();
    let up = upstream(dir.path(), Mode::ReadWrite).await;
    let s = store(&url(up.addr), Some(TOKEN), quick(dir.path()));
    assert_eq!(s.describe(), format!("http {}", url(up.addr)));
    assert!(s.has_token());

    assert!(s.get(&hash("100")).await.unwrap().is_none(), "miss");
    let data = noise(300_000, 1);
    assert_eq!(
        s.put(
            &hash("100"),
            &mut body(&data, 7000),
            Some(data.len() as u64)
        )
        .await,
        Ok(PutOutcome::Stored(300_000))
    );
    let a = s.get(&hash("100")).await.unwrap().expect("hit");
    assert_eq!(a.len, 300_000);
    assert!(
        matches!(a.body, ArtifactBody::Memory(_)),
        "small: in memory"
    );
    assert_eq!(read_all(a), data);

    // The second writer of a hash gets 409 from the upstream: AlreadyExists, nothing changed.
    let other = noise(1000, 2);
    assert_eq!(
        s.put(&hash("100"), &mut body(&other, 100), Some(1000))
            .await,
        Ok(PutOutcome::AlreadyExists)
    );
    assert_eq!(read_all(s.get(&hash("100")).await.unwrap().unwrap()), data);

    // Empty artifact, and a body of unknown length (spooled to learn it).
    assert_eq!(
        s.put(&hash("empty"), &mut body(&[], 1), Some(0)).await,
        Ok(PutOutcome::Stored(0))
    );
    assert_eq!(read_all(s.get(&hash("empty")).await.unwrap().unwrap()), b"");
    let unsized_data = noise(20_000, 5);
    assert_eq!(
        s.put(&hash("unsized"), &mut body(&unsized_data, 3000), None)
            .await,
        Ok(PutOutcome::Stored(20_000))
    );
    assert_eq!(
        read_all(s.get(&hash("unsized")).await.unwrap().unwrap()),
        unsized_data
    );
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_not_matching_its_length_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let up = upstream(dir.path(), Mode::ReadWrite).await;
    let s = store(&url(up.addr), Some(TOKEN), quick(dir.path()));
    let data = noise(10_000, 6);
    let short = s
        .put(&hash("short"), &mut body(&data, 1000), Some(20_000))
        .await;
    let err = short.expect_err("a shorter body is refused");
    assert_eq!(
        err.kind,
        nx_open_cache::store::ErrorKind::BadRequest,
        "{err}"
    );
    let long = s
        .put(&hash("long"), &mut body(&data, 1000), Some(5_000))
        .await;
    assert!(long.is_err(), "a longer body is refused");
    for h in ["short", "long"] {
        assert!(
            s.get(&hash(h)).await.unwrap().is_none(),
            "{h}: nothing stored upstream"
        );
    }
    up.stop().await;
}

/// Large-object tests run one at a time so the process peak belongs to one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_name_the_env_var() {
    let dir = tempfile::tempdir().unwrap();
    let up = upstream(dir.path(), Mode::ReadWrite).await;
    let base = url(up.addr);
    let data = noise(5000, 8);

    let wrong = store(&base, Some("not-the-token"), quick(dir.path()));
    let err = wrong
        .get(&hash("200"))
        .await
        .expect_err("wrong token")
        .message;
    for needle in [TOKEN_ENV, "refused the token", "401", &base] {
        assert!(err.contains(needle), "{needle:?} missing in: {err}");
    }
    assert!(!err.contains("not-the-token"), "secret leaked: {err}");
    let err = wrong
        .put(&hash("200"), &mut body(&data, 1000), Some(5000))
        .await
        .expect_err("wrong token")
        .message;
    assert!(err.contains(TOKEN_ENV) && err.contains("401"), "{err}");

    let anonymous = store(&base, None, quick(dir.path()));
    assert!(!anonymous.has_token());
    let err = anonymous
        .get(&hash("200"))
        .await
        .expect_err("no token")
        .message;
    assert!(err.contains(&format!("{TOKEN_ENV} is not set")), "{err}");

    // The token from the environment, as the proxy builds the store.
    let env: HashMap<String, String> = [(TOKEN_ENV.to_owned(), TOKEN.to_owned())].into();
    let from_env = HttpStore::from_env(&base, &env).unwrap();
    assert!(from_env.get(&hash("200")).await.unwrap().is_none());
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_upstream_refuses_writes_and_the_proxy_stays_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let up = upstream(dir.path(), Mode::ReadOnly).await;
    let base = url(up.addr);
    let s = store(&base, Some(TOKEN), quick(dir.path()));
    let data = noise(4000, 9);
    let err = s
        .put(&hash("300"), &mut body(&data, 1000), Some(4000))
        .await
        .expect_err("read-only upstream")
        .message;
    for needle in ["refused the write", "read-only token?", "403", TOKEN_ENV] {
        assert!(err.contains(needle), "{needle:?} missing in: {err}");
    }
    assert!(
        s.get(&hash("300")).await.unwrap().is_none(),
        "reads still work"
    );

    // Through the plugin's proxy: Nx sees the quiet 403 ("not stored"), the summary says why.
    let env: HashMap<String, String> = [(TOKEN_ENV.to_owned(), TOKEN.to_owned())].into();
    let config = resolve(
        &serde_json::json!({"backend": "http", "url": base}),
        &env,
        dir.path(),
    )
    .unwrap();
    let p = proxy::start(&config, &env).expect("proxy starts");
    assert_eq!(p.location, format!("http {base}"));
    let client = reqwest::Client::new();
    let status = client
        .put(format!("{}/v1/cache/300", p.url))
        .bearer_auth(&p.token)
        .body(data.clone())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 403);
    // More refused writes in a row never skip the store: the reads go on.
    for h in 301..305 {
        let put = client
            .put(format!("{}/v1/cache/{h}", p.url))
            .bearer_auth(&p.token)
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 403);
    }
    let get = client
        .get(format!("{}/v1/cache/305", p.url))
        .bearer_auth(&p.token)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 404);
    let stats = p.stop().await;
    assert_eq!(stats.stored, 0);
    assert_eq!(stats.errors.len(), 1, "{:?}", stats.errors);
    assert_eq!((stats.errors[0].count, stats.errors[0].skipped), (5, false));
    assert!(
        stats
            .errors
            .iter()
            .any(|e| e.reason.contains("refused writes") && e.reason.contains("read-only")),
        "{:?}",
        stats.errors
    );
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_in_front_of_an_upstream_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let up = upstream(dir.path(), Mode::ReadWrite).await;
    let env: HashMap<String, String> = [(TOKEN_ENV.to_owned(), TOKEN.to_owned())].into();
    let options = serde_json::json!({"backend": "http", "url": url(up.addr)});
    let config = resolve(&options, &env, dir.path()).unwrap();
    let client = reqwest::Client::new();
    let data = common::artifact(200_000, 10);
    let len = data.len() as u64;

    // Machine A stores.
    let a = proxy::start(&config, &env).expect("proxy A");
    let put = |p: &proxy::Proxy| {
        client
            .put(format!("{}/v1/cache/400", p.url))
            .bearer_auth(&p.token)
            .body(data.clone())
            .send()
    };
    assert_eq!(put(&a).await.unwrap().status(), 200);
    let sa = a.stop().await;
    assert_eq!((sa.stored, sa.bytes_up, sa.error_count), (1, len, 0));

    // Machine B restores it as a remote hit.
    let b = proxy::start(&config, &env).expect("proxy B");
    let resp = client
        .get(format!("{}/v1/cache/400", b.url))
        .bearer_auth(&b.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), data);
    let miss = client
        .get(format!("{}/v1/cache/401", b.url))
        .bearer_auth(&b.token)
        .send()
        .await
        .unwrap();
    assert_eq!(miss.status(), 404);
    let sb = b.stop().await;
    assert_eq!((sb.hits, sb.misses, sb.error_count), (1, 1, 0));
    up.stop().await;
}

/// An upload the upstream `serve` refuses (its artifact check answers 400 with the reason) is a
/// refusal for the proxy, not a store fault: Nx gets the quiet 403, the run summary counts the
/// refusal with the server's reason, and the breaker is not fed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_the_upstream_refuses_is_a_quiet_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let args: Vec<String> = ["--storage", &format!("fs:{}", root.display())]
        .into_iter()
        .chain(["--listen", "127.0.0.1:0", "--log", "off"])
        .map(str::to_owned)
        .collect();
    let server_env: HashMap<String, String> = [(
        "NX_OPEN_CACHE_SERVER_TOKENS".to_owned(),
        format!("ci:read-write:{TOKEN}"),
    )]
    .into();
    let config = nx_open_cache::serve::config::resolve(&args, &server_env, dir.path()).unwrap();
    let up = nx_open_cache::serve::start(&config, &server_env).expect("serve starts");
    let env: HashMap<String, String> = [(TOKEN_ENV.to_owned(), TOKEN.to_owned())].into();
    let options = serde_json::json!({"backend": "http", "url": up.url});
    let p = proxy::start(&resolve(&options, &env, dir.path()).unwrap(), &env).expect("proxy");
    let client = reqwest::Client::new();
    let put = |h: &str, body: Vec<u8>| {
        client
            .put(format!("{}/v1/cache/{h}", p.url))
            .bearer_auth(&p.token)
            .body(body)
            .send()
    };
    for h in ["500", "501", "502", "503"] {
        assert_eq!(
            put(h, b"not an Nx artifact".to_vec())
                .await
                .unwrap()
                .status(),
            403
        );
    }
    assert_eq!(
        put("504", artifact(1000, 1)).await.unwrap().status(),
        200,
        "the store is still used"
    );
    let s = p.stop().await;
    assert_eq!(
        (s.stored, s.refused_count, s.error_count),
        (1, 4, 0),
        "{s:?}"
    );
    assert_eq!(s.refusals.len(), 1, "one reason: {:?}", s.refusals);
    assert!(
        s.refusals[0].reason.contains("not a valid Nx artifact"),
        "{:?}",
        s.refusals
    );
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_a_fault_with_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let addr = closed_port();
    let s = store(&url(addr), Some(TOKEN), quick(dir.path()));
    let started = Instant::now();
    let err = tokio::time::timeout(BOUND, s.get(&hash("500")))
        .await
        .expect("bounded")
        .expect_err("nothing listens")
        .message;
    eprintln!(
        "closed port: GET fault after {:?}: {err}",
        started.elapsed()
    );
    for needle in ["cannot connect", &url(addr), "3 attempts"] {
        assert!(err.contains(needle), "{needle:?} missing in: {err}");
    }
    assert!(
        err.to_ascii_lowercase().contains("refused"),
        "the cause is named: {err}"
    );
    let err = tokio::time::timeout(BOUND, s.put(&hash("500"), &mut body(b"abc", 3), Some(3)))
        .await
        .expect("bounded")
        .expect_err("nothing listens")
        .message;
    assert!(err.contains("cannot connect"), "{err}");
    assert!(!err.contains("attempts"), "a PUT is not retried: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_that_never_answers_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let addr = hanging_server().await;
    let s = store(&url(addr), Some(TOKEN), quick(dir.path()));
    let started = Instant::now();
    let err = tokio::time::timeout(BOUND, s.get(&hash("600")))
        .await
        .expect("the store's own timeout fires first")
        .expect_err("no answer")
        .message;
    eprintln!(
        "hanging upstream: GET fault after {:?}: {err}",
        started.elapsed()
    );
    assert!(err.contains("no answer in time"), "{err}");
    assert!(err.contains("read timeout 0.4 s"), "{err}");
    assert!(!err.contains("attempts"), "a hang is not retried: {err}");
    let data = noise(100_000, 11);
    let err = tokio::time::timeout(
        BOUND,
        s.put(&hash("600"), &mut body(&data, 10_000), Some(100_000)),
    )
    .await
    .expect("the store's own timeout fires first")
    .expect_err("no answer")
    .message;
    assert!(err.contains("no answer in time"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_for_get_only() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, count) = raw_server(Arc::new(|_, _| {
        response("500 Internal Server Error", "database on fire")
    }))
    .await;
    let s = store(&url(addr), Some(TOKEN), quick(dir.path()));
    let err = s.get(&hash("700")).await.expect_err("500").message;
    for needle in ["500", "database on fire", "3 attempts", &url(addr)] {
        assert!(err.contains(needle), "{needle:?} missing in: {err}");
    }
    assert_eq!(count.load(Ordering::SeqCst), 3, "1 try + 2 retries");
    let err = s
        .put(&hash("700"), &mut body(b"abcdef", 2), Some(6))
        .await
        .expect_err("500")
        .message;
    assert!(err.contains("500"), "{err}");
    assert_eq!(count.load(Ordering::SeqCst), 4, "a PUT is sent once");

    // A transient 503 followed by a good answer: the retry restores the artifact.
    let (addr, count) = raw_server(Arc::new(|n, _| {
        if n == 0 {
            response("503 Service Unavailable", "busy")
        } else {
            response("200 OK", "payload")
        }
    }))
    .await;
    let s = store(&url(addr), Some(TOKEN), quick(dir.path()));
    let a = s.get(&hash("701")).await.unwrap().expect("second try hits");
    assert_eq!(read_all(a), b"payload");
    assert_eq!(count.load(Ordering::SeqCst), 2);

    // A 400 is not transient.
    let (addr, count) = raw_server(Arc::new(|_, _| response("400 Bad Request", "bad hash"))).await;
    let s = store(&url(addr), Some(TOKEN), quick(dir.path()));
    let err = s.get(&hash("702")).await.expect_err("400").message;
    assert!(err.contains("400") && err.contains("bad hash"), "{err}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_and_truncated_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _) = raw_server(Arc::new(|_, _| {
        response("413 Payload Too Large", "max 1000 bytes")
    }))
    .await;
    let s = store(&url(addr), Some(TOKEN), quick(dir.path()));
    let data = noise(5000, 12);
    let err = s
        .put(&hash("800"), &mut body(&data, 1000), Some(5000))
        .await
        .expect_err("413")
        .message;
    for needle in ["5000 bytes", "too large", "413", "max 1000 bytes"] {
        assert!(err.contains(needle), "{needle:?} missing in: {err}");
    }

    // Declares 100 bytes, sends 10 and closes: never a hit.
    let (addr, count) = raw_server(Arc::new(|_, _| {
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n0123456789".to_vec()
    }))
    .await;
    let s = store(&url(addr), Some(TOKEN), quick(dir.path()));
    let err = s.get(&hash("801")).await.expect_err("truncated").message;
    eprintln!("truncated: {err}");
    assert!(err.contains(&url(addr)), "{err}");
    assert_eq!(
        count.load(Ordering::SeqCst),
        3,
        "a broken download is retried"
    );

    // A redirect is not followed (the token must not travel elsewhere).
    let (addr, _) = raw_server(Arc::new(|_, _| {
        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:1/x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
    }))
    .await;
    let s = store(&url(addr), Some(TOKEN), quick(dir.path()));
    let err = s.get(&hash("802")).await.expect_err("redirect").message;
    assert!(err.contains("307"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_path_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let lines = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = lines.clone();
    let (addr, _) = raw_server(Arc::new(move |_, line| {
        seen.lock().unwrap().push(line.to_owned());
        response("404 Not Found", "")
    }))
    .await;
    let s = store(
        &format!("{}/nx/cache-base", url(addr)),
        None,
        quick(dir.path()),
    );
    assert!(s.get(&hash("900")).await.unwrap().is_none());
    assert_eq!(
        lines.lock().unwrap().as_slice(),
        ["GET /nx/cache-base/v1/cache/900 HTTP/1.1"]
    );
}

// --- TLS -------------------------------------------------------------------------------------

/// A CA and a server certificate for 127.0.0.1 signed by it, made with the `openssl` CLI.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn make() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .unwrap_or_else(|e| {
                    panic!("the TLS tests need the openssl CLI on PATH to make certificates: {e}")
                });
            assert!(
                out.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::write(
            d.join("leaf.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        let mut ca = vec!["req", "-x509", "-nodes", "-days", "2"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=nx-open-cache test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        run(&ca);
        let mut csr = vec!["req", "-nodes"];
        csr.extend(ec);
        csr.extend([
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        run(&csr);
        run(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "leaf.pem",
            "-extfile",
            "leaf.ext",
        ]);
        Certs { dir }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

/// A TLS front on 127.0.0.1 that forwards every connection to `backend` (plain http).
async fn tls_front(certs: &Certs, backend: SocketAddr) -> SocketAddr {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(certs.dir.path().join("leaf.pem"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_file(certs.dir.path().join("leaf.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that rejects the certificate ends the handshake: nothing to forward.
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_extra_roots_and_without() {
    let certs = Certs::make();
    let dir = tempfile::tempdir().unwrap();
    let up = upstream(dir.path(), Mode::ReadWrite).await;
    let front = tls_front(&certs, up.addr).await;
    let base = format!("https://127.0.0.1:{}", front.port());
    let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([(TOKEN_ENV.to_owned(), TOKEN.to_owned())])
            .collect()
    };
    let ca = certs.ca().display().to_string();

    // NODE_EXTRA_CA_CERTS: the test CA is trusted besides the system's roots.
    let trusted = HttpStore::from_env(&base, &env(&[("NODE_EXTRA_CA_CERTS", &ca)])).unwrap();
    assert!(trusted.warnings().is_empty(), "{:?}", trusted.warnings());
    let data = noise(70_000, 13);
    assert_eq!(
        trusted
            .put(&hash("tls1"), &mut body(&data, 8192), Some(70_000))
            .await,
        Ok(PutOutcome::Stored(70_000))
    );
    assert_eq!(
        read_all(trusted.get(&hash("tls1")).await.unwrap().unwrap()),
        data
    );

    // Without it the certificate is rejected: a fault naming the URL and the reason.
    let plain = HttpStore::new(&base, Some(TOKEN), quick(dir.path())).unwrap();
    let err = plain
        .get(&hash("tls1"))
        .await
        .expect_err("untrusted")
        .message;
    eprintln!("untrusted certificate: {err}");
    assert!(err.contains(&base), "{err}");
    for needle in [
        "TLS handshake failed",
        "UnknownIssuer",
        "NODE_EXTRA_CA_CERTS",
    ] {
        assert!(err.contains(needle), "{needle:?} missing in: {err}");
    }
    assert!(
        !err.contains("attempts"),
        "a bad certificate is not retried: {err}"
    );

    // An unreadable NODE_EXTRA_CA_CERTS is a warning naming the path, not a failure.
    let missing = dir.path().join("no-such.pem");
    let shown = missing.display().to_string();
    let s = HttpStore::from_env(&base, &env(&[("NODE_EXTRA_CA_CERTS", &shown)])).unwrap();
    assert_eq!(s.warnings().len(), 1, "{:?}", s.warnings());
    assert!(
        s.warnings()[0].contains(&shown) && s.warnings()[0].contains("NODE_EXTRA_CA_CERTS"),
        "{:?}",
        s.warnings()
    );
    assert!(s.get(&hash("tls1")).await.is_err(), "still untrusted");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let s = HttpStore::from_env(
        &base,
        &env(&[("NODE_EXTRA_CA_CERTS", &not_pem.display().to_string())]),
    )
    .unwrap();
    assert!(
        s.warnings()[0].contains("no PEM certificate"),
        "{:?}",
        s.warnings()
    );

    // NODE_TLS_REJECT_UNAUTHORIZED=0: accepted, with one warning.
    let insecure =
        HttpStore::from_env(&base, &env(&[("NODE_TLS_REJECT_UNAUTHORIZED", "0")])).unwrap();
    assert_eq!(insecure.warnings().len(), 1, "{:?}", insecure.warnings());
    assert!(insecure.warnings()[0].contains("NODE_TLS_REJECT_UNAUTHORIZED=0"));
    assert_eq!(
        read_all(insecure.get(&hash("tls1")).await.unwrap().unwrap()),
        data
    );

    // The proxy records that warning in the run summary.
    let options = serde_json::json!({"backend": "http", "url": base});
    let penv = env(&[("NODE_TLS_REJECT_UNAUTHORIZED", "0")]);
    let config = resolve(&options, &penv, dir.path()).unwrap();
    let p = proxy::start(&config, &penv).expect("proxy");
    let stats = p.stop().await;
    assert_eq!(stats.errors.len(), 1, "{:?}", stats.errors);
    assert!(stats.errors[0].reason.contains("not verified"));
    up.stop().await;
}

// --- the run summary: faults grouped by root cause ---------------------------------------------

/// A proxy (as the plugin starts it) in front of `base`, with `env`.
fn proxy_to(base: &str, env: &HashMap<String, String>, dir: &Path) -> proxy::Proxy {
    let options = serde_json::json!({"backend": "http", "url": base});
    let config = resolve(&options, env, dir).expect("config");
    proxy::start(&config, env).expect("proxy")
}

/// `n` lookups and `n` uploads through the proxy, one after the other (hashes 1000..1000+n).
async fn get_and_put(p: &proxy::Proxy, n: usize) {
    let client = reqwest::Client::new();
    for i in 0..n {
        let url = format!("{}/v1/cache/{}", p.url, 1000 + i);
        let get = client.get(&url).bearer_auth(&p.token).send().await.unwrap();
        assert_eq!(get.status(), 404);
        let put = client
            .put(&url)
            .bearer_auth(&p.token)
            .body(b"artifact".to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 403, "a write not stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_token_is_one_cause_and_the_store_is_skipped_for_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let answer: Answer = Arc::new(|_, _| response("401 Unauthorized", "missing token"));
    let (addr, count) = raw_server(answer).await;
    let base = url(addr);
    let p = proxy_to(&base, &HashMap::new(), dir.path());
    get_and_put(&p, 4).await;
    let s = p.stop().await;
    assert_eq!((s.misses, s.error_count), (4, 8), "{s:?}");
    assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
    assert_eq!(
        s.errors[0].reason,
        format!("server {base} requires a token (401 Unauthorized): {TOKEN_ENV} is not set")
    );
    assert!(s.errors[0].skipped, "{:?}", s.errors);
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "only the start-up check reached the server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_one_cause_named_once() {
    let dir = tempfile::tempdir().unwrap();
    let up = upstream(dir.path(), Mode::ReadWrite).await;
    let base = url(up.addr);
    let env: HashMap<String, String> = [(TOKEN_ENV.to_owned(), "not-the-token".to_owned())].into();
    let p = proxy_to(&base, &env, dir.path());
    get_and_put(&p, 4).await;
    let s = p.stop().await;
    assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
    let e = &s.errors[0];
    assert_eq!(
        (e.reason.as_str(), e.count, e.skipped),
        (
            format!("server {base} refused the token in {TOKEN_ENV} (401 Unauthorized)").as_str(),
            8,
            true
        )
    );
    assert!(
        !format!("{s:?}").contains("not-the-token"),
        "the token is never shown"
    );
    up.stop().await;
}

/// 500 requests through the proxy whose upstream fails writes in two ways (413 for even hashes,
/// 500 for odd ones): two entries with their request counts, no hash in either reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_requests_with_two_causes_are_two_entries() {
    let dir = tempfile::tempdir().unwrap();
    let answer: Answer = Arc::new(|n, line| {
        let hash: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.rsplit('/').next())
            .and_then(|h| h.parse().ok())
            .unwrap_or(0);
        match (line.starts_with("PUT"), hash % 2) {
            (false, _) => response("404 Not Found", ""),
            (true, 0) => response("413 Payload Too Large", "too large"),
            // A body that differs on every request (a request id): still one cause.
            (true, _) => response("500 Internal Server Error", &format!("request id {n}-abc")),
        }
    });
    let (addr, _) = raw_server(answer).await;
    let env: HashMap<String, String> = [(TOKEN_ENV.to_owned(), TOKEN.to_owned())].into();
    let p = proxy_to(&url(addr), &env, dir.path());
    get_and_put(&p, 250).await;
    let s = p.stop().await;
    assert_eq!((s.misses, s.error_count), (250, 250), "{s:?}");
    let counts: Vec<u64> = s.errors.iter().map(|e| e.count).collect();
    assert_eq!(counts, vec![125, 125], "{:?}", s.errors);
    for e in &s.errors {
        assert!(
            !e.skipped,
            "a transient fault does not skip the store: {e:?}"
        );
        assert!(
            !e.reason.contains("/v1/cache/"),
            "no URL naming the hash: {e:?}"
        );
        assert!(e.reason.starts_with("server http://127.0.0.1:"), "{e:?}");
    }
    let five = s.errors.iter().find(|e| e.reason.contains("500")).unwrap();
    assert!(
        five.reason.contains("the server said: request id ") && five.count == 125,
        "the first body is kept in the reason: {five:?}"
    );
}

/// `serve` with anonymous reads: a developer without a token reads, and a write answered 401
/// concerns writes only: the reads go on hitting for the rest of the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_reads_go_on_after_a_write_refused_for_want_of_a_token() {
    use nx_open_cache::server::{Auth, Limits, LogFormat, Role, ServerSettings, TokenSpec};
    let dir = tempfile::tempdir().unwrap();
    let fs = FsStore::new(dir.path().join("store"), Prefix::default());
    fs.prepare().expect("store directory");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let up = server::serve_server(
        listener,
        ServerSettings {
            store: Arc::new(fs),
            auth: Auth {
                tokens: vec![TokenSpec::new("ci", Role::ReadWrite, TOKEN)],
                anonymous_read: Some(vec![Prefix::default()]),
                oidc: None,
            },
            mode: Mode::ReadWrite,
            limits: Limits::server(),
            operations: true,
            log: LogFormat::Off,
            stats: Arc::new(Stats::default()),
        },
    )
    .expect("serve");
    let base = url(up.addr);
    // CI stored 1000 and 1001.
    let ci = store(&base, Some(TOKEN), quick(dir.path()));
    for h in ["1000", "1001"] {
        let data = artifact(3000, 5);
        let len = data.len() as u64;
        ci.put(&hash(h), &mut body(&data, 1000), Some(len))
            .await
            .expect("CI stores");
    }
    let p = proxy_to(&base, &HashMap::new(), dir.path());
    let client = reqwest::Client::new();
    let at = |h: &str| format!("{}/v1/cache/{h}", p.url);
    let get = client
        .get(at("1000"))
        .bearer_auth(&p.token)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200, "an anonymous read hits");
    for h in ["2000", "2001", "2002", "2003"] {
        let put = client
            .put(at(h))
            .bearer_auth(&p.token)
            .body(b"artifact".to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 403, "a write not stored");
    }
    let get = client
        .get(at("1001"))
        .bearer_auth(&p.token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        get.status(),
        200,
        "reads still hit after the refused writes"
    );
    let s = p.stop().await;
    assert_eq!(s.hits, 2, "{s:?}");
    assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
    let e = &s.errors[0];
    assert_eq!(
        (e.reason.as_str(), e.count, e.skipped),
        (
            format!(
                "server {base} refused writes without a token (401 Unauthorized): writes need a \
                 token: set {TOKEN_ENV}, or localMode read-only"
            )
            .as_str(),
            4,
            false
        )
    );
    up.stop().await;
}

/// `serve` answers 403 to a write its own storage failed: that is the server's storage, not a
/// read-only token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_server_could_not_store_is_a_storage_fault() {
    let dir = tempfile::tempdir().unwrap();
    let answer: Answer = Arc::new(|_, line| {
        if line.starts_with("PUT") {
            response(
                "403 Forbidden",
                "nx-open-cache: not stored (storage fault, see the run summary)",
            )
        } else {
            response("404 Not Found", "")
        }
    });
    let (addr, _) = raw_server(answer).await;
    let base = url(addr);
    let env: HashMap<String, String> = [(TOKEN_ENV.to_owned(), TOKEN.to_owned())].into();
    let p = proxy_to(&base, &env, dir.path());
    get_and_put(&p, 2).await;
    let s = p.stop().await;
    assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
    assert_eq!(
        s.errors[0].reason,
        format!(
            "server {base} could not store artifacts (403 Forbidden): its storage failed (see \
             the server's log)"
        )
    );
    assert!(!s.errors[0].reason.contains("read-only"), "{:?}", s.errors);
}
