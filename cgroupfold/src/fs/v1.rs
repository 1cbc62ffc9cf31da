//! cgroup v1: one hierarchy per controller (or per co-mounted group).

use super::Stats;
use super::{FsError, files};
use crate::math::{Bytes, CFS_PERIOD_US, CgroupConfig, MemoryLimit};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone)]
pub(crate) struct V1 {
    pub(crate) mounts: Vec<(Vec<String>, PathBuf)>,
    pub(crate) others: Vec<PathBuf>,
}

impl V1 {
    fn mount(&self, controller: &'static str, rel: &Path) -> Result<PathBuf, FsError> {
        self.mounts
            .iter()
            .find(|(c, _)| c.iter().any(|x| x == controller))
            .map(|(_, m)| m.join(rel))
            .ok_or_else(|| FsError::ControllerUnavailable {
                controller,
                path: rel.to_owned(),
            })
    }

    fn dirs<'a>(&'a self, rel: &'a Path) -> impl Iterator<Item = PathBuf> + 'a {
        self.mounts.iter().map(move |(_, m)| m.join(rel))
    }

    pub(crate) fn create(&self, rel: &Path) -> Result<(), FsError> {
        self.dirs(rel).try_for_each(|d| files::mkdir_all(&d))
    }

    pub(crate) fn apply(&self, rel: &Path, cfg: &CgroupConfig) -> Result<(), FsError> {
        let cpu = self.mount("cpu", rel)?;
        files::write(&cpu, "cpu.shares", &cfg.cpu_shares.to_string())?;
        files::write(&cpu, "cpu.cfs_period_us", &CFS_PERIOD_US.to_string())?;
        files::write(
            &cpu,
            "cpu.cfs_quota_us",
            &cfg.cpu_quota.v1_quota_us().to_string(),
        )?;
        files::write(
            &self.mount("memory", rel)?,
            "memory.limit_in_bytes",
            &cfg.memory.v1_write(),
        )?;
        let pids = cfg
            .pids_max
            .map_or_else(|| "max".to_owned(), |n| n.to_string());
        files::write(&self.mount("pids", rel)?, "pids.max", &pids)
    }

    pub(crate) fn add_pid(&self, rel: &Path, pid: u32) -> Result<(), FsError> {
        self.dirs(rel)
            .try_for_each(|d| files::write(&d, "cgroup.procs", &pid.to_string()))
    }

    pub(crate) fn pids(&self, rel: &Path) -> Result<Vec<u32>, FsError> {
        let dir = self
            .mount("pids", rel)
            .or_else(|_| self.mount("freezer", rel))?;
        files::read_pids(&dir)
    }

    pub(crate) fn stats(&self, rel: &Path) -> Result<Stats, FsError> {
        let mut s = Stats::default();
        if let Ok(d) = self.mount("cpuacct", rel) {
            s.cpu_usage_ns = Some(files::read_u64(&d, "cpuacct.usage")?);
        }
        if let Ok(d) = self.mount("memory", rel) {
            s.memory_usage = Some(Bytes(files::read_u64(&d, "memory.usage_in_bytes")?));
            s.memory_limit = Some(MemoryLimit::from_v1(files::read_u64(
                &d,
                "memory.limit_in_bytes",
            )?));
            s.oom_kills = files::read_key(&d, "memory.oom_control", "oom_kill")?;
        }
        if let Ok(d) = self.mount("pids", rel) {
            s.pids_current = Some(files::read_u64(&d, "pids.current")?);
        }
        Ok(s)
    }

    pub(crate) fn freeze(&self, rel: &Path, frozen: bool) -> Result<(), FsError> {
        let d = self.mount("freezer", rel)?;
        let want = if frozen { "FROZEN" } else { "THAWED" };
        files::write(&d, "freezer.state", want)?;
        files::wait_until(
            &d,
            Duration::from_secs(5),
            "freezer.state did not settle",
            || Ok(files::read(&d, "freezer.state")?.trim() == want),
        )
    }

    /// Writes `THAWED` without waiting for the state to settle (a frozen ancestor keeps it
    /// frozen); no freezer hierarchy is nothing to thaw.
    pub(crate) fn thaw_now(&self, rel: &Path) -> Result<(), FsError> {
        match self.mount("freezer", rel) {
            Ok(d) => files::write(&d, "freezer.state", "THAWED"),
            Err(_) => Ok(()),
        }
    }

    /// Freezes the cgroup (and so its descendants) so nothing in it can fork, SIGKILLs every
    /// process of the subtree, thaws so the kills land, and repeats until the subtree is empty.
    pub(crate) fn kill_all(&self, rel: &Path) -> Result<(), FsError> {
        let has_freezer = self.mount("freezer", rel).is_ok();
        let dir = self
            .mount("pids", rel)
            .or_else(|_| self.mount("freezer", rel))?;
        files::wait_until(
            &dir,
            super::KILL_TIMEOUT,
            "processes survived SIGKILL",
            || {
                if files::read_pids_tree(&dir)?.is_empty() {
                    return Ok(true);
                }
                if has_freezer {
                    self.freeze(rel, true)?;
                }
                for pid in files::read_pids_tree(&dir)? {
                    super::sigkill(pid);
                }
                if has_freezer {
                    self.freeze(rel, false)?;
                }
                Ok(files::read_pids_tree(&dir)?.is_empty())
            },
        )
    }

    pub(crate) fn remove(&self, rel: &Path, deadline: std::time::Instant) -> Result<(), FsError> {
        self.dirs(rel)
            .chain(self.others.iter().map(|m| m.join(rel)))
            .try_for_each(|d| files::rmdir_tree(&d, deadline))
    }
}
