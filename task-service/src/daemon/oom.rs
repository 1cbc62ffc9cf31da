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
//! `memory.events` (cgroup v2), read from the memory hierarchy found in `/proc/self/mountinfo`
//! (only that file: the other controllers' cgroups need not exist under the same path). The cgroup is found from
//! `/proc/<init pid>/cgroup` at `Create` (and at recovery, for inits still alive).
//!
//! On cgroup v2 the count is also watched while the container runs, as containerd-shim-runc-v2
//! does (see `oom_watch.rs`): with systemd's cgroup driver the container's scope, and its
//! `memory.events`, are gone as soon as its last process has exited, often before the daemon
//! reads the count at the exit. [`MemoryCgroup::claim`] makes sure each kill is published once,
//! whichever of the two sees it first.
//! What cgroup v1 does not see, unlike the eventfd: an OOM kill of a process other than the init
//! that the init survives is not reported while the container runs, only when it exits.

use cgroupfold::fs::{Mounts, ProcessCgroups};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The host's cgroup mounts, found once; `None` without any.
fn mounts() -> Option<&'static Mounts> {
    static MOUNTS: OnceLock<Option<Mounts>> = OnceLock::new();
    MOUNTS.get_or_init(|| Mounts::read().ok()).as_ref()
}

/// A container's memory cgroup, whose count of OOM kills is read when its init exits (and
/// watched while it runs, on cgroup v2).
#[derive(Debug)]
pub(crate) struct MemoryCgroup {
    /// The file with the count: `memory.events` (v2) or `memory.oom_control` (v1). Only the
    /// memory controller's file is read: the other controllers may put the process elsewhere
    /// (a v1 host whose memory hierarchy nests the service in a cgroup of its own).
    file: PathBuf,
    /// Whether `file` is cgroup v2's `memory.events`.
    unified: bool,
    /// The highest count of OOM kills already published as `TaskOOM`.
    reported: AtomicU64,
}

impl MemoryCgroup {
    /// The memory cgroup process `pid` is in, if it can be found (the process is alive and the
    /// host has cgroup hierarchies).
    pub(crate) fn of(pid: i32) -> Option<MemoryCgroup> {
        let mounts = mounts()?;
        let table = ProcessCgroups::read(u32::try_from(pid).ok()?).ok()?;
        // Pure v2 (no v1 memory hierarchy): the unified one; else the v1 memory controller's.
        let (mount, unified, name) = match mounts.v1_mount("memory") {
            Some(m) => (m, false, "memory.oom_control"),
            None => (mounts.unified.as_ref()?, true, "memory.events"),
        };
        let path = path_in(&table, unified)?;
        Some(MemoryCgroup {
            file: mount.join(path).join(name),
            unified,
            reported: AtomicU64::new(0),
        })
    }

    /// How many processes the kernel has killed for lack of memory in this cgroup; `None`
    /// when the count cannot be read (the cgroup is gone, or the kernel has no `oom_kill`).
    pub(crate) fn oom_kills(&self) -> Option<u64> {
        let text = std::fs::read_to_string(&self.file).ok()?;
        oom_kill_in(&text)
    }

    /// On a cgroup v2 host, the cgroup's `memory.events` file, whose changes are watched while
    /// the container runs; `None` on cgroup v1 (or hybrid, where memory is a v1 controller).
    pub(crate) fn events_file(&self) -> Option<&std::path::Path> {
        self.unified.then_some(self.file.as_path())
    }

    /// Whether a count of `kills` read now has kills not yet published; if so they count as
    /// published from now on (one `TaskOOM` per new reading, never two for the same kill).
    pub(crate) fn claim(&self, kills: u64) -> bool {
        kills > 0 && self.reported.fetch_max(kills, Ordering::SeqCst) < kills
    }
}

/// The `oom_kill` count of a `memory.events` or `memory.oom_control` file's text.
fn oom_kill_in(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
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
    fn the_count_is_the_oom_kill_line() {
        let events = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(oom_kill_in(events), Some(2));
        let control = "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n";
        assert_eq!(oom_kill_in(control), Some(1));
        assert_eq!(oom_kill_in("oom_kill_disable 0\nunder_oom 0\n"), None);
    }

    #[test]
    fn no_memory_controller_or_the_root_is_none() {
        assert_eq!(path_in(&table("3:cpu:/x\n"), false), None);
        assert_eq!(path_in(&table("4:memory:/\n"), false), None);
        assert_eq!(path_in(&table("0::/\n"), true), None);
    }
}
