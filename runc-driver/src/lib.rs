//! A typed, runtime-agnostic async driver for the `runc` and `crun` command-line OCI runtimes.
//!
//! [`Runc`] holds the binary and its global options; each runtime command is a method with an
//! options struct and a typed result: [`Runc::create`], [`Runc::start`],
//! [`Runc::run_detached`], [`Runc::exec`], [`Runc::kill`], [`Runc::delete`], [`Runc::state`],
//! [`Runc::list`], [`Runc::ps`], [`Runc::pause`], [`Runc::resume`], [`Runc::update`],
//! [`Runc::stats`] (`events --stats`), [`Runc::features`] and [`Runc::version`].
//!
//! # How it works underneath
//!
//! Every command runs the binary in a process group of its own, spawned by
//! `std::process::Command` (its `posix_spawn` path) and awaited on a pidfd registered with
//! `async-io` (smol's reactor; no tokio, no reaper thread), with `--log-format json`. Output
//! the driver reads itself (`state`, `list`, ...) goes to in-memory files, and the runtime's
//! JSON log then comes on stderr; commands whose stdio belongs to the caller (`create`, `run`,
//! `exec`) log to a private file (`--log`). When a command fails, the last `"level":"error"`
//! line of its log is the message, sorted into [`Error::NotFound`],
//! [`Error::AlreadyExists`], [`Error::InvalidState`] or [`Error::Runtime`]; runc and crun word
//! their errors differently, and both wordings are known. Ids and bundles are checked before
//! anything runs ([`Error::InvalidArgument`]). A command that outlives its timeout, or whose
//! future is dropped, has its whole process group killed and reaped (no zombie remains), and a
//! `create` cut short has its half-made container force-deleted.
//!
//! Terminals: with [`CreateOpts::console`], the driver listens on a console socket and returns
//! the pty master the runtime sends over it (`SCM_RIGHTS`) as an `OwnedFd`.
//!
//! # Caveats
//!
//! - A detached container's init process is re-parented when the runtime exits: to the nearest
//!   child subreaper, else PID 1. A supervisor should be a subreaper (`PR_SET_CHILD_SUBREAPER`)
//!   and reap its containers.
//! - crun 1.8 has no `events` or `features` ([`Error::Unsupported`]), accepts `pause` of a
//!   paused and `resume` of a running container, and answers `start` of a started one with an
//!   `exec.fifo` error (reported as [`Error::InvalidState`]).
//!
//! # Example
//!
//! ```no_run
//! use runc_driver::{CreateOpts, Runc};
//! # async fn f() -> Result<(), runc_driver::Error> {
//! let runc = Runc::builder().binary("runc").root("/run/my-runc").build()?;
//! let created = runc.create("web", "/srv/bundles/web".as_ref(), CreateOpts::default()).await?;
//! runc.start("web").await?;
//! assert_eq!(runc.state("web").await?.pid, created.pid);
//! runc.kill("web", 15, false).await?;
//! # Ok(()) }
//! ```

mod call;
mod calls;
mod console;
mod error;
mod exec;
mod io;
mod lifecycle;
mod limit;
mod observe;
mod private;
mod query;
mod runtime;
mod spawn;
mod types;
mod validate;

pub use calls::{runtime_calls, wait_for_runtime_calls};
pub use error::Error;
pub use exec::{ExecOpts, Executed};
pub use io::{Io, Pipes, Stdio};
pub use lifecycle::{CreateOpts, Created};
pub use limit::ProcessLimit;
pub use observe::Observer;
pub use runtime::{Flavor, Runc, RuncBuilder};
pub use types::{
    BlkioEntry, BlkioStats, CpuStats, CpuUsage, Features, MemoryEntry, MemoryStats, PidsStats,
    State, Stats, Status, Version,
};
pub use validate::{MAX_ID_LEN, validate_id};
