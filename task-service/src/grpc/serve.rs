//! The accept loop: one HTTP/2 connection task per client on a smol executor.

use super::deadline::parse_grpc_timeout;
use futures_lite::future;
use hyper::body::Incoming;
use smol::net::unix::UnixListener;
use smol_hyper::rt::{FuturesIo, SmolExecutor, SmolTimer};
use std::convert::Infallible;
use std::sync::Arc;
use tonic::body::Body;
use tower_service::Service;

/// What [`serve`] enforces on every connection and call.
///
/// ```
/// let config = task_service::grpc::ServeConfig::default();
/// assert_eq!(config.allowed_uids, vec![0]);
/// assert_eq!(config.max_streams_per_connection, 65_536);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// The uids allowed to call; a client with another uid gets `PERMISSION_DENIED` for every
    /// call. Default: root only.
    pub allowed_uids: Vec<u32>,
    /// How many calls one connection may have open at once (HTTP/2's
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`); a client past it waits for a call to end before
    /// starting another (the front's link does). Behind the front one connection carries every
    /// call of the node, including a `Wait` held open per task, so the default, 65,536, is far
    /// above hyper's 200: room for tens of thousands of containers, but a bound all the same on
    /// what one connection can make the daemon hold.
    pub max_streams_per_connection: u32,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            allowed_uids: vec![0],
            max_streams_per_connection: 65_536,
        }
    }
}

/// Why a call's `containerd-namespace` header cannot be used, if it cannot. gRPC metadata is
/// visible ASCII; a value that is not must be refused, never read as "no namespace" (which
/// would act on the `default` namespace's container of the same id).
fn bad_namespace_header(headers: &http::HeaderMap) -> Option<tonic::Status> {
    let value = headers.get("containerd-namespace")?;
    value.to_str().is_err().then(|| {
        tonic::Status::invalid_argument(format!(
            "the containerd-namespace header {:?} is not visible ASCII; a containerd namespace \
             is made of letters, digits, '.', '_' and '-'",
            String::from_utf8_lossy(value.as_bytes())
        ))
    })
}

/// Serves `service` (a tonic-generated server such as `TaskServer`) on `listener`, running every
/// connection as a task on `ex`. It never returns on its own: a failed accept (no descriptor
/// left, ...) is retried with backoff (see [`accept`](super::accept)).
///
/// Each call runs under its client's `grpc-timeout` (answered with `DEADLINE_EXCEEDED` when it
/// passes, and the handler's future dropped), and each connection is checked with
/// `SO_PEERCRED` against [`ServeConfig::allowed_uids`].
///
/// See the [module docs](super) for an example.
pub async fn serve<S>(
    listener: UnixListener,
    service: S,
    ex: Arc<smol::Executor<'static>>,
    config: ServeConfig,
) -> std::io::Result<()>
where
    S: Service<http::Request<Incoming>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let config = Arc::new(config);
    loop {
        let stream = super::accept::next(&listener, "shimlessd").await;
        let allowed = match super::listen::refusal(&stream, &config.allowed_uids) {
            None => Ok(()),
            Some(why) => Err(why),
        };
        let service = service.clone();
        let per_call = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let mut service = service.clone();
            let denied = allowed.clone().err();
            async move {
                if let Some(why) = denied {
                    return Ok::<_, Infallible>(tonic::Status::permission_denied(why).into_http());
                }
                if let Some(refused) = bad_namespace_header(req.headers()) {
                    return Ok(refused.into_http());
                }
                let deadline = req
                    .headers()
                    .get("grpc-timeout")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_grpc_timeout);
                future::poll_fn(|cx| service.poll_ready(cx)).await?;
                let call = service.call(req);
                match deadline {
                    None => call.await,
                    Some(limit) => {
                        future::or(call, async move {
                            smol::Timer::after(limit).await;
                            Ok(tonic::Status::deadline_exceeded(format!(
                                "the call's deadline ({limit:?}, from grpc-timeout) passed"
                            ))
                            .into_http())
                        })
                        .await
                    }
                }
            }
        });
        let exec = SmolExecutor::new(ex.clone());
        let max_streams = config.max_streams_per_connection;
        ex.spawn(async move {
            // A client that goes away mid-call is normal; nothing to do about its error.
            let _ = hyper::server::conn::http2::Builder::new(exec)
                .timer(SmolTimer::new())
                .max_concurrent_streams(max_streams)
                .serve_connection(FuturesIo::new(stream), per_call)
                .await;
        })
        .detach();
    }
}
