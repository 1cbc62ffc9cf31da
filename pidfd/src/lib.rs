//! Process handles that PID reuse cannot fool, with exit statuses and async exit notification
//! that work under any executor.
//!
//! A PID is only a number, and Linux reuses numbers: a supervisor that stores `1234` and later
//! signals or waits for `1234` may hit a stranger. A *pidfd* (Linux 5.3+; this crate needs 5.10)
//! is a file descriptor that refers to one process for as long as it is open. This crate wraps
//! it as [`PidFd`] and gives:
//!
//! - [`PidFd::send_signal`]: `pidfd_send_signal(2)`, hits exactly that process or fails with
//!   [`Error::Gone`];
//! - [`PidFd::wait`] / [`PidFd::try_wait`]: `waitid(P_PIDFD)` for children, returning an
//!   [`ExitStatus`] (`Exited(code)` or `Signaled { signal, core_dumped }`, with
//!   [`ExitStatus::code_for_containerd`] giving the 128+signal convention);
//! - [`PidFd::exited`]: a future that resolves when the process exits, child or not;
//! - [`PidFd::exit_info`]: the exit status of a process that is *not* our child, which Linux
//!   6.15+ keeps for holders of a pidfd (`PIDFD_GET_INFO` with `PIDFD_INFO_EXIT`);
//! - [`ProcessIdentity`]: PID + start time, serializable, so a handle can be stored as data and
//!   [reopened](PidFd::reopen) after a restart with a guarantee that it is the same process;
//!   [`start_time`] reads the start time of a PID without a handle;
//! - [`ExitStatus::from_wait_status`]: the one decoder of raw wait statuses in the workspace
//!   (`waitid`, `PIDFD_INFO_EXIT` and exitwatch's eBPF records all go through it).
//!
//! # How it works underneath
//!
//! A pidfd polls readable once every thread of its process has exited. [`PidFd::exited`]
//! registers the fd with [`async_io`]'s reactor (epoll), the way `async-process` watches its
//! children; async-io drives that reactor on a thread named `async-io`, spawned the first time
//! it is needed (or from within `async_io::block_on`). The futures are plain futures: they run
//! under smol, async-std, tokio or `futures_lite::future::block_on`, and no thread or task is
//! spawned per process. System calls go through `rustix`; the one ioctl rustix lacks
//! (`PIDFD_GET_INFO`) lives in a small module with the crate's only `unsafe` block.
//!
//! # Caveats
//!
//! - The kernel hands a child's exit status to one waiter: reap children through [`PidFd`],
//!   not also through `std::process::Child::wait` or a `SIGCHLD` handler calling `waitpid(-1)`.
//! - A non-child's status exists only after its parent reaps it. An orphan whose new parent
//!   never reaps (a PID 1 that does not reap, as in some containers and VMs) stays a zombie,
//!   and [`PidFd::exit_info`] says [`Error::NotYetReaped`]; make your supervisor a child
//!   subreaper (`PR_SET_CHILD_SUBREAPER`) so that its descendants' orphans become its children.
//! - PIDs are those of the caller's PID namespace.
//!
//! # Example
//!
//! ```
//! use shimless_pidfd::{ExitStatus, PidFd, Signal};
//!
//! let child = std::process::Command::new("sleep").arg("60").spawn()?;
//! let pidfd = PidFd::from_child(&child)?;
//! let stored = pidfd.identity()?; // persist this, reopen it after a restart
//!
//! pidfd.send_signal(Signal::TERM)?;
//! futures_lite::future::block_on(pidfd.exited())?;
//! let status = pidfd.wait()?;
//! assert_eq!(status, ExitStatus::Signaled { signal: 15, core_dumped: false });
//! assert_eq!(status.code_for_containerd(), 143);
//!
//! // The process is gone: its identity no longer opens, whoever owns the PID now.
//! assert!(matches!(PidFd::reopen(&stored), Err(shimless_pidfd::Error::Gone { .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod handle;
mod identity;
mod info;
mod status;

pub use error::Error;
pub use handle::PidFd;
pub use identity::{ProcessIdentity, start_time};
pub use status::ExitStatus;

/// A signal to send with [`PidFd::send_signal`] (rustix's type: `Signal::TERM`, `Signal::KILL`,
/// ...).
///
/// ```
/// assert_eq!(shimless_pidfd::Signal::KILL.as_raw(), 9);
/// ```
pub use rustix::process::Signal;
