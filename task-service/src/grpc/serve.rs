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
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// The uids allowed to call; a client with another uid gets `PERMISSION_DENIED` for every
    /// call. Default: root only.
    pub allowed_uids: Vec<u32>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            allowed_uids: vec![0],
        }
    }
}

/// Serves `service` (a tonic-generated server such as `TaskServer`) on `listener` until
/// accepting fails, running every connection as a task on `ex`.
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
        let (stream, _) = listener.accept().await?;
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
        ex.spawn(async move {
            // A client that goes away mid-call is normal; nothing to do about its error.
            let _ = hyper::server::conn::http2::Builder::new(exec)
                .timer(SmolTimer::new())
                // Behind the front, one connection carries every call of the node, including a
                // `Wait` held open per task: hyper's default of 200 streams would starve it.
                .max_concurrent_streams(1 << 20)
                .serve_connection(FuturesIo::new(stream), per_call)
                .await;
        })
        .detach();
    }
}
