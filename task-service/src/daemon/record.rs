//! What the daemon persists per container.

use crate::model::Container;
use pidfd::ProcessIdentity;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One container's record, saved atomically on every transition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub bundle: PathBuf,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
    /// The runtime binary and root that manage it.
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    /// Whether the daemon mounted `Create`'s rootfs mounts on `<bundle>/rootfs` (and must
    /// unmount them on delete).
    #[serde(default)]
    pub rootfs_mounted: bool,
    /// Saved before the runtime is asked to create the container and cleared once it has: a
    /// record still `creating` after a restart is a `Create` the daemon died in.
    #[serde(default)]
    pub creating: bool,
    /// Whether the runtime manages its cgroup through systemd.
    #[serde(default)]
    pub systemd_cgroup: bool,
    /// The init process, as PID + start time (never trusted by PID alone).
    pub identity: Option<ProcessIdentity>,
    pub container: Container,
    /// Started exec processes, as PID + start time, by exec id.
    #[serde(default)]
    pub exec_identities: std::collections::BTreeMap<String, ProcessIdentity>,
    /// Exits of execs that ended before the kernel tracked them, taken by their `Start`
    /// until the watcher reports them (what exitwatch holds for the others), by exec id.
    #[serde(default)]
    pub early_exits: std::collections::BTreeMap<String, crate::model::Exit>,
    /// Who its stdio FIFOs, and its execs', are given to (runtime options `IoUid`/`IoGid`;
    /// root in a record written before they were kept).
    #[serde(default)]
    pub io_owner: crate::stdio::IoOwner,
    /// When the container was created (for `shimlessctl ps`'s age).
    #[serde(default = "std::time::SystemTime::now")]
    pub created_at: std::time::SystemTime,
    /// Set for every container of a folded pod: its pod, pod cgroup and resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fold: Option<crate::fold::Folding>,
}
