//! `runc exec`: another process in a running container.

use crate::Error;
use crate::call::Call;
use crate::console::ConsoleSocket;
use crate::io::{Pipes, Stdio};
use crate::lifecycle::read_pid;
use crate::runtime::Runc;
use crate::validate::validate_id;
use std::os::fd::OwnedFd;

/// Options of [`Runc::exec`].
#[derive(Debug, Default)]
pub struct ExecOpts {
    /// `--detach`: return once the process runs, with its PID; otherwise wait for it and
    /// return its exit code.
    pub detach: bool,
    /// The process has a terminal (set `terminal` in the `Process` too): the pty master is
    /// returned in [`Executed::console`]. Needs `detach`.
    pub console: bool,
    /// The process's stdio.
    pub stdio: Stdio,
}

/// What an exec gave back.
#[derive(Debug)]
pub struct Executed {
    /// The process's host PID (detached execs).
    pub pid: Option<i32>,
    /// Its exit code (foreground execs).
    pub exit_code: Option<i32>,
    /// The pty master, with [`ExecOpts::console`].
    pub console: Option<OwnedFd>,
    /// The caller's ends of streams asked for as pipes.
    pub pipes: Pipes,
}

impl Runc {
    /// Runs `process` (an OCI `Process`: args, env, cwd, user, terminal...) in container `id`.
    ///
    /// ```no_run
    /// # async fn f(runc: &runc_driver::Runc) -> Result<(), Box<dyn std::error::Error>> {
    /// use oci_spec::runtime::ProcessBuilder;
    /// let process = ProcessBuilder::default().args(vec!["true".to_string()]).cwd("/").build()?;
    /// let done = runc.exec("web", &process, runc_driver::ExecOpts::default()).await?;
    /// assert_eq!(done.exit_code, Some(0));
    /// # Ok(()) }
    /// ```
    pub async fn exec(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        opts: ExecOpts,
    ) -> Result<Executed, Error> {
        const COMMAND: &str = "exec";
        validate_id(id)?;
        if opts.console && !opts.detach {
            return Err(Error::InvalidArgument {
                what: "exec options",
                value: "console without detach".into(),
                rule: "a terminal exec must be detached; read its output from the pty master",
            });
        }
        let spec = self.scratch_path("process");
        let json = serde_json::to_vec(process).map_err(|e| Error::Io {
            command: COMMAND,
            what: "write the process spec",
            source: e.into(),
        })?;
        crate::private::write(&spec, &json).map_err(|source| Error::Io {
            command: COMMAND,
            what: "write the process spec",
            source,
        })?;
        let pid_file = self.scratch_path("pid");
        let console = opts
            .console
            .then(|| ConsoleSocket::bind(self.scratch_path("console"), COMMAND))
            .transpose()?;
        let (stdio, pipes) = opts.stdio.open().map_err(|source| Error::Io {
            command: COMMAND,
            what: "make pipes",
            source,
        })?;
        let mut call = Call::new(COMMAND, id).arg("--process").arg(&spec);
        if opts.detach {
            call = call.arg("--detach").arg("--pid-file").arg(&pid_file);
        }
        if let Some(socket) = &console {
            call = call.arg("--console-socket").arg(socket.path());
        }
        call.stdio = Some(stdio);
        call.exit_is_result = !opts.detach;
        call = call.arg(id);
        let finished = self.run(call).await;
        let _ = std::fs::remove_file(&spec);
        let finished = finished?;
        let (pid, exit_code) = if opts.detach {
            let pid = read_pid(&pid_file, COMMAND)?;
            let _ = std::fs::remove_file(&pid_file);
            (Some(pid), None)
        } else {
            (None, Some(finished.code))
        };
        let console = console.map(|s| s.receive(COMMAND)).transpose()?;
        Ok(Executed {
            pid,
            exit_code,
            console,
            pipes,
        })
    }
}
