//! [`StateLock`]: one daemon per state directory.

use rustix::fd::OwnedFd;
use rustix::fs::{FlockOperation, Mode, OFlags};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

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

/// An exclusive lock on the state directory, held until dropped or until the process dies.
///
/// The lock is a POSIX record lock (`fcntl(F_SETLK)`) on `<dir>.lock`, beside the directory.
/// Such a lock belongs to the process, not to the open file: a child forked to run the runtime
/// does not share it, even in the moment between its fork and its `exec` when it still has a
/// copy of the descriptor. (The `flock` used before was shared with that child: a daemon
/// killed with `kill -9` while it was spawning a runtime left the lock held until the child's
/// `exec` closed its copy, and the next daemon, started at once, was refused.) The kernel drops
/// the lock when the process's descriptors are closed on its death, before its parent can reap
/// it. Nothing else in the daemon opens the lock file, so no other `close` releases it early.
///
/// Locks of one process do not conflict with each other in the kernel; a second `acquire` of
/// the same directory in the same process is refused by a table of the directories this
/// process holds.
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
    /// The lock file, as this process's table knows it.
    path: PathBuf,
    _fd: OwnedFd,
}

/// The lock files this process holds (the kernel would let it lock one twice).
static HELD: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// Runs `f` on this process's table of held lock files.
fn held<T>(f: impl FnOnce(&mut HashSet<PathBuf>) -> T) -> T {
    let mut table = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    f(table.get_or_insert_with(HashSet::new))
}

impl StateLock {
    /// Creates `dir` (mode 0700) if needed and locks it, without waiting.
    pub fn acquire(dir: &Path) -> Result<StateLock, LockError> {
        let io = |source: std::io::Error| LockError::Io {
            dir: dir.to_owned(),
            source,
        };
        super::create_private_dir(dir).map_err(io)?;
        let path = lock_path(&std::fs::canonicalize(dir).map_err(io)?);
        // Checked before the file is opened: closing a second descriptor of the lock file
        // would release this process's lock.
        if !held(|table| table.insert(path.clone())) {
            return Err(LockError::Held {
                dir: dir.to_owned(),
            });
        }
        let locked = lock_file(&path);
        if locked.is_err() {
            held(|table| table.remove(&path));
        }
        match locked {
            Ok(fd) => Ok(StateLock { path, _fd: fd }),
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::ACCESS) => Err(LockError::Held {
                dir: dir.to_owned(),
            }),
            Err(e) => Err(io(e.into())),
        }
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        held(|table| table.remove(&self.path));
    }
}

/// The lock file of the state directory `dir`: `<dir>.lock`, beside it (inside, recovery
/// would take it for a stray entry).
fn lock_path(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Opens (mode 0600, close-on-exec) and write-locks `path`, without waiting.
fn lock_file(path: &Path) -> Result<OwnedFd, rustix::io::Errno> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(super::FILE_MODE),
    )?;
    // `fcntl_lock` is `F_SETLK` on the whole file: a process-associated lock.
    rustix::fs::fcntl_lock(&fd, FlockOperation::NonBlockingLockExclusive)?;
    Ok(fd)
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
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&parent.path().join("a/state.lock")), 0o600);
        let err = StateLock::acquire(&dir).unwrap_err().to_string();
        assert!(
            err.contains("another shimlessd") && err.contains("a/state"),
            "{err}"
        );
    }

    #[test]
    fn a_child_between_its_fork_and_its_exec_does_not_hold_the_lock() {
        use std::os::unix::process::CommandExt;
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("state");
        let lock = StateLock::acquire(&dir).unwrap();
        let (mut forked, said) = std::io::pipe().unwrap();
        let spawner = std::thread::spawn(move || {
            let mut cmd = std::process::Command::new("true");
            // SAFETY: between fork and exec the child makes two system calls (`write`,
            // `nanosleep`) on memory allocated before the fork; nothing allocates.
            unsafe {
                cmd.pre_exec(move || {
                    rustix::io::write(&said, b"x")?;
                    let pause = rustix::time::Timespec {
                        tv_sec: 2,
                        tv_nsec: 0,
                    };
                    let _ = rustix::thread::nanosleep(&pause);
                    Ok(())
                });
            }
            cmd.status().unwrap()
        });
        // The child is forked, holds a copy of every descriptor and has not exec'd: what a
        // daemon killed while it spawned a runtime leaves behind for a moment.
        let mut byte = [0u8];
        std::io::Read::read_exact(&mut forked, &mut byte).unwrap();
        drop(lock);
        let again = StateLock::acquire(&dir);
        assert!(again.is_ok(), "{:?}", again.err());
        assert!(spawner.join().unwrap().success());
    }
}
