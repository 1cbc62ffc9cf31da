//! The probe marker: an exec whose `args[0]` has the basename of the configured
//! `probe_command` (`shimless-probe` by default) is answered by the daemon itself, with no
//! runtime call and no process.
//!
//! To containerd it is an ordinary exec: `Exec` records and announces it as any exec (see
//! `exec`); its `Start` runs `fileprobe::run_command` inside the container's root
//! (`/proc/<init pid>/root`, so the container's own mounts are seen), writes the reason line to
//! the exec's stdout (the usage to its stderr), records it started and publishes
//! `TaskExecStarted`, then records its exit (code 0, 1 or 2) through the same path as a real
//! exec's exit: `TaskExit`, its `Wait` released, `State` and `Delete` answered from the record.
//! Its PID is 0: there is no process. `shimless-probe readiness|liveness|startup` is answered
//! from the daemon's own probe of that kind (`probes`), with no file check.

use super::Daemon;
use super::container::{Entry, Key, PendingExec};
use super::errors;
use super::launch::open_stdio;
use super::probes::Answer;
use crate::api::containerd::events as ev;
use crate::events::TaskEvent;
use crate::lock::lock;
use crate::model::{Exit, ProcessState, Refused};
use crate::stdio::IoOwner;
use fileprobe::{ProbeFailure, ProbeOutcome};
use pidfd::{ExitStatus, PidFd, ProcessIdentity};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tonic::Status;

/// How long one check may take (a file on a stuck network or FUSE mount) before it is answered
/// as a failure; the syscall keeps its pool thread until the kernel returns.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `process` is the probe marker under `command` (empty: the marker is off).
pub(super) fn is_marker(command: &str, process: &oci_spec::runtime::Process) -> bool {
    !command.is_empty()
        && process
            .args()
            .as_ref()
            .and_then(|args| args.first())
            .and_then(|arg0| Path::new(arg0).file_name())
            .is_some_and(|name| name == command)
}

impl Daemon {
    /// Whether the pending exec is answered by [`Daemon::start_probe_exec`].
    pub(super) fn is_probe_exec(&self, pending: &PendingExec) -> bool {
        is_marker(&self.inner.config.probe_command, &pending.process)
    }

    /// Answers a marker exec's `Start`: checked, output written, started and exited. A
    /// container that is not running any more is refused as `Exec` refuses one, and the exec
    /// stays added (as a real exec whose launch failed does).
    pub(super) async fn start_probe_exec(
        &self,
        key: &Key,
        entry: &Arc<Entry>,
        exec_id: &str,
        pending: PendingExec,
    ) -> Result<u32, Status> {
        let (daemon, key, entry, exec_id) = (
            self.clone(),
            key.clone(),
            entry.clone(),
            exec_id.to_string(),
        );
        self.outlive(|_| async move {
            let root = container_root(&entry)?;
            let args: Vec<String> = pending
                .process
                .args()
                .as_ref()
                .map(|a| a.iter().skip(1).cloned().collect())
                .unwrap_or_default();
            let answer = match args.first().and_then(|w| super::probes::kind_of_word(w)) {
                Some(kind) if args.len() == 1 => daemon.probe_answer(&key, kind),
                _ => Answer::from(check(root, args).await),
            };
            let stdio = pending.stdio;
            let code = smol::unblock(move || write_output(stdio, answer)).await?;
            daemon.finish_probe_exec(key, entry, exec_id, code).await
        })
        .await
    }

    /// Records the marker exec started, announces it, then records and reports its exit. If
    /// the record cannot be saved, the call fails but the exit is still reported (as a real
    /// exec that cannot be recorded is killed and its exit reported): no exec is ever left
    /// running without a process.
    async fn finish_probe_exec(
        self,
        key: Key,
        entry: Arc<Entry>,
        exec_id: String,
        code: u8,
    ) -> Result<u32, Status> {
        let gate = entry.signal_gate.lock().await;
        let snapshot = {
            let mut record = lock(&entry.record);
            record
                .container
                .start_exec(&exec_id)
                .map_err(errors::refused)?;
            entry.snapshot(&record)
        };
        let saved = self.persist(&key, &entry, snapshot).await;
        if saved.is_ok() {
            self.publish(
                &key.0,
                TaskEvent::ExecStarted(ev::TaskExecStarted {
                    container_id: key.1.to_string(),
                    exec_id: exec_id.clone(),
                    pid: 0,
                }),
            );
        }
        drop(gate);
        match code {
            0 => crate::metrics::DAEMON.probes_ok.inc(),
            _ => crate::metrics::DAEMON.probes_failed.inc(),
        }
        let exit = Exit {
            status: ExitStatus::Exited(code),
            at: SystemTime::now(),
        };
        self.exec_exited(&key, &entry, &exec_id, exit).await;
        saved.map(|_| 0)
    }
}

/// The container's root, `/proc/<init pid>/root`, opened through a pidfd of the very init (by
/// PID and start time), so a PID reused by another process is never looked into. A container
/// whose init is not running is refused as `Exec` refuses it.
pub(super) fn container_root(entry: &Entry) -> Result<OwnedFd, Status> {
    let (state, identity) = {
        let record = lock(&entry.record);
        (record.container.init.state.name(), record.identity)
    };
    if state != ProcessState::Running.name() {
        return Err(errors::refused(Refused::NotRunning(state)));
    }
    // Running in the record, but its exit not reported yet.
    let stopped = || errors::refused(Refused::NotRunning("stopped"));
    let identity: ProcessIdentity = identity.ok_or_else(stopped)?;
    let pidfd = PidFd::reopen(&identity).map_err(|_| stopped())?;
    let pid = u32::try_from(pidfd.pid()).map_err(|_| stopped())?;
    let root = fileprobe::open_container_root(pid).map_err(|_| stopped())?;
    // Opened while the init still lived: the root is that container's.
    if pidfd.has_exited() {
        return Err(stopped());
    }
    Ok(root)
}

impl From<ProbeOutcome> for Answer {
    fn from(outcome: ProbeOutcome) -> Answer {
        Answer {
            code: outcome.exit_code(),
            stdout: outcome.stdout(),
            stderr: outcome.stderr(),
        }
    }
}

/// Runs the command inside `root` off the executor, failing it after [`CHECK_TIMEOUT`].
async fn check(root: OwnedFd, args: Vec<String>) -> ProbeOutcome {
    let check = smol::unblock(move || fileprobe::run_command(&root, &args, SystemTime::now()));
    let timeout = async {
        async_io::Timer::after(CHECK_TIMEOUT).await;
        ProbeOutcome::Failed(ProbeFailure::Timeout {
            timeout: CHECK_TIMEOUT,
        })
    };
    futures_lite::future::or(check, timeout).await
}

/// Writes the answer to the exec's stdout and stderr (containerd's FIFOs or files), then
/// closes them, so containerd's copy ends before the exit is reported; its exit code. A reader
/// that has gone away loses the text, not the exit code.
///
/// A FIFO is written only once containerd's own reader is open on it: containerd opens its
/// end in the background, and an open that comes after every writer has closed waits for a
/// writer that never comes (its `ExecSync` then hangs forever). A real process holds its
/// writer while it runs; an answer with no process must wait for the reader instead.
fn write_output(stdio: [String; 3], answer: Answer) -> Result<u8, Status> {
    let opened = open_stdio(stdio.each_ref().map(String::as_str), IoOwner::default())?;
    let [_, stdout, stderr] = opened.container;
    // The daemon's own readers would make every FIFO look read.
    drop(opened.keepalive);
    for (fd, text) in [(stdout, answer.stdout), (stderr, answer.stderr)] {
        if let Some(fd) = fd {
            wait_for_reader(&fd, READER_WAIT);
            if !text.is_empty() {
                let _ = std::fs::File::from(fd).write_all(text.as_bytes());
            }
        }
    }
    Ok(answer.code)
}

/// How long an answer waits for containerd to open its end of an output FIFO.
const READER_WAIT: Duration = Duration::from_secs(5);

/// Waits until `fd`, when it is a FIFO, has a reader (a non-blocking open for writing through
/// `/proc/self/fd` succeeds only then), for at most `limit`.
fn wait_for_reader(fd: &OwnedFd, limit: Duration) {
    let is_fifo = rustix::fs::fstat(fd).is_ok_and(|s| {
        rustix::fs::FileType::from_raw_mode(s.st_mode) == rustix::fs::FileType::Fifo
    });
    if !is_fifo {
        return;
    }
    let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(fd));
    let flags =
        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC;
    let deadline = std::time::Instant::now() + limit;
    loop {
        match rustix::fs::open(path.as_str(), flags, rustix::fs::Mode::empty()) {
            Err(rustix::io::Errno::NXIO) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(args: &[&str]) -> oci_spec::runtime::Process {
        let mut p = oci_spec::runtime::Process::default();
        p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
        p
    }

    #[test]
    fn the_marker_is_args0_with_the_commands_basename() {
        let command = "shimless-probe";
        for args in [
            &["shimless-probe", "file", "/p", "3"][..],
            &["/usr/local/bin/shimless-probe", "file", "/p", "3"],
            &["shimless-probe"],
        ] {
            assert!(is_marker(command, &process(args)), "{args:?}");
        }
        for args in [
            &["sh", "-c", "shimless-probe file /p 3"][..],
            &["shimless-probe-x", "file"],
            &["/shimless-probe/cat", "/p"],
            &[],
        ] {
            assert!(!is_marker(command, &process(args)), "{args:?}");
        }
        assert!(!is_marker(command, &oci_spec::runtime::Process::default()));
        assert!(!is_marker(
            "",
            &process(&["shimless-probe", "file", "/p", "3"])
        ));
    }
}
