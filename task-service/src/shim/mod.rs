//! `containerd-shim-shimless-v2`: the runtime v2 binary containerd runs, with no process left
//! behind per container.
//!
//! - `start` (run by containerd in the bundle directory, once per task) makes sure the front
//!   (`shimless-front`, which starts `shimlessd`) is serving — starting it detached if not, under
//!   a lock so that concurrent `start`s start one — asks the front for the socket of the task's
//!   namespace (containerd sends no namespace with its calls to a gRPC shim, so the socket
//!   carries it), registers containerd's address as where the container's events go, writes
//!   `address` and `bootstrap.json` in the bundle (what a restarted containerd reconnects by),
//!   and prints the bootstrap JSON
//!   `{"address":"unix:///run/shimless/ns/<namespace>.ttrpc.sock","protocol":"ttrpc","version":N}`
//!   with N asked of containerd's Version API: 2 for containerd 1.x (which refuses more), 3 for
//!   2.x. With `containerd_protocol = "grpc"` the protocol is `grpc` and the address a bare path
//!   (containerd dials a gRPC address before adding `unix://` itself, and a ttrpc address without
//!   the scheme as an abstract socket). ttrpc is the default because containerd 1.7's gRPC client
//!   gives up a connection after 30 minutes without a call and then deletes the task.
//!   containerd 2.3+ writes an encoded `BootstrapParams` on stdin (1.x to 2.2 write the runtime
//!   options, or nothing); asked that way, `start` answers with an encoded `BootstrapResult`
//!   holding the same three fields. gRPC toward containerd 2.x is refused here, naming
//!   `containerd_protocol`: 2.x takes a new gRPC connection, which starts idle, for a dead shim.
//!   containerd 2.x runs `start` only for a pod's sandbox and creates the pod's other containers
//!   over the sandbox's connection; the daemon sends their events where the sandbox's go.
//! - `-info` (containerd 2.2+, before creating a task) prints an encoded `RuntimeInfo`: see
//!   [`info`].
//! - `delete` (containerd's fallback when it believes the shim died) stops and deletes that one
//!   container — through the daemon if it answers, with the runtime directly if not — and
//!   prints a `DeleteResponse` protobuf.
//!
//! Everything but the answer goes to the bundle's `log` FIFO, which containerd copies to its own
//! log: containerd reads `start`'s stdout and stderr together as the answer.
//!
//! ```no_run
//! use task_service::shim::{self, flags::Flags};
//! let flags = Flags::parse(std::env::args().skip(1))?;
//! let config = task_service::config::Config::load(task_service::config::default_path())?;
//! let answer = shim::run(&flags, &config, &task_service::config::default_path())?;
//! std::io::Write::write_all(&mut std::io::stdout(), &answer)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod delete;
pub mod flags;
pub mod info;
mod start;

use crate::config::Config;
use flags::{Action, Flags};
use std::path::Path;

/// Why `start` or `delete` failed; containerd shows the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShimError {
    /// containerd left out something the action needs.
    #[error("-{0} is required for this action")]
    Missing(&'static str),
    /// The front could not be started or reached.
    #[error("cannot start shimless-front: {0}")]
    Front(String),
    /// The daemon refused or failed a call.
    #[error("shimlessd: {0}")]
    Daemon(String),
    /// `-info` could not describe the runtime.
    #[error("-info: {0}")]
    Info(String),
    /// The configured protocol toward containerd cannot work with this containerd.
    #[error("{0}")]
    Protocol(String),
    /// The container could not be cleaned up.
    #[error("cannot clean up {id}: {why}")]
    Cleanup {
        /// The container.
        id: String,
        /// What failed.
        why: String,
    },
}

/// Runs `flags.action` and returns what to print on stdout.
///
/// See the [module docs](self) for an example.
pub fn run(flags: &Flags, config: &Config, config_path: &Path) -> Result<Vec<u8>, ShimError> {
    match flags.action {
        Action::Version => Ok(format!(
            "containerd-shim-shimless-v2 {}\n",
            env!("CARGO_PKG_VERSION")
        )
        .into_bytes()),
        Action::Start => start::start(flags, config, config_path, &read_stdin()),
        Action::Info => info::info(config, &read_stdin()),
        Action::Delete => delete::delete(flags, config),
    }
}

/// What containerd wrote on stdin (runtime options, or 2.3's `BootstrapParams`); nothing when
/// stdin is a terminal (run by hand) or unreadable.
fn read_stdin() -> Vec<u8> {
    use std::io::Read;
    let stdin = std::io::stdin();
    if rustix::termios::isatty(&stdin) {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    let _ = stdin.lock().read_to_end(&mut bytes);
    bytes
}

/// Writes one line to the bundle's `log` FIFO (in the current directory, which is the bundle),
/// which containerd copies to its log; silently nothing if there is no reader.
fn log(line: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let fifo = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open("log");
    if let Ok(mut fifo) = fifo {
        let _ = writeln!(fifo, "shimless: {line}");
    }
}

/// A namespaced request, as containerd sends them.
fn namespaced<T>(ns: &str, msg: T, timeout: std::time::Duration) -> tonic::Request<T> {
    let mut req = crate::client::namespaced(ns, msg);
    req.set_timeout(timeout);
    req
}
