//! Limits: upload size, time and concurrency, connection caps, and the bounded drain of bodies
//! we answer early.

use axum::body::Body;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Upload limits of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// 413 above it: checked on Content-Length before reading, and while streaming.
    pub max_artifact_bytes: Option<u64>,
    /// A PUT body that takes longer is abandoned: 408, nothing stored.
    pub upload_timeout: Duration,
    /// Beyond it: 503 with Retry-After (body drained).
    pub max_concurrent_uploads: usize,
    /// Server: true (411 without Content-Length); proxy: false.
    pub require_content_length: bool,
    /// Connections open at once; `None`: [`super::conns::DEFAULT_MAX_CONNECTIONS`]. Always kept
    /// below what the process's file-descriptor limit allows (see [`super::conns::Caps`]).
    pub max_connections: Option<usize>,
    /// Connections open at once that have not presented a valid token; `None`: half of the
    /// connections.
    pub max_untrusted_connections: Option<usize>,
}

/// Default largest artifact of the server: 4 GiB (Nx builds each artifact in memory).
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// Default upload timeout of the server.
pub const DEFAULT_UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// Default number of uploads received at once by the server.
pub const DEFAULT_MAX_CONCURRENT_UPLOADS: usize = 64;
/// Seconds announced in `Retry-After` when the upload limit is reached.
pub const RETRY_AFTER_SECS: u64 = 5;

impl Limits {
    /// The standalone server's defaults: 4 GiB, 10 minutes, 64 uploads, Content-Length required.
    pub fn server() -> Limits {
        Limits {
            max_artifact_bytes: Some(DEFAULT_MAX_ARTIFACT_BYTES),
            upload_timeout: DEFAULT_UPLOAD_TIMEOUT,
            max_concurrent_uploads: DEFAULT_MAX_CONCURRENT_UPLOADS,
            require_content_length: true,
            max_connections: None,
            max_untrusted_connections: None,
        }
    }

    /// The in-process proxy's: only Nx on loopback talks to it, so no size limit, a generous
    /// timeout and no Content-Length requirement.
    pub fn proxy() -> Limits {
        Limits {
            max_artifact_bytes: None,
            upload_timeout: Duration::from_secs(3600),
            max_concurrent_uploads: 1024,
            require_content_length: false,
            max_connections: None,
            max_untrusted_connections: None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::server()
    }
}

/// The most of a refused upload's body the server reads (and drops): before an early answer
/// to a client with a valid token whose body is no larger (so the connection stays usable), and
/// after any early answer while the connection closes (so the client reads the answer rather
/// than a reset). A client without a valid token gets its answer at once.
pub const REFUSED_BODY_DRAIN: u64 = 64 * 1024;

/// Why an upload stream stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// More than the allowed artifact size arrived.
    TooLarge,
    /// The upload deadline passed.
    TimedOut,
    /// The client's connection failed.
    Broken,
}

/// A request body with a size cap and a deadline. As a stream it yields an error (and remembers
/// why) when either is exceeded, so a store fed by it stores nothing.
pub struct UploadBody {
    inner: BoxStream<'static, Result<Bytes, axum::Error>>,
    received: u64,
    cap: Option<u64>,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
    cut: Option<Cut>,
    ended: bool,
}

impl UploadBody {
    pub fn new(body: Body, cap: Option<u64>, timeout: Duration) -> UploadBody {
        UploadBody {
            inner: body.into_data_stream().boxed(),
            received: 0,
            cap,
            deadline: Box::pin(tokio::time::sleep_until(Instant::now() + timeout)),
            timeout,
            cut: None,
            ended: false,
        }
    }

    /// Changes the size cap (an early answer drains up to [`REFUSED_BODY_DRAIN`]).
    pub fn set_cap(&mut self, cap: Option<u64>) {
        self.cap = cap;
    }

    /// Bytes read from the client so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Why the stream was cut, if it was.
    pub fn cut(&self) -> Option<Cut> {
        self.cut
    }

    /// True when the body was read to its end (the connection can be reused).
    pub fn complete(&self) -> bool {
        self.ended && self.cut.is_none()
    }

    /// Reads and drops the rest of the body, within the cap and the deadline. Returns
    /// [`UploadBody::complete`]: when false the connection should be closed after the response.
    pub async fn drain(&mut self) -> bool {
        while let Some(chunk) = self.next().await {
            if chunk.is_err() {
                break;
            }
        }
        self.complete()
    }
}

impl Stream for UploadBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended || this.cut.is_some() {
            return Poll::Ready(None);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.cut = Some(Cut::TimedOut);
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("upload not finished within {} s", this.timeout.as_secs()),
            ))));
        }
        match this.inner.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.cut = Some(Cut::Broken);
                Poll::Ready(Some(Err(std::io::Error::other(e))))
            }
            Poll::Ready(Some(Ok(chunk))) => {
                this.received += chunk.len() as u64;
                match this.cap {
                    Some(cap) if this.received > cap => {
                        this.cut = Some(Cut::TooLarge);
                        Poll::Ready(Some(Err(std::io::Error::other(format!(
                            "upload is larger than the limit of {cap} bytes"
                        )))))
                    }
                    _ => Poll::Ready(Some(Ok(chunk))),
                }
            }
        }
    }
}
