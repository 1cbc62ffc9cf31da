//! Commands that make, start, signal, freeze and remove containers.

use crate::Error;
use crate::call::Call;
use crate::console::ConsoleSocket;
use crate::io::{Pipes, Stdio};
use crate::runtime::Runc;
use crate::validate::{validate_bundle, validate_id};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// Options of `create` and `run --detach`.
///
/// ```
/// use runc_driver::{CreateOpts, Io, Stdio};
/// let opts = CreateOpts { no_pivot: true, stdio: Stdio { stdout: Io::Pipe, ..Stdio::default() }, ..CreateOpts::default() };
/// # let _ = opts;
/// ```
#[derive(Debug, Default)]
pub struct CreateOpts {
    /// Where the runtime writes the container's PID (a private file by default).
    pub pid_file: Option<PathBuf>,
    /// The spec's process has a terminal: the driver makes a console socket and returns the
    /// pty master in [`Created::console`].
    pub console: bool,
    /// `--no-pivot`.
    pub no_pivot: bool,
    /// `--no-new-keyring`.
    pub no_new_keyring: bool,
    /// The container's stdio (ignored for streams a terminal replaces).
    pub stdio: Stdio,
    /// Descriptors the container's process gets as 3, 4, ... (`--preserve-fds N`).
    pub extra_fds: Vec<OwnedFd>,
}

/// A created (or, for `run --detach`, running) container.
#[derive(Debug)]
pub struct Created {
    /// The container's init process, as a host PID.
    pub pid: i32,
    /// The pty master, when [`CreateOpts::console`] was set.
    pub console: Option<OwnedFd>,
    /// The caller's ends of the streams asked for as [`Io::Pipe`](crate::Io::Pipe).
    pub pipes: Pipes,
}

impl Runc {
    /// `runc create`: sets up the container and its init process, which waits for `start`.
    /// If the call is cancelled or times out, the half-made container is deleted.
    ///
    /// ```no_run
    /// # async fn f(runc: &runc_driver::Runc) -> Result<(), runc_driver::Error> {
    /// let created = runc.create("web", "/run/bundles/web".as_ref(), runc_driver::CreateOpts::default()).await?;
    /// println!("init is PID {}", created.pid);
    /// runc.start("web").await?;
    /// # Ok(()) }
    /// ```
    pub async fn create(
        &self,
        id: &str,
        bundle: &Path,
        opts: CreateOpts,
    ) -> Result<Created, Error> {
        self.create_or_run("create", id, bundle, opts).await
    }

    /// `runc run --detach`: create and start in one step.
    pub async fn run_detached(
        &self,
        id: &str,
        bundle: &Path,
        opts: CreateOpts,
    ) -> Result<Created, Error> {
        self.create_or_run("run", id, bundle, opts).await
    }

    async fn create_or_run(
        &self,
        command: &'static str,
        id: &str,
        bundle: &Path,
        opts: CreateOpts,
    ) -> Result<Created, Error> {
        validate_id(id)?;
        validate_bundle(bundle)?;
        let pid_file = opts
            .pid_file
            .clone()
            .unwrap_or_else(|| self.scratch_path("pid"));
        let console = opts
            .console
            .then(|| ConsoleSocket::bind(self.scratch_path("console"), command))
            .transpose()?;
        let (stdio, pipes) = opts.stdio.open().map_err(|source| Error::Io {
            command,
            what: "make pipes",
            source,
        })?;
        let mut call = Call::new(command, id)
            .arg_if(command == "run", "--detach")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg_if(opts.no_pivot, "--no-pivot")
            .arg_if(opts.no_new_keyring, "--no-new-keyring");
        if let Some(socket) = &console {
            call = call.arg("--console-socket").arg(socket.path());
        }
        call.stdio = Some(stdio);
        call.cleanup_id = Some(id);
        if !opts.extra_fds.is_empty() {
            call = call
                .arg("--preserve-fds")
                .arg(opts.extra_fds.len().to_string());
            call.extra_fds = opts.extra_fds;
        }
        call = call.arg(id);
        self.run(call).await?;
        let pid = read_pid(&pid_file, command)?;
        if opts.pid_file.is_none() {
            let _ = std::fs::remove_file(&pid_file);
        }
        let console = console.map(|s| s.receive(command)).transpose()?;
        Ok(Created {
            pid,
            console,
            pipes,
        })
    }

    /// `runc start`: runs the created container's process.
    pub async fn start(&self, id: &str) -> Result<(), Error> {
        validate_id(id)?;
        self.run(Call::new("start", id).arg(id)).await.map(drop)
    }

    /// `runc kill`: sends `signal` (a number) to the init process, or with `all` to every
    /// process of the container.
    pub async fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), Error> {
        validate_id(id)?;
        let call = Call::new("kill", id)
            .arg_if(all, "--all")
            .arg(id)
            .arg(signal.to_string());
        self.run(call).await.map(drop)
    }

    /// `runc delete`: removes a stopped (or, with `force`, any) container.
    pub async fn delete(&self, id: &str, force: bool) -> Result<(), Error> {
        validate_id(id)?;
        self.run(Call::new("delete", id).arg_if(force, "--force").arg(id))
            .await
            .map(drop)
    }

    /// `runc pause`: freezes every process of the container. (crun also accepts pausing a
    /// paused container.)
    pub async fn pause(&self, id: &str) -> Result<(), Error> {
        validate_id(id)?;
        self.run(Call::new("pause", id).arg(id)).await.map(drop)
    }

    /// `runc resume`: thaws a paused container. (crun also accepts resuming a running one.)
    pub async fn resume(&self, id: &str) -> Result<(), Error> {
        validate_id(id)?;
        self.run(Call::new("resume", id).arg(id)).await.map(drop)
    }
}

pub(crate) fn read_pid(path: &Path, command: &'static str) -> Result<i32, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        command,
        what: "read the pid file",
        source,
    })?;
    text.trim().parse().map_err(|_| Error::Io {
        command,
        what: "read the pid file",
        source: std::io::Error::other(format!("{text:?} is not a PID")),
    })
}
