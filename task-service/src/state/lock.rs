//! [`StateLock`]: one daemon per state directory.

use rustix::fd::OwnedFd;
use rustix::fs::{FlockOperation, Mode, OFlags};
use std::path::{Path, PathBuf};

/// Why the state directory could not be locked.
///
/// ```
/// use task_service::state::LockError;
/// let e = LockError::Held { dir: "/run/shimless/state".into() };
/// assert!(e.to_string().contains("another shimlessd"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process holds the lock: a daemon is running on this directory.
    #[error(
        "another shimlessd is running on state directory {dir} (it holds the directory's lock); \
         stop it first, or give this one its own --state-dir and --socket"
    )]
    Held {
        /// The state directory.
        dir: PathBuf,
    },
    /// The directory could not be made, opened or locked.
    #[error("cannot lock state directory {dir}: {source}")]
    Io {
        /// The state directory.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// An exclusive `flock` on the state directory, held until dropped (or the process dies, even
/// by `kill -9`: the kernel releases it with the last descriptor, and the descriptor is
/// close-on-exec, so runtime children never inherit it).
///
/// ```
/// use task_service::state::{LockError, StateLock};
/// let dir = tempfile::tempdir()?;
/// let first = StateLock::acquire(dir.path())?;
/// assert!(matches!(StateLock::acquire(dir.path()), Err(LockError::Held { .. })));
/// drop(first);
/// let _again = StateLock::acquire(dir.path())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct StateLock {
    _fd: OwnedFd,
}

impl StateLock {
    /// Creates `dir` (mode 0700) if needed and locks it, without waiting.
    pub fn acquire(dir: &Path) -> Result<StateLock, LockError> {
        let io = |source: std::io::Error| LockError::Io {
            dir: dir.to_owned(),
            source,
        };
        super::create_private_dir(dir).map_err(io)?;
        let fd = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io(e.into()))?;
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(StateLock { _fd: fd }),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(LockError::Held {
                dir: dir.to_owned(),
            }),
            Err(e) => Err(io(e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_second_lock_is_refused_naming_the_directory_and_a_new_one_is_private() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("a/state");
        let _held = StateLock::acquire(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let err = StateLock::acquire(&dir).unwrap_err().to_string();
        assert!(
            err.contains("another shimlessd") && err.contains("a/state"),
            "{err}"
        );
    }
}
