//! The daemon's Task service: containerd's `containerd.task.v3.Task`, for every container of
//! the node, on runc (or crun) through `runc-driver`.
//!
//! What works so far: `Create` (FIFO and `file://` stdio, no terminal, bundle already holding
//! its rootfs), `Start`, `State`, `Kill`, `Wait`, `Delete`, `Pids`, `Pause`, `Resume`,
//! `Update`, `Connect` and `Shutdown`, with records persisted atomically and a task event for
//! every transition. Exits are seen through pidfds: the daemon makes itself a child subreaper,
//! so every container init becomes its child when the runtime exits, and reaps it with
//! `waitid`. `Exec`, `ResizePty`, `CloseIO`, `Stats` and `Checkpoint`, terminals, rootfs
//! mounts and recovery after a restart answer `UNIMPLEMENTED` with a message until they land.

mod daemon;
mod errors;
mod exits;
mod record;
mod recovery;
mod router;
mod subscribe;

pub use daemon::Daemon;
pub use recovery::Recovery;
pub use router::Router;
