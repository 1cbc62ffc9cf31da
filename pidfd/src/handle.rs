//! [`PidFd`]: the process handle.

use crate::info::{self, Reply};
use crate::{Error, ExitStatus, ProcessIdentity};
use async_io::Async;
use rustix::event::{PollFd, PollFlags, poll};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal, WaitId, WaitIdOptions, WaitIdStatus};
use rustix::time::Timespec;
use std::io;
use std::sync::OnceLock;

/// A handle on one process that PID reuse cannot fool.
///
/// The handle is a Linux pidfd: it keeps referring to the process it was opened for, even after
/// that process exits and its PID is given to another, so signals sent through it never hit the
/// wrong process, and its exit can be awaited whether or not it is our child.
///
/// ```
/// use shimless_pidfd::{ExitStatus, PidFd};
/// let child = std::process::Command::new("sh").args(["-c", "exit 7"]).spawn()?;
/// let pidfd = PidFd::from_child(&child)?;
/// futures_lite::future::block_on(pidfd.exited())?; // any executor, or none
/// assert_eq!(pidfd.wait()?, ExitStatus::Exited(7));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: i32,
    /// The status `waitid` reaped, kept because the kernel gives it to a parent only once.
    reaped: OnceLock<ExitStatus>,
}

impl PidFd {
    /// Opens a handle on the process `pid` (a PID in the caller's PID namespace; it must be a
    /// thread-group leader, i.e. a process, not a thread).
    ///
    /// The process it names is fixed at this moment: if `pid` could have been reused between
    /// the moment you learned it and this call, check [`PidFd::identity`] against what you
    /// stored, or use [`PidFd::reopen`].
    ///
    /// ```
    /// let me = shimless_pidfd::PidFd::open(std::process::id() as i32)?;
    /// assert_eq!(me.pid(), std::process::id() as i32);
    /// assert!(matches!(shimless_pidfd::PidFd::open(0), Err(shimless_pidfd::Error::InvalidPid { pid: 0 })));
    /// # Ok::<(), shimless_pidfd::Error>(())
    /// ```
    pub fn open(pid: i32) -> Result<Self, Error> {
        // Checked first: rustix's `Pid::from_raw` asserts on negative values.
        if pid <= 0 {
            return Err(Error::InvalidPid { pid });
        }
        let raw = Pid::from_raw(pid).ok_or(Error::InvalidPid { pid })?;
        let fd = rustix::process::pidfd_open(raw, PidfdFlags::empty()).map_err(|e| match e {
            Errno::SRCH => Error::Gone { pid },
            e => Error::io("pidfd_open", pid, e),
        })?;
        Ok(PidFd {
            fd,
            pid,
            reaped: OnceLock::new(),
        })
    }

    /// Opens a handle on a child spawned with [`std::process::Command`].
    ///
    /// Reap the child through this handle ([`PidFd::wait`], [`PidFd::try_wait`]), not through
    /// `Child::wait`: the kernel hands a child's status to one waiter only.
    ///
    /// ```
    /// let child = std::process::Command::new("true").spawn()?;
    /// let pidfd = shimless_pidfd::PidFd::from_child(&child)?;
    /// assert!(pidfd.wait()?.success());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_child(child: &std::process::Child) -> Result<Self, Error> {
        let pid = i32::try_from(child.id()).map_err(|_| Error::InvalidPid { pid: -1 })?;
        Self::open(pid)
    }

    /// Opens a handle on the process that `identity` names, or fails with [`Error::Gone`] if
    /// that process no longer exists — in particular when its PID now belongs to another
    /// process.
    ///
    /// ```
    /// use shimless_pidfd::PidFd;
    /// let me = PidFd::open(std::process::id() as i32)?;
    /// let stored = me.identity()?;
    /// assert_eq!(PidFd::reopen(&stored)?.pid(), stored.pid);
    /// # Ok::<(), shimless_pidfd::Error>(())
    /// ```
    pub fn reopen(identity: &ProcessIdentity) -> Result<Self, Error> {
        let pidfd = Self::open(identity.pid)?;
        if pidfd.identity()?.start_time != identity.start_time {
            return Err(Error::Gone { pid: identity.pid });
        }
        Ok(pidfd)
    }

    /// The process's PID, as it was when the handle was opened.
    ///
    /// ```
    /// let me = shimless_pidfd::PidFd::open(std::process::id() as i32)?;
    /// assert_eq!(me.pid() as u32, std::process::id());
    /// # Ok::<(), shimless_pidfd::Error>(())
    /// ```
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The process's identity: its PID and start time, to store and later [`PidFd::reopen`].
    ///
    /// The start time is read from `/proc/<pid>/stat` while the handle is held, and the handle
    /// is checked afterwards to still refer to a process that owns that PID (running or not yet
    /// reaped), so the value read cannot belong to a process that reused the PID. Fails with
    /// [`Error::Gone`] once the process has been reaped.
    ///
    /// ```
    /// let me = shimless_pidfd::PidFd::open(std::process::id() as i32)?;
    /// let id = me.identity()?;
    /// assert_eq!(id.pid as u32, std::process::id());
    /// assert!(id.start_time > 0);
    /// # Ok::<(), shimless_pidfd::Error>(())
    /// ```
    pub fn identity(&self) -> Result<ProcessIdentity, Error> {
        let pid = self.pid;
        let start_time = crate::identity::start_time(pid)?;
        // A PID can only be reused once its owner has been reaped; if the process behind our
        // pidfd still holds its PID now, the stat we read above was its own.
        match crate::identity::fdinfo_pid(self.fd.as_raw_fd()) {
            Ok(Some(now)) if now == pid => Ok(ProcessIdentity { pid, start_time }),
            Ok(_) => Err(Error::Gone { pid }),
            Err(e) => Err(Error::io("read /proc/self/fdinfo", pid, e)),
        }
    }

    /// Sends `signal` to exactly this process.
    ///
    /// Fails with [`Error::Gone`] if the process has already exited (even if not yet reaped),
    /// never signalling a process that reused its PID.
    ///
    /// ```
    /// use shimless_pidfd::{ExitStatus, PidFd, Signal};
    /// let child = std::process::Command::new("sleep").arg("60").spawn()?;
    /// let pidfd = PidFd::from_child(&child)?;
    /// pidfd.send_signal(Signal::TERM)?;
    /// assert_eq!(pidfd.wait()?, ExitStatus::Signaled { signal: 15, core_dumped: false });
    /// assert!(matches!(pidfd.send_signal(Signal::TERM), Err(shimless_pidfd::Error::Gone { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_signal(&self, signal: Signal) -> Result<(), Error> {
        // The kernel accepts signals for a zombie and drops them; say plainly that it is gone.
        if self.has_exited() {
            return Err(Error::Gone { pid: self.pid });
        }
        rustix::process::pidfd_send_signal(&self.fd, signal).map_err(|e| match e {
            Errno::SRCH => Error::Gone { pid: self.pid },
            e => Error::io("pidfd_send_signal", self.pid, e),
        })
    }

    /// Whether the process has exited (all of its threads), whether or not it was reaped.
    /// Never blocks.
    ///
    /// ```
    /// let me = shimless_pidfd::PidFd::open(std::process::id() as i32)?;
    /// assert!(!me.has_exited());
    /// # Ok::<(), shimless_pidfd::Error>(())
    /// ```
    pub fn has_exited(&self) -> bool {
        is_readable(self.fd.as_fd())
    }

    /// Waits, blocking the thread, for the child to exit, reaps it and returns its status.
    ///
    /// The status is kept: later calls return it again. Fails with [`Error::NotChild`] if the
    /// process is not a child of this process (use [`PidFd::exited`] and
    /// [`PidFd::exit_info`] then).
    ///
    /// ```
    /// let child = std::process::Command::new("sh").args(["-c", "exit 3"]).spawn()?;
    /// let pidfd = shimless_pidfd::PidFd::from_child(&child)?;
    /// assert_eq!(pidfd.wait()?, shimless_pidfd::ExitStatus::Exited(3));
    /// assert_eq!(pidfd.wait()?, shimless_pidfd::ExitStatus::Exited(3));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait(&self) -> Result<ExitStatus, Error> {
        // A blocking waitid reports once the child exits; `None` would mean someone made the
        // pidfd non-blocking behind our back.
        self.waitid(WaitIdOptions::EXITED)?
            .ok_or_else(|| Error::io("waitid(P_PIDFD)", self.pid, Errno::AGAIN))
    }

    /// Reaps the child if it has exited and returns its status; `None` while it runs. Never
    /// blocks. Same errors as [`PidFd::wait`].
    ///
    /// ```
    /// let child = std::process::Command::new("sleep").arg("60").spawn()?;
    /// let pidfd = shimless_pidfd::PidFd::from_child(&child)?;
    /// assert_eq!(pidfd.try_wait()?, None);
    /// pidfd.send_signal(shimless_pidfd::Signal::KILL)?;
    /// pidfd.wait()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_wait(&self) -> Result<Option<ExitStatus>, Error> {
        self.waitid(WaitIdOptions::EXITED | WaitIdOptions::NOHANG)
    }

    fn waitid(&self, options: WaitIdOptions) -> Result<Option<ExitStatus>, Error> {
        if let Some(status) = self.reaped.get() {
            return Ok(Some(*status));
        }
        let status = loop {
            match rustix::process::waitid(WaitId::PidFd(self.fd.as_fd()), options) {
                Ok(status) => break status,
                Err(Errno::INTR) => continue,
                Err(Errno::CHILD) => return Err(Error::NotChild { pid: self.pid }),
                Err(e) => return Err(Error::io("waitid(P_PIDFD)", self.pid, e)),
            }
        };
        let Some(status) = status else {
            return Ok(None);
        };
        let status = status_from_waitid(&status)
            .ok_or_else(|| Error::io("waitid(P_PIDFD)", self.pid, Errno::PROTO))?;
        Ok(Some(*self.reaped.get_or_init(|| status)))
    }

    /// Resolves once the process has exited — child or not, reaped or not.
    ///
    /// The pidfd is registered with the [`async_io`] reactor while the future waits (async-io
    /// runs its reactor on a thread named `async-io`, started on first use, unless the program
    /// drives it itself with `async_io::block_on`), so the future works under any executor:
    /// smol, async-std, tokio, or `futures_lite::future::block_on`. Dropping the future
    /// deregisters the fd and leaves nothing behind.
    ///
    /// It only says *that* the process ended; get *how* from [`PidFd::wait`] (children) or
    /// [`PidFd::exit_info`] (others).
    ///
    /// ```
    /// let child = std::process::Command::new("true").spawn()?;
    /// let pidfd = shimless_pidfd::PidFd::from_child(&child)?;
    /// futures_lite::future::block_on(pidfd.exited())?;
    /// assert!(pidfd.has_exited());
    /// # pidfd.wait()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn exited(&self) -> Result<(), Error> {
        if self.has_exited() {
            return Ok(());
        }
        let pid = self.pid;
        let polled = match Async::new_nonblocking(self.fd.as_fd()) {
            Ok(watch) => readable(&watch).await,
            // Another `exited()` future of this handle has the fd registered already (epoll takes
            // an fd once): watch a duplicate of it instead.
            Err(e) if e.raw_os_error() == Some(Errno::EXIST.raw_os_error()) => {
                let dup = rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)
                    .map_err(|e| Error::io("dup pidfd", pid, e))?;
                let watch = Async::new_nonblocking(dup)
                    .map_err(|e| Error::io("register pidfd with async-io", pid, e))?;
                readable(&watch).await
            }
            Err(e) => return Err(Error::io("register pidfd with async-io", pid, e)),
        };
        polled.map_err(|e| Error::io("poll pidfd", pid, e))
    }

    /// The exit status of a process that is not our child, from the kernel
    /// (`PIDFD_GET_INFO` with `PIDFD_INFO_EXIT`, Linux 6.15+).
    ///
    /// The kernel keeps the status for as long as a pidfd to the process is open, but only
    /// records it when the process is *reaped* by its parent; until then this fails with
    /// [`Error::NotYetReaped`] (after the reap the pidfd polls `EPOLLHUP`). On kernels without
    /// the feature it fails with [`Error::Unsupported`]; the answer is detected on first use and
    /// remembered. For a child, [`PidFd::wait`] first, then this gives the same status.
    ///
    /// ```no_run
    /// # let pid = 1234;
    /// let pidfd = shimless_pidfd::PidFd::open(pid)?; // some process another program started
    /// futures_lite::future::block_on(pidfd.exited())?;
    /// match pidfd.exit_info() {
    ///     Ok(status) => println!("{pid} {status}"),
    ///     Err(shimless_pidfd::Error::NotYetReaped { .. }) => println!("{pid} exited; status not known yet"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok::<(), shimless_pidfd::Error>(())
    /// ```
    pub fn exit_info(&self) -> Result<ExitStatus, Error> {
        let pid = self.pid;
        match info::exit_status(&self.fd).map_err(|e| Error::io("ioctl(PIDFD_GET_INFO)", pid, e))? {
            Reply::Exited(raw) => ExitStatus::from_wait_status(raw)
                .ok_or_else(|| Error::io("ioctl(PIDFD_GET_INFO)", pid, Errno::PROTO)),
            Reply::NotReaped => Err(Error::NotYetReaped { pid }),
            Reply::Unsupported => Err(Error::Unsupported {
                feature: "PIDFD_INFO_EXIT",
                min_kernel: "6.15",
            }),
        }
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<PidFd> for OwnedFd {
    fn from(pidfd: PidFd) -> OwnedFd {
        pidfd.fd
    }
}

fn is_readable(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
}

/// Waits until the reactor reports the pidfd readable and a direct poll agrees (the reactor may
/// wake us spuriously).
async fn readable<T: AsFd>(watch: &Async<T>) -> io::Result<()> {
    loop {
        watch.readable().await?;
        if is_readable(watch.get_ref().as_fd()) {
            return Ok(());
        }
    }
}

fn status_from_waitid(status: &WaitIdStatus) -> Option<ExitStatus> {
    if status.exited() {
        return Some(ExitStatus::Exited(status.exit_status()? as u8));
    }
    if status.killed() || status.dumped() {
        let signal = u8::try_from(status.terminating_signal()?).ok()?;
        return Some(ExitStatus::Signaled {
            signal,
            core_dumped: status.dumped(),
        });
    }
    None
}
