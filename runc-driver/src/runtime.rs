//! [`Runc`]: the global configuration, and the engine every command runs through.

use crate::child::Runtime;
use crate::error::{Error, classify};
use crate::io::Stdio;
use futures_lite::future;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Which runtime a [`Runc`] drives; they differ in a few behaviours the docs point out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// runc (or a binary that behaves like it).
    Runc,
    /// crun.
    Crun,
}

/// A runtime binary and its global options (`--root`, `--log`, `--systemd-cgroup`, `--debug`),
/// plus a default timeout per command. Cheap to clone; commands take `&self` and may run
/// concurrently.
///
/// ```no_run
/// use runc_driver::Runc;
/// let runc = Runc::builder().binary("crun").root("/run/my-crun").build()?;
/// let states = futures_lite::future::block_on(runc.list())?;
/// # Ok::<(), runc_driver::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Runc {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) binary: PathBuf,
    pub(crate) flavor: Flavor,
    root: Option<PathBuf>,
    log: Option<PathBuf>,
    systemd_cgroup: bool,
    debug: bool,
    pub(crate) timeout: Duration,
    /// Per-call logs, pid files and console sockets live here.
    pub(crate) scratch: tempfile::TempDir,
    counter: AtomicU64,
    limit: crate::ProcessLimit,
}

/// Builds a [`Runc`].
#[derive(Debug, Clone)]
pub struct RuncBuilder {
    binary: PathBuf,
    root: Option<PathBuf>,
    log: Option<PathBuf>,
    systemd_cgroup: bool,
    debug: bool,
    timeout: Duration,
    limit: Option<crate::ProcessLimit>,
}

impl Default for RuncBuilder {
    fn default() -> Self {
        RuncBuilder {
            binary: PathBuf::from("runc"),
            root: None,
            log: None,
            systemd_cgroup: false,
            debug: false,
            timeout: Duration::from_secs(30),
            limit: None,
        }
    }
}

impl RuncBuilder {
    /// The runtime binary: a name looked up on `PATH` (`runc`, `crun`) or a path.
    pub fn binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.binary = binary.into();
        self
    }

    /// `--root`: where the runtime keeps container state.
    pub fn root(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = Some(root.into());
        self
    }

    /// A file every command's JSON log is appended to, besides being read for errors.
    pub fn log(mut self, log: impl Into<PathBuf>) -> Self {
        self.log = Some(log.into());
        self
    }

    /// `--systemd-cgroup`.
    pub fn systemd_cgroup(mut self, on: bool) -> Self {
        self.systemd_cgroup = on;
        self
    }

    /// `--debug`.
    pub fn debug(mut self, on: bool) -> Self {
        self.debug = on;
        self
    }

    /// The default limit for one command (30 s unless set). A command that runs longer is
    /// killed with its process group and fails with [`Error::Timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The bound on runtime processes this driver shares (default: [`ProcessLimit::shared`],
    /// one for the whole process). A call waits for a slot before it spawns the runtime.
    ///
    /// [`ProcessLimit::shared`]: crate::ProcessLimit::shared
    pub fn process_limit(mut self, limit: crate::ProcessLimit) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Resolves the binary (on `PATH` for a bare name) and checks it is executable.
    pub fn build(self) -> Result<Runc, Error> {
        let binary = resolve(&self.binary)?;
        let name = binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let flavor = if name.contains("crun") {
            Flavor::Crun
        } else {
            Flavor::Runc
        };
        let scratch = tempfile::Builder::new()
            .prefix("runc-driver-")
            .permissions(crate::private::dir_permissions())
            .tempdir()
            .map_err(|source| Error::Io {
                command: "setup",
                what: "create a scratch directory",
                source,
            })?;
        Ok(Runc {
            inner: Arc::new(Inner {
                binary,
                flavor,
                root: self.root,
                log: self.log,
                systemd_cgroup: self.systemd_cgroup,
                debug: self.debug,
                timeout: self.timeout,
                scratch,
                counter: AtomicU64::new(0),
                limit: self.limit.unwrap_or_else(crate::ProcessLimit::shared),
            }),
        })
    }
}

fn resolve(binary: &Path) -> Result<PathBuf, Error> {
    let candidates: Vec<PathBuf> = if binary.components().count() > 1 || binary.is_absolute() {
        vec![binary.to_owned()]
    } else {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join(binary))
            .collect()
    };
    for candidate in &candidates {
        if candidate.is_file() && rustix::fs::access(candidate, rustix::fs::Access::EXEC_OK).is_ok()
        {
            return Ok(candidate.clone());
        }
    }
    let source = std::io::Error::new(std::io::ErrorKind::NotFound, "not found or not executable");
    Err(Error::Spawn {
        path: binary.to_owned(),
        source,
    })
}

impl Runc {
    /// A driver for `binary` (`runc`, `crun`, or a path) with default options.
    ///
    /// ```no_run
    /// let runc = runc_driver::Runc::new("runc")?;
    /// # Ok::<(), runc_driver::Error>(())
    /// ```
    pub fn new(binary: impl Into<PathBuf>) -> Result<Runc, Error> {
        RuncBuilder::default().binary(binary).build()
    }

    /// Starts building a driver (default binary `runc`).
    pub fn builder() -> RuncBuilder {
        RuncBuilder::default()
    }

    /// The resolved runtime binary.
    pub fn binary(&self) -> &Path {
        &self.inner.binary
    }

    /// Which runtime this is.
    pub fn flavor(&self) -> Flavor {
        self.inner.flavor
    }

    /// A fresh path in the driver's scratch directory.
    pub(crate) fn scratch_path(&self, what: &str) -> PathBuf {
        let n = self.inner.counter.fetch_add(1, Ordering::Relaxed);
        self.inner.scratch.path().join(format!("{what}-{n}"))
    }

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
        let command = call.command;
        let io_err = |what| {
            move |source| Error::Io {
                command,
                what,
                source,
            }
        };
        let log = call.stdio.is_some().then(|| self.scratch_path("log"));
        let mut cmd = std::process::Command::new(&self.inner.binary);
        if let Some(root) = &self.inner.root {
            cmd.arg("--root").arg(root);
        }
        if let Some(log) = &log {
            cmd.arg("--log").arg(log);
        }
        cmd.args(["--log-format", "json"]);
        if self.inner.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        if self.inner.debug {
            cmd.arg("--debug");
        }
        cmd.args(&call.args);
        // Its own process group, so cancellation can kill everything it started. (std keeps
        // its posix_spawn path for this; only a pre_exec hook would force fork.)
        cmd.process_group(0);
        let _lifted = place_extra_fds(&mut cmd, &call.extra_fds)
            .map_err(io_err("pass extra file descriptors"))?;
        let captured = match call.stdio {
            Some(stdio) => {
                let [stdin, stdout, stderr] = stdio.into_std();
                cmd.stdin(stdin).stdout(stdout).stderr(stderr);
                None
            }
            None => {
                let out =
                    memory_file("runc-driver-stdout").map_err(io_err("make an output file"))?;
                let err =
                    memory_file("runc-driver-stderr").map_err(io_err("make an output file"))?;
                cmd.stdout(out.try_clone().map_err(io_err("make an output file"))?);
                cmd.stderr(err.try_clone().map_err(io_err("make an output file"))?);
                cmd.stdin(std::process::Stdio::null());
                Some((out, err))
            }
        };
        if let Some(data) = call.stdin_data {
            // A memory file rather than a pipe: nothing to feed while the runtime runs.
            let input = memory_file("runc-driver-stdin").map_err(io_err("write stdin"))?;
            write_from_start(&input, &data).map_err(io_err("write stdin"))?;
            cmd.stdin(input);
        }
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            path: self.inner.binary.clone(),
            source,
        })?;
        // Our copies of the runtime's ends (the caller's descriptors among them) go now.
        drop(cmd);
        let runtime = match Runtime::open(&child) {
            Ok(runtime) => runtime,
            Err(source) => {
                let _ = rustix::process::kill_process_group(
                    rustix::process::Pid::from_child(&child),
                    rustix::process::Signal::KILL,
                );
                let mut child = child;
                let _ = child.wait();
                return Err(io_err("open a pidfd on the runtime")(source));
            }
        };
        // From here on the pidfd reaps the runtime; std's `Child` is only a PID.
        drop(child);
        let guard = CancelGuard {
            runtime: std::sync::Arc::new(runtime),
            armed: true,
            cleanup: call.cleanup_id.map(|id| (self.clone(), id.to_string())),
        };

        let limit = call.timeout.unwrap_or(self.inner.timeout);
        let exited = future::or(async { Some(guard.runtime.exit().await) }, async {
            async_io::Timer::after(limit).await;
            None
        })
        .await;
        let Some(exited) = exited else {
            drop(guard); // kills the process group, deletes a half-created container
            return Err(Error::Timeout {
                command,
                after: limit,
            });
        };
        let status = exited.map_err(io_err("wait"))?;
        guard.disarm();

        let (out, err) = match captured {
            Some((out, err)) => (
                read_from_start(out).map_err(io_err("read stdout"))?,
                read_from_start(err).map_err(io_err("read stderr"))?,
            ),
            None => (Vec::new(), Vec::new()),
        };
        let log_text = match &log {
            // On success the log file is only read when the caller keeps one.
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
            None => json_lines(&String::from_utf8_lossy(&err)),
        };
        if let Some(keep) = &self.inner.log {
            append(keep, &log_text);
        }
        if status.success() {
            return Ok(Finished {
                stdout: out,
                code: 0,
            });
        }
        let error = last_error(&log_text);
        if call.exit_is_result
            && error.is_none()
            && let Some(code) = status.code()
        {
            return Ok(Finished { stdout: out, code });
        }
        let message = error
            .or_else(|| {
                Some(String::from_utf8_lossy(&err).trim().to_string()).filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| format!("{} gave no error message", self.inner.binary.display()));
        Err(classify(command, call.id, message, status.to_string()))
    }
}

/// An anonymous in-memory file (`memfd_create`), close-on-exec.
fn memory_file(name: &str) -> std::io::Result<std::fs::File> {
    let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)?;
    Ok(std::fs::File::from(fd))
}

/// Writes `data` at the start of `file`, leaving the shared offset at 0 for the runtime.
fn write_from_start(file: &std::fs::File, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(data, 0)
}

/// Everything written to `file`, whatever its offset.
fn read_from_start(mut file: std::fs::File) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek};
    file.rewind()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The JSON lines of a runtime's stderr (its log, with `--log-format json` and no `--log`).
fn json_lines(text: &str) -> String {
    text.lines()
        .filter(|line| line.trim_start().starts_with('{'))
        .flat_map(|line| [line, "\n"])
        .collect()
}

/// Arranges for `fds` to be descriptors 3, 4, ... of the child. Each is first duplicated above
/// that range in the parent (so no source sits on another's target), and the child `dup2`s the
/// copies into place before it executes the runtime. The copies are returned to be kept until
/// the spawn.
///
/// Caveat: std's internal exec-error pipe may be one of the targets; a failed `exec` of the
/// runtime then reports its error into the caller's descriptor instead. The binary is checked
/// to be executable up front, which makes that failure unlikely.
fn place_extra_fds(
    cmd: &mut std::process::Command,
    fds: &[std::os::fd::OwnedFd],
) -> std::io::Result<Vec<std::os::fd::OwnedFd>> {
    use std::os::fd::AsRawFd;
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
                let source = std::os::fd::BorrowedFd::borrow_raw(source);
                let mut target = std::mem::ManuallyDrop::new(
                    <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(first + i as i32),
                );
                rustix::io::dup2(source, &mut target)?;
            }
            Ok(())
        });
    }
    Ok(lifted)
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

/// Kills the command's process group if the call is dropped or times out before it finished,
/// reaps the runtime (and, when this process is a child subreaper, what of its group is
/// re-parented to us) on a short-lived thread, and force-deletes the container a cancelled
/// create may have left. No zombie remains.
struct CancelGuard {
    runtime: std::sync::Arc<Runtime>,
    armed: bool,
    cleanup: Option<(Runc, String)>,
}

impl CancelGuard {
    /// The runtime exited and was reaped: nothing to clean up.
    fn disarm(mut self) {
        self.armed = false;
        self.cleanup = None;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let _ =
            rustix::process::kill_process_group(self.runtime.pid(), rustix::process::Signal::KILL);
        reap_in_background(self.runtime.clone());
        if let Some((runc, id)) = self.cleanup.take() {
            // Blocking, but only on this rare path, and short: a forced delete.
            let mut cmd = std::process::Command::new(&runc.inner.binary);
            if let Some(root) = &runc.inner.root {
                cmd.arg("--root").arg(root);
            }
            let _ = cmd
                .args(["delete", "--force", &id])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Reaps the killed runtime (waiting as long as it takes to die), then, for a short while,
/// whatever of its process group becomes our child: when this process is a child subreaper,
/// the runtime's own children (`runc init`) are re-parented to us once the runtime dies.
fn reap_in_background(runtime: std::sync::Arc<Runtime>) {
    let reaper = runtime.clone();
    let reap = move || {
        reaper.reap_blocking();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            while let Ok(Some(_)) =
                rustix::process::waitpgid(reaper.pid(), rustix::process::WaitOptions::NOHANG)
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

    #[test]
    fn memory_files_give_back_what_was_written_from_the_start() {
        let file = memory_file("test").unwrap();
        write_from_start(&file, b"{\"a\":1}").unwrap();
        let copy = file.try_clone().unwrap();
        assert_eq!(read_from_start(copy).unwrap(), b"{\"a\":1}");
        assert_eq!(read_from_start(file).unwrap(), b"{\"a\":1}");
    }

    #[test]
    fn a_missing_binary_is_a_spawn_error_naming_it() {
        match Runc::new("no-such-runtime-here") {
            Err(Error::Spawn { path, .. }) => assert_eq!(path, Path::new("no-such-runtime-here")),
            other => panic!("{other:?}"),
        }
        match Runc::new("/etc/passwd") {
            Err(Error::Spawn { path, .. }) => assert_eq!(path, Path::new("/etc/passwd")),
            other => panic!("{other:?}"),
        }
    }
}
