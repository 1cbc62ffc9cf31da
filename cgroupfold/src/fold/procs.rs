//! Telling one folded container's processes from its siblings': by PID namespace.

use crate::fs::{Cgroups, FsError};
use rustix::process::{Pid, Signal, kill_process};

fn pid_ns(pid: u32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

/// The processes of pod cgroup `pod` that share the PID namespace of the container whose init
/// is `init_pid` (processes that exit while we look are skipped).
///
/// ```no_run
/// let cg = cgroupfold::fs::Cgroups::detect()?;
/// let pids = cgroupfold::fold::container_pids(&cg, "kubepods/podu", 4242)?;
/// # Ok::<(), cgroupfold::fs::FsError>(())
/// ```
pub fn container_pids(cg: &Cgroups, pod: &str, init_pid: u32) -> Result<Vec<u32>, FsError> {
    let Some(ns) = pid_ns(init_pid) else {
        return Ok(Vec::new());
    };
    Ok(cg
        .pids(pod)?
        .into_iter()
        .filter(|p| pid_ns(*p).as_ref() == Some(&ns))
        .collect())
}

fn signal_all(cg: &Cgroups, pod: &str, init_pid: u32, sig: Signal) -> Result<Vec<u32>, FsError> {
    let pids = container_pids(cg, pod, init_pid)?;
    for &p in &pids {
        if let Some(pid) = i32::try_from(p).ok().and_then(Pid::from_raw) {
            // ESRCH: it exited meanwhile, which is fine.
            let _ = kill_process(pid, sig);
        }
    }
    Ok(pids)
}

/// Stops every process of the container with SIGSTOP, repeating until no new process appears
/// (a process may fork between listing and stopping). Returns the stopped pids.
///
/// ```no_run
/// let cg = cgroupfold::fs::Cgroups::detect()?;
/// cgroupfold::fold::stop_container(&cg, "kubepods/podu", 4242)?;
/// # Ok::<(), cgroupfold::fs::FsError>(())
/// ```
pub fn stop_container(cg: &Cgroups, pod: &str, init_pid: u32) -> Result<Vec<u32>, FsError> {
    let mut last = Vec::new();
    for _ in 0..10 {
        let now = signal_all(cg, pod, init_pid, Signal::STOP)?;
        if now == last {
            break;
        }
        last = now;
    }
    Ok(last)
}

/// Continues every process of the container with SIGCONT.
///
/// ```no_run
/// let cg = cgroupfold::fs::Cgroups::detect()?;
/// cgroupfold::fold::continue_container(&cg, "kubepods/podu", 4242)?;
/// # Ok::<(), cgroupfold::fs::FsError>(())
/// ```
pub fn continue_container(cg: &Cgroups, pod: &str, init_pid: u32) -> Result<Vec<u32>, FsError> {
    signal_all(cg, pod, init_pid, Signal::CONT)
}
