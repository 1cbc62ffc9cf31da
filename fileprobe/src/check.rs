//! One file check: resolve the path inside a container's root, `statx` it, compare its mtime.
//!
//! The root is an open directory (for a live container, `/proc/<pid>/root`). The path is
//! resolved with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so absolute symlinks, `..`
//! chains and relative symlinks are all clamped to that root by the kernel, and magic links such
//! as `/proc/self/root` are refused: the host's file system is never looked at. The file is
//! opened `O_PATH` (no read permission needed, no side effects) and `statx`ed through the fd.
//!
//! A modification time in the future (clock skew between a writer and the node, or a file
//! touched with a future date) counts as fresh: the file was written no earlier than "now".

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, StatxFlags};
use rustix::io::Errno;

/// Why a check failed; every reason is a probe Failure.
///
/// ```
/// use fileprobe::ProbeFailure;
/// let f = ProbeFailure::Timeout { timeout: std::time::Duration::from_secs(1) };
/// assert_eq!(f.to_string(), "check took longer than timeoutSeconds (1s)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeFailure {
    /// The container's root could not be opened: the container (its process) is gone.
    #[error("container root {root} cannot be opened ({errno}); the container is gone")]
    ContainerGone {
        /// The root that was opened, e.g. `/proc/42/root`.
        root: String,
        /// The error from `open`.
        errno: Errno,
    },
    /// The probe file does not exist inside the container.
    #[error("{path} does not exist inside the container")]
    Missing {
        /// The probe path.
        path: String,
    },
    /// The path exists but could not be resolved or statted (permission, a magic link, a loop…).
    #[error("{path} cannot be resolved inside the container: {errno}")]
    Unreadable {
        /// The probe path.
        path: String,
        /// The error from `openat2` or `statx`.
        errno: Errno,
    },
    /// The file was last modified longer ago than `validity`.
    #[error("{path} last modified {age:?} ago, more than validity {validity:?}")]
    Stale {
        /// The probe path.
        path: String,
        /// Time since the last modification.
        age: Duration,
        /// The allowed window.
        validity: Duration,
    },
    /// The check did not finish within `timeoutSeconds`.
    #[error("check took longer than timeoutSeconds ({}s)", timeout.as_secs())]
    Timeout {
        /// The timeout that ran out.
        timeout: Duration,
    },
}

/// Opens a container's root directory, `/proc/<pid>/root`, for [`check_at`].
///
/// ```no_run
/// let root = fileprobe::open_container_root(1234)?;
/// # Ok::<(), fileprobe::ProbeFailure>(())
/// ```
pub fn open_container_root(pid: u32) -> Result<OwnedFd, ProbeFailure> {
    open_root(&format!("/proc/{pid}/root"))
}

/// Opens any directory as a probe root (a container's rootfs, or a test directory).
///
/// ```
/// let root = fileprobe::open_root("/tmp").unwrap();
/// ```
pub fn open_root(dir: &str) -> Result<OwnedFd, ProbeFailure> {
    rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| ProbeFailure::ContainerGone {
        root: dir.to_owned(),
        errno,
    })
}

/// The mtime of `path` resolved inside `root`, never outside it.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("f"), b"").unwrap();
/// let root = fileprobe::open_root(dir.path().to_str().unwrap()).unwrap();
/// assert!(fileprobe::mtime_at(&root, "/f").is_ok());
/// ```
pub fn mtime_at(root: impl AsFd, path: &str) -> Result<SystemTime, ProbeFailure> {
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let flags = OFlags::PATH | OFlags::CLOEXEC;
    let fd = rustix::fs::openat2(root, path, flags, Mode::empty(), resolve).map_err(|errno| {
        if errno == Errno::NOENT {
            ProbeFailure::Missing {
                path: path.to_owned(),
            }
        } else {
            ProbeFailure::Unreadable {
                path: path.to_owned(),
                errno,
            }
        }
    })?;
    let st =
        rustix::fs::statx(&fd, "", AtFlags::EMPTY_PATH, StatxFlags::MTIME).map_err(|errno| {
            ProbeFailure::Unreadable {
                path: path.to_owned(),
                errno,
            }
        })?;
    let t = st.stx_mtime;
    let nanos = Duration::new(0, t.tv_nsec);
    Ok(if t.tv_sec >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(t.tv_sec.unsigned_abs()) + nanos
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(t.tv_sec.unsigned_abs()) + nanos
    })
}

/// One check: `Ok(age)` iff `now - mtime <= validity` (a future mtime is fresh, age zero).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("f"), b"").unwrap();
/// let root = fileprobe::open_root(dir.path().to_str().unwrap()).unwrap();
/// let later = SystemTime::now() + Duration::from_secs(60);
/// assert!(fileprobe::check_at(&root, "/f", Duration::from_secs(30), SystemTime::now()).is_ok());
/// assert!(fileprobe::check_at(&root, "/f", Duration::from_secs(30), later).is_err());
/// ```
pub fn check_at(
    root: impl AsFd,
    path: &str,
    validity: Duration,
    now: SystemTime,
) -> Result<Duration, ProbeFailure> {
    let mtime = mtime_at(root, path)?;
    let age = now.duration_since(mtime).unwrap_or(Duration::ZERO);
    if age <= validity {
        Ok(age)
    } else {
        Err(ProbeFailure::Stale {
            path: path.to_owned(),
            age,
            validity,
        })
    }
}

/// [`check_at`] off the async executor, failing with [`ProbeFailure::Timeout`] after `timeout`.
///
/// The syscalls run on the `blocking` crate's thread pool (a stuck FUSE or NFS file would
/// otherwise stall the caller's executor); the timeout is an `async-io` timer, so this works
/// under any executor. A timed-out syscall keeps its pool thread until the kernel returns.
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("f"), b"").unwrap();
/// let root = Arc::new(fileprobe::open_root(dir.path().to_str().unwrap()).unwrap());
/// let r = futures_lite::future::block_on(fileprobe::check(root, "/f".into(),
///     Duration::from_secs(30), Duration::from_secs(1)));
/// assert!(r.is_ok());
/// ```
pub async fn check(
    root: Arc<OwnedFd>,
    path: String,
    validity: Duration,
    timeout: Duration,
) -> Result<Duration, ProbeFailure> {
    with_timeout(timeout, move || {
        check_at(&*root, &path, validity, SystemTime::now())
    })
    .await
}

/// Runs `work` on the `blocking` pool, or gives [`ProbeFailure::Timeout`] once `timeout` passes.
async fn with_timeout<F>(timeout: Duration, work: F) -> Result<Duration, ProbeFailure>
where
    F: FnOnce() -> Result<Duration, ProbeFailure> + Send + 'static,
{
    let work = blocking::unblock(work);
    let timer = async {
        async_io::Timer::after(timeout).await;
        Err(ProbeFailure::Timeout { timeout })
    };
    futures_lite::future::or(work, timer).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_slower_than_the_timeout_is_a_timeout_failure() {
        let slow = || {
            std::thread::sleep(Duration::from_millis(300));
            Ok(Duration::ZERO)
        };
        let t = Duration::from_millis(50);
        let r = futures_lite::future::block_on(with_timeout(t, slow));
        assert_eq!(r, Err(ProbeFailure::Timeout { timeout: t }));
    }

    #[test]
    fn work_within_the_timeout_gives_its_own_result() {
        let t = Duration::from_secs(5);
        let r = futures_lite::future::block_on(with_timeout(t, || Ok(Duration::from_secs(2))));
        assert_eq!(r, Ok(Duration::from_secs(2)));
    }
}
