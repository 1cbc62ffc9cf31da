//! The daemon's readers on output FIFOs, reopened for a process adopted after a restart.

use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};

use super::Endpoint;

/// Re-opens the daemon's keepalive readers (see the module docs) for a process adopted after a
/// restart. A FIFO that is gone is skipped: its reader went away with it.
///
/// ```no_run
/// use task_service::stdio::{keepalive, Endpoint};
/// let out = Endpoint::Fifo("/run/containerd/fifo/1/web-stdout".into());
/// assert_eq!(keepalive([&Endpoint::None, &out, &Endpoint::None]).len(), 1);
/// ```
pub fn keepalive(endpoints: [&Endpoint; 3]) -> Vec<OwnedFd> {
    endpoints[1..]
        .iter()
        .filter_map(|endpoint| match endpoint {
            Endpoint::Fifo(path) => rustix::fs::open(
                path,
                OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ok(),
            _ => None,
        })
        .collect()
}
