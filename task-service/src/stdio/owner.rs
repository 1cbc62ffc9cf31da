//! Who the FIFOs handed to a container belong to (`IoUid`/`IoGid`), and giving them away.

use rustix::fd::OwnedFd;
use std::path::Path;

use super::{StdioError, Stream};

/// Who a container's FIFOs belong to: runtime options `IoUid`/`IoGid`, so that a container
/// running as that user can reopen its own stdio (`/dev/stdout`, `/proc/self/fd/1`). The Go
/// shim chowns the pipes it hands the container; here the container gets containerd's FIFOs
/// themselves, so those are chowned. Regular files and devices are never chowned.
///
/// ```
/// let owner = task_service::stdio::IoOwner { uid: 1000, gid: 1000 };
/// assert!(!owner.is_root());
/// assert!(task_service::stdio::IoOwner::default().is_root());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IoOwner {
    /// The owner (`IoUid`).
    pub uid: u32,
    /// The group (`IoGid`).
    pub gid: u32,
}

impl IoOwner {
    /// Root's: containerd makes its FIFOs as root, so there is nothing to change.
    pub fn is_root(self) -> bool {
        self.uid == 0 && self.gid == 0
    }
}

pub(super) fn chown(
    stream: Stream,
    path: &Path,
    fd: &OwnedFd,
    owner: IoOwner,
) -> Result<(), StdioError> {
    if owner.is_root() {
        return Ok(());
    }
    let uid = rustix::process::Uid::from_raw(owner.uid);
    let gid = rustix::process::Gid::from_raw(owner.gid);
    rustix::fs::fchown(fd, Some(uid), Some(gid)).map_err(|e| StdioError::Open {
        stream: stream.name(),
        path: path.to_owned(),
        source: std::io::Error::new(
            e.kind(),
            format!(
                "cannot give it to IoUid {} / IoGid {}: {e}",
                owner.uid, owner.gid
            ),
        ),
    })
}
