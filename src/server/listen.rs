//! Accepting and serving connections: room for each one ([`super::conns`]), the TLS handshake,
//! HTTP/1.1 by hyper, and closing.
//!
//! - Each accepted connection is handed to one of the connection threads ([`super::workers`])
//!   and served there to its end; the accept loop itself runs where the server was started.
//! - Accept errors (out of descriptors and the like) back off briefly (5 ms, doubling up to
//!   [`MAX_ACCEPT_BACKOFF`]), so the loop neither spins nor stalls; errors of one client's
//!   connection are skipped at once.
//! - A TLS handshake happens in the connection's own task, bounded by [`HANDSHAKE_TIMEOUT`]: a
//!   silent client holds up no one.
//! - A new connection has [`super::HEADER_READ_TIMEOUT`] to send a request head, or
//!   [`PRESSURE_HEADER_READ_TIMEOUT`] while half the untrusted room is taken.
//! - Closing: the answer is followed by the end of the stream (FIN). When the last answer left a
//!   request body unread, the server reads and drops at most
//!   [`super::limits::REFUSED_BODY_DRAIN`] more bytes and closes once the client has, or after
//!   [`LINGER_TIME`], so the client reads the answer instead of a connection reset.

use super::conns::{Busy, Conn, Registry};
use super::log::{self, LogFormat};
use super::{Trusted, UnreadBody};
use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// A client that has not finished its TLS handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new connection may take to send its request head while the server is under
/// pressure from connections without a valid token.
pub const PRESSURE_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait between accept attempts after accept errors.
pub const MAX_ACCEPT_BACKOFF: Duration = Duration::from_millis(200);
/// Longest time a closing connection keeps reading what the client still sends.
pub const LINGER_TIME: Duration = Duration::from_secs(2);
/// How often the accept loop looks again for room when it has none.
const ADMIT_RETRY: Duration = Duration::from_millis(50);

/// Plain TCP or TLS.
#[derive(Clone)]
pub enum Transport {
    Plain,
    Tls(TlsAcceptor),
}

/// What every connection task shares.
#[derive(Clone)]
pub(super) struct Served {
    pub app: Router,
    pub registry: Arc<Registry>,
    pub transport: Transport,
    pub log: LogFormat,
}

/// Accepts until `shutdown` carries a grace period, then lets connections finish within it.
pub(super) async fn accept_loop(
    listener: TcpListener,
    served: Served,
    mut shutdown: watch::Receiver<Option<Duration>>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns: JoinSet<()> = JoinSet::new();
    let mut orphaned = false;
    let mut backoff = Backoff::default();
    let grace = loop {
        tokio::select! {
            changed = shutdown.changed(), if !orphaned => match changed {
                Ok(()) => {
                    if let Some(grace) = *shutdown.borrow() {
                        break grace;
                    }
                }
                // The handle was dropped without `stop`: serve until the runtime ends.
                Err(_) => orphaned = true,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            (tcp, conn) = next_connection(&listener, &served, &mut backoff) => {
                let header_timeout = if served.registry.under_pressure() {
                    PRESSURE_HEADER_READ_TIMEOUT
                } else {
                    super::HEADER_READ_TIMEOUT
                };
                let (served, stop) = (served.clone(), stop_rx.clone());
                match super::workers::next() {
                    // Moved to its thread's runtime (registered with that thread's reactor).
                    Some(thread) => match tcp.into_std() {
                        Ok(tcp) => {
                            conns.spawn_on(async move {
                                if let Ok(tcp) = TcpStream::from_std(tcp) {
                                    connection(tcp, conn, served, header_timeout, stop).await;
                                }
                            }, thread);
                        }
                        // Dropped: the client sees its connection closed and may retry.
                        Err(_) => drop(conn),
                    },
                    None => {
                        conns.spawn(connection(tcp, conn, served, header_timeout, stop));
                    }
                }
            }
        }
    };
    drop(listener);
    let _ = stop_tx.send(true);
    let all_done = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, all_done).await.is_err() {
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
}

/// Room for one more connection, then the connection. Cancel-safe: dropping it frees the room.
async fn next_connection(
    listener: &TcpListener,
    served: &Served,
    backoff: &mut Backoff,
) -> (TcpStream, Arc<Conn>) {
    let conn = loop {
        if let Some(conn) = served.registry.admit() {
            break conn;
        }
        tokio::select! {
            _ = served.registry.changed() => {}
            _ = tokio::time::sleep(ADMIT_RETRY) => {}
        }
    };
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                backoff.reset();
                return (tcp, conn);
            }
            Err(e) if is_connection_error(&e) => {}
            Err(e) => backoff.wait(&e, served.log).await,
        }
    }
}

/// Errors of one client's connection: skip it and accept the next.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    )
}

/// Backoff after accept errors such as EMFILE: 5 ms doubling up to [`MAX_ACCEPT_BACKOFF`]; the
/// first error of a streak is logged.
#[derive(Default)]
struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    /// The next delay, and whether it starts a streak of errors.
    fn next_delay(&mut self) -> (Duration, bool) {
        let (delay, first) = match self.next {
            None => (Duration::from_millis(5), true),
            Some(d) => (d, false),
        };
        self.next = Some((delay * 2).min(MAX_ACCEPT_BACKOFF));
        (delay, first)
    }

    async fn wait(&mut self, e: &std::io::Error, format: LogFormat) {
        let (delay, first) = self.next_delay();
        if first {
            log::warn(
                format,
                &format!("accepting a connection failed ({e}); retrying shortly"),
            );
        }
        tokio::time::sleep(delay).await;
    }

    fn reset(&mut self) {
        self.next = None;
    }
}

async fn connection(
    tcp: TcpStream,
    conn: Arc<Conn>,
    served: Served,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    conn.started();
    match &served.transport {
        Transport::Plain => serve_http(tcp, conn, served.app, header_timeout, stop).await,
        Transport::Tls(acceptor) => {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
            tokio::pin!(handshake);
            let stream = loop {
                tokio::select! {
                    done = &mut handshake => match done {
                        Ok(Ok(stream)) => break stream,
                        // A failed or abandoned handshake concerns that client only.
                        _ => return,
                    },
                    _ = conn.evicted() => {
                        if conn.accept_eviction() {
                            return;
                        }
                    }
                    _ = stop.wait_for(|s| *s) => return,
                }
            };
            serve_http(stream, conn, served.app, header_timeout, stop).await
        }
    }
}

/// Serves HTTP/1.1 on one connection until it ends, is stopped (idle at once, busy after its
/// request) or evicted (idle only), then closes it.
async fn serve_http<I>(
    io: I,
    conn: Arc<Conn>,
    app: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = ConnService {
        app: TowerToHyperService::new(app),
        conn: conn.clone(),
    };
    let mut http = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), service);
    let mut stopping = false;
    let finished = loop {
        tokio::select! {
            done = std::future::poll_fn(|cx| http.poll_without_shutdown(cx)) => break done.is_ok(),
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                if !conn.is_busy() {
                    return;
                }
                // Finish the request in flight, then close.
                Pin::new(&mut http).graceful_shutdown();
            }
            _ = conn.evicted(), if !stopping => {
                if conn.accept_eviction() {
                    return;
                }
            }
        }
    };
    if finished {
        let io = http.into_parts().io.into_inner();
        close(io, &conn).await;
    }
}

/// Ends the stream after the answer. If a request body was left unread, the client may still be
/// sending it: closing now would reset the connection, and a client busy sending could meet the
/// reset before it reads the answer. So the server reads and drops at most
/// [`super::limits::REFUSED_BODY_DRAIN`] bytes, then stops reading (the client's sending stalls,
/// its answer is there to read) and closes when the client has closed or after [`LINGER_TIME`].
async fn close<I>(mut io: I, conn: &Conn)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    if tokio::time::timeout_at(deadline, io.shutdown())
        .await
        .is_err()
        || !conn.lingers()
    {
        return;
    }
    let linger = async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut left = super::limits::REFUSED_BODY_DRAIN;
        while left > 0 {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n as u64),
            }
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = tokio::time::timeout_at(deadline, linger) => {}
        _ = conn.evicted() => {}
    }
}

/// The app for one connection: marks it busy while a request is in progress (until its response
/// body is sent) and trusted once a valid token is presented; notes an unread body.
#[derive(Clone)]
struct ConnService {
    app: TowerToHyperService<Router>,
    conn: Arc<Conn>,
}

type ServiceFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let busy = self.conn.begin();
        let conn = self.conn.clone();
        let answer = self.app.call(req);
        Box::pin(async move {
            let resp = answer.await?;
            if resp.extensions().get::<Trusted>().is_some() {
                conn.trust();
            }
            if resp.extensions().get::<UnreadBody>().is_some() {
                conn.set_linger();
            }
            Ok(resp.map(|inner| Body::new(BusyBody { inner, _busy: busy })))
        })
    }
}

/// A response body that keeps its connection busy until it is sent or dropped.
struct BusyBody {
    inner: Body,
    _busy: Busy,
}

impl hyper::body::Body for BusyBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_back_off_briefly_never_spinning_never_stalling() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..8)
            .map(|_| b.next_delay().0.as_millis() as u64)
            .collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 200, 200]);
        b.reset();
        assert_eq!(b.next_delay(), (Duration::from_millis(5), true));
        assert!(!b.next_delay().1);
    }
}
