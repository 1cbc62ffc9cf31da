//! The subreaper reaps: processes re-parented to the daemon that nobody waits for (a hook's
//! background child, a double fork in a runtime call) are reaped, not left as zombies.
//!
//! The daemon is the child subreaper of the node's containers, so every orphan below it
//! becomes its child. Most have a waiter: the exit pipeline reaps container inits and execs
//! through their pidfds (`waitid(P_PIDFD)`, see `exits`), and runc-driver reaps each runtime
//! call through its own pidfd. Reaping one of those here would steal its status, so a zombie
//! child is reaped only when all of these hold:
//!
//! - no descriptor of the daemon is a pidfd on it (every waiter holds one);
//! - it started before every launch in progress (a process a launch is starting is the
//!   daemon's child before the launch has opened its pidfd);
//! - it has been seen a zombie for [`GRACE`] (a runtime call between its spawn and the opening
//!   of its pidfd, a blocking `Command::status`).
//!
//! A sweep runs every second on a thread of its own, and costs one `waitid(WNOWAIT)` while no
//! child is a zombie.

use crate::lock::lock;
use rustix::process::{Pid, WaitId, WaitIdOptions};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long an unclaimed zombie is left to its waiter before the reaper takes it.
pub(super) const GRACE: Duration = Duration::from_secs(2);

/// A zombie child of the daemon: its PID and start time (clock ticks after boot).
type Zombie = (i32, u64);

/// The orphan reaper's state: launches in progress, and the zombies seen so far.
#[derive(Default)]
pub(super) struct Reaper {
    /// The start tick of each launch in progress, by launch number.
    launches: Mutex<BTreeMap<u64, u64>>,
    next: AtomicU64,
    /// When each unclaimed zombie was first seen.
    seen: Mutex<HashMap<Zombie, Instant>>,
}

/// A launch in progress; its children are left to it until it is dropped.
pub(super) struct Launching {
    reaper: Arc<Reaper>,
    number: u64,
}

impl Drop for Launching {
    fn drop(&mut self) {
        lock(&self.reaper.launches).remove(&self.number);
    }
}

impl Reaper {
    /// Starts sweeping every second on a thread of its own.
    pub(super) fn start(self: &Arc<Self>) -> std::io::Result<()> {
        let reaper = self.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    reaper.sweep();
                }
            })
            .map(drop)
    }

    /// Notes a launch in progress: processes started from now on are left to it.
    pub(super) fn launching(self: &Arc<Self>) -> Launching {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.launches).insert(number, now_ticks());
        Launching {
            reaper: self.clone(),
            number,
        }
    }

    /// Reaps every zombie child that nobody waits for; what it reaped.
    pub(super) fn sweep(&self) -> Vec<(Zombie, String)> {
        let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
        if !matches!(rustix::process::waitid(WaitId::All, options), Ok(Some(_))) {
            lock(&self.seen).clear();
            return Vec::new();
        }
        let zombies = zombie_children();
        let now = Instant::now();
        let mut seen = lock(&self.seen);
        seen.retain(|z, _| zombies.contains(z));
        for zombie in &zombies {
            seen.entry(*zombie).or_insert(now);
        }
        let oldest_launch = lock(&self.launches).values().min().copied();
        let ripe: Vec<Zombie> = zombies
            .into_iter()
            .filter(|z| now.duration_since(seen[z]) >= GRACE)
            .filter(|(_, start)| oldest_launch.is_none_or(|launch| *start < launch))
            .collect();
        drop(seen);
        if ripe.is_empty() {
            return Vec::new();
        }
        let claimed = pidfd_targets();
        let mut reaped = Vec::new();
        for zombie in ripe.into_iter().filter(|(pid, _)| !claimed.contains(pid)) {
            if let Some(how) = reap(zombie.0) {
                tracing::info!(
                    "shimless: reaped orphan pid {} (re-parented to the daemon, {how})",
                    zombie.0
                );
                lock(&self.seen).remove(&zombie);
                reaped.push((zombie, how));
            }
        }
        reaped
    }
}

/// Reaps the zombie child `pid`; how it ended, if it was reaped.
fn reap(pid: i32) -> Option<String> {
    let pid = Pid::from_raw(pid)?;
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG;
    let status = rustix::process::waitid(WaitId::Pid(pid), options).ok()??;
    Some(match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => format!("exited with {code}"),
        (_, Some(signal)) => format!("killed by signal {signal}"),
        _ => "ended".into(),
    })
}

/// The daemon's zombie children, from `/proc/<pid>/stat`.
fn zombie_children() -> Vec<Zombie> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
            // After the command: state (3), ppid (4), ..., start time (22).
            let (state, ppid, start) = (fields.first()?, fields.get(1)?, fields.get(19)?);
            (*state == "Z" && ppid.parse::<i32>().ok()? == me)
                .then(|| Some((pid, start.parse().ok()?)))
                .flatten()
        })
        .collect()
}

/// The PIDs that a pidfd of this process refers to (`/proc/self/fdinfo`'s `Pid:` lines).
fn pidfd_targets() -> Vec<i32> {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    fds.flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| target.as_os_str() == "anon_inode:[pidfd]")
        })
        .filter_map(|fd| {
            let info = std::fs::read_to_string(format!(
                "/proc/self/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .ok()?;
            info.lines()
                .find_map(|l| l.strip_prefix("Pid:"))
                .and_then(|pid| pid.trim().parse().ok())
        })
        .collect()
}

/// Now, in the unit of `/proc/<pid>/stat`'s start time: clock ticks (1/100 s) after boot.
fn now_ticks() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    t.tv_sec as u64 * 100 + t.tv_nsec as u64 / 10_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::zombie_processes)] // reaped through its pidfd
    fn a_child_with_a_pidfd_is_left_to_its_waiter() {
        let child = std::process::Command::new("true").spawn().unwrap();
        let pidfd = pidfd::PidFd::from_child(&child).unwrap();
        let pid = child.id() as i32;
        while !zombie_children().iter().any(|(p, _)| *p == pid) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(pidfd_targets().contains(&pid));
        assert!(pidfd.wait().unwrap().success());
    }
}
