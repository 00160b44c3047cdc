//! The HTTP app of `nx-open-cache serve` (`server::app`) in process: the input is up to
//! [`MAX_REQUESTS`] raw HTTP/1.1 requests (method, target, headers, body after the head, as many
//! bytes as `Content-Length` says, or the rest with `Transfer-Encoding`), parsed with `httparse`
//! as hyper parses them, and sent one after another through `tower::ServiceExt::oneshot` to a
//! fresh app over an fs store in a scratch directory. No port is ever bound.
//!
//! Tokens (fixed): read-write, read-only, and a namespaced one (writes `untrusted/`, reads
//! `trusted/` then `untrusted/`); anonymous reads of `trusted/`; operations endpoints on; the
//! server's limits with a 1 MiB artifact cap.
//!
//! Guarantees checked: no panic; every answer is one of the statuses the server documents (a 500
//! only from `/metrics`); a 401 carries `Content-Type: text/plain` exactly, as Nx requires; after
//! a PUT that answered 200, a GET of that hash with the same read-write token answers 200 with
//! the same bytes.

use super::{block_on, scratch};
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use bytes::Bytes;
use nx_open_cache::config::Mode;
use nx_open_cache::key::Prefix;
use nx_open_cache::server::{self, Auth, Limits, Role, ServerSettings, TokenSpec};
use nx_open_cache::stats::Stats;
use nx_open_cache::store::fs::FsStore;
use std::collections::HashMap;
use std::sync::Arc;
use tower::ServiceExt;

/// Requests per input.
pub const MAX_REQUESTS: usize = 4;
/// The largest response body read back.
const MAX_RESPONSE: usize = 4 << 20;

pub const READ_WRITE_TOKEN: &str = "fuzz-read-write-token-0123456789";
pub const READ_ONLY_TOKEN: &str = "fuzz-read-only-token-0123456789a";
pub const NAMESPACED_TOKEN: &str = "fuzz-untrusted-token-0123456789b";

fn prefix(p: &str) -> Prefix {
    Prefix::parse(p).expect("a valid prefix")
}

fn auth() -> Auth {
    let mut untrusted = TokenSpec::new("pr", Role::ReadWrite, NAMESPACED_TOKEN);
    untrusted.write_prefix = prefix("untrusted");
    untrusted.read_prefixes = vec![prefix("trusted"), prefix("untrusted")];
    Auth {
        tokens: vec![
            TokenSpec::new("ci", Role::ReadWrite, READ_WRITE_TOKEN),
            TokenSpec::new("dev", Role::ReadOnly, READ_ONLY_TOKEN),
            untrusted,
        ],
        anonymous_read: Some(vec![prefix("trusted")]),
        oidc: None,
    }
}

fn limits() -> Limits {
    Limits {
        max_artifact_bytes: Some(1 << 20),
        ..Limits::server()
    }
}

/// What the server documents it answers (405: a method a route does not take).
const STATUSES: &[u16] = &[200, 400, 401, 403, 404, 405, 408, 409, 411, 413, 503];

/// One request as sent, for the checks.
struct Sent {
    method: String,
    path: String,
    authorization: Option<Vec<u8>>,
    body: Bytes,
}

pub fn run(data: &[u8]) {
    let dir = scratch();
    let store = FsStore::new(dir.path().join("cache"), Prefix::default());
    store.prepare().expect("prepare the fs store");
    let app = server::app(ServerSettings {
        store: Arc::new(store),
        auth: auth(),
        mode: Mode::ReadWrite,
        limits: limits(),
        operations: true,
        log: server::LogFormat::Off,
        stats: Arc::new(Stats::default()),
    });
    let mut stored: HashMap<String, Bytes> = HashMap::new();
    let mut rest = data;
    for _ in 0..MAX_REQUESTS {
        let Some((request, sent, after)) = next_request(rest) else {
            break;
        };
        rest = after;
        let (status, content_type, body) = block_on(async {
            let response = app.clone().oneshot(request).await.expect("infallible");
            let status = response.status();
            let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
            let body = axum::body::to_bytes(response.into_body(), MAX_RESPONSE).await;
            (status, content_type, body)
        });
        check(&sent, status, content_type.as_ref(), &mut stored, body.ok());
    }
}

fn check(
    sent: &Sent,
    status: StatusCode,
    content_type: Option<&header::HeaderValue>,
    stored: &mut HashMap<String, Bytes>,
    body: Option<Bytes>,
) {
    let what = format!("{} {}", sent.method, sent.path);
    let code = status.as_u16();
    let metrics = code == 500 && sent.path.starts_with("/metrics");
    assert!(
        STATUSES.contains(&code) || metrics,
        "{what} answered {code}"
    );
    if status == StatusCode::UNAUTHORIZED {
        assert_eq!(
            content_type.map(|v| v.as_bytes()),
            Some(&b"text/plain"[..]),
            "{what}: 401 without Content-Type: text/plain"
        );
    }
    let Some(hash) = sent.path.strip_prefix("/v1/cache/") else {
        return;
    };
    let rw = format!("Bearer {READ_WRITE_TOKEN}");
    if sent.authorization.as_deref() != Some(rw.as_bytes()) {
        return;
    }
    match (sent.method.as_str(), code) {
        ("PUT", 200) => {
            stored.insert(hash.to_owned(), sent.body.clone());
        }
        ("GET", _) => {
            if let Some(expected) = stored.get(hash) {
                assert_eq!(code, 200, "{what}: stored, then not served");
                assert!(
                    body.as_ref() == Some(expected),
                    "{what}: served other bytes"
                );
            }
        }
        _ => {}
    }
}

/// The next request of `data` and what follows it; `None` when no complete head is left or
/// hyper would refuse the head.
fn next_request(data: &[u8]) -> Option<(Request<Body>, Sent, &[u8])> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(data) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let (method, path) = (parsed.method?, parsed.path?);
    let mut builder = Request::builder().method(method).uri(path);
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut authorization = None;
    for h in parsed.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value).ok()?.trim().parse().ok()?;
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("authorization") {
            authorization = Some(h.value.to_vec());
        }
        builder = builder.header(h.name, h.value);
    }
    let after_head = &data[head_len..];
    let body_len = match (content_length, chunked) {
        (Some(_), true) => return None,
        (Some(n), false) => n.min(after_head.len()),
        (None, true) => after_head.len(),
        (None, false) => 0,
    };
    let (body, rest) = after_head.split_at(body_len);
    let body = Bytes::copy_from_slice(body);
    let sent = Sent {
        method: method.to_owned(),
        path: path.to_owned(),
        authorization,
        body: body.clone(),
    };
    let request = builder.body(Body::from(body)).ok()?;
    Some((request, sent, rest))
}
