//! Re-opening a recorded process after a restart: only "no such process" means it is gone.
//!
//! [`reopen`] tells three answers apart: the very process of the record, still there
//! ([`Reopened::Live`]); gone, or its PID now another process's ([`Reopened::Gone`]); and
//! "cannot tell now" ([`Reopened::Unknown`]): `pidfd_open` or the `/proc` reads that check the
//! start time failed for another reason, e.g. `EMFILE` under fd pressure. An unknown process is
//! never taken as exited (that would report a live container stopped with 255): it is kept as
//! the record says, and [`Daemon::reopen_later`] tries again until it can tell.

use super::Daemon;
use super::container::{Entry, Key};
use super::exits;
use super::outbox::ExitKey;
use crate::api::containerd::events::TaskExit;
use crate::lock::lock;
use crate::model::Exit;
use pidfd::{PidFd, ProcessIdentity};
use std::sync::Arc;
use std::time::Duration;

/// What re-opening a recorded process found.
pub(super) enum Reopened {
    /// The process of the record, still there (running, or exited and not reaped).
    Live(PidFd),
    /// Gone: no such process, or its PID names another process now.
    Gone,
    /// Could not tell (the error, e.g. "Too many open files"): keep it and try again later.
    Unknown(String),
}

/// Tries to re-open the process `identity` names, a few times over a short while when the
/// answer is neither "there" nor "gone". No identity means nothing to re-open: gone.
pub(super) async fn reopen(identity: Option<&ProcessIdentity>) -> Reopened {
    let Some(identity) = identity else {
        return Reopened::Gone;
    };
    let mut last = Reopened::Gone;
    for attempt in 0..3 {
        if attempt > 0 {
            async_io::Timer::after(Duration::from_millis(10 << attempt)).await;
        }
        last = reopen_once(identity);
        if !matches!(last, Reopened::Unknown(_)) {
            break;
        }
    }
    last
}

/// One attempt: only [`pidfd::Error::Gone`] (ESRCH, or another start time) is "gone".
fn reopen_once(identity: &ProcessIdentity) -> Reopened {
    match PidFd::reopen(identity) {
        Ok(pidfd) => Reopened::Live(pidfd),
        Err(pidfd::Error::Gone { .. }) => Reopened::Gone,
        Err(e) => Reopened::Unknown(e.to_string()),
    }
}

/// The longest pause between two attempts of [`Daemon::reopen_later`].
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

impl Daemon {
    /// Keeps trying to re-open a process kept unverified at recovery (the init, or the exec
    /// `exec_id`), with a growing pause (100 ms doubling up to 5 s), until it is found (then
    /// watched as any other) or gone (then reported as exited while no daemon watched it), or
    /// its container is deleted.
    pub(super) fn reopen_later(
        &self,
        key: Key,
        entry: Arc<Entry>,
        exec_id: Option<String>,
        identity: Option<ProcessIdentity>,
    ) {
        let daemon = self.clone();
        let task = async move {
            let mut delay = Duration::from_millis(100);
            loop {
                async_io::Timer::after(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
                if !daemon.is_current(&key, &entry) {
                    return;
                }
                let found = match identity.as_ref() {
                    Some(identity) => reopen_once(identity),
                    None => Reopened::Gone,
                };
                match found {
                    Reopened::Unknown(_) => continue,
                    Reopened::Live(pidfd) => {
                        tracing::info!(
                            "shimless: {}/{}{}: re-opened pid {} after recovery",
                            key.0,
                            key.1,
                            exec_suffix(exec_id.as_deref()),
                            pidfd.pid()
                        );
                        return daemon.watch_exit(key, entry, exec_id, pidfd);
                    }
                    Reopened::Gone => {
                        let exec = exec_id.as_deref();
                        let (exit, _) =
                            daemon.exit_while_unwatched(&key, &entry, exec, identity.as_ref());
                        return match exec_id {
                            None => daemon.init_exited(&key, &entry, exit).await,
                            Some(exec_id) => daemon.exec_exited(&key, &entry, &exec_id, exit).await,
                        };
                    }
                }
            }
        };
        self.inner.ex.spawn(task).detach();
    }

    /// How a process that is gone ended while nobody watched it, and whether a source knew:
    /// the exit an outbox holds (a daemon killed after handing it to containerd, before saving
    /// it: containerd must see one status), else the one an exec's `Start` took (it ended
    /// before the kernel tracked it), else exitwatch's record, else lost.
    pub(super) fn exit_while_unwatched(
        &self,
        key: &Key,
        entry: &Entry,
        exec_id: Option<&str>,
        identity: Option<&ProcessIdentity>,
    ) -> (Exit, bool) {
        let (pid, early) = {
            let record = lock(&entry.record);
            match exec_id {
                None => (record.container.init.pid, None),
                Some(exec_id) => (
                    record.container.execs.get(exec_id).and_then(|p| p.pid),
                    record.early_exits.get(exec_id).copied(),
                ),
            }
        };
        let id = exec_id.unwrap_or(key.1.as_str());
        let handed = ExitKey::new(key.0.as_str(), key.1.as_str(), id, pid.unwrap_or(0) as u32);
        if let Some(exit) = self.inner.forwarder.handed_over(&handed) {
            return (exit_of(&exit), true);
        }
        if let Some(exit) = early {
            return (exit, true);
        }
        let cookie = exits::cookie(key.0.as_str(), key.1.as_str(), exec_id);
        self.inner.exits.while_down(identity, cookie)
    }
}

/// The model's exit for a `TaskExit`: the code containerd got (a signal's 128 + n gives the
/// same code back), at the time it names.
fn exit_of(exit: &TaskExit) -> Exit {
    let at = exit.exited_at.map_or(std::time::SystemTime::now(), |t| {
        let since = Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32);
        std::time::UNIX_EPOCH + since
    });
    Exit {
        status: pidfd::ExitStatus::Exited(u8::try_from(exit.exit_status).unwrap_or(255)),
        at,
    }
}

/// ` exec <id>` for an exec, nothing for an init: what log lines append to a container's name.
fn exec_suffix(exec_id: Option<&str>) -> String {
    exec_id.map(|e| format!(" exec {e}")).unwrap_or_default()
}
