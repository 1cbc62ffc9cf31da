//! Change tracking with inotify, so that a check of an unchanged file needs no `statx`.
//!
//! A [`ChangeWatch`] owns one inotify instance. Each [`crate::CachedPath`] made with
//! [`crate::CachedPath::with_watch`] adds a watch on its cached parent directory (the inode the
//! in-root resolution found, through `/proc/self/fd/<dirfd>`, so the watch is on the directory
//! inside the container and never on a host path) and registers its basename. After a `statx`
//! that may be cached (see below), the path keeps the mtime; later checks compute the verdict
//! from that mtime and the current time without a syscall, until an event invalidates it:
//!
//! - an event naming the file: `IN_ATTRIB` (touch, `utimensat`, chmod), `IN_MODIFY` (write,
//!   truncate), `IN_CREATE`, `IN_DELETE`, `IN_MOVED_FROM`, `IN_MOVED_TO` (rename-over, delete +
//!   recreate);
//! - an event on the directory itself (`IN_ATTRIB`, `IN_DELETE_SELF`, `IN_MOVE_SELF`,
//!   `IN_UNMOUNT`, `IN_IGNORED`): every file of that directory, and the cached directory is
//!   resolved again;
//! - `IN_Q_OVERFLOW` (events were lost): every cached mtime of this watch.
//!
//! `IN_CLOSE_WRITE` is not watched: a write already gave `IN_MODIFY` when it changed the mtime,
//! and a close changes nothing a check reads.
//!
//! Events are read by [`ChangeWatch::drain`], non-blocking; [`crate::Prober`] drains on its own
//! thread at each tick, before that tick's checks, so a change made before a tick is seen by
//! its checks.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;

/// Flag bit: the file may have changed; the next check must `statx`.
pub(crate) const FILE_CHANGED: u8 = 1;
/// Flag bit: the directory itself changed (moved, deleted, unmounted, its watch gone): resolve
/// it again.
pub(crate) const DIR_CHANGED: u8 = 2;

/// File systems whose every change goes through this kernel's VFS, so inotify sees it. Anything
/// else (NFS, CIFS, FUSE and virtiofs, 9p, Ceph, procfs, …) can change without an event here and
/// is checked with a `statx` every time.
const LOCAL_FS: [u32; 9] = [
    0xEF53,      // ext2/3/4
    0x5846_5342, // xfs
    0x9123_683E, // btrfs
    0x0102_1994, // tmpfs
    0x8584_58f6, // ramfs
    0x794c_7630, // overlayfs
    0xF2F5_2010, // f2fs
    0x2fc1_2fc1, // zfs
    0xca45_1a4e, // bcachefs
];

fn is_local(fs_type: i128) -> bool {
    let t = fs_type & 0xffff_ffff;
    LOCAL_FS.iter().any(|&m| i128::from(m) == t)
}

/// Counters of a [`ChangeWatch`].
///
/// ```
/// let s = fileprobe::ChangeWatch::disabled().stats();
/// assert_eq!((s.statx_calls, s.cached_checks, s.watches), (0, 0, 0));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchStats {
    /// Checks that asked the kernel: one `statx` through the cached directory, or the full
    /// `openat2` + `statx` resolution.
    pub statx_calls: u64,
    /// Checks answered from a cached mtime, without a syscall.
    pub cached_checks: u64,
    /// Directories watched now (one inotify watch each).
    pub watches: u64,
    /// Times a directory could not be watched (not a local file system, no watch left, the
    /// watch limit of [`ChangeWatch::with_limit`], or an `inotify_add_watch` error); its probes
    /// `statx` on every check.
    pub unwatched: u64,
    /// `IN_Q_OVERFLOW` events seen (each voids every cached mtime).
    pub overflows: u64,
}

/// Flags are bytes in shared chunks of this many, so that the flags of many paths sit together
/// in memory: a check reads its path's flag, and a flag per allocation meant a cache miss per
/// check.
const FLAG_CHUNK: usize = 4096;

/// A path's change flag: one byte in a chunk shared with other paths of the same watch.
#[derive(Debug, Clone)]
pub(crate) struct Flag {
    chunk: Arc<[AtomicU8]>,
    index: usize,
}

impl Flag {
    pub(crate) fn get(&self) -> &AtomicU8 {
        // `index < FLAG_CHUNK` by construction; a bad index would panic here, never read
        // another byte.
        &self.chunk[self.index]
    }

    fn same(&self, other: &Flag) -> bool {
        Arc::ptr_eq(&self.chunk, &other.chunk) && self.index == other.index
    }
}

#[derive(Debug, Default)]
struct Flags {
    /// Flags handed back by dropped paths.
    free: Vec<Flag>,
    /// The newest chunk and how many of its flags have been handed out.
    chunk: Option<(Arc<[AtomicU8]>, usize)>,
}

#[derive(Debug, Default)]
struct Dir {
    /// Basename → the flags of the paths registered under it.
    names: HashMap<Box<[u8]>, Vec<Flag>>,
}

#[derive(Debug)]
struct State {
    dirs: HashMap<i32, Dir>,
    buf: Vec<MaybeUninit<u8>>,
    unwatched: u64,
    overflows: u64,
}

/// One inotify instance shared by many [`crate::CachedPath`]s (a [`crate::Prober`] has one):
/// lets a check of an unchanged file skip its `statx`.
///
/// Falls back to a `statx` per check, per directory, whenever a watch cannot be relied on: the
/// instance could not be created (`EMFILE`, `max_user_instances`), [`ChangeWatch::disabled`],
/// a directory on a file system other than ext2/3/4, xfs, btrfs, tmpfs, ramfs, overlayfs,
/// f2fs, zfs or bcachefs (NFS, FUSE, CIFS, 9p… can change without a local event), an
/// `inotify_add_watch` error (`ENOSPC` once `fs.inotify.max_user_watches` is used up, `EACCES`),
/// or more directories than [`ChangeWatch::with_limit`] allows.
///
/// ```
/// use std::{sync::Arc, time::{Duration, SystemTime}};
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("probe"), b"").unwrap();
/// let root = fileprobe::open_root(dir.path().to_str().unwrap()).unwrap();
/// let watch = Arc::new(fileprobe::ChangeWatch::new());
/// let mut p = fileprobe::CachedPath::with_watch("/probe", watch.clone()).unwrap();
/// for _ in 0..10 {
///     watch.drain();
///     assert!(p.check(&root, Duration::from_secs(30), SystemTime::now()).is_ok());
/// }
/// // On a local file system (a tmpfs or ext4 /tmp): one statx, nine answers from the cache.
/// let s = watch.stats();
/// assert_eq!((s.statx_calls, s.cached_checks), (1, 9));
/// ```
#[derive(Debug)]
pub struct ChangeWatch {
    inotify: Option<OwnedFd>,
    limit: usize,
    state: Mutex<State>,
    /// Bumped on `IN_Q_OVERFLOW`: a cached mtime read under an older epoch is void.
    epoch: AtomicU64,
    statx_calls: AtomicU64,
    cached_checks: AtomicU64,
    flags: Mutex<Flags>,
}

impl Default for ChangeWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl ChangeWatch {
    /// A watch with its own inotify instance; if none can be created, a disabled one (every
    /// check a `statx`, see [`ChangeWatch::is_enabled`]).
    ///
    /// ```
    /// let w = fileprobe::ChangeWatch::new();
    /// assert_eq!(w.stats().watches, 0);
    /// ```
    pub fn new() -> Self {
        let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).ok();
        Self::from_fd(fd)
    }

    /// A watch that never watches: every check is a `statx` (the fallback, for comparison and
    /// for file systems the caller knows inotify cannot see).
    ///
    /// ```
    /// assert!(!fileprobe::ChangeWatch::disabled().is_enabled());
    /// ```
    pub fn disabled() -> Self {
        Self::from_fd(None)
    }

    /// At most `max_dirs` watched directories; paths in further directories `statx` on every
    /// check. (The kernel's own limit, `fs.inotify.max_user_watches`, is per user and shared
    /// with every other inotify user; this keeps a prober below it.)
    ///
    /// ```
    /// let w = fileprobe::ChangeWatch::new().with_limit(1000);
    /// ```
    pub fn with_limit(mut self, max_dirs: usize) -> Self {
        self.limit = max_dirs;
        self
    }

    fn from_fd(inotify: Option<OwnedFd>) -> Self {
        ChangeWatch {
            inotify,
            limit: usize::MAX,
            state: Mutex::new(State {
                dirs: HashMap::new(),
                buf: Vec::new(),
                unwatched: 0,
                overflows: 0,
            }),
            epoch: AtomicU64::new(0),
            statx_calls: AtomicU64::new(0),
            cached_checks: AtomicU64::new(0),
            flags: Mutex::new(Flags::default()),
        }
    }

    /// Whether this watch has an inotify instance.
    ///
    /// ```
    /// assert!(!fileprobe::ChangeWatch::disabled().is_enabled());
    /// ```
    pub fn is_enabled(&self) -> bool {
        self.inotify.is_some()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Updates under this lock are whole map inserts/removes and flag stores.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counters so far.
    ///
    /// ```
    /// assert_eq!(fileprobe::ChangeWatch::new().stats().cached_checks, 0);
    /// ```
    pub fn stats(&self) -> WatchStats {
        let s = self.lock();
        WatchStats {
            statx_calls: self.statx_calls.load(Ordering::Relaxed),
            cached_checks: self.cached_checks.load(Ordering::Relaxed),
            watches: s.dirs.len() as u64,
            unwatched: s.unwatched,
            overflows: s.overflows,
        }
    }

    /// Reads every pending inotify event without blocking and invalidates the cached mtimes
    /// they concern. Call it before checks; a change made before the call is seen by every
    /// check after it.
    ///
    /// ```
    /// fileprobe::ChangeWatch::new().drain(); // nothing pending: returns at once
    /// ```
    pub fn drain(&self) {
        let Some(fd) = &self.inotify else {
            return;
        };
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.buf.is_empty() {
            // Room for many events per read(2) (each is 16 bytes plus its padded name).
            state.buf.resize(16 * 1024, MaybeUninit::uninit());
        }
        let mut reader = inotify::Reader::new(fd, &mut state.buf);
        loop {
            let event = match reader.next() {
                Ok(e) => e,
                Err(Errno::INTR) => continue,
                // EAGAIN: drained. Anything else: treat as lost events.
                Err(Errno::AGAIN) => break,
                Err(_) => {
                    self.epoch.fetch_add(1, Ordering::AcqRel);
                    state.overflows += 1;
                    break;
                }
            };
            apply_event(
                &mut state.dirs,
                &mut state.overflows,
                &self.epoch,
                event.wd(),
                event.events(),
                event.file_name(),
            );
        }
    }

    /// A cleared flag for a new path.
    pub(crate) fn new_flag(&self) -> Flag {
        let mut f = self.flags.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(flag) = f.free.pop() {
            flag.get().store(0, Ordering::Release);
            return flag;
        }
        match &mut f.chunk {
            Some((chunk, used)) if *used < FLAG_CHUNK => {
                let flag = Flag {
                    chunk: chunk.clone(),
                    index: *used,
                };
                *used += 1;
                flag
            }
            _ => {
                let chunk: Arc<[AtomicU8]> = (0..FLAG_CHUNK).map(|_| AtomicU8::new(0)).collect();
                f.chunk = Some((chunk.clone(), 1));
                Flag { chunk, index: 0 }
            }
        }
    }

    /// Takes back the flag of a dropped path.
    pub(crate) fn release_flag(&self, flag: Flag) {
        self.flags
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .free
            .push(flag);
    }

    /// Whether a mtime read at `epoch` may still be used.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub(crate) fn count_statx(&self) {
        self.statx_calls.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_cached(&self) {
        self.cached_checks.fetch_add(1, Ordering::Relaxed);
    }

    /// Watches `dir` (an in-root directory fd) and registers `flag` under `base` there; moves
    /// the registration from `prev` if it was elsewhere. `None` when the directory cannot be
    /// watched (the caller then `statx`es every time).
    pub(crate) fn watch(
        &self,
        dir: BorrowedFd<'_>,
        base: &CStr,
        flag: &Flag,
        prev: Option<i32>,
    ) -> Option<i32> {
        let wd = self.add_watch(dir);
        let mut state = self.lock();
        if let Some(p) = prev
            && Some(p) != wd
        {
            unregister(&mut state, self.inotify.as_ref(), p, base, flag);
        }
        let Some(wd) = wd else {
            state.unwatched += 1;
            return None;
        };
        if !state.dirs.contains_key(&wd) && state.dirs.len() >= self.limit {
            state.unwatched += 1;
            drop(state);
            if let Some(fd) = &self.inotify {
                let _ = inotify::remove_watch(fd, wd);
            }
            return None;
        }
        let names = &mut state.dirs.entry(wd).or_default().names;
        let flags = names.entry(base.to_bytes().into()).or_default();
        if !flags.iter().any(|f| f.same(flag)) {
            flags.push(flag.clone());
        }
        Some(wd)
    }

    /// `inotify_add_watch` on the directory behind `dir`, if its file system is one whose
    /// changes all go through this kernel.
    fn add_watch(&self, dir: BorrowedFd<'_>) -> Option<i32> {
        let fd = self.inotify.as_ref()?;
        let fs = rustix::fs::fstatfs(dir).ok()?;
        if !is_local(i128::from(fs.f_type)) {
            return None;
        }
        // The magic link leads to the very inode the in-root resolution found.
        let path = CString::new(format!("/proc/self/fd/{}", dir.as_raw_fd())).ok()?;
        let mask = WatchFlags::ATTRIB
            | WatchFlags::MODIFY
            | WatchFlags::CREATE
            | WatchFlags::DELETE
            | WatchFlags::MOVED_FROM
            | WatchFlags::MOVED_TO
            | WatchFlags::DELETE_SELF
            | WatchFlags::MOVE_SELF
            | WatchFlags::ONLYDIR;
        inotify::add_watch(fd, path.as_c_str(), mask).ok()
    }

    /// Drops the registration of `flag` under `base` in watch `wd` (removing the watch when it
    /// was the last one).
    pub(crate) fn unregister(&self, wd: i32, base: &CStr, flag: &Flag) {
        let mut state = self.lock();
        unregister(&mut state, self.inotify.as_ref(), wd, base, flag);
    }

    /// Feeds one event as if the kernel had sent it (unit tests of the invalidation paths).
    #[cfg(test)]
    pub(crate) fn inject(&self, wd: i32, events: ReadFlags, name: Option<&CStr>) {
        let mut guard = self.lock();
        let state = &mut *guard;
        apply_event(
            &mut state.dirs,
            &mut state.overflows,
            &self.epoch,
            wd,
            events,
            name,
        );
    }
}

fn unregister(state: &mut State, inotify: Option<&OwnedFd>, wd: i32, base: &CStr, flag: &Flag) {
    let Some(dir) = state.dirs.get_mut(&wd) else {
        return;
    };
    if let Some(flags) = dir.names.get_mut(base.to_bytes()) {
        flags.retain(|f| !f.same(flag));
        if flags.is_empty() {
            dir.names.remove(base.to_bytes());
        }
    }
    if dir.names.is_empty() {
        state.dirs.remove(&wd);
        if let Some(fd) = inotify {
            let _ = inotify::remove_watch(fd, wd);
        }
    }
}

fn apply_event(
    dirs: &mut HashMap<i32, Dir>,
    overflows: &mut u64,
    epoch: &AtomicU64,
    wd: i32,
    events: ReadFlags,
    name: Option<&CStr>,
) {
    if events.contains(ReadFlags::QUEUE_OVERFLOW) {
        *overflows += 1;
        epoch.fetch_add(1, Ordering::AcqRel);
        return;
    }
    let Some(dir) = dirs.get_mut(&wd) else {
        return;
    };
    match name {
        // An event about an entry of the directory.
        Some(name) if !name.is_empty() => {
            if let Some(flags) = dir.names.get(name.to_bytes()) {
                for f in flags {
                    f.get().fetch_or(FILE_CHANGED, Ordering::AcqRel);
                }
            }
        }
        // About the directory itself: everything in it, and resolve it again.
        _ => {
            for f in dir.names.values().flatten() {
                f.get()
                    .fetch_or(FILE_CHANGED | DIR_CHANGED, Ordering::AcqRel);
            }
            if events.contains(ReadFlags::IGNORED) {
                dirs.remove(&wd);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CachedPath;
    use std::time::{Duration, SystemTime};

    /// A watched path with a cached fresh mtime: (dir, root, watch, path, now).
    fn cached() -> (
        tempfile::TempDir,
        OwnedFd,
        Arc<ChangeWatch>,
        CachedPath,
        SystemTime,
    ) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("probe"), b"").unwrap();
        let root = crate::open_root(dir.path().to_str().unwrap()).unwrap();
        let watch = Arc::new(ChangeWatch::new());
        let mut p = CachedPath::with_watch("/probe", watch.clone()).unwrap();
        let now = SystemTime::now() + Duration::from_secs(5);
        assert!(p.check(&root, Duration::from_secs(30), now).is_ok());
        assert!(p.is_watched());
        assert!(p.check(&root, Duration::from_secs(30), now).is_ok());
        assert_eq!(
            (watch.stats().statx_calls, watch.stats().cached_checks),
            (1, 1)
        );
        (dir, root, watch, p, now)
    }

    fn wd_of(p: &CachedPath) -> i32 {
        p.wd().unwrap()
    }

    #[test]
    fn a_queue_overflow_voids_every_cached_mtime() {
        let (_dir, root, watch, mut p, now) = cached();
        watch.inject(-1, ReadFlags::QUEUE_OVERFLOW, None);
        assert!(p.check(&root, Duration::from_secs(30), now).is_ok());
        let s = watch.stats();
        assert_eq!((s.statx_calls, s.cached_checks, s.overflows), (2, 1, 1));
        // Read again after the overflow: cached again.
        assert!(p.check(&root, Duration::from_secs(30), now).is_ok());
        assert_eq!(watch.stats().cached_checks, 2);
    }

    #[test]
    fn an_ignored_watch_voids_its_files_and_the_directory_is_watched_again() {
        let (_dir, root, watch, mut p, now) = cached();
        let wd = wd_of(&p);
        watch.inject(wd, ReadFlags::IGNORED, None);
        assert_eq!(watch.stats().watches, 0);
        assert!(p.check(&root, Duration::from_secs(30), now).is_ok());
        let s = watch.stats();
        assert_eq!((s.statx_calls, s.watches), (2, 1));
        assert!(p.is_watched());
    }

    #[test]
    fn an_event_for_another_name_keeps_the_cache_and_one_for_this_name_voids_it() {
        let (_dir, root, watch, mut p, now) = cached();
        let wd = wd_of(&p);
        watch.inject(wd, ReadFlags::ATTRIB, Some(c"other"));
        assert!(p.check(&root, Duration::from_secs(30), now).is_ok());
        assert_eq!(watch.stats().statx_calls, 1);
        watch.inject(wd, ReadFlags::ATTRIB, Some(c"probe"));
        assert!(p.check(&root, Duration::from_secs(30), now).is_ok());
        assert_eq!(watch.stats().statx_calls, 2);
    }

    #[test]
    fn flags_are_packed_and_a_released_flag_comes_back_cleared() {
        let w = ChangeWatch::disabled();
        let a = w.new_flag();
        let b = w.new_flag();
        assert!(Arc::ptr_eq(&a.chunk, &b.chunk));
        assert_eq!((a.index, b.index), (0, 1));
        a.get().store(FILE_CHANGED | DIR_CHANGED, Ordering::Release);
        w.release_flag(a.clone());
        let c = w.new_flag();
        assert!(c.same(&a));
        assert_eq!(c.get().load(Ordering::Acquire), 0);
        let more: Vec<Flag> = (0..FLAG_CHUNK).map(|_| w.new_flag()).collect();
        assert!(!Arc::ptr_eq(&more[FLAG_CHUNK - 1].chunk, &a.chunk));
    }

    #[test]
    fn dropping_the_last_path_of_a_directory_removes_its_watch() {
        let (_dir, _root, watch, p, _now) = cached();
        assert_eq!(watch.stats().watches, 1);
        drop(p);
        assert_eq!(watch.stats().watches, 0);
    }

    #[test]
    fn the_file_systems_trusted_are_local_ones() {
        assert!(is_local(0xEF53));
        assert!(is_local(0x0102_1994));
        assert!(is_local(0x794c_7630));
        assert!(!is_local(0x6969)); // NFS
        assert!(!is_local(0x6573_5546)); // FUSE
        assert!(!is_local(0x9fa0)); // procfs
    }
}
