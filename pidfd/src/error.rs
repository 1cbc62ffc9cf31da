//! The one error type of the crate.

use std::io;

/// What went wrong with a process handle.
///
/// Every variant names the process (by PID in the caller's PID namespace) and says what to do.
///
/// ```
/// use shimless_pidfd::Error;
/// let e = Error::Gone { pid: 4242 };
/// assert_eq!(e.to_string(), "process 4242 is gone: it exited, or its PID now names another process");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The process has exited (or was reaped), or its PID now belongs to another process.
    #[error("process {pid} is gone: it exited, or its PID now names another process")]
    Gone {
        /// The PID that was asked for.
        pid: i32,
    },
    /// `wait`/`try_wait` was called on a process that is not a child of this process (or was
    /// already reaped by someone else). Use [`PidFd::exited`](crate::PidFd::exited) and
    /// [`PidFd::exit_info`](crate::PidFd::exit_info) for non-children.
    #[error(
        "process {pid} is not a child of this process (or was reaped elsewhere): \
         use exited() and exit_info() for non-children"
    )]
    NotChild {
        /// The PID that was waited for.
        pid: i32,
    },
    /// The process has exited but its parent has not reaped it yet, so the kernel has no exit
    /// status to give a non-parent. Wait for the parent to reap it, or become its subreaper.
    #[error("process {pid} has not been reaped by its parent yet: no exit status is available")]
    NotYetReaped {
        /// The PID whose status was asked for.
        pid: i32,
    },
    /// The running kernel lacks a feature this call needs.
    #[error("{feature} is not supported by this kernel (needs Linux {min_kernel} or newer)")]
    Unsupported {
        /// The kernel feature, e.g. `PIDFD_INFO_EXIT`.
        feature: &'static str,
        /// The first kernel version that has it, e.g. `6.15`.
        min_kernel: &'static str,
    },
    /// The PID is not a valid process id (it must be greater than zero).
    #[error("{pid} is not a valid process id: it must be greater than zero")]
    InvalidPid {
        /// The rejected value.
        pid: i32,
    },
    /// A system call failed for another reason.
    #[error("{op} on process {pid} failed: {source}")]
    Io {
        /// The operation, e.g. `pidfd_open` or `pidfd_send_signal`.
        op: &'static str,
        /// The process it was about.
        pid: i32,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, pid: i32, source: impl Into<io::Error>) -> Self {
        Error::Io {
            op,
            pid,
            source: source.into(),
        }
    }
}
