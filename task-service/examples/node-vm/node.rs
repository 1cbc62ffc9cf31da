//! The node itself: systemd, cgroup v2, containerd's limits, images, units and processes.

use super::*;

pub(crate) fn systemd_is_pid1() -> Outcome {
    let comm = std::fs::read_to_string("/proc/1/comm").map_err(|e| e.to_string())?;
    ensure(comm.trim() == "systemd", || format!("PID 1 is {comm:?}"))?;
    let state = sh("systemctl is-active containerd.service").unwrap_or_else(|e| e);
    ensure(state.trim() == "active", || {
        format!("containerd.service: {state}")
    })?;
    let reached = sh("systemctl show -P ActiveEnterTimestampMonotonic multi-user.target")?;
    if let Ok(us) = reached.trim().parse::<u64>() {
        info(format!(
            "multi-user.target reached {:.1} s after the kernel started",
            us as f64 / 1e6
        ));
    }
    Ok(())
}

pub(crate) fn pure_cgroup_v2() -> Outcome {
    let mounts = std::fs::read_to_string("/proc/mounts").map_err(|e| e.to_string())?;
    let cgroup: Vec<&str> = mounts
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(2)
                .is_some_and(|t| t.starts_with("cgroup"))
        })
        .collect();
    ensure(
        cgroup.len() == 1 && cgroup[0].starts_with("cgroup2 /sys/fs/cgroup cgroup2"),
        || format!("cgroup mounts: {cgroup:?}"),
    )
}

pub(crate) fn containerd_memlock() -> Outcome {
    let pid = sh("systemctl show -P MainPID containerd.service")?;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", pid.trim()))
        .map_err(|e| e.to_string())?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))
        .unwrap_or_default();
    ensure(line.split_whitespace().nth(3) == Some("unlimited"), || {
        format!("containerd's {line:?}")
    })
}

/// Writes the busybox and pause images and imports them into CRI's namespace, waiting until CRI
/// has taken them in (no registry: the VM has loopback only).
pub(crate) fn import_images() -> Outcome {
    let dir = Path::new("/var/tmp/node-vm-images");
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    for image in [Image::busybox(BUSYBOX), Image::pause(PAUSE)] {
        let tar = dir.join(format!("{}.tar", image.name().replace(['/', ':'], "_")));
        let image = image.write_tar(&tar).map_err(|e| e.to_string())?;
        sh(&format!("ctr -n k8s.io images import {}", tar.display()))?;
        let deadline = Instant::now() + PATIENCE;
        while !sh("ctr -n k8s.io images ls -q")?
            .lines()
            .any(|r| r == image.config_digest())
        {
            ensure(Instant::now() < deadline, || {
                format!("CRI never took {} in", image.name())
            })?;
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// The cgroup (v2) path of `pid`.
pub(crate) fn cgroup_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_default()
        .to_owned()
}

/// The systemd scopes and slices loaded now.
pub(crate) fn units() -> Result<Vec<String>, String> {
    Ok(
        sh("systemctl list-units --type=scope,slice --all --plain --no-legend")?
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect(),
    )
}

/// The PIDs of processes whose executable's file name satisfies `pred`.
pub(crate) fn processes(pred: impl Fn(&str) -> bool) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
                exe.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| pred(n.trim_end_matches(" (deleted)")))
            })
        })
        .collect()
}

/// shimless's processes and every shim: what a pod could add.
pub(crate) fn shim_like() -> Vec<u32> {
    processes(|n| n.starts_with("containerd-shim") || n == "shimlessd" || n == "shimless-front")
}

/// After every pod is removed no container scope is left (the pods' slices are kubelet's to
/// remove, as with the stock shim).
pub(crate) fn no_pod_units() -> Outcome {
    let left: Vec<String> = units()?
        .into_iter()
        .filter(|u| u.starts_with("cri-containerd-"))
        .collect();
    ensure(left.is_empty(), || format!("left: {left:?}"))
}

/// `shimless-front` and `shimlessd` run once each, in `containerd.service`'s cgroup (containerd
/// started the shim that started them; its `KillMode=process` leaves them across restarts).
pub(crate) fn front_and_daemon_in_containerd_service() -> Outcome {
    for name in ["shimless-front", "shimlessd"] {
        let pids = processes(|n| n == name);
        ensure(pids.len() == 1, || format!("{name} processes: {pids:?}"))?;
        let cgroup = cgroup_of(pids[0]);
        ensure(cgroup == "/system.slice/containerd.service", || {
            format!("{name} runs in {cgroup:?}")
        })?;
    }
    Ok(())
}
