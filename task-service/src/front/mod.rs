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
//! containerd speaks ttrpc to the front by default (the [`Protocol`] of each namespace socket):
//! each ttrpc request is sent to the daemon as the same gRPC call, through the same waiting and
//! replaying. containerd sends no namespace with its calls to a shim, so the front serves one socket
//! per containerd namespace (made on request, `shimless.v1.Front/Listen`, which the shim's
//! `start` calls and prints as the bootstrap address) and sets `containerd-namespace` on every
//! call that arrives there.
//!
//! [`supervise`] is the other half: the front starts `shimlessd` and starts it again when it
//! exits, and reaps the containers orphaned by a daemon that died.
//!
//! ```no_run
//! use std::sync::Arc;
//! use task_service::front::{self, FrontConfig};
//! let ex = Arc::new(smol::Executor::new());
//! let config = FrontConfig::new("/run/shimless/daemon.sock", "/run/shimless/ns");
//! smol::block_on(ex.run(async {
//!     let listener = task_service::grpc::listen::bind("/run/shimless/shimless.sock")?;
//!     front::serve(listener, config, ex.clone()).await
//! }))?;
//! # Ok::<(), std::io::Error>(())
//! ```

mod gate;
pub mod handover;
mod link;
mod protocol;
pub mod replay;
mod service;
pub mod subscribe;
pub mod supervise;
mod ttrpc;

use crate::api::shimless::v1::front_server;
use crate::grpc::deadline::parse_grpc_timeout;
use crate::ids::Namespace;
use hyper::body::Incoming;
use link::Link;
pub use protocol::{Protocol, namespace_socket};
use service::FrontService;
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
/// let config = task_service::front::FrontConfig::new("/run/shimless/daemon.sock", "/run/shimless/ns");
/// assert_eq!(config.hold, std::time::Duration::from_secs(60));
/// assert_eq!(config.allowed_uids, vec![0]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontConfig {
    /// The daemon's private socket.
    pub daemon_socket: PathBuf,
    /// Where the per-namespace sockets are made (`<dir>/<namespace>.sock`).
    pub namespace_dir: PathBuf,
    /// How long a call without a deadline waits for an absent daemon.
    pub hold: Duration,
    /// The uids allowed to connect (checked with `SO_PEERCRED`).
    pub allowed_uids: Vec<u32>,
}

impl FrontConfig {
    /// The defaults for a daemon on `daemon_socket`: hold calls 60 s, root only.
    pub fn new(
        daemon_socket: impl Into<PathBuf>,
        namespace_dir: impl Into<PathBuf>,
    ) -> FrontConfig {
        FrontConfig {
            daemon_socket: daemon_socket.into(),
            namespace_dir: namespace_dir.into(),
            hold: Duration::from_secs(60),
            allowed_uids: vec![0],
        }
    }
}

/// What every accept loop shares.
struct Shared {
    link: Link,
    config: FrontConfig,
    ex: Arc<smol::Executor<'static>>,
    /// The namespace sockets being served.
    bound: std::sync::Mutex<std::collections::HashSet<(String, Protocol)>>,
    /// What an upgrade needs: paused loops, the live ttrpc connections, the listeners.
    gate: gate::Gate,
    conns: std::sync::Mutex<std::collections::HashMap<u64, Arc<ttrpc::Conn>>>,
    /// Live gRPC connections on namespace sockets (these cannot be handed over).
    grpc_conns: std::sync::atomic::AtomicUsize,
    /// gRPC calls being answered (until their answer's head), which a handover waits for.
    grpc_calls: std::sync::atomic::AtomicUsize,
    public_fd: std::sync::Mutex<std::os::fd::RawFd>,
    listeners: std::sync::Mutex<Vec<handover::HandedListener>>,
    lineage: Option<handover::Lineage>,
    upgrading: std::sync::atomic::AtomicBool,
    last_upgrade_error: std::sync::Mutex<String>,
}

impl Shared {
    /// Serves `namespace`'s socket for `protocol` unless it already is; its path.
    fn listen(
        self: &Arc<Self>,
        namespace: &Namespace,
        protocol: Protocol,
    ) -> std::io::Result<PathBuf> {
        let path = namespace_socket(&self.config.namespace_dir, namespace.as_str(), protocol);
        let mut bound = crate::lock::lock(&self.bound);
        let key = (namespace.to_string(), protocol);
        if bound.contains(&key) {
            return Ok(path);
        }
        let listener = crate::grpc::listen::bind(&path)?;
        bound.insert(key);
        drop(bound);
        self.serve_listener(namespace, protocol, listener);
        Ok(path)
    }

    /// Serves a namespace socket's listener (made here or handed over).
    fn serve_listener(
        self: &Arc<Self>,
        namespace: &Namespace,
        protocol: Protocol,
        listener: UnixListener,
    ) {
        // Counted before its task runs, so a handover never misses a loop not yet parked.
        self.gate.count_loop();
        crate::lock::lock(&self.listeners).push(handover::HandedListener {
            namespace: namespace.to_string(),
            protocol,
            fd: std::os::fd::AsRawFd::as_raw_fd(&listener),
        });
        let task = match protocol {
            Protocol::Grpc => {
                self.ex
                    .spawn(accept(listener, Some(namespace.clone()), self.clone()))
            }
            Protocol::Ttrpc => {
                self.ex
                    .spawn(ttrpc::accept(listener, namespace.clone(), self.clone()))
            }
        };
        task.detach();
    }

    /// Why a peer may not connect, if it may not.
    fn refuse(&self, stream: &smol::net::unix::UnixStream) -> Option<String> {
        crate::grpc::listen::refusal(stream, &self.config.allowed_uids)
    }
}

/// Serves `listener` (the public socket) and the per-namespace sockets until accepting on the
/// public one fails, forwarding every call to the daemon. Namespace sockets left by a previous
/// front are served again at once, so a containerd that reconnects finds them.
///
/// See the [module docs](self) for an example.
pub async fn serve(
    listener: UnixListener,
    config: FrontConfig,
    ex: Arc<smol::Executor<'static>>,
) -> std::io::Result<()> {
    serve_upgradable(listener, config, ex, None).await
}

/// [`serve`], upgradable in place when `lineage` is given (`shimless.v1.Front/Upgrade`, or
/// `SIGHUP`; see [`handover`]).
///
/// ```no_run
/// use std::sync::Arc;
/// use task_service::front::{self, FrontConfig, handover::Lineage};
/// let ex = Arc::new(smol::Executor::new());
/// let config = FrontConfig::new("/run/shimless/daemon.sock", "/run/shimless/ns");
/// let lineage = Lineage {
///     binary: "/usr/local/bin/shimless-front".into(),
///     config_path: "/etc/shimless/config.toml".into(),
///     generation: 0,
///     daemon: None,
/// };
/// smol::block_on(ex.run(async {
///     let listener = task_service::grpc::listen::bind("/run/shimless/shimless.sock")?;
///     front::serve_upgradable(listener, config, ex.clone(), Some(lineage)).await
/// }))?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub async fn serve_upgradable(
    listener: UnixListener,
    config: FrontConfig,
    ex: Arc<smol::Executor<'static>>,
    lineage: Option<handover::Lineage>,
) -> std::io::Result<()> {
    let shared = shared(config, ex, lineage);
    serve_left_sockets(&shared)?;
    accept(listener, None, shared).await
}

/// Serves what a previous front handed over (see [`handover`]): its listeners, its ttrpc
/// connections (the bytes it had read first, the reads it had not answered sent again), and
/// then any namespace socket left in the directory.
///
/// ```no_run
/// use std::sync::Arc;
/// use task_service::front::{self, FrontConfig, handover::Manifest};
/// let manifest = Manifest::take(3)?;
/// let ex = Arc::new(smol::Executor::new());
/// let config = FrontConfig::new("/run/shimless/daemon.sock", "/run/shimless/ns");
/// smol::block_on(ex.run(front::resume(manifest, config, ex.clone(), None)))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub async fn resume(
    manifest: handover::Manifest,
    config: FrontConfig,
    ex: Arc<smol::Executor<'static>>,
    lineage: Option<handover::Lineage>,
) -> std::io::Result<()> {
    let shared = shared(config, ex, lineage);
    for handed in manifest.listeners {
        let Ok(ns) = Namespace::new(handed.namespace.clone()) else {
            continue;
        };
        let listener = UnixListener::try_from(std::os::unix::net::UnixListener::from(
            handover::owned(handed.fd),
        ))?;
        crate::lock::lock(&shared.bound).insert((handed.namespace, handed.protocol));
        shared.serve_listener(&ns, handed.protocol, listener);
    }
    for handed in manifest.connections {
        let Ok(ns) = Namespace::new(handed.namespace) else {
            continue;
        };
        let stream = smol::net::unix::UnixStream::try_from(std::os::unix::net::UnixStream::from(
            handover::owned(handed.fd),
        ))?;
        ttrpc::resume(stream, ns, &shared, handed.unread, handed.pending);
    }
    let public = UnixListener::try_from(std::os::unix::net::UnixListener::from(handover::owned(
        manifest.public,
    )))?;
    serve_left_sockets(&shared)?;
    accept(public, None, shared).await
}

fn shared(
    config: FrontConfig,
    ex: Arc<smol::Executor<'static>>,
    lineage: Option<handover::Lineage>,
) -> Arc<Shared> {
    let upgradable = lineage.is_some();
    let shared = Arc::new(Shared {
        link: Link::new(config.daemon_socket.clone(), ex.clone()),
        config,
        ex,
        bound: Default::default(),
        gate: Default::default(),
        conns: Default::default(),
        grpc_conns: Default::default(),
        grpc_calls: Default::default(),
        public_fd: std::sync::Mutex::new(-1),
        listeners: Default::default(),
        lineage,
        upgrading: Default::default(),
        last_upgrade_error: Default::default(),
    });
    if upgradable {
        shared
            .ex
            .spawn(handover::on_sighup(shared.clone()))
            .detach();
    }
    shared
}

/// Serves the namespace sockets a previous front left in the directory (not already served).
fn serve_left_sockets(shared: &Arc<Shared>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(&shared.config.namespace_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let (ns, protocol) = match name.strip_suffix(".ttrpc.sock") {
            Some(ns) => (ns, Protocol::Ttrpc),
            None => match name.strip_suffix(".sock") {
                Some(ns) => (ns, Protocol::Grpc),
                None => continue,
            },
        };
        if let Ok(ns) = Namespace::new(ns) {
            shared.listen(&ns, protocol)?;
        }
    }
    Ok(())
}

const FRONT_PREFIX: &str = "/shimless.v1.Front/";

/// Accepts on one socket; on a namespace's socket, every call is marked with that namespace.
async fn accept(
    listener: UnixListener,
    namespace: Option<Namespace>,
    shared: Arc<Shared>,
) -> std::io::Result<()> {
    let header = namespace
        .as_ref()
        .and_then(|ns| http::HeaderValue::from_str(ns.as_str()).ok());
    let own = front_server::FrontServer::new(FrontService {
        shared: shared.clone(),
    });
    if namespace.is_none() {
        *crate::lock::lock(&shared.public_fd) = std::os::fd::AsRawFd::as_raw_fd(&listener);
        shared.gate.count_loop();
    }
    loop {
        let stream = shared.gate.accept(&listener, "shimless-front").await;
        let denied = shared.refuse(&stream);
        let shared2 = shared.clone();
        let header = header.clone();
        let own = own.clone();
        let per_call = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
            let shared = shared2.clone();
            let denied = denied.clone();
            let header = header.clone();
            let mut own = own.clone();
            async move {
                let _call = Counted::new(shared.clone(), |s| &s.grpc_calls);
                if let Some(why) = denied {
                    return Ok::<_, Infallible>(tonic::Status::permission_denied(why).into_http());
                }
                match &header {
                    Some(ns) => {
                        req.headers_mut().insert("containerd-namespace", ns.clone());
                    }
                    None if req.uri().path().starts_with(FRONT_PREFIX) => {
                        return tower_service::Service::call(&mut own, req).await;
                    }
                    None => {}
                }
                Ok(forward(&shared.link, &shared.config, req).await)
            }
        });
        let exec = SmolExecutor::new(shared.ex.clone());
        let counted = namespace
            .is_some()
            .then(|| Counted::new(shared.clone(), |s| &s.grpc_conns));
        shared
            .ex
            .spawn(async move {
                let _counted = counted;
                let mut builder = hyper::server::conn::http2::Builder::new(exec);
                // containerd opens one connection per task, so what an idle connection costs
                // is multiplied by the number of containers: small windows and buffers (the
                // calls are small protobufs), the default frame size.
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

/// One more in a count (a live gRPC connection, a call being answered) until dropped.
struct Counted(Arc<Shared>, fn(&Shared) -> &std::sync::atomic::AtomicUsize);

impl Counted {
    fn new(shared: Arc<Shared>, count: fn(&Shared) -> &std::sync::atomic::AtomicUsize) -> Counted {
        count(&shared).fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Counted(shared, count)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Sends one call to the daemon, waiting for it (and replaying reads) as the module docs say.
async fn forward(
    link: &Link,
    config: &FrontConfig,
    req: http::Request<Incoming>,
) -> http::Response<Body> {
    let deadline = req
        .headers()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout);
    let path = req.uri().path().to_string();
    let (parts, body) = req.into_parts();
    if replay::is_replayable(&path) {
        let bytes = match replay::collect(body, replay::MAX_REPLAY_BYTES).await {
            Ok(bytes) => bytes,
            Err(status) => return status.into_http(),
        };
        return forward_buffered(link, config, parts, bytes, deadline).await;
    }
    let started = Instant::now();
    let until = started + deadline.unwrap_or(config.hold);
    let mut req = http::Request::from_parts(with_deadline(parts, deadline, until), Body::new(body));
    loop {
        let mut sender = match link.sender(until).await {
            Ok(sender) => sender,
            Err(status) => return status.into_http(),
        };
        match sender.try_send_request(req).await {
            Ok(response) if path == subscribe::PATH => {
                return subscribe::decouple(response, link.executor());
            }
            Ok(response) => return response.map(Body::new),
            Err(mut e) => {
                link.forget_if_closed().await;
                match e.take_message() {
                    // Never reached the daemon: safe to send to the next one.
                    Some(unsent) => req = unsent,
                    None => return in_flight(&path).into_http(),
                }
            }
        }
    }
}

/// Sends a call whose whole body is at hand: again to the next daemon if it never reached the
/// dying one, or if it only reads.
async fn forward_buffered(
    link: &Link,
    config: &FrontConfig,
    parts: http::request::Parts,
    bytes: bytes::Bytes,
    deadline: Option<Duration>,
) -> http::Response<Body> {
    let mut until = Instant::now() + deadline.unwrap_or(config.hold);
    let path = parts.uri.path().to_string();
    let replayable = replay::is_replayable(&path);
    loop {
        let mut sender = match link.sender(until).await {
            Ok(sender) => sender,
            Err(status) => return status.into_http(),
        };
        let req = http::Request::from_parts(
            with_deadline(parts.clone(), deadline, until),
            Body::new(http_body_util::Full::new(bytes.clone())),
        );
        match sender.try_send_request(req).await {
            Ok(response) => return response.map(Body::new),
            Err(mut e) => {
                link.forget_if_closed().await;
                let sent = e.take_message().is_none();
                if sent && !replayable {
                    return in_flight(&path).into_http();
                }
                // A read the dying daemon held (a `Wait` can be held for hours): without a
                // deadline of its own, it waits `hold` for the next daemon from now, not from
                // when it was made (else a `Wait` older than `hold` failed at once, and
                // containerd took its task for exited with 255).
                if sent && deadline.is_none() {
                    until = Instant::now() + config.hold;
                }
                // Never sent, or a read: the next daemon answers it.
                if Instant::now() >= until {
                    return gone(&path, deadline.is_some()).into_http();
                }
                smol::Timer::after(Duration::from_millis(20)).await;
            }
        }
    }
}

/// The call's headers with `grpc-timeout` set to what is left of its deadline.
fn with_deadline(
    mut parts: http::request::Parts,
    deadline: Option<Duration>,
    until: Instant,
) -> http::request::Parts {
    if deadline.is_some() {
        let left = until.saturating_duration_since(Instant::now()).as_millis();
        if let Ok(value) = http::HeaderValue::from_str(&format!("{}m", left.max(1))) {
            parts.headers.insert("grpc-timeout", value);
        }
    }
    parts
}

fn in_flight(path: &str) -> tonic::Status {
    tonic::Status::unavailable(format!(
        "shimlessd went away while handling {path}; it is not sent again because it may have \
         taken effect: check the task's state and retry"
    ))
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
