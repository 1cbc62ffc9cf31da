//! Out-of-memory kills in a container's memory cgroup, for the `TaskOOM` event.
//!
//! containerd's CRI reports a container `OOMKilled` when its runtime published `/tasks/oom`
//! for it before the exit. The stock runc shim listens on each container's cgroup v1
//! `memory.oom_control` with an eventfd; shimless instead reads the kernel's own count of OOM
//! kills in the container's memory cgroup when the init exits, and publishes `TaskOOM` before
//! `TaskExit` if the count is not zero: no file descriptor or task per container, and the
//! cgroup is still there then (runc removes it at `Delete`, which comes after the exit).
//!
//! The count is `oom_kill` in `memory.oom_control` (cgroup v1, Linux 4.13 and later) or in
//! `memory.events` (cgroup v2), read by `cgroupfold`'s driver ([`cgroupfold::fs::Stats`]'s
//! `oom_kills`) on the hierarchies it finds in `/proc/self/mountinfo`. The cgroup is found from
//! `/proc/<init pid>/cgroup` at `Create` (and at recovery, for inits still alive).
//! What this does not see, unlike the eventfd: an OOM kill of a process other than the init
//! that the init survives is not reported while the container runs, only when it exits.

use cgroupfold::fs::{Cgroups, Mode, ProcessCgroups};
use std::sync::OnceLock;

/// The host's cgroup hierarchies, found once; `None` without any.
fn cgroups() -> Option<&'static Cgroups> {
    static CGROUPS: OnceLock<Option<Cgroups>> = OnceLock::new();
    CGROUPS.get_or_init(|| Cgroups::detect().ok()).as_ref()
}

/// A container's memory cgroup, whose count of OOM kills is read when its init exits.
#[derive(Debug, Clone)]
pub(crate) struct MemoryCgroup {
    cgroups: &'static Cgroups,
    /// Relative to the hierarchies' mount points.
    path: String,
}

impl MemoryCgroup {
    /// The memory cgroup process `pid` is in, if it can be found (the process is alive and the
    /// host has cgroup hierarchies).
    pub(crate) fn of(pid: i32) -> Option<MemoryCgroup> {
        let cgroups = cgroups()?;
        let table = ProcessCgroups::read(u32::try_from(pid).ok()?).ok()?;
        let path = path_in(&table, cgroups.mode() == Mode::V2)?;
        Some(MemoryCgroup { cgroups, path })
    }

    /// How many processes the kernel has killed for lack of memory in this cgroup; `None`
    /// when the count cannot be read (the cgroup is gone, or the kernel has no `oom_kill`).
    pub(crate) fn oom_kills(&self) -> Option<u64> {
        self.cgroups.stats(&self.path).ok()?.oom_kills
    }
}

/// The memory cgroup's path in a process's cgroup table: the v1 `memory` controller's, or on a
/// v2-only host (`unified`) the `0::` one. The root cgroup is `None` (no container lives there).
fn path_in(table: &ProcessCgroups, unified: bool) -> Option<String> {
    let path = if unified {
        table.unified_path()
    } else {
        table.v1_path("memory")
    }?;
    let path = path.trim_matches('/');
    (!path.is_empty()).then(|| path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> ProcessCgroups {
        ProcessCgroups::parse(text).unwrap()
    }

    const HYBRID: &str = "10:hugetlb:/\n4:memory:/k8s.io/abc\n1:cpu,cpuacct:/k8s.io/abc\n0::/x\n";

    #[test]
    fn v1_takes_the_memory_line() {
        assert_eq!(
            path_in(&table(HYBRID), false).as_deref(),
            Some("k8s.io/abc")
        );
    }

    #[test]
    fn v2_takes_the_unified_line() {
        assert_eq!(path_in(&table(HYBRID), true).as_deref(), Some("x"));
        assert_eq!(
            path_in(&table("0::/k8s.io/abc\n"), true).as_deref(),
            Some("k8s.io/abc")
        );
    }

    #[test]
    fn no_memory_controller_or_the_root_is_none() {
        assert_eq!(path_in(&table("3:cpu:/x\n"), false), None);
        assert_eq!(path_in(&table("4:memory:/\n"), false), None);
        assert_eq!(path_in(&table("0::/\n"), true), None);
    }
}
