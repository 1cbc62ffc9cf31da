//! Unix sockets shimless serves on (the daemon's, the front's, the metrics'): created with mode
//! 0600, and who may talk to them. Also reached as `grpc::listen`.

use rustix::fd::AsFd;
use smol::net::unix::UnixListener;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Binds a unix socket at `path` that only its owner (root, for the daemon) can connect to:
/// parent directories are created, a stale socket file from a previous run is replaced, and
/// the socket's mode is set to 0600 before anyone is accepted.
///
/// Refuses to replace anything at `path` that is not a socket.
///
/// ```no_run
/// let listener = task_service::listen::bind("/run/shimless/shimless.sock")?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixListener> {
    let path = path.as_ref();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) => {
            std::fs::remove_file(path)?
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket: remove it or pick another path",
                    path.display()
                ),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    // Connecting needs write permission on the socket; with the usual umask nobody else has it
    // between bind and this chmod, and nobody at all after it.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Who is at the other end of a unix socket, as the kernel saw them when they connected.
///
/// ```
/// let (a, _b) = std::os::unix::net::UnixStream::pair()?;
/// let peer = task_service::listen::Peer::of(&a)?;
/// assert_eq!(peer.pid, std::process::id() as i32);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The peer's process id.
    pub pid: i32,
    /// The peer's effective user id.
    pub uid: u32,
    /// The peer's effective group id.
    pub gid: u32,
}

impl Peer {
    /// Reads the peer's credentials (`SO_PEERCRED`) from a connected unix socket.
    ///
    /// ```
    /// let (a, _b) = std::os::unix::net::UnixStream::pair()?;
    /// assert_eq!(task_service::listen::Peer::of(&a)?.uid, rustix::process::geteuid().as_raw());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn of(socket: impl AsFd) -> io::Result<Peer> {
        let cred = rustix::net::sockopt::socket_peercred(socket)?;
        Ok(Peer {
            pid: cred.pid.as_raw_nonzero().get(),
            uid: cred.uid.as_raw(),
            gid: cred.gid.as_raw(),
        })
    }
}

/// Why the peer on `socket` may not call, or `None` if its uid is in `allowed_uids`.
///
/// ```
/// let (a, _b) = std::os::unix::net::UnixStream::pair()?;
/// let me = rustix::process::geteuid().as_raw();
/// assert_eq!(task_service::listen::refusal(&a, &[me]), None);
/// assert!(task_service::listen::refusal(&a, &[me + 1]).unwrap().contains("may not use"));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn refusal(socket: impl AsFd, allowed_uids: &[u32]) -> Option<String> {
    match Peer::of(socket) {
        Ok(peer) if allowed_uids.contains(&peer.uid) => None,
        Ok(peer) => Some(format!(
            "uid {} may not use this socket (allowed: {allowed_uids:?}); run as an allowed user \
             or add the uid to the configuration's allowed_uids",
            peer.uid
        )),
        Err(e) => Some(format!("cannot read the caller's credentials: {e}")),
    }
}
