//! Every call seen: a `tracing` span per call carrying its method, namespace, container and
//! exec id (the handler records the ids with [`record_ids`]), and, when the call answers, its
//! gRPC code and duration, counted in [`Calls`] and logged: at `debug` when it succeeded (no
//! line per successful call at the default level), at `info` when it was refused (`NOT_FOUND`,
//! `FAILED_PRECONDITION`, ...), at `warn` when it failed on the server's side (`INTERNAL`,
//! `UNKNOWN`, `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `DATA_LOSS`).

use crate::metrics::calls::{Calls, code_name, method_of};
use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Instant;
use tonic::body::Body;
use tower_service::Service;
use tracing::Instrument;
use tracing::field::Empty;

/// `service` with each call observed (see the [module docs](self)).
///
/// ```no_run
/// # fn f(daemon: task_service::daemon::Daemon) {
/// use task_service::grpc::observe::Observed;
/// let served = Observed::new(daemon.into_router(), &task_service::metrics::DAEMON.calls);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Observed<S> {
    inner: S,
    calls: &'static Calls,
}

impl<S> Observed<S> {
    /// Observes `inner`'s calls, counting them in `calls`.
    pub fn new(inner: S, calls: &'static Calls) -> Observed<S> {
        Observed { inner, calls }
    }
}

/// Records a call's container and exec id in its span (the current one, inside a handler that
/// [`Observed`] wraps; nothing otherwise).
///
/// ```
/// task_service::grpc::observe::record_ids("web-1", "");
/// ```
pub fn record_ids(id: &str, exec_id: &str) {
    let span = tracing::Span::current();
    span.record("id", id);
    if !exec_id.is_empty() {
        span.record("exec_id", exec_id);
    }
}

impl<S> Service<http::Request<hyper::body::Incoming>> for Observed<S>
where
    S: Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<Body>,
            Error = Infallible,
        > + Send,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = futures_lite::future::Boxed<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let path = req.uri().path().to_owned();
        let ns = req
            .headers()
            .get("containerd-namespace")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("default");
        let method = match method_of(&path) {
            ("other", _) => path.as_str(),
            (_, method) => method,
        };
        let span = tracing::info_span!(
            "call",
            method = method,
            ns = ns,
            id = Empty,
            exec_id = Empty
        );
        let call = self.inner.call(req);
        let mut pending = Pending {
            path,
            calls: self.calls,
            span: span.clone(),
            started: Instant::now(),
            answered: false,
        };
        Box::pin(async move {
            let response = call.instrument(span).await;
            match &response {
                Ok(answer) => pending.answered(answer.headers()),
                Err(never) => match *never {},
            }
            response
        })
    }
}

/// A call not yet answered; dropped unanswered (its deadline passed, its client went away),
/// it counts as `CANCELLED`.
struct Pending {
    path: String,
    calls: &'static Calls,
    span: tracing::Span,
    started: Instant,
    answered: bool,
}

impl Pending {
    /// Counts and logs the answer whose headers are `headers` (a unary error's status is in
    /// them; a success's is in the trailers, and is OK).
    fn answered(&mut self, headers: &http::HeaderMap) {
        self.answered = true;
        let code = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0u32);
        let message = headers
            .get("grpc-message")
            .map(|v| percent_decode(v.as_bytes()))
            .unwrap_or_default();
        self.finish(code, &message);
    }

    fn finish(&self, code: u32, message: &str) {
        let took = self.started.elapsed();
        self.calls.record(&self.path, code, took);
        let ms = (took.as_secs_f64() * 1e6).round() / 1e3;
        let name = code_name(code);
        let _entered = self.span.enter();
        match code {
            0 => tracing::debug!(code = name, ms, "answered"),
            2 | 4 | 13 | 14 | 15 => tracing::warn!(code = name, ms, error = message, "failed"),
            _ => tracing::info!(code = name, ms, error = message, "refused"),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.answered {
            self.finish(1, "dropped before it answered (deadline or client gone)");
        }
    }
}

/// gRPC's `grpc-message` is percent-encoded; decoded for the log.
fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = raw
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (raw[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_decoded() {
        assert_eq!(
            percent_decode(b"no%20such%20task: %E2%9C%93"),
            "no such task: ✓"
        );
        assert_eq!(percent_decode(b"100%"), "100%");
    }
}
