//! The console socket: how runc hands over a container's pty master (`--console-socket`).

use crate::Error;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// A listening socket runc connects to once, sending the pty master with `SCM_RIGHTS`.
pub(crate) struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    pub(crate) fn bind(path: PathBuf, command: &'static str) -> Result<Self, Error> {
        let listener = UnixListener::bind(&path).map_err(|source| Error::Io {
            command,
            what: "bind the console socket",
            source,
        })?;
        Ok(ConsoleSocket { listener, path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the pty master runc sent. The runtime sends it before `create` (or `exec -d`)
    /// returns, so it is already queued when this runs.
    pub(crate) fn receive(self, command: &'static str) -> Result<OwnedFd, Error> {
        let io = |what| {
            move |source| Error::Io {
                command,
                what,
                source,
            }
        };
        self.listener
            .set_nonblocking(true)
            .map_err(io("console socket"))?;
        let (conn, _) = self
            .listener
            .accept()
            .map_err(io("accept the runtime's console connection"))?;
        conn.set_nonblocking(false).map_err(io("console socket"))?;
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut name = [0u8; 256];
        rustix::net::recvmsg(
            &conn,
            &mut [IoSliceMut::new(&mut name)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(|e| Error::Io {
            command,
            what: "receive the pty master",
            source: e.into(),
        })?;
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(mut fds) = message
                && let Some(fd) = fds.next()
            {
                return Ok(fd);
            }
        }
        Err(Error::Io {
            command,
            what: "receive the pty master",
            source: std::io::Error::other("the runtime sent no file descriptor"),
        })
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
