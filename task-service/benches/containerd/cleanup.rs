//! What a run leaves behind, removed; the processes whose memory is measured, found.

use super::{NS, go_shim};
use integration::containerd::{Containerd, processes_naming};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Removes, when dropped, what shimless left: the front and the daemon (every process whose
/// command line names `config`), the containers in its runc roots, its eBPF pins, and the
/// benchmark's empty cgroups.
pub(crate) struct ShimlessCleanup {
    pub(crate) config: PathBuf,
    pub(crate) runc_root: PathBuf,
    pub(crate) pin_dir: PathBuf,
}

impl ShimlessCleanup {
    /// Kills the front and the daemon (the next shim `start` starts them again).
    pub(crate) fn kill_processes(&self) {
        for _ in 0..50 {
            let pids = processes_naming(&self.config);
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ShimlessCleanup {
    fn drop(&mut self) {
        self.kill_processes();
        // Every namespace directory, whichever namespace shimless filed the containers under.
        for entry in std::fs::read_dir(&self.runc_root)
            .into_iter()
            .flatten()
            .flatten()
        {
            for runtime in ["runc", "crun"] {
                integration::bundle::delete_all(runtime, &entry.path());
            }
        }
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        remove_empty_cgroups();
    }
}

/// Removes the benchmark's cgroups (`/<NS>/<id>` under `/sys/fs/cgroup/*`) that are empty, and
/// what crun 1.8.1 makes under `/sys/fs/cgroup/hugetlb`, which on this machine is a plain
/// directory rather than a mounted hierarchy (crun creates `<NS>/<id>/cgroup.procs` there as
/// ordinary files and leaves them). On a real cgroup file system `rmdir` removes only cgroups
/// without processes or children; elsewhere the whole `<NS>` directory goes.
pub(crate) fn remove_empty_cgroups() {
    const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let parent = hierarchy.path().join(NS);
        if !parent.is_dir() {
            continue;
        }
        let is_cgroupfs = rustix::fs::statfs(&parent).is_ok_and(|fs| {
            let kind = fs.f_type;
            kind == CGROUP_SUPER_MAGIC || kind == CGROUP2_SUPER_MAGIC
        });
        if !is_cgroupfs {
            let _ = std::fs::remove_dir_all(&parent);
            continue;
        }
        for child in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            if child.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::remove_dir(child.path());
            }
        }
        let _ = std::fs::remove_dir(&parent);
    }
}

/// The PIDs of this run's `shimless-front` and `shimlessd`.
pub(crate) fn shimless_pids(config: &Path) -> (Vec<u32>, Vec<u32>) {
    let mut front = Vec::new();
    let mut daemon = Vec::new();
    for pid in processes_naming(config) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        let argv0 = String::from_utf8_lossy(argv0);
        if argv0.ends_with("shimless-front") {
            front.push(pid);
        } else if argv0.ends_with("shimlessd") {
            daemon.push(pid);
        }
    }
    (front, daemon)
}

/// The PIDs of the stock shims of `containerd`.
pub(crate) fn stock_shim_pids(containerd: &Containerd) -> Vec<u32> {
    containerd
        .shim_pids()
        .into_iter()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            String::from_utf8_lossy(argv0).ends_with("containerd-shim-runc-v2")
        })
        .collect()
}

/// PSS and private memory summed over `pids`, in KiB.
pub(crate) fn memory_sum(pids: &[u32]) -> (u64, u64) {
    pids.iter()
        .filter_map(|pid| go_shim::memory_kib(*pid))
        .fold((0, 0), |(p, q), (pss, private)| (p + pss, q + private))
}
