//! The one spawn path of an init's `Create` and an exec's `Start`: the runtime starts the
//! process on the opened stdio, its terminal (if any) is attached, a pidfd is opened on it, and
//! its exit is tracked in the kernel.

use super::Daemon;
use super::container::Key;
use super::errors;
use super::exits;
use crate::console::Console;
use crate::ids::ContainerId;
use crate::stdio::{self, Endpoint, IoOwner, OpenStdio};
use pidfd::{PidFd, ProcessIdentity};
use runc_driver::{CreateOpts, ExecOpts, Io, Runc, Stdio};
use std::os::fd::OwnedFd;
use std::path::Path;
use tonic::Status;

/// What to start.
pub(super) enum Spawn<'a> {
    /// A container's init (`runc create`), from its bundle.
    Init {
        bundle: &'a Path,
        no_pivot: bool,
        no_new_keyring: bool,
    },
    /// An exec process (`runc exec --detach`).
    Exec {
        process: &'a oci_spec::runtime::Process,
    },
}

impl Spawn<'_> {
    /// What the process is called in error messages: "the init" or "the exec".
    fn what(&self) -> &'static str {
        match self {
            Spawn::Init { .. } => "the init",
            Spawn::Exec { .. } => "the exec",
        }
    }
}

/// A started process and what the daemon keeps of it.
pub(super) struct Launched {
    pub(super) pid: i32,
    pub(super) pidfd: PidFd,
    /// Its PID and start time, unless it is already gone.
    pub(super) identity: Option<ProcessIdentity>,
    pub(super) console: Option<Console>,
    /// Readers that keep its output FIFOs open (see [`crate::stdio`]).
    pub(super) keepalive: Vec<OwnedFd>,
}

/// A failed launch: the status to answer, and whether the runtime had made the process (a
/// container to delete) by then.
pub(super) struct Failed {
    pub(super) status: Status,
    pub(super) made: bool,
}

/// Parses and opens a process's three stdio endpoints (containerd's URIs or FIFO paths); the
/// FIFOs are given to `owner` (the runtime options' `IoUid`/`IoGid`, as the Go shim does).
pub(super) fn open_stdio(endpoints: [&str; 3], owner: IoOwner) -> Result<OpenStdio, Status> {
    let [i, o, e] = Endpoint::parse_all(endpoints).map_err(errors::invalid)?;
    stdio::open_as([&i, &o, &e], owner).map_err(errors::invalid)
}

impl Daemon {
    /// Starts `spawn` in container `id` of `runc` on `opened`; with `terminal`, on a new pty
    /// whose master is copied to and from the stdin and stdout streams.
    pub(super) async fn launch(
        &self,
        runc: &Runc,
        id: &ContainerId,
        spawn: Spawn<'_>,
        opened: OpenStdio,
        terminal: bool,
    ) -> Result<Launched, Failed> {
        let _launching = self.inner.reaper.launching(); // its child is not an orphan
        let (stdio, for_console) = split_stdio(opened.container, terminal);
        let (pid, master) = run(runc, id, &spawn, stdio, terminal)
            .await
            .map_err(|status| Failed {
                status,
                made: false,
            })?;
        let made = |status| Failed { status, made: true };
        let console = match (for_console, master) {
            (Some((stdin, stdout)), Some(master)) => Some(
                Console::attach(master, stdin, stdout, &self.inner.ex).map_err(|e| {
                    let what = match spawn {
                        Spawn::Init { .. } => "attach the terminal",
                        Spawn::Exec { .. } => "attach the exec's terminal",
                    };
                    made(errors::internal(what, e))
                })?,
            ),
            _ => None,
        };
        let pidfd = PidFd::open(pid).map_err(|e| {
            made(errors::internal(
                &format!("open a pidfd for {}", spawn.what()),
                e,
            ))
        })?;
        let identity = pidfd.identity().ok();
        Ok(Launched {
            pid,
            pidfd,
            identity,
            console,
            keepalive: opened.keepalive,
        })
    }

    /// Starts recording the exit of the init (`exec_id` `None`) or an exec of `key` in the
    /// kernel, so that an exit while no daemon runs is still known.
    pub(super) fn track(
        &self,
        key: &Key,
        exec_id: Option<&str>,
        identity: &ProcessIdentity,
    ) -> Result<(), String> {
        let cookie = exits::cookie(key.0.as_str(), key.1.as_str(), exec_id);
        self.inner.exits.track(identity, cookie)
    }
}

/// Asks the runtime to start the process: its PID, and the pty master with a terminal.
async fn run(
    runc: &Runc,
    id: &ContainerId,
    spawn: &Spawn<'_>,
    stdio: Stdio,
    terminal: bool,
) -> Result<(i32, Option<OwnedFd>), Status> {
    match *spawn {
        Spawn::Init {
            bundle,
            no_pivot,
            no_new_keyring,
        } => {
            let opts = CreateOpts {
                no_pivot,
                no_new_keyring,
                console: terminal,
                stdio,
                ..CreateOpts::default()
            };
            let created = runc
                .create(id.as_str(), bundle, opts)
                .await
                .map_err(errors::runc)?;
            Ok((created.pid, created.console))
        }
        Spawn::Exec { process } => {
            let opts = ExecOpts {
                detach: true,
                console: terminal,
                stdio,
            };
            let executed = runc
                .exec(id.as_str(), process, opts)
                .await
                .map_err(errors::runc)?;
            let pid = executed
                .pid
                .ok_or_else(|| Status::internal("runc exec --detach gave no pid"))?;
            Ok((pid, executed.console))
        }
    }
}

/// With a terminal, the stdin and stdout streams the pty's copier uses.
type ConsoleEnds = Option<(Option<OwnedFd>, Option<OwnedFd>)>;

/// The process's stdio from the opened streams: the streams themselves, or with a terminal
/// `/dev/null` (the process's stdio is the pty) and the stdin and stdout FIFOs for the copier.
fn split_stdio(opened: [Option<OwnedFd>; 3], terminal: bool) -> (Stdio, ConsoleEnds) {
    let [i, o, e] = opened;
    if terminal {
        return (Stdio::default(), Some((i, o)));
    }
    let io = |fd: Option<OwnedFd>| fd.map_or(Io::Null, Io::Fd);
    let stdio = Stdio {
        stdin: io(i),
        stdout: io(o),
        stderr: io(e),
    };
    (stdio, None)
}
