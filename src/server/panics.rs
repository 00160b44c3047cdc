//! No panic stops the server: a request whose handler panics is answered 500 (`text/plain`, a
//! short message, no internals) and the connection is closed; the panic is logged once, its
//! message escaped, and counted (`panics_total`). Other requests and connections are untouched.
//!
//! The handler future is polled inside `catch_unwind`. While it is, a process-wide panic hook
//! (installed once, chaining to the previous hook for every other panic) keeps the default hook
//! from printing the panic a second time, unescaped, and notes where it happened.

use super::AppState;
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};

// With panic = "abort" no panic could be caught: every profile must keep "unwind".
#[cfg(not(panic = "unwind"))]
compile_error!("nx-open-cache must be built with panic = \"unwind\" (see Cargo.toml)");

/// What a client sees when its request's handler panicked.
pub const PANIC_MESSAGE: &str = "nx-open-cache: internal error (logged on the server)";

thread_local! {
    /// > 0 while this thread polls a guarded handler.
    static GUARDED: Cell<u32> = const { Cell::new(0) };
    /// Where the last panic in a guarded poll happened.
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Installs the hook that stays silent for panics caught here (once per process).
fn install_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) > 0 {
                let at = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()));
                LOCATION.with(|l| *l.borrow_mut() = at);
            } else {
                previous(info);
            }
        }));
    });
}

/// A caught panic: its message and where it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panicked {
    pub message: String,
    pub location: Option<String>,
}

/// `inner`, with a panic while polling it turned into `Err(Panicked)`. It is not polled again
/// after a panic.
pub struct CatchPanic<F> {
    inner: Option<Pin<Box<F>>>,
}

impl<F: Future> CatchPanic<F> {
    pub fn new(inner: F) -> CatchPanic<F> {
        install_hook();
        CatchPanic {
            inner: Some(Box::pin(inner)),
        }
    }
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, Panicked>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Pending;
        };
        GUARDED.with(|g| g.set(g.get() + 1));
        let polled = catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx)));
        GUARDED.with(|g| g.set(g.get().saturating_sub(1)));
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Err(payload) => {
                // Dropping a future that panicked may panic again: keep it guarded too.
                let dropped = self.inner.take();
                GUARDED.with(|g| g.set(g.get() + 1));
                let _ = catch_unwind(AssertUnwindSafe(move || drop(dropped)));
                GUARDED.with(|g| g.set(g.get().saturating_sub(1)));
                Poll::Ready(Err(Panicked {
                    message: payload_message(payload.as_ref()),
                    location: LOCATION.with(|l| l.borrow_mut().take()),
                }))
            }
        }
    }
}

fn payload_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Runs the rest of the stack (`run`, the request `method uri`) guarded; a panic becomes a 500
/// that closes the connection (the request body may be half read). Part of the outermost
/// middleware ([`super::observe::observe`]), so that a request passes one middleware layer.
pub(super) async fn guarded<F: Future<Output = Response>>(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    run: F,
) -> Response {
    match CatchPanic::new(run).await {
        Ok(response) => response,
        Err(p) => {
            let path = uri.path();
            let at = p.location.map(|l| format!(" at {l}")).unwrap_or_default();
            super::observe::panicked(
                state,
                &format!(
                    "request {method} {path} panicked{at}: {}; answered 500",
                    p.message
                ),
            );
            let mut resp = super::text(StatusCode::INTERNAL_SERVER_ERROR, PANIC_MESSAGE);
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp.extensions_mut().insert(super::UnreadBody);
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_an_error_and_the_next_poll_works() {
        let caught = CatchPanic::new(async {
            if std::hint::black_box(true) {
                panic!("boom \n {}", 42);
            }
            1
        })
        .await;
        let p = caught.err().unwrap_or(Panicked {
            message: String::new(),
            location: None,
        });
        assert_eq!(p.message, "boom \n 42");
        assert!(
            p.location.as_deref().unwrap_or("").contains("panics.rs"),
            "{p:?}"
        );
        assert_eq!(CatchPanic::new(async { 7 }).await, Ok(7));
        assert_eq!(GUARDED.with(Cell::get), 0);
    }
}
