//! What the clean-up removes: tasks and containers, shims and what runc kept for them, shim
//! sockets, per-namespace directories, mounts and the private directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{CRI_NAMESPACE, Containerd, ContainerdError, RUNC_ROOT};

impl Containerd {
    pub(super) fn clean_up(&mut self) -> Result<(), ContainerdError> {
        let Some(dir) = self.dir.take() else {
            return Ok(());
        };
        let mut left = Vec::new();
        // containerd may have been stopped by the test: bring it back to delete through it.
        let up = self.start_daemon().is_ok();
        let namespaces = if up {
            self.namespaces().unwrap_or_default()
        } else {
            Vec::new()
        };
        if up {
            for ns in &namespaces {
                self.delete_namespace_contents(ns);
            }
        }
        self.stop_daemon();

        // Whatever still names the socket: shims containerd could not shut, ctr commands.
        let socket = self.socket();
        let mut leftover_namespaces = Vec::new();
        for pid in processes_naming(&socket) {
            if let Some((ns, id)) = shim_namespace_and_id(pid) {
                // The runc shim's container: delete it through runc (which kills it).
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(Path::new(RUNC_ROOT).join(&ns))
                    .args(["delete", "--force", &id])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                leftover_namespaces.push(ns);
            }
            for victim in descendants(pid).into_iter().chain([pid]) {
                if let Some(victim) = rustix::process::Pid::from_raw(victim as i32) {
                    let _ = rustix::process::kill_process(victim, rustix::process::Signal::KILL);
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !processes_naming(&socket).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let survivors = processes_naming(&socket);
        if !survivors.is_empty() {
            left.push(format!("processes {survivors:?}"));
        }

        remove_shim_sockets(&self.state());
        for ns in namespaces.iter().chain(&leftover_namespaces) {
            remove_empty_namespace_dirs(ns);
        }

        for _ in 0..3 {
            for mount in mounts_under(&self.path) {
                let _ = rustix::mount::unmount(&mount, rustix::mount::UnmountFlags::DETACH);
            }
        }
        let mounts = mounts_under(&self.path);
        if !mounts.is_empty() {
            left.push(format!("mounts {mounts:?}"));
        }
        if let Err(e) = dir.close() {
            left.push(format!("the directory {} ({e})", self.path.display()));
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(ContainerdError::Leftover(left.join(", ")))
        }
    }

    /// Kills and deletes every task, deletes every container of `ns`.
    fn delete_namespace_contents(&self, ns: &str) {
        // Bounded: a containerd that hangs must not hang the clean-up (and the test) with it.
        let bounded = |args: &[&str]| {
            let mut cmd = self.ctr(ns);
            cmd.args(["--timeout", "30s"])
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            cmd.output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        for task in bounded(&["task", "ls", "-q"]).lines() {
            bounded(&["task", "kill", "--all", "--signal", "KILL", task]);
            bounded(&["task", "delete", "--force", task]);
        }
        for container in bounded(&["containers", "ls", "-q"]).lines() {
            bounded(&["containers", "delete", container]);
        }
    }
}

/// The PIDs of the processes (this one excepted) whose command line contains `needle`:
/// after a [`Containerd`] is dropped, none should name its old socket.
///
/// ```
/// let none = integration::containerd::processes_naming("/surely/not/a/socket".as_ref());
/// assert!(none.is_empty());
/// ```
pub fn processes_naming(needle: &Path) -> Vec<u32> {
    let needle = needle.to_string_lossy();
    let me = std::process::id();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        // Arguments are NUL-separated; the needle is one argument (or part of one).
        if cmdline
            .split(|b| *b == 0)
            .any(|arg| String::from_utf8_lossy(arg).contains(&*needle))
        {
            pids.push(pid);
        }
    }
    pids
}

/// The mount points at or under `dir`, deepest first, from `/proc/self/mountinfo`: after a
/// [`Containerd`] is dropped, none should remain under its directory.
///
/// ```
/// let none = integration::containerd::mounts_under("/surely/not/mounted".as_ref());
/// assert!(none.is_empty());
/// ```
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|point| point.starts_with(dir))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    mounts.dedup();
    mounts
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if bytes[i] == b'\\'
            && let Some(digits) = octal
        {
            let code = digits.iter().fold(0u32, |n, d| n * 8 + u32::from(d - b'0'));
            out.push(code as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The namespace and ID a shim was started with (`-namespace <ns> -id <id>`), if `pid` is one.
fn shim_namespace_and_id(pid: u32) -> Option<(String, String)> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if !args.first()?.contains("containerd-shim") {
        return None;
    }
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    Some((value("-namespace")?, value("-id")?))
}

/// Every descendant of `pid`, from the parent links in `/proc/<pid>/stat`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name is in parentheses and may hold spaces: fields follow the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.push((child, ppid));
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(child, ppid) in &parents {
            if ppid == parent && !found.contains(&child) {
                found.push(child);
                frontier.push(child);
            }
        }
    }
    found
}

/// Removes the sockets of shims containerd started (named in each task's `address` file under
/// `state`), which a killed shim leaves in `/run/containerd/s`.
fn remove_shim_sockets(state: &Path) {
    let tasks = state.join("io.containerd.runtime.v2.task");
    for ns in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
        for task in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
            let Ok(address) = std::fs::read_to_string(task.path().join("address")) else {
                continue;
            };
            let socket = address.trim().trim_start_matches("unix://");
            if socket.starts_with("/run/containerd/s/") {
                let _ = std::fs::remove_file(socket);
            }
        }
    }
}

/// Removes the per-namespace directories runc and `ctr run`'s cgroups leave once empty. Not
/// for [`CRI_NAMESPACE`], which every CRI test shares: removing its directories while another
/// test's runc creates a container under them could fail that create.
fn remove_empty_namespace_dirs(ns: &str) {
    if ns.is_empty() || ns.contains('/') || ns == "." || ns == ".." || ns == CRI_NAMESPACE {
        return;
    }
    let _ = std::fs::remove_dir(Path::new(RUNC_ROOT).join(ns));
    let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(ns));
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        // remove_dir only removes an empty cgroup: one in use stays.
        let _ = std::fs::remove_dir(hierarchy.path().join(ns));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/end\\04"), "/end\\04");
    }
}
