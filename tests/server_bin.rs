//! The standalone server binary `nx-open-cache-server` as users run it: a child process on
//! 127.0.0.1 (port 0, the bound URL read from its startup line), an artifact stored and fetched
//! over HTTP, `healthcheck` exit codes, a configuration mistake (exit 2, the value named), and a
//! graceful stop on SIGTERM (exit 0).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_nx-open-cache-server");
const SECRET: &str = "rw-secret-0123456789abcdef";
/// Upper bound for the server to print its startup line or to exit.
const BOUND: Duration = Duration::from_secs(30);

/// The binary with the test's environment minus `NX_OPEN_CACHE_*` / `NX_SELF_HOSTED_*`, plus one
/// read-write token.
fn command(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("NX_OPEN_CACHE") || k.starts_with("NX_SELF_HOSTED") {
            c.env_remove(k);
        }
    }
    c.env(
        "NX_OPEN_CACHE_SERVER_TOKENS",
        format!("ci:read-write:{SECRET}"),
    );
    c
}

/// Runs the binary to its end (bounded by the harness's timeout of `output`).
fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut c = command(args);
    c.envs(env.iter().copied());
    let out = c.output().expect("run nx-open-cache-server");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running server: the child, its URL and everything it printed on stderr so far.
struct Server {
    child: Child,
    url: String,
    banner: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn start(storage: &std::path::Path) -> Server {
        let storage = format!("fs:{}", storage.display());
        let mut child = command(&["--storage", &storage, "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nx-open-cache-server");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock().expect("stderr lock").push_str(&text);
            }
        });
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + BOUND;
        let banner = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("nx-open-cache serve: listening on ") => break line,
                Ok(_) => continue,
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "no startup line ({e}); stderr: {}",
                        stderr.lock().expect("stderr lock")
                    );
                }
            }
        };
        let url = banner
            .trim_start_matches("nx-open-cache serve: listening on ")
            .split(' ')
            .next()
            .expect("url")
            .to_owned();
        Server {
            child,
            url,
            banner,
            stderr,
        }
    }

    fn port(&self) -> &str {
        self.url.rsplit(':').next().expect("port")
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Waits (bounded) for the child to exit.
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + BOUND;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the server did not exit; stderr: {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[cfg(unix)]
    fn signal(&self, signal: i32) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) sends a signal to this test's own child (still running: not waited for).
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_on_port_0_stores_and_fetches_answers_healthcheck_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("store"));
    assert!(
        server.url.starts_with("http://127.0.0.1:") && server.port() != "0",
        "{}",
        server.banner
    );
    assert!(
        server.banner.contains("ci (read-write)"),
        "{}",
        server.banner
    );
    assert!(!server.banner.contains(SECRET), "{}", server.banner);

    let client = reqwest::Client::new();
    let body = common::artifact(64 * 1024, 7);
    let url = format!("{}/v1/cache/h0123456789abcdef", server.url);
    let put = client
        .put(&url)
        .bearer_auth(SECRET)
        .body(body.clone())
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status().as_u16(), 200);
    let got = client
        .get(&url)
        .bearer_auth(SECRET)
        .send()
        .await
        .expect("GET");
    assert_eq!(got.status().as_u16(), 200);
    assert_eq!(got.bytes().await.expect("body").as_ref(), &body[..]);
    let unauthorized = client.get(&url).send().await.expect("GET without token");
    assert_eq!(unauthorized.status().as_u16(), 401);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = client
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .expect(path);
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }

    // healthcheck: the URL given, the default one from the listen address, a URL answering 404.
    let healthz = format!("{}/healthz", server.url);
    let listen = format!("0.0.0.0:{}", server.port());
    let (code, _, err) = run(&["healthcheck", &healthz], &[]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = run(
        &["healthcheck"],
        &[("NX_OPEN_CACHE_SERVER_LISTEN", &listen)],
    );
    assert_eq!(code, Some(0), "{err}");
    let missing = format!("{}/nope", server.url);
    let (code, _, err) = run(&["healthcheck", &missing], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("404"), "{err}");

    server.signal(libc::SIGTERM);
    let status = server.wait();
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    let stderr = server.stderr();
    assert!(
        stderr.contains("nx-open-cache serve: SIGTERM: stopping") && stderr.contains("stopped"),
        "{stderr}"
    );
    assert!(!stderr.contains(SECRET), "{stderr}");

    // Stopped: the health check fails (nothing listens there any more).
    let (code, _, err) = run(&["healthcheck", &healthz], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no answer"), "{err}");
}

#[test]
fn a_bad_option_exits_2_naming_the_option_and_the_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = format!("fs:{}", dir.path().display());
    let (code, out, err) = run(
        &["--storage", &storage, "--max-artifact-size", "2 gigs"],
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(out, "");
    assert!(
        err.contains("--max-artifact-size") && err.contains("\"2 gigs\"") && err.contains("GiB"),
        "{err}"
    );
    assert!(
        err.contains("Run `nx-open-cache-server --help` for the options."),
        "{err}"
    );

    let (code, _, err) = run(&["--storage", "ftp://x/y"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("\"ftp://x/y\"") && err.contains("s3://bucket"),
        "{err}"
    );

    let (code, _, err) = run(
        &["--storage", &storage],
        &[("NX_OPEN_CACHE_SERVER_TOKENS", "ci:read-write:short")],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("NX_OPEN_CACHE_SERVER_TOKENS"), "{err}");
    assert!(!err.contains(":short"), "{err}");
}

#[test]
fn help_version_and_healthcheck_failures() {
    let (code, out, _) = run(&["--help"], &[]);
    assert_eq!(code, Some(0));
    for word in [
        "Usage: nx-open-cache-server --storage <url> [options]",
        "--storage",
        "--listen",
        "--tokens-file",
        "--config",
        "NX_OPEN_CACHE_SERVER_",
        "nx-open-cache-server healthcheck [<url>]",
    ] {
        assert!(out.contains(word), "--help lacks {word}:\n{out}");
    }
    let (code, out, _) = run(&["--version"], &[]);
    assert_eq!(code, Some(0));
    assert_eq!(
        out,
        format!("nx-open-cache-server {}\n", env!("CARGO_PKG_VERSION"))
    );

    // Nothing listens on a closed port; a URL that is not http(s); two URLs: all exit 1.
    let closed = format!("http://{}/healthz", common::closed_port());
    let (code, _, err) = run(&["healthcheck", &closed], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&closed) && err.contains("no answer"), "{err}");
    let (code, _, err) = run(&["healthcheck", "ftp://127.0.0.1/"], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("invalid URL \"ftp://127.0.0.1/\""), "{err}");
    let (code, _, err) = run(&["healthcheck", &closed, &closed], &[]);
    assert_eq!(code, Some(1), "{err}");
}
