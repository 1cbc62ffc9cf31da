//! Where the daemon learns how a process ended: the exit pipeline of the architecture.
//!
//! 1. The process's pidfd becomes readable.
//! 2. If the daemon is its parent (it is the child subreaper, so every init whose runtime has
//!    exited is its child), `waitid` on the pidfd gives the status and reaps it.
//! 3. Else (an init adopted after a restart: its parent is whoever inherited it), exitwatch's
//!    `exited_events` map holds the status the kernel recorded at `sched_process_exit`.
//! 4. Else `PIDFD_INFO_EXIT`, once whoever is its parent has reaped it.
//! 5. Else the status is lost: reported as [`LOST`] (exit code 255), and said so in the log.
//!
//! exitwatch also covers processes that exit while no daemon runs: [`Exits::recorded`] is
//! what recovery asks for a process that is gone.

use crate::lock::lock;
use crate::model::Exit;
use exitwatch::ExitWatch;
use pidfd::{ExitStatus, PidFd, ProcessIdentity};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The status reported when no source knows it (the code containerd gets is 255).
pub(crate) const LOST: ExitStatus = ExitStatus::Exited(255);

/// The daemon's exit sources beyond `waitid`: exitwatch, when it could be loaded.
pub(crate) struct Exits {
    watch: Option<Mutex<ExitWatch>>,
}

impl Exits {
    /// Loads (or reuses the pinned) exitwatch program under `pin_dir`. Without it the daemon
    /// still runs, but exits that happen while it is down are lost; the returned warning says
    /// why.
    pub(crate) fn open(pin_dir: &std::path::Path) -> (Exits, Option<String>) {
        match ExitWatch::open_or_load(pin_dir) {
            Ok(watch) => (
                Exits {
                    watch: Some(Mutex::new(watch)),
                },
                None,
            ),
            Err(e) => (
                Exits { watch: None },
                Some(format!(
                    "exitwatch unavailable ({e}); exits while the daemon is down will be \
                     reported as code 255"
                )),
            ),
        }
    }

    /// Whether exitwatch is loaded.
    pub(crate) fn kernel_recording(&self) -> bool {
        self.watch.is_some()
    }

    /// Starts recording `identity`'s exit in the kernel, tagged with `cookie`.
    pub(crate) fn track(&self, identity: &ProcessIdentity, cookie: u64) -> Result<(), String> {
        let Some(watch) = &self.watch else {
            return Ok(());
        };
        let pid = u32::try_from(identity.pid).map_err(|_| format!("bad pid {}", identity.pid))?;
        lock(watch).track(pid, cookie).map_err(|e| {
            if matches!(e, exitwatch::Error::MapFull { .. }) {
                crate::metrics::DAEMON.map_full.inc();
            }
            e.to_string()
        })
    }

    /// exitwatch's counts (tracked, recorded, capacity), when it is loaded and answers.
    pub(crate) fn stats(&self) -> Option<exitwatch::Stats> {
        lock(self.watch.as_ref()?).stats().ok()
    }

    /// How exitwatch's program is attached, when it is loaded and its link can be read.
    pub(crate) fn attach_mode(&self) -> Option<exitwatch::AttachMode> {
        lock(self.watch.as_ref()?).attach_mode()
    }

    /// Drops what exitwatch holds for `pid` once its exit is durable in the record.
    pub(crate) fn forget(&self, pid: i32) {
        if let (Some(watch), Ok(pid)) = (&self.watch, u32::try_from(pid)) {
            let mut watch = lock(watch);
            let _ = watch.untrack(pid);
            let _ = watch.take(pid);
        }
    }

    /// The exit the kernel recorded for this very process (same PID, start time and cookie), if
    /// any. Leaves the record in place: [`Exits::forget`] drops it once saved.
    pub(crate) fn recorded(&self, identity: &ProcessIdentity, cookie: u64) -> Option<Exit> {
        let watch = self.watch.as_ref()?;
        let pid = u32::try_from(identity.pid).ok()?;
        // Read, not taken: a daemon killed before the exit is saved finds it again.
        let exit = lock(watch).peek(pid).ok()??;
        let ticks = exit.started_after_boot.as_nanos() / (1_000_000_000 / USER_HZ);
        if exit.cookie != cookie || ticks != u128::from(identity.start_time) {
            return None;
        }
        Some(Exit {
            status: exit.status,
            at: wall_clock(exit.exited_after_boot),
        })
    }

    /// How a process that is gone ended while no daemon watched it: exitwatch's record, else
    /// [`LOST`] now. The flag says whether the record was found.
    pub(crate) fn while_down(
        &self,
        identity: Option<&ProcessIdentity>,
        cookie: u64,
    ) -> (Exit, bool) {
        let found = identity.and_then(|i| self.recorded(i, cookie));
        crate::metrics::DAEMON.exit(match found {
            Some(_) => crate::metrics::ExitSource::Ebpf,
            None => crate::metrics::ExitSource::Lost,
        });
        match found {
            Some(exit) => (exit, true),
            None => (
                Exit {
                    status: LOST,
                    at: SystemTime::now(),
                },
                false,
            ),
        }
    }

    /// Resolves the status of a process whose pidfd has become readable (counted by source).
    pub(crate) async fn resolve(
        &self,
        pidfd: &PidFd,
        identity: Option<&ProcessIdentity>,
        cookie: u64,
    ) -> (ExitStatus, Source) {
        let (status, source) = self.resolve_uncounted(pidfd, identity, cookie).await;
        crate::metrics::DAEMON.exit(match source {
            Source::Waitid => crate::metrics::ExitSource::Waitid,
            Source::Exitwatch => crate::metrics::ExitSource::Ebpf,
            Source::PidfdInfo => crate::metrics::ExitSource::PidfdInfo,
            Source::Lost => crate::metrics::ExitSource::Lost,
        });
        (status, source)
    }

    async fn resolve_uncounted(
        &self,
        pidfd: &PidFd,
        identity: Option<&ProcessIdentity>,
        cookie: u64,
    ) -> (ExitStatus, Source) {
        match pidfd.wait() {
            Ok(status) => return (status, Source::Waitid),
            Err(pidfd::Error::NotChild { .. }) => {}
            Err(_) => return (LOST, Source::Lost),
        }
        if let Some(identity) = identity
            && let Some(recorded) = self.recorded(identity, cookie)
        {
            return (recorded.status, Source::Exitwatch);
        }
        // Whoever is the parent may reap it a moment later; give it a little time.
        for _ in 0..40 {
            match pidfd.exit_info() {
                Ok(status) => return (status, Source::PidfdInfo),
                Err(pidfd::Error::NotYetReaped { .. }) => {
                    async_io::Timer::after(Duration::from_millis(25)).await;
                }
                Err(_) => break,
            }
        }
        (LOST, Source::Lost)
    }
}

/// A `CLOCK_BOOTTIME` instant on the wall clock.
fn wall_clock(after_boot: Duration) -> SystemTime {
    let now = SystemTime::now();
    let since_boot = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let since_boot = Duration::new(since_boot.tv_sec as u64, since_boot.tv_nsec as u32);
    now.checked_sub(since_boot.saturating_sub(after_boot))
        .unwrap_or(now)
}

/// Which source gave an exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Waitid,
    Exitwatch,
    PidfdInfo,
    Lost,
}

/// A stable tag for a container's processes in exitwatch: FNV-1a of `namespace/id[/exec]`.
pub(crate) fn cookie(namespace: &str, id: &str, exec: Option<&str>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let parts = [namespace, "/", id, "/", exec.unwrap_or("")];
    for byte in parts.iter().flat_map(|p| p.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// `USER_HZ`, the unit of `/proc/<pid>/stat`'s start time: 100 on every Linux ABI.
const USER_HZ: u128 = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_differ_per_container_and_exec_and_are_stable() {
        let a = cookie("default", "web", None);
        assert_eq!(a, cookie("default", "web", None));
        assert_ne!(a, cookie("k8s.io", "web", None));
        assert_ne!(a, cookie("default", "web", Some("sh")));
    }
}
