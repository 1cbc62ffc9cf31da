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
//! `memory.events` (cgroup v2). The cgroup is found from `/proc/<init pid>/cgroup` at `Create`
//! (and at recovery, for inits still alive), under the hierarchies mounted at `/sys/fs/cgroup`.
//! What this does not see, unlike the eventfd: an OOM kill of a process other than the init
//! that the init survives is not reported while the container runs, only when it exits.

use std::path::{Path, PathBuf};

/// Where the cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A container's memory cgroup: the file whose `oom_kill` line counts its OOM kills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemoryCgroup {
    counter: PathBuf,
}

impl MemoryCgroup {
    /// The memory cgroup process `pid` is in, if it can be found (the process is alive and
    /// its cgroup's counter file exists).
    pub(crate) fn of(pid: i32) -> Option<MemoryCgroup> {
        let table = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        Self::from_table(&table, Path::new(CGROUP_ROOT)).filter(|m| m.counter.exists())
    }

    /// The counter file for a `/proc/<pid>/cgroup` table with hierarchies under `root`: the
    /// v1 `memory` controller's line if there is one, else the v2 (`0::`) line.
    fn from_table(table: &str, root: &Path) -> Option<MemoryCgroup> {
        let mut unified = None;
        for line in table.lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let path = path.trim_start_matches('/');
            if controllers.split(',').any(|c| c == "memory") {
                return Some(MemoryCgroup {
                    counter: root.join("memory").join(path).join("memory.oom_control"),
                });
            }
            if controllers.is_empty() {
                unified = Some(MemoryCgroup {
                    counter: root.join(path).join("memory.events"),
                });
            }
        }
        unified
    }

    /// How many processes the kernel has killed for lack of memory in this cgroup; `None`
    /// when the count cannot be read (the cgroup is gone, or the kernel has no `oom_kill`).
    pub(crate) fn oom_kills(&self) -> Option<u64> {
        let text = std::fs::read_to_string(&self.counter).ok()?;
        parse_oom_kill(&text)
    }
}

/// The `oom_kill <n>` line of `memory.oom_control` or `memory.events`.
fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == "oom_kill").then(|| value.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_memory_line_names_oom_control() {
        let table = "10:hugetlb:/\n4:memory:/k8s.io/abc\n1:cpu,cpuacct:/k8s.io/abc\n0::/\n";
        let m = MemoryCgroup::from_table(table, Path::new("/cg")).unwrap();
        assert_eq!(
            m.counter,
            PathBuf::from("/cg/memory/k8s.io/abc/memory.oom_control")
        );
    }

    #[test]
    fn v2_only_names_memory_events() {
        let m = MemoryCgroup::from_table("0::/k8s.io/abc\n", Path::new("/cg")).unwrap();
        assert_eq!(m.counter, PathBuf::from("/cg/k8s.io/abc/memory.events"));
    }

    #[test]
    fn no_memory_controller_is_none() {
        assert_eq!(
            MemoryCgroup::from_table("not a line\n3:cpu:/x\n", Path::new("/cg")),
            None
        );
    }

    #[test]
    fn oom_kill_is_read_from_either_file() {
        assert_eq!(
            parse_oom_kill("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            Some(2)
        );
        assert_eq!(
            parse_oom_kill("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n"),
            Some(1)
        );
        assert_eq!(parse_oom_kill("oom_kill_disable 0\nunder_oom 0\n"), None);
    }
}
