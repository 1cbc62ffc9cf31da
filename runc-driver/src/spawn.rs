//! The runtime process itself: its descriptors (memory files for captured output, extra
//! descriptors placed at 3, 4, ...), its exit awaited on a pidfd (the `shimless-pidfd` crate:
//! one readiness event, then `waitid(P_PIDFD)`; no reaper thread, no signal handler), and the
//! guard that kills and reaps it when a call is cancelled or times out.

use crate::runtime::Runc;
use pidfd::PidFd;
use rustix::process::{Pid, Signal};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An anonymous in-memory file (`memfd_create`), close-on-exec.
pub(crate) fn memory_file(name: &str) -> std::io::Result<std::fs::File> {
    let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)?;
    Ok(std::fs::File::from(fd))
}

/// Writes `data` at the start of `file`, leaving the shared offset at 0 for the runtime.
pub(crate) fn write_from_start(file: &std::fs::File, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(data, 0)
}

/// Everything written to `file`, whatever its offset.
pub(crate) fn read_from_start(mut file: std::fs::File) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek};
    file.rewind()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Arranges for `fds` to be descriptors 3, 4, ... of the child. Each is first duplicated above
/// that range in the parent (so no source sits on another's target), and the child `dup2`s the
/// copies into place before it executes the runtime. The copies are returned to be kept until
/// the spawn.
///
/// Caveat: std's internal exec-error pipe may be one of the targets; a failed `exec` of the
/// runtime then reports its error into the caller's descriptor instead. The binary is checked
/// to be executable up front, which makes that failure unlikely.
pub(crate) fn place_extra_fds(
    cmd: &mut std::process::Command,
    fds: &[OwnedFd],
) -> std::io::Result<Vec<OwnedFd>> {
    if fds.is_empty() {
        return Ok(Vec::new());
    }
    let first = 3;
    let above = first + fds.len() as i32;
    let lifted = fds
        .iter()
        .map(|fd| rustix::io::fcntl_dupfd_cloexec(fd, above))
        .collect::<Result<Vec<_>, _>>()?;
    let sources: Vec<i32> = lifted.iter().map(AsRawFd::as_raw_fd).collect();
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // work is allowed: it reads a vector allocated before the fork and makes raw `dup2`
    // system calls. `OwnedFd::from_raw_fd` is only a handle to name the target descriptor for
    // rustix's `dup2`; it is never dropped (ManuallyDrop) nor used otherwise. `dup2` clears
    // close-on-exec on the target, so the runtime inherits it; the sources stay close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            for (i, &source) in sources.iter().enumerate() {
                let source = BorrowedFd::borrow_raw(source);
                let mut target =
                    std::mem::ManuallyDrop::new(OwnedFd::from_raw_fd(first + i as i32));
                rustix::io::dup2(source, &mut target)?;
            }
            Ok(())
        });
    }
    Ok(lifted)
}

/// A spawned runtime, reaped through its pidfd, and its PID (which is also its process group).
#[derive(Debug)]
pub(crate) struct Runtime {
    pidfd: PidFd,
    group: Pid,
}

impl Runtime {
    /// Opens a pidfd on a runtime just spawned (not yet reaped, so its PID is still its own).
    /// If that fails, the runtime's process group is killed and the runtime reaped through std.
    pub(crate) fn open(mut child: std::process::Child) -> Result<Self, pidfd::Error> {
        let group = Pid::from_child(&child);
        match PidFd::from_child(&child) {
            // From here on the pidfd reaps the runtime; std's `Child` is only a PID.
            Ok(pidfd) => Ok(Runtime { pidfd, group }),
            Err(e) => {
                let _ = rustix::process::kill_process_group(group, Signal::KILL);
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// Waits until the runtime exits and reaps it, as std's status (whose `Display`, e.g.
    /// `exit status: 1`, goes into [`Error::Runtime`](crate::Error::Runtime)).
    pub(crate) async fn exit(&self) -> Result<ExitStatus, pidfd::Error> {
        self.pidfd.exited().await?;
        let status = self.pidfd.wait()?;
        Ok(ExitStatus::from_raw(status.to_wait_status()))
    }

    /// Kills the runtime's process group.
    fn kill_group(&self) {
        let _ = rustix::process::kill_process_group(self.group, Signal::KILL);
    }

    /// Blocks until the runtime is reaped (after it was killed: SIGKILL ends it promptly).
    fn reap_blocking(&self) {
        let _ = self.pidfd.wait();
    }
}

/// Kills the command's process group if the call is dropped or times out before it finished,
/// reaps the runtime (and, when this process is a child subreaper, what of its group is
/// re-parented to us) on a short-lived thread, and force-deletes the container a cancelled
/// create may have left. No zombie remains.
pub(crate) struct CancelGuard {
    pub(crate) runtime: Arc<Runtime>,
    armed: bool,
    cleanup: Option<(Runc, String)>,
}

impl CancelGuard {
    /// Arms a guard over `runtime`; `cleanup` names the container to force-delete.
    pub(crate) fn new(runtime: Runtime, cleanup: Option<(Runc, String)>) -> Self {
        CancelGuard {
            runtime: Arc::new(runtime),
            armed: true,
            cleanup,
        }
    }

    /// The runtime exited and was reaped: nothing to clean up.
    pub(crate) fn disarm(mut self) {
        self.armed = false;
        self.cleanup = None;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.runtime.kill_group();
        reap_in_background(self.runtime.clone());
        if let Some((runc, id)) = self.cleanup.take() {
            force_delete(&runc, &id);
        }
    }
}

/// `delete --force` of a container a cancelled create may have left. Blocking, but only on
/// this rare path, and short.
fn force_delete(runc: &Runc, id: &str) {
    let mut cmd = std::process::Command::new(&runc.inner.binary);
    if let Some(root) = &runc.inner.root {
        cmd.arg("--root").arg(root);
    }
    let _ = cmd
        .args(["delete", "--force", id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// Reaps the killed runtime (waiting as long as it takes to die), then, for a short while,
/// whatever of its process group becomes our child: when this process is a child subreaper,
/// the runtime's own children (`runc init`) are re-parented to us once the runtime dies.
fn reap_in_background(runtime: Arc<Runtime>) {
    let reaper = runtime.clone();
    let reap = move || {
        reaper.reap_blocking();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            while let Ok(Some(_)) =
                rustix::process::waitpgid(reaper.group, rustix::process::WaitOptions::NOHANG)
            {
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let spawned = std::thread::Builder::new()
        .name("runc-driver-reap".into())
        .spawn(reap);
    if spawned.is_err() {
        // No thread to be had: reap the runtime here; SIGKILL ends it promptly.
        runtime.reap_blocking();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_files_give_back_what_was_written_from_the_start() {
        let file = memory_file("test").unwrap();
        write_from_start(&file, b"{\"a\":1}").unwrap();
        let copy = file.try_clone().unwrap();
        assert_eq!(read_from_start(copy).unwrap(), b"{\"a\":1}");
        assert_eq!(read_from_start(file).unwrap(), b"{\"a\":1}");
    }

    #[test]
    fn exit_codes_and_signals_come_back_as_std_statuses() {
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        let runtime = Runtime::open(child).unwrap();
        let status = futures_lite::future::block_on(runtime.exit()).unwrap();
        assert_eq!(status.code(), Some(7));
        assert_eq!(status.to_string(), "exit status: 7");

        let child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let runtime = Runtime::open(child).unwrap();
        assert!(runtime.pidfd.try_wait().unwrap().is_none());
        rustix::process::kill_process(runtime.group, Signal::KILL).unwrap();
        let status = futures_lite::future::block_on(runtime.exit()).unwrap();
        assert_eq!(status.signal(), Some(9));
        assert_eq!(status.code(), None);
    }
}
