//! The front: the process that owns the public socket and every containerd connection, so that
//! the daemon behind it can crash, be killed or be upgraded without containerd noticing.
//!
//! containerd 1.7 and 2.x treat a shim connection that goes IDLE or SHUTDOWN as a dead shim
//! (`<shim> delete`, `TaskExit` 255, the task forgotten). With one daemon for every container,
//! a restart that dropped the connections would make every container look dead at once. The
//! front holds no container state: it forwards each HTTP/2 request, unchanged but for its
//! remaining `grpc-timeout`, over one multiplexed connection to the daemon's private socket, and
//! streams the answer back.
//!
//! While the daemon is away a call waits for it, until the call's deadline (or
//! [`FrontConfig::hold`] for calls without one). A call that was inside the daemon when it died
//! is sent again to the next daemon when it only reads ([`replay`] lists `Wait`, `State`,
//! `Pids`, `Connect`, `Stats`; `Wait` matters most: containerd keeps one open per task), and is
//! answered `UNAVAILABLE` otherwise (it may have taken effect). The connection stays up either
//! way.
//!
//! [`supervise`] is the other half: the front starts `shimlessd` and starts it again when it
//! exits, and reaps the containers orphaned by a daemon that died.
//!
//! ```no_run
//! use std::sync::Arc;
//! use task_service::front::{self, FrontConfig};
//! let ex = Arc::new(smol::Executor::new());
//! let config = FrontConfig::new("/run/shimless/daemon.sock");
//! smol::block_on(ex.run(async {
//!     let listener = task_service::grpc::listen::bind("/run/shimless/shimless.sock")?;
//!     front::serve(listener, config, ex.clone()).await
//! }))?;
//! # Ok::<(), std::io::Error>(())
//! ```

mod link;
pub mod replay;
pub mod supervise;

use crate::grpc::deadline::parse_grpc_timeout;
use crate::grpc::listen::Peer;
use hyper::body::Incoming;
use link::Link;
use smol::net::unix::UnixListener;
use smol_hyper::rt::{FuturesIo, SmolExecutor, SmolTimer};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::body::Body;

/// What the front needs to know.
///
/// ```
/// let config = task_service::front::FrontConfig::new("/run/shimless/daemon.sock");
/// assert_eq!(config.hold, std::time::Duration::from_secs(60));
/// assert_eq!(config.allowed_uids, vec![0]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontConfig {
    /// The daemon's private socket.
    pub daemon_socket: PathBuf,
    /// How long a call without a deadline waits for an absent daemon.
    pub hold: Duration,
    /// The uids allowed to connect (checked with `SO_PEERCRED`).
    pub allowed_uids: Vec<u32>,
}

impl FrontConfig {
    /// The defaults for a daemon on `daemon_socket`: hold calls 60 s, root only.
    pub fn new(daemon_socket: impl Into<PathBuf>) -> FrontConfig {
        FrontConfig {
            daemon_socket: daemon_socket.into(),
            hold: Duration::from_secs(60),
            allowed_uids: vec![0],
        }
    }
}

/// Serves `listener` until accepting fails, forwarding every call to the daemon.
///
/// See the [module docs](self) for an example.
pub async fn serve(
    listener: UnixListener,
    config: FrontConfig,
    ex: Arc<smol::Executor<'static>>,
) -> std::io::Result<()> {
    let link = Arc::new(Link::new(config.daemon_socket.clone(), ex.clone()));
    let config = Arc::new(config);
    loop {
        let (stream, _) = listener.accept().await?;
        let denied = match Peer::of(&stream) {
            Ok(peer) if config.allowed_uids.contains(&peer.uid) => None,
            Ok(peer) => Some(format!(
                "uid {} may not use this socket (allowed: {:?})",
                peer.uid, config.allowed_uids
            )),
            Err(e) => Some(format!("cannot read the caller's credentials: {e}")),
        };
        let link = link.clone();
        let config = config.clone();
        let per_call = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let link = link.clone();
            let config = config.clone();
            let denied = denied.clone();
            async move {
                if let Some(why) = denied {
                    return Ok::<_, Infallible>(tonic::Status::permission_denied(why).into_http());
                }
                Ok(forward(&link, &config, req).await)
            }
        });
        let exec = SmolExecutor::new(ex.clone());
        ex.spawn(async move {
            let mut builder = hyper::server::conn::http2::Builder::new(exec);
            // containerd opens one connection per task, so what an idle connection costs is
            // multiplied by the number of containers: small windows and buffers (the calls are
            // small protobufs), the default frame size.
            builder
                .timer(SmolTimer::new())
                .initial_stream_window_size(64 * 1024)
                .initial_connection_window_size(64 * 1024)
                .max_send_buf_size(64 * 1024)
                .max_header_list_size(64 * 1024)
                .max_concurrent_streams(1024);
            // A client that goes away mid-call is normal; nothing to do about its error.
            let _ = builder
                .serve_connection(FuturesIo::new(stream), per_call)
                .await;
        })
        .detach();
    }
}

/// Sends one call to the daemon, waiting for it (and replaying reads) as the module docs say.
async fn forward(
    link: &Link,
    config: &FrontConfig,
    req: http::Request<Incoming>,
) -> http::Response<Body> {
    let started = Instant::now();
    let deadline = req
        .headers()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout);
    let until = started + deadline.unwrap_or(config.hold);
    let path = req.uri().path().to_string();
    let (parts, body) = req.into_parts();
    let with_deadline = |mut parts: http::request::Parts| {
        if deadline.is_some() {
            let left = until.saturating_duration_since(Instant::now()).as_millis();
            if let Ok(value) = http::HeaderValue::from_str(&format!("{}m", left.max(1))) {
                parts.headers.insert("grpc-timeout", value);
            }
        }
        parts
    };
    if replay::is_replayable(&path) {
        let bytes = match replay::collect(body, replay::MAX_REPLAY_BYTES).await {
            Ok(bytes) => bytes,
            Err(status) => return status.into_http(),
        };
        loop {
            let mut sender = match link.sender(until).await {
                Ok(sender) => sender,
                Err(status) => return status.into_http(),
            };
            let req = http::Request::from_parts(
                with_deadline(parts.clone()),
                Body::new(http_body_util::Full::new(bytes.clone())),
            );
            match sender.send_request(req).await {
                Ok(response) => return response.map(Body::new),
                Err(_) => {
                    // The daemon went away with the call; the next daemon answers it again.
                    link.forget_if_closed().await;
                    if Instant::now() >= until {
                        return gone(&path, deadline.is_some()).into_http();
                    }
                    smol::Timer::after(Duration::from_millis(20)).await;
                }
            }
        }
    }
    let mut req = http::Request::from_parts(with_deadline(parts), Body::new(body));
    loop {
        let mut sender = match link.sender(until).await {
            Ok(sender) => sender,
            Err(status) => return status.into_http(),
        };
        match sender.try_send_request(req).await {
            Ok(response) => return response.map(Body::new),
            Err(mut e) => {
                link.forget_if_closed().await;
                match e.take_message() {
                    // Never reached the daemon: safe to send to the next one.
                    Some(unsent) => req = unsent,
                    None => {
                        return tonic::Status::unavailable(format!(
                            "shimlessd went away while handling {path}; it is not sent again \
                             because it may have taken effect: check the task's state and retry"
                        ))
                        .into_http();
                    }
                }
            }
        }
    }
}

fn gone(path: &str, had_deadline: bool) -> tonic::Status {
    let why = if had_deadline {
        "before the call's deadline"
    } else {
        "within the front's hold time"
    };
    tonic::Status::unavailable(format!(
        "shimlessd did not come back {why} to answer {path}"
    ))
}
