//! Runtime operations that act on a whole cgroup, and what the service does instead.

use std::fmt;

/// A runtime (runc/crun) command that, for a folded container, reaches past the container.
///
/// ```
/// use cgroupfold::fold::{RuntimeOp, Replacement};
/// assert_eq!(RuntimeOp::KillAll.replacement(), Replacement::SignalInit);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuntimeOp {
    /// `create` / `run`: delegated, but the runtime may rewrite the shared cgroup's limits.
    Create,
    /// `kill --all`: signals every process in the cgroup.
    KillAll,
    /// `delete --force` of a running container.
    DeleteForce,
    /// `delete` of a stopped container while siblings still run.
    Delete,
    /// `ps`: lists every pid in the cgroup.
    Ps,
    /// `pause` / `resume`: freezes and thaws the whole cgroup.
    Pause,
    /// `update`: writes limits to the cgroup (the pod's).
    Update,
    /// `events --stats` / stats: reads the cgroup's counters (the pod's).
    Stats,
}

/// What the service does instead of delegating a [`RuntimeOp`].
///
/// ```
/// use cgroupfold::fold::Replacement;
/// assert!(Replacement::ListPidNamespace.to_string().contains("pid namespace"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Replacement {
    /// Let the runtime create the container, then write the pod's limits to the pod cgroup
    /// again ([`crate::fs::Cgroups::apply`]): crun 1.8.1 resets `memory.limit_in_bytes` to
    /// unlimited on every create, even from a spec without a memory section.
    ReapplyPodLimits,
    /// Signal the container's init only (runtime `kill` without `--all`, or a pidfd); with its
    /// own PID namespace, SIGKILL of init takes every process of the container down.
    SignalInit,
    /// SIGKILL init, wait for it, and call the runtime's `delete` only once the pod cgroup holds
    /// no sibling's process (when the pod's last container goes); until then keep the stopped
    /// container's state.
    KillInitThenDeferDelete,
    /// List the pod cgroup's pids and keep those in the container's PID namespace
    /// ([`super::container_pids`]).
    ListPidNamespace,
    /// SIGSTOP (resume: SIGCONT) each process of the container ([`super::stop_container`]);
    /// unlike the freezer this is visible to the container's parent processes.
    StopSignals,
    /// Recompute the pod's limits ([`crate::math::pod_cgroup`]) and write them to the pod
    /// cgroup ([`crate::fs::Cgroups::apply`]).
    ApplyPodLimits,
    /// Report the pod cgroup's counters as the pod's, never as one container's; per-container
    /// CPU and memory must come from `/proc/<pid>` of [`super::container_pids`].
    PodLevelStats,
}

impl fmt::Display for Replacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Replacement::ReapplyPodLimits => "create, then re-apply the pod's limits",
            Replacement::SignalInit => "signal the container's init only",
            Replacement::KillInitThenDeferDelete => "SIGKILL init, delete once no sibling remains",
            Replacement::ListPidNamespace => {
                "list pod cgroup pids in the container's pid namespace"
            }
            Replacement::StopSignals => "SIGSTOP/SIGCONT the container's processes",
            Replacement::ApplyPodLimits => "apply recomputed pod limits to the pod cgroup",
            Replacement::PodLevelStats => "report pod-level stats; per container from /proc",
        })
    }
}

/// What runc 1.1.5 and crun 1.8.1 did on this project's test host (cgroup v1 hybrid, kernel
/// 6.18) with two containers sharing one cgroup.
///
/// ```
/// use cgroupfold::fold::{RuntimeOp, observed};
/// assert!(observed(RuntimeOp::Pause).crun.contains("both"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// runc 1.1.5.
    pub runc: &'static str,
    /// crun 1.8.1.
    pub crun: &'static str,
}

/// The recorded behaviour of `op` (see the crate README for the commands).
pub fn observed(op: RuntimeOp) -> Observed {
    let (runc, crun) = match op {
        RuntimeOp::Create => (
            "joins with a warning (deprecated; runc 1.2 refuses); pod limits kept",
            "joins silently; resets the pod's memory limit to unlimited",
        ),
        RuntimeOp::KillAll => ("kills both containers", "kills both containers"),
        RuntimeOp::DeleteForce => (
            "kills only its own init, then fails to rmdir the shared cgroup (logged, exit 0)",
            "kills both containers and removes the pod cgroup",
        ),
        RuntimeOp::Delete => (
            "fails to rmdir the shared cgroup (logged, exit 0); the sibling survives",
            "kills the sibling and removes the pod cgroup",
        ),
        RuntimeOp::Ps => (
            "lists both containers' processes",
            "lists both containers' processes",
        ),
        RuntimeOp::Pause => (
            "freezes both; both show paused",
            "freezes both; both show paused",
        ),
        RuntimeOp::Update => (
            "writes the pod cgroup's limit",
            "writes the pod cgroup's limit",
        ),
        RuntimeOp::Stats => (
            "reads the pod cgroup's counters",
            "reads the pod cgroup's counters",
        ),
    };
    Observed { runc, crun }
}

impl RuntimeOp {
    /// Every operation the service must not delegate as-is for a folded container.
    pub const ALL: [RuntimeOp; 8] = [
        RuntimeOp::Create,
        RuntimeOp::KillAll,
        RuntimeOp::DeleteForce,
        RuntimeOp::Delete,
        RuntimeOp::Ps,
        RuntimeOp::Pause,
        RuntimeOp::Update,
        RuntimeOp::Stats,
    ];

    /// What to do instead.
    pub fn replacement(self) -> Replacement {
        match self {
            RuntimeOp::Create => Replacement::ReapplyPodLimits,
            RuntimeOp::KillAll => Replacement::SignalInit,
            RuntimeOp::DeleteForce | RuntimeOp::Delete => Replacement::KillInitThenDeferDelete,
            RuntimeOp::Ps => Replacement::ListPidNamespace,
            RuntimeOp::Pause => Replacement::StopSignals,
            RuntimeOp::Update => Replacement::ApplyPodLimits,
            RuntimeOp::Stats => Replacement::PodLevelStats,
        }
    }
}
