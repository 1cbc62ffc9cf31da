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

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, StatxAttributes, StatxFlags};
use rustix::io::Errno;

use crate::watch::{ChangeWatch, DIR_CHANGED, Flag};

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
    mtime_at_c(root.as_fd(), path, path)
}

/// `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`. The kernel answers `EAGAIN` when a rename
/// anywhere on the system raced with the resolution of a `..` (it cannot then prove the walk
/// stayed in the root); that says nothing about the probe's file, so the open is tried again, a
/// bounded number of times.
fn open_in_root<P: rustix::path::Arg + Copy>(
    root: BorrowedFd<'_>,
    arg: P,
    flags: OFlags,
) -> Result<rustix::fd::OwnedFd, Errno> {
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(root, arg, flags, Mode::empty(), resolve) {
            Err(Errno::AGAIN) if tries < 64 => tries += 1,
            other => return other,
        }
    }
}

/// [`mtime_at`] with the path given as anything rustix takes (a `&str` or a `&CStr`); `path` is
/// the same path for error messages.
fn mtime_at_c<P: rustix::path::Arg + Copy>(
    root: BorrowedFd<'_>,
    path: &str,
    arg: P,
) -> Result<SystemTime, ProbeFailure> {
    let fd = open_in_root(root, arg, OFlags::PATH | OFlags::CLOEXEC).map_err(|errno| {
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
    Ok(system_time(st.stx_mtime))
}

fn system_time(t: rustix::fs::StatxTimestamp) -> SystemTime {
    let nanos = Duration::new(0, t.tv_nsec);
    if t.tv_sec >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(t.tv_sec.unsigned_abs()) + nanos
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(t.tv_sec.unsigned_abs()) + nanos
    }
}

/// `age` is fresh iff `now - mtime <= validity`; a future mtime is fresh with age zero.
fn verdict(
    path: &str,
    mtime: SystemTime,
    validity: Duration,
    now: SystemTime,
) -> Result<Duration, ProbeFailure> {
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

/// After this many checks through a cached directory, the directory is resolved again from the
/// root, so a directory that was moved away or mounted over is followed within a bounded number
/// of periods even if its old copy still holds the file.
const REVALIDATE_EVERY: u32 = 64;

/// A probe path with its parent directory cached: one `statx` per check instead of
/// `openat2` + `statx` + `close`.
///
/// The parent directory is resolved once with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
/// (so it is inside the root) and kept as an `O_PATH` fd; each check is then
/// `statx(dir, basename, AT_SYMLINK_NOFOLLOW)`. A basename has no `/`, so that lookup cannot
/// leave the directory, and it does not follow a symlink. The cache is used only when the answer
/// is a plain (non-symlink) entry; otherwise the check falls back to the full in-root resolution
/// of [`mtime_at`]:
///
/// - the entry is a symlink: the kernel resolves it inside the root (the cache is kept, since the
///   directory is still right);
/// - any error (`ENOENT` because the directory was deleted and recreated, `ESTALE`, …): the cache
///   is dropped, the full resolution gives the result and reason, and the next check resolves the
///   directory again;
/// - every 64 checks the directory is resolved again anyway, so a directory renamed away (whose
///   old copy still holds a file) or mounted over is followed within 64 periods.
///
/// Paths whose last component is `.`, `..` or empty (a trailing `/`) are never cached.
/// Each cache holds one file descriptor; when none can be opened (`EMFILE`) checks use the
/// full resolution.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::create_dir(dir.path().join("d")).unwrap();
/// std::fs::write(dir.path().join("d/probe"), b"").unwrap();
/// let root = fileprobe::open_root(dir.path().to_str().unwrap()).unwrap();
/// let mut probe = fileprobe::CachedPath::new("/d/probe").unwrap();
/// assert!(probe.check(&root, Duration::from_secs(30), SystemTime::now()).is_ok());
/// assert!(probe.is_cached());
/// ```
#[derive(Debug)]
pub struct CachedPath {
    path: String,
    full: CString,
    /// The parent directory and where the basename starts in `full`, when the path has a
    /// usable basename.
    split: Option<(CString, usize)>,
    dir: Option<OwnedFd>,
    uses: u32,
    /// Change tracking, for paths made with [`CachedPath::with_watch`].
    watched: Option<Watched>,
}

/// A [`CachedPath`]'s share of a [`ChangeWatch`].
#[derive(Debug)]
struct Watched {
    watch: Arc<ChangeWatch>,
    /// Set by the watch when an event concerns this path (see [`crate::watch`]).
    flag: Flag,
    /// The inotify watch the basename is registered under, if the directory is watched.
    wd: Option<i32>,
    /// The last mtime read while watched and the watch's epoch before that read.
    mtime: Option<(SystemTime, u64)>,
}

impl CachedPath {
    /// A cache for `path` (as the container sees it); nothing is opened until the first check.
    /// `None` if the path holds a NUL byte (validation rejects those).
    ///
    /// ```
    /// assert!(fileprobe::CachedPath::new("/probe").is_some());
    /// assert!(fileprobe::CachedPath::new("/a\0b").is_none());
    /// ```
    pub fn new(path: &str) -> Option<Self> {
        let full = CString::new(path).ok()?;
        let split = path.rfind('/').and_then(|i| {
            let base = &path[i + 1..];
            if base.is_empty() || base == "." || base == ".." {
                return None;
            }
            let parent = if i == 0 { "/" } else { &path[..i] };
            Some((CString::new(parent).ok()?, i + 1))
        });
        Some(CachedPath {
            path: path.to_owned(),
            full,
            split,
            dir: None,
            uses: 0,
            watched: None,
        })
    }

    /// Like [`CachedPath::new`], with checks of an unchanged file answered without a `statx`:
    /// the parent directory is watched through `watch` (see [`ChangeWatch`] for when it cannot
    /// be, and then every check is a `statx` as with [`CachedPath::new`]). The verdict is the
    /// same as without the watch; call [`ChangeWatch::drain`] before checks so that changes
    /// are seen.
    ///
    /// A mtime is reused only if it came from a `statx` through the watched directory of a
    /// regular entry (not a symlink) with one link that is not a mount point of its own, and
    /// only while the check it gives is a success: a check that would fail (`Stale`) always
    /// asks the kernel again, and every 64th check does too (with the directory resolved
    /// again), so even a change inotify cannot report (a bind mount over the file, a write
    /// through a shared `mmap`) is followed within 64 checks, as a renamed directory is.
    ///
    /// ```
    /// use std::{sync::Arc, time::{Duration, SystemTime}};
    /// let dir = tempfile::tempdir().unwrap();
    /// std::fs::write(dir.path().join("probe"), b"").unwrap();
    /// let root = fileprobe::open_root(dir.path().to_str().unwrap()).unwrap();
    /// let watch = Arc::new(fileprobe::ChangeWatch::new());
    /// let mut p = fileprobe::CachedPath::with_watch("/probe", watch.clone()).unwrap();
    /// assert!(p.check(&root, Duration::from_secs(30), SystemTime::now()).is_ok());
    /// std::fs::remove_file(dir.path().join("probe")).unwrap();
    /// watch.drain();
    /// let r = p.check(&root, Duration::from_secs(30), SystemTime::now());
    /// assert!(matches!(r, Err(fileprobe::ProbeFailure::Missing { .. })));
    /// ```
    pub fn with_watch(path: &str, watch: Arc<ChangeWatch>) -> Option<Self> {
        let mut p = Self::new(path)?;
        p.watched = Some(Watched {
            flag: watch.new_flag(),
            watch,
            wd: None,
            mtime: None,
        });
        Some(p)
    }

    /// The inotify watch descriptor the path is registered under (unit tests).
    #[cfg(test)]
    pub(crate) fn wd(&self) -> Option<i32> {
        self.watched.as_ref().and_then(|w| w.wd)
    }

    /// Whether the parent directory is currently watched (checks of an unchanged file then
    /// need no `statx`).
    ///
    /// ```
    /// assert!(!fileprobe::CachedPath::new("/p").unwrap().is_watched());
    /// ```
    pub fn is_watched(&self) -> bool {
        self.watched.as_ref().is_some_and(|w| w.wd.is_some())
    }

    /// The probe path.
    ///
    /// ```
    /// assert_eq!(fileprobe::CachedPath::new("/p").unwrap().path(), "/p");
    /// ```
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether a parent directory fd is currently cached.
    ///
    /// ```
    /// assert!(!fileprobe::CachedPath::new("/p").unwrap().is_cached());
    /// ```
    pub fn is_cached(&self) -> bool {
        self.dir.is_some()
    }

    /// Forgets the cached directory (e.g. when the container root changed).
    ///
    /// ```
    /// let mut p = fileprobe::CachedPath::new("/p").unwrap();
    /// p.forget();
    /// assert!(!p.is_cached());
    /// ```
    pub fn forget(&mut self) {
        self.dir = None;
        if let Some(w) = &mut self.watched {
            w.mtime = None;
        }
    }

    /// The mtime of the path inside `root`: like [`mtime_at`], through the cached directory
    /// when it can be trusted. `root` must be the same root on every call (call
    /// [`CachedPath::forget`] when it changes).
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// std::fs::write(dir.path().join("f"), b"").unwrap();
    /// let root = fileprobe::open_root(dir.path().to_str().unwrap()).unwrap();
    /// let mut p = fileprobe::CachedPath::new("/f").unwrap();
    /// assert_eq!(p.mtime(&root), fileprobe::mtime_at(&root, "/f"));
    /// ```
    pub fn mtime(&mut self, root: impl AsFd) -> Result<SystemTime, ProbeFailure> {
        let root = root.as_fd();
        let epoch = match &mut self.watched {
            Some(w) => {
                w.mtime = None;
                // Cleared before the statx: an event after this point voids what it reads.
                if w.flag.get().swap(0, Ordering::AcqRel) & DIR_CHANGED != 0 {
                    self.dir = None;
                }
                w.watch.count_statx();
                Some(w.watch.epoch())
            }
            None => None,
        };
        let Some((parent, start)) = &self.split else {
            return self.full_mtime(root);
        };
        // The basename is the tail of the full path, NUL included: no copy.
        let tail = self
            .full
            .as_bytes_with_nul()
            .get(*start..)
            .unwrap_or_default();
        let Ok(base) = CStr::from_bytes_with_nul(tail) else {
            return self.full_mtime(root);
        };
        if self.uses >= REVALIDATE_EVERY {
            self.dir = None;
        }
        if self.dir.is_none() {
            let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
            match open_in_root(root, parent.as_c_str(), flags) {
                Ok(fd) => {
                    if let Some(w) = &mut self.watched {
                        w.wd = w.watch.watch(fd.as_fd(), base, &w.flag, w.wd);
                    }
                    self.dir = Some(fd);
                    self.uses = 0;
                }
                // The full resolution gives the reason (or works without a cache on EMFILE).
                Err(_) => return self.full_mtime(root),
            }
        }
        let Some(dir) = &self.dir else {
            return self.full_mtime(root);
        };
        self.uses += 1;
        let at = AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT;
        let mask = StatxFlags::MTIME | StatxFlags::TYPE | StatxFlags::NLINK;
        match rustix::fs::statx(dir, base, at, mask) {
            Ok(st) if FileType::from_raw_mode(st.stx_mode.into()) != FileType::Symlink => {
                let mtime = system_time(st.stx_mtime);
                if let (Some(w), Some(epoch)) = (&mut self.watched, epoch) {
                    // A second link could be changed through another directory, and a file
                    // that is a mount point of its own (a bind-mounted file) reports its
                    // changes to its source's directory: neither is seen by this watch.
                    let own_mount = StatxAttributes::MOUNT_ROOT;
                    let one_link = st.stx_mask & StatxFlags::NLINK.bits() != 0 && st.stx_nlink == 1;
                    let not_mounted = st.stx_attributes_mask.contains(own_mount)
                        && !st.stx_attributes.contains(own_mount);
                    if w.wd.is_some() && one_link && not_mounted {
                        w.mtime = Some((mtime, epoch));
                    }
                }
                Ok(mtime)
            }
            // A symlink: let the kernel resolve it inside the root; the directory is still good.
            Ok(_) => self.full_mtime(root),
            Err(_) => {
                self.dir = None;
                self.full_mtime(root)
            }
        }
    }

    fn full_mtime(&self, root: BorrowedFd<'_>) -> Result<SystemTime, ProbeFailure> {
        mtime_at_c(root, &self.path, &self.full)
    }

    /// One check through the cache: `Ok(age)` iff `now - mtime <= validity`, as [`check_at`].
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// let root = fileprobe::open_root("/").unwrap();
    /// let mut p = fileprobe::CachedPath::new("/no/such/probe").unwrap();
    /// let r = p.check(&root, Duration::from_secs(1), SystemTime::now());
    /// assert!(matches!(r, Err(fileprobe::ProbeFailure::Missing { .. })));
    /// ```
    pub fn check(
        &mut self,
        root: impl AsFd,
        validity: Duration,
        now: SystemTime,
    ) -> Result<Duration, ProbeFailure> {
        if let Some(age) = self.cached(validity, now) {
            return Ok(age);
        }
        let mtime = self.mtime(root)?;
        verdict(&self.path, mtime, validity, now)
    }

    /// The check from the cached mtime, when nothing has voided it and it gives a success
    /// (no syscall); `None` when [`CachedPath::check`] must ask the kernel.
    pub(crate) fn cached(&mut self, validity: Duration, now: SystemTime) -> Option<Duration> {
        let w = self.watched.as_ref()?;
        let (mtime, epoch) = w.mtime?;
        if self.uses >= REVALIDATE_EVERY
            || w.flag.get().load(Ordering::Acquire) != 0
            || w.watch.epoch() != epoch
        {
            return None;
        }
        let age = verdict(&self.path, mtime, validity, now).ok()?;
        self.uses += 1;
        w.watch.count_cached();
        Some(age)
    }
}

impl Drop for CachedPath {
    fn drop(&mut self) {
        let Some(w) = self.watched.take() else {
            return;
        };
        if let Some((_, start)) = &self.split
            && let Some(wd) = w.wd
            && let Some(tail) = self.full.as_bytes_with_nul().get(*start..)
            && let Ok(base) = CStr::from_bytes_with_nul(tail)
        {
            w.watch.unregister(wd, base, &w.flag);
        }
        w.watch.release_flag(w.flag);
    }
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
    verdict(path, mtime, validity, now)
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
