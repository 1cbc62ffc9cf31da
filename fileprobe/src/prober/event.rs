//! What a prober reports and what it is given: events, targets, counters.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Instant;

use crate::{ProbeFailure, ProbeKind, ProbeResult, WatchStats};

/// A change of a probe's reported result.
///
/// ```
/// let e = fileprobe::ProbeEvent { container: "web".into(), kind: fileprobe::ProbeKind::Readiness,
///     result: fileprobe::ProbeResult::Success, reason: None };
/// assert_eq!(e.result, fileprobe::ProbeResult::Success);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeEvent {
    /// The container's name as given to [`Prober::add`](crate::Prober::add).
    pub container: String,
    /// Which probe changed.
    pub kind: ProbeKind,
    /// The new reported result.
    pub result: ProbeResult,
    /// The failure of the last run, when the new result is a Failure from a check.
    pub reason: Option<ProbeFailure>,
}

/// Where a container's probes look: its runtime id (a new id means a restart) and its root.
///
/// ```no_run
/// use std::{sync::Arc, time::Instant};
/// let t = fileprobe::Target { id: "abc".into(), root: Arc::new(fileprobe::open_container_root(42)?), started_at: Instant::now() };
/// # Ok::<(), fileprobe::ProbeFailure>(())
/// ```
#[derive(Debug, Clone)]
pub struct Target {
    /// The container id; when it changes, probes reset and holds are released.
    pub id: String,
    /// The container's root directory, e.g. from [`crate::open_container_root`].
    pub root: Arc<OwnedFd>,
    /// When the container started (for `initialDelaySeconds`), on the prober's clock.
    pub started_at: Instant,
}

/// Counters of a [`Prober`](crate::Prober).
///
/// ```
/// assert_eq!(fileprobe::Counters::default().runs, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Checks run.
    pub runs: u64,
    /// Checks that failed (any reason).
    pub failures: u64,
    /// Due ticks skipped by the state machine (hold, startup, initial delay).
    pub skips: u64,
    /// Events emitted.
    pub events: u64,
    /// Checks abandoned because they hung past their timeout.
    pub hung: u64,
    /// Checks that asked the kernel (a `statx`, or `openat2` + `statx`); see
    /// [`crate::WatchStats`].
    pub statx_calls: u64,
    /// Checks answered from a cached mtime that no inotify event had voided (no syscall).
    pub cached_checks: u64,
    /// Directories watched with inotify now.
    pub watches: u64,
    /// Times a probe directory could not be watched (its probes then `statx` every check).
    pub unwatched: u64,
}

impl Counters {
    pub(super) fn with_watch(mut self, w: WatchStats) -> Self {
        self.statx_calls = w.statx_calls;
        self.cached_checks = w.cached_checks;
        self.watches = w.watches;
        self.unwatched = w.unwatched;
        self
    }
}
