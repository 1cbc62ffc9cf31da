//! One invocation of the runtime, in named steps: build the command line, wire its IO, spawn
//! it, await its exit under a timeout, then read its output and log and turn them into a result
//! or a typed error.

use crate::error::{Error, classify};
use crate::io::Stdio;
use crate::runtime::Runc;
use crate::spawn::{
    CancelGuard, Runtime, memory_file, place_extra_fds, read_from_start, write_from_start,
};
use futures_lite::future;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

/// One invocation: the command name, its arguments after the global ones, and its IO.
pub(crate) struct Call<'a> {
    pub command: &'static str,
    pub id: &'a str,
    pub args: Vec<OsString>,
    /// The caller's stdio, or `None`: the driver captures stdout and stderr itself (and the
    /// runtime logs to stderr).
    pub stdio: Option<Stdio>,
    pub stdin_data: Option<Vec<u8>>,
    pub cleanup_id: Option<&'a str>,
    pub timeout: Option<Duration>,
    /// A non-zero exit without an error in the log is the process's own exit code (`exec`
    /// in the foreground), not a failure.
    pub exit_is_result: bool,
    /// Descriptors the runtime must see as 3, 4, ... (`--preserve-fds`).
    pub extra_fds: Vec<std::os::fd::OwnedFd>,
}

/// A command that ran to its end.
pub(crate) struct Finished {
    pub stdout: Vec<u8>,
    pub code: i32,
}

impl<'a> Call<'a> {
    pub(crate) fn new(command: &'static str, id: &'a str) -> Self {
        Call {
            command,
            id,
            args: vec![command.into()],
            stdio: None,
            stdin_data: None,
            cleanup_id: None,
            timeout: None,
            exit_is_result: false,
            extra_fds: Vec::new(),
        }
    }

    pub(crate) fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub(crate) fn arg_if(self, cond: bool, arg: impl Into<OsString>) -> Self {
        if cond { self.arg(arg) } else { self }
    }
}

/// The memory files that receive the runtime's stdout and stderr when the driver reads them.
struct Captured {
    out: std::fs::File,
    err: std::fs::File,
}

/// Maps an IO error of step `what` of `command` to [`Error::Io`].
fn io_err(command: &'static str, what: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |source| Error::Io {
        command,
        what,
        source,
    }
}

impl Runc {
    /// Runs one command and returns its stdout and exit code. `cleanup_id` names a container to
    /// force-delete if the call is cancelled or times out (for commands that create one).
    ///
    /// The per-call cost is kept close to a bare `std::process::Command`: the runtime is
    /// spawned by std (its `posix_spawn` path unless extra descriptors need a `pre_exec`
    /// hook), its exit is awaited on a pidfd registered with async-io (one readiness event, no
    /// reaper thread), and output the driver reads itself goes to memory files read once the
    /// runtime has exited, so no pipe has to be drained while it runs. Such calls get the
    /// runtime's JSON log on stderr; only calls whose stderr belongs to the caller pay for a
    /// log file (`--log`), which costs the runtime a file creation on every run.
    pub(crate) async fn run(&self, call: Call<'_>) -> Result<Finished, Error> {
        let _slot = self.inner.limit.slot().await;
        let started = std::time::Instant::now();
        let command = call.command;
        let result = self.run_in_slot(call).await;
        if let Some(observer) = &self.inner.observer {
            observer.observe(command, started.elapsed(), result.is_ok());
        }
        result
    }

    /// [`Runc::run`] once a process slot is held.
    async fn run_in_slot(&self, mut call: Call<'_>) -> Result<Finished, Error> {
        let command = call.command;
        let log = call.stdio.is_some().then(|| self.scratch_path("log"));
        let mut cmd = self.command_line(&call.args, log.as_deref());
        let _lifted = place_extra_fds(&mut cmd, &call.extra_fds)
            .map_err(io_err(command, "pass extra file descriptors"))?;
        let captured = wire_io(&mut cmd, &mut call)?;
        let runtime = self.spawn(cmd, command)?;
        let status = self.wait(runtime, &call).await?;
        let (out, err) = match captured {
            Some(Captured { out, err }) => (
                read_from_start(out).map_err(io_err(command, "read stdout"))?,
                read_from_start(err).map_err(io_err(command, "read stderr"))?,
            ),
            None => (Vec::new(), Vec::new()),
        };
        let log_text = self.log_text(log.as_deref(), status, &err);
        self.outcome(&call, status, out, &err, &log_text)
    }

    /// The runtime's command line: global options, then the call's arguments, in a process
    /// group of its own so that cancellation can kill everything it started (std keeps its
    /// posix_spawn path for this; only a pre_exec hook would force fork).
    fn command_line(&self, args: &[OsString], log: Option<&Path>) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.inner.binary);
        if let Some(root) = &self.inner.root {
            cmd.arg("--root").arg(root);
        }
        if let Some(log) = log {
            cmd.arg("--log").arg(log);
        }
        cmd.args(["--log-format", "json"]);
        if self.inner.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        if self.inner.debug {
            cmd.arg("--debug");
        }
        cmd.args(args);
        cmd.process_group(0);
        cmd
    }

    /// Spawns the runtime and opens the pidfd that will reap it. Our copies of the runtime's
    /// ends (the caller's descriptors among them) are closed with `cmd`.
    fn spawn(
        &self,
        mut cmd: std::process::Command,
        command: &'static str,
    ) -> Result<Runtime, Error> {
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            path: self.inner.binary.clone(),
            source,
        })?;
        drop(cmd);
        Runtime::open(child).map_err(|e| Error::Io {
            command,
            what: "open a pidfd on the runtime",
            source: std::io::Error::other(e),
        })
    }

    /// Awaits the runtime's exit within the call's limit; on timeout (or if this future is
    /// dropped) the guard kills its process group and deletes a half-created container.
    async fn wait(&self, runtime: Runtime, call: &Call<'_>) -> Result<ExitStatus, Error> {
        let command = call.command;
        let cleanup = call.cleanup_id.map(|id| (self.clone(), id.to_string()));
        let guard = CancelGuard::new(runtime, cleanup);
        let limit = call.timeout.unwrap_or(self.inner.timeout);
        let exited = future::or(async { Some(guard.runtime.exit().await) }, async {
            async_io::Timer::after(limit).await;
            None
        })
        .await;
        let Some(exited) = exited else {
            drop(guard);
            return Err(Error::Timeout {
                command,
                after: limit,
            });
        };
        let status = exited.map_err(|e| Error::Io {
            command,
            what: "wait",
            source: std::io::Error::other(e),
        })?;
        guard.disarm();
        Ok(status)
    }

    /// The runtime's JSON log for this call, appended to the driver's log file if it keeps
    /// one. On success a per-call log file is only read when the caller keeps a log.
    fn log_text(&self, log: Option<&Path>, status: ExitStatus, err: &[u8]) -> String {
        let text = match log {
            Some(log) => {
                let text = if status.success() && self.inner.log.is_none() {
                    String::new()
                } else {
                    std::fs::read_to_string(log).unwrap_or_default()
                };
                let _ = std::fs::remove_file(log);
                text
            }
            // The runtime logged to stderr, which the driver captured.
            None => json_lines(&String::from_utf8_lossy(err)),
        };
        if let Some(keep) = &self.inner.log {
            append(keep, &text);
        }
        text
    }

    /// Success, the process's own exit code (`exit_is_result`), or the typed error the
    /// runtime's last error message (else its stderr) describes.
    fn outcome(
        &self,
        call: &Call<'_>,
        status: ExitStatus,
        stdout: Vec<u8>,
        err: &[u8],
        log_text: &str,
    ) -> Result<Finished, Error> {
        if status.success() {
            return Ok(Finished { stdout, code: 0 });
        }
        let error = last_error(log_text);
        if call.exit_is_result
            && error.is_none()
            && let Some(code) = status.code()
        {
            return Ok(Finished { stdout, code });
        }
        let message = error
            .or_else(|| {
                Some(String::from_utf8_lossy(err).trim().to_string()).filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| format!("{} gave no error message", self.inner.binary.display()));
        Err(classify(call.command, call.id, message, status.to_string()))
    }
}

/// Points the runtime's stdio at the caller's (`Some` stdio) or at memory files the driver
/// reads afterwards, and its stdin at a memory file holding `stdin_data` if there is any (a
/// memory file rather than a pipe: nothing to feed while the runtime runs).
fn wire_io(
    cmd: &mut std::process::Command,
    call: &mut Call<'_>,
) -> Result<Option<Captured>, Error> {
    let command = call.command;
    let captured = match call.stdio.take() {
        Some(stdio) => {
            let [stdin, stdout, stderr] = stdio.into_std();
            cmd.stdin(stdin).stdout(stdout).stderr(stderr);
            None
        }
        None => {
            let made = io_err(command, "make an output file");
            let out = memory_file("runc-driver-stdout").map_err(&made)?;
            let err = memory_file("runc-driver-stderr").map_err(&made)?;
            cmd.stdout(out.try_clone().map_err(&made)?);
            cmd.stderr(err.try_clone().map_err(&made)?);
            cmd.stdin(std::process::Stdio::null());
            Some(Captured { out, err })
        }
    };
    if let Some(data) = call.stdin_data.take() {
        let input = memory_file("runc-driver-stdin").map_err(io_err(command, "write stdin"))?;
        write_from_start(&input, &data).map_err(io_err(command, "write stdin"))?;
        cmd.stdin(input);
    }
    Ok(captured)
}

/// The JSON lines of a runtime's stderr (its log, with `--log-format json` and no `--log`).
fn json_lines(text: &str) -> String {
    text.lines()
        .filter(|line| line.trim_start().starts_with('{'))
        .flat_map(|line| [line, "\n"])
        .collect()
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(text.as_bytes());
    }
}

/// The message of the last `"level":"error"` (or `fatal`) line of a JSON log.
fn last_error(log: &str) -> Option<String> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| matches!(v["level"].as_str(), Some("error" | "fatal")))
        .filter_map(|v| v["msg"].as_str().map(str::to_string))
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_error_line_wins_and_other_levels_are_ignored() {
        let log = concat!(
            "{\"level\":\"warning\",\"msg\":\"w\",\"time\":\"t\"}\n",
            "{\"level\":\"error\",\"msg\":\"first\",\"time\":\"t\"}\n",
            "not json\n",
            "{\"msg\":\"second\",\"level\":\"error\",\"time\":\"t\"}\n",
            "{\"level\":\"info\",\"msg\":\"i\",\"time\":\"t\"}\n",
        );
        assert_eq!(last_error(log).as_deref(), Some("second"));
        assert_eq!(last_error(""), None);
    }

    #[test]
    fn only_the_json_lines_of_stderr_are_the_log() {
        let stderr = concat!(
            "{\"level\":\"error\",\"msg\":\"container does not exist\"}\n",
            "container does not exist\n",
            "  {\"level\":\"info\",\"msg\":\"i\"}",
        );
        assert_eq!(
            json_lines(stderr),
            concat!(
                "{\"level\":\"error\",\"msg\":\"container does not exist\"}\n",
                "  {\"level\":\"info\",\"msg\":\"i\"}\n",
            )
        );
        assert_eq!(
            last_error(&json_lines(stderr)).as_deref(),
            Some("container does not exist")
        );
        assert_eq!(json_lines("plain words\n"), "");
    }
}
