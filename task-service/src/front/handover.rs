//! Upgrading the front in place: its listening sockets and every live ttrpc connection from
//! containerd pass to a new front binary, so containerd sees no shim go away.
//!
//! The new binary replaces the running one by `execve` in the same process, with the sockets
//! kept open: the process stays the daemon's parent and the subreaper of the containers, so the
//! daemon keeps running untouched and is adopted by the new front. What a handover does, in
//! order (triggered by `shimless.v1.Front/Upgrade`, i.e. `shimlessctl upgrade`, or by `SIGHUP`):
//!
//! 1. **Check**: the new binary runs as `<binary> --config <config> --check` and must print
//!    [`READY`] within [`CHECK_TIME`]. A binary that exits at once, cannot read the
//!    configuration or hangs fails the upgrade here, with what it said: the old front goes on
//!    serving and nothing has paused. An upgrade is also refused while containerd holds gRPC
//!    connections to a namespace socket (HTTP/2's state cannot be handed over).
//! 2. **Pause**: the accept loops park and every ttrpc connection stops reading at a message
//!    boundary (keeping the bytes of a message it has only partly read).
//! 3. **Drain**: calls that change something are given up to [`DRAIN_TIME`] to be answered;
//!    any still running after it is answered `UNAVAILABLE` (it may have taken effect, as when
//!    the daemon dies under it). Calls on the front's own socket (`shimlessctl`, the shim's
//!    `start`) get the same time; its connections are not handed over but closed by the
//!    `execve` (their clients connect again; the socket itself, with its backlog, is kept). Calls that only read (`Wait`, `State`, ...) are not waited for:
//!    the new front sends them again.
//! 4. **Exec**: a [`Manifest`] (listeners, connections, unread bytes, reads to send again, the
//!    daemon's pid, the generation) goes into a memfd, and the process `execve`s
//!    `<binary> --config <config> --handover-fd <memfd>`. If `execve` fails, every connection
//!    is given back to the old front, which goes on (the reads are sent again).
//!
//! The new front reads the manifest ([`Manifest::take`]), serves the sockets, sends the pending
//! reads to the daemon and answers them on their connections, and adopts the daemon as the one
//! it supervises.

use super::gate::Gate;
use super::{Protocol, Shared, ttrpc};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// What a checked binary prints (first word of a line) to say it can take over.
pub const READY: &str = "shimless-front-ready";

/// How long a new binary's `--check` may take.
pub const CHECK_TIME: Duration = Duration::from_secs(10);

/// How long calls that change something are given to finish before a handover.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

/// How long the readers and accept loops are given to stop.
const STOP_TIME: Duration = Duration::from_secs(2);

/// The manifest's format; a front refuses a manifest of another.
const FORMAT: u32 = 1;

/// Where a front comes from, which an upgrade needs to know.
///
/// ```
/// let lineage = task_service::front::handover::Lineage {
///     binary: "/usr/local/bin/shimless-front".into(),
///     config_path: "/etc/shimless/config.toml".into(),
///     generation: 0,
///     daemon: None,
/// };
/// assert_eq!(lineage.generation, 0);
/// ```
#[derive(Debug, Clone)]
pub struct Lineage {
    /// The binary an upgrade runs when none is named: the path this front was started from
    /// (so installing new files there, then upgrading, upgrades).
    pub binary: PathBuf,
    /// The configuration file the new front is given.
    pub config_path: PathBuf,
    /// How many handovers this front descends from (0 for a front started afresh).
    pub generation: u32,
    /// The pid of the supervised daemon, kept current by the supervisor (0: none).
    pub daemon: Option<Arc<AtomicU32>>,
}

/// What one front hands to the next across `execve`.
///
/// ```
/// let m = task_service::front::handover::Manifest::default();
/// assert!(m.connections.is_empty());
/// ```
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// The manifest's format.
    pub format: u32,
    /// The generation of the front that handed over.
    pub generation: u32,
    /// The daemon it supervised, if any.
    pub daemon_pid: Option<u32>,
    /// The public socket's listener.
    pub public: RawFd,
    /// The namespace sockets' listeners.
    pub listeners: Vec<HandedListener>,
    /// The live ttrpc connections.
    pub connections: Vec<HandedConnection>,
    /// When the old front paused (`CLOCK_MONOTONIC`, ns), so the new one can say how long
    /// containerd's connections went unread.
    #[serde(default)]
    pub paused_at_ns: u64,
}

/// A namespace socket's listener.
///
/// ```
/// use task_service::front::{Protocol, handover::HandedListener};
/// let l = HandedListener { namespace: "k8s.io".into(), protocol: Protocol::Ttrpc, fd: 7 };
/// assert_eq!(l.fd, 7);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HandedListener {
    /// The containerd namespace.
    pub namespace: String,
    /// What containerd speaks on it.
    pub protocol: Protocol,
    /// The descriptor, open across the `execve`.
    pub fd: RawFd,
}

/// A ttrpc connection from containerd.
///
/// ```
/// let c = task_service::front::handover::HandedConnection {
///     namespace: "default".into(), fd: 9, unread: vec![], pending: vec![(3, vec![])],
/// };
/// assert_eq!(c.pending[0].0, 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HandedConnection {
    /// The namespace of the socket it came in on.
    pub namespace: String,
    /// The descriptor, open across the `execve`.
    pub fd: RawFd,
    /// Bytes read from it but not handled: the start of a message.
    pub unread: Vec<u8>,
    /// Requests read and not answered, to be sent again: `(stream id, ttrpc request)`.
    pub pending: Vec<(u32, Vec<u8>)>,
}

/// Why a handed-over front cannot start.
///
/// ```
/// use task_service::front::handover::HandoverError;
/// let e = HandoverError::NotASocket(12);
/// assert!(e.to_string().contains("fd 12"));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The manifest could not be read from its descriptor.
    #[error("cannot read the handover manifest from fd {fd}: {source}")]
    Read {
        /// The descriptor given by `--handover-fd`.
        fd: RawFd,
        /// What failed.
        source: std::io::Error,
    },
    /// The manifest is not one this front reads.
    #[error(
        "the handover manifest is not readable by this shimless-front ({0}); the previous \
         front was of another version: restart the front (containerd will see every shim go)"
    )]
    Format(String),
    /// A descriptor named by the manifest is not a socket.
    #[error("the handover manifest names fd {0}, which is not an open socket")]
    NotASocket(RawFd),
}

impl Manifest {
    /// Reads and closes the manifest's memfd, checking that every descriptor it names is an
    /// open socket. Call once, early: the descriptors are owned by whoever takes them next.
    ///
    /// ```
    /// use task_service::front::handover::{HandoverError, Manifest};
    /// assert!(matches!(Manifest::take(-1), Err(HandoverError::NotASocket(-1))));
    /// ```
    pub fn take(fd: RawFd) -> Result<Manifest, HandoverError> {
        let read = |source| HandoverError::Read { fd, source };
        rustix::io::fcntl_getfd(borrow(fd)?).map_err(|e| read(e.into()))?;
        // SAFETY: the previous front opened this memfd for us and left it to this process;
        // nothing else here uses it, and it is checked open above.
        let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
        let mut text = String::new();
        file.rewind()
            .and_then(|_| file.read_to_string(&mut text))
            .map_err(read)?;
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| HandoverError::Format(e.to_string()))?;
        if manifest.format != FORMAT {
            return Err(HandoverError::Format(format!(
                "format {}, this front reads {FORMAT}",
                manifest.format
            )));
        }
        for fd in manifest.fds() {
            let stat = rustix::fs::fstat(borrow(fd)?).map_err(|_| HandoverError::NotASocket(fd))?;
            if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Socket {
                return Err(HandoverError::NotASocket(fd));
            }
        }
        Ok(manifest)
    }

    /// Every descriptor the manifest names.
    fn fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.public];
        fds.extend(self.listeners.iter().map(|l| l.fd));
        fds.extend(self.connections.iter().map(|c| c.fd));
        fds
    }
}

/// A descriptor number as a borrowed descriptor, refusing a negative one.
fn borrow(fd: RawFd) -> Result<BorrowedFd<'static>, HandoverError> {
    if fd < 0 {
        return Err(HandoverError::NotASocket(fd));
    }
    // SAFETY: only used for fcntl/fstat right away, which fail cleanly (EBADF) on a number
    // that is not open; the descriptors named by a manifest stay open for the process's life.
    Ok(unsafe { BorrowedFd::borrow_raw(fd) })
}

/// Takes ownership of a handed-over socket.
pub(super) fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `Manifest::take` checked that `fd` is an open socket; the manifest names each
    // descriptor once and the previous front left it to this process, so it has one owner.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Runs `binary --config <config> --check`: fine if it prints [`READY`] within
/// [`CHECK_TIME`]; else why not, with what it said.
///
/// ```
/// use std::path::Path;
/// use task_service::front::handover::check;
/// let why = check(Path::new("/bin/false"), Path::new("/etc/shimless/config.toml")).unwrap_err();
/// assert!(why.contains("without saying it was ready"), "{why}");
/// assert!(check(Path::new("/nonexistent"), Path::new("x")).unwrap_err().contains("cannot run"));
/// ```
pub fn check(binary: &Path, config: &Path) -> Result<(), String> {
    let shown = binary.display();
    let mut child = std::process::Command::new(binary)
        .arg("--config")
        .arg(config)
        .arg("--check")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run the new front {shown}: {e}"))?;
    let (Some(mut out), Some(mut err)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(format!("cannot read what {shown} says"));
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let said = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let ready = match rx.recv_timeout(CHECK_TIME) {
        Ok(text) => text
            .lines()
            .any(|l| l.split_whitespace().next() == Some(READY)),
        Err(_) => {
            let _ = child.kill();
            return Err(format!(
                "the new front {shown} did not say it was ready within {CHECK_TIME:?}; the \
                 old front goes on serving"
            ));
        }
    };
    // The supervisor may reap it first (it reaps every child): then its status is unknown.
    let status = match child.wait() {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with {code}"),
            (_, Some(signal)) => format!("was killed by signal {signal}"),
            _ => "ended".into(),
        },
        Err(_) => "ended".into(),
    };
    if ready {
        return Ok(());
    }
    let said = said.join().unwrap_or_default();
    let said = said.trim();
    Err(format!(
        "the new front {shown} {status} without saying it was ready{}; the old front goes on \
         serving",
        if said.is_empty() {
            String::new()
        } else {
            format!(" (it said: {said:?})")
        }
    ))
}

/// Checks that a handover may start: no gRPC connection from containerd (which cannot be
/// handed over), and a new binary that says it is ready.
pub(super) async fn prepare(shared: &Arc<Shared>, binary: &Path) -> Result<(), String> {
    let grpc = shared.grpc_conns.load(Ordering::SeqCst);
    if grpc > 0 {
        return Err(format!(
            "{grpc} gRPC connection(s) from containerd are open on namespace sockets; HTTP/2 \
             connections cannot be handed over (use containerd_protocol = \"ttrpc\", the \
             default)"
        ));
    }
    let lineage = shared.lineage.as_ref().ok_or(
        "this front was started without knowing its binary and configuration; it cannot be \
         upgraded in place",
    )?;
    let (binary, config) = (binary.to_owned(), lineage.config_path.clone());
    smol::unblock(move || check(&binary, &config)).await
}

/// Pauses, drains and `execve`s `binary` with every socket handed over. Returns only if the
/// handover did not happen: why, with every connection given back and the front serving again.
pub(super) async fn hand_over(shared: &Arc<Shared>, binary: &Path) -> String {
    shared.gate.set(true);
    let why = paused(shared, binary).await;
    shared.gate.set(false);
    why
}

async fn paused(shared: &Arc<Shared>, binary: &Path) -> String {
    let paused_at_ns = monotonic_ns();
    if !wait_for(STOP_TIME, || everything_stopped(&shared.gate, shared)).await {
        return format!("the front's connections did not stop reading within {STOP_TIME:?}");
    }
    wait_for(DRAIN_TIME, || {
        connections(shared)
            .iter()
            .all(|c| c.writes_in_flight() == 0)
    })
    .await;
    let conns = connections(shared);
    let mut guards = Vec::new();
    let mut handed = Vec::new();
    for conn in &conns {
        let (guard, claimed) = conn.claim().await;
        guards.push(guard);
        handed.push(HandedConnection {
            namespace: conn.namespace.to_string(),
            fd: conn.stream.as_raw_fd(),
            unread: claimed.unread,
            pending: claimed.reads,
        });
    }
    let manifest = Manifest {
        format: FORMAT,
        generation: shared.lineage.as_ref().map_or(0, |l| l.generation),
        daemon_pid: shared
            .lineage
            .as_ref()
            .and_then(|l| l.daemon.as_ref())
            .map(|d| d.load(Ordering::SeqCst))
            .filter(|pid| *pid != 0),
        public: *crate::lock::lock(&shared.public_fd),
        listeners: crate::lock::lock(&shared.listeners).clone(),
        connections: handed,
        paused_at_ns,
    };
    let why = exec(shared, binary, &manifest);
    drop(guards);
    for (conn, handed) in conns.iter().zip(manifest.connections) {
        conn.unclaim(shared, handed.pending);
    }
    why
}

/// `CLOCK_MONOTONIC` in nanoseconds (the same clock on both sides of an `execve`).
///
/// ```
/// let a = task_service::front::handover::monotonic_ns();
/// assert!(task_service::front::handover::monotonic_ns() >= a);
/// ```
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64).saturating_mul(1_000_000_000) + t.tv_nsec as u64
}

/// The live ttrpc connections.
fn connections(shared: &Shared) -> Vec<Arc<ttrpc::Conn>> {
    crate::lock::lock(&shared.conns).values().cloned().collect()
}

fn everything_stopped(gate: &Gate, shared: &Shared) -> bool {
    gate.loops_parked() && connections(shared).iter().all(|c| c.stopped())
}

/// Polls `done` until it holds or `limit` passes; whether it held.
async fn wait_for(limit: Duration, done: impl Fn() -> bool) -> bool {
    let until = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        smol::Timer::after(Duration::from_millis(10)).await;
    }
}

/// `execve`s the new front with the manifest's descriptors kept open. Returns only on failure:
/// why, with the descriptors closed on exec again.
fn exec(shared: &Shared, binary: &Path, manifest: &Manifest) -> String {
    let Some(lineage) = shared.lineage.as_ref() else {
        return "this front does not know its configuration".into();
    };
    let memfd = match write_memfd(manifest) {
        Ok(fd) => fd,
        Err(e) => return format!("cannot write the handover manifest: {e}"),
    };
    let fds = manifest.fds();
    let keep = |flags| {
        fds.iter()
            .filter_map(|fd| borrow(*fd).ok())
            .try_for_each(|fd| rustix::io::fcntl_setfd(fd, flags))
    };
    if let Err(e) = keep(rustix::io::FdFlags::empty()) {
        let _ = keep(rustix::io::FdFlags::CLOEXEC);
        return format!("cannot keep the sockets open across exec: {e}");
    }
    tracing::info!(
        "shimless-front: handing {} connection(s) ({} read(s) to send again) and {} socket(s) \
         to {} (generation {})",
        manifest.connections.len(),
        manifest
            .connections
            .iter()
            .map(|c| c.pending.len())
            .sum::<usize>(),
        manifest.listeners.len() + 1,
        binary.display(),
        manifest.generation + 1
    );
    let e = std::process::Command::new(binary)
        .arg("--config")
        .arg(&lineage.config_path)
        .arg("--handover-fd")
        .arg(memfd.as_raw_fd().to_string())
        .exec();
    let _ = keep(rustix::io::FdFlags::CLOEXEC);
    format!("cannot exec the new front {}: {e}", binary.display())
}

/// The manifest in a memfd left open across exec.
fn write_memfd(manifest: &Manifest) -> std::io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create("shimless-handover", rustix::fs::MemfdFlags::empty())?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&serde_json::to_vec(manifest).map_err(std::io::Error::other)?)?;
    file.rewind()?;
    // Without CLOEXEC: memfd_create was not asked for it.
    Ok(OwnedFd::from(file))
}

/// Starts an upgrade to `binary` (or the front's own path): checks it, then hands over from a
/// task of its own. The generation handing over, or why the upgrade will not happen.
pub(super) async fn start(shared: &Arc<Shared>, binary: Option<PathBuf>) -> Result<u32, String> {
    let lineage = shared
        .lineage
        .as_ref()
        .ok_or("this front cannot be upgraded in place (started without its lineage)")?;
    let binary = binary.unwrap_or_else(|| lineage.binary.clone());
    if shared.upgrading.swap(true, Ordering::SeqCst) {
        return Err("an upgrade is already under way".into());
    }
    crate::lock::lock(&shared.last_upgrade_error).clear();
    if let Err(why) = prepare(shared, &binary).await {
        fail(shared, &why);
        return Err(why);
    }
    let shared2 = shared.clone();
    shared
        .ex
        .spawn(async move {
            // Let the answer to the caller go out first.
            smol::Timer::after(Duration::from_millis(100)).await;
            let why = hand_over(&shared2, &binary).await;
            fail(&shared2, &why);
        })
        .detach();
    Ok(lineage.generation)
}

fn fail(shared: &Shared, why: &str) {
    tracing::warn!("shimless-front: upgrade failed: {why}");
    *crate::lock::lock(&shared.last_upgrade_error) = why.to_string();
    shared.upgrading.store(false, Ordering::SeqCst);
}

/// Upgrades to the front's own path on every `SIGHUP`, for the life of the process.
pub(super) async fn on_sighup(shared: Arc<Shared>) {
    use futures_lite::StreamExt;
    let mut signals = match async_signal::Signals::new([async_signal::Signal::Hup]) {
        Ok(signals) => signals,
        Err(e) => {
            tracing::warn!("shimless-front: cannot take SIGHUP (upgrade by signal is off): {e}");
            return;
        }
    };
    while signals.next().await.is_some() {
        tracing::info!("shimless-front: SIGHUP: upgrading");
        if let Err(why) = start(&shared, None).await {
            tracing::warn!("shimless-front: SIGHUP upgrade refused: {why}");
        }
    }
}
