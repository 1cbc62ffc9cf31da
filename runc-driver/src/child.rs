//! The runtime process, awaited on a pidfd registered with async-io: one readiness event when
//! it exits, then `waitid(P_PIDFD)` reaps it. No reaper thread, no signal handler.
//!
//! (The workspace's `pidfd` crate does this and more; this crate keeps its own few lines so
//! that it can be packaged and published on its own.)

use async_io::Async;
use rustix::fd::{AsFd, OwnedFd};
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, WaitId, WaitIdOptions, WaitOptions};
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// A spawned runtime that this process must reap.
#[derive(Debug)]
pub(crate) struct Runtime {
    pid: Pid,
    pidfd: OwnedFd,
}

impl Runtime {
    /// Opens a pidfd on a child just spawned (and not yet reaped, so its PID is still its own).
    pub(crate) fn open(child: &std::process::Child) -> io::Result<Self> {
        let pid = Pid::from_child(child);
        let pidfd = rustix::process::pidfd_open(pid, PidfdFlags::empty())?;
        Ok(Runtime { pid, pidfd })
    }

    /// The PID, which is also the runtime's process group.
    pub(crate) fn pid(&self) -> Pid {
        self.pid
    }

    /// Waits until the runtime exits and reaps it.
    pub(crate) async fn exit(&self) -> io::Result<ExitStatus> {
        if let Some(status) = self.try_reap()? {
            return Ok(status);
        }
        // Registered as is: the pidfd stays blocking, which only matters to `waitid` without
        // WNOHANG (never used on it), and readiness needs no O_NONBLOCK.
        let watch = Async::new_nonblocking(self.pidfd.as_fd())?;
        loop {
            watch.readable().await?;
            // The reactor may wake us spuriously; the kernel has the last word.
            if let Some(status) = self.try_reap()? {
                return Ok(status);
            }
        }
    }

    /// Reaps the runtime if it has exited; `None` while it runs.
    pub(crate) fn try_reap(&self) -> io::Result<Option<ExitStatus>> {
        let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG;
        let status = loop {
            match rustix::process::waitid(WaitId::PidFd(self.pidfd.as_fd()), options) {
                Err(Errno::INTR) => continue,
                other => break other?,
            }
        };
        let Some(status) = status else {
            return Ok(None);
        };
        let raw = if let Some(code) = status.exit_status() {
            (code & 0xff) << 8
        } else if let Some(signal) = status.terminating_signal() {
            (signal & 0x7f) | if status.dumped() { 0x80 } else { 0 }
        } else {
            return Err(io::Error::other(format!(
                "waitid reported neither an exit code nor a signal for PID {}",
                self.pid.as_raw_pid()
            )));
        };
        Ok(Some(ExitStatus::from_raw(raw)))
    }

    /// Blocks until the runtime is reaped (after it was killed: SIGKILL ends it promptly).
    pub(crate) fn reap_blocking(&self) {
        loop {
            match rustix::process::waitpid(Some(self.pid), WaitOptions::empty()) {
                Err(Errno::INTR) => continue,
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // The children are reaped through their pidfds, which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    fn exit_codes_and_signals_come_back_as_std_statuses() {
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        let runtime = Runtime::open(&child).unwrap();
        let status = futures_lite::future::block_on(runtime.exit()).unwrap();
        assert_eq!(status.code(), Some(7));
        // Reaped: the kernel has no status left to give.
        assert_eq!(
            runtime.try_reap().unwrap_err().raw_os_error(),
            Some(Errno::CHILD.raw_os_error())
        );

        let child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let runtime = Runtime::open(&child).unwrap();
        assert!(runtime.try_reap().unwrap().is_none());
        rustix::process::kill_process(runtime.pid(), rustix::process::Signal::KILL).unwrap();
        let status = futures_lite::future::block_on(runtime.exit()).unwrap();
        assert_eq!(status.signal(), Some(9));
        assert_eq!(status.code(), None);
    }
}
