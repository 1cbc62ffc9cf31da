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

impl V2 {
    /// Creates the cgroup, first delegating to each ancestor's children every controller we use
    /// that the ancestor has (v2 only lets a child use what its parent's subtree_control names).
    pub(crate) fn create(&self, rel: &Path) -> Result<(), FsError> {
        let mut dir = self.mount.clone();
        for part in rel.iter() {
            let have = files::read(&dir, "cgroup.controllers")?;
            let on = files::read(&dir, "cgroup.subtree_control")?;
            for c in DELEGATED {
                let has = |s: &str| s.split_whitespace().any(|x| x == c);
                if has(&have) && !has(&on) {
                    files::write(&dir, "cgroup.subtree_control", &format!("+{c}"))?;
                }
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
        files::write(&self.mount.join(rel), "cgroup.procs", &pid.to_string())
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

    /// `cgroup.kill` SIGKILLs every process in the subtree atomically, forks included.
    pub(crate) fn kill_all(&self, rel: &Path) -> Result<(), FsError> {
        let d = self.mount.join(rel);
        files::write(&d, "cgroup.kill", "1")?;
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
