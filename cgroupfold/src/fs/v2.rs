//! cgroup v2: one unified hierarchy, controllers delegated through `cgroup.subtree_control`.

use super::{FsError, Stats, files};
use crate::math::{Bytes, CgroupConfig, MemoryLimit, cpu_weight};
use std::path::{Path, PathBuf};

const DELEGATED: [&str; 3] = ["cpu", "memory", "pids"];

#[derive(Debug, Clone)]
pub(crate) struct V2 {
    pub(crate) mount: PathBuf,
}

fn optional<T>(r: Result<T, FsError>) -> Result<Option<T>, FsError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(FsError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Turns the kernel's EBUSY for a mixed internal/leaf cgroup into [`FsError::NotALeaf`].
fn leaf_only(r: Result<(), FsError>, dir: &Path, what: &'static str) -> Result<(), FsError> {
    match r {
        Err(FsError::Io { source, .. })
            if source.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) =>
        {
            Err(FsError::NotALeaf {
                path: dir.to_owned(),
                what,
            })
        }
        r => r,
    }
}

impl V2 {
    /// Creates the cgroup, first delegating to each ancestor's children every controller we use
    /// that the ancestor has (v2 only lets a child use what its parent's subtree_control names).
    /// An ancestor holding processes cannot delegate ([`FsError::NotALeaf`]), except the root.
    pub(crate) fn create(&self, rel: &Path) -> Result<(), FsError> {
        let mut dir = self.mount.clone();
        for part in rel.iter() {
            let have = files::read(&dir, "cgroup.controllers")?;
            let on = files::read(&dir, "cgroup.subtree_control")?;
            let has = |s: &str, c: &str| s.split_whitespace().any(|x| x == c);
            let missing: Vec<String> = DELEGATED
                .iter()
                .filter(|c| has(&have, c) && !has(&on, c))
                .map(|c| format!("+{c}"))
                .collect();
            if !missing.is_empty() {
                // One write, which the kernel applies all or nothing: one controller at a time,
                // a populated cgroup would take the threaded `cpu` (turning it into a thread
                // root) and then refuse `memory` with EOPNOTSUPP.
                leaf_only(
                    files::write(&dir, "cgroup.subtree_control", &missing.join(" ")),
                    &dir,
                    "it holds processes, so it cannot delegate controllers to a child",
                )?;
            }
            dir.push(part);
            if !dir.exists() {
                files::mkdir_all(&dir)?;
            }
        }
        Ok(())
    }

    pub(crate) fn apply(&self, rel: &Path, cfg: &CgroupConfig) -> Result<(), FsError> {
        let dir = self.mount.join(rel);
        let write = |controller: &'static str, file: &str, value: &str| {
            if !dir.join(file).exists() {
                return Err(FsError::ControllerUnavailable {
                    controller,
                    path: dir.clone(),
                });
            }
            files::write(&dir, file, value)
        };
        write("cpu", "cpu.weight", &cpu_weight(cfg.cpu_shares).to_string())?;
        write("cpu", "cpu.max", &cfg.cpu_quota.v2_max())?;
        write("memory", "memory.max", &cfg.memory.v2_max())?;
        write(
            "pids",
            "pids.max",
            &cfg.pids_max
                .map_or_else(|| "max".to_owned(), |n| n.to_string()),
        )
    }

    pub(crate) fn add_pid(&self, rel: &Path, pid: u32) -> Result<(), FsError> {
        let dir = self.mount.join(rel);
        leaf_only(
            files::write(&dir, "cgroup.procs", &pid.to_string()),
            &dir,
            "it delegates controllers to child cgroups, so it cannot take a process",
        )
    }

    pub(crate) fn pids(&self, rel: &Path) -> Result<Vec<u32>, FsError> {
        files::read_pids(&self.mount.join(rel))
    }

    pub(crate) fn stats(&self, rel: &Path) -> Result<Stats, FsError> {
        let d = self.mount.join(rel);
        let usage_usec = optional(files::read_key(&d, "cpu.stat", "usage_usec"))?.flatten();
        let max = optional(files::read(&d, "memory.max"))?;
        let memory_limit = match max.as_deref().map(str::trim) {
            None => None,
            Some("max") => Some(MemoryLimit::Unlimited),
            Some(n) => Some(MemoryLimit::Bytes(Bytes(n.parse().map_err(|_| {
                FsError::Parse {
                    path: d.join("memory.max"),
                    content: n.to_owned(),
                }
            })?))),
        };
        Ok(Stats {
            cpu_usage_ns: usage_usec.map(|u| u.saturating_mul(1000)),
            memory_usage: optional(files::read_u64(&d, "memory.current"))?.map(Bytes),
            memory_limit,
            pids_current: optional(files::read_u64(&d, "pids.current"))?,
            oom_kills: optional(files::read_key(&d, "memory.events", "oom_kill"))?.flatten(),
        })
    }

    pub(crate) fn freeze(&self, rel: &Path, frozen: bool) -> Result<(), FsError> {
        let d = self.mount.join(rel);
        files::write(&d, "cgroup.freeze", if frozen { "1" } else { "0" })?;
        let want = if frozen { Some(1) } else { Some(0) };
        files::wait_until(
            &d,
            std::time::Duration::from_secs(5),
            "cgroup.events frozen did not settle",
            || Ok(files::read_key(&d, "cgroup.events", "frozen")? == want),
        )
    }

    /// Whether this kernel has `cgroup.kill` (5.14+) for the cgroup.
    pub(crate) fn has_kill(&self, rel: &Path) -> bool {
        self.mount.join(rel).join("cgroup.kill").exists()
    }

    /// `cgroup.kill` SIGKILLs every process in the subtree atomically, forks included, frozen
    /// ones too (they die without a thaw).
    pub(crate) fn kill(&self, rel: &Path) -> Result<(), FsError> {
        files::write(&self.mount.join(rel), "cgroup.kill", "1")
    }

    /// Waits until no process is left in the subtree.
    pub(crate) fn wait_empty(&self, rel: &Path) -> Result<(), FsError> {
        let d = self.mount.join(rel);
        files::wait_until(
            &d,
            super::KILL_TIMEOUT,
            "processes survived cgroup.kill",
            || Ok(files::read_key(&d, "cgroup.events", "populated")? == Some(0)),
        )
    }

    pub(crate) fn remove(&self, rel: &Path, deadline: std::time::Instant) -> Result<(), FsError> {
        files::rmdir_tree(&self.mount.join(rel), deadline)
    }
}
