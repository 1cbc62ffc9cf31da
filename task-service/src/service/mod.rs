//! The daemon's Task service: containerd's `containerd.task.v3.Task`, for every container of
//! the node, on runc (or crun) through `runc-driver`.
//!
//! Every call but `Checkpoint` works (it answers `UNIMPLEMENTED` with a
//! message), with execs and terminals. Exits go through one pipeline: `waitid` as
//! the child subreaper, exitwatch's kernel record, `PIDFD_INFO_EXIT`, in that order.
//! [`Daemon::recover`] takes back the containers of a previous run; [`Recovery`] says what it
//! found. `Create`'s rootfs mounts are mounted on `<bundle>/rootfs` (see [`crate::rootfs`]).
//! An init that exits after OOM kills in its memory cgroup is reported with `TaskOOM` before
//! its `TaskExit` (what containerd's CRI needs to say `OOMKilled`; see `oom.rs`).

mod daemon;
mod errors;
mod exits;
mod forward;
mod health;
mod oom;
mod record;
mod recovery;
mod router;
mod subscribe;

pub use daemon::Daemon;
pub use health::{Status, WithHealth};
pub use recovery::Recovery;
pub use router::Router;
