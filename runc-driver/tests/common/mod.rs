//! Shared by the runc-driver test binaries: one driver per runtime with a private root, and
//! reaping of the container processes this test process inherits as a subreaper.

#![allow(dead_code)]

use integration::bundle::{Bundle, BundleBuilder, prepare_crun};
use integration::{Need, require};
use runc_driver::Runc;
use std::path::PathBuf;

pub const RUNTIMES: [&str; 2] = ["runc", "crun"];

pub struct Env {
    pub runc: Runc,
    pub root: tempfile::TempDir,
}

/// A driver for `runtime` with a private `--root`, or `None` (skip) when the machine cannot
/// run containers. Makes this process a child subreaper, so containers' init processes become
/// our children and [`reap_orphans`] can reap them.
pub fn env(runtime: &str) -> Option<Env> {
    require(&[
        Need::Root,
        Need::Program("runc"),
        Need::Program("crun"),
        Need::File("/bin/busybox"),
    ])?;
    prepare_crun().unwrap();
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
    let root = tempfile::tempdir().unwrap();
    let runc = Runc::builder()
        .binary(runtime)
        .root(root.path())
        .build()
        .unwrap();
    Some(Env { runc, root })
}

pub fn bundle(args: &[&str]) -> Bundle {
    BundleBuilder::new()
        .args(args.iter().copied())
        .build()
        .unwrap()
}

pub fn id(tag: &str) -> String {
    format!("rd-{tag}-{}", std::process::id())
}

/// Zombie children of this process that are still in this process's session: runtime
/// processes and what they started in their process group. Container inits that made their own
/// session (crun's do) are not listed: reaping them is the supervisor's job, not the driver's.
pub fn zombie_children_in_session() -> Vec<(i32, String)> {
    // Read from /proc rather than getsid(2): under a CI runner started by a PID 1 that never
    // called setsid, the session id is 0, which rustix's `Pid` cannot represent.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let session = after_comm.split_whitespace().nth(3).unwrap().to_string();
    zombie_children_with_session()
        .into_iter()
        .filter(|(_, _, sid)| *sid == session)
        .map(|(p, c, _)| (p, c))
        .collect()
}

/// Zombie children of this process, with their command names.
pub fn zombie_children() -> Vec<(i32, String)> {
    zombie_children_with_session()
        .into_iter()
        .map(|(p, c, _)| (p, c))
        .collect()
}

fn zombie_children_with_session() -> Vec<(i32, String, String)> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = stat[stat.find('(').unwrap() + 1..close].to_string();
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // After the command: state, ppid, pgrp, session, ...
        if fields.first() == Some(&"Z") && fields.get(1) == Some(&me.as_str()) {
            let session = fields.get(3).unwrap_or(&"").to_string();
            found.push((
                entry.file_name().to_string_lossy().parse().unwrap_or(0),
                comm,
                session,
            ));
        }
    }
    found
}

/// Reaps the container processes that were re-parented to us and have exited.
pub fn reap_orphans() {
    for (pid, _) in zombie_children() {
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG);
        }
    }
}

pub fn cgroup_file(pid: i32, controller: &str, file: &str) -> PathBuf {
    let cgroups = cgroupfold::fs::ProcessCgroups::read(pid as u32).unwrap();
    let path = cgroups.v1_path(controller).unwrap();
    PathBuf::from(format!("/sys/fs/cgroup/{controller}{path}/{file}"))
}
